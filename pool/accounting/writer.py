"""The Redis and journal adapters. Two single-thread pools, so neither
blocks the reactor nor the other:

* the journal thread appends every batch to the journal (``append``) as
  soon as the reactor hands it over, so a crash loses at most the shares
  of the last flush interval, even while Redis is slow or away;
* the Redis thread (``RedisWriter``) writes the journaled batches to Redis
  in order, one Lua call per batch. redis-py is blocking; one thread keeps
  the order.

A batch leaves the journal only once Redis has it (and a few seconds
later, see ``RedisWriter.recent``). While Redis is down the batches queue
(up to ``max_buffered`` shares in memory, the rest in the journal file
only) and are written in order when it returns. After a crash the next
start finds the journal and replays it; each batch carries a unique id
that Redis records in the same Lua call, so a batch written just before
the crash is not applied twice.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hashcoop.pool.accounting import lua
from hashcoop.pool.accounting.journal import Journal, JournalError, Ref
from hashcoop.pool.accounting.keys import Keys
from hashcoop.pool.accounting.model import Batch
from hashcoop.pool.accounting.ops import Settings, build_payload

log = logging.getLogger("hashcoop.accounting")

BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0
AOF_FSYNC_WAIT = 1.1  # appendfsync everysec: what Redis acknowledged is on disk within about a second


def redis_client(url: str, *, socket_timeout: float = 2.0, connect_timeout: float = 1.0) -> redis.Redis:
    """A client that fails fast (no hidden retries: the writer retries, in
    order, and a retried script is harmless anyway)."""
    return redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
                                retry=Retry(NoBackoff(), 0), retry_on_timeout=False)


@dataclass(slots=True)
class Report:
    """What one writer call did, for the reactor's metrics and logs."""

    up: bool = True
    queued_shares: int = 0  # accepted shares not yet in Redis
    queued_batches: int = 0
    journal_only: int = 0  # of the queued shares, those held only in the journal file
    spilled: int = 0  # shares moved out of memory during this call
    applied: list[tuple[int, float]] = field(default_factory=list)  # (shares, seconds) per batch written
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    error: str | None = None
    went_down: bool = False
    came_up: bool = False
    journal_bytes: int = 0
    snapshots: list[str] = field(default_factory=list)  # blocks whose window snapshot was taken


class Item:
    """A batch on its way to Redis. ``batch`` is None once spilled: it is
    then read back from the journal at ``ref``."""

    __slots__ = ("batch", "ref", "shares", "run", "counter")

    def __init__(self, batch: Batch, ref: Ref | None):
        self.batch: Batch | None = batch
        self.ref = ref
        self.shares = len(batch)
        self.run = batch.run
        self.counter = batch.counter


# -- journal thread -------------------------------------------------------------
def recover(journal: Journal) -> list[Item]:
    """What an earlier run left unapplied in the journal, in order."""
    return [Item(b, ref) for b, ref in journal.recover()]


def append(journal: Journal, batch: Batch) -> Item:
    try:
        ref = journal.append(batch)
    except OSError as e:
        log.error("cannot append batch %s to the journal: %s (held in memory only)", batch.id, e)
        ref = None
    return Item(batch, ref)


KEEP_BATCHES = 2
DEFAULT_MAX_BUFFERED = 5_000


def spill(items, keep: int, keep_batches: int = KEEP_BATCHES) -> int:
    """Drop the in-memory copies of the newest journaled batches so that at
    most ``keep`` shares stay in memory, but never those of the oldest
    ``keep_batches`` (a busy pool's batch can hold more than ``keep``
    shares: the next batches to write are not read back from the file);
    returns how many shares moved to the journal only.

    Why the limit is small (``accounting.max_buffered_shares``, 5,000 by
    default): the shares of a backlog are small Python objects allocated
    among long-lived ones, so once the backlog is written CPython cannot
    hand their memory back. A 100,000-share backlog left the pool's RSS
    33 MB higher for good; with 5,000 the same Redis stall leaves nothing
    measurable (RELIABILITY.md). Reading a batch back from the journal
    costs about what writing it cost."""
    in_memory = sum(i.shares for i in items if i.batch is not None)
    spilled = 0
    for n, item in enumerate(reversed(items)):
        if in_memory <= keep or len(items) - n <= keep_batches:
            break
        if item.batch is not None and item.ref is not None:
            item.batch = None
            in_memory -= item.shares
            spilled += item.shares
    return spilled


# -- Redis thread -----------------------------------------------------------------
class RedisWriter:
    def __init__(self, connect: Callable[[], redis.Redis], keys: Keys, settings: Settings, *,
                 max_buffered: int = DEFAULT_MAX_BUFFERED, drain_seconds: float = 1.0, replay_window: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.connect = connect
        self.keys = keys
        self.settings = settings
        self.max_buffered = max_buffered
        self.drain_seconds = drain_seconds
        self.replay_window = replay_window
        self.clock = clock
        self.journal: Journal | None = None  # set once the journal thread has opened it
        self.queue: deque[Item] = deque()
        self.queued_shares = 0
        self.mem_shares = 0
        self.up = True
        self.retry_at = 0.0
        self.backoff = BACKOFF_FIRST
        self._client: redis.Redis | None = None
        self._apply = None
        # Batches Redis acknowledged in the last ``replay_window`` seconds
        # keep their journal records: a Redis that crashes with appendfsync
        # everysec can come back without its last second of writes. Each
        # batch tells the script the last counter Redis acknowledged for its
        # run; if Redis has less, it lost writes, and the recent batches are
        # sent again, in order (those it kept are skipped by batch id).
        self.recent: deque[tuple[float, Item]] = deque()
        self.acked: dict[str, int] = {}

    def process(self, items: list[Item]) -> Report:
        """Queue journaled batches, then write what is queued, in order."""
        r = Report()
        for item in items:
            self.queue.append(item)
            self.queued_shares += item.shares
            if item.batch is not None:
                self.mem_shares += item.shares
        r.spilled = self._spill()
        if self.up or self.clock() >= self.retry_at:
            self._drain(r)
        return self._finish(r)

    def close(self, items: list[Item], deadline: float) -> Report:
        """Last call: try for up to ``deadline`` seconds to write everything;
        what is left stays in the journal and is replayed at the next start."""
        r = self.process(items)
        end = self.clock() + deadline
        while self.queue and self.up and self.clock() < end:
            self._drain(r)
        if self.queue:
            log.warning("stopping with %d accepted shares not yet in Redis; they stay in the journal", self.queued_shares)
        elif self.up and self.recent:
            # Give Redis's once-a-second AOF fsync time to cover the last
            # batches, then let their journal records go: a clean stop
            # leaves nothing to replay.
            wait = AOF_FSYNC_WAIT - (self.clock() - self.recent[-1][0])
            if wait > 0:
                time.sleep(min(wait, deadline))
            while self.recent:
                _, item = self.recent.popleft()
                if item.ref is not None:
                    self.journal.applied(item.ref)
        if self._client is not None:
            self._client.close()
        return self._finish(r)

    # -- internals ------------------------------------------------------------
    def _spill(self) -> int:
        if self.mem_shares <= self.max_buffered:
            return 0
        n = spill(self.queue, self.max_buffered)
        self.mem_shares -= n
        return n

    def _script(self):
        if self._apply is None:
            self._client = self.connect()
            self._apply = lua.register(self._client, lua.APPLY)
        return self._apply

    def _failed(self, r: Report, e: Exception) -> None:
        kind = type(e).__name__
        r.errors.append(kind)
        r.error = f"{kind}: {e}"
        if self.up:
            r.went_down = True
        self.up = False
        self.retry_at = self.clock() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _lost(self, r: Report, run: str, has: int) -> None:
        """Redis holds batches of ``run`` only up to ``has``, less than it
        acknowledged: send the recent batches again, ahead of the queue."""
        expected = self.acked.get(run, 0)
        items = [item for _, item in self.recent]
        self.recent.clear()
        self.acked.clear()
        for item in reversed(items):
            self.queue.appendleft(item)
            self.queued_shares += item.shares
            if item.batch is not None:
                self.mem_shares += item.shares
        covered = any(i.run == run and i.counter == has + 1 for i in items) or has + 1 > expected
        log.warning("Redis lost acknowledged writes (run %s: has batch %d, acknowledged %d); sending the last %d batches "
                    "(%d shares) again, those it kept are skipped", run, has, expected, len(items), sum(i.shares for i in items))
        if not covered:
            log.error("batches %d..%d of run %s are no longer in the journal: their shares are lost from accounting "
                      "(Redis lost more than %g s of writes; see docs/redis.md on persistence)", has + 1, expected, run,
                      self.replay_window)
            r.errors.append("lost")

    def _drain(self, r: Report) -> None:
        start = self.clock()
        while self.queue:
            item = self.queue[0]
            batch = item.batch
            if batch is None:
                try:
                    batch = self.journal.read(item.ref)
                except (OSError, JournalError) as e:
                    log.error("journal record %s unreadable (%s): %d shares lost from accounting", item.ref, e, item.shares)
                    r.errors.append("journal")
                    self._done(item, retain=False)
                    continue
            t0 = time.perf_counter()
            prev = self.acked.get(batch.run, 0)
            try:
                res = self._script()(keys=[], args=[build_payload(batch, self.keys, self.settings, prev)])
            except redis.RedisError as e:
                self._failed(r, e)
                return
            if not self.up:
                r.came_up = True
            self.up = True
            self.backoff = BACKOFF_FIRST
            code = int(res[0])
            if code == 2:
                self._lost(r, batch.run, int(res[1]))
                continue
            if code == 0:
                r.duplicates += 1
            else:
                r.applied.append((len(batch), time.perf_counter() - t0))
                r.snapshots.extend(x.decode() if isinstance(x, bytes) else str(x) for x in res[3:])
            if batch.counter > self.acked.get(batch.run, 0):
                self.acked[batch.run] = batch.counter
            self._done(item)
            if self.clock() - start >= self.drain_seconds:
                break
        self._age_recent()

    def _done(self, item: Item, retain: bool = True) -> None:
        self.queue.popleft()
        self.queued_shares -= item.shares
        if item.batch is not None:
            self.mem_shares -= item.shares
        if retain and item.ref is not None:
            item.batch = None  # it can be read back from the journal
            self.recent.append((self.clock(), item))
        elif retain:
            self.recent.append((self.clock(), item))
        elif item.ref is not None:
            self.journal.applied(item.ref)

    def _age_recent(self) -> None:
        cutoff = self.clock() - self.replay_window
        while self.recent and (self.recent[0][0] < cutoff or len(self.recent) > 100_000):
            _, item = self.recent.popleft()
            if item.ref is not None:
                self.journal.applied(item.ref)

    def _finish(self, r: Report) -> Report:
        r.up = self.up
        r.queued_shares = self.queued_shares
        r.queued_batches = len(self.queue)
        r.journal_only = self.queued_shares - self.mem_shares
        r.journal_bytes = self.journal.bytes if self.journal is not None else 0
        return r
