#!/usr/bin/env python3
"""What torch's scaled_dot_product_attention runs for llama-3-8b's prefill,
and how fast, against kvflow's Hopper kernel in the same process (issue 19).

1. alone: sdpa (its default pick and each backend forced) and kvflow's
   attention_sm90 (through attention_shim.cu by ctypes) on
   the same tensors: 32 query / 8 KV heads, head_dim 128, causal, bf16, one
   layer; the median of --reps; the kernels the profiler saw for sdpa; the
   largest difference between kvflow's output and sdpa's.
2. under load: the same attention calls, each after two products of the
   size of llama-3-8b's gate/up projection at that length (the GPU at its
   power cap as in a forward), CUDA events around the attention only.
3. --forward: transformers' LlamaForCausalLM (random weights, bf16, sdpa,
   logits_to_keep=1) at each length: the median forward time, then one
   forward under torch.profiler: time per kernel, summed per name (the
   attention kernel's share of the forward).

  python3 sdpa_probe.py --lib libkvflow_attention.so --lengths 16640,33024 --json probe.json
"""
import argparse
import ctypes
import json
import os
import statistics
import sys

import torch
import torch.nn.functional as F

HEADS, KV_HEADS, HD = 32, 8, 128


def flops(s):
    return 4.0 * HD * HEADS * s * (s + 1) / 2.0


def timed(fn, reps, before=None):
    ts = []
    for _ in range(reps):
        if before:
            before()
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return statistics.median(ts), ts


def kernels_of(fn):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    out = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            k = out.setdefault(e.name, [0, 0.0])
            k[0] += 1
            k[1] += e.time_range.elapsed_us() / 1e6
    if not out:  # another profiler layout: its own table
        print(prof.key_averages().table(row_limit=12), flush=True)
    return sorted(([n, c, s] for n, (c, s) in out.items()), key=lambda r: -r[2])


def attention_part(lib, lengths, reps, records):
    import torch.nn.attention as A
    backends = {"flash": A.SDPBackend.FLASH_ATTENTION, "cudnn": A.SDPBackend.CUDNN_ATTENTION,
                "efficient": A.SDPBackend.EFFICIENT_ATTENTION}
    for s in lengths:
        torch.manual_seed(0)
        q = torch.randn(1, HEADS, s, HD, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, KV_HEADS, s, HD, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, KV_HEADS, s, HD, device="cuda", dtype=torch.bfloat16)
        kv = torch.stack([k[0], v[0]]).contiguous()  # [2][kv_heads][tokens][128]: one layer of a block
        q_rows = q[0].transpose(0, 1).contiguous()  # [tokens][heads * 128]
        out = torch.empty_like(q_rows)
        table = torch.tensor([kv.data_ptr(), s << 32], dtype=torch.int64, device="cuda")  # {data, start 0, tokens}
        w = torch.randn(4096, 2 * 14336, device="cuda", dtype=torch.bfloat16) * 0.01
        x = torch.randn(s, 4096, device="cuda", dtype=torch.bfloat16)
        load = lambda: (x @ w, x @ w)  # noqa: E731
        scale = 1.0 / HD ** 0.5
        calls = {}
        calls["sdpa default"] = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        kr = k.repeat_interleave(HEADS // KV_HEADS, dim=1)
        vr = v.repeat_interleave(HEADS // KV_HEADS, dim=1)
        calls["sdpa default, kv repeated"] = lambda: F.scaled_dot_product_attention(q, kr, vr, is_causal=True)
        for name, be in backends.items():
            def f(be=be):
                with A.sdpa_kernel([be]):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            calls["sdpa " + name] = f
        if lib is not None:
            def g():
                rc = lib.kvflow_attention_sm90(
                    ctypes.c_void_p(q_rows.data_ptr()), s, 0, ctypes.c_void_p(table.data_ptr()), 1, HEADS,
                    KV_HEADS, ctypes.c_float(scale), ctypes.c_void_p(out.data_ptr()),
                    ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
                if rc != 0:
                    raise RuntimeError(f"kvflow_attention_sm90: cuda error {rc}")
                return out
            calls["kvflow sm90"] = g
        ref = None
        for name, fn in calls.items():
            try:
                fn()
                torch.cuda.synchronize()
            except Exception as e:  # a backend that does not take these shapes
                print(f"{s:6d} {name:28s}: not available ({str(e).splitlines()[0][:120]})", flush=True)
                records.append({"length": s, "call": name, "error": str(e).splitlines()[0][:300]})
                continue
            alone, ts = timed(fn, reps)
            loaded, lts = timed(fn, reps, before=load)
            rec = {"length": s, "call": name, "alone_s": alone, "alone_tflops": flops(s) / alone / 1e12,
                   "loaded_s": loaded, "loaded_tflops": flops(s) / loaded / 1e12, "alone_all": ts, "loaded_all": lts}
            if name.startswith("sdpa"):
                rec["kernels"] = [r[0] for r in kernels_of(fn)][:4]
                if name == "sdpa default":
                    ref = fn()[0].transpose(0, 1).reshape(s, HEADS * HD).float()
            elif ref is not None:
                o = fn().float().reshape(s, HEADS * HD)
                rec["max_abs_diff_vs_sdpa"] = (o - ref).abs().max().item()
                rec["rel_l2_vs_sdpa"] = ((o - ref).norm() / ref.norm()).item()
            print(f"{s:6d} {name:28s}: alone {alone * 1e3:8.3f} ms {rec['alone_tflops']:6.1f} TFLOP/s, "
                  f"after products {loaded * 1e3:8.3f} ms {rec['loaded_tflops']:6.1f} TFLOP/s "
                  f"{rec.get('kernels', '')} {rec.get('rel_l2_vs_sdpa', '')}", flush=True)
            records.append(rec)
        calls.clear()
        torch.cuda.empty_cache()


def forward_part(lengths, reps, records):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import inspect
    from prefill_reference import PRESETS
    from transformers import LlamaConfig, LlamaForCausalLM
    vocab, h, inter, layers, heads, kvh, theta, _ = PRESETS["llama-3-8b"]
    kwargs = dict(vocab_size=vocab, hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kvh, max_position_embeddings=max(lengths),
                  rms_norm_eps=1e-5, tie_word_embeddings=False)
    rp = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192, "rope_theta": theta}
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:
        kwargs["rope_parameters"] = rp
    else:
        kwargs["rope_theta"] = theta
        kwargs["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
    cfg = LlamaConfig(**kwargs)
    cfg._attn_implementation = "sdpa"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.eval()
    for s in lengths:
        ids = ((torch.arange(s, device="cuda", dtype=torch.int64) * 2654435761 + 7) % vocab).unsqueeze(0)

        def fwd():
            with torch.no_grad():
                return model(input_ids=ids, use_cache=True, logits_to_keep=1)
        fwd()
        torch.cuda.synchronize()
        sec, ts = timed(fwd, reps)
        ks = kernels_of(fwd)
        total = sum(r[2] for r in ks)
        attn = [r for r in ks if any(t in r[0].lower() for t in ("flash", "fmha", "attention", "sdpa", "cudnn"))]
        print(f"transformers {s}: {sec:.4f} s (runs {[round(t, 4) for t in ts]}); profiled kernels {total:.4f} s",
              flush=True)
        for r in ks[:12]:
            print(f"  {r[2] * 1e3:9.2f} ms {r[1]:5d}x  {r[0][:150]}", flush=True)
        records.append({"length": s, "call": "transformers forward", "seconds": sec, "all": ts,
                        "profiled_kernel_s": total, "attention_kernels": attn, "top_kernels": ks[:20]})
    del model
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", help="libkvflow_attention.so (attention_shim.cu); without it sdpa only")
    ap.add_argument("--lengths", default="16640,33024")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--forward", action="store_true", help="also transformers' forward, profiled")
    ap.add_argument("--no-attention", action="store_true", help="skip the attention-alone part")
    ap.add_argument("--json", default="sdpa_probe.json")
    a = ap.parse_args()
    lengths = [int(x) for x in a.lengths.split(",")]
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "device": torch.cuda.get_device_name(0),
            "flags": {"flash": torch.backends.cuda.flash_sdp_enabled(),
                      "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                      "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                      "math": torch.backends.cuda.math_sdp_enabled()}}
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    print(json.dumps(info), flush=True)
    records = []
    lib = None
    if a.lib:
        lib = ctypes.CDLL(os.path.abspath(a.lib))
        lib.kvflow_attention_sm90.restype = ctypes.c_int
    try:
        if not a.no_attention:
            attention_part(lib, lengths, a.reps, records)
        if a.forward:
            forward_part(lengths, max(2, a.reps // 2), records)
    finally:
        with open(a.json, "w") as f:
            json.dump({"info": info, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
