#!/bin/sh
# tests/t_repo.sh - the repository's own bookkeeping (issue 16):
#   1. tests/run.sh counts a shell test's exit 77 as a skip (not a pass, not a failure),
#      and the shell tests that need torch, $SHARED or an MPI build exit 77 without them;
#   2. imagenet_classes.c is what tools/gen_imagenet_classes.sh makes of the class list in
#      $SHARED (skipped without it; REQUIRE_SHARED=1 fails instead), and infer.c resizes
#      with data.c's image_resize only;
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

# ... and the project's own shell tests skip that way (t_convert.sh used to print SKIP and
# exit 0, a pass): each one here is given what makes it skip
SHARED=/nonexistent REQUIRE_SHARED=0 sh tests/t_convert.sh > "$T/skip.txt" 2>&1; st=$?
[ "$st" -eq 77 ] && ok "t_convert.sh without \$SHARED skips (77)" \
  || { cat "$T/skip.txt"; fail "t_convert.sh without \$SHARED: status $st, expected 77"; }
MPI=0 sh tests/t_mpi.sh > "$T/skip.txt" 2>&1; st=$?
[ "$st" -eq 77 ] && ok "t_mpi.sh outside an MPI=1 build skips (77)" \
  || { cat "$T/skip.txt"; fail "t_mpi.sh with MPI=0: status $st, expected 77"; }
mkdir -p "$T/nopy"
printf '#!/bin/sh\nexit 1\n' > "$T/nopy/python3"
chmod +x "$T/nopy/python3"
for s in tests/t_*.sh; do
  grep -q '^PY=/usr/bin/python3$' "$s" || continue
  sed "s|^PY=/usr/bin/python3\$|PY=$T/nopy/python3|" "$s" > "$T/nopy/$(basename "$s")"
  sh "$T/nopy/$(basename "$s")" > "$T/skip.txt" 2>&1; st=$?
  [ "$st" -eq 77 ] && ok "$s without torch skips (77)" \
    || { tail -n 3 "$T/skip.txt"; fail "$s without torch: status $st, expected 77"; }
done

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

# ... and one resize serves training and patch inference: infer.c upscales with data.c's
# image_resize (it used to carry a second, simpler bilinear resize of its own)
if grep -n 'static [a-z_ ]*resize[a-z_]* *(' infer.c > "$T/resize.txt" || ! grep -q 'image_resize(' infer.c; then
  cat "$T/resize.txt"; fail "infer.c resizes with a function of its own, not data.c's image_resize"
else ok "infer.c resizes with data.c's image_resize only"; fi

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
