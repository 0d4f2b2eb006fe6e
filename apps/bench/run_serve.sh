#!/usr/bin/env bash
# kvflow serve under kvflow load on the GPU machine: the llama-3-8b preset
# (random weights, token-id prompts), multi-turn and RAG scenarios at two
# request rates, each tier (the local disk, and the disk paced to 10 Gbit/s,
# with a host tier too small to hold a prompt) under each policy. One
# server per tier and policy; every load run's vLLM-style report is kept.
# Usage: run_serve.sh OUT      (binaries: $BIN, default .device/kvflow)
# Knobs: TIERS="disk 10" POLICIES="two_pointer compute_only load_only"
#        SCENARIOS="multi_turn rag" RATES="2 6" PRESET=llama-3-8b BACKEND=cuda
#        CONTEXT=8192 (multi-turn context) DOC_LEN=2048 (RAG document) VOCAB=128256
#        BUDGETS="512 0": one server per policy and prefill budget of a decode
#        step (--step-prefill-tokens; 0: none), its runs named POLICY@bN;
#        unset: the server's default budget, runs named POLICY
set -u
out=${1:?usage: run_serve.sh OUT}
bin=${BIN:-.device/kvflow}
here=$(cd "$(dirname "$0")" && pwd)
preset=${PRESET:-llama-3-8b}
backend=${BACKEND:-cuda}
context=${CONTEXT:-8192}
doc_len=${DOC_LEN:-2048}
vocab=${VOCAB:-128256}
tiers=${TIERS:-"disk 10"}
policies=${POLICIES:-"two_pointer compute_only load_only"}
scenarios=${SCENARIOS:-"multi_turn rag"}
rates=${RATES:-"2 6"}
budgets=${BUDGETS:-default}
mkdir -p "$out/runs"
port=18100
for tier in $tiers; do
  gbps=0
  [ "$tier" = disk ] || gbps=$tier
  for run in $(for p in $policies; do for b in $budgets; do echo "$p@$b"; done; done); do
    policy=${run%@*}
    budget=${run#*@}
    name=$policy
    budget_flag=()
    [ "$budget" = default ] || { name="$policy@b$budget"; budget_flag=(--step-prefill-tokens "$budget"); }
    port=$((port + 1))
    cache=$(mktemp -d /tmp/kvflow-serve-XXXXXX)
    log="$out/runs/server_${tier}_${name}.log"
    "$bin" serve --preset "$preset" --backend "$backend" --policy "$policy" --port "$port" --host-tier-gb 0 \
      --disk-dir "$cache" --disk-gbps "$gbps" --max-running 8 --max-waiting 256 "${budget_flag[@]}" >"$log" 2>&1 &
    server=$!
    ok=0
    for _ in $(seq 1 120); do
      python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=1)" \
        2>/dev/null && { ok=1; break; }
      kill -0 $server 2>/dev/null || break
      sleep 0.5
    done
    if [ $ok = 0 ]; then echo "run_serve: server ($tier, $name) did not start"; tail -5 "$log"; kill $server; continue; fi
    for scenario in $scenarios; do
      # The scenario file from this checkout (kvflow load's own lookup is
      # the source folder it was built in, absent on another machine).
      scenario_file=$scenario
      for f in "$here/../load/scenarios/$scenario.lua" "apps/load/scenarios/$scenario.lua"; do
        [ -f "$f" ] && { scenario_file=$f; break; }
      done
      case $scenario in
        multi_turn) args=(--arg sessions=4 --arg turns=3 --arg context=$context --arg question=64 --arg max_tokens=16) ;;
        rag) args=(--arg docs=6 --arg doc_len=$doc_len --arg k=3 --arg question=64 --arg max_tokens=16) ;;
        *) args=() ;;
      esac
      for rate in $rates; do
        point="${scenario}_${tier}_${name}_r${rate}"
        echo "run_serve: $point"
        "$bin" load --url "http://127.0.0.1:$port" --scenario "$scenario_file" "${args[@]}" --token-ids --vocab "$vocab" \
          --ignore-eos --request-rate "$rate" --num-requests 12 --seed 7 --goodput ttft:1000 tpot:50 \
          --label "tier=$tier policy=$name" --no-plot --no-progress --out "$out/runs/$point.json" \
          >"$out/runs/$point.txt" 2>&1 || echo "run_serve: $point failed (see runs/$point.txt)"
      done
    done
    python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/metrics').read().decode())" \
      >"$out/runs/metrics_${tier}_${name}.txt" 2>/dev/null
    kill -INT $server
    wait $server
    rm -rf "$cache"
  done
done
python3 "$here/summarise_serve.py" "$out/runs" "$out" "${DEVICE:-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)}"
