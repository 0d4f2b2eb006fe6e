# Summary of a run_remote.sh folder: usage remote_summary.py FOLDER.
# Prints each record, and for each trace: load grants, their size, the
# union of load spans and the idle gaps between them (the remote tier
# answers grants in order: a span starts where the previous one ended).
import json, sys, os, glob
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trace_gaps import union  # noqa: E402
R = sys.argv[1]
for path in [os.path.join(R, d, 'restore.json') for d in ('', 'mtu9000', 'off', 'q4', 'lanes1')]:
    if not os.path.exists(path): continue
    print('==', os.path.relpath(path, R))
    for r in json.load(open(path))['records']:
        u = r.get('link_utilization')
        print(r['context_tokens'], r['tier'], r['batch'], r['policy'], '%.3f' % r['ttft_s'], 'util %.3f' % u if u else '',
              'bound %.3f' % r['bound_s'] if r.get('bound_s') else '', 'raw %.2f' % (r.get('link_raw_gbps') or 0), 'cells', r['cells_loaded'],
              'wire x%.3f' % r['wire_compression_ratio'] if r.get('wire_compression_ratio') else '',
              'eff %.2f Gbit/s' % r['effective_gbps'] if r.get('effective_gbps') else '',
              'vs best single %.3f' % (1 / r['ttft_vs_best_single']) if r.get('ttft_vs_best_single') else '')
for p in sorted(glob.glob(os.path.join(R, 'restore_trace_*.json'))):
    ev = json.load(open(p))['traceEvents']
    ld = sorted([e for e in ev if e.get('ph') == 'X' and e.get('cat') == 'load'], key=lambda e: e['ts'])
    if not ld: continue
    cells = [(e['args']['chunk_end'] - e['args']['chunk_begin']) * (e['args']['layer_end'] - e['args']['layer_begin']) for e in ld]
    spans = [(e['ts'], e['ts'] + e['dur']) for e in ld]
    merged = union(spans)  # the link's busy intervals
    busy, end = sum(t - s for s, t in merged), merged[-1][1]
    gaps = [b[0] - a[1] for a, b in zip(merged, merged[1:])]
    print(os.path.basename(p), 'loads', len(ld), 'cells', sum(cells), 'mean cells/grant %.1f' % (sum(cells) / len(ld)),
          'union ms %.1f' % (busy / 1e3), 'first %.1f last end %.1f ms' % (spans[0][0] / 1e3, end / 1e3),
          'gaps', len(gaps), 'gap ms %.2f' % (sum(gaps) / 1e3))
    # In-order answers: a span starts where the previous one ended, so grants
    # that land together show as one long span and several of ~0 ms.
    d = sorted(e['dur'] / 1e3 for e in ld)
    print('  span ms min %.2f median %.2f max %.2f, under 0.2 ms: %d of %d; ms per cell median %.2f' % (
        d[0], d[len(d) // 2], d[-1], sum(x < 0.2 for x in d), len(d),
        sorted(e['dur'] / 1e3 / c for e, c in zip(ld, cells))[len(ld) // 2]))
