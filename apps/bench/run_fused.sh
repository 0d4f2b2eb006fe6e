#!/usr/bin/env bash
# Issue 19's measurements in one device call (about 8 minutes on an H200):
# the GPU suites that check fused forwards bitwise, the engine's one-shot
# prefill (kvflow_prefill_bench) and transformers' (prefill_reference.py) at
# 4k/16k/32k, compute_only through the runtime at chunks of 256, 512 and
# 1024 tokens, and two_pointer at 16k from disk and at 25 Gbit/s with chunks
# of 256 and 1024 (KV digests checked across policies).
#
# Usage: apps/bench/run_fused.sh BIN_DIR OUT_DIR
#   BIN_DIR holds kvflow, kvflow_prefill_bench and the GPU test binaries
#   (bundled with ../shared/device/bundle, env.sh beside them; lib/ may come
#   as lib.tgz, unpacked here first).
# ONLY: space-separated step names (tests engine transformers compute two_pointer).
# Writes OUT_DIR/gpu_tests.txt, engine_prefill.json, prefill_reference.{json,md},
# restore.json/restore.md (every runtime point), steps.txt, device.txt.
set -uo pipefail
BIN=${1:?usage: $0 BIN_DIR OUT_DIR}
OUT=${2:?usage: $0 BIN_DIR OUT_DIR}
BUDGET_S=${BUDGET_S:-450}
start=$SECONDS
mkdir -p "$OUT"
[ -f "$BIN/lib.tgz" ] && [ ! -d "$BIN/lib" ] && tar xzf "$BIN/lib.tgz" -C "$BIN"
[ -f "$BIN/env.sh" ] && source "$BIN/env.sh"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader; df -h /tmp | tail -1; date -u; } \
  > "$OUT/device.txt" 2>&1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
left() { echo $((BUDGET_S - (SECONDS - start))); }
note() { echo "$*" | tee -a "$OUT/steps.txt" >&2; }
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
# run NAME CAP CMD...: under a timeout of CAP seconds or what the budget leaves.
run() {
  local name=$1 cap=$2; shift 2
  local t=$(( $(left) - 15 < cap ? $(left) - 15 : cap ))
  if [ "$t" -lt 20 ]; then note "skipped $name: ${t}s left"; return; fi
  local s=$SECONDS
  timeout -k 5 "$t" "$@"
  local rc=$?
  note "$name: exit $rc$([ "$rc" -eq 124 ] && echo ' (timed out)'), $((SECONDS - s)) s"
}
bench() {  # bench NAME CAP CHUNK ARGS...
  local name=$1 cap=$2 chunk=$3; shift 3
  run "$name" "$cap" "$BIN/kvflow" bench --device-name "${gpu:-unknown GPU}" --backend cuda --preset llama-3-8b \
    --disk-root /tmp --paced-root /dev/shm --chunk-tokens "$chunk" --suffix-tokens 256 --batch 1 --trace-batch -1 \
    ${refs:+--reference "$refs"} --append --out "$OUT" "$@" 2>> "$OUT/bench.log"
  rm -rf /tmp/kvflow-bench-* /dev/shm/kvflow-bench-* 2>/dev/null
}
refs=""
if want tests; then
  run engine-test 120 "$BIN/test_kernels_cuda_engine" --log_level=test_suite > "$OUT/gpu_tests.txt" 2>&1
fi
if want engine; then
  run engine-prefill 90 "$BIN/kvflow_prefill_bench" --models llama-3-8b --lengths 4096,16384,32768 --chunks 0,256 \
    --warmup 1 --reps 3 --json "$OUT/engine_prefill.json" > "$OUT/engine_prefill.log" 2>&1
fi
if want transformers; then
  run transformers 120 python3 apps/bench/prefill_reference.py --models llama-3-8b --lengths 4096,16384,32768 \
    --warmup 1 --reps 3 --json "$OUT/prefill_reference.json" --md "$OUT/prefill_reference.md" \
    > "$OUT/prefill_reference.log" 2>&1
  [ -s "$OUT/prefill_reference.json" ] && refs=$OUT/prefill_reference.json
fi
if want compute; then
  for chunk in 256 512 1024; do
    bench "compute-$chunk" 70 "$chunk" --contexts 4096,16384,32768 --tiers host --policies compute_only --repeats 3 \
      --no-digest
  done
fi
if want two_pointer; then
  for chunk in 1024 256; do
    bench "two_pointer-$chunk" 110 "$chunk" --contexts 16384 --tiers disk,25 \
      --policies compute_only,load_only,two_pointer,oracle --repeats 3
  done
fi
if want tests; then
  run kernels-test 60 "$BIN/test_kernels_cuda_kernels" --log_level=test_suite >> "$OUT/gpu_tests.txt" 2>&1
  run runtime-gpu-test 120 "$BIN/test_actors_runtime_gpu" --log_level=test_suite >> "$OUT/gpu_tests.txt" 2>&1
fi
note "all: $((SECONDS - start)) s"
