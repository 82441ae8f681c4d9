#!/bin/sh
# examples/train_min.c, the README's textbook loop, trains and reaches 90 % on its task.
set -e
BUILD=${BUILD:-build}
out=$($RUNNER "$BUILD/examples/train_min$EXE")
echo "$out" | sed 's/^/t_example: /'
echo "$out" | grep -q '^eval accuracy'
