#!/bin/sh
# tools/mpi_scaling.sh [ROUNDS] - doc/PERF.md's data-parallel figures: ResNet-50 at 96 px,
# training every stage (global batch 32) and frozen feature extraction (batch 16) on 64
# demo images (PER_CLASS=16 per class; 64 gives 256), 1 rank x 1 thread then 2 ranks x 1
# thread, interleaved, ROUNDS times (3).
# Needs the MPI build in build-mpi/ (make BUILD=build-mpi BIN=build-mpi MPI=1). Prints one
# line per run: epoch or extraction seconds, then CPU (user, system) and wall seconds.
set -e
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
TRAIN=build-mpi/train
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
T=$(mktemp -d "${TMPDIR:-/tmp}/mpi_scaling.XXXXXX")
trap 'rm -rf "$T"' EXIT
mpi() { ranks=$1; shift; /usr/bin/time -f "cpu %U %S wall %e" mpirun --oversubscribe --mca mpi_yield_when_idle 1 -np "$ranks" "$@"; }
$TRAIN --make-demo-data "$T/data" --demo-per-class "${PER_CLASS:-16}" > /dev/null
COMMON="--arch resnet50 --img-size 96 --preprocess unit --epochs 1 --patience 0 --val-frac 0
        --test-frac 0 --threads 1 --data $T/data/train"
# a ResNet-50 model file to extract features with
$TRAIN $COMMON --weights none --batch 32 --limit-per-class 2 --out "$T/w" > /dev/null 2>&1
for round in $(seq "$ROUNDS"); do
  for np in 1 2; do
    mpi $np $TRAIN $COMMON --weights none --batch 32 --out "$T/ft$np.$round" > "$T/ft.log" 2>&1
    echo "train   ranks=$np round=$round $(grep -o 'lr [0-9.]* *[0-9.]*s' "$T/ft.log") $(tail -n 1 "$T/ft.log")"
    mpi $np $TRAIN $COMMON --weights "$T/w/model.safetensors" --epochs 0 --batch 16 --no-cache \
      --out "$T/fe$np.$round" > "$T/fe.log" 2>&1
    echo "extract ranks=$np round=$round $(grep 'feature extraction' "$T/fe.log") $(tail -n 1 "$T/fe.log")"
  done
done
