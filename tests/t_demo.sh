#!/bin/sh
# tests/t_demo.sh - `make demo` does the main job (issue 16): tools/demo.sh, in its quick
# form (DEMO_QUICK=1: the same steps on a few pictures), pretrains a backbone on a source
# task, then on a target task with other classes trains from scratch, on the frozen
# pretrained backbone, and fine-tuned with pseudo-labelling over the two shifted domains;
# evaluates, runs patch inference on the composite picture and prints the three runs side
# by side. Each check names the step it proves.
BIN=${BIN:-.}
for p in "$BIN/train$EXE" "$BIN/infer$EXE"; do [ -x "$p" ] || { echo "FAIL: $p not built"; exit 1; }; done
T=$(mktemp -d "${TMPDIR:-/tmp}/t_demo.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok   $*"; }
check() { # NAME, then a command that must succeed
  name=$1; shift
  if "$@"; then ok "$name"; else fail "$name"; fi
}

if ! DEMO_QUICK=1 DEMO_DIR="$T/demo" THREADS=1 BIN="$BIN" sh tools/demo.sh > "$T/out.txt" 2>&1; then
  tail -n 20 "$T/out.txt"
  echo "FAIL: tools/demo.sh exited non-zero"
  exit 1
fi
D="$T/demo"
W="$D/pretrain/model.safetensors"
check "1. a backbone pretrained from scratch on the source task" \
  sh -c "[ -s '$W' ] && grep -qx -- '--weights=none' '$D/pretrain/args.txt' &&
         grep -q -- '--data=.*/source/train' '$D/pretrain/args.txt'"
check "2. scratch: the target task from a random init" \
  grep -qx -- '--weights=none' "$D/scratch/args.txt"
for run in frozen finetune; do
  check "3. $run: starts from the pretrained backbone, on the target task" \
    sh -c "grep -qx -- '--weights=$W' '$D/$run/args.txt' &&
           grep -q -- '--data=.*/target/train' '$D/$run/args.txt'"
done
check "3. frozen: no fine-tuning" sh -c "! grep -q -- '--finetune-epochs' '$D/frozen/args.txt'"
check "4. finetune: fine-tunes, then pseudo-labels both shifted domains" \
  sh -c "grep -q -- '--finetune-epochs=[1-9]' '$D/finetune/args.txt' &&
         grep -q -- '--pseudo=.*shift1.*,.*shift2' '$D/finetune/args.txt'"
# history.csv's phase column: 1 head, 2 fine-tuning, 3 and 4 the two pseudo-labelling rounds
phases=$(cut -d, -f2 "$D/finetune/history.csv" | sed 1d | sort -u | tr '\n' ' ')
check "4. finetune's history has phases 1 to 4 (got: $phases)" [ "$phases" = "1 2 3 4 " ]
check "5. infer --eval on a shifted domain wrote its report" \
  sh -c "[ -s '$D/eval/metrics.json' ] && [ -s '$D/eval/report.html' ]"
check "6. infer --patches drew the composite picture" [ -s "$D/patches/composite.patches.png" ]
check "7. compare.csv: scratch, frozen and finetune, in that order" \
  sh -c "[ \"\$(sed 1d '$D/compare/compare.csv' | cut -d, -f1 | tr '\n' ' ')\" = 'scratch frozen finetune ' ]"
check "7. the three runs printed side by side" \
  sh -c "grep -q '^run  *backbone' '$T/out.txt' && grep -q '^scratch ' '$T/out.txt' &&
         grep -q '^frozen ' '$T/out.txt' && grep -q '^finetune ' '$T/out.txt'"
[ "$fails" -eq 0 ] && echo "t_demo: all checks passed"
[ "$fails" -eq 0 ]
