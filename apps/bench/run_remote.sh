#!/usr/bin/env bash
# The remote tier on the GPU machine: llama-3-8b restored from a kvflow node
# in a network namespace of its own behind a veth pair shaped by tc tbf
# (kvflow bench --tiers remote:N), against the disk paced to the same rate,
# in the same run. Run from a bundle folder (../shared/device/bundle) that
# also holds bin/ip, bin/tc (with their libraries in lib/) and ucx/ (UCX's
# transport modules, so both ends run Debian's UCX).
# Usage: run_remote.sh STEPS OUT_DIR, STEPS a quoted list of
#   b1       16k and 32k, batch 1, remote:25 and remote:10, four policies
#            (25 first: TRACE_BATCH=1 traces two_pointer there at 16k)
#   b1-25    b1 at remote:25 only
#   b1-10    b1 at remote:10 only
#   q4-25    16k, batch 1, remote:25, load_only and two_pointer with
#            --load-queue-chunks 4 (twice the loads in flight: the A/B of
#            the in-flight window for load_only's link use); its own folder
#   off16    16k, batch 1, remote:10 and remote:25, four policies, the
#            node's wire compression off (the same run's A/B); its own folder
#   paced    16k and 32k, batch 1, the disk paced to 10 and 25, two_pointer
#   b8-10    batch of 8 (4k..16k) at remote:10, bidirectional and two_pointer
#   mtu9000  b1 at remote:25 with jumbo frames on the veth pair (--link-mtu
#            9000: tbf counts 66 header bytes a packet, 4.4% of 1514 but
#            0.7% of 9014); its own folder
#   lanes1   16k at remote:25 with one UCX lane at each end (the A/B of
#            lanes), load_only and two_pointer; skipped once TOTAL_S passed
# BUDGET_S caps each step (default 150), TOTAL_S the optional ones (100).
# WIRE_COMPRESSION is the node's --wire-compression (default auto: KV
# goes losslessly compressed where that saves a tenth or more).
# REPEATS is --repeats (default 1: batch 1 reports the median of that
# many), BATCH_REPEATS the runs of a batch of 8 (default 1).
# TRACE_BATCH=1 traces two_pointer's batch-1 restore on the first tier and
# context (restore_trace_two_pointer.json; default -1: none); TRACE_POLICIES
# (comma-separated) traces others too.
set -uo pipefail
STEPS=${1:?usage: $0 STEPS OUT_DIR}
OUT=${2:?usage: $0 STEPS OUT_DIR}
D=$(cd "$(dirname "$0")" && pwd)
BIN=${KVFLOW_BIN:-$D/kvflow}
export PATH="$D/bin:$PATH" UCX_MODULE_DIR="$D/ucx"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
mkdir -p "$OUT"
paced=/dev/shm/kvflow-paced && mkdir -p "$paced"
run() {
  local name=$1 out=$2; shift 2
  local s=$SECONDS
  timeout -k 10 "${BUDGET_S:-150}" "$BIN" bench --device-name "${gpu:-unknown GPU}" --backend cuda --disk-root /tmp \
    --paced-root "$paced" --chunk-tokens 1024 --suffix-tokens 256 --repeats "${REPEATS:-1}" --batch-repeats "${BATCH_REPEATS:-1}" --no-digest --trace-batch "${TRACE_BATCH:--1}" --trace-policies "${TRACE_POLICIES:-two_pointer}" \
    --wire-compression "${WIRE_COMPRESSION:-auto}" --append --out "$out" "$@" 2>> "$OUT/bench.log"
  echo "$name: exit $?, $((SECONDS - s)) s" >> "$OUT/steps.txt"
  rm -rf "$paced"/kvflow-bench-* /tmp/kvflow-bench-*
}
for step in $STEPS; do
  case $step in
    b1) run "$step" "$OUT" --preset llama-3-8b --contexts 16384,32768 --tiers remote:25,remote:10 --batch 1 \
          --policies compute_only,load_only,bidirectional,two_pointer ;;
    b1-25) run "$step" "$OUT" --preset llama-3-8b --contexts 16384,32768 --tiers remote:25 --batch 1 \
             --policies compute_only,load_only,bidirectional,two_pointer ;;
    b1-10) run "$step" "$OUT" --preset llama-3-8b --contexts 16384,32768 --tiers remote:10 --batch 1 \
             --policies compute_only,load_only,bidirectional,two_pointer ;;
    q4-25)
      if [ "$SECONDS" -gt "${TOTAL_S:-100}" ]; then echo "$step: skipped at ${SECONDS} s" >> "$OUT/steps.txt"; continue; fi
      run "$step" "$OUT/q4" --preset llama-3-8b --contexts 16384 --tiers remote:25 --batch 1 --load-queue-chunks 4 \
        --policies compute_only,load_only,two_pointer ;;
    off16)
      if [ "$SECONDS" -gt "${TOTAL_S:-100}" ]; then echo "$step: skipped at ${SECONDS} s" >> "$OUT/steps.txt"; continue; fi
      WIRE_COMPRESSION=off run "$step" "$OUT/off" --preset llama-3-8b --contexts 16384 --tiers remote:25,remote:10 \
        --batch 1 --policies compute_only,load_only,bidirectional,two_pointer ;;
    paced) run "$step" "$OUT" --preset llama-3-8b --contexts 16384,32768 --tiers 10,25 --batch 1 --policies two_pointer ;;
    b8-10) run "$step" "$OUT" --preset llama-3-8b --contexts 16384 --tiers remote:10 --batch 8 \
             --policies bidirectional,two_pointer ;;
    mtu9000)
      # Its own folder: the same points would replace the MTU 1500 records.
      run "$step" "$OUT/mtu9000" --preset llama-3-8b --contexts 16384,32768 --tiers remote:25 --batch 1 --link-mtu 9000 \
        --policies compute_only,load_only,bidirectional,two_pointer ;;
    lanes1)
      if [ "$SECONDS" -gt "${TOTAL_S:-100}" ]; then echo "$step: skipped at ${SECONDS} s" >> "$OUT/steps.txt"; continue; fi
      # Its own folder: the same points would replace the four-lane records.
      run "$step" "$OUT/lanes1" --preset llama-3-8b --contexts 16384 --tiers remote:25 --batch 1 --ucx-lanes 1 \
        --policies load_only,two_pointer ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
