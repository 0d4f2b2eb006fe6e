#!/usr/bin/env python3
"""Issue 19's compute ratios from one run of run_prefill_speed.sh, on equal work.

The runtime's TTFT (kvflow bench, compute_only) covers the context, the
uncached suffix and the first token's logits. The context-only numbers
(kvflow_prefill_bench and prefill_reference.py at the context length) leave
the suffix out; the equal-work ones are a prefill of the whole prompt
(context + suffix tokens) up to its last row's logits. Prints a markdown
table with both ratios and writes the rows as JSON.

  summarise_prefill_speed.py --engine engine.json --engine-equal engine_equal.json \
      --transformers prefill_reference.json --runtime rt/restore.json [--runtime-old rt_old/restore.json] \
      --json summary.json --md summary.md
"""
import argparse
import json
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def by_tokens(records, impl):
    out = {}
    for r in records:
        if r.get("impl") == impl and r.get("chunk_tokens", 0) == 0:
            out[r["context_tokens"]] = r["seconds"]
    return out


def runtime_ttft(doc):
    """{(context, chunk): (ttft_s, suffix_tokens)} of batch-1 compute_only records."""
    out = {}
    for r in doc.get("records", []):
        if r.get("policy") == "compute_only" and r.get("batch") == 1:
            out[(r["context_tokens"], r["chunk_tokens"])] = (r["ttft_s"], r["suffix_tokens"])
    return out


def ratio(a, b):
    return a / b if a and b else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True, help="kvflow_prefill_bench --json at the context lengths")
    ap.add_argument("--engine-equal", required=True, help="kvflow_prefill_bench --logits --json at context + suffix")
    ap.add_argument("--transformers", required=True, help="prefill_reference.py --json (both lengths)")
    ap.add_argument("--runtime", required=True, help="kvflow bench's restore.json (compute_only)")
    ap.add_argument("--runtime-old", help="the same with the earlier grant cap (--max-compute-cells)")
    ap.add_argument("--json", required=True)
    ap.add_argument("--md", required=True)
    a = ap.parse_args()
    engine = by_tokens(load(a.engine), "kvflow")
    engine_eq = by_tokens(load(a.engine_equal), "kvflow")
    tf = by_tokens(load(a.transformers), "transformers")
    rt = runtime_ttft(load(a.runtime))
    old = runtime_ttft(load(a.runtime_old)) if a.runtime_old else {}
    rows = []
    for (ctx, chunk), (ttft, suffix) in sorted(rt.items()):
        n = ctx + suffix
        row = {"context_tokens": ctx, "suffix_tokens": suffix, "chunk_tokens": chunk, "runtime_s": ttft,
               "runtime_old_cap_s": old.get((ctx, chunk), (None,))[0],
               "engine_one_shot_s": engine.get(ctx), "engine_one_shot_equal_s": engine_eq.get(n),
               "transformers_s": tf.get(ctx), "transformers_equal_s": tf.get(n)}
        row["vs_one_shot"] = ratio(ttft, row["engine_one_shot_s"])
        row["vs_one_shot_equal"] = ratio(ttft, row["engine_one_shot_equal_s"])
        row["vs_transformers"] = ratio(ttft, row["transformers_s"])
        row["vs_transformers_equal"] = ratio(ttft, row["transformers_equal_s"])
        row["one_shot_vs_transformers_equal"] = ratio(row["engine_one_shot_equal_s"], row["transformers_equal_s"])
        row["old_cap_vs_transformers_equal"] = ratio(row["runtime_old_cap_s"], row["transformers_equal_s"])
        rows.append(row)

    def f(v, fmt):
        return format(v, fmt) if v is not None else ""

    lines = ["| context | chunk | runtime s | one-shot s (ctx / ctx+suffix) | transformers s (ctx / ctx+suffix) | "
             "vs one-shot (old / equal) | vs transformers (old / equal) | one-shot / transf. (equal) | "
             "earlier cap s (vs transf. equal) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append("| {} | {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {} | {} |".format(
            r["context_tokens"], r["chunk_tokens"], f(r["runtime_s"], ".4f"), f(r["engine_one_shot_s"], ".4f"),
            f(r["engine_one_shot_equal_s"], ".4f"), f(r["transformers_s"], ".4f"), f(r["transformers_equal_s"], ".4f"),
            f(r["vs_one_shot"], ".3f"), f(r["vs_one_shot_equal"], ".3f"), f(r["vs_transformers"], ".3f"),
            f(r["vs_transformers_equal"], ".3f"), f(r["one_shot_vs_transformers_equal"], ".3f"),
            (f(r["runtime_old_cap_s"], ".4f") + (" (" + f(r["old_cap_vs_transformers_equal"], ".3f") + ")"
                                                 if r["old_cap_vs_transformers_equal"] else ""))))
    md = "\n".join(lines) + "\n"
    with open(a.json, "w") as fh:
        json.dump(rows, fh, indent=1)
    with open(a.md, "w") as fh:
        fh.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
