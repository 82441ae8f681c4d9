#!/bin/sh
# tests/t_repo.sh - the repository's own bookkeeping (issue 16):
#   1. tests/run.sh counts a shell test's exit 77 as a skip (not a pass, not a failure);
#   2. imagenet_classes.c is what tools/gen_imagenet_classes.sh makes of the class list in
#      $SHARED (skipped without it; REQUIRE_SHARED=1 fails instead);
#   3. .gitignore covers what train and infer write by default (when git is at hand).
SHARED=${SHARED:-../shared}
T=$(mktemp -d "${TMPDIR:-/tmp}/t_repo.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok   $*"; }

# 1. a suite of one passing, one skipping and one failing shell test
mkdir -p "$T/suite/tests"
cp tests/run.sh "$T/suite/tests/"
printf 'exit 0\n' > "$T/suite/tests/t_a.sh"
printf 'echo "SKIP t_b.sh: nothing to test here"; exit 77\n' > "$T/suite/tests/t_b.sh"
printf 'exit 1\n' > "$T/suite/tests/t_c.sh"
(cd "$T/suite" && T= sh tests/run.sh > out.txt 2>&1); st=$?
last=$(tail -n 1 "$T/suite/out.txt")
[ "$st" -ne 0 ] && [ "$last" = "1 passed, 1 failed, 1 skipped" ] && ok "run.sh: exit 77 counts as a skip" \
  || { cat "$T/suite/out.txt"; fail "run.sh summary '$last' (status $st)"; }

# 2. the shipped class names are the generator's output
list="$SHARED/data/imagenet_classes.txt"
skip=0
if [ -f "$list" ]; then
  sh tools/gen_imagenet_classes.sh "$list" > "$T/classes.c" || fail "gen_imagenet_classes.sh failed"
  cmp -s "$T/classes.c" imagenet_classes.c && ok "imagenet_classes.c regenerates identically" \
    || fail "imagenet_classes.c differs from tools/gen_imagenet_classes.sh $list"
elif [ "$REQUIRE_SHARED" = 1 ]; then
  fail "$list not found (REQUIRE_SHARED=1)"
else
  echo "skip: $list not found"; skip=1
fi
n=$(grep -c '^    ".*",$' imagenet_classes.c)
[ "$n" -eq 1000 ] && ok "imagenet_classes.c: 1000 names" || fail "imagenet_classes.c: $n names"

# 3. default outputs are ignored
if command -v git > /dev/null 2>&1 && git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  for p in runs/run/model.safetensors infer_out/report.html demo_run/run/args.txt \
           features-0123456789abcdef.bin train infer build/train.o; do
    git check-ignore -q "$p" && ok ".gitignore: $p" || fail ".gitignore does not cover $p"
  done
fi

[ "$fails" -eq 0 ] || { echo "t_repo: $fails failure(s)"; exit 1; }
[ "$skip" -eq 1 ] && exit 77
echo "t_repo: all checks passed"
