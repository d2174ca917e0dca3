"""Before and after for the hot-path levers that were built in from the
first commit, so no earlier tree exists to run ``--pool-src`` against:
each lever is measured as the pool does it and the naive way, on the same
inputs, in one process (CPU time, best of several rounds).

    python -m hashcoop.pool.tools.bench.ablation            (or ``hashcoop bench --scenarios ablation``)

Levers:

``merkle_branch``     branch kept as bytes per job vs decoded from hex per share
``json``              orjson vs the standard library for one submit line in
                      and its reply out
``notify``            one serialised ``mining.notify`` shared by every miner vs
                      serialised per miner
``share_target``      the target worked out once per difficulty step vs per share

Each figure is CPU microseconds per share (per miner for ``notify``). The
"after" side calls the pool's own functions, so a regression shows here.
"""
from __future__ import annotations

import gc
import json
import random
import sys
import time
from hashlib import sha256

import orjson

from hashcoop.pool.core.btc.address import address_to_script, get_network
from hashcoop.pool.core.btc.target import difficulty_to_target
from hashcoop.pool.core.jobs import JobManager
from hashcoop.pool.tools.bench.hotpath import ADDRESS, template

ROUNDS = 5
N = 20_000


def best_of(fn, n: int) -> float:
    """CPU µs per item of ``fn()`` (which handles ``n`` items), best of ROUNDS."""
    best = float("inf")
    for _ in range(ROUNDS):
        gc.collect()
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best / n * 1e6


def pair(before, after, n: int) -> dict:
    b, a = best_of(before, n), best_of(after, n)
    return {"before_us": b, "after_us": a, "speedup": b / a if a else None}


def merkle_branch(n: int = N) -> dict:
    rnd = random.Random(1)
    branch_hex = [rnd.randbytes(32).hex() for _ in range(12)]  # a full block: ~3,000 transactions
    branch = tuple(bytes.fromhex(x) for x in branch_hex)
    coinbases = [rnd.randbytes(180) for _ in range(n)]

    def per_share_decode():
        for cb in coinbases:
            h = sha256(sha256(cb).digest()).digest()
            for step in branch_hex:
                h = sha256(sha256(h + bytes.fromhex(step)).digest()).digest()

    def decoded_once():
        for cb in coinbases:
            h = sha256(sha256(cb).digest()).digest()
            for step in branch:
                h = sha256(sha256(h + step).digest()).digest()

    return pair(per_share_decode, decoded_once, n)


def json_codec(n: int = N) -> dict:
    lines = [b'{"id":%d,"method":"mining.submit","params":["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080.rig1",'
             b'"000003e9","%08x","6923c5a2","%08x"]}' % (i, i, i * 7919 & 0xFFFFFFFF) for i in range(n)]

    def stdlib():
        for line in lines:
            m = json.loads(line)
            json.dumps({"id": m["id"], "result": True, "error": None}, separators=(",", ":")).encode()

    def fast():
        for line in lines:
            m = orjson.loads(line)
            orjson.dumps({"id": m["id"], "result": True, "error": None})

    return pair(stdlib, fast, n)


def notify(miners: int = 10_000) -> dict:
    jobs = JobManager(payout_script=address_to_script(ADDRESS, get_network("regtest")), tag=b"/bench/",
                      extranonce_size=8, now=lambda: 1_795_651_986.0, first_seq=1000)
    job, _ = jobs.new_job(template(txs=3000), True)
    sink = []
    write = sink.append

    def per_miner():
        sink.clear()
        for _ in range(miners):
            write(orjson.dumps({"id": None, "method": "mining.notify", "params": job.notify_params + [True]}) + b"\n")

    def shared():
        sink.clear()
        line = job.alias_notify_line(job.id, True)  # serialised once per broadcast
        for _ in range(miners):
            write(line)

    return pair(per_miner, shared, miners)


def share_target(n: int = N) -> dict:
    rnd = random.Random(2)
    hashes = [rnd.getrandbits(256) for _ in range(n)]
    difficulty = 8192.0

    def per_share():
        ok = 0
        for h in hashes:
            ok += h <= difficulty_to_target(difficulty)
        return ok

    def per_step():
        ok = 0
        target = difficulty_to_target(difficulty)
        for h in hashes:
            ok += h <= target
        return ok

    return pair(per_share, per_step, n)


def main() -> int:
    out = {
        "merkle_branch": merkle_branch(),
        "json": json_codec(),
        "notify": notify(),
        "share_target": share_target(),
    }
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
