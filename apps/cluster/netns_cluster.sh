#!/usr/bin/env bash
# A cluster of kvflow nodes on one machine: the nodes run in a network
# namespace behind a veth pair (optionally shaped by tc tbf), so their KV
# crosses a real TCP link, and `kvflow demo` uses them as its remote tier.
# Everything it makes is removed on exit.
# Usage (root; ip and tc from iproute2):
#   apps/cluster/netns_cluster.sh [NODES=3] [GBIT=0: unshaped] [kvflow demo options...]
set -euo pipefail
nodes=${1:-3}; gbit=${2:-0}; shift $(( $# < 2 ? $# : 2 ))
here=$(cd "$(dirname "$0")/../.." && pwd)
kvflow=${KVFLOW:-$here/build/apps/kvflow}
ns=kvflow-demo-$$ hdev=kvdh$$ ndev=kvdn$$ host=10.250.0.1 node=10.250.0.2
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip link add "$hdev" type veth peer name "$ndev"
ip link set "$ndev" netns "$ns"
ip addr add "$host/24" dev "$hdev" && ip link set "$hdev" up
ip -n "$ns" addr add "$node/24" dev "$ndev" && ip -n "$ns" link set "$ndev" up && ip -n "$ns" link set lo up
[ "$gbit" = 0 ] || ip netns exec "$ns" tc qdisc add dev "$ndev" root tbf rate "${gbit}gbit" burst 1mb latency 10ms
# The nodes listen beyond loopback, so they need certificates (README,
# "Security: nodes and tenants"): a throwaway CA, one certificate for the
# nodes and one for the demo's runtime, named in the cluster file.
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -days 2 -subj /CN=kvflow-demo-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
for n in node client; do
  openssl req $ec -subj "/CN=$n" -keyout "$work/$n.key" -out "$work/$n.csr" 2>/dev/null
  openssl x509 -req -days 2 -in "$work/$n.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -set_serial "$RANDOM" \
    -out "$work/$n.pem" 2>/dev/null
done
printf 'cert = client.pem\nkey = client.key\nca = ca.pem\n' > "$work/cluster.txt"
for i in $(seq 0 $((nodes - 1))); do
  ip netns exec "$ns" "$kvflow" --log-level warn node --host "$node" --port $((4242 + i)) --node-id "n$i" \
    --ucx-tls tcp --ucx-devices "$ndev" --cert "$work/node.pem" --key "$work/node.key" --ca "$work/ca.pem" \
    > "$work/n$i.out" &
  pids+=($!)
  echo "n$i $node:$((4242 + i))" >> "$work/cluster.txt"
done
for i in $(seq 0 $((nodes - 1))); do
  until grep -q listening "$work/n$i.out"; do
    kill -0 "${pids[$i]}" 2>/dev/null || { echo "node n$i did not start" >&2; exit 1; }
    sleep 0.1
  done
done
echo "cluster file:"; cat "$work/cluster.txt"
# The demo's runtime reaches the nodes over TCP on the host end of the veth.
UCX_TLS=tcp UCX_NET_DEVICES=$hdev "$kvflow" demo --cluster "$work/cluster.txt" "$@"
