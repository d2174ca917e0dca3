"""Variable difficulty, per session. Pure: times are passed in.

The controller sums the credited difficulty of accepted shares since its last
retarget. Work done per second is ``sum / elapsed``; the difficulty that gives
one share every ``target_interval`` seconds is ``sum / elapsed *
target_interval``. It retargets when that is outside ``1 ± variance`` of the
current difficulty and either ``min_shares`` shares arrived (fast ramp-up
when far too easy) or ``retarget_interval`` passed; with no shares at all it
keeps lowering the difficulty. New values are rounded to two significant
digits (fractional values stay fractional) and clamped to the session's
limits. The new difficulty applies from the next job the session receives.
"""
from __future__ import annotations

import math


def nice_difficulty(d: float) -> float:
    """Round to two significant digits, and to a whole number from 1 up:
    1234.5 -> 1200, 3.7 -> 4, 0.0012345 -> 0.0012. Firmware such as ESP-Miner
    and Braiins keep the difficulty as an integer, so values >= 1 must be whole."""
    if d <= 0 or not math.isfinite(d):
        raise ValueError("difficulty must be positive and finite")
    exp = math.floor(math.log10(d)) - 1
    if d >= 1:
        exp = max(exp, 0)
    v = round(d / 10**exp) * 10**exp
    if exp >= 0:
        return float(int(round(v)))
    return float(f"{v:.{-exp}f}")


class Vardiff:
    __slots__ = ("target_interval", "retarget_interval", "variance", "min_shares", "low", "high",
                 "since", "sum", "count")

    def __init__(self, *, target_interval: float, retarget_interval: float, variance: float, min_shares: int,
                 low: float, high: float, now: float):
        self.target_interval = target_interval
        self.retarget_interval = retarget_interval
        self.variance = variance
        self.min_shares = min_shares
        self.low = low
        self.high = high
        self.since = now
        self.sum = 0.0
        self.count = 0

    def clamp(self, d: float) -> float:
        return min(max(d, self.low), self.high)

    def reset(self, now: float) -> None:
        self.since = now
        self.sum = 0.0
        self.count = 0

    def _propose(self, current: float, now: float, fast: bool) -> float | None:
        elapsed = max(now - self.since, 1e-3)
        if self.count:
            ideal = self.sum / elapsed * self.target_interval
        else:
            # No share at all: at least halve; the hashrate is below what
            # `current` needs for one share per `elapsed` seconds.
            ideal = current * min(0.5, self.target_interval / elapsed)
        ratio = ideal / current
        if fast:
            if ratio < 4:  # ramp up early only when far too easy
                return None
        elif abs(ratio - 1) <= self.variance:
            self.reset(now)
            return None
        new = self.clamp(nice_difficulty(self.clamp(ideal)))
        self.reset(now)
        return new if new != current else None

    def on_share(self, credited: float, current: float, now: float) -> float | None:
        """Record an accepted share; return a new difficulty or None."""
        self.sum += credited
        self.count += 1
        elapsed = now - self.since
        if elapsed >= self.retarget_interval and self.count >= 1:
            return self._propose(current, now, fast=False)
        if self.count >= self.min_shares:
            return self._propose(current, now, fast=True)
        return None

    def on_tick(self, current: float, now: float) -> float | None:
        """Called periodically; lowers the difficulty of a miner that stopped
        finding shares (hashrate dropped, or the start difficulty was too high)."""
        elapsed = now - self.since
        if elapsed >= self.retarget_interval and self.count == 0 and current > self.low:
            return self._propose(current, now, fast=False)
        if elapsed >= 2 * self.retarget_interval:
            return self._propose(current, now, fast=False)
        return None
