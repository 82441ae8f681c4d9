#!/bin/sh
# tools/bench.sh BENCH - `make bench`: the C bench (tools/bench.c) and, when /usr/bin/python3
# imports torch and torchvision, the same configurations in PyTorch (tools/bench_torch.py)
# and, when node and onnxruntime-node are there (make ort-setup), the inference ones in ONNX
# Runtime (tools/bench_ort.js, on graphs tools/ort_export.py exports once into ONNX_DIR),
# run one after the other per configuration and thread count, then one table with ratios.
# On shared machines speeds drift from minute to minute, so the peers alternate and, with
# several rounds, the table shows each side's median, and as ratios the median of the
# rounds' ratios (each C run against the peer's run right after it: slow drift cancels).
#   BENCH_ROUNDS=3          rounds of every configuration (default 1)
#   BENCH_THREADS="1 2"     thread counts (default: 1 and 2, capped at the CPU count)
#   BENCH_CONFIGS="..."     configurations (default: all; see `BENCH list`)
#   BENCH_TORCH=0           skip PyTorch
#   BENCH_ORT=0             skip ONNX Runtime (ORT_NODE_MODULES: where onnxruntime-node is)
bench=${1:-build/tests/bench}
py=${PYTHON:-/usr/bin/python3}
here=$(dirname "$0")
onnx_dir=${ONNX_DIR:-build/onnx}
[ -x "$bench" ] || { echo "bench.sh: $bench not built (make bench builds it)"; exit 1; }

ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
threads=${BENCH_THREADS:-$( [ "$ncpu" -ge 2 ] && echo "1 2" || echo "1" )}
configs=${BENCH_CONFIGS:-$("$bench" list)}
torch=0
if [ "${BENCH_TORCH:-1}" != 0 ] && "$py" -c "import torch, torchvision" >/dev/null 2>&1; then
  torch=1
  echo "PyTorch: $("$py" -c 'import torch; print(torch.__version__)')"
else
  echo "PyTorch: not available (C only)"
fi

ort=0
if [ "${BENCH_ORT:-1}" != 0 ] && [ "$torch" = 1 ] && command -v node >/dev/null 2>&1 &&
   ortv=$(node "$here/bench_ort.js" version 2>/dev/null); then
  ort=1
  echo "ONNX Runtime: $ortv"
else
  echo "ONNX Runtime: not available (make ort-setup installs it; it needs node and torch)"
fi
# The ONNX graph of a configuration's network, exported on first use.
onnx_of() {
  arch=resnet50
  case $1 in *_effb0) arch=efficientnet_b0 ;; esac
  if [ ! -f "$onnx_dir/$arch.onnx" ]; then
    mkdir -p "$onnx_dir" && "$py" "$here/ort_export.py" "$arch" "$onnx_dir/$arch.onnx" >/dev/null 2>&1 ||
      { echo "  (ONNX export of $arch failed)" >&2; return 1; }
  fi
  echo "$onnx_dir/$arch.onnx"
}

echo "C: $("$bench" info)"
log=$(mktemp); trap 'rm -f "$log"' EXIT
rounds=${BENCH_ROUNDS:-1}
round=1
while [ "$round" -le "$rounds" ]; do
  [ "$rounds" -gt 1 ] && echo "-- round $round of $rounds"
  for t in $threads; do
    for cfg in $configs; do
      "$bench" "$cfg" "$t" | sed 's/^RESULT /RESULT c /' | tee -a "$log" | grep -v '^RESULT\|^PROFILE\|^#'
      if [ "$torch" = 1 ] && [ "$cfg" != peak ]; then
        "$py" "$here/bench_torch.py" "$cfg" "$t" 2>/dev/null | sed 's/^RESULT /RESULT torch /' \
          | tee -a "$log" | grep -v '^RESULT' || echo "  (torch $cfg failed)"
      fi
      case $cfg in infer*) ;; *) continue ;; esac
      if [ "$ort" = 1 ] && model=$(onnx_of "$cfg"); then
        node "$here/bench_ort.js" "$model" "$cfg" "$t" 2>/dev/null | sed 's/^RESULT /RESULT ort /' \
          | tee -a "$log" | grep -v '^RESULT' || echo "  (onnxruntime $cfg failed)"
      fi
    done
  done
  round=$((round + 1))
done

echo
awk '
/^RESULT/ {
  who = $2; cfg = $3; split($4, a, "="); thr = a[2]
  delete v
  for (i = 5; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  key = cfg " " thr
  if (!(key in seen)) { seen[key] = 1; order[n++] = key }
  if (who == "c") { crate[key] = add(crate[key], v["rate"]); unit[key] = v["unit"]; clast[key] = v["rate"];
                    cgf[key] = add(cgf[key], v["gflops"]); cpk[key] = add(cpk[key], v["peak"]);
                    crss[key] = v["rss_mb"] }
  else if (who == "ort") { orate[key] = add(orate[key], v["rate"]); orss[key] = v["rss_mb"]
         if (clast[key] > 0 && v["rate"] > 0) oratio[key] = add(oratio[key], clast[key] / v["rate"]) }
  else if (v["mode"] == "eager" && cfg ~ /^infer/) { erate[key] = add(erate[key], v["rate"])
         if (clast[key] > 0 && v["rate"] > 0) eratio[key] = add(eratio[key], clast[key] / v["rate"]) }
  else { trate[key] = add(trate[key], v["rate"]); trss[key] = v["rss_mb"]; tmode[key] = v["mode"]
         if (clast[key] > 0 && v["rate"] > 0) tratio[key] = add(tratio[key], clast[key] / v["rate"]) }
}
function add(list, x) { return list == "" ? x : list " " x }
# the median of a space-separated list ("" for none)
function median(list,   k, m, i, j, t, x) {
  if (list == "") return ""
  m = split(list, x, " ")
  for (i = 2; i <= m; i++) { t = x[i] + 0; for (j = i - 1; j >= 1 && x[j] + 0 > t; j--) x[j + 1] = x[j]; x[j + 1] = t }
  return m % 2 ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
}
function num(x, w) { return x == "" ? sprintf("%" w "s", "-") : sprintf("%" w ".2f", x) }
function ratio(r) { return r == "" ? sprintf("%7s", "-") : sprintf("%6.2fx", r) }
END {
  printf "%-24s %3s %9s %-8s %8s %6s %7s | %9s %-5s %7s %9s | %7s %7s %7s | %9s %7s %7s\n", "config", "thr",
         "C", "unit", "GFLOP/s", "%peak", "RSS MB", "torch", "mode", "RSS MB", "eager", "C/torch", "C/eager",
         "RSS C/t", "ORT", "RSS MB", "C/ORT"
  for (i = 0; i < n; i++) {
    key = order[i]; split(key, p, " ")
    crate[key] = median(crate[key]); trate[key] = median(trate[key]); erate[key] = median(erate[key])
    orate[key] = median(orate[key])
    if (cgf[key] != "") cgf[key] = sprintf("%.1f", median(cgf[key]))
    if (cpk[key] != "") cpk[key] = sprintf("%.1f", median(cpk[key]))
    cr = crate[key] != "" ? num(crate[key], 9) : sprintf("%9s", "failed")
    rss_ratio = (key in trss) && trss[key] > 0 ? sprintf("%7.2f", crss[key] / trss[key]) : sprintf("%7s", "-")
    printf "%-24s %3s %s %-8s %8s %6s %7s | %s %-5s %7s %s | %s %s %s | %s %7s %s\n", p[1], p[2], cr,
           unit[key], cgf[key], cpk[key], crss[key], num(trate[key], 9), (key in tmode) ? tmode[key] : "",
           (key in trss) ? trss[key] : "-", num(erate[key], 9), ratio(median(tratio[key])),
           ratio(median(eratio[key] != "" ? eratio[key] : (tmode[key] == "eager" ? tratio[key] : ""))),
           rss_ratio, num(orate[key], 9), (key in orss) ? orss[key] : "-", ratio(median(oratio[key]))
  }
}' "$log"
if grep -q '^PROFILE' "$log"; then
  echo
  echo "Convolutions inside the network (FLOPs / time in conv layers, % of the measured peak):"
  # one line per configuration, thread count and kind of layer: the last round's
  awk '/^PROFILE/ { sub(/^PROFILE /, ""); key = $0; sub(/ gflops=.*/, "", key)
                    if (!(key in line)) order[n++] = key; line[key] = $0 }
       END { for (i = 0; i < n; i++) printf "  %s\n", line[order[i]] }' "$log"
fi
