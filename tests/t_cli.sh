#!/bin/sh
# tests/t_cli.sh - a new user's first hour (issue 16): the command line of train and infer
# and the run folder, each check failing on the behaviour the issue reported:
#   -h/--help/--version/--list-archs in both programs, [default: ...] in --help, a short
#   usage without arguments, usage errors in one line with exit 2 before anything is
#   written; honest defaults (CIFAR archs 32 px crop 1, --threads 1 computes on one
#   thread); infer --eval --json prints JSON; the feature cache inside the run folder, an
#   existing run refused unless --overwrite, a failed run leaves no args.txt; a folder of
#   splits refused with a hint; an --eval class mismatch names both sides; --data-csv
#   reads infer --csv's quoting; infer --info shows the training run; Ctrl-C names the
#   --resume command.
BIN=${BIN:-.}
TRAIN="$BIN/train$EXE"
INFER="$BIN/infer$EXE"
for p in "$TRAIN" "$INFER"; do [ -x "$p" ] || { echo "FAIL: $p not built"; exit 1; }; done
case "$TRAIN" in /*) ;; *) TRAIN="$(pwd)/$TRAIN" ;; esac
case "$INFER" in /*) ;; *) INFER="$(pwd)/$INFER" ;; esac
run_train() { $RUNNER "$TRAIN" "$@"; }
run_infer() { $RUNNER "$INFER" "$@"; }
T=$(mktemp -d "${TMPDIR:-/tmp}/t_cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=1
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok   $*"; }
# expect STATUS PATTERN LOG NAME: the last command's status and a line of its log
expect() {
  if [ "$st" -eq "$1" ] && grep -q -- "$2" "$3"; then ok "$4"
  else echo "  (status $st, expected $1 and '$2'; log:)"; tail -n 4 "$3"; fail "$4"; fi
}

# ---- the common options, in both programs
for prog in train infer; do
  P=$TRAIN; [ $prog = infer ] && P=$INFER
  for h in -h --help; do
    $RUNNER "$P" $h > "$T/h.txt" 2>&1; st=$?
    expect 0 "^usage: $prog" "$T/h.txt" "$prog $h"
  done
  grep -A1 -- "--threads N" "$T/h.txt" | grep -q "\[default: 0\]" || fail "$prog --help: no [default: 0] for --threads"
  $RUNNER "$P" --version > "$T/v.txt" 2>&1; st=$?
  expect 0 "^$prog (resnet-c) [0-9]" "$T/v.txt" "$prog --version"
  $RUNNER "$P" --list-archs > "$T/a.txt" 2>&1; st=$?
  expect 0 "^cifar_resnet56 .* 32  1.000" "$T/a.txt" "$prog --list-archs"
  $RUNNER "$P" > "$T/u.txt" 2>&1; st=$?
  lines=$(wc -l < "$T/u.txt")
  [ "$st" -eq 2 ] && [ "$lines" -le 6 ] && grep -q "see $prog --help" "$T/u.txt" \
    && ok "$prog alone: short usage ($lines lines), exit 2" || fail "$prog alone: status $st, $lines lines"
  $RUNNER "$P" --batch 0 > "$T/e.txt" 2>&1; st=$?
  lines=$(wc -l < "$T/e.txt")
  [ "$st" -eq 2 ] && [ "$lines" -eq 1 ] && tr -d '\r' < "$T/e.txt" | grep -q "^error: --batch: expected an integer in \[1, .*(see $prog --help)$" \
    && ok "$prog --batch 0: one line, exit 2" || { cat "$T/e.txt"; fail "$prog --batch 0: status $st, $lines lines"; }
  $RUNNER "$P" --no-such-option > "$T/e.txt" 2>&1; st=$?
  expect 2 "^error: unknown option '--no-such-option' (see $prog --help)" "$T/e.txt" "$prog: unknown option"
done
run_infer --model m.safetensors --eval . --csv > "$T/e.txt" 2>&1; st=$?
expect 2 "^error: --eval writes" "$T/e.txt" "infer --eval --csv refused as a usage error"

run_train --make-demo-data "$T/data" --demo-per-class 8 > /dev/null || { echo "FAIL: demo data"; exit 1; }
RUN="--arch cifar_resnet20 --weights none --img-size 16 --preprocess unit --batch 16 --patience 0"

# ---- nothing written when the options or inputs are wrong
run_train $RUN --data "$T/photos" --out "$T/r0" > "$T/e.txt" 2>&1; st=$?
expect 1 "photos: not a folder" "$T/e.txt" "missing --data refused"
[ -e "$T/r0" ] && fail "a refused run made its --out folder" || ok "refused run: no --out folder"
run_train $RUN --data "$T/data/train" --out "$T/r0" --head bogus > "$T/e.txt" 2>&1; st=$?
expect 2 "^error: .*bogus" "$T/e.txt" "bad --head: usage error"
[ -e "$T/r0" ] && fail "bad --head made its --out folder"
# an empty training folder passes the checks and fails in the data step: args.txt goes too
mkdir -p "$T/empty/a" "$T/empty/b"
run_train $RUN --data "$T/empty" --out "$T/r0" > "$T/e.txt" 2>&1; st=$?
[ "$st" -eq 1 ] && [ ! -e "$T/r0/args.txt" ] && ok "failed run leaves no args.txt" \
  || { tail -n 3 "$T/e.txt"; fail "failed run: status $st, args.txt: $(ls "$T/r0" 2>&1)"; }

# ---- a folder of splits, and a class mismatch in --eval
mkdir -p "$T/splits"
cp -r "$T/data/train" "$T/splits/train"
cp -r "$T/data/train" "$T/splits/val"
run_train $RUN --data "$T/splits" --out "$T/r0" > "$T/e.txt" 2>&1; st=$?
expect 1 "look like splits, not classes: give --data .*/splits/train" "$T/e.txt" "--data of split folders refused with a hint"

# ---- a run: defaults, cache in the run folder, metadata, refusal of a second run
(cd "$T" && run_train --arch cifar_resnet20 --weights none --data data/train --out run0 \
   --epochs 1 --batch 16 --patience 0 --threads 1 --head linear > "$T/r.log" 2>&1) || { tail -n 5 "$T/r.log"; fail "run0 failed"; }
grep -q "^--arch=cifar_resnet20" "$T/run0/args.txt" || fail "run0/args.txt"
run_infer --model "$T/run0/model.safetensors" --info > "$T/i.txt" 2>&1; st=$?
expect 0 "preprocessing: torchvision, 32 px, crop 1.000" "$T/i.txt" "train's default preprocessing for a CIFAR arch (32 px, crop 1)"
grep -q '"--weights=none"' "$T/i.txt" && grep -q '"trainable"' "$T/i.txt" && grep -q '"test"' "$T/i.txt" \
  && ok "infer --info shows the training run" || { cat "$T/i.txt"; fail "infer --info: no training metadata"; }
OMP_NUM_THREADS=2 run_infer --arch cifar_resnet20 --weights "$T/run0/model.safetensors" --threads 1 \
  "$T/data/train/circle" > /dev/null 2> "$T/i.txt"; st=$?
expect 0 "32 px (crop 1.000), 1 thread," "$T/i.txt" "infer --arch CIFAR: 32 px, crop 1; --threads 1: one thread"

# a frozen backbone: its feature cache inside the run folder, not the working directory
mkdir -p "$T/cwd"
(cd "$T/cwd" && run_train --arch cifar_resnet20 --weights "$T/run0/model.safetensors" --img-size 16 \
   --data ../data/train --out run1 --epochs 1 --batch 16 --patience 0 --head linear > "$T/r1.log" 2>&1) \
  || { tail -n 5 "$T/r1.log"; fail "run1 failed"; }
ls "$T/cwd"/features-* > /dev/null 2>&1 && fail "feature cache written into the working directory"
ls "$T/cwd/run1/cache"/features-*.bin > /dev/null 2>&1 && ok "feature cache in RUN/cache" \
  || fail "no feature cache in run1/cache: $(ls "$T/cwd/run1")"
(cd "$T/cwd" && run_train --arch cifar_resnet20 --weights "$T/run0/model.safetensors" --img-size 16 \
   --data ../data/train --out run1 --epochs 1 > "$T/r2.log" 2>&1); st=$?
expect 2 "already holds a run: continue it with --resume run1, or start it again with --overwrite" "$T/r2.log" "an existing run refused"
(cd "$T/cwd" && run_train --arch cifar_resnet20 --weights "$T/run0/model.safetensors" --img-size 16 \
   --data ../data/train --out run1 --epochs 1 --batch 16 --patience 0 --head linear --overwrite > "$T/r2.log" 2>&1); st=$?
expect 0 "features of train .*cached in run1/cache" "$T/r2.log" "--overwrite starts it again (cache kept)"

# ---- --eval: class mismatch, --json
mkdir -p "$T/other/cats" "$T/other/dogs"
cp "$T/data/train/circle/"*.png "$T/other/cats/"
run_infer --model "$T/run0/model.safetensors" --eval "$T/other" --out "$T/ev" > "$T/e.txt" 2>&1; st=$?
expect 1 "expected sub-folders: circle, square, stripes, triangle; found: cats, dogs" "$T/e.txt" "--eval class mismatch names both sides"
run_infer --model "$T/run0/model.safetensors" --eval "$T/data/train" --out "$T/ev" --json > "$T/ev.json" 2> "$T/e.txt"; st=$?
[ "$st" -eq 0 ] && head -c 1 "$T/ev.json" | grep -q "{" && grep -q '"accuracy"' "$T/ev.json" \
  && ok "infer --eval --json prints metrics.json" || { head -n 3 "$T/ev.json"; fail "infer --eval --json: status $st"; }

# ---- --data-csv reads what infer --csv writes (RFC 4180 quotes): file names with a comma
#      and quotes, in infer --csv's columns (path,rank,class,index,prob; rank 1 = the label)
#      (Windows file names cannot hold a quote: there, a comma only)
q='"'; qq='""'; [ -n "$EXE" ] && q= && qq=
mkdir -p "$T/q"
printf 'path,rank,class,index,prob\n' > "$T/q.csv"
i=0
for c in circle square; do
  for f in "$T/data/train/$c/"*.png; do
    i=$((i + 1)); cp "$f" "$T/q/img, $q$i$q.png"
  done
done
run_infer --model "$T/run0/model.safetensors" --csv --topk 1 "$T/q" > "$T/q1.csv" 2> "$T/e.txt"
grep -q '^path,rank,class,index,prob$' "$T/q1.csv" || fail "infer --csv header"
grep -q "^\"[^\"]*img, ${qq}1$qq.png\",1," "$T/q1.csv" && ok "infer --csv quotes a name with a comma${q:+ and quotes}" \
  || { head -n 3 "$T/q1.csv"; fail "infer --csv quoting"; }
# the same quoting, true labels in the class column (rank 2 rows are left out)
i=0
for c in circle square; do
  for f in "$T/data/train/$c/"*.png; do
    i=$((i + 1))
    printf '"%s/q/img, %s%d%s.png",1,%s,0,0.9\n"%s/q/img, %s%d%s.png",2,other,1,0.1\n' \
      "$T" "$qq" $i "$qq" $c "$T" "$qq" $i "$qq" >> "$T/q.csv"
  done
done
run_train $RUN --data-csv "$T/q.csv" --out "$T/rq" --epochs 1 --val-frac 0 --test-frac 0 > "$T/e.txt" 2>&1; st=$?
n=$(sed -n 's/^train: \([0-9]*\) images, 2 classes.*/\1/p' "$T/e.txt" | head -n 1)
[ "$st" -eq 0 ] && [ "$n" = "$i" ] && ok "--data-csv reads infer --csv's columns and quoting ($n images)" \
  || { tail -n 4 "$T/e.txt"; fail "--data-csv on infer --csv output: status $st, '$n' of $i images"; }

# ---- Ctrl-C: the exact --resume command, then the run continues from it
case "$(uname -s)" in MINGW* | CYGWIN* | MSYS*) ;; *)
  # (not through run_train: $! must be train itself)
  $RUNNER "$TRAIN" $RUN --data "$T/data/train" --out "$T/int" --epochs 400 > "$T/int.log" 2>&1 &
  pid=$!
  i=0; while [ ! -s "$T/int/checkpoint.safetensors" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
  kill -INT "$pid"; wait "$pid"; st=$?
  done_epochs=$(grep -c "^phase 1 epoch" "$T/int.log")
  if [ -z "$EXE" ]; then
    expect 130 "  .*train --resume '$T/int'" "$T/int.log" "Ctrl-C prints the --resume command"
    cmd=$(sed -n "s/^  \(.*train --resume .*\)/\1/p" "$T/int.log")
    eval "$RUNNER $cmd --epochs $((done_epochs + 1))" > "$T/int2.log" 2>&1; st=$?
  else # Windows (under wine): a Windows path to train.exe and cmd.exe's double quotes
    expect 130 "  .*train$EXE --resume \"$T/int\"" "$T/int.log" "Ctrl-C prints the --resume command"
    $RUNNER "$TRAIN" --resume "$T/int" --epochs $((done_epochs + 1)) > "$T/int2.log" 2>&1; st=$?
  fi
  expect 0 "resum" "$T/int2.log" "the printed command resumes the run"
  ;;
esac

[ "$fails" -eq 0 ] || { echo "t_cli: $fails failure(s)"; exit 1; }
echo "t_cli: all checks passed"
