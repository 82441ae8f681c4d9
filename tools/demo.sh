#!/bin/sh
# tools/demo.sh - `make demo`: the main job, transfer learning, end to end with no download.
#
# 1. Pretraining. A source task is generated (64 px pictures of circles, squares, triangles,
#    stripes) and a CIFAR ResNet-20 is trained on it from a random init: the stand-in for
#    downloaded ImageNet weights, and the only step a user does not do.
# 2. A new target task with other classes (rings, crosses, checker boards, crescents), with
#    few labelled pictures, two unlabelled shifted domains (new palette and noise; then also
#    faded shapes and blur) and a composite picture of four shapes.
# 3. What a user does with pretrained weights, three ways on the same target data (the same
#    seeded split, so the same validation and test pictures):
#      scratch   the same network from a random init (no transfer);
#      frozen    the pretrained backbone frozen, its features cached, an MLP head on them;
#      finetune  that, then fine-tuning the last stage with the head, then pseudo-labelling
#                over the two shifted domains in turn.
# 4. infer --eval of the fine-tuned model on the shifted domains' held-out pictures, and
#    infer --patches on the composite picture (one window per shape).
# 5. train --compare prints the three side by side and writes compare.html.
# Environment: BIN (where ./train and ./infer are, default .), RUNNER and EXE (an emulator
# and ".exe", for cross-built programs: tests/run.sh), DEMO_DIR (default demo_run),
# THREADS (default 2), DEMO_QUICK (1: a few pictures and one or two epochs a step, the
# same steps in seconds, for tests/t_demo.sh; the numbers mean nothing then). libgomp's threads sleep while they wait (OMP_WAIT_POLICY=passive,
# set unless already set), which matters on cores shared with other work.
set -e
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
BIN=${BIN:-.}
DEMO=${DEMO_DIR:-demo_run}
TH="--threads ${THREADS:-2}"
if [ "${DEMO_QUICK:-0}" = 1 ]; then
  N_SOURCE=12 N_TARGET=12 E_PRETRAIN=1 E_SCRATCH=1 E_HEAD=2 E_FINETUNE=1 E_PSEUDO=1
else
  N_SOURCE=100 N_TARGET=30 E_PRETRAIN=8 E_SCRATCH=8 E_HEAD=40 E_FINETUNE=4 E_PSEUDO=2
fi
t0=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - t0 )) s] $*"; }
quiet() { # run a command, its log to $DEMO/$1.log; the last lines shown
  log="$DEMO/$1.log"; shift
  if "$@" > "$log" 2>&1; then tail -n "${TAIL:-3}" "$log"
  else tail -n 20 "$log"; echo "failed: see $log"; exit 1; fi
}
mkdir -p "$DEMO"
rm -rf "$DEMO/pretrain" "$DEMO/scratch" "$DEMO/frozen" "$DEMO/finetune" "$DEMO/eval" \
  "$DEMO/patches" "$DEMO/compare" "$DEMO/cache"
[ -d "$DEMO/source/train" ] || $RUNNER "$BIN/train$EXE" --make-demo-data "$DEMO/source" --demo-per-class $N_SOURCE --seed 0
[ -d "$DEMO/target/train" ] || $RUNNER "$BIN/train$EXE" --make-demo-data "$DEMO/target" --demo-task target \
  --demo-per-class $N_TARGET --seed 1
COMMON="--arch cifar_resnet20 --preprocess unit --batch 32 --seed 0 $TH"

step "1. pretraining the backbone on the source task (4 classes x $N_SOURCE, from scratch)"
quiet pretrain $RUNNER "$BIN/train$EXE" $COMMON --weights none --data "$DEMO/source/train" \
  --out "$DEMO/pretrain" --epochs $E_PRETRAIN --lr 0.003 --schedule cosine --patience 0 \
  --augment --aug-scale 0.7,1 --aug-rotate 15

T="$DEMO/target"
TARGET="--data $T/train --val-frac 0.25 --test-frac 0.25"
W="$DEMO/pretrain/model.safetensors"
step "2. target task, other classes (4 x $N_TARGET labelled): scratch training for comparison"
quiet scratch $RUNNER "$BIN/train$EXE" $COMMON $TARGET --weights none --out "$DEMO/scratch" \
  --epochs $E_SCRATCH --lr 0.003 --schedule cosine --patience 4

step "3. the pretrained backbone frozen: features cached once, an MLP head on them"
quiet frozen $RUNNER "$BIN/train$EXE" $COMMON $TARGET --weights "$W" --out "$DEMO/frozen" \
  --cache-dir "$DEMO/cache" --head mlp:64:dropout=0.2 --epochs $E_HEAD --lr 0.01 --patience 8

step "4. frozen head, then fine-tuning the last stage, then pseudo-labelling two shifted domains"
TAIL=12 quiet finetune $RUNNER "$BIN/train$EXE" $COMMON $TARGET --weights "$W" --out "$DEMO/finetune" \
  --cache-dir "$DEMO/cache" --head mlp:64:dropout=0.2 --epochs $E_HEAD --lr 0.01 --patience 8 \
  --finetune-epochs $E_FINETUNE --unfreeze 1 --finetune-lr 0.001 \
  --pseudo "$T/shift1_palette_noise/unlabelled,$T/shift2_faded_blur/unlabelled" \
  --pseudo-eval "$T/shift1_palette_noise/heldout,$T/shift2_faded_blur/heldout" \
  --pseudo-epochs $E_PSEUDO --pseudo-threshold 0.6 --pseudo-lr 0.0005

step "5. infer --eval on the second shifted domain's held-out pictures"
TAIL=4 quiet eval $RUNNER "$BIN/infer$EXE" --model "$DEMO/finetune/model.safetensors" $TH \
  --eval "$T/shift2_faded_blur/heldout" --out "$DEMO/eval"

step "6. infer --patches on a composite picture (ring, cross / checker, crescent)"
$RUNNER "$BIN/infer$EXE" --model "$DEMO/finetune/model.safetensors" $TH --patches 64 --stride 64 \
  --out "$DEMO/patches" "$T/composite.png" 2> "$DEMO/patches.log" || { cat "$DEMO/patches.log"; exit 1; }

step "7. the same target data, three ways"
$RUNNER "$BIN/train$EXE" --compare "$DEMO/scratch" "$DEMO/frozen" "$DEMO/finetune" --out "$DEMO/compare"

echo
echo "demo finished in $(( $(date +%s) - t0 )) s"
echo "reports: $DEMO/finetune/report.html, $DEMO/eval/report.html, $DEMO/compare/compare.html"
echo "patches: $DEMO/patches/composite.patches.png"
