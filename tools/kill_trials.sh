#!/bin/sh
# tools/kill_trials.sh - kill -9 a training run at every atomic write and at random
# moments; resume each killed run (as often as needed) and require model.safetensors and
# metrics.json to be the uninterrupted run's (metrics.json without its timings and command
# line: the "seconds" of each epoch, the peak memory and the "notes"), byte for byte.
#
#   tools/kill_trials.sh [RANDOM_TRIALS [SEED]]     (defaults 10 and 1; BIN=dir of ./train)
#
# The job: a head on the frozen features of a small backbone (feature cache written), then
# fine-tuning and a pseudo-labelling phase with augmentation, early-stopping bookkeeping
# (best-phaseN files) and checkpoints after every epoch. At every atomic write (each
# write_file_atomic: fsync, then rename) strace kills the run with SIGKILL on entry to the
# Nth fsync and, in a second trial, to the Nth rename (strace -e inject); random trials
# send SIGKILL after a random delay. After each kill `train --resume` (with the options
# when the run died before its args.txt was written) finishes the run from what it left. Needs strace for the atomic-write trials
# (skipped with a note when it cannot trace here). Exit status 0 when every trial matches.
BIN=${BIN:-.}
TRAIN="$BIN/train"
case "$TRAIN" in /*) ;; *) TRAIN="$(pwd)/$TRAIN" ;; esac
[ -x "$TRAIN" ] || { echo "kill_trials: $TRAIN not built"; exit 1; }
RANDOM_TRIALS=${1:-10}
SEED=${2:-1}
T=$(mktemp -d "${TMPDIR:-/tmp}/kill_trials.XXXXXX")
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=1
fails=0; trials=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

"$TRAIN" --make-demo-data "$T/data" --demo-per-class 16 > /dev/null || { echo "demo data failed"; exit 1; }
"$TRAIN" --arch cifar_resnet20 --weights none --img-size 16 --preprocess unit --batch 16 \
  --epochs 2 --patience 0 --data "$T/data/train" --out "$T/backbone" > /dev/null 2>&1 ||
  { echo "backbone run failed"; exit 1; }
D1="$T/data/shift1_palette_noise"
CFG="--arch cifar_resnet20 --weights $T/backbone/model.safetensors --img-size 16 --preprocess unit
     --batch 16 --head mlp:16:dropout=0.2 --lr 0.01 --data $T/data/train --epochs 3 --patience 2
     --finetune-epochs 2 --unfreeze 1 --finetune-lr 0.001 --augment --aug-scale 0.7,1
     --pseudo $D1/unlabelled --pseudo-eval $D1/heldout --pseudo-epochs 2 --pseudo-threshold 0.3"

# metrics.json without what differs between any two runs: timings and the command line
masked() { sed -e 's/"seconds":[^,}]*/"seconds":_/g' -e 's/"peak_memory_mb":[^,}]*/"peak_memory_mb":_/g' -e 's/"notes":.*/"notes":_}/' "$1"; }

# one_run DIR [strace options]: a fresh run in DIR/run (its own feature cache in DIR)
one_run() {
  d=$1; shift
  mkdir -p "$d"
  # shellcheck disable=SC2086
  ( "$@" "$TRAIN" $CFG --out "$d/run" > "$d/first.log" 2>&1; true ) 2> /dev/null
}

# check DIR NAME: DIR/run was killed; resume it to the end (reading its checkpoint, best
# weights and feature cache: a real-named file cut short fails the resume) and compare
# with the reference
check() {
  d=$1; name=$2
  trials=$((trials + 1))
  for i in 1 2 3; do
    if [ -f "$d/run/args.txt" ]; then
      "$TRAIN" --resume "$d/run" > "$d/resume$i.log" 2>&1 && break
    else
      # shellcheck disable=SC2086
      "$TRAIN" --resume "$d/run" $CFG > "$d/resume$i.log" 2>&1 && break
    fi
  done
  if ! [ -f "$d/run/model.safetensors" ]; then
    fail "$name: resume did not finish"; tail -n 3 "$d/resume$i.log"; return
  fi
  cmp -s "$T/ref/run/model.safetensors" "$d/run/model.safetensors" ||
    fail "$name: model.safetensors differs from the uninterrupted run's"
  masked "$T/ref/run/metrics.json" > "$T/a.json"
  masked "$d/run/metrics.json" > "$T/b.json"
  cmp -s "$T/a.json" "$T/b.json" || { fail "$name: metrics.json differs"; diff "$T/a.json" "$T/b.json" | head -n 4; }
  ls "$d/run" | grep -q '\.tmp\.' && fail "$name: a *.tmp.PID file was left in the run folder"
  rm -rf "$d"
}

t0=$(date +%s)
one_run "$T/ref"
[ -f "$T/ref/run/model.safetensors" ] || { echo "reference run failed"; tail -n 5 "$T/ref/first.log"; exit 1; }
ref_seconds=$(( $(date +%s) - t0 + 1 ))
one_run "$T/again"
cmp -s "$T/ref/run/model.safetensors" "$T/again/run/model.safetensors" ||
  { echo "two uninterrupted runs differ: nothing to compare against"; exit 1; }
rm -rf "$T/again"

if strace -f -qq -o "$T/trace.log" -e trace=rename,fsync true 2> /dev/null; then
  strace -f -qq -o "$T/trace.log" -e trace=rename,fsync "$TRAIN" $CFG --out "$T/count/run" \
    > /dev/null 2>&1
  n_writes=$(grep -c 'rename(' "$T/trace.log")
  echo "kill_trials: $n_writes atomic writes in a run; killing at each one's fsync and rename"
  k=1
  while [ "$k" -le "$n_writes" ]; do
    for sc in fsync rename; do
      one_run "$T/w" strace -f -qq -o /dev/null -e trace=$sc -e inject=$sc:signal=KILL:when=$k
      if grep -q "^model:" "$T/w/first.log"; then fail "$sc #$k: the run was not killed"; rm -rf "$T/w"; continue; fi
      check "$T/w" "kill at $sc #$k"
    done
    k=$((k + 1))
  done
else
  echo "kill_trials: note: strace cannot trace here; the atomic-write trials are skipped"
fi

echo "kill_trials: $RANDOM_TRIALS kills at random moments (the run takes about $ref_seconds s)"
r=1
while [ "$r" -le "$RANDOM_TRIALS" ]; do
  delay=$(awk -v s="$SEED" -v r="$r" -v m="$ref_seconds" 'BEGIN { srand(s * 1000 + r); printf "%.2f", rand() * m }')
  mkdir -p "$T/r"
  "$TRAIN" $CFG --out "$T/r/run" > "$T/r/first.log" 2>&1 &
  pid=$!
  sleep "$delay"
  kill -9 "$pid" 2> /dev/null
  wait "$pid" 2> /dev/null
  check "$T/r" "random kill after ${delay}s"
  r=$((r + 1))
done

echo "kill_trials: $trials trials, $fails failure(s)"
[ "$fails" -eq 0 ]
