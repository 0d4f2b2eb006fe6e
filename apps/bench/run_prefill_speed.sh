#!/usr/bin/env bash
# Issue 19 (the CUDA engine's and the runtime's compute speed) in one device
# call (about 3 minutes on an H200): the kernel and engine GPU suites first
# (bit-exactness), the engine's one-shot prefill of llama-3-8b at 4k/16k/32k
# and, for equal work, at context + suffix tokens ending with the last row's
# logits (the prefill of the prompt a restore covers), transformers' prefill
# (bf16, sdpa, logits_to_keep=1) at both lengths of 16k and 32k, compute_only through the
# runtime at chunks 256/512/1024 at 4k/16k/32k, and the runtime GPU suite;
# summarise_prefill_speed.py then prints both ratios (summary.md). nvidia-smi
# samples the SM clock and the power every 200 ms throughout (clocks.csv).
# Optional: PROFILE=1 the engine with KVFLOW_ENGINE_PROFILE=1 (time per step
# kind of a forward; RT_PROFILE=1 the same for the runtime's compute_only at
# 16k, chunk 256); ATTENTION=1 the attention kernel alone; OLD_CAP=N
# compute_only at chunk 256 with --max-compute-cells N too (at 16k);
# GEMM=1 the products alone, heuristic against tuned algorithm, and the
# tuned engine.
#
# Usage: apps/bench/run_prefill_speed.sh BIN_DIR OUT_DIR
#   BIN_DIR holds kvflow, kvflow_prefill_bench, test_kernels_cuda_kernels,
#   test_kernels_cuda_engine and test_actors_runtime_gpu (bundled with
#   ../shared/device/bundle; blas.tar.xz unpacked into its lib/ if there).
#   BUDGET_S (default 230) bounds the whole run; a step that would pass it is
#   cut short by its timeout. ATTN (default sdpa) picks transformers'
#   attention (prefill_reference.py --attn). SUFFIX (default 256): the
#   runtime's uncached suffix tokens.
set -uo pipefail
BIN=$(cd "${1:?usage: $0 BIN_DIR OUT_DIR}" && pwd)
R=${2:?usage: $0 BIN_DIR OUT_DIR}
BUDGET_S=${BUDGET_S:-230}
SUFFIX=${SUFFIX:-256}
bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ctx=4096,16384,32768
equal=$((4096 + SUFFIX)),$((16384 + SUFFIX)),$((32768 + SUFFIX))
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
step engine 40 "$BIN/kvflow_prefill_bench" --models llama-3-8b --lengths $ctx --chunks 0 --warmup 1 \
  --reps 3 --json "$R/engine.json" > "$R/engine.log" 2>&1
step engine-equal 40 "$BIN/kvflow_prefill_bench" --models llama-3-8b --lengths $equal --chunks 0 --warmup 1 \
  --reps 3 --logits --json "$R/engine_equal.json" > "$R/engine_equal.log" 2>&1
cat "$R/engine.log" "$R/engine_equal.log"
if [ "${PROFILE:-0}" = 1 ]; then
  step profile 40 env KVFLOW_ENGINE_PROFILE=1 "$BIN/kvflow_prefill_bench" --models llama-3-8b \
    --lengths 16384,32768 --chunks 0 --warmup 1 --reps 2 > "$R/engine_profile.log" 2>&1
  grep "engine profile" "$R/engine_profile.log"
fi
if [ "${ATTENTION:-0}" = 1 ]; then
  step attention 30 "$BIN/kvflow_prefill_bench" --attention --lengths 16384,32768 --json "$R/attention.json" \
    > "$R/attention.log" 2>&1
fi
# transformers at 16k and 32k (the bars' lengths), context and context + suffix.
step transformers 60 python3 "$bench_dir/prefill_reference.py" --models llama-3-8b \
  --lengths 16384,$((16384 + SUFFIX)),32768,$((32768 + SUFFIX)) \
  --attn "${ATTN:-sdpa}" --warmup 1 --reps 3 --json "$R/prefill_reference.json" --md "$R/prefill_reference.md" \
  > "$R/prefill_reference.log" 2>&1
grep "^transformers" "$R/prefill_reference.log"
refs=""
[ -s "$R/prefill_reference.json" ] && refs=$R/prefill_reference.json
# compute_only NAME CAP CHUNK CONTEXTS OUT [bench options]
compute_only() {
  local name=$1 cap=$2 chunk=$3 contexts=$4 out=$5; shift 5
  step "$name" "$cap" "$BIN/kvflow" bench --device-name "${gpu:-unknown GPU}" --backend cuda --preset llama-3-8b \
    --disk-root /tmp --paced-root /dev/shm --chunk-tokens "$chunk" --suffix-tokens "$SUFFIX" --batch 1 \
    --trace-batch -1 ${refs:+--reference "$refs"} --append --out "$out" --contexts "$contexts" --tiers host \
    --policies compute_only --repeats 3 --no-digest "$@" 2>> "$R/bench.log" > /dev/null
  rm -rf /tmp/kvflow-bench-* /dev/shm/kvflow-bench-* 2>/dev/null
}
for chunk in 256 512 1024; do
  compute_only "compute-$chunk" 45 $chunk $ctx "$R/rt"
done
grep compute_only "$R/rt/restore.md" | head -12
if [ -n "${OLD_CAP:-}" ]; then
  compute_only "compute-256-cap$OLD_CAP" 35 256 16384 "$R/rt_old" --max-compute-cells "$OLD_CAP"
  grep compute_only "$R/rt_old/restore.md" | head -4
fi
step test_actors_runtime_gpu 60 bash -c "cd /tmp && '$BIN/test_actors_runtime_gpu' --log_level=test_suite >> '$R/gpu_tests.txt' 2>&1"
if [ "${RT_PROFILE:-0}" = 1 ]; then
  step rt-profile 30 env KVFLOW_ENGINE_PROFILE=1 "$BIN/kvflow" bench --backend cuda --preset llama-3-8b \
    --disk-root /tmp --chunk-tokens 256 --suffix-tokens "$SUFFIX" --batch 1 --trace-batch -1 --out "$R/rt_profile" \
    --contexts 16384 --tiers host --policies compute_only --repeats 1 --no-digest > /dev/null 2> "$R/rt_profile.log"
  rm -rf /tmp/kvflow-bench-* 2>/dev/null
  grep "engine profile" "$R/rt_profile.log"
fi
kill "$smi" 2>/dev/null
grep -E "gemm plan|failure|error|No errors" "$R/gpu_tests.txt" | head -20
[ -s "$R/rt/restore.json" ] && python3 "$bench_dir/summarise_prefill_speed.py" --engine "$R/engine.json" \
  --engine-equal "$R/engine_equal.json" --transformers "$R/prefill_reference.json" --runtime "$R/rt/restore.json" \
  ${OLD_CAP:+--runtime-old "$R/rt_old/restore.json"} --json "$R/summary.json" --md "$R/summary.md"
note "all: $((SECONDS - start)) s"
