#!/usr/bin/env bash
# Restore benchmarks on one GPU machine, in one device call (10 minutes, of
# which ~30 s copy the results back): the PyTorch/transformers prefill
# reference first (apps/bench/prefill_reference.py, for the vs_transformers
# ratio), then `kvflow bench` steps, each under `timeout` within a total budget.
#
# Usage: apps/bench/run_restore.sh PROFILE OUT_DIR
#   acceptance  llama-3-8b, 16k prompts, 256-token uncached suffix; tiers disk
#               (O_DIRECT), the disk paced to 25 and 10 Gbit/s; batch 1 on every
#               tier, batch 8 (mixed lengths 4k..16k) and a Poisson stream of 32
#               at 70% of the measured capacity on 10 Gbit/s; every policy; 2
#               repeats; timelines of the batch of 8 (two_pointer,
#               bidirectional); KV digests checked at batch 1, first tokens
#               in batches. ~5-6 min.
#   sweep       batch 1 on host, disk, 40, 25, 10, 1 Gbit/s (slowest last); batches 4 and 16
#               at 10 Gbit/s; batch 8 on mixed:10 (half the prompts in host,
#               half on the 10 Gbit/s disk); 1 repeat; first tokens checked
#               (no KV digests: they cost seconds per restore). In priority
#               order: smollm2-135m (4k, 8k), llama-3-8b (4k..32k) batch 1,
#               llama-2-7b (4k) everything, llama-3-8b batches, llama-3-8b
#               mixed; a step that no longer fits the budget is skipped and
#               listed in steps.txt.
#   sweep-l3    llama-3-8b batch 1 at 4k, 8k, 32k on host, disk, 25, 10 Gbit/s
#               (~3 min: fits one device call beside acceptance).
#   fill        what one 10-minute call after acceptance and sweep adds: the
#               acceptance batch-1 points again; batch 1 at 4k and 8k (whose
#               0.1-0.3 s restores vary 10-15% run to run) with 3 repeats for
#               llama-3-8b, llama-2-7b and smollm2-135m; llama-3-8b mixed:10
#               batch 8, batch 16 at 32k, 64k on disk, and the uncached suffix
#               swept at 16k (64 to 4096 tokens); also 64k on host, 25 and
#               10 Gbit/s and the 16k disk point with 5 repeats (B16_CAP:
#               the batch-16 step's seconds, default 80). Set APPEND_FROM to
#               the restore.json of the earlier calls (points measured again
#               replace theirs) and REFS to their prefill_reference JSONs.
# APPEND_FROM: start OUT_DIR/restore.json from this file instead of empty.
# ONLY: space-separated step names to run (the profile's others are skipped).
# DEBUG_LOG: set to log each step at debug level into OUT/STEP.debug.log.gz.
# REFS: comma-separated prefill_reference JSONs to use instead of running
# prefill_reference.py (references measured in an earlier call).
# Environment: KVFLOW_BIN (default .device/kvflow), CHUNK (tokens per chunk,
# default 1024), BUDGET_S (seconds for the whole script, default 540).
# Context limits: the presets' windows are llama-2-7b 4096 and smollm2-135m
# 8192 positions, so their "4k" and "8k" prompts are 4095 and 8191 tokens
# (a prompt plus its first new token must fit).
# Writes OUT_DIR/restore.json and restore.md (after every point, so a run cut
# short keeps what it measured), restore_trace_<policy>.json (Chrome trace
# format: open in https://ui.perfetto.dev), prefill_reference.{json,md,log},
# bench.log (progress), steps.txt and device.txt.
set -uo pipefail
PROFILE=${1:?usage: $0 acceptance|sweep|sweep-l3|fill OUT_DIR}
OUT=${2:?usage: $0 acceptance|sweep|sweep-l3|fill OUT_DIR}
BIN=${KVFLOW_BIN:-.device/kvflow}
CHUNK=${CHUNK:-1024}
BUDGET_S=${BUDGET_S:-540}
start=$SECONDS
mkdir -p "$OUT"
# Steps append to this run's records only (or to APPEND_FROM's, copied first:
# it may be OUT's own restore.json).
seed=""
if [ -n "${APPEND_FROM:-}" ]; then
  seed=$(mktemp) && cp "$APPEND_FROM" "$seed" || { echo "APPEND_FROM: cannot read $APPEND_FROM" >&2; exit 2; }
fi
rm -f "$OUT/restore.json" "$OUT/restore.md" "$OUT/steps.txt"
if [ -n "$seed" ]; then mv "$seed" "$OUT/restore.json"; fi
if [ -f "$(dirname "$BIN")/env.sh" ]; then source "$(dirname "$BIN")/env.sh"; fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; df -h /tmp | tail -1; date -u; } \
  > "$OUT/device.txt" 2>&1
# The VM's disk reads at only ~10 Gbit/s (apps/bench/results/tiers.md), so the
# paced tiers (standing for remote storage) keep their files in RAM (/dev/shm,
# read buffered: O_DIRECT falls back there) where it has room; the disk tier uses
# the real disk under /tmp.
paced_root=/tmp
if [ -d /dev/shm ] && [ "$(df -k --output=avail /dev/shm | tail -1)" -gt $((24 * 1024 * 1024)) ]; then paced_root=/dev/shm; fi
echo "profile $PROFILE, chunks of $CHUNK tokens; disk tier: /tmp; paced tiers: $paced_root" >> "$OUT/device.txt"
df -h /dev/shm >> "$OUT/device.txt" 2>&1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)

left() { echo $((BUDGET_S - (SECONDS - start))); }
note() { echo "$*" | tee -a "$OUT/steps.txt" >&2; }

# prefill_reference.py for MODELS at LENGTHS into OUT/prefill_reference_NAME.json;
# adds the file to refs. Skipped (noted) without torch/transformers or time.
refs="${REFS:-}"
reference() {
  local name=$1 models=$2 lengths=$3 cap=$4
  local t=$(( $(left) - 60 < cap ? $(left) - 60 : cap ))
  if [ "$t" -lt 30 ]; then note "skipped reference $name: ${t}s left"; return; fi
  if ! python3 -c "import torch, transformers" 2>/dev/null; then note "skipped reference $name: no torch/transformers"; return; fi
  local s=$SECONDS
  timeout -k 10 "$t" python3 apps/bench/prefill_reference.py --models "$models" --lengths "$lengths" --warmup 1 \
    --reps 2 --json "$OUT/prefill_reference_$name.json" --md "$OUT/prefill_reference_$name.md" \
    >> "$OUT/prefill_reference.log" 2>&1
  local rc=$?
  note "reference $name ($models at $lengths): exit $rc, $((SECONDS - s)) s"
  if [ "$rc" -eq 0 ] && [ -s "$OUT/prefill_reference_$name.json" ]; then refs=${refs:+$refs,}$OUT/prefill_reference_$name.json; fi
}

# One `kvflow bench` invocation, appending to OUT's records, under a timeout
# of at most CAP seconds and what the budget leaves (minus a margin for the
# later copy). Chunk files of a killed run are removed.
rc_all=0
step() {
  local name=$1 cap=$2; shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local t=$(( $(left) - 20 < cap ? $(left) - 20 : cap ))
  if [ "$t" -lt 30 ]; then note "skipped $name: ${t}s left of the budget"; return; fi
  local s=$SECONDS
  # DEBUG_LOG: the step's whole log at debug level (every grant, completion
  # and plan) into OUT/NAME.debug.log.gz instead of bench.log; it slows short
  # restores, so such a step's timings are for reading, not for the tables.
  local level=${KVFLOW_LOG_LEVEL:-} debug_log=""
  if [ -n "${DEBUG_LOG:-}" ]; then level=debug; debug_log="$OUT/$name.debug.log"; fi
  KVFLOW_LOG_LEVEL=$level timeout -k 10 "$t" "$BIN" bench --device-name "${gpu:-unknown GPU}" --backend cuda \
    --disk-root /tmp --paced-root "$paced_root" --chunk-tokens "$CHUNK" --suffix-tokens "${SUFFIX:-256}" \
    --policies compute_only,load_only,bidirectional,two_pointer,oracle \
    ${refs:+--reference "$refs"} --append --out "$OUT" "$@" \
    2> >(if [ -n "$debug_log" ]; then cat > "$debug_log"; else tee -a "$OUT/bench.log" >&2; fi)
  local rc=$?
  if [ -n "$debug_log" ]; then sleep 1; gzip -f "$debug_log"; fi
  [ "$rc" -eq 0 ] || rc_all=$rc
  note "$name: exit $rc$([ "$rc" -eq 124 ] && echo ' (timed out: kept the points done)'), $((SECONDS - s)) s"
  rm -rf /tmp/kvflow-bench-* "$paced_root"/kvflow-bench-* 2>/dev/null
}

case "$PROFILE" in
  acceptance)
    reference l3 llama-3-8b 16384 120
    step acceptance-batch1 200 --preset llama-3-8b --contexts 16384 --tiers disk,25,10 --batch 1 --repeats 2 \
      --trace-batch -1
    # Batches and the stream check first tokens only: a KV digest copies and
    # hashes gigabytes while the other requests of the batch still restore.
    step acceptance-batches $(( $(left) - 20 )) --preset llama-3-8b --contexts 16384 --tiers 10 --batch 8 \
      --poisson 32 --poisson-load 0.7 --repeats 2 --no-digest
    ;;
  sweep)
    reference l3 llama-3-8b 4096,8192,16384,32768 100
    reference l2 llama-2-7b 4095 50
    # Batches and streams run on the tiers named by --batch-tiers; batch 1 on all.
    common=(--repeats 1 --no-digest --trace-batch -1)
    step smollm2-135m 60 --preset smollm2-135m --contexts 4096,8191 --tiers host,disk,40,25,10,1 \
      --batch 1,4,16 --batch-tiers 10 "${common[@]}"
    step smollm2-135m-mixed 30 --preset smollm2-135m --contexts 4096,8191 --tiers mixed:10 --batch 8 "${common[@]}"
    step llama-3-8b 220 --preset llama-3-8b --contexts 4096,8192,16384,32768 --tiers host,disk,40,25,10,1 \
      --batch 1 "${common[@]}"
    step llama-2-7b 90 --preset llama-2-7b --contexts 4095 --tiers host,disk,40,25,10,1 --batch 1,4,16 \
      --batch-tiers 10 "${common[@]}"
    step llama-2-7b-mixed 30 --preset llama-2-7b --contexts 4095 --tiers mixed:10 --batch 8 "${common[@]}"
    step llama-3-8b-batches 200 --preset llama-3-8b --contexts 4096,8192,16384,32768 --tiers 10 --batch 4,16 \
      --repeats 1 --no-digest --trace-batch 16 --trace-context 16384
    step llama-3-8b-mixed 120 --preset llama-3-8b --contexts 4096,8192,16384,32768 --tiers mixed:10 --batch 8 \
      "${common[@]}"
    ;;
  sweep-l3)
    # The llama-3-8b part of the sweep that fits beside the acceptance run in
    # one device call: batch 1, 4k/8k/32k (16k is in acceptance), four tiers.
    reference l3s llama-3-8b 4096,8192,32768 70
    step llama-3-8b $(( $(left) - 20 )) --preset llama-3-8b --contexts 4096,8192,32768 --tiers host,disk,25,10 \
      --batch 1 --repeats 1 --no-digest --trace-batch -1
    ;;
  fill)
    b1=(--batch 1 --repeats 3 --no-digest --trace-batch -1)
    step acceptance-batch1 120 --preset llama-3-8b --contexts 16384 --tiers disk,25,10 --batch 1 --repeats 2 \
      --trace-batch -1
    # The O_DIRECT disk's rate drifts between runs on the VM (0.75-1.25 GB/s
    # for 4 MiB reads within minutes): the disk point again, median of 5.
    step acceptance-disk5 120 --preset llama-3-8b --contexts 16384 --tiers disk --batch 1 --repeats 5 \
      --no-digest --trace-batch -1
    step llama-3-8b-short 90 --preset llama-3-8b --contexts 4096,8192 --tiers host,disk,40,25,10 "${b1[@]}"
    step llama-2-7b-b1 60 --preset llama-2-7b --contexts 4095 --tiers host,disk,40,25,10 "${b1[@]}"
    step smollm2-135m-b1 45 --preset smollm2-135m --contexts 4096,8191 --tiers host,disk,40,25,10,1 "${b1[@]}"
    step llama-3-8b-mixed 120 --preset llama-3-8b --contexts 4096,8192,16384,32768 --tiers mixed:10 --batch 8 \
      --repeats 1 --no-digest --trace-batch -1
    step llama-3-8b-64k 70 --preset llama-3-8b --contexts 65536 --tiers disk --batch 1 --repeats 1 --no-digest \
      --trace-batch -1
    step llama-3-8b-64k-links 150 --preset llama-3-8b --contexts 65536 --tiers host,25,10 --batch 1 --repeats 1 \
      --no-digest --trace-batch -1
    # The uncached suffix swept (a step's SUFFIX overrides the default 256;
    # 256 itself is measured above, and a point measured again replaces its record).
    SUFFIX=64,1024,4096 step llama-3-8b-suffix 90 --preset llama-3-8b --contexts 16384 --tiers disk,10 \
      --batch 1 --repeats 1 --no-digest --trace-batch -1
    # Last: the longest step (its load_only alone moves 69 GB at 10 Gbit/s).
    step llama-3-8b-b16-32k ${B16_CAP:-80} --preset llama-3-8b --contexts 32768 --tiers 10 --batch 16 --repeats 1 \
      --no-digest --trace-batch -1
    ;;
  *)
    echo "unknown profile '$PROFILE' (acceptance, sweep, sweep-l3 or fill)" >&2
    exit 2
    ;;
esac
echo "$PROFILE: $((SECONDS - start)) s in all; last failing exit code $rc_all" | tee -a "$OUT/steps.txt" "$OUT/bench.log"
exit $rc_all
