#!/usr/bin/env python3
"""The transformers side of the prefill benchmark, and the merge of results.

Runs LlamaForCausalLM (random weights, bf16, --attn attention: sdpa unless
told; auto takes flash_attention_2 where flash_attn is installed, torch.no_grad,
use_cache=True, logits_to_keep=1) on the same shapes as kvflow_prefill_bench
and times compute-only prefill with CUDA events (warmup, then the median of
timed runs). Merges kvflow_prefill_bench's JSON records with its own into
prefill.json and a markdown table.

  python3 prefill_reference.py --kvflow kvflow.json --json prefill.json --md prefill.md
"""
import argparse
import importlib.util
import inspect
import json
import statistics
import sys

PRESETS = {
    # name: vocab, hidden, intermediate, layers, heads, kv_heads, rope_theta, llama3 scaling
    "llama-2-7b": (32000, 4096, 11008, 32, 32, 32, 10000.0, False),
    "llama-3-8b": (128256, 4096, 14336, 32, 32, 8, 500000.0, True),
    "llama-2-13b": (32000, 5120, 13824, 40, 40, 40, 10000.0, False),
}


def prefill_flops(name, s):
    vocab, h, inter, layers, heads, kvh, _, _ = PRESETS[name]
    hd = h // heads
    q, kv = heads * hd, kvh * hd
    per_token = h * (q + 2 * kv) + q * h + 3.0 * h * inter
    return 2.0 * s * layers * per_token + 2.0 * 2.0 * layers * q * s * (s + 1) / 2.0 + 2.0 * h * vocab


def attention_impl(asked):
    """The transformers attention implementation to use for --attn."""
    if asked != "auto":
        return asked
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "sdpa"


def run_transformers(models, lengths, warmup, reps, attn="sdpa"):
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    device_name = torch.cuda.get_device_name(0)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {device_name}", flush=True)
    records = []
    for name in models:
        vocab, h, inter, layers, heads, kvh, theta, llama3 = PRESETS[name]
        kwargs = dict(vocab_size=vocab, hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kvh,
                      max_position_embeddings=max(max(lengths), 4096), rms_norm_eps=1e-5,
                      tie_word_embeddings=False)
        scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}
        if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:  # transformers 5
            rp = dict(scaling) if llama3 else {"rope_type": "default"}
            rp["rope_theta"] = theta
            kwargs["rope_parameters"] = rp
        else:
            kwargs["rope_theta"] = theta
            if llama3:
                kwargs["rope_scaling"] = scaling
        cfg = LlamaConfig(**kwargs)
        cfg._attn_implementation = attn
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg)
        torch.set_default_dtype(torch.float32)
        model.eval()
        print(f"{name}: attn {model.config._attn_implementation}, dtype {next(model.parameters()).dtype}", flush=True)
        for s in lengths:
            ids = (torch.arange(s, device="cuda", dtype=torch.int64) * 2654435761 + 7) % vocab
            ids = ids.unsqueeze(0)

            def forward():
                with torch.no_grad():
                    try:
                        return model(input_ids=ids, use_cache=True, logits_to_keep=1)
                    except TypeError:
                        return model(input_ids=ids, use_cache=True, num_logits_to_keep=1)

            times = []
            for r in range(warmup + reps):
                start = torch.cuda.Event(enable_timing=True)
                stop = torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                out = forward()
                stop.record()
                torch.cuda.synchronize()
                del out
                if r >= warmup:
                    times.append(start.elapsed_time(stop) / 1e3)
            sec = statistics.median(times)
            tf = prefill_flops(name, s) / sec / 1e12
            print(f"transformers {name:12s} {s:8d} {sec:10.4f} s {tf:8.1f} TFLOP/s", flush=True)
            records.append({"model": name, "context_tokens": s, "impl": "transformers", "seconds": sec,
                            "tflops": tf, "device": device_name, "attn": model.config._attn_implementation})
        del model
        torch.cuda.empty_cache()
    return records


def markdown(records):
    rows = {}
    for r in records:
        key = (r["model"], r["context_tokens"])
        rows.setdefault(key, {})
        if r["impl"] == "kvflow":
            best = rows[key].get("kvflow")
            if best is None or r["seconds"] < best["seconds"]:
                rows[key]["kvflow"] = r
        else:
            rows[key]["transformers"] = r
    device = records[0]["device"] if records else "?"
    attn = sorted({r.get("attn", "sdpa") for r in records if r["impl"] == "transformers"}) or ["sdpa"]
    lines = [f"# Prefill, compute only ({device})", "",
             "Random weights, bf16. kvflow: cuda_engine (weights made on the device), best of one shot (chunk 0) "
             "and chunked; transformers: LlamaForCausalLM, " + "/".join(attn) + ", use_cache=True, logits_to_keep=1. Median of timed "
             "runs after a warmup. TFLOP/s = model FLOPs (projections, MLP, causal attention, one logits row) / time.",
             "", "| model | tokens | kvflow s | chunk | kvflow TFLOP/s | transformers s | transformers TFLOP/s | "
             "kvflow / transformers time |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (model, s), v in sorted(rows.items()):
        k, t = v.get("kvflow"), v.get("transformers")
        ratio = f"{k['seconds'] / t['seconds']:.3f}" if k and t else "-"
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
            model, s, f"{k['seconds']:.4f}" if k else "-", k.get("chunk_tokens", 0) if k else "-",
            f"{k['tflops']:.1f}" if k else "-", f"{t['seconds']:.4f}" if t else "-",
            f"{t['tflops']:.1f}" if t else "-", ratio))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="llama-3-8b,llama-2-7b")
    ap.add_argument("--lengths", default="4096,8192,16384,32768")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "flash_attention_2", "eager", "auto"],
                    help="transformers attention; auto: flash_attention_2 where flash_attn is installed, else sdpa")
    ap.add_argument("--kvflow", help="kvflow_prefill_bench --json output to merge")
    ap.add_argument("--skip-run", action="store_true", help="only merge existing records (--previous)")
    ap.add_argument("--previous", help="transformers records from an earlier run to merge")
    ap.add_argument("--json", default="prefill.json")
    ap.add_argument("--md", default="prefill.md")
    a = ap.parse_args()
    records = []
    if a.kvflow:
        with open(a.kvflow) as f:
            records += json.load(f)
    if a.previous:
        with open(a.previous) as f:
            records += [r for r in json.load(f) if r["impl"] == "transformers"]
    if not a.skip_run:
        records += run_transformers(a.models.split(","), [int(x) for x in a.lengths.split(",")], a.warmup, a.reps,
                                    attention_impl(a.attn))
    with open(a.json, "w") as f:
        json.dump(records, f, indent=1)
    md = markdown(records)
    with open(a.md, "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
