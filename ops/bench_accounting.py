#!/usr/bin/env python3
"""Accounted shares per second: batched writes against one write per share.

Starts its own redis-server (free port, temporary directory, AOF with
appendfsync everysec, as docs/redis.md recommends for production), then
pushes synthetic accepted shares through the real write path (the
journal thread's append, then the Redis thread's Lua apply script, here
one after the other on one thread):

* batched: the shares of one flush interval in one batch;
* per share: every share its own batch (one journal append and one
  script call per share), what a sink writing "as shares come" would do.

Also times the reactor-side cost of the sink call and of a block's window
snapshot over a large window.

    .venv/bin/python ops/bench_accounting.py [--shares N] [--workers W]
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from hashcoop.pool.accounting.journal import Journal  # noqa: E402
from hashcoop.pool.accounting.keys import Keys  # noqa: E402
from hashcoop.pool.accounting.model import Collector  # noqa: E402
from hashcoop.pool.accounting.ops import Settings  # noqa: E402
from hashcoop.pool.accounting.service import AccountingSink  # noqa: E402
from hashcoop.pool.accounting.writer import RedisWriter, append, redis_client  # noqa: E402
from hashcoop.pool.core.events import ShareAccepted  # noqa: E402
from hashcoop.pool.tools.demo import free_port  # noqa: E402


def start_redis(d: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--save", "",
                          "--appendonly", "yes", "--appendfsync", "everysec"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    c = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            c.ping()
            return p, url
        except redis.ConnectionError:
            time.sleep(0.02)
    raise SystemExit("redis-server did not start")


def make_shares(n: int, workers: int, seed: int = 1, t0: float = 1.7e9, rate: float = 1000.0) -> list[ShareAccepted]:
    rnd = random.Random(seed)
    addrs = [f"bcrt1q{'%038x' % rnd.getrandbits(152)}" for _ in range(max(1, workers // 4))]
    names = [(addrs[i % len(addrs)], f"rig{i}") for i in range(workers)]
    out = []
    for i in range(n):
        a, w = names[rnd.randrange(workers)]
        d = rnd.choice([1024.0, 2048.0, 4096.0, 16384.0])
        out.append(ShareAccepted(time=t0 + i / rate, address=a, worker=w, difficulty=d, share_difficulty=d * rnd.expovariate(1.0) + d,
                                 job_id=f"{i // 5000:08x}", height=900000, hash=f"{rnd.getrandbits(256):064x}",
                                 network_difficulty=1.2e14, port=3333, ip="10.0.0.2"))
    return out


def writer(url: str, jdir: Path, prefix: str) -> RedisWriter:
    w = RedisWriter(partial(redis_client, url), Keys(prefix), Settings())
    w.journal = Journal(jdir)
    return w


def run(url: str, jdir: Path, shares: list[ShareAccepted], batch_size: int, prefix: str) -> float:
    """The journal thread's and the Redis thread's work, one after the other."""
    w = writer(url, jdir, prefix)
    c = Collector()
    counter = 0
    start = time.perf_counter()
    for i in range(0, len(shares), batch_size):
        for s in shares[i:i + batch_size]:
            c.add_share(s)
        counter += 1
        r = w.process([append(w.journal, c.take("bench", counter, shares[i].time))])
        if r.errors:
            raise SystemExit(f"write failed: {r.error}")
    elapsed = time.perf_counter() - start
    w.close([], 5)
    w.journal.close()
    return len(shares) / elapsed


def sink_cost(shares: list[ShareAccepted]) -> float:
    c = Collector()
    sink = AccountingSink(c)
    start = time.perf_counter()
    for s in shares:
        sink.share_accepted(s)
    return (time.perf_counter() - start) / len(shares)


def snapshot_cost(url: str, jdir: Path, window_shares: int, workers: int) -> tuple[float, int]:
    """Time of the batch that carries a block share when the window holds
    ``window_shares`` shares (N large enough to take them all)."""
    shares = make_shares(window_shares, workers, seed=2)
    w = writer(url, jdir, "snap:")
    c = Collector()
    for i in range(0, len(shares), 5000):
        for s in shares[i:i + 5000]:
            c.add_share(s)
        w.process([append(w.journal, c.take("snap", i // 5000 + 1, shares[i].time))])
    blk = shares[-1]
    from dataclasses import replace

    c.add_share(replace(blk, hash="f" * 64, is_block=True, time=blk.time + 1))
    start = time.perf_counter()
    r = w.process([append(w.journal, c.take("snap", 10**6, blk.time + 1))])
    elapsed = time.perf_counter() - start
    w.close([], 5)
    w.journal.close()
    if r.snapshots != ["f" * 64]:
        raise SystemExit(f"no snapshot: {r}")
    entries = redis.Redis.from_url(url).llen("snap:window")
    return elapsed, entries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shares", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=200)
    ap.add_argument("--window-shares", type=int, default=200_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hashcoop-bench-"))
    proc, url = start_redis(tmp)
    try:
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"redis-server {redis.Redis.from_url(url).info()['redis_version']} (AOF everysec)")
        shares = make_shares(args.shares, args.workers)
        print(f"{args.shares} shares from {args.workers} workers / {max(1, args.workers // 4)} addresses")
        print(f"sink call (reactor side): {sink_cost(shares) * 1e6:.2f} us per share")
        results = {}
        for bs in (1, 10, 100, 1000, 5000):
            n = shares if bs >= 100 else shares[: max(2000, args.shares // 10)]
            rate = run(url, tmp / f"j{bs}", n, bs, f"b{bs}:")
            results[bs] = rate
            label = "one write per share" if bs == 1 else f"batches of {bs}"
            print(f"  {label:>22}: {rate:10.0f} shares/s")
        print(f"batching (1000 per batch) vs one write per share: {results[1000] / results[1]:.0f}x")
        t, entries = snapshot_cost(url, tmp / "jsnap", args.window_shares, args.workers)
        print(f"block snapshot over a window of {args.window_shares} shares ({entries} entries): {t * 1000:.1f} ms (whole batch)")
        mem = redis.Redis.from_url(url).memory_usage("snap:sharelog")
        print(f"share log: {mem / args.window_shares:.0f} bytes per share in Redis (stream, {args.window_shares} shares)")
        wm = redis.Redis.from_url(url).memory_usage("snap:window", samples=0)
        print(f"window entries: {wm} bytes for {entries} entries ({wm / max(entries, 1):.0f} bytes per entry)")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
