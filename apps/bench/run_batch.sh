#!/usr/bin/env bash
# Issue 19 in one device call: batch 1 at 16k against its bound at every
# point of the acceptance profile (from disk, 10 and 25 Gbit/s; chunks of
# 1024 and 256 tokens), and batch 8 (prompts of 4k-16k arriving together) at
# 10 Gbit/s and from disk against per-request Cake in both orders
# (bidirectional: round robin; bidirectional_fcfs: first come, first served)
# and the batch bound. One
# `kvflow bench` run per chunk size: the first chunk size runs batches 1 and
# 8, the others batch 1. Batch 1's compute_only and load_only give each
# tier's per-chunk costs: the records' bound_s/vs_bound (batch 1:
# policies::lowest_ttft; batch 8: policies::lowest_batch_ttft on the same
# costs). Batch 1 of two_pointer and oracle is traced (Chrome trace) on the
# first tier of the last chunk size.
#
# Usage: apps/bench/run_batch.sh BIN_DIR OUT_DIR
#   BIN_DIR holds kvflow and env.sh (../shared/device/bundle), lib/ with
#   OpenBLAS and gfortran possibly packed as blas.tar.xz (unpacked here).
# Environment: BUDGET_S (the first bench's timeout, default 170), REST_BUDGET_S
# (each later one's, default 90), PRESET
# (llama-3-8b), BACKEND (cuda), CONTEXT (16384), CHUNKS ("1024 256"), SUFFIX
# (256), TIERS (disk,10,25), BATCH_TIERS (10,disk), POLICIES
# (compute_only,load_only,bidirectional,bidirectional_fcfs,two_pointer,oracle; later chunk sizes
# REST_POLICIES: compute_only,load_only,two_pointer,oracle), REPEATS (3: batch
# 1 reports the median), BATCH_REPEATS (1), TRACE_POLICIES
# (two_pointer,oracle): a CPU smoke test runs PRESET=tiny-test BACKEND=cpu
# CONTEXT=2048 CHUNKS="128 64" SUFFIX=64.
# Writes OUT_DIR/c<CHUNK>/ (restore.json, restore.md, traces), bench.log,
# device.txt, steps.txt, summary.txt (printed too).
set -uo pipefail
BIN=${1:?usage: $0 BIN_DIR OUT_DIR}
OUT=${2:?usage: $0 BIN_DIR OUT_DIR}
mkdir -p "$OUT"
[ -f "$BIN/blas.tar.xz" ] && tar xJf "$BIN/blas.tar.xz" -C "$BIN/lib"
[ -f "$BIN/env.sh" ] && source "$BIN/env.sh"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u; } > "$OUT/device.txt" 2>&1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
chunks=(${CHUNKS:-1024 256})
last=${chunks[${#chunks[@]}-1]}
first=1
for chunk in "${chunks[@]}"; do
  batches=1
  policies=${REST_POLICIES:-compute_only,load_only,two_pointer,oracle}
  budget=${REST_BUDGET_S:-90}
  if [ $first = 1 ]; then
    batches=1,8
    policies=${POLICIES:-compute_only,load_only,bidirectional,bidirectional_fcfs,two_pointer,oracle}
    budget=${BUDGET_S:-170}
  fi
  trace=-1
  [ "$chunk" = "$last" ] && trace=1
  s=$SECONDS
  timeout -k 5 "$budget" "$BIN/kvflow" bench --device-name "${gpu:-unknown GPU}" \
    --backend "${BACKEND:-cuda}" --preset "${PRESET:-llama-3-8b}" --contexts "${CONTEXT:-16384}" \
    --chunk-tokens "$chunk" --suffix-tokens "${SUFFIX:-256}" --disk-root /tmp --paced-root /dev/shm \
    --tiers "${TIERS:-disk,10,25}" --batch "$batches" --batch-tiers "${BATCH_TIERS:-10,disk}" \
    --policies "$policies" \
    --repeats "${REPEATS:-3}" --batch-repeats "${BATCH_REPEATS:-1}" --no-digest --trace-batch "$trace" \
    --trace-policies "${TRACE_POLICIES:-two_pointer,oracle}" --out "$OUT/c$chunk" 2>> "$OUT/bench.log"
  echo "bench chunk $chunk: exit $?, $((SECONDS - s)) s" | tee -a "$OUT/steps.txt"
  rm -rf /tmp/kvflow-bench-* /dev/shm/kvflow-bench-* 2>/dev/null
  first=0
done
python3 - "$OUT" "${chunks[@]}" <<'PY' | tee "$OUT/summary.txt"
import json, os, sys
out = sys.argv[1]
def f(v, p="%.3f"):
    return "-" if v is None else p % v
print("chunk tier batch policy repeats ttft_s p99_s vs_bidirectional vs_cake p99_vs_cake bound_s vs_bound bound_batch1_s")
for chunk in sys.argv[2:]:
    path = os.path.join(out, "c" + chunk, "restore.json")
    if not os.path.exists(path):
        print(chunk, "no records")
        continue
    for r in json.load(open(path))["records"]:
        print(chunk, r["tier"], r["batch"], r["policy"], r.get("repeats"), f(r["ttft_s"]), f(r["ttft_p99_s"]),
              f(r["ttft_vs_bidirectional"]), f(r.get("ttft_vs_cake")), f(r.get("p99_vs_cake")), f(r["bound_s"]),
              f(r["vs_bound"]), f(r.get("bound_batch1_s")))
PY
