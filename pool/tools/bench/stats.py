"""Pure helpers for the benchmark's figures."""
from __future__ import annotations

import math


def window_sum(per_second: dict, start: int, end: int) -> int:
    """Events counted in whole monotonic seconds ``start <= s < end``
    (``per_second`` maps a second, as int or str, to a count)."""
    total = 0
    for k, n in per_second.items():
        if start <= int(k) < end:
            total += n
    return total


def merge_counts(dicts) -> dict[int, int]:
    out: dict[int, int] = {}
    for d in dicts:
        for k, n in d.items():
            out[int(k)] = out.get(int(k), 0) + n
    return out


def histogram_mean(h: dict) -> float | None:
    """Mean of a Prometheus histogram snapshot (``sum``/``count``)."""
    return h["sum"] / h["count"] if h and h.get("count") else None


def histogram_quantile(h: dict, q: float) -> float | None:
    """Upper bound of the Prometheus bucket holding the q-quantile
    (cumulative ``buckets`` as [le, count] pairs); inf past the last bound."""
    if not h or not h.get("count"):
        return None
    rank = q * h["count"]
    for le, n in sorted(h["buckets"], key=lambda b: b[0]):
        if n >= rank:
            return le
    return math.inf


def histogram_delta(after: dict, before: dict) -> dict:
    """The observations made between two snapshots of one histogram."""
    if not before:
        return after
    prior = {le: n for le, n in before.get("buckets", [])}
    return {
        "buckets": [[le, n - prior.get(le, 0.0)] for le, n in after.get("buckets", [])],
        "sum": after.get("sum", 0.0) - before.get("sum", 0.0),
        "count": after.get("count", 0.0) - before.get("count", 0.0),
    }


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (0 < q <= 1)."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(q * len(v)) - 1)]


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return 60.0 * sum((t - mx) * (v - my) for t, v in samples) / var
