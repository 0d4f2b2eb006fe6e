#!/usr/bin/env bash
# One GPU-machine call of run_remote.sh from a packed bundle (the device
# tool carries at most 64 MiB; OpenBLAS alone is 36 MB unpacked). Build the
# bundle here, from the repository root, with:
#   B=/tmp/remote-bundle; rm -rf $B; mkdir -p $B/bin $B/ucx
#   strip -o /tmp/kvflow build/apps/kvflow && ../shared/device/bundle $B /tmp/kvflow
#   cp -L /usr/sbin/ip /usr/sbin/tc $B/bin/   # and the libraries ldd names for them, into $B/lib
#   cp -L /usr/lib/x86_64-linux-gnu/ucx/*.so.0 $B/ucx/
#   cp apps/bench/run_remote.sh apps/bench/remote_summary.py apps/bench/trace_gaps.py $B/
#   git rev-parse --short HEAD > $B/COMMIT
#   mkdir -p DIR && (cd $B && tar cf - . | xz -T2 -6 > DIR/bundle.tar.xz); cp apps/bench/device_remote.sh DIR/run.sh
# and run, with DIR carried: STEPS="b1-10 b1-25" TLIM=80 bash DIR/run.sh
# (STEPS, run_remote.sh's steps; TLIM, seconds for all of them; STEP_S and
# TOTAL_S, its BUDGET_S and TOTAL_S). Results: $OUT/remote.tgz.
set -u
D=$(cd "$(dirname "$0")" && pwd)
B=/tmp/remote-bundle; rm -rf $B; mkdir -p $B
tar xJf "$D/bundle.tar.xz" -C $B
source $B/env.sh
R=$OUT/remote; mkdir -p $R
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; echo "commit $(cat $B/COMMIT)"; echo "cores $(nproc)"; } > $R/device.txt
TRACE_BATCH=1 TRACE_POLICIES=load_only,two_pointer BUDGET_S=${STEP_S:-45} TOTAL_S=${TOTAL_S:-110} \
  timeout -k 3 "${TLIM:-84}" bash $B/run_remote.sh "${STEPS:-b1-10 b1-25}" $R
python3 $B/remote_summary.py $R > $R/summary.txt 2>&1
tar czf $OUT/remote.tgz -C $OUT remote
cat $R/summary.txt $R/steps.txt; grep -iE "error|mismatch" $R/bench.log | head -20
