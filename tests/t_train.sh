#!/bin/sh
# tests/t_train.sh - the train CLI end to end on tiny generated data (run from the repo
# root; the binary is $BIN/train, default ./train):
#   1. --make-demo-data, then a short from-scratch run: model, metrics and report exist,
#      test accuracy is above chance;
#   2. the frozen-backbone path (the first model as "pretrained" weights): feature cache
#      written, then reused by a second run;
#   3. kill-and-resume gives the same model file, byte for byte, as an uninterrupted run
#      (head on cached features, and end-to-end training with pseudo-labelling);
#   4. early stopping stops early and restores the best weights;
#   and an undecodable input file is reported, skipped, and turns the exit status to 1.
# Exit status 0 when every check passes.
BIN=${BIN:-.}
TRAIN="$BIN/train$EXE"
# RUNNER: an emulator for cross-built binaries (tests/run.sh)
run_train() { $RUNNER "$TRAIN" "$@"; }
T=$(mktemp -d "${TMPDIR:-/tmp}/t_train.XXXXXX")
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=1
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok   $*"; }
# json_num FILE SECTION KEY: first "KEY": number after "SECTION" in a metrics.json
json_num() {
  tr -d '\n ' < "$1" | sed -n "s/.*\"$2\":{[^}]*\"$3\":\([-0-9.eE+]*\).*/\1/p" | head -n 1
}

[ -x "$TRAIN" ] || { echo "FAIL: $TRAIN not built"; exit 1; }
run_train --help > "$T/help.txt" || fail "--help exits non-zero"
for o in --arch --weights --head --epochs --finetune-epochs --unfreeze --pseudo --resume \
         --schedule --class-weights --augment --cache-dir; do
  grep -q -- "$o" "$T/help.txt" || fail "--help does not list $o"
done
run_train --arch resnet50 --data "$T/nowhere" --out "$T/x" > /dev/null 2>&1 && fail "missing --weights accepted"
run_train --bogus 1 > /dev/null 2>&1 && fail "unknown option accepted"

run_train --make-demo-data "$T/data" --demo-per-class 48 > /dev/null || { echo "FAIL: demo data"; exit 1; }
[ -d "$T/data/train/circle" ] && [ -d "$T/data/shift1_palette_noise/unlabelled" ] || fail "demo data layout"

# 1. from scratch (cifar_resnet20 at 16x16 for speed)
SCRATCH="--arch cifar_resnet20 --weights none --img-size 16 --preprocess unit --batch 16 --lr 0.005"
run_train $SCRATCH --data "$T/data/train" --out "$T/r1" --epochs 12 --schedule cosine --patience 0 \
  > "$T/r1.log" 2>&1 || { cat "$T/r1.log"; fail "scratch run failed"; }
for f in model.safetensors metrics.json report.html checkpoint.safetensors; do
  [ -s "$T/r1/$f" ] || fail "r1/$f missing"
done
acc=$(json_num "$T/r1/metrics.json" test accuracy)
if [ -n "$acc" ] && awk "BEGIN { exit !($acc > 0.4) }"; then ok "scratch test accuracy $acc > chance (0.25)"
else fail "scratch test accuracy '$acc' not above chance"; fi

# 1a. the report files: history.csv a row an epoch, predictions.csv a row a test image
#     (RFC 4180 header), misclassified objects in metrics.json, "1 thread" in the banner
n_hist=$(($(wc -l < "$T/r1/history.csv") - 1))
[ "$n_hist" -eq 12 ] && head -n 1 "$T/r1/history.csv" | grep -q '^epoch,phase,phase_epoch,lr,' \
  && ok "history.csv: 12 epochs" || fail "history.csv: $n_hist rows for 12 epochs"
n_test=$(tr -d '\n ' < "$T/r1/metrics.json" | sed -n 's/.*"test":{"n":\([0-9]*\).*/\1/p')
n_pred=$(($(wc -l < "$T/r1/predictions.csv") - 1))
[ -n "$n_test" ] && [ "$n_pred" -eq "$n_test" ] \
  && head -n 1 "$T/r1/predictions.csv" | grep -q '^path,true,predicted,confidence,p_circle,' \
  && ok "predictions.csv: $n_pred rows" || fail "predictions.csv: $n_pred rows for $n_test test images"
if grep -q '"misclassified":\[\]' "$T/r1/metrics.json" \
   || grep -A1 '"misclassified":\[' "$T/r1/metrics.json" | grep -q '{"path":"[^"]*","true":"[a-z]*","predicted":"[a-z]*","confidence":'
then ok "misclassified as objects"; else fail "misclassified are not objects"; fi
# a val split of about 29 images gave numbers far from the test split's without a word: both
# small splits are flagged on stderr and in the report, the rule stated
grep -q "^warning: the validation split ([0-9]* images) is too small to trust" "$T/r1.log" &&
  grep -q "^warning: the test split ([0-9]* images) is too small to trust" "$T/r1.log" &&
  grep -q "The validation split is too small to trust" "$T/r1/report.html" &&
  grep -q "The rule: a split is flagged" "$T/r1/report.html" \
  && ok "small val and test splits: warned on stderr and in the report" \
  || fail "no too-small warning for r1's val and test splits"
grep -q "1 thread, " "$T/r1.log" && ! grep -q "1 threads" "$T/r1.log" && ok "banner: 1 thread" \
  || fail "banner thread count grammar"
# 4 classes: top-k (k = min(5, classes) = 4) says nothing and is not shown
grep -q "macro AUC" "$T/r1.log" && ! grep -q "top-4 accuracy" "$T/r1.log" && ! grep -q "top-4" "$T/r1/report.html" \
  && ok "top-k hidden when k = classes" || fail "top-4 of 4 classes shown"

# 1b. a file that cannot be decoded: one line naming it, the run goes on, exit status 1
cp -r "$T/data/train" "$T/broken"
printf 'this is not an image\n' > "$T/broken/circle/zz_broken.png"
run_train $SCRATCH --data "$T/broken" --out "$T/rb" --epochs 1 --patience 0 > "$T/rb.log" 2>&1
st=$?
if [ "$st" -eq 1 ] && [ -s "$T/rb/model.safetensors" ] && grep -q "zz_broken.png" "$T/rb.log" \
   && grep -q "could not be used" "$T/rb.log"; then ok "undecodable file reported, run finished, exit 1"
else cat "$T/rb.log"; fail "undecodable file: status $st"; fi

# 2. frozen backbone: r1's model as pretrained weights, features cached in --cache-dir
HEAD="--arch cifar_resnet20 --weights $T/r1/model.safetensors --img-size 16 --preprocess unit
      --batch 16 --head mlp:32:dropout=0.2 --lr 0.01 --cache-dir $T/cache"
run_train $HEAD --data "$T/data/train" --out "$T/h1" --epochs 6 --patience 0 \
  > "$T/h1.log" 2>&1 || { cat "$T/h1.log"; fail "frozen-backbone run failed"; }
grep -q 'took [0-9]*s' "$T/h1.log" && ! grep -q 'took [0-9]*s  *img' "$T/h1.log" \
  && ok "progress lines end with the time" || fail "progress line with a stray unit"
n_cache=$(ls "$T/cache" 2>/dev/null | grep -c '^features-')
[ "$n_cache" -ge 3 ] && ok "feature cache: $n_cache files" || fail "feature cache: $n_cache files"
run_train $HEAD --data "$T/data/train" --out "$T/h2" --epochs 6 --patience 0 \
  > "$T/h2.log" 2>&1 || fail "second frozen-backbone run failed"
grep -q "cached in" "$T/h2.log" && ! grep -q "^features [a-z]*: " "$T/h2.log" && ok "feature cache reused" \
  || fail "feature cache not reused"
cmp -s "$T/h1/model.safetensors" "$T/h2/model.safetensors" && ok "repeat run identical" \
  || fail "two identical runs differ"

# 3a. kill and resume, head on cached features (kill after epoch 3 of 6)
run_train $HEAD --data "$T/data/train" --out "$T/h3" --epochs 6 --patience 0 \
  --kill-after-epochs 3 > "$T/h3.log" 2>&1 && fail "--kill-after-epochs did not kill"
[ -f "$T/h3/model.safetensors" ] && fail "killed run wrote a model"
# written every epoch: a killed run already has its history and an in-progress report
[ "$(wc -l < "$T/h3/history.csv")" -eq 4 ] && grep -q "Training in progress: phase 1, epoch 3" "$T/h3/report.html" \
  && ok "history.csv and report.html written every epoch" || fail "no per-epoch history.csv / report.html"
run_train --resume "$T/h3" > "$T/h3r.log" 2>&1 || { cat "$T/h3r.log"; fail "resume failed"; }
grep -q "resumed phase 1 after epoch 3" "$T/h3r.log" || fail "resume did not continue at epoch 3"
cmp -s "$T/h1/model.safetensors" "$T/h3/model.safetensors" && ok "head: resumed == uninterrupted" \
  || fail "head: resumed model differs from the uninterrupted one"

# 3b. kill and resume, end to end with augmentation, fine-tuning and pseudo-labelling;
#     killed in phase 3
D1="$T/data/shift1_palette_noise"
P="--augment --aug-scale 0.7,1 --aug-brightness 0.2 --pseudo $D1/unlabelled
   --pseudo-eval $D1/heldout --pseudo-epochs 2 --pseudo-threshold 0.3"
run_train $HEAD $P --data "$T/data/train" --out "$T/f1" --epochs 2 --finetune-epochs 2 \
  --unfreeze 1 --finetune-lr 0.001 --patience 0 > "$T/f1.log" 2>&1 || { cat "$T/f1.log"; fail "fine-tune run failed"; }
run_train $HEAD $P --data "$T/data/train" --out "$T/f2" --epochs 2 --finetune-epochs 2 \
  --unfreeze 1 --finetune-lr 0.001 --patience 0 --kill-after-epochs 5 > "$T/f2.log" 2>&1 \
  && fail "--kill-after-epochs did not kill (fine-tune)"
run_train --resume "$T/f2" > "$T/f2r.log" 2>&1 || { cat "$T/f2r.log"; fail "resume (fine-tune) failed"; }
grep -q "resumed phase 3 after epoch 1" "$T/f2r.log" || fail "fine-tune resume did not continue in phase 3"
cmp -s "$T/f1/model.safetensors" "$T/f2/model.safetensors" && ok "fine-tune+pseudo: resumed == uninterrupted" \
  || fail "fine-tune+pseudo: resumed model differs"
grep -q '"domain' "$T/f1/metrics.json" && ok "domain accuracy matrix in metrics.json" \
  || fail "no domain accuracy matrix in metrics.json"
grep -q "^phase 3 epoch" "$T/f1.log" && ok "pseudo-labelling is phase 3 after fine-tuning" \
  || fail "no phase 3 after fine-tuning"
# without fine-tuning, pseudo-labelling is phase 2: phases are numbered as run
run_train $HEAD --pseudo "$D1/unlabelled" --pseudo-epochs 1 --pseudo-threshold 0.3 \
  --data "$T/data/train" --out "$T/p1" --epochs 1 --patience 0 > "$T/p1.log" 2>&1 \
  || { cat "$T/p1.log"; fail "pseudo run without fine-tuning failed"; }
grep -q "^phase 2 epoch" "$T/p1.log" && ! grep -q "^phase 3" "$T/p1.log" \
  && ok "phases numbered as run (1, 2)" || fail "phase numbers jump without fine-tuning"

# 4. early stopping: a far too large learning rate makes val loss worse; restore the best
run_train $HEAD --data "$T/data/train" --out "$T/e1" --epochs 30 --patience 2 --lr 0.3 \
  --opt sgd --momentum 0.99 > "$T/e1.log" 2>&1 || { cat "$T/e1.log"; fail "early-stopping run failed"; }
n_ep=$(grep -c "^phase 1 epoch" "$T/e1.log")
[ "$n_ep" -lt 30 ] && ok "early stopping after $n_ep of 30 epochs" || fail "no early stop ($n_ep epochs)"
best=$(sed -n 's/.*restored the best weights (epoch [0-9]*, val loss \([0-9.]*\)).*/\1/p' "$T/e1.log")
final=$(awk '/^== validation/ { v = 1 } v && $1 == "loss" { print $2; exit }' "$T/e1.log")
[ -n "$best" ] && [ "$best" = "$final" ] && ok "restored best weights (val loss $best)" \
  || fail "restored val loss '$best' != final val loss '$final'"
best_ep=$(sed -n 's/.*restored the best weights (epoch \([0-9]*\),.*/\1/p' "$T/e1.log")
grep -q "\"best_epochs\":\[$best_ep\]" "$T/e1/metrics.json" && grep -q 'class="best"' "$T/e1/report.html" \
  && ok "report marks the restored epoch $best_ep" || fail "restored epoch $best_ep not marked"

# 4b. --compare: a row a run in compare.csv (the run's own numbers), the curves of every run
#     overlaid in compare.html; a missing run is refused before anything is written
run_train --compare "$T/r1" "$T/h1" "$T/f1" --out "$T/cmp" > "$T/cmp.log" 2>&1 || { cat "$T/cmp.log"; fail "--compare failed"; }
rows=$(($(wc -l < "$T/cmp/compare.csv") - 1))
head -n 1 "$T/cmp/compare.csv" | grep -q '^run,path,backbone,head,input_size,parameters,trainable_parameters,train_accuracy,val_accuracy,test_accuracy,macro_precision,macro_recall,macro_f1,macro_auc,top_k,top_k_accuracy,epochs,seconds,peak_memory_mb$' \
  || fail "compare.csv header: $(head -n 1 "$T/cmp/compare.csv")"
csv_acc=$(awk -F, '$1 == "r1" { print $10 }' "$T/cmp/compare.csv")
csv_ep=$(awk -F, '$1 == "f1" { print $17 }' "$T/cmp/compare.csv")
f1_ep=$(($(wc -l < "$T/f1/history.csv") - 1))
if [ "$rows" -eq 3 ] && awk -v a="$csv_acc" -v b="$acc" 'BEGIN { d = a - b; exit !(a != "" && d < 1e-6 && d > -1e-6) }' \
   && [ "$csv_ep" = "$f1_ep" ] && grep -q '^h1,.*,cifar_resnet20,mlp:32:dropout=0.2,16,' "$T/cmp/compare.csv"; then
  ok "compare.csv: 3 rows, r1's test accuracy $csv_acc, f1's $csv_ep epochs"
else cat "$T/cmp/compare.csv"; fail "compare.csv rows"; fi
# four overlaid charts (train/val loss and accuracy), each with a line per run
n_lines=0
for c in 0 1 2 3; do
  for r in 0 1 2; do
    sed -n "/data-curve=\"$c\"/,/<\/svg>/p" "$T/cmp/compare.html" | grep -q "data-run=\"$r\"" && n_lines=$((n_lines + 1))
  done
done
[ "$n_lines" -eq 12 ] && ok "compare.html: 4 charts x 3 runs overlaid" || fail "compare.html: $n_lines of 12 curves"
run_train --compare "$T/r1" "$T/nowhere" --out "$T/cmp2" > /dev/null 2>&1; st=$?
[ "$st" -eq 1 ] && [ ! -e "$T/cmp2/compare.csv" ] && ok "--compare refuses a missing run (exit 1)" \
  || fail "--compare with a missing run: status $st"
run_train --compare "$T/r1" > /dev/null 2>&1; st=$?
[ "$st" -eq 2 ] || fail "--compare without --out: status $st, expected 2"

# 5. --low-memory (the default: ResNet-50's conv3 and downsample outputs recomputed in
#    backward) and --low-memory=0 (kept): the same model. Left out under an emulator
#    (RN_TEST_EMULATED=1, tools/cross.sh): minutes there, and the x86-64 runs check it.
if [ "${RN_TEST_EMULATED:-0}" = 1 ]; then
  echo "skip --low-memory ResNet-50 case (RN_TEST_EMULATED=1)"
else
LOW="--arch resnet50 --weights none --img-size 32 --preprocess unit --batch 8 --epochs 1
     --limit-per-class 6 --patience 0 --data $T/data/train"
run_train $LOW --out "$T/m1" > "$T/m1.log" 2>&1 || { cat "$T/m1.log"; fail "resnet50 run failed"; }
run_train $LOW --out "$T/m2" --low-memory=0 > "$T/m2.log" 2>&1 \
  || { cat "$T/m2.log"; fail "resnet50 --low-memory=0 run failed"; }
cmp -s "$T/m1/model.safetensors" "$T/m2/model.safetensors" \
  && ok "--low-memory (default) and --low-memory=0: the same model" \
  || fail "--low-memory=0 changed the model"
fi

[ "$fails" -eq 0 ] || { echo "t_train: $fails failure(s); logs were in $T"; exit 1; }
echo "t_train: all checks passed"
