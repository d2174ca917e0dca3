"""A batch turned into the single argument of the Lua apply script. Pure.

Increments are aggregated here: one operation per key and field per
batch, never one per share. Floats are added in Lua and stored with 17
significant digits (``addf``), not with HINCRBYFLOAT, whose fixed 17
decimal places would lose regtest difficulties (1e-8 and below).

Operations (executed in order by the script, after the idempotency check):

``["hincr", key, field, int]``            HINCRBY
``["addf", key, field, float]``           exact float add
``["max", key, field, float, f, v, ...]`` set field (and companions) if larger
``["setnx", key, field, value]``          HSETNX
``["zgt", key, score, member]``           ZADD GT
``["exp", key, seconds]``                 EXPIRE
``["bucket", key, index, float, cutoff, maxlen, ttl]``
                                          add to a "10s" series bucket; when the
                                          key holds more than maxlen buckets,
                                          drop those below cutoff; EXPIRE ttl
``["slot", key, offset, float, ttl]``     add to the double at byte offset of a
                                          "5m" day string; EXPIRE ttl
``["zrem", key, below]``                  ZREMRANGEBYSCORE key -inf (below
"""
from __future__ import annotations

import gc
import math
import sys
import time
from dataclasses import dataclass
from math import isfinite

import orjson

from hashcoop.pool.accounting.hashrate import bucket_index
from hashcoop.pool.accounting.keys import DAY_SLOTS, SERIES, Keys, entity_addr, entity_pool, entity_worker
from hashcoop.pool.accounting.model import Batch, clean_token
from hashcoop.pool.core.window import ENTRY_SHARES, day_of, fmt
from hashcoop.pool.core.withholding import share_expectation

RUN_TTL = 90 * 86400  # how long Redis remembers a run's applied batches: a journal older than this replays twice


@dataclass(frozen=True, slots=True)
class Settings:
    window_factor: float = 2.0
    window_difficulty: float = 0.0
    window_margin: float = 0.5
    idle_expiry: float = 8 * 86400.0
    max_blocks: int = 10_000
    entry_shares: int = ENTRY_SHARES
    run_ttl: int = RUN_TTL

    @classmethod
    def from_config(cls, acct) -> "Settings":
        return cls(window_factor=acct.window_factor, window_difficulty=acct.window_difficulty,
                   window_margin=acct.window_margin, idle_expiry=acct.idle_expiry, max_blocks=acct.max_blocks)


class _Agg:
    __slots__ = ("count", "diff", "tmin", "tmax", "best", "best_time", "best_hash", "best_addr", "best_worker", "buckets",
                 "expected", "blocks")

    def __init__(self):
        self.count = 0
        self.diff = 0.0
        self.expected = 0.0  # expected blocks: sum of min(1, d / network difficulty), share by share
        self.blocks = 0  # block-solving shares
        self.tmin = math.inf
        self.tmax = -math.inf
        self.best = -1.0
        self.best_time = 0.0
        self.best_hash = ""
        self.best_addr = ""
        self.best_worker = ""
        self.buckets: dict[tuple[str, int], float] = {}

    def add(self, addr: str, worker: str, d: float, sd: float, t: float, h: str, bucket_keys, x: float, blk: bool) -> None:
        """One share; ``bucket_keys``: its ``(resolution, bucket index)`` for
        each of ``SERIES``, in that order; ``x`` its expected blocks
        (``hashcoop.pool.core.withholding.share_expectation``), ``blk`` whether it is a block."""
        self.count += 1
        self.diff += d
        self.expected += x
        if blk:
            self.blocks += 1
        if t < self.tmin:
            self.tmin = t
        if t > self.tmax:
            self.tmax = t
        if sd > self.best:
            self.best, self.best_time, self.best_hash, self.best_addr, self.best_worker = sd, t, h, addr, worker
        buckets = self.buckets
        for k in bucket_keys:
            buckets[k] = buckets.get(k, 0.0) + d


_NAMES: dict[tuple[str, str, str], tuple[str, str, str, str]] = {}
_CLEAN: dict[tuple, tuple[str, str]] = {}


def _clean_pair(pair: tuple) -> tuple[str, str]:
    """``(clean_token(address), clean_token(worker, 64))``, remembered across
    batches: the same workers send shares batch after batch."""
    clean = _CLEAN.get(pair)
    if clean is None:
        if len(_CLEAN) >= 100_000:
            _CLEAN.clear()
        clean = _CLEAN[pair] = (clean_token(pair[0]), clean_token(pair[1], 64))
    return clean


def _worker_names(keys: Keys, a: str, w: str) -> tuple[str, str, str, str]:
    """A worker's key, series entity, ``workers`` member and its address's
    ``addr:A:workers`` key, formatted once per worker rather than per batch."""
    k = (keys.prefix, a, w)
    names = _NAMES.get(k)
    if names is None:
        if len(_NAMES) >= 100_000:
            _NAMES.clear()
        names = _NAMES[k] = (keys.worker(a, w), entity_worker(a, w), f"{a}:{w}", keys.addr_workers(a))
    return names


_CHUNK = 512
# Shares in one bucket of the finest series are in one bucket of every
# series, so a share's bucket keys are worked out again only when that
# bucket changes.
_FINEST = min(size for size, _keep in SERIES.values())
assert all(size % _FINEST == 0 for size, _keep in SERIES.values())
# Shares, and workers, handled between two ``_yield()``s.
_YIELD_EVERY = 64


def _yield() -> None:
    """Let the reactor thread have the GIL now if it is waiting for it.
    Payloads are built on the writer thread; a Python thread that keeps the
    GIL is only made to hand it over every switch interval, and on one core
    the reactor then waits for the scheduler too (milliseconds, measured),
    while a voluntary release takes effect at once (``time.sleep(0)``)."""
    time.sleep(0)


def _dumps_list(items: list) -> orjson.Fragment:
    """``items`` as JSON, exactly as ``orjson.dumps`` writes it, but a few
    hundred items per call: a batch from thousands of workers is megabytes
    of JSON, and one call would hold the GIL (and the reactor) for
    milliseconds."""
    if len(items) <= _CHUNK:
        return orjson.Fragment(orjson.dumps(items))
    parts = []
    for i in range(0, len(items), _CHUNK):
        parts.append(orjson.dumps(items[i:i + _CHUNK])[1:-1])
        _yield()
    return orjson.Fragment(b"[" + b",".join(parts) + b"]")


def build_payload(batch: Batch, keys: Keys, st: Settings, prev: int = 0) -> bytes:
    """The JSON argument for ``lua.APPLY``. ``prev``: the last counter of
    this batch's run that Redis acknowledged (0: none known); if Redis has
    less, it lost writes and the script refuses the batch (code 2).

    The cyclic garbage collector is held off while the payload is built:
    a batch from thousands of workers is tens of thousands of short-lived
    lists, which would otherwise set off young-generation collections
    that, running on the writer thread, hold the GIL, and so the reactor,
    for milliseconds each. Nothing here makes reference cycles."""
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        return _build_payload(batch, keys, st, prev)
    finally:
        if enabled:
            gc.enable()


def _build_payload(batch: Batch, keys: Keys, st: Settings, prev: int) -> bytes:
    addrs: dict[str, int] = {}
    workers: dict[tuple[int, str], int] = {}
    shares = []
    blocks = []
    lines = []
    nd_by_day: dict[int, float] = {}
    per_worker: dict[tuple[str, str], _Agg] = {}
    per_addr: dict[str, _Agg] = {}
    pool = _Agg()
    series = tuple((res, size) for res, (size, _keep) in SERIES.items())
    # Per batch, addresses, workers and job ids repeat: their cleaned tokens
    # (and a worker's indexes and aggregates) are looked up once each.
    per_pair: dict[tuple, tuple] = {}
    job_tokens: dict[str, str] = {}
    fmt_d: dict[float, str] = {}
    max_float = sys.float_info.max
    base = _FINEST
    last_q = None
    bkeys = None
    for n, s in enumerate(batch.shares, 1):
        if not n % _YIELD_EVERY:
            _yield()
        pair = (s.address, s.worker)
        known = per_pair.get(pair)
        if known is None:
            a, w = _clean_pair(pair)
            ai = addrs.setdefault(a, len(addrs))
            wi = workers.setdefault((ai, w), len(workers))
            wa = per_worker.get((a, w))
            if wa is None:
                wa = per_worker[(a, w)] = _Agg()
            aa = per_addr.get(a)
            if aa is None:
                aa = per_addr[a] = _Agg()
            known = per_pair[pair] = (a, w, ai, wi, wa, aa)
        a, w, ai, wi, wa, aa = known
        d = float(s.difficulty)
        sd = float(s.share_difficulty)
        if not isfinite(sd):
            sd = max_float  # an infinite share difficulty (a zero hash) is stored as the largest float
        t = float(s.time)
        h = s.hash
        if not (type(h) is str and h.isalnum() and len(h) <= 128):
            h = clean_token(h)  # (a clean one is returned unchanged)
        job = job_tokens.get(s.job_id)
        if job is None:
            job = job_tokens[s.job_id] = clean_token(s.job_id)
        blk = 0
        if s.is_block:
            blocks.append([h, float(s.network_difficulty), int(s.height), t, job])
            blk = len(blocks)
        shares.append([ai, wi, d, sd, t, blk])
        if d > 0:
            fd = fmt_d.get(d)
            if fd is None:
                fd = fmt_d[d] = fmt(d)
        else:  # 0.0 and -0.0 (and NaN) write differently but compare equal
            fd = fmt(d)
        lines.append(f"{ai} {w} {fd} {sd!r} {job} {h} {t:.3f} {1 if s.is_block else 0}")  # fmt(sd): repr of a float
        k = day_of(t)
        nd = float(s.network_difficulty)
        if nd > nd_by_day.get(k, 0.0):
            nd_by_day[k] = nd
        q = t // base
        if q != last_q:  # a new finest bucket (coarser ones are whole multiples of it)
            last_q = q
            bkeys = [(res, int(t // size)) for res, size in series]  # bucket_index(t, size)
        x = share_expectation(d, nd)
        blk = s.is_block
        wa.add(a, w, d, sd, t, h, bkeys, x, blk)
        aa.add(a, w, d, sd, t, h, bkeys, x, blk)
        pool.add(a, w, d, sd, t, h, bkeys, x, blk)

    ops: list[list] = []
    idle = int(st.idle_expiry)
    now = batch.created

    append = ops.append

    def entity_ops(key: str, entity: str, agg: _Agg, *, expire: bool, best_fields: tuple[str, ...]) -> None:
        append(["hincr", key, "acc", agg.count])
        append(["addf", key, "diff", agg.diff])
        if agg.expected > 0:
            append(["addf", key, "exp_blocks", agg.expected])
        if agg.blocks:
            append(["hincr", key, "blocks", agg.blocks])
        append(["max", key, "last", agg.tmax])
        append(["setnx", key, "first", fmt(agg.tmin)])
        if best_fields:
            companions = ["best_time", fmt(agg.best_time), "best_hash", agg.best_hash]
            if "addr" in best_fields:
                companions += ["best_addr", agg.best_addr]
            if "worker" in best_fields:
                companions += ["best_worker", agg.best_worker]
            append(["max", key, "best", agg.best, *companions])
        else:
            append(["max", key, "best", agg.best, "best_time", fmt(agg.best_time), "best_hash", agg.best_hash])
        if expire:
            append(["exp", key, idle])
        for (res, idx), d in agg.buckets.items():
            size, keep = SERIES[res]
            if res == "5m":
                day = idx // DAY_SLOTS
                append(["slot", keys.series_day(entity, day), (idx - day * DAY_SLOTS) * 8, d, keep + 86400])
            else:
                append(["bucket", keys.series(res, entity), str(idx), d, bucket_index(agg.tmax - keep, size),
                        keep // size + 8, keep])

    if batch.shares:
        entity_ops(keys.pool, entity_pool(), pool, expire=False, best_fields=("addr", "worker"))
    for a, agg in per_addr.items():
        entity_ops(keys.addr(a), entity_addr(a), agg, expire=True, best_fields=("worker",))
        append(["zgt", keys.addresses, agg.tmax, a])
    workers_key = keys.workers
    for n, ((a, w), agg) in enumerate(per_worker.items(), 1):
        if not n % _YIELD_EVERY:
            _yield()
        names = _worker_names(keys, a, w)  # (key, entity, member, addr_workers key): the same every batch
        entity_ops(names[0], names[1], agg, expire=True, best_fields=())
        append(["zgt", workers_key, agg.tmax, names[2]])
        append(["zgt", names[3], agg.tmax, w])
    touched_addrs = set(per_addr)

    rej_counts: dict[tuple[str, str], int] = {}
    rej_diff: dict[str, float] = {}
    rej_last: dict[str, float] = {}
    rej_workers: dict[tuple[str, str], float] = {}
    for r in batch.rejects:
        reason = clean_token(r.reason, 32)
        targets = [keys.pool]
        if r.address:
            a = clean_token(r.address)
            targets.append(keys.addr(a))
            touched_addrs.add(a)
            if r.worker:
                w = clean_token(r.worker, 64)
                targets.append(keys.worker(a, w))
                rej_workers[(a, w)] = max(rej_workers.get((a, w), 0.0), r.last)
        for k in targets:
            rej_counts[(k, reason)] = rej_counts.get((k, reason), 0) + r.count
            rej_diff[k] = rej_diff.get(k, 0.0) + r.difficulty
            rej_last[k] = max(rej_last.get(k, 0.0), r.last)
    for (k, reason), n in rej_counts.items():
        ops.append(["hincr", k, "rej:" + reason, n])
    for k, d in rej_diff.items():
        if d > 0:
            ops.append(["addf", k, "rej_diff", d])
        ops.append(["max", k, "last_reject", rej_last[k]])
        if k != keys.pool:
            ops.append(["exp", k, idle])
    for (a, w), t in rej_workers.items():
        ops.append(["zgt", keys.addr_workers(a), t, w])

    for a in touched_addrs:
        ops.append(["exp", keys.addr_workers(a), idle])
        ops.append(["zrem", keys.addr_workers(a), now - idle])
    if batch.shares:
        ops.append(["zrem", keys.workers, now - idle])
        ops.append(["zrem", keys.addresses, now - idle])

    payload = {
        "p": keys.prefix,
        "run": clean_token(batch.run, 64),
        "n": batch.counter,
        "prev": prev,
        "t": batch.created,
        "cfg": {
            "factor": st.window_factor,
            "fixed": st.window_difficulty,
            "margin": st.window_margin,
            "M": st.entry_shares,
            "runttl": st.run_ttl,
            "maxblocks": st.max_blocks,
        },
        "a": list(addrs),
        "w": [w for (_ai, w) in workers],
        "s": _dumps_list(shares),
        "bk": blocks,
        "la": " ".join(addrs),
        "ls": "\n".join(lines),
        "nd": [[k, nd_by_day[k]] for k in sorted(nd_by_day)],
        "ndl": float(batch.shares[-1].network_difficulty) if batch.shares else 0.0,
        "ops": _dumps_list(ops),
        "bf": [[clean_token(f.hash), int(f.height), clean_token(f.prevhash), clean_token(f.address), clean_token(f.worker, 64),
                str(int(f.reward)), clean_token(f.job_id), fmt(f.time)] for f in batch.blocks],
        "st": [[clean_token(s.hash), str(s.status), s.reason or "", orjson.dumps(s.verdicts).decode(), fmt(s.time), int(s.height)]
               for s in batch.statuses],
    }
    return orjson.dumps(payload)
