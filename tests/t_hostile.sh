#!/bin/sh
# tests/t_hostile.sh - train and infer given bad input, as a careless user or an attacker
# would (issue 17): each case ends with one line naming what and where and a non-zero exit
# (or, where the input is fine, the right result); nothing crashes, nothing is written that
# a later step cannot read, no run is lost.
#   options out of range; two runs on one folder; a checkpoint of another run or with
#   damaged metadata; a model file copied in as a checkpoint; a run killed before its
#   args.txt; paths with newlines, relative paths resumed from elsewhere; stale *.tmp.PID
#   files; a class folder that is not UTF-8; a CSV with a NUL byte; a file that fails to
#   decode counted once; infer on a classifier of 0 rows and on windows far larger than
#   the image.
# RUNNER and EXE (tests/run.sh): an emulator and ".exe" for cross-built binaries.
BIN=${BIN:-.}
TRAIN="$BIN/train$EXE"
INFER="$BIN/infer$EXE"
for p in "$TRAIN" "$INFER"; do [ -x "$p" ] || { echo "FAIL: $p not built"; exit 1; }; done
case "$TRAIN" in /*) ;; *) TRAIN="$(pwd)/$TRAIN" ;; esac
case "$INFER" in /*) ;; *) INFER="$(pwd)/$INFER" ;; esac
T=$(mktemp -d "${TMPDIR:-/tmp}/t_hostile.XXXXXX")
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=1
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok   $*"; }
# expect STATUS PATTERN LOG NAME: the last command's status and a line of its log
expect() {
  if [ "$st" -eq "$1" ] && grep -q -- "$2" "$3"; then ok "$4"
  else echo "  (status $st, log:)"; tail -n 3 "$3"; fail "$4"; fi
}

# options out of range: usage errors naming the option and its range
for a in "--threads 100000" "--lr 1e39" "--lr -1" "--label-smoothing 5" "--img-size 1" \
         "--epochs 99999999999" "--batch 0" "--momentum 2"; do
  # shellcheck disable=SC2086
  $RUNNER "$TRAIN" $a --arch cifar_resnet20 --weights none --data "$T/none" --out "$T/x" > "$T/o.log" 2>&1
  st=$?
  expect 2 "^error: --$(echo "${a#--}" | cut -d' ' -f1): expected .* in \[" "$T/o.log" "train $a refused"
done
$RUNNER "$INFER" --patches 65536 --stride 1 --model "$T/none" x.png > "$T/o.log" 2>&1; st=$?
expect 2 "patches" "$T/o.log" "infer --patches 65536 refused"

$RUNNER "$TRAIN" --make-demo-data "$T/data" --demo-per-class 12 > /dev/null || { echo "FAIL: demo data"; exit 1; }
RUN="--arch cifar_resnet20 --weights none --img-size 16 --preprocess unit --batch 16 --patience 0"

# two runs on one --out: the second is refused while the first holds the folder
$RUNNER "$TRAIN" $RUN --data "$T/data/train" --out "$T/two" --epochs 40 > "$T/two1.log" 2>&1 &
first=$!
i=0; while [ ! -s "$T/two/args.txt" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
$RUNNER "$TRAIN" $RUN --data "$T/data/train" --out "$T/two" --epochs 1 > "$T/two2.log" 2>&1; st=$?
kill "$first" 2> /dev/null; wait "$first" 2> /dev/null
expect 1 "another train process is using this run folder" "$T/two2.log" "second run on one --out refused"

# a checkpoint of another run (same shapes) is refused; so is damaged metadata
($RUNNER "$TRAIN" $RUN --data "$T/data/train" --out "$T/a" --epochs 4 --kill-after-epochs 1; true) > /dev/null 2>&1
($RUNNER "$TRAIN" $RUN --data "$T/data/train" --out "$T/b" --epochs 4 --seed 5 --kill-after-epochs 1; true) > /dev/null 2>&1
cp "$T/b/checkpoint.safetensors" "$T/b.ck"
cp "$T/a/checkpoint.safetensors" "$T/b/checkpoint.safetensors"
$RUNNER "$TRAIN" --resume "$T/b" > "$T/b.log" 2>&1; st=$?
expect 1 "a checkpoint of run [0-9a-f]*, not of this run" "$T/b.log" "checkpoint of another run refused"
LC_ALL=C sed 's/"phase":"1"/"phase":"7"/' "$T/b.ck" > "$T/b/checkpoint.safetensors"
$RUNNER "$TRAIN" --resume "$T/b" > "$T/b.log" 2>&1; st=$?
expect 1 'metadata "phase": expected an integer in \[1, 2\], found "7"' "$T/b.log" "checkpoint phase=7 refused"
LC_ALL=C sed 's/"epoch":"1"/"epoch":"9"/' "$T/b.ck" > "$T/b/checkpoint.safetensors"
$RUNNER "$TRAIN" --resume "$T/b" > "$T/b.log" 2>&1; st=$?
expect 1 'metadata "epoch": expected an integer in \[0, 4\], found "9"' "$T/b.log" "checkpoint epoch=9 of 4 refused"
cp "$T/b.ck" "$T/b/checkpoint.safetensors"
$RUNNER "$TRAIN" --resume "$T/b" > "$T/b.log" 2>&1; st=$?
expect 0 "resumed phase 1 after epoch 1" "$T/b.log" "its own checkpoint resumes"
($RUNNER "$TRAIN" $RUN --data "$T/data/train" --out "$T/c" --epochs 4 --kill-after-epochs 1; true) > /dev/null 2>&1
cp "$T/b/model.safetensors" "$T/c/checkpoint.safetensors"
$RUNNER "$TRAIN" --resume "$T/c" > "$T/c.log" 2>&1; st=$?
expect 1 "checkpoint.safetensors: a checkpoint of run (none)" "$T/c.log" "a model file as checkpoint refused"

# killed before args.txt was in place: resumable with the options; stale temp files go
mkdir -p "$T/k"
printf -- '--epochs\n2\n' > "$T/k/args.txt.tmp.999999"
$RUNNER "$TRAIN" --resume "$T/k" > "$T/k.log" 2>&1; st=$?
expect 1 "give them again" "$T/k.log" "no args.txt: --resume asks for the options"
$RUNNER "$TRAIN" --resume "$T/k" $RUN --data "$T/data/train" --epochs 2 > "$T/k.log" 2>&1; st=$?
expect 0 "starting it with the options given" "$T/k.log" "no args.txt: --resume with options runs"
ls "$T/k" | grep -q 'tmp\.' && fail "stale temp file left in the run folder" || ok "stale temp files removed"

# a --data path with a newline (Windows names cannot hold one: a space there), relative,
# resumed from another directory
nl='
'
[ -n "$EXE" ] && nl=' '
mkdir -p "$T/rel"
cp -r "$T/data/train" "$T/rel/a${nl}b"
(cd "$T/rel" && $RUNNER "$TRAIN" $RUN --data "a${nl}b" --out run --epochs 3 --kill-after-epochs 1; true) > /dev/null 2>&1
(cd "$T" && $RUNNER "$TRAIN" --resume rel/run > "$T/rel.log" 2>&1); st=$?
expect 0 "resumed phase 1 after epoch 1" "$T/rel.log" "relative path with a newline resumed from elsewhere"

# evaluation after a resume with nothing left to train: the same metrics as without the
# kill (the fine-tuned net's evaluation went through the training plan in one process and
# the inference plan in the other)
FT="$RUN --data $T/data/train --epochs 1 --finetune-epochs 2 --unfreeze 1 --finetune-lr 0.001"
$RUNNER "$TRAIN" $FT --out "$T/ft1" > "$T/ft1.log" 2>&1; st=$?
[ "$st" -eq 0 ] || { echo "  (status $st, log:)"; tail -n 5 "$T/ft1.log"; fail "fine-tune run failed"; }
($RUNNER "$TRAIN" $FT --out "$T/ft2" --kill-after-epochs 3; true) > /dev/null 2>&1
$RUNNER "$TRAIN" --resume "$T/ft2" > "$T/ft2.log" 2>&1; st=$?
masked() { sed -e 's/"seconds":[^,}]*/"seconds":_/g' -e 's/"peak_memory_mb":[^,}]*/"peak_memory_mb":_/g' -e 's/"notes":.*/"notes":_}/' "$1"; }
masked "$T/ft1/metrics.json" > "$T/ft1.json"
masked "$T/ft2/metrics.json" > "$T/ft2.json" 2> /dev/null
if [ "$st" -eq 0 ] && cmp -s "$T/ft1.json" "$T/ft2.json"; then ok "evaluation after a resume with nothing left: same metrics"
else diff "$T/ft1.json" "$T/ft2.json" | head -n 4; fail "evaluation after a resume differs"; fi

# a class folder that is not UTF-8: refused before training, nothing written (POSIX names
# are bytes; Windows hands the program UTF-16 names, always valid once converted)
if [ -z "$EXE" ]; then
  cp -r "$T/data/train" "$T/latin"
  mv "$T/latin/circle" "$(printf '%s/latin/caf\351' "$T")"
  $RUNNER "$TRAIN" $RUN --data "$T/latin" --out "$T/latin_run" --epochs 1 > "$T/latin.log" 2>&1; st=$?
  expect 1 "is not valid UTF-8" "$T/latin.log" "non-UTF-8 class folder refused"
  [ -e "$T/latin_run/model.safetensors" ] && fail "non-UTF-8 run wrote a model"
fi

# a CSV with a NUL byte ("nul.csv" would be Windows' NUL device)
printf 'circle/a.png,circle\nx.png,y\000\nz.png,w\n' > "$T/nulbyte.csv"
$RUNNER "$TRAIN" $RUN --data-csv "$T/nulbyte.csv" --out "$T/nul_run" --epochs 1 > "$T/nul.log" 2>&1; st=$?
expect 1 "nulbyte.csv:2: NUL byte" "$T/nul.log" "CSV with a NUL byte refused"

# a file whose header is fine but whose data is not: reported, counted once over all passes
cp -r "$T/data/train" "$T/cut"
f=$(ls "$T/cut/circle" | head -n 1)
head -c 300 "$T/cut/circle/$f" > "$T/cut/circle/zz_cut.png"
$RUNNER "$TRAIN" $RUN --data "$T/cut" --out "$T/cut_run" --epochs 3 --test-frac 0 --val-frac 0 > "$T/cut.log" 2>&1; st=$?
expect 1 "finished, but 1 input file could not be used" "$T/cut.log" "a bad file counted once over 3 epochs"

# infer: a classifier with 0 rows; windows far larger than the image
json='{"linear.weight":{"dtype":"F32","shape":[0,64],"data_offsets":[0,0]}}'
{ printf '\105\000\000\000\000\000\000\000'; printf '%s' "$json"; } > "$T/zero.safetensors"
[ "$(printf '%s' "$json" | wc -c)" -eq 69 ] || fail "zero.safetensors header length"
$RUNNER "$INFER" --arch cifar_resnet20 --weights "$T/zero.safetensors" "$T/data/train/circle/$f" > "$T/z.log" 2>&1; st=$?
expect 1 "classifier tensor 'linear.weight' has 0 rows" "$T/z.log" "infer: 0-row classifier named"
{ printf 'P6 64 128 255\n'; head -c 24576 /dev/zero; } > "$T/tall.ppm"
$RUNNER "$INFER" --model "$T/b/model.safetensors" --patches 16384 --stride 1 --out "$T/p" "$T/tall.ppm" > "$T/p.log" 2>&1; st=$?
expect 1 "would be upscaled to 16384x32768" "$T/p.log" "infer: huge windows refused before upscaling"

[ "$fails" -eq 0 ] || { echo "t_hostile: $fails failure(s)"; exit 1; }
echo "t_hostile: all checks passed"
