#!/usr/bin/env bash
# Prefill/decode roles on the CUDA backend (ctest apps.pd_cuda, label gpu):
# `kvflow pd --backend cuda` prefills here and starts a decode process on the
# same GPU; the KV moves by CUDA IPC (one device copy) and then through pinned
# host memory and UCX on loopback; --check compares every request's greedy
# token ids with a single-instance CUDA run (kvflow::runtime) and fails
# unless equal. Exit 77 (skipped) without a GPU.
# Usage: pd_cuda.sh KVFLOW_BIN [PRESET (smollm2-135m)]
set -uo pipefail
BIN=${1:?usage: $0 KVFLOW_BIN [PRESET]}
PRESET=${2:-smollm2-135m}
if ! nvidia-smi -L 2>/dev/null | grep -q GPU; then
  echo "apps.pd_cuda: no CUDA device found, skipping"
  exit 77
fi
rc=0
for path in cuda_ipc host_ucx; do
  out=$(timeout -k 5 "${PD_TIMEOUT_S:-120}" "$BIN" --log-level warn pd --backend cuda --kv-path "$path" --preset "$PRESET" \
    --chunk-tokens 256 --prompt-tokens 1000,300,7 --max-new-tokens 16 --check 2>&1)
  echo "== $path (exit $?)"
  echo "$out"
  grep -q "pd check: equal" <<< "$out" || { echo "apps.pd_cuda: $path FAILED"; rc=1; }
done
exit $rc
