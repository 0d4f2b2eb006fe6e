#!/usr/bin/env bash
# kvflow pd-bench on one machine: a request's KV moved from a prefill
# process to a decode process (contiguous vs per block), by CUDA IPC on one
# GPU and through host memory over UCX/TCP across a veth pair between
# network namespaces shaped by tc tbf, each beside the raw rate of its path
# measured in the same run. Writes OUT_DIR/pd.json (all records) and logs.
# Usage (root; ip and tc on PATH, or in ./bin of a bundle folder):
#   run_pd.sh OUT_DIR
# Environment: CONTEXTS (8192,32768), GBIT (25), PATHS ("cuda_ipc host_ucx"),
# REPEATS (3), STEP_S (90: cap per run), DEADLINE_S (none: skip host runs
# starting after it), KVFLOW_BIN (./kvflow beside this script, else build/apps/kvflow).
set -uo pipefail
OUT=${1:?usage: $0 OUT_DIR}
D=$(cd "$(dirname "$0")" && pwd)
BIN=${KVFLOW_BIN:-$D/kvflow}
[ -x "$BIN" ] || BIN=$D/../../build/apps/kvflow
[ -d "$D/bin" ] && export PATH="$D/bin:$PATH"
[ -d "$D/ucx" ] && export UCX_MODULE_DIR="$D/ucx"
CONTEXTS=${CONTEXTS:-8192,32768} GBIT=${GBIT:-25} PATHS=${PATHS:-cuda_ipc host_ucx} REPEATS=${REPEATS:-3}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
gpu=${gpu:-$(lscpu | sed -n 's/^Model name: *//p' | head -1)}
mkdir -p "$OUT"
ns=kvpd-$$ hdev=kvph$$ ndev=kvpn$$ host=10.251.0.1 peer=10.251.0.2
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  ip link del "$hdev" 2>/dev/null || true
}
trap cleanup EXIT

for path in $PATHS; do
  case $path in
    cuda_ipc)
      s=$SECONDS
      timeout -k 5 "${STEP_S:-90}" "$BIN" --log-level warn pd-bench --paths cuda_ipc --contexts "$CONTEXTS" --chunk-tokens 256,16 \
        --repeats "$REPEATS" --device-name "$gpu" --out "$OUT/cuda_ipc.json" 2>> "$OUT/pd.log"
      echo "cuda_ipc: exit $?, $((SECONDS - s)) s" >> "$OUT/steps.txt" ;;
    host_ucx)
      ip netns add "$ns" && ip link add "$hdev" type veth peer name "$ndev" && ip link set "$ndev" netns "$ns" &&
        ip addr add "$host/24" dev "$hdev" && ip link set "$hdev" up &&
        ip -n "$ns" addr add "$peer/24" dev "$ndev" && ip -n "$ns" link set "$ndev" up &&
        ip -n "$ns" link set lo up || { echo "host_ucx: namespace setup failed" >> "$OUT/steps.txt"; continue; }
      # Shaped both ways: the KV goes host -> namespace, acknowledgements back.
      tc qdisc add dev "$hdev" root tbf rate "${GBIT}gbit" burst 1mb latency 10ms
      ip netns exec "$ns" tc qdisc add dev "$ndev" root tbf rate "${GBIT}gbit" burst 1mb latency 10ms
      link="veth pair between network namespaces, tc tbf ${GBIT}gbit"
      # Per context, UCX's defaults and larger TCP buffers and segments; one
      # receiver process each, so a run cut short keeps what it measured.
      tuned="UCX_TCP_SNDBUF=16m UCX_TCP_RCVBUF=16m UCX_TCP_TX_SEG_SIZE=1m UCX_TCP_RX_SEG_SIZE=1m"
      i=0
      for ctx in ${CONTEXTS//,/ }; do
        for ucx in "" "$tuned"; do
          i=$((i + 1))
          if [ -n "${DEADLINE_S:-}" ] && [ "$SECONDS" -ge "$DEADLINE_S" ]; then
            echo "host_ucx $ctx ${ucx:-UCX defaults}: skipped, past ${DEADLINE_S} s" >> "$OUT/steps.txt"; continue
          fi
          ip netns exec "$ns" env $ucx "$BIN" --log-level warn pd-bench --role recv --listen "$peer:0" --ucx-tls tcp \
            --ucx-devices "$ndev" > "$OUT/recv$i.out" 2>> "$OUT/pd.log" &
          pids+=($!)
          for _ in $(seq 100); do grep -q listening "$OUT/recv$i.out" 2>/dev/null && break; sleep 0.1; done
          port=$(sed -n 's/^listening .*:\([0-9]*\)$/\1/p' "$OUT/recv$i.out")
          [ -n "$port" ] || { echo "host_ucx: receiver did not start" >> "$OUT/steps.txt"; continue; }
          s=$SECONDS
          timeout -k 5 "${STEP_S:-90}" env $ucx "$BIN" --log-level warn pd-bench --paths host_ucx \
            --connect "$peer:$port" --ucx-tls tcp --ucx-devices "$hdev" --contexts "$ctx" --repeats "$REPEATS" \
            --device-name "$gpu" --link "$link${ucx:+; $ucx}" --out "$OUT/host_ucx$i.json" 2>> "$OUT/pd.log"
          echo "host_ucx $ctx ${ucx:-UCX defaults}: exit $?, $((SECONDS - s)) s" >> "$OUT/steps.txt"
        done
      done ;;
    *) echo "unknown path $path" >&2; exit 2 ;;
  esac
done
python3 - "$OUT" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
records = []
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    if os.path.basename(f) != "pd.json":
        records += json.load(open(f))
json.dump(records, open(os.path.join(out, "pd.json"), "w"), indent=2)
for r in records:
    print(f"{r['path']:8} {r['context_tokens']:6} {r['transfer']:10} chunk {r['chunk_tokens']:3} calls {r['calls']:6} "
          f"{r['seconds']:.4f} s {r['gbps']:7.2f} Gbit/s raw {r['raw_gbps']:7.2f} ({r['fraction_of_raw']:.2f}) {r['link']}")
PY
