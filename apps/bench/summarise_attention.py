#!/usr/bin/env python3
"""Tables for issue 19's attention kernel from one device call.

Usage: summarise_attention.py RESULTS_DIR [TRANSFORMERS_JSON]
  RESULTS_DIR holds attention.json (kvflow_prefill_bench --attention) and
  engine_prefill.json, prefill_reference.json and restore.json, each found
  in RESULTS_DIR, RESULTS_DIR/fused (run_fused.sh) or RESULTS_DIR/rt (kvflow
  bench --out); TRANSFORMERS_JSON overrides prefill_reference.json. Prints markdown: the kernels' TFLOP/s (old
  mma.sync against the Hopper wgmma kernel, same process) and compute_only
  through the runtime by chunk size against the engine's one-shot prefill
  and transformers'.
"""
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def find(d, name):
    for sub in ("", "fused", "rt"):
        path = os.path.join(d, sub, name)
        if os.path.exists(path):
            return load(path)
    return []


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    d = sys.argv[1]
    att = load(os.path.join(d, "attention.json"))
    print("## Attention kernel alone (one layer, bf16, median of 7)\n")
    print("| heads | head_dim | context | query rows | mma.sync ms | mma.sync TFLOP/s | new kernel | new ms | new TFLOP/s "
          "| speed-up | rel err new vs old |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    keyed = {}
    for r in att:
        k = (r["heads"], r["kv_heads"], r["head_dim"], r["context_tokens"], r["query_tokens"])
        keyed.setdefault(k, []).append(r)
    for k, rs in keyed.items():
        old = next(r for r in rs if r["kernel"] == "mma_sync")
        new = rs[-1]
        print(f"| {k[0]}/{k[1]} | {k[2]} | {k[3]} | {k[4]} | {old['seconds'] * 1e3:.3f} | {old['tflops']:.0f} | "
              f"{new['kernel']} | {new['seconds'] * 1e3:.3f} | {new['tflops']:.0f} | "
              f"{old['seconds'] / new['seconds']:.2f}x | {new.get('rel_err_vs_mma_sync', 0):.2g} |")

    eng = find(d, "engine_prefill.json")
    ref = load(sys.argv[2]) if len(sys.argv) == 3 else find(d, "prefill_reference.json")
    rst = find(d, "restore.json")
    if isinstance(rst, dict):
        rst = rst.get("records", rst.get("runs", []))
    if not eng:
        return
    print("\n## compute_only through the runtime, by chunk size (llama-3-8b, batch 1)\n")
    print("| context | engine one-shot s | engine chunk 256 unfused s | transformers s | runtime 256 s | runtime 512 s "
          "| runtime 1024 s | 256 / one-shot | 512 / one-shot | 1024 / one-shot | 256 / transformers "
          "| 1024 / transformers |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for ctx in sorted({r["context_tokens"] for r in eng}):
        one = next((r["seconds"] for r in eng if r["context_tokens"] == ctx and r["chunk_tokens"] == 0), None)
        c256 = next((r["seconds"] for r in eng if r["context_tokens"] == ctx and r["chunk_tokens"] == 256), None)
        tr = next((r["seconds"] for r in ref if r.get("context_tokens") == ctx and r.get("impl") == "transformers"),
                  None)
        rt = {}
        for r in rst:
            if (r.get("policy") == "compute_only" and r.get("context_tokens") == ctx and r.get("batch", 1) == 1):
                rt[r["chunk_tokens"]] = r["ttft_s"]

        def f(x, p=4):
            return "" if x is None else f"{x:.{p}f}"

        def ratio(a, b, p=3):
            return "" if a is None or b is None else f"{a / b:.{p}f}x"

        print(f"| {ctx} | {f(one)} | {f(c256)} | {f(tr)} | {f(rt.get(256), 3)} | {f(rt.get(512), 3)} | "
              f"{f(rt.get(1024), 3)} | {ratio(rt.get(256), one)} | {ratio(rt.get(512), one)} | "
              f"{ratio(rt.get(1024), one)} | {ratio(rt.get(256), tr, 2)} | {ratio(rt.get(1024), tr, 2)} |")


if __name__ == "__main__":
    main()
