#!/bin/sh
# tests/t_keras.sh - Keras weights into resnet-c: tools/keras_mirror.py builds PyTorch
# mirrors of Keras' ResNet50 graph with random weights (random batch-norm statistics),
# writes them as Keras .h5 files (both naming schemes, with and without the top; the
# layout of Keras' save_weights), converts them with tools/keras2safetensors.py and holds
# ./infer --arch keras_resnet50's logits within 1e-4 of the mirror's (64 px, 2 images); the
# converter's VGG16 fc1 flatten order is checked on its own; with ../shared, the graph of a
# real Keras ResNet50 (the tfjs manifest) is checked against the mirror.
# Skips (exit 77) without torch or h5py in /usr/bin/python3.
PY=/usr/bin/python3
SHARED=${SHARED:-../shared}
BIN=${BIN:-.}
if ! [ -x "$PY" ] || ! "$PY" -c "import torch, h5py" 2>/dev/null; then
  echo "SKIP t_keras.sh: $PY has no torch or h5py"; exit 77
fi
[ -x "$BIN/infer$EXE" ] || { echo "t_keras.sh: $BIN/infer$EXE not built"; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/t_keras.XXXXXX")
trap 'rm -rf "$T"' EXIT
JSON="$SHARED/reference/keras_resnet50_v1_tfjs_model.json"
if [ -f "$JSON" ]; then set -- --json "$JSON"
elif [ "$REQUIRE_SHARED" = 1 ]; then echo "t_keras.sh: $JSON not found"; exit 1
else echo "note: $JSON not found: the real graph is not checked"; fi
OMP_NUM_THREADS=1 "$PY" tools/keras_mirror.py test --size 64 --count 2 --infer "$BIN/infer$EXE" \
  --runner "$RUNNER" --work "$T" "$@"
