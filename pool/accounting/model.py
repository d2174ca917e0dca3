"""Batches: what the reactor hands to the writer every flush interval.

The reactor side only appends events to a ``Collector`` (O(1), no I/O);
``Collector.take`` turns what accumulated into a ``Batch`` with a unique
id (``run``, ``counter``). The batch id makes a batch idempotent in Redis:
a batch written just before a crash and replayed from the journal after
the restart is recognised and skipped.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from hashcoop.pool.core.events import BlockFound, BlockStatus, ShareAccepted, ShareRejected

_UNSAFE = re.compile(r"[\s:|]")


def clean_token(s: str, limit: int = 128) -> str:
    """Names go into keys and space-separated records: no whitespace or
    ``:``. The Stratum side already restricts workers to [A-Za-z0-9_-];
    this is the last line of defence, not the policy."""
    s = _UNSAFE.sub("_", s)[:limit]
    return s or "_"


@dataclass(slots=True)
class RejectCount:
    """Rejected shares of one (address, worker, reason) within a batch,
    aggregated: rejects cost no per-share write."""

    address: str | None
    worker: str | None
    reason: str
    count: int = 0
    difficulty: float = 0.0
    last: float = 0.0


@dataclass(slots=True)
class Batch:
    run: str
    counter: int
    created: float
    shares: list[ShareAccepted] = field(default_factory=list)
    rejects: list[RejectCount] = field(default_factory=list)
    blocks: list[BlockFound] = field(default_factory=list)
    statuses: list[BlockStatus] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.run}:{self.counter}"

    def __len__(self) -> int:
        return len(self.shares)

    def empty(self) -> bool:
        return not (self.shares or self.rejects or self.blocks or self.statuses)


class Collector:
    """The in-memory queue the event sink appends to, on the reactor thread."""

    __slots__ = ("shares", "rejects", "blocks", "statuses")

    def __init__(self) -> None:
        self.shares: list[ShareAccepted] = []
        self.rejects: dict[tuple, RejectCount] = {}
        self.blocks: list[BlockFound] = []
        self.statuses: list[BlockStatus] = []

    def __len__(self) -> int:
        return len(self.shares)

    def empty(self) -> bool:
        return not (self.shares or self.rejects or self.blocks or self.statuses)

    def add_share(self, ev: ShareAccepted) -> None:
        self.shares.append(ev)

    def add_reject(self, ev: ShareRejected) -> None:
        key = (ev.address, ev.worker, ev.reason)
        r = self.rejects.get(key)
        if r is None:
            r = self.rejects[key] = RejectCount(ev.address, ev.worker, ev.reason)
        r.count += 1
        if math.isfinite(ev.difficulty) and ev.difficulty > 0:
            r.difficulty += ev.difficulty
        if ev.time > r.last:
            r.last = ev.time

    def add_block(self, ev: BlockFound) -> None:
        self.blocks.append(ev)

    def add_status(self, ev: BlockStatus) -> None:
        self.statuses.append(ev)

    def take(self, run: str, counter: int, now: float) -> Batch:
        b = Batch(run, counter, now, self.shares, list(self.rejects.values()), self.blocks, self.statuses)
        self.shares, self.rejects, self.blocks, self.statuses = [], {}, [], []
        return b
