"""Hashrate from share difficulty, and the time-series buckets. Pure.

A share of difficulty ``d`` stands for ``d x 2^32`` hashes on average, so
the hashrate over a span is ``sum(d) x 2^32 / seconds``. Buckets sum the
credited difficulty of shares whose time falls in
``[index x size, (index + 1) x size)``.
"""
from __future__ import annotations

import math
import struct
from typing import Iterable, Mapping

from hashcoop.pool.accounting.keys import DAY_SLOTS, SERIES
from hashcoop.pool.core.btc.target import HASHES_PER_DIFFICULTY

# Hashrate windows: name -> seconds
WINDOWS = {"1m": 60, "5m": 300, "1h": 3600, "24h": 86400}


def hashrate(difficulty: float, seconds: float) -> float:
    """Hashes per second for ``difficulty`` summed over ``seconds``."""
    if seconds <= 0:
        return 0.0
    return difficulty * HASHES_PER_DIFFICULTY / seconds


def bucket_index(t: float, size: int) -> int:
    return int(t // size)


def resolution_for(window: float) -> str:
    """The finest series that keeps ``window`` (buckets at most a sixth of it)."""
    for name, (size, keep) in sorted(SERIES.items(), key=lambda kv: kv[1][0]):
        if keep >= window + size and size * 6 <= window:
            return name
    raise ValueError(f"no series covers a {window} s window")


def window_hashrate(buckets: Mapping[int, float], size: int, now: float, window: float) -> float:
    """Hashrate over the last ``window`` seconds from buckets of ``size``
    seconds: the buckets starting at or after ``now - window`` (including
    the current, partial one), divided by the time they cover, which lies
    between ``window - size`` and ``window``."""
    first = math.ceil((now - window) / size)
    last = bucket_index(now, size)
    total = 0.0
    for i, d in buckets.items():
        if first <= i <= last:
            total += d
    return hashrate(total, max(now - first * size, float(size)))


def series(buckets: Mapping[int, float], size: int, since: float, now: float) -> list[tuple[int, float]]:
    """Complete buckets from ``since`` to ``now`` as (bucket start time,
    hashrate), zeros included; the current partial bucket is left out."""
    first = math.ceil(since / size)
    last = bucket_index(now, size) - 1
    return [(i * size, hashrate(buckets.get(i, 0.0), size)) for i in range(first, last + 1)]


def parse_buckets(raw: Mapping) -> dict[int, float]:
    """HGETALL of a series key -> {bucket index: difficulty}."""
    out: dict[int, float] = {}
    for k, v in raw.items():
        try:
            out[int(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out



def unpack_days(days: Iterable[tuple[int, bytes | None]]) -> dict[int, float]:
    """The packed "5m" day strings -> {bucket index: difficulty} (non-zero
    buckets only). A day string holds DAY_SLOTS little-endian doubles."""
    out: dict[int, float] = {}
    for day, raw in days:
        if not raw:
            continue
        n = len(raw) // 8
        for slot, (v,) in enumerate(struct.iter_unpack("<d", raw[:n * 8])):
            if v:
                out[day * DAY_SLOTS + slot] = v
    return out
