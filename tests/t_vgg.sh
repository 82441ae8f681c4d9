#!/bin/sh
# tests/t_vgg.sh - VGG-16 through train and infer on tiny generated data (32 px, 16
# images; the binaries are $BIN/train and $BIN/infer, default ./):
#   1. a randomly initialised vgg16 model (train --weights none --epochs 0) serves as the
#      "pretrained" backbone;
#   2. frozen features (classifier.5's 4096, cached), then fine-tuning of the last group
#      (fc2: classifier.3) writes a model; the cache holds 4096-d features;
#   3. infer --eval reads that model; infer top-k, --save-features (4096 per image) and a
#      layer dump named as torchvision's modules.
# 138 M parameters: each model file is 541 MB, so the run folders are removed as soon as
# they are no longer needed.
BIN=${BIN:-.}
TRAIN="$BIN/train$EXE"
INFER="$BIN/infer$EXE"
T=$(mktemp -d "${TMPDIR:-/tmp}/t_vgg.XXXXXX")
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok   $*"; }
[ -x "$TRAIN" ] && [ -x "$INFER" ] || { echo "FAIL: $TRAIN or $INFER not built"; exit 1; }

$RUNNER "$TRAIN" --make-demo-data "$T/data" --demo-per-class 6 > /dev/null || { echo "FAIL: demo data"; exit 1; }
COMMON="--arch vgg16 --head linear --img-size 32 --batch 4 --data $T/data/train"
$RUNNER "$TRAIN" $COMMON --weights none --epochs 0 --out "$T/r0" > "$T/r0.log" 2>&1 \
  || { cat "$T/r0.log"; echo "FAIL: random vgg16 model"; exit 1; }
$RUNNER "$TRAIN" $COMMON --weights "$T/r0/model.safetensors" --epochs 2 --finetune-epochs 1 \
  --unfreeze 1 --cache-dir "$T/cache" --out "$T/r1" > "$T/r1.log" 2>&1 \
  || { cat "$T/r1.log"; fail "frozen + fine-tuning run failed"; }
rm -rf "$T/r0"
[ -s "$T/r1/model.safetensors" ] && ok "frozen features, then fine-tuning fc2: model written" \
  || fail "no model"
# the largest cache file is train's: 16 images x 4096 floats + a small header
size=$(for f in "$T/cache"/features-*; do wc -c < "$f"; done 2>/dev/null | sort -n | tail -n 1)
size=${size:-0}
[ "$size" -ge $((16 * 4096 * 4)) ] && [ "$size" -lt $((16 * 4096 * 4 + 4096)) ] \
  && ok "cached features are classifier.5's 4096" || fail "feature cache size $size"
rm -f "$T/r1/checkpoint.safetensors" "$T/r1"/best-*.safetensors

M="$T/r1/model.safetensors"
$RUNNER "$INFER" --model "$M" --eval "$T/data/train" --out "$T/eval" > "$T/eval.log" 2>&1 \
  && [ -s "$T/eval/metrics.json" ] && ok "infer --eval reads the model" \
  || { cat "$T/eval.log"; fail "infer --eval"; }
$RUNNER "$INFER" --model "$M" --topk 2 --save-features "$T/f.npy" --dump-nodes "$T/dump.safetensors" \
  "$T/data/train/circle" > "$T/infer.log" 2>&1 || { cat "$T/infer.log"; fail "infer"; }
# .npy: 128-byte header then 6 images x 4096 float32
[ "$(wc -c < "$T/f.npy")" -eq $((128 + 6 * 4096 * 4)) ] && ok "--save-features: 4096 per image" \
  || fail "--save-features size $(wc -c < "$T/f.npy")"
for n in features.28 features.30 avgpool classifier.0 classifier.4 classifier.6; do
  grep -q "\"$n\"" "$T/dump.safetensors" || fail "layer dump lacks $n"
done
[ "$fails" -eq 0 ]
