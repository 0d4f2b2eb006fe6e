#!/usr/bin/env python3
"""GPU milliseconds per cell (chunk x layer), by chunk, from `kvflow bench`
Chrome traces (restore_trace_<policy>.json, batch 1).

Usage: cell_costs.py TRACE.json [TRACE.json ...]
A compute grant of w chunks and n layers that took d ms is counted as d / w
ms for each of its chunks over n cells: so a policy's cells can be set
beside compute_only's from the same run (the bound rests on those)."""
import collections
import json
import sys


def main():
    for path in sys.argv[1:]:
        t = json.load(open(path))
        ev = [e for e in t['traceEvents'] if e.get('ph') == 'X' and e.get('cat') == 'compute']
        per = collections.defaultdict(lambda: [0.0, 0])  # chunk -> [ms, cells]
        for e in ev:
            a = e['args']
            width = a['chunk_end'] - a['chunk_begin']
            for c in range(a['chunk_begin'], a['chunk_end']):
                per[c][0] += e['dur'] / 1000 / width
                per[c][1] += a['layer_end'] - a['layer_begin']
        busy = sum(e['dur'] for e in ev) / 1000
        print('%s: %s, %d compute grants, %.1f ms of GPU' % (path, t['kvflow']['policy'], len(ev), busy))
        print('  ' + ' '.join('c%d %.3f' % (c, per[c][0] / per[c][1]) for c in sorted(per)))


if __name__ == '__main__':
    main()
