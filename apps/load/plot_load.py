#!/usr/bin/env python3
"""PNG plot of a `kvflow load` report.

  python3 apps/load/plot_load.py REPORT.json [--out PLOT.png]

Reads the JSON report `kvflow load --out REPORT.json` writes and draws one
figure of four panels (default: REPORT.png beside it):

  TTFT over the run     each completed request's TTFT at its send time,
                        coloured by turn (failed requests as red crosses)
  TTFT by turn          median and mean TTFT of each turn index, so a
                        session's later turns compare with its first
  latency CDFs          TTFT and E2EL distributions, with p90 and p99 marked
  inter-token latency   histogram of every gap between content chunks

`kvflow load` runs this itself when python3 can import matplotlib.
Needs matplotlib (pip install matplotlib).
"""
import argparse
import json
import sys
from pathlib import Path


def cdf(ax, values, label):
    if not values:
        return
    xs = sorted(values)
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step(xs, ys, where="post", label=label)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path, help="JSON report of kvflow load --out")
    ap.add_argument("--out", type=Path, help="PNG to write (default: the report with .png)")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_load: needs matplotlib; install it with `pip install matplotlib`")
    try:
        rep = json.loads(args.report.read_text())
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"plot_load: cannot read {args.report}: {e}")
    reqs = rep.get("requests")
    if not isinstance(reqs, list):
        sys.exit(f"plot_load: {args.report} has no \"requests\" (write it with `kvflow load --out`)")
    out = args.out or args.report.with_suffix(".png")

    ok = [r for r in reqs if r.get("ok")]
    failed = [r for r in reqs if not r.get("ok")]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    title = rep.get("label") or Path(str(rep.get("scenario") or rep.get("trace") or "")).name
    fig.suptitle(f"kvflow load: {title} -> {rep.get('model_id', '?')}   "
                 f"{rep.get('completed', 0)} ok, {rep.get('failed', 0)} failed, "
                 f"{rep.get('request_throughput', 0):.2f} req/s, "
                 f"median TTFT {rep.get('median_ttft_ms', 0):.1f} ms, p99 {rep.get('p99_ttft_ms', 0):.1f} ms")

    ax = axes[0][0]
    turns = sorted({r.get("turn", 0) for r in ok})
    cmap = plt.get_cmap("viridis", max(len(turns), 2))
    for i, t in enumerate(turns):
        rs = [r for r in ok if r.get("turn", 0) == t]
        ax.scatter([r["start_ms"] / 1000 for r in rs], [r["ttft_ms"] for r in rs], s=12, color=cmap(i),
                   label=f"turn {t}" if len(turns) > 1 else "TTFT")
    if failed:
        ax.scatter([r["start_ms"] / 1000 for r in failed], [0] * len(failed), marker="x", color="red",
                   label=f"failed ({len(failed)})")
    ax.set_xlabel("sent at (s)")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("TTFT over the run")
    ax.legend(fontsize=7, ncol=2)

    ax = axes[0][1]
    by_turn = rep.get("by_turn") or []
    if by_turn:
        xs = [t["turn"] for t in by_turn]
        ax.bar([x - 0.2 for x in xs], [t["median_ttft_ms"] for t in by_turn], width=0.4, label="median")
        ax.bar([x + 0.2 for x in xs], [t["mean_ttft_ms"] for t in by_turn], width=0.4, label="mean")
        for t in by_turn:
            ax.annotate(f"{t['completed']} req\n{t['mean_prompt_tokens']:.0f} tok", (t["turn"], t["mean_ttft_ms"]),
                        ha="center", va="bottom", fontsize=7)
        ax.set_xticks(xs)
        ax.legend(fontsize=8)
    ax.set_xlabel("turn (0: a session's first request)")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("TTFT by turn")

    ax = axes[1][0]
    cdf(ax, [r["ttft_ms"] for r in ok], "TTFT")
    cdf(ax, [r["e2el_ms"] for r in ok], "E2EL")
    for key, style in (("p90", ":"), ("p99", "--")):
        for metric in ("ttft", "e2el"):
            v = rep.get(f"{key}_{metric}_ms")
            if v:
                ax.axvline(v, linestyle=style, linewidth=0.8, color="gray")
    ax.set_xlabel("ms (dotted: p90, dashed: p99)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("latency CDFs")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    itls = [v for r in ok for v in r.get("itl_ms", [])]
    if itls:
        ax.hist(itls, bins=40)
        ax.axvline(rep.get("median_itl_ms", 0), color="black", linewidth=0.8, label="median")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no inter-token gaps (not streamed?)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("ITL (ms)")
    ax.set_ylabel("gaps")
    ax.set_title(f"inter-token latency (median TPOT {rep.get('median_tpot_ms', 0):.1f} ms)")

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"plot_load: wrote {out}")


if __name__ == "__main__":
    main()
