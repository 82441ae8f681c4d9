#!/bin/sh
# tests/t_effnet.sh - efficientnet_b0 through train and infer on tiny generated data (32 px):
#   1. a one-epoch run from scratch writes a model, used below as the "pretrained" weights;
#   2. the plain head (classifier.1) on cached frozen features, then fine-tuning of the last
#      two freeze groups (--unfreeze 2: features.8 and the head); the model it writes is
#      read by infer --eval, which reports train's test accuracy and confusion matrix;
#   3. infer --dump-nodes names the nodes as torchvision's modules.
# Needs $BIN/train and $BIN/infer; fails when they are missing.
BIN=${BIN:-.}
TRAIN="$BIN/train$EXE"
INFER="$BIN/infer$EXE"
run_train() { $RUNNER "$TRAIN" "$@"; }
run_infer() { $RUNNER "$INFER" "$@"; }
for p in "$TRAIN" "$INFER"; do
  [ -x "$p" ] || { echo "FAIL: $p not built"; exit 1; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/t_effnet.XXXXXX")
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=1
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok   $*"; }
field() { # FILE KEY: the first "KEY": value (a number or a matrix) after "test" in a metrics.json
  tr -d '\n ' < "$1" | sed 's/.*"test":{/{/' | grep -o "\"$2\":\\(\[[][0-9,]*\]\|[^,]*\)" | head -n 1 |
    cut -d: -f2
}

{ run_train --make-demo-data "$T/data" --demo-per-class 8 --seed 3 &&
  run_train --make-demo-data "$T/test" --demo-per-class 3 --seed 4; } > /dev/null ||
  { echo "FAIL: demo data"; exit 1; }
E="--arch efficientnet_b0 --head linear --img-size 32 --preprocess unit --batch 8 --seed 1
   --patience 0"

# 1. from scratch
run_train $E --weights none --data "$T/data/train" --out "$T/s" --epochs 1 --lr 0.01 \
  > "$T/s.log" 2>&1 || { tail -n 5 "$T/s.log"; fail "scratch run failed"; }
[ -s "$T/s/model.safetensors" ] && ok "from scratch: model written" || fail "no scratch model"

# 2. frozen features (cached), then fine-tuning features.8 and the head
run_train $E --weights "$T/s/model.safetensors" --data "$T/data/train" --test "$T/test/train" \
  --out "$T/f" --cache-dir "$T/cache" --epochs 2 --finetune-epochs 1 --unfreeze 2 \
  --finetune-lr 0.001 > "$T/f.log" 2>&1 || { tail -n 5 "$T/f.log"; fail "fine-tune run failed"; }
n_cache=$(ls "$T/cache" 2>/dev/null | grep -c '^features-')
[ "$n_cache" -ge 1 ] && ok "frozen features cached ($n_cache files)" || fail "no feature cache"
grep -q "^phase 2 epoch" "$T/f.log" && ok "fine-tuning ran" || fail "no fine-tuning epoch in the log"
if run_infer --model "$T/f/model.safetensors" --eval "$T/test/train" --out "$T/e" \
     > "$T/e.log" 2>&1; then
  for k in accuracy confusion_matrix; do
    a=$(field "$T/f/metrics.json" $k); b=$(field "$T/e/metrics.json" $k)
    [ -n "$a" ] && [ "$a" = "$b" ] && ok "infer --eval $k = train's ($a)" \
      || fail "infer --eval $k '$b', train '$a'"
  done
else
  tail -n 5 "$T/e.log"; fail "infer --eval failed"
fi

# 3. layer dump names
img=$(ls "$T/test/train/circle" | head -n 1)
run_infer --model "$T/f/model.safetensors" --dump-nodes "$T/dump.safetensors" \
  "$T/test/train/circle/$img" > "$T/d.log" 2>&1 || { tail -n 3 "$T/d.log"; fail "--dump-nodes failed"; }
for name in features.0.0 features.1.0.block.1.fc1 features.2.1.stochastic_depth features.8.2 \
            classifier.1; do
  grep -q "\"$name\"" "$T/dump.safetensors" 2>/dev/null || fail "dump lacks $name"
done
[ "$fails" -eq 0 ] && ok "dump names are torchvision's"
exit "$fails"
