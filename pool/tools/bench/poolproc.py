"""A pool process for the benchmark: exactly ``hashcoop run`` (the same
``hashcoop.pool.app.service.run``), plus a once-a-second JSON dump of the process's own
metrics to a file, so the benchmark can read the Redis batch sizes and
flush latencies without an HTTP endpoint.

    python -m hashcoop.pool.tools.bench.poolproc -c pool.toml --stats stats.json

With ``HASHCOOP_MEMDIAG=FILE`` in its environment (the soak and the
benchmark pass theirs on) it also appends a line of JSON to FILE every
30 seconds saying where its memory is: resident and anonymous size,
CPython's small-object arenas and glibc's heap (in use and free), the
object counts by type, the duplicate keys the jobs hold and the shares
waiting for Redis. RELIABILITY.md shows how it found the soak's growth.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import tempfile
import time
from collections import Counter

from twisted.internet.task import LoopingCall

import hashcoop.pool.app.service as service


def _histogram(metrics, name: str) -> dict:
    buckets = []
    total = count = 0.0
    for metric in metrics:
        if metric.name != name:
            continue
        for s in metric.samples:
            if s.name == name + "_bucket":
                buckets.append([float(s.labels["le"]), s.value])
            elif s.name == name + "_sum":
                total = s.value
            elif s.name == name + "_count":
                count = s.value
    return {"buckets": buckets, "sum": total, "count": count}


def _counter(metrics, name: str) -> float:
    total = 0.0
    for metric in metrics:
        for s in metric.samples:
            if s.name == name:
                total += s.value
    return total


def snapshot(p) -> dict:
    """What the benchmark reads from a running pool (``hashcoop.pool.app.service.Pool``)."""
    reg = [m for m in p.metrics.registry.collect()
           if m.name.startswith(("hashcoop_shares_", "hashcoop_redis_", "hashcoop_tip_to_notify"))]
    job = p.jobs.current
    acct = p.accounting
    return {
        "t": time.monotonic(),
        "pid": os.getpid(),
        "listening": p.stratum.listening_ports(),
        "job": job.id if job is not None else None,
        "height": job.height if job is not None else None,
        "prevhash": job.notify_params[1] if job is not None else None,
        "sessions": len(p.stratum.sessions),
        "ready": len(p.stratum.ready),
        "accepted": _counter(reg, "hashcoop_shares_accepted_total"),
        "rejected": _counter(reg, "hashcoop_shares_rejected_total"),
        "batches_written": acct.batches_written if acct is not None else 0,
        "shares_written": acct.shares_written if acct is not None else 0,
        "buffered": acct.buffered() if acct is not None else 0,
        "flush_seconds": _histogram(reg, "hashcoop_redis_flush_seconds"),
        "batch_shares": _histogram(reg, "hashcoop_redis_batch_shares"),
        "tip_to_notify": _histogram(reg, "hashcoop_tip_to_notify_seconds"),
        "templates": list(_TEMPLATES),
        "gc": {"collections": list(_GC["n"]), "seconds": list(_GC["s"]), "max_pause": list(_GC["max"])},
        "stalls": dict(_STALLS),
    }


# How late a 10 ms reactor timer fires: the reactor's own stalls, whatever
# holds it up (callbacks, the GIL, the CPU); counts by lateness bucket (ms).
STALL_BUCKETS = (1, 2, 5, 10, 20, 50, 100)
_STALLS: dict[str, int] = {}


def watch_stalls(reactor, interval: float = 0.01) -> None:
    state = {"due": None}

    def tick():
        now = time.monotonic()
        if state["due"] is not None:
            late = (now - state["due"]) * 1000
            key = next((f"<{b}" for b in STALL_BUCKETS if late < b), f">={STALL_BUCKETS[-1]}")
            _STALLS[key] = _STALLS.get(key, 0) + 1
        state["due"] = now + interval
        reactor.callLater(interval, tick)

    reactor.callWhenRunning(tick)


# Garbage-collector pauses by generation, seen through gc.callbacks.
_GC = {"n": [0, 0, 0], "s": [0.0, 0.0, 0.0], "max": [0.0, 0.0, 0.0], "t0": 0.0}


def _gc_callback(phase, info) -> None:
    if phase == "start":
        _GC["t0"] = time.perf_counter()
        return
    g = info["generation"]
    dt = time.perf_counter() - _GC["t0"]
    _GC["n"][g] += 1
    _GC["s"][g] += dt
    if dt > _GC["max"][g]:
        _GC["max"][g] = dt


# (monotonic time the template reached the stratum server, seconds to build
# the job, seconds to write it to every miner, miners, clean) of the last
# templates: observed from outside by wrapping StratumServer.on_template
_TEMPLATES: list = []


def watch_templates(stratum) -> None:
    on_template = stratum.on_template
    jobs = stratum.jobs

    def timed(template, clean):
        t0 = time.monotonic()
        new_job = jobs.new_job

        def timed_new_job(*a, **kw):
            r = new_job(*a, **kw)
            marks.append(time.monotonic())
            return r

        marks: list = []
        jobs.new_job = timed_new_job
        try:
            on_template(template, clean)
        finally:
            del jobs.new_job
        t2 = time.monotonic()
        t1 = marks[0] if marks else t2
        _TEMPLATES.append([t0, t1 - t0, t2 - t1, len(stratum.ready), bool(clean)])
        del _TEMPLATES[:-20]

    stratum.on_template = timed
    # WorkSource was handed the bound method at build time
    if stratum.work is not None and getattr(stratum.work, "listener", None) == on_template:
        stratum.work.listener = timed


def _mallinfo() -> dict:
    """glibc's allocator figures (mallinfo2): bytes in use, free but held."""

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        f = libc.mallinfo2
    except (OSError, AttributeError):
        return {}
    f.restype = MallInfo2
    m = f()
    return {n: getattr(m, n) for n, _ in MallInfo2._fields_}


def _pymalloc() -> dict:
    """CPython's small-object allocator (sys._debugmallocstats, which
    writes to the C stderr): arenas and bytes in and out of use."""

    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    out = {}
    for line in text.splitlines():
        if line.startswith("#") and "=" in line:
            k, v = line[1:].split("=", 1)
            try:
                out[k.strip()] = int(v.strip().replace(",", ""))
            except ValueError:
                pass
    return out


def _smaps() -> dict:
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def memdiag(path: str, p) -> None:
    types = Counter(type(o).__name__ for o in gc.get_objects())
    jobs = p.jobs.jobs
    rec = {"t": time.time(), "smaps": _smaps(), "blocks": sys.getallocatedblocks(), "malloc": _mallinfo(),
           "pymalloc": _pymalloc(), "objects": sum(types.values()), "top": types.most_common(25),
           "jobs": len(jobs), "seen": sum(len(j.seen) for j in jobs.values() if j.seen),
           "buffered": p.accounting.buffered() if p.accounting is not None else None}
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hashcoop.pool.tools.bench.poolproc")
    ap.add_argument("-c", "--config", required=True)
    ap.add_argument("--stats", required=True, help="file the metrics snapshot is written to every --interval seconds")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--log-level", default=None)
    args = ap.parse_args(argv)

    build = service.build_pool

    def build_and_watch(config, reactor, **kw):
        p = build(config, reactor, **kw)

        watch_templates(p.stratum)

        gc.callbacks.append(_gc_callback)
        watch_stalls(reactor)

        def dump():
            tmp = args.stats + ".tmp"
            with open(tmp, "w") as f:
                json.dump(snapshot(p), f)
            os.replace(tmp, args.stats)

        loop = LoopingCall(dump)
        loop.clock = reactor
        reactor.callWhenRunning(loop.start, args.interval, now=False)
        reactor.addSystemEventTrigger("after", "shutdown", dump)
        if os.environ.get("HASHCOOP_MEMDIAG"):
            diag = LoopingCall(memdiag, os.environ["HASHCOOP_MEMDIAG"], p)
            diag.clock = reactor
            reactor.callWhenRunning(diag.start, 30, now=True)
        return p

    service.build_pool = build_and_watch
    return service.run(argparse.Namespace(config=args.config, log_level=args.log_level))


if __name__ == "__main__":
    sys.exit(main())
