#!/usr/bin/env bash
# Issue 19's attention kernel in one device call (about 90 s on an H200):
# the attention GPU tests (CPU reference, chunked == one-shot bitwise), the
# kernel benchmark (old mma.sync against the default, same process), the
# engine and runtime GPU suites (bit-exact invariants), the engine's one-shot
# prefill and compute_only through the runtime at chunks 256 and 1024 (16k,
# 32k). For transformers and chunk 512 run run_fused.sh in the same call.
#
# Usage: apps/bench/run_attention.sh BIN_DIR OUT_DIR
#   BIN_DIR holds kvflow, kvflow_prefill_bench, test_kernels_cuda_kernels,
#   test_kernels_cuda_engine and test_actors_runtime_gpu (bundled with
#   ../shared/device/bundle; blas.tar.xz unpacked into its lib/ if there).
set -uo pipefail
here=$(cd "${1:?usage: $0 BIN_DIR OUT_DIR}" && pwd)
R=${2:?usage: $0 BIN_DIR OUT_DIR}
[ -f "$here/blas.tar.xz" ] && tar xJf "$here/blas.tar.xz" -C "$here/lib"
[ -f "$here/env.sh" ] && source "$here/env.sh"
mkdir -p $R $R/rt
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u; } > $R/device.txt
step() { echo "$*" | tee -a $R/steps.txt; }
s=$SECONDS
( cd /tmp && timeout 30 "$here/test_kernels_cuda_kernels" --log_level=test_suite --run_test='attention*' ) > $R/attention_tests.txt 2>&1
krc=$?; step "attention tests: exit $krc, $((SECONDS - s)) s"
grep -E "rel err|error|fail" $R/attention_tests.txt | head -20
if [ $krc -eq 124 ]; then exit 1; fi
s=$SECONDS
timeout 40 "$here/kvflow_prefill_bench" --attention --lengths 4096,16384,32768 --json $R/attention.json > $R/attention.txt 2>&1
step "attention bench: exit $?, $((SECONDS - s)) s"; cat $R/attention.txt
if [ $krc -eq 0 ]; then
  for t in test_kernels_cuda_engine test_actors_runtime_gpu; do
    s=$SECONDS; ( cd /tmp && timeout 45 "$here/$t" --log_level=test_suite ) >> $R/gpu_tests.txt 2>&1
    step "$t: exit $?, $((SECONDS - s)) s"
  done
  s=$SECONDS
  timeout 40 "$here/kvflow_prefill_bench" --models llama-3-8b --lengths 4096,16384,32768 --chunks 0 --warmup 1 --reps 3 \
    --json $R/engine_prefill.json > $R/engine_prefill.log 2>&1
  step "engine-prefill: exit $?, $((SECONDS - s)) s"; cat $R/engine_prefill.log
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  for chunk in 256 1024; do
    s=$SECONDS
    timeout 40 "$here/kvflow" bench --device-name "$gpu" --backend cuda --preset llama-3-8b --disk-root /tmp \
      --paced-root /dev/shm --chunk-tokens $chunk --suffix-tokens 256 --batch 1 --trace-batch -1 --append --out $R/rt \
      --contexts 16384,32768 --tiers host --policies compute_only --repeats 3 --no-digest >> $R/bench.log 2>&1
    step "compute-$chunk: exit $?, $((SECONDS - s)) s"
  done
  grep "compute_only" $R/rt/restore.md | head
fi
