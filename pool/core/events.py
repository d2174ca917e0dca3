"""Events the pool emits, and the sink interface that consumes them.

Accepting a share and storing it are decoupled: the Stratum side calls the
sink synchronously and the sink must return at once (queue, batch, write
later). Redis accounting, metrics and logs are sinks.
"""
from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

log = logging.getLogger("hashcoop.events")


@dataclass(slots=True, frozen=True)
class ShareAccepted:
    time: float
    address: str
    worker: str
    difficulty: float  # credited: the difficulty the job was sent with
    share_difficulty: float  # what the hash actually achieved
    job_id: str
    height: int
    hash: str  # header hash, display hex; unique, so it is also the share id
    network_difficulty: float
    is_block: bool = False
    port: int = 0
    ip: str = ""


@dataclass(slots=True, frozen=True)
class ShareRejected:
    time: float
    reason: str  # a domain value, see hashcoop.pool.core.shares.Reject
    address: str | None = None
    worker: str | None = None
    difficulty: float = 0.0
    job_id: str | None = None
    port: int = 0
    ip: str = ""


@dataclass(slots=True, frozen=True)
class BlockFound:
    time: float
    height: int
    hash: str  # display hex
    prevhash: str
    address: str
    worker: str
    reward: int  # coinbase value in satoshis (subsidy + fees)
    share_difficulty: float
    network_difficulty: float
    job_id: str
    block_hex: str = field(repr=False)


@dataclass(slots=True, frozen=True)
class BlockStatus:
    """What the nodes said of a found block, and later whether it is on the
    main chain. ``status`` is one of: 'submitted' (a node took it),
    'rejected' (every node that answered rejected it), 'confirmed' (in the
    main chain of a node), 'orphaned' (left the main chain), 'pending'
    (no verdict yet: inconclusive, timeout or no node reachable)."""

    time: float
    height: int
    hash: str
    status: str
    verdicts: dict[str, str | None] = field(default_factory=dict)  # node -> BIP22 string (None = accepted)
    reason: str | None = None


@runtime_checkable
class EventSink(Protocol):
    def share_accepted(self, ev: ShareAccepted) -> None: ...

    def share_rejected(self, ev: ShareRejected) -> None: ...

    def block_found(self, ev: BlockFound) -> None: ...

    def block_status(self, ev: BlockStatus) -> None: ...


def _missing(sink, name: str):
    def call(ev):
        return getattr(sink, name)(ev)  # raises AttributeError, as an unbound lookup would

    return call


class MultiSink:
    """Fans events out to several sinks; one failing sink never stops the
    others or the caller. Add sinks with :meth:`add`."""

    _EVENTS = ("share_accepted", "share_rejected", "block_found", "block_status")

    def __init__(self, *sinks: EventSink):
        self.sinks = list(sinks)
        self._bind()

    def add(self, sink: EventSink) -> None:
        self.sinks.append(sink)
        self._bind()

    def _bind(self) -> None:
        # (sink, bound method) pairs, looked up once per sink rather than
        # once per event; a missing method fails (and is logged) when called
        self._bound = {name: tuple((s, getattr(s, name, None) or _missing(s, name)) for s in self.sinks)
                       for name in self._EVENTS}
        self._bound_count = len(self.sinks)

    def _each(self, name: str, ev) -> None:
        if self._bound_count != len(self.sinks):
            self._bind()
        for sink, fn in self._bound[name]:
            try:
                fn(ev)
            except Exception:  # a sink bug must not reject a miner's share
                log.exception("event sink %r failed on %s", sink, name)

    def share_accepted(self, ev: ShareAccepted) -> None:
        self._each("share_accepted", ev)

    def share_rejected(self, ev: ShareRejected) -> None:
        self._each("share_rejected", ev)

    def block_found(self, ev: BlockFound) -> None:
        self._each("block_found", ev)

    def block_status(self, ev: BlockStatus) -> None:
        self._each("block_status", ev)


class MemorySink:
    """Keeps counters and the most recent events in memory (bounded)."""

    def __init__(self, keep: int = 10000):
        self.accepted: deque[ShareAccepted] = deque(maxlen=keep)
        self.rejected: deque[ShareRejected] = deque(maxlen=keep)
        self.blocks: list[BlockFound] = []
        self.statuses: list[BlockStatus] = []
        self.accepted_count = 0
        self.accepted_difficulty = 0.0
        self.rejected_by_reason: Counter[str] = Counter()

    def share_accepted(self, ev: ShareAccepted) -> None:
        self.accepted.append(ev)
        self.accepted_count += 1
        self.accepted_difficulty += ev.difficulty

    def share_rejected(self, ev: ShareRejected) -> None:
        self.rejected.append(ev)
        self.rejected_by_reason[ev.reason] += 1

    def block_found(self, ev: BlockFound) -> None:
        self.blocks.append(ev)

    def block_status(self, ev: BlockStatus) -> None:
        self.statuses.append(ev)


class LoggingSink:
    """Logs blocks always, and shares at debug level."""

    def __init__(self, logger: logging.Logger | None = None):
        self.log = logger or logging.getLogger("hashcoop.shares")

    def share_accepted(self, ev: ShareAccepted) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("share accepted %s.%s diff=%g got=%.4g job=%s", ev.address, ev.worker, ev.difficulty, ev.share_difficulty, ev.job_id)

    def share_rejected(self, ev: ShareRejected) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("share rejected %s.%s reason=%s job=%s ip=%s", ev.address, ev.worker, ev.reason, ev.job_id, ev.ip)

    def block_found(self, ev: BlockFound) -> None:
        self.log.info("BLOCK FOUND height=%d hash=%s by %s.%s reward=%d sat (share difficulty %.4g, network %.4g)",
                         ev.height, ev.hash, ev.address, ev.worker, ev.reward, ev.share_difficulty, ev.network_difficulty)

    def block_status(self, ev: BlockStatus) -> None:
        # hashcoop.pool.node.blocks logs each status change; this is for debugging sinks
        self.log.debug("block %d %s: %s %s%s", ev.height, ev.hash, ev.status, ev.verdicts or "", f" ({ev.reason})" if ev.reason else "")


@dataclass(slots=True, frozen=True)
class LoggedShare:
    """One accepted share as the durable share log keeps it."""

    seq: int  # global sequence number (one order for every stratum process)
    address: str
    worker: str
    difficulty: float  # credited
    share_difficulty: float
    job_id: str
    hash: str  # header hash, display hex: the share id
    time: float
    is_block: bool
    batch: str  # "<run>:<counter>" of the batch that carried it
