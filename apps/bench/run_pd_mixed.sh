#!/usr/bin/env bash
# The P/D mixed load on one GPU (kvflow pd --role mixed --backend cuda): a
# burst of long prompts, then a burst of long generations, through prefill
# and decode instances (each a gpu actor with its own CUDA engine, KV handed
# over by CUDA IPC in one device copy), with fixed roles and with load-aware
# placement (policies/pd_placement + pd_rebalancer), alternating. Writes
# OUT_DIR/pd_mixed.json and prints one line per run.
# Usage: run_pd_mixed.sh OUT_DIR
# Environment: MODEL (llama-3-8b), INSTANCES (3), PREFILL (1), LONG_PROMPTS
# (12), PROMPT_TOKENS (4096), LONG_GENERATIONS (12), GENERATION_TOKENS (256),
# BURST2_AT (0.5), CHUNK (1024), REPEATS (2), KV_PATH (cuda_ipc), LIMIT_S
# (120), KVFLOW_BIN (./kvflow beside this script, else build/apps/kvflow).
set -uo pipefail
OUT=${1:?usage: $0 OUT_DIR}
D=$(cd "$(dirname "$0")" && pwd)
BIN=${KVFLOW_BIN:-$D/kvflow}
[ -x "$BIN" ] || BIN=$D/../../build/apps/kvflow
mkdir -p "$OUT"
timeout -k 5 "${LIMIT_S:-120}" "$BIN" --log-level warn pd --role mixed --backend cuda --kv-path "${KV_PATH:-cuda_ipc}" \
  --preset "${MODEL:-llama-3-8b}" --instances "${INSTANCES:-3}" --prefill-instances "${PREFILL:-1}" \
  --long-prompts "${LONG_PROMPTS:-12}" --long-prompt-tokens "${PROMPT_TOKENS:-4096}" \
  --long-generations "${LONG_GENERATIONS:-12}" --long-generation-tokens "${GENERATION_TOKENS:-256}" \
  --burst2-at "${BURST2_AT:-0.5}" --chunk-tokens "${CHUNK:-1024}" --repeats "${REPEATS:-2}" \
  --out "$OUT/pd_mixed.json"
