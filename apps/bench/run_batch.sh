#!/usr/bin/env bash
# Issue 19 part 2 in one device call: batch 8 (prompts of 4k-16k arriving
# together) at 10 Gbit/s and from disk, and batch 1 at 16k from 10 Gbit/s,
# disk and 25 Gbit/s (the acceptance profile's points), under compute_only,
# load_only, bidirectional and two_pointer, one `kvflow bench` run. Batch 1's
# compute_only and load_only give each tier's per-chunk costs: the records'
# bound_s/vs_bound (batch 1: policies::lowest_ttft; batch 8:
# policies::lowest_batch_ttft on the same costs).
#
# Usage: apps/bench/run_batch.sh BIN_DIR OUT_DIR
#   BIN_DIR holds kvflow and env.sh (../shared/device/bundle), lib/ with
#   OpenBLAS and gfortran possibly packed as blas.tar.xz (unpacked here).
# Environment: BUDGET_S (the bench's timeout, default 170), PRESET
# (llama-3-8b), BACKEND (cuda), CONTEXT (16384), CHUNK (1024), SUFFIX (256),
# REPEATS (1): a CPU smoke test runs PRESET=tiny-test BACKEND=cpu CONTEXT=2048
# CHUNK=128 SUFFIX=64.
# Writes OUT_DIR/restore.json, restore.md, bench.log, device.txt, steps.txt,
# summary.txt (printed too).
set -uo pipefail
BIN=${1:?usage: $0 BIN_DIR OUT_DIR}
OUT=${2:?usage: $0 BIN_DIR OUT_DIR}
mkdir -p "$OUT"
[ -f "$BIN/blas.tar.xz" ] && tar xJf "$BIN/blas.tar.xz" -C "$BIN/lib"
[ -f "$BIN/env.sh" ] && source "$BIN/env.sh"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u; } > "$OUT/device.txt" 2>&1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
s=$SECONDS
timeout -k 5 "${BUDGET_S:-170}" "$BIN/kvflow" bench --device-name "${gpu:-unknown GPU}" \
  --backend "${BACKEND:-cuda}" --preset "${PRESET:-llama-3-8b}" --contexts "${CONTEXT:-16384}" \
  --chunk-tokens "${CHUNK:-1024}" --suffix-tokens "${SUFFIX:-256}" --disk-root /tmp --paced-root /dev/shm \
  --tiers 10,disk,25 --batch 1,8 --batch-tiers 10,disk --policies compute_only,load_only,bidirectional,two_pointer \
  --repeats "${REPEATS:-1}" --no-digest --trace-batch -1 --out "$OUT" 2>> "$OUT/bench.log"
echo "bench: exit $?, $((SECONDS - s)) s" | tee -a "$OUT/steps.txt"
rm -rf /tmp/kvflow-bench-* /dev/shm/kvflow-bench-* 2>/dev/null
python3 - "$OUT/restore.json" <<'PY' | tee "$OUT/summary.txt"
import json, sys
recs = json.load(open(sys.argv[1]))["records"]
def f(v, p="%.3f"):
    return "-" if v is None else p % v
print("tier batch policy ttft_s p99_s vs_bidirectional p99_vs_bidirectional bound_s vs_bound")
for r in recs:
    print(r["tier"], r["batch"], r["policy"], f(r["ttft_s"]), f(r["ttft_p99_s"]), f(r["ttft_vs_bidirectional"]),
          f(r["p99_vs_bidirectional"]), f(r["bound_s"]), f(r["vs_bound"]))
PY
