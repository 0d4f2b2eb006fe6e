#!/usr/bin/env python3
"""Collects run_serve.sh's kvflow load reports into serve.json and serve.md.

Usage: summarise_serve.py RUNS_DIR OUT_DIR DEVICE
Each RUNS_DIR/<scenario>_<tier>_<policy>_r<rate>.json is one load run; a
record keeps the scenario, tier, policy, rate, TTFT/TPOT percentiles (s),
goodput and throughput, and each policy's TTFT against the better single
resource's at the same point."""
import json
import os
import pathlib
import sys


def main():
    runs, out, device = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
    records = []
    for f in sorted(runs.glob("*_r*.json")):
        scenario, rest = (f.stem.split("_disk_") if "_disk_" in f.stem else f.stem.split("_10_"))
        tier = "disk" if "_disk_" in f.stem else "10"
        policy, rate = rest.rsplit("_r", 1)
        j = json.loads(f.read_text())
        records.append({
            "scenario": scenario, "tier": tier, "link_gbps": 0 if tier == "disk" else float(tier),
            "policy": policy, "request_rate": float(rate), "completed": j.get("completed"),
            "failed": j.get("failed"),
            "ttft_p50_s": j["median_ttft_ms"] / 1e3, "ttft_mean_s": j["mean_ttft_ms"] / 1e3,
            "ttft_p99_s": j["p99_ttft_ms"] / 1e3, "tpot_p50_s": j["median_tpot_ms"] / 1e3,
            "goodput": j.get("request_goodput"), "request_throughput": j.get("request_throughput"),
            "output_throughput": j.get("output_throughput"), "device": device,
        })
    by_point = {}
    for r in records:
        by_point.setdefault((r["scenario"], r["tier"], r["request_rate"]), {})[r["policy"]] = r
    lines = ["# kvflow serve under kvflow load, " + device, "",
             os.environ.get("PRESET", "llama-3-8b") + " preset (random weights, token-id prompts), 12 requests a run, 16 output tokens each; "
             "TTFT in seconds. `vs best single`: the better of compute_only and load_only over this policy "
             "(mean TTFT).", "",
             "| scenario | tier | rate/s | policy | TTFT p50 | TTFT mean | TTFT p99 | TPOT p50 | goodput/s | vs best single |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for (scenario, tier, rate), pols in sorted(by_point.items()):
        for p, r in sorted(pols.items()):
            # Against the single resources of the same step budget (POLICY@bN), else of any.
            budget = p[p.index("@"):] if "@" in p else ""
            singles = [pols[q + budget]["ttft_mean_s"] for q in ("compute_only", "load_only") if q + budget in pols]
            singles = singles or [v["ttft_mean_s"] for q, v in pols.items() if q.split("@")[0] in ("compute_only", "load_only")]
            best = min(singles) if singles else None
            r["vs_best_single"] = best / r["ttft_mean_s"] if best and r["ttft_mean_s"] > 0 else None
            vs = f"{r['vs_best_single']:.2f}x" if r["vs_best_single"] else ""
            lines.append(f"| {scenario} | {tier} | {rate:g} | {p} | {r['ttft_p50_s']:.3f} | {r['ttft_mean_s']:.3f} | "
                         f"{r['ttft_p99_s']:.3f} | {r['tpot_p50_s'] * 1e3:.1f} ms | {r['goodput'] or 0:.2f} | {vs} |")
    (out / "serve.json").write_text(json.dumps({"records": records}, indent=1) + "\n")
    (out / "serve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
