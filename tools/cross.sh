#!/bin/sh
# tools/cross.sh TARGET [make variables]: build resnet-c for another platform with Debian's
# cross compilers and run the test suite under an emulator, on this x86-64 machine.
#   aarch64  aarch64-linux-gnu-gcc, NEON kernels, under qemu-aarch64
#   s390x    s390x-linux-gnu-gcc, big-endian, under qemu-s390x
#   i686     i686-linux-gnu-gcc, 32-bit size_t, linked static: natively where the kernel
#            runs 32-bit programs, else under qemu-i386
#   mingw64  x86_64-w64-mingw32-gcc, Windows .exe files, under wine (native x86-64 code)
# Builds go to build-TARGET/. RN_TEST_EMULATED=1 leaves out the ResNet-50-sized cases of
# test_net and t_train.sh (minutes each in plain C or under qemu; x86-64 runs them), and
# under qemu RN_GOLDEN=cifar20 also the ImageNet-sized golden runs and SKIP_TESTS="t_train
# t_demo t_vgg t_example" the shell tests that train for minutes there (qemu's floating
# point is software: 50-100 times slower; i686, Windows and x86-64 run them).
# RN_TEST_EMULATED=0 RN_GOLDEN= SKIP_TESTS= runs the whole suite. Packages: see .ci/run.
set -eu
cd "$(dirname "$0")/.."
target=${1:?usage: tools/cross.sh aarch64|s390x|i686|mingw64 [make variables]}
shift
ldflags=
case $target in
  aarch64) cc=aarch64-linux-gnu-gcc; runner="qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
  s390x) cc=s390x-linux-gnu-gcc; runner="qemu-s390x -L /usr/s390x-linux-gnu" ;;
  i686) cc=i686-linux-gnu-gcc; runner="qemu-i386 -L /usr/i686-linux-gnu"; ldflags=-static ;;
  mingw64)
    cc=x86_64-w64-mingw32-gcc; runner=wine
    export WINEDEBUG=-all WINEPREFIX="${WINEPREFIX:-$PWD/build-mingw64/wineprefix}"
    mkdir -p "$WINEPREFIX"
    # One persistent wineserver for the whole suite: by default each wine program starts a
    # server that exits 3 s after its last client, and a program starting just then is refused
    # ("wine client error:0: recvmsg: Connection reset by peer"), failing a test at random.
    wineserver -p
    trap 'wineserver -k 2> /dev/null || true' EXIT ;;
  *) echo "tools/cross.sh: unknown target '$target' (aarch64, s390x, i686 or mingw64)" >&2; exit 2 ;;
esac
command -v "$cc" > /dev/null || { echo "tools/cross.sh: $cc not installed (see .ci/run)" >&2; exit 1; }
b="build-$target"
make -j2 BUILD="$b" BIN="$b" CC="$cc" LDFLAGS="$ldflags" "$@"
if [ "$target" = i686 ] && "$b/train" --help > /dev/null 2>&1; then runner=""; fi
export RN_TEST_EMULATED="${RN_TEST_EMULATED:-1}" # plain C kernels: ResNet-50 cases take minutes
case $runner in
  qemu*) export RN_GOLDEN="${RN_GOLDEN-cifar20}"
         export SKIP_TESTS="${SKIP_TESTS-t_train t_demo t_vgg t_example}" ;;
esac
echo "tools/cross.sh: $target tests run under: ${runner:-this machine's kernel}"
make BUILD="$b" BIN="$b" CC="$cc" LDFLAGS="$ldflags" RUNNER="$runner" "$@" test
