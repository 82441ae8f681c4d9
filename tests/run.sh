#!/bin/sh
# Runs every test binary given, then the shell tests tests/t_*.sh, and prints one closing
# line "N passed, N failed, N skipped" over all test cases. Exit status is non-zero if any
# failed. A shell test that cannot run here (no torch, no $SHARED) exits 77 and counts as
# skipped (the automake convention); C tests report their skips in their summary line.
#   tests/run.sh build/tests/test_*           everything
#   T=golden tests/run.sh build/tests/test_*  only the binaries and shell tests whose name
#                                             holds "golden" (make test T=golden); several
#                                             words: names holding any (T="optim data")
#   SKIP_TESTS="t_train t_demo" tests/run.sh ...  leaves out the binaries and shell tests
#                                             whose name holds any word (each counts as
#                                             skipped; tools/cross.sh under qemu)
# RUNNER runs a cross-built binary (e.g. RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu",
# RUNNER=wine); the shell tests get it too, and EXE (".exe" for Windows builds).
export RUNNER EXE
passed=0; failed=0; skipped=0; bad_bins=""
log=$(mktemp); trap 'rm -f "$log"' EXIT
selected() {
  [ -z "$T" ] && return 0
  for word in $T; do case "$1" in *"$word"*) return 0 ;; esac; done
  return 1
}
left_out() { # 0 (and a SKIP line) when SKIP_TESTS names it
  for word in $SKIP_TESTS; do
    case "$1" in *"$word"*) echo "SKIP $1 (SKIP_TESTS=\"$SKIP_TESTS\")"; skipped=$((skipped + 1)); return 0 ;; esac
  done
  return 1
}
for t in "$@"; do
  selected "$t" || continue
  left_out "$t" && continue
  echo "== $t"
  t0=$(date +%s)
  $RUNNER "$t" > "$log" 2>&1; rc=$?
  cat "$log"
  echo "   ($(( $(date +%s) - t0 )) s)"
  line=$(grep '^# [0-9]* passed, [0-9]* failed' "$log" | tail -n 1)
  if [ -z "$line" ]; then failed=$((failed + 1)); bad_bins="$bad_bins $t(crashed rc=$rc)"; continue; fi
  p=$(echo "$line" | sed 's/^# \([0-9]*\) passed.*/\1/')
  f=$(echo "$line" | sed 's/.* \([0-9]*\) failed.*/\1/')
  s=$(echo "$line" | sed 's/.* \([0-9]*\) skipped.*/\1/')
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); bad_bins="$bad_bins $t(rc=$rc)"; fi
done
for s in tests/t_*.sh; do
  [ -f "$s" ] || continue
  selected "$s" || continue
  left_out "$s" && continue
  echo "== $s"
  t0=$(date +%s)
  # exit status 77: skipped (what the test needs is not there)
  sh "$s"; rc=$?
  if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); echo "ok   $s"
  elif [ "$rc" -eq 77 ]; then skipped=$((skipped + 1)); echo "SKIP $s"
  else failed=$((failed + 1)); echo "FAIL $s"; bad_bins="$bad_bins $s"; fi
  echo "   ($(( $(date +%s) - t0 )) s)"
done
[ -n "$bad_bins" ] && echo "failing:$bad_bins"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
