#!/bin/sh
# tools/bench.sh BENCH - `make bench`: the C bench (tools/bench.c) and, when /usr/bin/python3
# imports torch and torchvision, the same configurations in PyTorch (tools/bench_torch.py),
# run one after the other per configuration and thread count, then one table with ratios.
#   BENCH_THREADS="1 2"     thread counts (default: 1 and 2, capped at the CPU count)
#   BENCH_CONFIGS="..."     configurations (default: all; see `BENCH list`)
#   BENCH_TORCH=0           skip PyTorch
bench=${1:-build/tests/bench}
py=${PYTHON:-/usr/bin/python3}
here=$(dirname "$0")
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

echo "C: $("$bench" info)"
log=$(mktemp); trap 'rm -f "$log"' EXIT
for t in $threads; do
  for cfg in $configs; do
    "$bench" "$cfg" "$t" | sed 's/^RESULT /RESULT c /' | tee -a "$log" | grep -v '^RESULT\|^PROFILE\|^#'
    if [ "$torch" = 1 ] && [ "$cfg" != peak ]; then
      "$py" "$here/bench_torch.py" "$cfg" "$t" 2>/dev/null | sed 's/^RESULT /RESULT torch /' \
        | tee -a "$log" | grep -v '^RESULT' || echo "  (torch $cfg failed)"
    fi
  done
done

echo
awk '
/^RESULT/ {
  who = $2; cfg = $3; split($4, a, "="); thr = a[2]
  for (i = 5; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  key = cfg " " thr
  if (!(key in seen)) { seen[key] = 1; order[n++] = key }
  if (who == "c") { crate[key] = v["rate"]; unit[key] = v["unit"]; cgf[key] = v["gflops"];
                    cpk[key] = v["peak"]; crss[key] = v["rss_mb"] }
  else { trate[key] = v["rate"]; trss[key] = v["rss_mb"] }
}
END {
  printf "%-24s %3s %10s %-8s %8s %6s %7s | %10s %7s | %7s\n", "config", "thr", "C", "unit",
         "GFLOP/s", "%peak", "RSS MB", "torch", "RSS MB", "C/torch"
  for (i = 0; i < n; i++) {
    key = order[i]; split(key, p, " ")
    tr = (key in trate) ? sprintf("%10.2f", trate[key]) : sprintf("%10s", "-")
    ts = (key in trss) ? sprintf("%7s", trss[key]) : sprintf("%7s", "-")
    ratio = (key in trate) && trate[key] > 0 && (key in crate) ? sprintf("%6.2fx", crate[key] / trate[key]) : "      -"
    cr = (key in crate) ? sprintf("%10.2f", crate[key]) : sprintf("%10s", "failed")
    printf "%-24s %3s %s %-8s %8s %6s %7s | %s %s | %s\n", p[1], p[2], cr, unit[key], cgf[key],
           cpk[key], crss[key], tr, ts, ratio
  }
}' "$log"
if grep -q '^PROFILE' "$log"; then
  echo
  echo "Convolutions inside the network (FLOPs / time in conv layers, % of the measured peak):"
  awk '/^PROFILE/ { sub(/^PROFILE /, ""); printf "  %s\n", $0 }' "$log"
fi
