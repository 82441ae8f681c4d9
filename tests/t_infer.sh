#!/bin/sh
# infer --eval on train's --test folder must report train's test metrics: the same accuracy,
# macro F1 and confusion matrix (and loss within 1e-5) in both metrics.json files. Two
# models on generated demo data: one trained whole from scratch (--weights none), one a
# head trained on cached features of the first one's frozen backbone.
# Needs $BIN/train and $BIN/infer (make builds both); fails when they are missing.
BIN=${BIN:-.}
TRAIN="$BIN/train$EXE"
INFER="$BIN/infer$EXE"
# RUNNER: an emulator for cross-built binaries (tests/run.sh)
run_train() { $RUNNER "$TRAIN" "$@"; }
run_infer() { $RUNNER "$INFER" "$@"; }
for p in "$TRAIN" "$INFER"; do
  if ! [ -x "$p" ]; then echo "t_infer.sh: $p not built"; exit 1; fi
done

dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=2
{ run_train --make-demo-data "$dir/demo" --demo-per-class 12 --seed 3 &&
  run_train --make-demo-data "$dir/demo_test" --demo-per-class 5 --seed 4; } > /dev/null ||
  { echo "t_infer.sh: demo data failed"; exit 1; }
test_dir="$dir/demo_test/train"

# The "test" object of a metrics.json: fields printed one a line as "name value".
test_fields() {
  tr -d '\n ' < "$1" | sed 's/.*"test":{"n":/{"n":/' > "$dir/flat"
  printf 'n %s\n' "$(grep -o '"n":[0-9]*' "$dir/flat" | head -n 1 | cut -d: -f2)"
  printf 'accuracy %s\n' "$(grep -o '"accuracy":[^,]*' "$dir/flat" | head -n 1 | cut -d: -f2)"
  printf 'macro_f1 %s\n' "$(grep -o '"macro_avg":{[^}]*}' "$dir/flat" | head -n 1 | grep -o '"f1":[^,]*' | cut -d: -f2)"
  printf 'confusion %s\n' "$(grep -o '"confusion_matrix":\[[][0-9,]*\]' "$dir/flat" | head -n 1 | cut -d: -f2)"
  printf 'loss %s\n' "$(grep -o '"loss":[^,]*' "$dir/flat" | head -n 1 | cut -d: -f2)"
}

fail=0
check_run() { # name, extra train options...
  name=$1; shift
  run="$dir/$name"
  if ! run_train --arch cifar_resnet20 --data "$dir/demo/train" --test "$test_dir" --batch 16 \
       --seed 1 --out "$run" --cache-dir "$dir" "$@" > "$dir/$name.train.log" 2>&1; then
    echo "t_infer.sh: $name: train failed:"; tail -n 5 "$dir/$name.train.log"; fail=1; return
  fi
  if ! run_infer --model "$run/model.safetensors" --eval "$test_dir" --out "$dir/$name.eval" \
       > "$dir/$name.eval.log" 2>&1; then
    echo "t_infer.sh: $name: infer --eval failed:"; tail -n 5 "$dir/$name.eval.log"; fail=1; return
  fi
  test_fields "$run/metrics.json" > "$dir/a"
  test_fields "$dir/$name.eval/metrics.json" > "$dir/b"
  for f in n accuracy macro_f1 confusion; do
    a=$(grep "^$f " "$dir/a" | cut -d' ' -f2); b=$(grep "^$f " "$dir/b" | cut -d' ' -f2)
    if [ -z "$a" ] || [ "$a" != "$b" ]; then
      echo "t_infer.sh: $name: test $f: train '$a', infer --eval '$b'"; fail=1
    fi
  done
  la=$(grep '^loss ' "$dir/a" | cut -d' ' -f2); lb=$(grep '^loss ' "$dir/b" | cut -d' ' -f2)
  if ! awk -v a="$la" -v b="$lb" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 1e-5) }'; then
    echo "t_infer.sh: $name: test loss: train '$la', infer --eval '$lb'"; fail=1
  fi
  # the misclassified list names every wrong image once
  wrong=$(grep -c ' -> ' "$dir/$name.eval.log")
  acc=$(grep '^accuracy ' "$dir/b" | cut -d' ' -f2); n=$(grep '^n ' "$dir/b" | cut -d' ' -f2)
  if ! awk -v w="$wrong" -v a="$acc" -v n="$n" 'BEGIN { exit !(w - 1 == int(n - a * n + 0.5) || (w == 0 && a == 1)) }'; then
    echo "t_infer.sh: $name: $wrong lines with '->' for accuracy $acc of $n"; fail=1
  fi
  # predictions.csv: a row an image, the same predictions as train's for its test split;
  # the report names the folder evaluated ("train" here) and has no training-curves card
  ev="$dir/$name.eval"
  cut -d, -f1-3 "$run/predictions.csv" > "$dir/p_train"
  cut -d, -f1-3 "$ev/predictions.csv" > "$dir/p_eval"
  rows=$(($(wc -l < "$ev/predictions.csv") - 1))
  if [ "$rows" != "$n" ] || ! cmp -s "$dir/p_train" "$dir/p_eval"; then
    echo "t_infer.sh: $name: predictions.csv: $rows rows for $n images, or not train's"; fail=1
  fi
  if ! grep -q 'Confusion matrix (train)' "$ev/report.html" || grep -q 'Training curves' "$ev/report.html"; then
    echo "t_infer.sh: $name: eval report not named after its folder, or an empty curves card"; fail=1
  fi
  # a folder this small is flagged, on stderr and in the report
  if [ "$n" -lt 100 ] && { ! grep -q "^infer: warning: .* ($n images) is too small to trust" "$dir/$name.eval.log" ||
                           ! grep -q 'split is too small to trust' "$ev/report.html"; }; then
    echo "t_infer.sh: $name: $n images evaluated without a too-small warning"; fail=1
  fi
  if [ "$wrong" -gt 1 ] && ! grep -q 'src="data:image/' "$ev/report.html"; then
    echo "t_infer.sh: $name: no thumbnails of the misclassified images"; fail=1
  fi
  echo "t_infer.sh: $name: $(tr '\n' ' ' < "$dir/b")"
}

check_run scratch --weights none --epochs 3 --lr 0.003
[ "$fail" -eq 0 ] && check_run frozen --weights "$dir/scratch/model.safetensors" --head mlp:16 --epochs 3
exit "$fail"
