#!/usr/bin/env bash
# The restore acceptance sweep (issue 8) on one H100, in one device call:
# llama-3-8b (random weights made on the GPU), 16k-token prompts with a 256-token
# uncached suffix, chunks of 256 tokens; tiers disk (O_DIRECT, unpaced), the disk
# paced to 25 and to 10 Gbit/s; every policy; batch 1 on every tier and batch 8
# (mixed lengths 4k..16k) on the 10 Gbit/s tier; 2 repeats. Paced tiers read from
# /dev/shm when it has 24 GB free (see below).
# Usage: apps/bench/run_restore.sh OUT_DIR   (binary: $KVFLOW_BIN or .device/kvflow)
# Writes OUT_DIR/restore.json, restore.md (also after every point, so a run cut
# short keeps what it measured), bench.log (progress, stderr) and device.txt.
# Estimate: ~2-3 min (3 runtime starts; batch 1 about 10 runs of 0.3-1.7 s per
# tier plus priming; batch 8 at 10 Gbit/s about 10 GiB of KV per restore, ~9 s
# load_only, ~45 s for all policies x 2 repeats plus ~10 s priming). The
# timeout leaves the device call room to copy results back.
set -uo pipefail
OUT=${1:?usage: $0 OUT_DIR}
BIN=${KVFLOW_BIN:-.device/kvflow}
mkdir -p "$OUT"
if [ -f "$(dirname "$BIN")/env.sh" ]; then source "$(dirname "$BIN")/env.sh"; fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; df -h /tmp | tail -1; date -u; } \
  > "$OUT/device.txt" 2>&1
# The VM's disk reads at only ~10 Gbit/s (apps/bench/results/tiers.md), so the
# paced tiers (standing for remote storage) keep their files in RAM (/dev/shm,
# read buffered: O_DIRECT falls back there) where it has room; the disk tier uses
# the real disk under /tmp.
paced_root=/tmp
if [ -d /dev/shm ] && [ "$(df -k --output=avail /dev/shm | tail -1)" -gt $((24 * 1024 * 1024)) ]; then paced_root=/dev/shm; fi
echo "disk tier: /tmp; paced tiers: $paced_root" >> "$OUT/device.txt"
df -h /dev/shm >> "$OUT/device.txt" 2>&1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
timeout 450 "$BIN" bench --device-name "${gpu:-unknown GPU}" --preset llama-3-8b --backend cuda \
  --disk-root /tmp --paced-root "$paced_root" \
  --contexts 16384 --suffix-tokens 256 --chunk-tokens 256 \
  --tiers disk,25,10 --batch 1,8 --batch-tiers 10 \
  --policies compute_only,load_only,bidirectional,two_pointer,oracle \
  --repeats 2 --out "$OUT" 2> >(tee "$OUT/bench.log" >&2)
rc=$?
echo "kvflow bench exit code $rc" | tee -a "$OUT/bench.log"
exit $rc
