#!/usr/bin/env python3
"""The remote tier's fetches over time, from a `kvflow bench` log run with
KVFLOW_LOG_LEVEL=debug (one "remote fetch" line per fetch).

Usage: fetch_timeline.py BENCH.log [FIRST_LINE LAST_LINE] [--list N]
FIRST_LINE/LAST_LINE (1-based, inclusive) pick one restore's lines, e.g.
between the bench's "[k/n] ..." progress lines. Prints the fetches' total
bytes and decoded rate, the first N fetches (when each was asked for, its
first piece landed and its last one; milliseconds from the first ask), and
the decoded rate in 20 ms bins, spreading each fetch's bytes evenly from
its first piece to its last: a restore that starts slow shows low bins
first. The times come from the log's millisecond stamps less the line's
own copy and answer times, so they are good to about a millisecond."""
import re
import sys

LINE = re.compile(
    r'\[(\d+):(\d+):([\d.]+)\].*remote fetch \d+ \((\d+) B, chunks (\d+)-(\d+).*'
    r'first piece ([\d.]+) ms after asking, last ([\d.]+) ms after the first, .* copied in ([\d.]+) ms')


def main():
    args = [a for a in sys.argv[1:]]
    show = 0
    if '--list' in args:
        i = args.index('--list')
        show = int(args[i + 1])
        del args[i:i + 2]
    lines = open(args[0]).read().split('\n')
    if len(args) >= 3:
        lines = lines[int(args[1]) - 1:int(args[2])]
    fetches = []  # (asked, first, last, bytes, chunks)
    for l in lines:
        m = LINE.search(l)
        if not m:
            continue
        stamp = (int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])) * 1000
        last = stamp - float(m[9])
        first = last - float(m[8])
        fetches.append((first - float(m[7]), first, last, int(m[4]), '%s-%s' % (m[5], m[6])))
    if not fetches:
        sys.exit('no "remote fetch" lines (run the bench with KVFLOW_LOG_LEVEL=debug)')
    fetches.sort()
    t0 = fetches[0][0]
    span = max(f[2] for f in fetches) - t0
    total = sum(f[3] for f in fetches)
    print('%d fetches, %.1f MB over %.1f ms: %.2f Gbit/s decoded' % (len(fetches), total / 1e6, span, total * 8 / span / 1e6))
    for asked, first, last, b, chunks in fetches[:show]:
        print('  asked %7.1f  first %7.1f  last %7.1f  %7.1f MB  chunks %s' % (asked - t0, first - t0, last - t0, b / 1e6, chunks))
    width = 20.0
    bins = [0.0] * (int(span / width) + 1)
    for _, first, last, b, _ in fetches:
        first, last = first - t0, last - t0
        d = max(last - first, 1e-3)
        for i in range(len(bins)):
            overlap = max(0.0, min((i + 1) * width, last) - max(i * width, first))
            bins[i] += b * overlap / d
    print('Gbit/s decoded per %.0f ms: %s' % (width, ' '.join('%.0f' % (x * 8 / width / 1e6) for x in bins)))


if __name__ == '__main__':
    main()
