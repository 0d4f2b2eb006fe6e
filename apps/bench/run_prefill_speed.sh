#!/usr/bin/env bash
# Issue 19 part 1 (the CUDA engine's forward speed) in one device call
# (about 3 minutes on an H200): the kernel and engine GPU suites first
# (bit-exactness), the engine's one-shot prefill of llama-3-8b at 4k/16k/32k,
# the same with KVFLOW_ENGINE_PROFILE=1 (time per step kind of a forward),
# the attention kernel alone, transformers' prefill (bf16, sdpa) at
# 16k/32k, compute_only through the runtime at chunks 256/512/1024 at
# 4k/16k/32k, and the runtime GPU suite. nvidia-smi samples the SM clock and
# the power every 200 ms throughout (clocks.csv), so a step's clock can be
# read next to its time. GEMM=1 adds the products alone, heuristic against
# tuned algorithm (kvflow_prefill_bench --gemm), and the tuned engine.
#
# Usage: apps/bench/run_prefill_speed.sh BIN_DIR OUT_DIR
#   BIN_DIR holds kvflow, kvflow_prefill_bench, test_kernels_cuda_kernels,
#   test_kernels_cuda_engine and test_actors_runtime_gpu (bundled with
#   ../shared/device/bundle; blas.tar.xz unpacked into its lib/ if there).
#   BUDGET_S (default 230) bounds the whole run; a step that would pass it is
#   cut short by its timeout. ATTN (default sdpa) picks transformers'
#   attention (prefill_reference.py --attn).
set -uo pipefail
BIN=$(cd "${1:?usage: $0 BIN_DIR OUT_DIR}" && pwd)
R=${2:?usage: $0 BIN_DIR OUT_DIR}
BUDGET_S=${BUDGET_S:-230}
start=$SECONDS
mkdir -p "$R/rt"
[ -f "$BIN/blas.tar.xz" ] && [ ! -f "$BIN/lib/libopenblas.so.0" ] && tar xJf "$BIN/blas.tar.xz" -C "$BIN/lib"
[ -f "$BIN/env.sh" ] && source "$BIN/env.sh"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader; date -u;
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"; } \
  > "$R/device.txt" 2>&1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
note() { echo "$*" | tee -a "$R/steps.txt"; }
note "start: $(date -u +%T)"
# step NAME CAP CMD...: under a timeout of CAP seconds or what the budget leaves.
step() {
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET_S - (SECONDS - start) - 5))
  local t=$((left < cap ? left : cap))
  if [ "$t" -lt 10 ]; then note "skipped $name: ${left}s left"; return; fi
  local s=$SECONDS
  timeout -k 5 "$t" "$@"
  local rc=$?
  note "$name: exit $rc$([ "$rc" -eq 124 ] && echo ' (timed out)'), $((SECONDS - s)) s (at $((SECONDS - start)) s, $(date -u +%T))"
}
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu --format=csv,noheader -lms 200 \
  > "$R/clocks.csv" 2>/dev/null &
smi=$!
for t in test_kernels_cuda_kernels test_kernels_cuda_engine; do
  step "$t" 40 bash -c "cd /tmp && '$BIN/$t' --log_level=test_suite >> '$R/gpu_tests.txt' 2>&1"
done
if [ "${GEMM:-0}" = 1 ]; then
  step gemm 30 env KVFLOW_GEMM_LOG=1 "$BIN/kvflow_prefill_bench" --gemm --lengths 1024,4096,16384,32768 \
    --json "$R/gemm.json" > "$R/gemm.txt" 2>&1
  step engine-tuned 40 env KVFLOW_GEMM_TUNE=1 "$BIN/kvflow_prefill_bench" --models llama-3-8b \
    --lengths 4096,16384,32768 --chunks 0 --warmup 1 --reps 3 --json "$R/engine_tuned.json" > "$R/engine_tuned.log" 2>&1
fi
step engine 40 "$BIN/kvflow_prefill_bench" --models llama-3-8b --lengths 4096,16384,32768 --chunks 0 --warmup 1 \
  --reps 3 --json "$R/engine.json" > "$R/engine.log" 2>&1
cat "$R/engine.log"
step profile 40 env KVFLOW_ENGINE_PROFILE=1 "$BIN/kvflow_prefill_bench" --models llama-3-8b \
  --lengths 16384,32768 --chunks 0 --warmup 1 --reps 2 > "$R/engine_profile.log" 2>&1
grep "engine profile" "$R/engine_profile.log"
step attention 30 "$BIN/kvflow_prefill_bench" --attention --lengths 16384,32768 --json "$R/attention.json" \
  > "$R/attention.log" 2>&1
step transformers 60 python3 apps/bench/prefill_reference.py --models llama-3-8b --lengths 16384,32768 \
  --attn "${ATTN:-sdpa}" --warmup 1 --reps 3 --json "$R/prefill_reference.json" --md "$R/prefill_reference.md" \
  > "$R/prefill_reference.log" 2>&1
tail -5 "$R/prefill_reference.log"
refs=""
[ -s "$R/prefill_reference.json" ] && refs=$R/prefill_reference.json
for chunk in 256 512 1024; do
  step "compute-$chunk" 45 "$BIN/kvflow" bench --device-name "${gpu:-unknown GPU}" --backend cuda --preset llama-3-8b \
    --disk-root /tmp --paced-root /dev/shm --chunk-tokens $chunk --suffix-tokens 256 --batch 1 --trace-batch -1 \
    ${refs:+--reference "$refs"} --append --out "$R/rt" --contexts 4096,16384,32768 --tiers host \
    --policies compute_only --repeats 3 --no-digest 2>> "$R/bench.log" > /dev/null
  rm -rf /tmp/kvflow-bench-* /dev/shm/kvflow-bench-* 2>/dev/null
done
grep compute_only "$R/rt/restore.md" | head -12
step test_actors_runtime_gpu 60 bash -c "cd /tmp && '$BIN/test_actors_runtime_gpu' --log_level=test_suite >> '$R/gpu_tests.txt' 2>&1"
kill "$smi" 2>/dev/null
grep -E "gemm plan|failure|error|No errors" "$R/gpu_tests.txt" | head -20
note "all: $((SECONDS - start)) s"
