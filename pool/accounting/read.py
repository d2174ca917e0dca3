"""The read API over the Redis accounting store, for the HTTP API, the
dashboard and the payout service. Blocking redis-py: callers in Twisted
code run it in a thread (``deferToThread``). Nothing here writes, except
``ShareLogReader.mark_archived`` which lives with the share log.

All times are Unix seconds; hashrates are hashes per second; difficulties
are credited share difficulty (floats).
"""
from __future__ import annotations

import time
from typing import Callable

from redis.client import NEVER_DECODE

from hashcoop.pool.accounting.hashrate import WINDOWS, parse_buckets, resolution_for, series, unpack_days, window_hashrate
from hashcoop.pool.accounting.keys import SERIES, Keys, entity_addr, entity_pool, entity_worker
from hashcoop.pool.accounting.sharelog import ShareLogReader, Snapshot, _s
from hashcoop.pool.accounting.writer import redis_client
from hashcoop.pool.core.window import Entry, walk, window_target


def _f(v, default: float = 0.0) -> float:
    try:
        return float(_s(v)) if v is not None else default
    except ValueError:
        return default


def _i(v, default: int = 0) -> int:
    try:
        return int(_s(v)) if v is not None else default
    except ValueError:
        return default


def _decode(h: dict) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in h.items()}


class AccountingReader:
    def __init__(self, client, prefix: str = "hashcoop:", *, offline_after: float = 600.0, window_factor: float = 2.0,
                 window_difficulty: float = 0.0, clock: Callable[[], float] = time.time):
        self.r = client
        self.keys = Keys(prefix)
        self.offline_after = offline_after
        self.window_factor = window_factor
        self.window_difficulty = window_difficulty
        self.clock = clock
        self.sharelog = ShareLogReader(client, prefix)

    @classmethod
    def from_config(cls, config, client=None) -> "AccountingReader":
        rc = config.redis
        client = client or redis_client(rc.url, socket_timeout=rc.socket_timeout, connect_timeout=rc.connect_timeout)
        a = config.accounting
        return cls(client, rc.prefix, offline_after=a.worker_offline_after, window_factor=a.window_factor,
                   window_difficulty=a.window_difficulty)

    # -- building blocks -------------------------------------------------------------
    @staticmethod
    def _stats(h: dict[str, str]) -> dict:
        rejected = {k[4:]: int(v) for k, v in h.items() if k.startswith("rej:")}
        return {
            "accepted": _i(h.get("acc")),
            "difficulty": _f(h.get("diff")),
            "first_share": _f(h.get("first")) or None,
            "last_share": _f(h.get("last")) or None,
            "rejected": rejected,
            "rejected_total": sum(rejected.values()),
            "rejected_difficulty": _f(h.get("rej_diff")),
            "last_reject": _f(h.get("last_reject")) or None,
            "best_share": {
                "difficulty": _f(h.get("best")),
                "time": _f(h.get("best_time")) or None,
                "hash": h.get("best_hash") or None,
                **({"address": h["best_addr"]} if "best_addr" in h else {}),
                **({"worker": h["best_worker"]} if "best_worker" in h else {}),
            } if "best" in h else None,
        }

    # Hashrate series: each entity's windows take one HGETALL of the "10s"
    # hash and a GET per "5m" day string (read as bytes whatever the
    # client's decode_responses).
    _HR_SPAN = max(WINDOWS.values()) + SERIES["5m"][0]

    def _days(self, since: float, now: float) -> list[int]:
        return list(range(int(since // 86400), int(now // 86400) + 1))

    def _queue_hashrates(self, pipe, entity: str, now: float) -> int:
        pipe.hgetall(self.keys.series("10s", entity))
        days = self._days(now - self._HR_SPAN, now)
        for day in days:
            pipe.execute_command("GET", self.keys.series_day(entity, day), **{NEVER_DECODE: True})
        return 1 + len(days)

    def _hashrates_from(self, results: list, entity: str, now: float) -> dict[str, float]:
        days = self._days(now - self._HR_SPAN, now)
        raw = {"10s": parse_buckets(results[0]), "5m": unpack_days(zip(days, results[1:]))}
        out = {}
        for name, seconds in WINDOWS.items():
            res = resolution_for(seconds)
            out[name] = window_hashrate(raw[res], SERIES[res][0], now, seconds)
        return out

    def _hashrates(self, entity: str, now: float) -> dict[str, float]:
        p = self.r.pipeline(transaction=False)
        self._queue_hashrates(p, entity, now)
        return self._hashrates_from(p.execute(), entity, now)

    def _online(self, last: float | None, now: float) -> bool:
        return last is not None and now - last <= self.offline_after

    # -- pool --------------------------------------------------------------------------
    def pool_summary(self, now: float | None = None, blocks: int = 10) -> dict:
        now = self.clock() if now is None else now
        k = self.keys
        p = self.r.pipeline(transaction=False)
        p.hgetall(k.pool)
        p.zcount(k.workers, now - self.offline_after, "+inf")
        p.zcard(k.workers)
        p.zcount(k.addresses, now - self.offline_after, "+inf")
        p.zcard(k.addresses)
        self._queue_hashrates(p, entity_pool(), now)
        pool, w_on, w_all, a_on, a_all, *hr = p.execute()
        stats = self._stats(_decode(pool))
        return {
            "time": now,
            **stats,
            "hashrate": self._hashrates_from(hr, entity_pool(), now),
            "workers_online": int(w_on),
            "workers_known": int(w_all),
            "addresses_online": int(a_on),
            "addresses_known": int(a_all),
            "round": self.current_round(now),
            "window": self.window_summary(),
            "blocks": self.rounds(limit=blocks),
        }

    def current_round(self, now: float | None = None) -> dict:
        now = self.clock() if now is None else now
        r = _decode(self.r.hgetall(self.keys.round))
        nd = _f(self.r.hget(self.keys.window_meta, "nd"))
        diff = _f(r.get("diff"))
        start = _f(r.get("start")) or None
        return {
            "difficulty": diff,
            "shares": _i(r.get("shares")),
            "start": start,
            "start_seq": _i(r.get("start_seq")),
            "duration": (now - start) if start else 0.0,
            "network_difficulty": nd,
            "effort": diff / nd if nd > 0 else None,
            "best_share": {"difficulty": _f(r.get("best")), "address": r.get("best_addr") or None,
                           "worker": r.get("best_worker") or None, "time": _f(r.get("best_time")) or None},
        }

    # -- addresses and workers -----------------------------------------------------------
    def address_stats(self, address: str, now: float | None = None) -> dict | None:
        now = self.clock() if now is None else now
        k = self.keys
        p = self.r.pipeline(transaction=False)
        p.hgetall(k.addr(address))
        p.zrange(k.addr_workers(address), 0, -1)
        self._queue_hashrates(p, entity_addr(address), now)
        h, names, *hr = p.execute()
        if not h and not names:
            return None
        stats = self._stats(_decode(h))
        workers = self._workers(address, [_s(n) for n in names], now)
        return {
            "address": address,
            **stats,
            "online": self._online(stats["last_share"], now),
            "hashrate": self._hashrates_from(hr, entity_addr(address), now),
            "workers": workers,
            "workers_online": sum(1 for w in workers if w["online"]),
        }

    def _workers(self, address: str, names: list[str], now: float) -> list[dict]:
        if not names:
            return []
        k = self.keys
        p = self.r.pipeline(transaction=False)
        per = 0
        for n in names:
            p.hgetall(k.worker(address, n))
            per = 1 + self._queue_hashrates(p, entity_worker(address, n), now)
        res = p.execute()
        out = []
        for i, n in enumerate(names):
            h, *hr = res[per * i:per * (i + 1)]
            if not h:
                continue  # expired
            stats = self._stats(_decode(h))
            out.append({"worker": n, **stats, "online": self._online(stats["last_share"], now),
                        "hashrate": self._hashrates_from(hr, entity_worker(address, n), now)})
        out.sort(key=lambda w: w["worker"])
        return out

    def worker_stats(self, address: str, worker: str, now: float | None = None) -> dict | None:
        now = self.clock() if now is None else now
        h = _decode(self.r.hgetall(self.keys.worker(address, worker)))
        if not h:
            return None
        stats = self._stats(h)
        return {"address": address, "worker": worker, **stats, "online": self._online(stats["last_share"], now),
                "hashrate": self._hashrates(entity_worker(address, worker), now)}

    def hashrate_series(self, address: str | None = None, worker: str | None = None, *, resolution: str = "5m",
                        since: float | None = None, now: float | None = None) -> list[tuple[int, float]]:
        """(bucket start, hashrate) for the pool, an address or a worker;
        complete buckets only, from ``since`` (default: all that is kept)."""
        now = self.clock() if now is None else now
        size, keep = SERIES[resolution]
        if worker is not None:
            entity = entity_worker(address, worker)
        elif address is not None:
            entity = entity_addr(address)
        else:
            entity = entity_pool()
        since = max(now - keep, since if since is not None else now - keep)
        if resolution == "5m":
            days = self._days(since, now)
            p = self.r.pipeline(transaction=False)
            for day in days:
                p.execute_command("GET", self.keys.series_day(entity, day), **{NEVER_DECODE: True})
            raw = unpack_days(zip(days, p.execute()))
        else:
            raw = parse_buckets(self.r.hgetall(self.keys.series(resolution, entity)))
        return series(raw, size, since, now)

    # -- block withholding ----------------------------------------------------------------
    def expected_blocks(self, chunk: int = 1000) -> tuple[list[tuple], list[tuple]]:
        """Expected blocks (``exp_blocks``: sum over accepted shares of
        min(1, difficulty / network difficulty)) and blocks found
        (``blocks``) of every known worker and address (those in
        ``workers`` / ``addresses``, i.e. with a share within
        ``idle_expiry``): ``([(address, worker, expected, blocks)],
        [(address, None, expected, blocks)])``. Read ``chunk`` hashes per
        round trip; see ``hashcoop.pool.core.withholding``."""
        k = self.keys
        members = [_s(m) for m in self.r.zrange(k.workers, 0, -1)]
        addresses = [_s(a) for a in self.r.zrange(k.addresses, 0, -1)]
        pairs = []
        for m in members:
            a, sep, w = m.rpartition(":")
            if sep and a and w:
                pairs.append((a, w))
        out_w: list[tuple] = []
        out_a: list[tuple] = []
        for i in range(0, len(pairs), chunk):
            p = self.r.pipeline(transaction=False)
            part = pairs[i:i + chunk]
            for a, w in part:
                p.hmget(k.worker(a, w), "exp_blocks", "blocks")
            for (a, w), (e, b) in zip(part, p.execute()):
                out_w.append((a, w, _f(e), _i(b)))
        for i in range(0, len(addresses), chunk):
            p = self.r.pipeline(transaction=False)
            part = addresses[i:i + chunk]
            for a in part:
                p.hmget(k.addr(a), "exp_blocks", "blocks")
            for a, (e, b) in zip(part, p.execute()):
                out_a.append((a, None, _f(e), _i(b)))
        return out_w, out_a

    # -- the PPLNS window -----------------------------------------------------------------
    def window_summary(self) -> dict:
        m = _decode(self.r.hgetall(self.keys.window_meta))
        nd = _f(m.get("nd"))
        head = self.r.lindex(self.keys.window, 0)
        tail = self.r.lindex(self.keys.window, -1)
        return {
            "n": window_target(nd, self.window_factor, self.window_difficulty) if nd else None,
            "network_difficulty": nd or None,
            "stored_difficulty": _f(m.get("total")),
            "kept_target": _f(m.get("keep")) or None,
            "entries": int(self.r.llen(self.keys.window)),
            "first_seq": Entry.decode(_s(head)).first if head else None,
            "last_seq": Entry.decode(_s(tail)).last if tail else None,
        }

    def window(self) -> dict:
        """What a block found now would pay: the window of N (for the current
        network difficulty) ending at the latest share, by address."""
        nd = _f(self.r.hget(self.keys.window_meta, "nd"))
        need = window_target(nd, self.window_factor, self.window_difficulty)

        def newest_first():
            end = int(self.r.llen(self.keys.window)) - 1
            while end >= 0:
                start = max(0, end - 255)
                for raw in reversed(self.r.lrange(self.keys.window, start, end)):
                    yield Entry.decode(_s(raw))
                end = start - 1

        def rows_of(e: Entry):
            return [(s.seq, s.address, s.difficulty) for s in self.sharelog.shares(e.first, e.last)]

        res = walk(newest_first(), need, rows_of) if need > 0 else None
        return {
            "n": need,
            "network_difficulty": nd or None,
            "total": res.total if res else 0.0,
            "complete": res.complete if res else False,
            "first_seq": res.first_seq if res else None,
            "by_address": dict(sorted((res.amounts if res else {}).items(), key=lambda kv: -kv[1])),
        }

    # -- rounds and blocks ---------------------------------------------------------------------
    def rounds(self, limit: int = 20, offset: int = 0) -> list[dict]:
        """Found blocks, newest first, each with its round: difficulty,
        effort, duration, finder, status."""
        hashes = self.r.zrevrange(self.keys.blocks, offset, offset + limit - 1)
        if not hashes:
            return []
        p = self.r.pipeline(transaction=False)
        for h in hashes:
            p.hgetall(self.keys.block(_s(h)))
        out = []
        for raw in p.execute():
            b = _decode(raw)
            if not b:
                continue
            out.append({
                "hash": b.get("hash"), "height": _i(b.get("height")), "time": _f(b.get("time")),
                "finder_address": b.get("address"), "finder_worker": b.get("worker"),
                "network_difficulty": _f(b.get("network_difficulty")),
                "round_difficulty": _f(b.get("round_difficulty")), "round_shares": _i(b.get("round_shares")),
                "round_start": _f(b.get("round_start")), "effort": _f(b.get("effort")),
                "duration": _f(b.get("duration")), "best_share": _f(b.get("round_best")),
                "reward": _i(b.get("reward")) if b.get("reward") else None,
                "status": b.get("status"), "status_reason": b.get("status_reason") or None,
                "seq": _i(b.get("seq")),
            })
        return out

    def close(self) -> None:
        self.r.close()

    # -- rows the API composes with the ledger's ---------------------------------------------
    def blocks_found(self) -> int:
        """How many blocks the pool has found."""
        return int(self.r.zcard(self.keys.blocks))

    def block_rank(self, block_hash: str) -> int | None:
        """Where ``block_hash`` stands among the found blocks, newest first
        (the offset ``rounds`` takes), or None for a block never found."""
        rank = self.r.zrevrank(self.keys.blocks, block_hash)
        return None if rank is None else int(rank)

    def address_parts(self, address: str, hashes: list[str]) -> list[tuple[float, float] | None]:
        """For each block of ``hashes``: (the difficulty ``address`` has in its
        PPLNS window, the window's total), or None when it has none there."""
        p = self.r.pipeline(transaction=False)
        for h in hashes:
            p.hget(self.keys.snapshot_amounts(h), address)
            p.hget(self.keys.snapshot(h), "total")
        res = p.execute()
        return [None if res[2 * i] is None else (float(_s(res[2 * i])), float(_s(res[2 * i + 1] or 0)))
                for i in range(len(hashes))]

    def block_times(self, hashes: list[str]) -> list[tuple[float | None, str | None]]:
        """For each block of ``hashes``: (when it was found, the pool's status
        of it), None where unknown."""
        p = self.r.pipeline(transaction=False)
        for h in hashes:
            p.hmget(self.keys.block(h), "time", "status")
        return [(float(_s(t)) if t is not None else None, _s(st) if st is not None else None) for t, st in p.execute()]

    def block_snapshot(self, block_hash: str) -> Snapshot | None:
        return self.sharelog.snapshot(block_hash)
