#!/usr/bin/env python3
"""PNG plots of `kvflow bench` restore results.

  python3 apps/bench/plot_restore.py RESULTS_DIR [--out DIR]

Reads RESULTS_DIR/restore.json (and every restore_trace_<policy>.json there or
named in it) and writes into DIR (default: RESULTS_DIR):

  ttft_vs_context_<tier>.png   batch-1 TTFT against context length (at the
                               suffix length most records have), one line
                               per policy, one panel per model (bars per policy
                               where a model has a single context length)
  ttft_vs_suffix_<tier>.png    batch-1 TTFT against the uncached suffix length,
                               for each model and context measured at several
  batch_<tier>.png             mean TTFT (solid) and p99 (light) per policy, for
                               batches > 1 and Poisson arrivals
  timeline_<name>.png          one batched restore (name: the trace file's,
                               restore_trace_<name>.json): per request, its compute
                               and load spans, its first token, where its
                               compute and load pointers met
  timeline_<name>_cells.png    chunk x layer grid of up to two requests: which
                               cells were computed and which loaded, and the
                               line where the two sides met

The traces themselves open in https://ui.perfetto.dev or chrome://tracing.
Needs matplotlib (pip install matplotlib).
"""
import argparse
import collections
import json
import pathlib
import re
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle
except ImportError:
    sys.exit("plot_restore: needs matplotlib; install it with `pip install matplotlib`")

# Fixed colours, so that a policy looks the same in every plot.
POLICIES = ["compute_only", "load_only", "bidirectional", "two_pointer", "oracle"]
POLICY_COLOR = dict(zip(POLICIES, ["tab:blue", "tab:orange", "tab:green", "tab:red", "0.25"]))
SPARE_COLORS = ["tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
COMPUTE_COLOR = "#4c72b0"
SOURCE_COLOR = {"host": "#55a868", "disk": "#dd8452"}  # load spans, by the tier read
OTHER_SOURCE = "#8172b3"


def policy_color(p):
    if p not in POLICY_COLOR:
        POLICY_COLOR[p] = SPARE_COLORS[(len(POLICY_COLOR) - len(POLICIES)) % len(SPARE_COLORS)]
    return POLICY_COLOR[p]


def policy_order(names):
    return sorted(set(names), key=lambda p: (POLICIES.index(p) if p in POLICIES else len(POLICIES), p))


def tier_label(t):
    t = str(t)
    if t.isdigit():
        return f"disk paced to {t} Gbit/s"
    return {"host": "pinned host memory", "disk": "local disk (O_DIRECT)"}.get(t, t)


def short_device(records):
    # "NVIDIA H100 80GB HBM3, kvflow: llama-3-8b (...) on cuda" -> "NVIDIA H100 80GB HBM3"
    devs = sorted({str(r.get("device", "")).split(", kvflow:")[0] for r in records} - {""})
    return ", ".join(devs) or "unknown device"


def ctx_label(n):
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def file_part(s):
    return re.sub(r"[^\w.-]+", "_", str(s))


def load_results(d):
    path = d / "restore.json"
    if not path.is_file():
        sys.exit(f"plot_restore: no restore.json in {d} (write one with `kvflow bench --out {d}`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        sys.exit(f"plot_restore: {path} is not JSON: {e}")
    traces = set()
    if isinstance(data, dict):  # newer benches: {"records": [...], "<...trace...>": names}
        records = data.get("records") or data.get("results") or []
        for key, v in data.items():
            if "trace" in key:
                traces.update([v] if isinstance(v, str) else v.values() if isinstance(v, dict) else v)
    else:
        records = data
    traces = {d / t for t in traces if isinstance(t, str)} | set(d.glob("restore_trace_*.json"))
    return [r for r in records if isinstance(r, dict) and "policy" in r], sorted(p for p in traces if p.is_file())


def arrival(r):
    return r.get("arrival") or "together"


def batch(r):
    return r.get("batch") or 1


def batch_one(records):
    """Batch-1 records of prompts submitted together, with a TTFT."""
    return [r for r in records if batch(r) == 1 and arrival(r) == "together" and r.get("ttft_s") is not None]


def main_suffix(records):
    """The suffix length most records have (256 on a tie): the context plots use it alone."""
    counts = collections.Counter(r.get("suffix_tokens") for r in records)
    return max(counts, key=lambda k: (counts[k], k == 256)) if counts else None


def policy_lines(ax, pts, xs_all, labels, xlabel):
    """One line per policy through pts[(policy, x)] over a log-2 x axis."""
    for p in policy_order(p for p, _ in pts):
        xs = [x for x in xs_all if (p, x) in pts]
        ax.plot(xs, [pts[p, x] for x in xs], marker="o", color=policy_color(p), label=p,
                linestyle="--" if p == "oracle" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs_all, labels)
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=8, title="policy", title_fontsize=8)


def plot_ttft_vs_context(records, out):
    single = batch_one(records)
    suffix = main_suffix(single)
    single = [r for r in single if r.get("suffix_tokens") == suffix]
    written = []
    for tier in sorted({str(r.get("tier")) for r in single}):
        rs = [r for r in single if str(r.get("tier")) == tier]
        models = sorted({r.get("model", "?") for r in rs})
        fig, axes = plt.subplots(1, len(models), figsize=(6.2 * len(models), 4.6), squeeze=False)
        for ax, model in zip(axes[0], models):
            # (policy, context) -> TTFT; a later record of the same point wins.
            pts = {(r["policy"], r.get("context_tokens") or 0): r["ttft_s"] for r in rs if r.get("model", "?") == model}
            pols = policy_order(p for p, _ in pts)
            ctxs = sorted({c for _, c in pts})
            if len(ctxs) > 1:
                policy_lines(ax, pts, ctxs, [ctx_label(c) for c in ctxs], "context (tokens, log scale)")
            else:
                ys = [pts[p, ctxs[0]] for p in pols]
                bars = ax.bar(range(len(pols)), ys, color=[policy_color(p) for p in pols])
                ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
                ax.set_xticks(range(len(pols)), pols, rotation=20, ha="right")
                ax.set_xlabel(f"policy (context {ctx_label(ctxs[0])} tokens)")
                ax.set_ylim(0, max(ys) * 1.15)
            ax.set_ylabel("TTFT (s)")
            ax.set_ylim(bottom=0)
            ax.grid(axis="y", alpha=0.3)
            ax.set_title(model)
        fig.suptitle(f"Batch-1 restore TTFT, cached prefix in {tier_label(tier)}, {suffix}-token suffix\n"
                     f"{short_device(rs)}", fontsize=11)
        fig.tight_layout()
        written.append(save(fig, out / f"ttft_vs_context_{file_part(tier)}.png"))
    return written


def plot_ttft_vs_suffix(records, out):
    """Batch-1 TTFT against the uncached suffix length, per tier, for every
    (model, context) measured at more than one suffix."""
    single = batch_one(records)
    written = []
    for tier in sorted({str(r.get("tier")) for r in single}):
        rs = [r for r in single if str(r.get("tier")) == tier]
        cases = sorted({(r.get("model", "?"), r.get("context_tokens") or 0) for r in rs})
        cases = [c for c in cases
                 if len({r.get("suffix_tokens") for r in rs if (r.get("model", "?"), r.get("context_tokens") or 0) == c}) > 1]
        if not cases:
            continue
        fig, axes = plt.subplots(1, len(cases), figsize=(6.2 * len(cases), 4.6), squeeze=False)
        for ax, (model, ctx) in zip(axes[0], cases):
            pts = {(r["policy"], r["suffix_tokens"]): r["ttft_s"] for r in rs
                   if r.get("model", "?") == model and (r.get("context_tokens") or 0) == ctx}
            sufs = sorted({s for _, s in pts})
            policy_lines(ax, pts, sufs, [str(x) for x in sufs], "uncached suffix (tokens, log scale)")
            ax.set_ylabel("TTFT (s)")
            ax.set_ylim(bottom=0)
            ax.grid(axis="y", alpha=0.3)
            ax.set_title(f"{model}, {ctx_label(ctx)} context")
        # Two title lines: one case is a narrow figure.
        fig.suptitle(f"Batch-1 restore TTFT against the uncached suffix\ncached prefix in {tier_label(tier)}, "
                     f"{short_device(rs)}", fontsize=11)
        fig.tight_layout()
        written.append(save(fig, out / f"ttft_vs_suffix_{file_part(tier)}.png"))
    return written


def scenario_label(r):
    s = f"{r.get('model', '?')}\nbatch {batch(r)}, ≤{ctx_label(r.get('context_tokens') or 0)} tok\n"
    if arrival(r) == "poisson":
        return s + f"Poisson {r.get('rate_per_s', '?')}/s"
    return s + "all at once"


def plot_batches(records, out):
    many = [r for r in records if (batch(r) > 1 or arrival(r) == "poisson") and r.get("ttft_s") is not None]
    written = []
    for tier in sorted({str(r.get("tier")) for r in many}):
        rs = [r for r in many if str(r.get("tier")) == tier]
        groups = list(dict.fromkeys(scenario_label(r) for r in rs))
        pts = {(scenario_label(r), r["policy"]): r for r in rs}
        pols = policy_order(r["policy"] for r in rs)
        width = 0.8 / len(pols)
        fig, ax = plt.subplots(figsize=(min(14, max(7, 0.6 * len(pols) * len(groups) + 3)), 4.8))
        top = 0
        for i, p in enumerate(pols):
            xs = [g + (i - (len(pols) - 1) / 2) * width for g in range(len(groups))]
            have = [(x, pts[groups[g], p]) for g, x in enumerate(xs) if (groups[g], p) in pts]
            p99 = [r.get("ttft_p99_s") or r["ttft_s"] for _, r in have]
            mean = [r["ttft_s"] for _, r in have]
            top = max([top] + p99)
            c = policy_color(p)
            light = ax.bar([x for x, _ in have], p99, width * 0.9, color=c, alpha=0.3, edgecolor=c)
            ax.bar_label(light, fmt="%.2f", fontsize=7, padding=1, color="0.35")
            bars = ax.bar([x for x, _ in have], mean, width * 0.9, color=c, label=p)
            ax.bar_label(bars, fmt="%.2f", fontsize=7, label_type="center", color="white")
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set_ylabel("TTFT (s)")
        ax.set_ylim(0, top * 1.1)
        ax.grid(axis="y", alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        handles += [Patch(color="0.5", label="solid: mean"), Patch(color="0.5", alpha=0.3, label="light: p99")]
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.set_title(f"Batched restore TTFT, cached prefixes in {tier_label(tier)}\n{short_device(rs)}", fontsize=10)
        fig.tight_layout()
        written.append(save(fig, out / f"batch_{file_part(tier)}.png"))
    return written


def load_trace(path):
    t = json.loads(path.read_text())
    meta = t.get("kvflow", {})
    spans, instants, names = collections.defaultdict(list), {}, {}
    for e in t.get("traceEvents", []):
        tid = e.get("tid", 0)
        if e.get("ph") == "X":
            kind = e.get("cat") or ("load" if tid % 2 else "compute")
            spans[tid // 2].append((kind, e.get("args", {}), e["ts"] / 1e6, e.get("dur", 0) / 1e6))
        elif e.get("ph") in ("i", "I") and ("meet" in e.get("name", "").lower() or "chunk" in e.get("args", {})):
            instants[e.get("args", {}).get("request", tid // 2)] = e["ts"] / 1e6
        elif e.get("ph") == "M" and e.get("name") == "thread_name" and tid % 2 == 0:
            names[tid // 2] = e.get("args", {}).get("name", "").replace(" compute", "")
    reqs = {r["id"]: r for r in meta.get("requests", []) if "id" in r}
    for rid in spans.keys() - reqs.keys():  # a trace without kvflow.requests: take what the spans say
        reqs[rid] = {"id": rid, "submit_s": min(s for _, _, s, _ in spans[rid])}
    # Spans and submits should share one clock; if they plainly do not, line the first span up with the first submit.
    first_span = min((s for sp in spans.values() for _, _, s, _ in sp), default=0)
    first_submit = min((r.get("submit_s") or 0 for r in reqs.values()), default=0)
    longest = max((r.get("ttft_s") or 0 for r in reqs.values()), default=0)
    if not first_submit - 1e-3 <= first_span <= first_submit + longest + 1:
        print(f"plot_restore: {path.name}: spans start at {first_span:.3f} s but the first submit is at "
              f"{first_submit:.3f} s; aligning them", file=sys.stderr)
        shift = first_span - first_submit
        spans = {k: [(a, b, s - shift, d) for a, b, s, d in v] for k, v in spans.items()}
        spans = collections.defaultdict(list, spans)
        instants = {k: t - shift for k, t in instants.items()}
    for r in reqs.values():
        r.setdefault("name", names.get(r["id"], f"req {r['id']}"))
    return meta, sorted(reqs.values(), key=lambda r: (r.get("submit_s") or 0, r["id"])), spans, instants


def meet_time(req, spans, instants):
    """When the request's pointers met: its meet instant, else the end of the grant holding the meet cell."""
    if req["id"] in instants:
        return instants[req["id"]]
    m = req.get("meet")
    if not m:
        return None
    ends = [s + d for _, a, s, d in spans if a.get("chunk_begin", -1) <= m["chunk"] < a.get("chunk_end", -1)
            and a.get("layer_begin", -1) <= m["layer"] < a.get("layer_end", -1)]
    return max(ends) if ends else None


def meet_text(req):
    m = req.get("meet")
    return f"met at chunk {m['chunk']}, layer {m['layer']}" if m else "pointers did not meet"


def plot_timeline(path, out):
    meta, reqs, spans, instants = load_trace(path)
    if not reqs:
        print(f"plot_restore: {path.name} has no spans; skipped", file=sys.stderr)
        return []
    policy = meta.get("policy") or path.stem.replace("restore_trace_", "")
    # Named after the trace file, so that traces of several batches of one
    # policy (restore_trace_b16_two_pointer.json) keep their own plots.
    name = ("timeline_" + path.stem[len("restore_trace_"):] if path.stem.startswith("restore_trace_")
            else f"timeline_{file_part(policy)}")
    t0 = min(r.get("submit_s") or 0 for r in reqs)
    fig, ax = plt.subplots(figsize=(11, 1.5 + 0.62 * len(reqs)))
    sources, right = set(), 0
    for row, r in enumerate(reqs):
        lanes = {"compute": [], "load": []}
        for kind, a, s, d in spans[r["id"]]:
            src = a.get("source", "gpu")
            lanes[kind if kind in lanes else "load"].append(((s - t0, d), COMPUTE_COLOR if kind == "compute"
                                                             else SOURCE_COLOR.get(src, OTHER_SOURCE)))
            sources.add(src if kind != "compute" else None)
            right = max(right, s + d - t0)
        for lane, y in (("compute", row - 0.38), ("load", row + 0.02)):
            if lanes[lane]:
                ax.broken_barh([b for b, _ in lanes[lane]], (y, 0.36), facecolors=[c for _, c in lanes[lane]])
        sub = (r.get("submit_s") or t0) - t0
        ax.plot([sub, sub], [row - 0.42, row + 0.42], color="k", lw=1)
        label_x = sub
        mt = meet_time(r, spans[r["id"]], instants)
        if mt is not None:
            ax.plot(mt - t0, row, "D", ms=7, mfc="gold", mec="k", zorder=5)
            label_x = max(label_x, mt - t0)
        if r.get("ttft_s") is not None:
            ax.plot(sub + r["ttft_s"], row, "*", ms=13, mfc="red", mec="k", zorder=6)
            label_x = max(label_x, sub + r["ttft_s"])
        right = max(right, label_x)
        ttft = f"TTFT {r['ttft_s']:.3f} s, " if r.get("ttft_s") is not None else ""
        ax.annotate(ttft + meet_text(r), (label_x, row), xytext=(10, 0), textcoords="offset points", va="center",
                    fontsize=8)
    ax.set_xlim(0, right * 1.4)
    ax.set_ylim(len(reqs) - 0.5, -0.5)
    ax.set_yticks(range(len(reqs)), [f"{r['name']}" + (f"\n{r['prompt_tokens']} tok" if "prompt_tokens" in r
                                                         and "tok" not in r["name"] else "") for r in reqs],
                  fontsize=8)
    ax.set_xlabel("time since the first submit (s); per request: compute lane above, load lane below")
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(color=COMPUTE_COLOR, label="compute (GPU)")]
    handles += [Patch(color=SOURCE_COLOR.get(s, OTHER_SOURCE), label=f"load from {s}") for s in sorted(sources - {None})]
    handles += [plt.Line2D([], [], color="k", lw=1, label="submit"),
                plt.Line2D([], [], ls="", marker="D", mfc="gold", mec="k", label="pointers met"),
                plt.Line2D([], [], ls="", marker="*", ms=11, mfc="red", mec="k", label="first token")]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(f"Batched restore, {policy}: {meta.get('model', '?')}, cached prefixes in "
                 f"{tier_label(meta.get('tier', '?'))}", fontsize=10)
    fig.tight_layout()
    written = [save(fig, out / f"{name}.png")]
    if any("chunk_end" in a for sp in spans.values() for _, a, _, _ in sp):
        written.append(plot_cells(meta, policy, reqs, spans, out, name))
    else:
        print(f"plot_restore: {path.name}: spans carry no chunk/layer args; no cells plot", file=sys.stderr)
    return written


def plot_cells(meta, policy, reqs, spans, out, name):
    # The longest prompts whose pointers met show the split best; fall back to the longest.
    chosen = sorted(reqs, key=lambda r: (r.get("meet") is None, -(r.get("chunks") or 0), r["id"]))[:2]
    codes = {"compute": 1, "host": 2, "disk": 3}
    cmap = ListedColormap(["white", COMPUTE_COLOR, SOURCE_COLOR["host"], SOURCE_COLOR["disk"], OTHER_SOURCE])
    fig, axes = plt.subplots(1, len(chosen), figsize=(6.5 * len(chosen), 4.8), squeeze=False)
    missing = False
    for ax, r in zip(axes[0], chosen):
        sp = spans[r["id"]]
        layers = int(meta.get("layers") or max(a.get("layer_end", 1) for _, a, _, _ in sp))
        chunks = int(r.get("chunks") or max(a.get("chunk_end", 1) for _, a, _, _ in sp))
        grid = [[0] * chunks for _ in range(layers)]  # [layer][chunk]: 0 no span, 1 computed, 2.. loaded by source
        for kind, a, _, _ in sp:
            code = 1 if kind == "compute" else codes.get(a.get("source"), 4)
            for layer in range(a.get("layer_begin", 0), min(a.get("layer_end", 0), layers)):
                for c in range(a.get("chunk_begin", 0), min(a.get("chunk_end", 0), chunks)):
                    grid[layer][c] = code
        missing = missing or any(0 in row for row in grid)
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=4, origin="lower", aspect="auto", interpolation="nearest",
                  extent=(0, chunks, 0, layers))
        cached = r.get("cached_chunks", chunks)
        # The meeting line: every edge between a computed and a loaded cell of the cached prefix.
        kind = [[min(v, 2) for v in row] for row in grid]  # 0 no span, 1 computed, 2 loaded
        edges, n = [], min(cached, chunks)
        for layer in range(layers):
            for c in range(n):
                if c + 1 < n and {kind[layer][c], kind[layer][c + 1]} == {1, 2}:
                    edges.append([(c + 1, layer), (c + 1, layer + 1)])
                if layer + 1 < layers and {kind[layer][c], kind[layer + 1][c]} == {1, 2}:
                    edges.append([(c, layer + 1), (c + 1, layer + 1)])
        ax.add_collection(LineCollection(edges, colors="gold", linewidths=2.5))
        if cached < chunks:
            ax.axvline(cached, color="k", ls="--", lw=1)
            ax.text(cached, layers * 1.01, "cached | suffix", fontsize=8, va="bottom", ha="center")
        m = r.get("meet")
        if m:
            ax.add_patch(Rectangle((m["chunk"], m["layer"]), 1, 1, fill=False, ec="red", lw=2))
        ax.set_xlabel(f"chunk ({meta.get('chunk_tokens', '?')} tokens each)")
        ax.set_ylabel("layer")
        ax.set_title(f"{r['name']}: {meet_text(r)}", fontsize=10, pad=14)
    handles = [Patch(color=COMPUTE_COLOR, label="computed"), Patch(color=SOURCE_COLOR["host"], label="loaded from host"),
               Patch(color=SOURCE_COLOR["disk"], label="loaded from disk"),
               plt.Line2D([], [], color="gold", lw=2.5, label="where compute met load"),
               Patch(fill=False, ec="red", lw=2, label="meet cell")]
    if missing:
        handles.append(Patch(fc="white", ec="0.5", label="in no span"))
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=len(handles))
    fig.suptitle(f"Cells of one batched restore, {policy} ({meta.get('model', '?')}, "
                 f"{tier_label(meta.get('tier', '?'))})", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save(fig, out / f"{name}_cells.png")


def save(fig, path):
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results_dir", type=pathlib.Path, help="folder with restore.json (kvflow bench --out)")
    ap.add_argument("--out", type=pathlib.Path, help="folder for the PNGs (default: RESULTS_DIR)")
    args = ap.parse_args()
    records, traces = load_results(args.results_dir)
    out = args.out or args.results_dir
    out.mkdir(parents=True, exist_ok=True)
    written = plot_ttft_vs_context(records, out) + plot_ttft_vs_suffix(records, out) + plot_batches(records, out)
    for t in traces:
        try:
            written += plot_timeline(t, out)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            print(f"plot_restore: cannot plot {t}: {e!r}", file=sys.stderr)
    if not written:
        sys.exit(f"plot_restore: nothing to plot in {args.results_dir / 'restore.json'} ({len(records)} records)")
    for p in written:
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
