#!/bin/sh
# tests/t_mpi.sh - data-parallel training and sharded inference under mpirun (make MPI=1;
# skipped, exit 77, in other builds or without mpirun). On tiny demo data, one job (a head
# on frozen features, then fine-tuning the last stage with the head) run with 1, 2 and 3
# ranks:
#   1. the feature caches are the same bytes;
#   2. the models agree within TOL (the gradient sums and batch-norm sums are added in
#      another order; SGD keeps that at float rounding) and score the test set the same;
#   2b. the gradient buckets' size changes no bit of a 2-rank run;
#   3. a 2-rank run killed after an epoch and resumed with 2 ranks gives the uninterrupted
#      2-rank model byte for byte, and resumed with 3 ranks the same model within TOL;
#   4. infer under mpirun: --save-logits, --save-features, --json, --csv and --eval outputs
#      are the one-process bytes.
BIN=${BIN:-.}
BUILD=${BUILD:-build}
TRAIN="$BIN/train$EXE"
INFER="$BIN/infer$EXE"
TOL=${TOL:-1e-5}
if [ "${MPI:-0}" != 1 ]; then echo "t_mpi.sh: skipped (not an MPI=1 build)"; exit 77; fi
command -v mpirun > /dev/null || { echo "t_mpi.sh: skipped (no mpirun)"; exit 77; }
for p in "$TRAIN" "$INFER" "$BUILD/tests/test_dist"; do
  [ -x "$p" ] || { echo "FAIL: $p not built"; exit 1; }
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1
mpi() { ranks=$1; shift; mpirun --oversubscribe -np "$ranks" "$@"; }
T=$(mktemp -d "${TMPDIR:-/tmp}/t_mpi.XXXXXX")
[ -n "$KEEP" ] || trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok   $*"; }
maxdiff() { "$BUILD/tests/test_dist" --maxdiff "$1" "$2" | cut -d' ' -f1; }
within() { awk "BEGIN { exit !($1 <= $2) }"; }
json_num() {
  tr -d '\n ' < "$1" | sed -n "s/.*\"$2\":{[^}]*\"$3\":\([-0-9.eE+]*\).*/\1/p" | head -n 1
}

"$TRAIN" --make-demo-data "$T/data" --demo-per-class 16 > /dev/null || { echo "FAIL: demo data"; exit 1; }
# a "pretrained" backbone: one quick epoch from scratch, one process
"$TRAIN" --arch cifar_resnet20 --weights none --img-size 16 --preprocess unit --batch 16 \
  --epochs 1 --patience 0 --data "$T/data/train" --out "$T/pre" > "$T/pre.log" 2>&1 \
  || { cat "$T/pre.log"; echo "FAIL: pretraining"; exit 1; }

JOB="--arch cifar_resnet20 --weights $T/pre/model.safetensors --img-size 16 --preprocess unit
     --batch 12 --head mlp:32:dropout=0.2 --epochs 2 --finetune-epochs 2 --unfreeze 1
     --opt sgd --lr 0.02 --finetune-lr 0.01 --patience 0 --data $T/data/train"
for np in 1 2 3; do
  mkdir -p "$T/cache$np"
  mpi $np "$TRAIN" $JOB --out "$T/r$np" --cache-dir "$T/cache$np" > "$T/r$np.log" 2>&1 \
    || { tail -n 20 "$T/r$np.log"; fail "$np ranks: train failed"; }
done
# 1. feature caches
n1=$(ls "$T/cache1" | grep -c '^features-')
[ "$n1" -ge 2 ] || fail "1 rank: $n1 feature cache files"
for np in 2 3; do
  same=1
  for f in "$T/cache1"/features-*; do cmp -s "$f" "$T/cache$np/$(basename "$f")" || same=0; done
  [ "$same" = 1 ] && ok "$np ranks: feature cache = 1 rank's, byte for byte" \
    || fail "$np ranks: feature cache differs"
done
# 2. fine-tuned models and their test scores
for np in 2 3; do
  d=$(maxdiff "$T/r1/model.safetensors" "$T/r$np/model.safetensors")
  [ -n "$d" ] && within "$d" "$TOL" && ok "$np ranks: weights within $d of 1 rank's (tol $TOL)" \
    || fail "$np ranks: weights differ by '$d' (tol $TOL)"
  a1=$(json_num "$T/r1/metrics.json" test accuracy); an=$(json_num "$T/r$np/metrics.json" test accuracy)
  [ -n "$a1" ] && [ "$a1" = "$an" ] && ok "$np ranks: test accuracy $an = 1 rank's" \
    || fail "$np ranks: test accuracy '$an' != '$a1'"
done
for f in checkpoint.safetensors model.safetensors; do
  [ -s "$T/r2/$f" ] || fail "2 ranks: no $f"
done
# 2b. gradient buckets. r2 ran as ranks on one machine do: each node's gradients summed
#     (blocking) once its backward is done. Overlapped (RN_OVERLAP=1, as across machines):
#     one 25 MB bucket (the whole net here), a bucket a node (RN_BUCKET_MB=0.004, 1000
#     floats: each sum in flight while the next nodes' backward runs, buckets waited for
#     and refilled), a few nodes a bucket (0.2); and blocking buckets of a few nodes. All
#     give r2's model byte for byte: two ranks add each gradient in one order whatever the
#     bucketing
for cfg in 1:25 1:0.004 1:0.2 0:0.2; do
  ov=${cfg%%:*} mb=${cfg#*:}
  RN_OVERLAP=$ov RN_BUCKET_MB=$mb mpi 2 "$TRAIN" $JOB --out "$T/b$cfg" --cache-dir "$T/cache2" \
    > "$T/b$cfg.log" 2>&1 \
    || { tail -n 20 "$T/b$cfg.log"; fail "2 ranks, RN_OVERLAP=$ov RN_BUCKET_MB=$mb: train failed"; }
  cmp -s "$T/r2/model.safetensors" "$T/b$cfg/model.safetensors" \
    && ok "2 ranks, overlap $ov, buckets of $mb MB: the node-by-node model, byte for byte" \
    || fail "2 ranks, overlap $ov, buckets of $mb MB: model differs ($(maxdiff "$T/r2/model.safetensors" "$T/b$cfg/model.safetensors"))"
done
RN_OVERLAP=yes mpi 2 "$TRAIN" $JOB --out "$T/obad" --cache-dir "$T/cache2" > "$T/obad.log" 2>&1
st=$?
[ "$st" = 2 ] && grep -q "RN_OVERLAP=yes: expected 0 or 1" "$T/obad.log" \
  && ok "RN_OVERLAP=yes: refused (status 2)" \
  || { cat "$T/obad.log"; fail "RN_OVERLAP=yes: status $st"; }
RN_BUCKET_MB=lots mpi 2 "$TRAIN" $JOB --out "$T/bbad" --cache-dir "$T/cache2" > "$T/bbad.log" 2>&1
st=$?
[ "$st" = 2 ] && grep -q "RN_BUCKET_MB=lots: expected megabytes" "$T/bbad.log" \
  && ok "RN_BUCKET_MB=lots: refused (status 2)" \
  || { cat "$T/bbad.log"; fail "RN_BUCKET_MB=lots: status $st"; }
# 3. kill after epoch 3 (phase 2's first), resume with 2 and with 3 ranks
for np in 2 3; do
  mpi 2 "$TRAIN" $JOB --out "$T/k$np" --cache-dir "$T/cache2" --kill-after-epochs 3 \
    > "$T/k$np.log" 2>&1 && fail "--kill-after-epochs did not stop the 2-rank job"
  [ -f "$T/k$np/model.safetensors" ] && fail "killed run wrote a model"
  mpi $np "$TRAIN" --resume "$T/k$np" > "$T/k${np}r.log" 2>&1 \
    || { tail -n 20 "$T/k${np}r.log"; fail "resume with $np ranks failed"; }
  grep -q "resumed phase 2 after epoch 1" "$T/k${np}r.log" || fail "resume ($np ranks) did not continue in phase 2"
done
cmp -s "$T/r2/model.safetensors" "$T/k2/model.safetensors" \
  && ok "2 ranks killed, resumed with 2: the uninterrupted 2-rank model, byte for byte" \
  || fail "2 ranks resumed with 2: model differs ($(maxdiff "$T/r2/model.safetensors" "$T/k2/model.safetensors"))"
d=$(maxdiff "$T/r2/model.safetensors" "$T/k3/model.safetensors")
[ -n "$d" ] && within "$d" "$TOL" && ok "2 ranks killed, resumed with 3: within $d (tol $TOL)" \
  || fail "resumed with 3 ranks: weights differ by '$d'"
# 4. infer: the one-process outputs, byte for byte
M="$T/r1/model.safetensors"
IMGS=$(ls "$T/data/shift1_palette_noise/unlabelled"/*.png | head -n 13)
for np in 1 2 3; do
  mpi $np "$INFER" --model "$M" --batch 4 --json --save-logits "$T/l$np.npy" \
    --save-features "$T/f$np.npy" $IMGS > "$T/j$np.json" 2> "$T/i$np.log" || fail "infer --json ($np ranks)"
  mpi $np "$INFER" --model "$M" --batch 4 --csv $IMGS > "$T/c$np.csv" 2>> "$T/i$np.log" || fail "infer --csv ($np ranks)"
  mpi $np "$INFER" --model "$M" --batch 4 --eval "$T/data/shift1_palette_noise/heldout" \
    --out "$T/e$np" > "$T/e$np.txt" 2>> "$T/i$np.log" || fail "infer --eval ($np ranks)"
done
for np in 2 3; do
  same=1
  for f in l%s.npy f%s.npy j%s.json c%s.csv e%s.txt e%s/metrics.json; do
    a=$(printf "$f" 1); b=$(printf "$f" "$np")
    cmp -s "$T/$a" "$T/$b" || { same=0; echo "  $b differs from $a"; }
  done
  [ "$same" = 1 ] && ok "infer, $np ranks: logits, features, json, csv, eval = 1 rank's bytes" \
    || fail "infer, $np ranks: outputs differ"
done
[ -s "$T/l1.npy" ] && [ -s "$T/e1/metrics.json" ] || fail "infer outputs missing"

# 5. one rank fails (rank 0 cannot make the run folder) while the other goes on into the
#    collectives: the job stops at once, the error said once
: > "$T/afile"
timeout 120 mpirun --oversubscribe -np 2 "$TRAIN" $JOB --out "$T/afile/run" > "$T/x.log" 2>&1
st=$?
n_err=$(grep -c "cannot create directory" "$T/x.log")
[ "$st" -ne 0 ] && [ "$st" -ne 124 ] && [ "$n_err" = 1 ] && ok "a failing rank stops the job (status $st, one error line)" \
  || { cat "$T/x.log"; fail "failing rank: status $st, $n_err error lines"; }

[ "$fails" -eq 0 ] || { echo "t_mpi: $fails failure(s)"; exit 1; }
echo "t_mpi: all checks passed"
