#!/bin/sh
# tools/qemu_insns.sh [M N K] - how many AArch64 instructions one sgemm (C = A B, M x K
# times K x N, default 64 64 64) executes with the NEON kernels and in plain C: the speed
# figure that means something under qemu-user, where seconds do not. Builds libresnet.a for
# AArch64 twice (build-aarch64-insns-{neon,plain}/, SIMD=1 and SIMD=0, OPENMP=0), links a
# ten-line driver and counts the instructions qemu executes (-singlestep -d exec: one
# log line an instruction), once with the multiplication and once without (start-up and
# set-up), and prints the difference. Needs gcc-aarch64-linux-gnu and qemu-user.
set -eu
cd "$(dirname "$0")/.."
m=${1:-64} n=${2:-64} k=${3:-64}
cc=aarch64-linux-gnu-gcc
runner="qemu-aarch64 -L /usr/aarch64-linux-gnu"
command -v $cc > /dev/null || { echo "tools/qemu_insns.sh: $cc not installed" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/qemu_insns.XXXXXX")
trap 'rm -rf "$T"' EXIT
cat > "$T/driver.c" << 'EOF'
#include "resnet.h"
#include <stdlib.h>
int main(int argc, char **argv) {
    int m = atoi(argv[1]), n = atoi(argv[2]), k = atoi(argv[3]), run = atoi(argv[4]);
    float *a = calloc((size_t)m * k, 4), *b = calloc((size_t)k * n, 4), *c = calloc((size_t)m * n, 4);
    for (int i = 0; i < m * k; i++) a[i] = (float)(i % 7) - 3;
    for (int i = 0; i < k * n; i++) b[i] = (float)(i % 5) - 2;
    if (run) sgemm(0, 0, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
    return c[0] == 12345.0f;
}
EOF
count() { # BINARY RUN: instructions executed
  $runner -singlestep -d exec,nochain -D "$T/trace" "$1" $m $n $k "$2" || true
  grep -c '^Trace' "$T/trace"
}
for simd in 1 0; do
  kind=$([ $simd = 1 ] && echo neon || echo plain)
  b="build-aarch64-insns-$kind"
  make -s BUILD="$b" BIN="$b" CC=$cc SIMD=$simd OPENMP=0 "$b/libresnet.a" > /dev/null
  $cc -O2 -std=c99 -I. "$T/driver.c" "$b/libresnet.a" -lm -pthread -o "$T/driver_$kind"
  base=$(count "$T/driver_$kind" 0)
  full=$(count "$T/driver_$kind" 1)
  echo "$kind: sgemm ${m}x${n}x${k}: $((full - base)) instructions ($(( (full - base) * 1000 / (m * n * k) )) per 1000 multiply-adds)"
done
