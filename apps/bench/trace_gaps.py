#!/usr/bin/env python3
"""Where a batch-1 restore's time goes, from a `kvflow bench` trace.

Usage: trace_gaps.py TRACE.json [RESTORE.json]
Reads one restore_trace_<policy>.json (--trace-batch 1) and prints, in
milliseconds from the submit: when the first compute and the first load
started, the GPU's busy time and its idle gaps between its first and last
cell, the link's busy time (union of load spans), the suffix's compute, and
the tail from the last cell to the first token. With RESTORE.json (the same
run's records) it adds the point's bound_s, so the gap to the bound can be
read as the sum of these parts."""
import json
import sys


def union(spans):
    """Merged [start, end) intervals of `spans`, sorted."""
    out = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def main():
    t = json.load(open(sys.argv[1]))
    meta = t["kvflow"]
    req = meta["requests"][0]
    cached = req["cached_chunks"]
    comp, load, suffix = [], [], []
    for ev in t["traceEvents"]:
        if ev.get("ph") != "X":
            continue
        span = (ev["ts"] / 1e3, (ev["ts"] + ev["dur"]) / 1e3)
        if ev["cat"] == "compute":
            comp.append(span)
            if ev["args"]["chunk_begin"] >= cached:
                suffix.append(span)
        else:
            load.append(span)
    ttft = req["ttft_s"] * 1e3
    gpu, link = union(comp), union(load)
    busy = lambda u: sum(e - s for s, e in u)
    gaps = [(gpu[i][1], gpu[i + 1][0]) for i in range(len(gpu) - 1)]
    big = sorted(gaps, key=lambda g: g[1] - g[0], reverse=True)[:5]
    last = max([e for _, e in comp + load] or [0])
    print(f"{meta['policy']} tier {meta['tier']} chunk {meta['chunk_tokens']} ctx {meta['context_tokens']}: "
          f"TTFT {ttft:.1f} ms, cells computed {req['cells_computed']} loaded {req['cells_loaded']}")
    if comp:
        print(f"  first compute at {min(s for s, _ in comp):.1f} ms, GPU busy {busy(gpu):.1f} ms over "
              f"[{gpu[0][0]:.1f}, {gpu[-1][1]:.1f}], idle inside {sum(e - s for s, e in gaps):.1f} ms in "
              f"{len(gaps)} gaps; largest: " + ", ".join(f"{e - s:.1f} at {s:.1f}" for s, e in big))
    if load:
        print(f"  first load at {min(s for s, _ in load):.1f} ms, link busy {busy(link):.1f} ms over "
              f"[{link[0][0]:.1f}, {link[-1][1]:.1f}], {len(load)} load grants")
    if suffix:
        su = union(suffix)
        print(f"  suffix compute {busy(su):.1f} ms over [{su[0][0]:.1f}, {su[-1][1]:.1f}]")
    print(f"  last cell done at {last:.1f} ms, first token at {ttft:.1f} ms: tail {ttft - last:.1f} ms")
    if len(sys.argv) > 2:
        for r in json.load(open(sys.argv[2]))["records"]:
            if (r["batch"] == 1 and r["policy"] == meta["policy"] and r["tier"] == meta["tier"]
                    and r.get("bound_s")):
                print(f"  point: median TTFT {r['ttft_s'] * 1e3:.1f} ms, bound {r['bound_s'] * 1e3:.1f} ms "
                      f"({r['vs_bound']:.3f}x)")


if __name__ == "__main__":
    main()
