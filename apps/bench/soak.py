#!/usr/bin/env python3
"""Load and soak tests of `kvflow serve` (CPU backend, tiny preset).

burst: N requests at once (each its own connection, max_tokens small)
against a server admitting --max-running + --max-waiting: every request is
answered (200, or 429 with Retry-After past the limit), the waiting queue
never exceeds its bound, RSS (sampled every 20 ms) stays bounded, the server
stays up, and its pool counters are back at their idle values afterwards.

soak: for --seconds, waves of requests with shared prefixes (so chunks are
stored and loaded), some streamed and dropped mid-stream, against a server
injecting faults at random (KVFLOW_FAULTS: disk read errors, truncated
files, full disk, duplicated completions, stuck tiers). Every request must
be answered (an injected stuck tier may end one with an error at its
deadline), the server must not crash, and at the end every pool counter is
back at its baseline. Writes a JSON result (--out).

Exit status 0 when every check holds, 1 otherwise (the failed checks are
printed and in the JSON).
"""

import argparse
import asyncio
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.request

POOLS = ["requests", "loads_in_flight", "disk_reads", "disk_writes", "host_leases", "staging_buffers", "open_fds"]
# Pools that may settle at a new level: staging spares are kept up to a cap,
# and the server's own sockets and files come and go with its threads.
SETTLING = {"staging_buffers": 64, "open_fds": 32}

FAULTS = "disk_read_error=0.05,disk_truncate=0.03,disk_write_full=0.05,duplicate_completion=0.3,tier_stall=0.02"


def start_server(kvflow, args, env_extra, log_path):
    env = dict(os.environ)
    env.update(env_extra)
    cmd = [kvflow, "--log-level", "error", "serve", "--preset", "tiny-test", "--backend", "cpu", "--port", "0",
           "--chunk-tokens", "16", "--threads", "1"] + args
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    url = None
    for line in proc.stdout:
        m = re.search(r"listening on (http://[0-9.]+:[0-9]+)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        proc.kill()
        raise SystemExit("kvflow serve did not start: see " + log_path)
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, url


def metrics(url):
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def pools(url):
    m = metrics(url)
    return {p: m.get('kvflow_pool{counter="%s"}' % p, float("nan")) for p in POOLS}, m


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def request(host, port, body, drop_after_events=None, timeout=120):
    """POSTs /v1/completions on a connection of its own; returns (status, headers, body text)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    data = json.dumps(body).encode()
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    await writer.drain()
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(b" ", 2)[1])
        headers = head.decode(errors="replace").lower()
        if drop_after_events is not None and status == 200:
            events = 0
            while events < drop_after_events:
                line = await asyncio.wait_for(reader.readline(), timeout)
                if not line:
                    break
                if line.startswith(b"data:"):
                    events += 1
            return status, headers, "dropped"
        rest = await asyncio.wait_for(reader.read(), timeout)
        return status, headers, rest.decode(errors="replace")
    finally:
        writer.close()


def sampler(pid, url, out, stop, waiting_bound):
    """Samples RSS every 20 ms and the waiting queue every 100 ms until stop is set."""
    n = 0
    while not stop.is_set():
        try:
            out["rss_peak"] = max(out.get("rss_peak", 0), rss_bytes(pid))
            if n % 5 == 0:
                w = metrics(url).get("kvflow_requests_waiting", 0)
                out["waiting_peak"] = max(out.get("waiting_peak", 0), w)
        except Exception as e:  # the checks below notice a dead server
            out["sample_error"] = str(e)
        n += 1
        time.sleep(0.02)


def baseline(url, seconds=30):
    """The pools once no request runs and every store is written."""
    end = time.time() + seconds
    while True:
        now, _ = pools(url)
        if (now["requests"] == 0 and now["disk_writes"] == 0 and now["loads_in_flight"] == 0) or time.time() > end:
            return now
        time.sleep(0.1)


def wait_idle(url, base, seconds=30):
    """Waits until every pool is back at `base` (SETTLING pools within their slack)."""
    end = time.time() + seconds
    now = None
    while time.time() < end:
        now, _ = pools(url)
        if all(now[p] <= base[p] + SETTLING.get(p, 0) and now[p] >= (0 if p in SETTLING else base[p]) for p in POOLS):
            return True, now
        time.sleep(0.2)
    return False, now


def prompt(rng, shared, length):
    head = shared[rng.randrange(len(shared))]
    return head + [rng.randrange(512) for _ in range(max(1, length - len(head)))]


def burst(args):
    proc, url = start_server(args.kvflow, ["--max-running", str(args.max_running), "--max-waiting",
                                           str(args.max_waiting), "--http-threads", str(args.http_threads)],
                             {}, args.log)
    host, port = url[len("http://"):].split(":")
    checks = {}
    result = {"mode": "burst", "requests": args.requests, "max_running": args.max_running,
              "max_waiting": args.max_waiting}
    try:
        rng = random.Random(1)
        # Warm-up: the pools' idle values with staging made and a chunk stored.
        asyncio.run(request(host, port, {"prompt": [rng.randrange(512) for _ in range(40)], "max_tokens": 2}))
        base = baseline(url)
        rss0 = rss_bytes(proc.pid)
        sample = {}
        stop = threading.Event()
        t = threading.Thread(target=sampler, args=(proc.pid, url, sample, stop, args.max_waiting))
        t.start()

        async def all_at_once():
            shared = [[rng.randrange(512) for _ in range(32)] for _ in range(4)]
            bodies = [{"prompt": prompt(rng, shared, 40), "max_tokens": 2, "temperature": 0}
                      for _ in range(args.requests)]
            return await asyncio.gather(*(request(host, port, b) for b in bodies), return_exceptions=True)

        t0 = time.time()
        answers = asyncio.run(all_at_once())
        wall = time.time() - t0
        stop.set()
        t.join()
        statuses = {}
        errors = []
        for a in answers:
            if isinstance(a, Exception):
                errors.append(repr(a))
                continue
            status, headers, body = a
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200 and '"choices"' not in body:
                errors.append("200 without choices")
            if status == 429 and "retry-after" not in headers:
                errors.append("429 without Retry-After")
        idle, after = wait_idle(url, base)
        result.update({"wall_s": round(wall, 2), "statuses": statuses, "errors": errors[:10],
                       "rss_before_mib": round(rss0 / 2**20, 1),
                       "rss_peak_mib": round(sample.get("rss_peak", 0) / 2**20, 1),
                       "waiting_peak": sample.get("waiting_peak", 0), "pools_base": base, "pools_after": after})
        checks["every request answered"] = not errors and sum(statuses.values()) == args.requests
        checks["only 200 and 429"] = set(statuses) <= {200, 429}
        checks["429 past the limit"] = statuses.get(429, 0) > 0
        checks["accepted ones answered"] = statuses.get(200, 0) >= args.max_running
        checks["waiting queue bounded"] = sample.get("waiting_peak", 0) <= args.max_waiting
        checks["rss bounded"] = sample.get("rss_peak", 0) - rss0 < args.rss_slack_mib * 2**20
        checks["server alive"] = proc.poll() is None
        checks["pools back at baseline"] = idle
    finally:
        stop_server(proc)
    return result, checks


def soak(args):
    env = {"KVFLOW_FAULTS": args.faults + ",seed=%d" % args.seed}
    proc, url = start_server(args.kvflow, ["--max-running", "8", "--max-waiting", "32", "--step-timeout-s", "2",
                                           "--host-tier-gb", "0.0002", "--disk-tier-gb", "0.002"], env, args.log)
    host, port = url[len("http://"):].split(":")
    rng = random.Random(args.seed)
    shared = [[rng.randrange(512) for _ in range(rng.choice([16, 48, 96]))] for _ in range(12)]
    statuses, failures, waves, rss_peak, answered, seen = {}, [], 0, 0, [], 0
    rss_timeline = []  # MiB, every 30 s: a leak climbs, a warm-up levels off
    answered_timeline = []  # requests answered at each of those samples
    checks = {}
    result = {"mode": "soak", "seconds": args.seconds, "faults": env["KVFLOW_FAULTS"]}
    try:
        asyncio.run(request(host, port, {"prompt": prompt(rng, shared, 60), "max_tokens": 2}))
        base = baseline(url)
        rss0 = rss_bytes(proc.pid)
        t0 = time.time()
        while time.time() - t0 < args.seconds and proc.poll() is None:
            async def wave():
                jobs, bodies = [], []
                for _ in range(rng.randrange(4, 40)):
                    stream = rng.random() < 0.3
                    body = {"prompt": prompt(rng, shared, rng.randrange(20, 160)), "max_tokens": rng.randrange(1, 12),
                            "temperature": 0, "stream": stream}
                    drop = rng.randrange(1, 3) if stream and rng.random() < 0.5 else None
                    jobs.append(request(host, port, body, drop))
                    bodies.append(body)
                return zip(await asyncio.gather(*jobs, return_exceptions=True), bodies)

            for a, body in asyncio.run(wave()):
                if isinstance(a, Exception):
                    failures.append(repr(a))
                    continue
                statuses[a[0]] = statuses.get(a[0], 0) + 1
                if a[0] not in (200, 429, 500):
                    failures.append("status %d: %s" % (a[0], a[2][:200]))
                if a[0] == 200 and not body["stream"]:
                    # A uniform sample of 400 answers over the whole run.
                    seen += 1
                    keep = (body, json.loads(a[2])["choices"][0]["token_ids"])
                    if len(answered) < 400:
                        answered.append(keep)
                    elif rng.randrange(seen) < 400:
                        answered[rng.randrange(400)] = keep
            waves += 1
            rss_peak = max(rss_peak, rss_bytes(proc.pid))
            if time.time() - t0 >= 30 * len(rss_timeline):
                rss_timeline.append(round(rss_bytes(proc.pid) / 2**20, 1))
                answered_timeline.append(sum(statuses.values()))
        idle, after = wait_idle(url, base, 60)
        _, m = pools(url)
        result.update({"wall_s": round(time.time() - t0, 1), "waves": waves, "statuses": statuses,
                       "failures": failures[:10], "rss_before_mib": round(rss0 / 2**20, 1),
                       "rss_peak_mib": round(rss_peak / 2**20, 1), "rss_mib_every_30s": rss_timeline,
                       "answered_every_30s": answered_timeline,
                       "pools_base": base, "pools_after": after,
                       "faults_injected": m.get('kvflow_pool{counter="faults_injected"}', 0),
                       "cached_chunks": m.get("kvflow_cached_chunks_total", 0),
                       "cells_loaded": m.get('kvflow_cells_total{how="loaded"}', 0)})
        checks["server alive"] = proc.poll() is None
        checks["every request answered"] = not failures
        if len(rss_timeline) >= 3 and answered_timeline[-1] > answered_timeline[1]:
            # After the first 30 s (tiers filled, threads and caches made).
            result["rss_growth_bytes_per_request_after_30s"] = round(
                (rss_timeline[-1] - rss_timeline[1]) * 2**20 / (answered_timeline[-1] - answered_timeline[1]), 1)
        checks["faults injected"] = result["faults_injected"] > 0
        checks["chunks loaded despite faults"] = result["cells_loaded"] > 0
        checks["rss bounded"] = rss_peak - rss0 < args.rss_slack_mib * 2**20
        checks["pools back at baseline"] = idle
    finally:
        stop_server(proc)
    # The oracle: the same prompts on a fault-free server that computes
    # everything give the same tokens.
    ref, ref_url = start_server(args.kvflow, ["--policy", "compute_only"], {}, args.log + ".ref")
    try:
        rhost, rport = ref_url[len("http://"):].split(":")
        mismatches = 0
        for body, tokens in answered:
            status, _, text = asyncio.run(request(rhost, rport, body))
            if status != 200 or json.loads(text)["choices"][0]["token_ids"] != tokens:
                mismatches += 1
        result.update({"compared_with_recompute": len(answered), "mismatches": mismatches})
        checks["output equals a full recompute"] = mismatches == 0 and len(answered) > 0
    finally:
        stop_server(ref)
    return result, checks


def stop_server(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["burst", "soak"])
    p.add_argument("--kvflow", required=True, help="the kvflow binary")
    p.add_argument("--requests", type=int, default=1000, help="burst: requests sent at once")
    p.add_argument("--max-running", type=int, default=8)
    p.add_argument("--max-waiting", type=int, default=64)
    p.add_argument("--http-threads", type=int, default=0, help="serve's connection threads (0: its default)")
    p.add_argument("--seconds", type=float, default=600, help="soak: how long")
    p.add_argument("--faults", default=FAULTS, help="soak: KVFLOW_FAULTS without the seed")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rss-slack-mib", type=float, default=512, help="largest RSS growth allowed")
    p.add_argument("--log", default="/tmp/kvflow-soak-serve.log", help="the server's stderr")
    p.add_argument("--out", help="write the result as JSON here")
    p.add_argument("--note", action="append", default=[], help="a line kept in the result's notes (repeatable)")
    args = p.parse_args()
    if not os.access(args.kvflow, os.X_OK):
        p.error("--kvflow %s is not an executable" % args.kvflow)
    # A burst holds a descriptor per connection on both sides (the server
    # inherits this limit): 1,024, a common default, is too few.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * args.requests + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    result, checks = burst(args) if args.mode == "burst" else soak(args)
    result["checks"] = checks
    result["ok"] = all(checks.values())
    result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.note:
        result["notes"] = args.note
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    for name, ok in checks.items():
        if not ok:
            print("FAILED: " + name, file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
