"""``MetricsSink``: the event sink behind the hashrate gauge and the opt-in
per-worker counters. Called synchronously by Stratum for every share, so
each call is a few dictionary updates (O(1), no I/O)."""
from __future__ import annotations

from hashcoop.pool.core.btc.target import HASHES_PER_DIFFICULTY
from hashcoop.pool.core.events import BlockFound, BlockStatus, ShareAccepted, ShareRejected
from hashcoop.pool.metrics import HASHRATE_WINDOWS

WINDOW_SECONDS = {"1m": 60, "5m": 300, "1h": 3600, "24h": 86400}
# (bucket seconds, windows it serves): 10 s buckets up to an hour, 5 min beyond
_FINE, _COARSE = 10, 300


class HashrateTracker:
    """Credited difficulty in 10 s buckets (kept 1 h) and 5 min buckets
    (kept 24 h); a window's rate divides by the time it covers, never more
    than the time since the tracker started."""

    def __init__(self, clock):
        self.clock = clock
        self.started = clock.seconds()
        self.fine: dict[int, float] = {}
        self.coarse: dict[int, float] = {}
        self._fine_last = self._coarse_last = None

    def add(self, t: float, difficulty: float) -> None:
        i = int(t // _FINE)
        self.fine[i] = self.fine.get(i, 0.0) + difficulty
        j = int(t // _COARSE)
        self.coarse[j] = self.coarse.get(j, 0.0) + difficulty
        if i != self._fine_last:
            self._fine_last = i
            for k in [k for k in self.fine if k < i - 3600 // _FINE - 1]:
                del self.fine[k]
        if j != self._coarse_last:
            self._coarse_last = j
            for k in [k for k in self.coarse if k < j - 86400 // _COARSE - 1]:
                del self.coarse[k]

    def rate(self, window: str) -> float:
        seconds = WINDOW_SECONDS[window]
        now = self.clock.seconds()
        size, buckets = (_FINE, self.fine) if seconds <= 3600 else (_COARSE, self.coarse)
        first = int((now - seconds) // size) + 1  # buckets that start within the window
        total = sum(d for i, d in buckets.items() if i >= first)
        covered = min(now - first * size, now - self.started)
        return total * HASHES_PER_DIFFICULTY / max(covered, 1.0)


class MetricsSink:
    def __init__(self, metrics, clock, *, per_worker: bool = False):
        self.metrics = metrics
        self.tracker = HashrateTracker(clock)
        for w in HASHRATE_WINDOWS:
            metrics.hashrate.labels(window=w).set_function(lambda w=w: self.tracker.rate(w))
        self.per_worker = per_worker
        if per_worker:
            metrics.enable_per_worker()

    def share_accepted(self, ev: ShareAccepted) -> None:
        self.tracker.add(ev.time, ev.difficulty)
        if self.per_worker:
            m = self.metrics
            m.worker_shares_accepted.labels(ev.address, ev.worker).inc()
            m.worker_share_difficulty_accepted.labels(ev.address, ev.worker).inc(ev.difficulty)
            m.worker_last_share.labels(ev.address, ev.worker).set(ev.time)

    def share_rejected(self, ev: ShareRejected) -> None:
        if self.per_worker and ev.address and ev.worker:
            self.metrics.worker_shares_rejected.labels(ev.address, ev.worker, ev.reason).inc()

    def block_found(self, ev: BlockFound) -> None:
        pass

    def block_status(self, ev: BlockStatus) -> None:
        pass
