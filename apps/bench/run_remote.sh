#!/usr/bin/env bash
# The remote tier on the GPU machine: llama-3-8b restored from a kvflow node
# in a network namespace of its own behind a veth pair shaped by tc tbf
# (kvflow bench --tiers remote:N), against the disk paced to the same rate,
# in the same run. Run from a bundle folder (../shared/device/bundle) that
# also holds bin/ip, bin/tc (with their libraries in lib/) and ucx/ (UCX's
# transport modules, so both ends run Debian's UCX).
# Usage: run_remote.sh STEP OUT_DIR, STEP one of
#   b1-16k   16k, batch 1, remote:10, 10, remote:25, 25; four policies
#   b8-10    batch of 8 (4k..16k) at remote:10, bidirectional and two_pointer
#   b1-32k   32k, batch 1, remote:10, 10, remote:25, 25
# Several steps: STEP="b1-16k b8-10". BUDGET_S caps each step (default 150).
set -uo pipefail
STEPS=${1:?usage: $0 STEP... OUT_DIR}
OUT=${2:?usage: $0 STEP... OUT_DIR}
D=$(cd "$(dirname "$0")" && pwd)
BIN=${KVFLOW_BIN:-$D/kvflow}
export PATH="$D/bin:$PATH" UCX_MODULE_DIR="$D/ucx"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
mkdir -p "$OUT"
paced=/dev/shm/kvflow-paced && mkdir -p "$paced"
run() {
  local name=$1; shift
  local s=$SECONDS
  timeout -k 10 "${BUDGET_S:-150}" "$BIN" bench --device-name "${gpu:-unknown GPU}" --backend cuda --disk-root /tmp \
    --paced-root "$paced" --chunk-tokens 1024 --suffix-tokens 256 --repeats 1 --no-digest --trace-batch -1 \
    --append --out "$OUT" "$@" 2>> "$OUT/bench.log"
  echo "$name: exit $?, $((SECONDS - s)) s" >> "$OUT/steps.txt"
  rm -rf "$paced"/kvflow-bench-* /tmp/kvflow-bench-*
}
for step in $STEPS; do
  case $step in
    b1-16k) run "$step" --preset llama-3-8b --contexts 16384 --tiers remote:10,10,remote:25,25 --batch 1 \
              --policies compute_only,load_only,bidirectional,two_pointer ;;
    b8-10) run "$step" --preset llama-3-8b --contexts 16384 --tiers remote:10 --batch 8 \
              --policies bidirectional,two_pointer ;;
    b1-32k) run "$step" --preset llama-3-8b --contexts 32768 --tiers remote:10,10,remote:25,25 --batch 1 \
              --policies compute_only,load_only,bidirectional,two_pointer ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
