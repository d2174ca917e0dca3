"""The reactor side of share accounting: the event sink and the service.

``AccountingSink`` is what the Stratum server calls, synchronously, once
per share: it appends to an in-memory ``Collector`` and returns. Every
``flush_interval`` the service takes what accumulated as one batch, has
the journal thread append it to the journal, then has the Redis thread
write it (``writer.py``).
"""
from __future__ import annotations

import logging
import uuid
from functools import partial
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from hashcoop.pool.accounting.journal import Journal
from hashcoop.pool.accounting.keys import Keys
from hashcoop.pool.accounting.model import Collector
from hashcoop.pool.accounting.ops import Settings
from hashcoop.pool.accounting.writer import DEFAULT_MAX_BUFFERED, Item, RedisWriter, Report, append, recover, redis_client, spill
from hashcoop.pool.core.events import BlockFound, BlockStatus, ShareAccepted, ShareRejected

log = logging.getLogger("hashcoop.accounting")

STILL_DOWN_LOG_INTERVAL = 30.0


class AccountingSink:
    """The ``EventSink``: O(1), no I/O, never raises on a well-formed event."""

    __slots__ = ("collector",)

    def __init__(self, collector: Collector):
        self.collector = collector

    def share_accepted(self, ev: ShareAccepted) -> None:
        self.collector.add_share(ev)

    def share_rejected(self, ev: ShareRejected) -> None:
        self.collector.add_reject(ev)

    def block_found(self, ev: BlockFound) -> None:
        self.collector.add_block(ev)

    def block_status(self, ev: BlockStatus) -> None:
        self.collector.add_status(ev)


class AccountingService(Service):
    """Every ``flush_interval``: take what the sink collected as one batch,
    have the journal thread append it, then hand the journaled batches to
    the Redis thread. At most one call is outstanding on each thread; while
    one is busy the next batch simply grows (which also makes it cheaper
    to write). Shares waiting for Redis are bounded in memory by
    ``max_buffered``; beyond it they wait in the journal file only."""

    name = "accounting"

    def __init__(self, reactor, writer: RedisWriter, journal_dir, *, flush_interval: float = 0.25,
                 max_buffered: int = DEFAULT_MAX_BUFFERED, journal_fsync: bool = False, segment_bytes: int = 1 << 20, metrics=None,
                 clock=None, run_in_thread=None, run_id: str | None = None, stop_timeout: float = 5.0):
        self.reactor = reactor
        self.clock = clock or reactor
        self.writer = writer
        self.journal_dir = Path(journal_dir)
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.journal_fsync = journal_fsync
        self.segment_bytes = segment_bytes
        self.metrics = metrics
        self.stop_timeout = stop_timeout
        self.collector = Collector()
        self.sink = AccountingSink(self.collector)
        self.run = run_id or uuid.uuid4().hex[:16]
        self.counter = 0
        # run_in_thread(which, fn, *args) -> Deferred; which is "journal" or "redis"
        self._run_in_thread = run_in_thread
        self._pools: dict[str, ThreadPool] = {}
        self.journal = None
        self._journal_busy = True  # until the journal is open
        self._redis_busy = False
        self._journaled: list[Item] = []  # journaled, not yet handed to the Redis thread
        self._journaling = 0  # shares in the journal thread's hands
        self._handed = 0  # shares handed to the Redis thread, not yet reported back
        self._idle_waiters: list[Deferred] = []
        self._backlog = 0
        self._last: Report | None = None
        self._down_since: float | None = None
        self._down_logged = 0.0
        self._spilling = False  # shares wait in the journal only (logged once per episode)
        self._spilled_episode = 0
        self._spill_logged = 0.0
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.clock
        self.batches_written = 0
        self.shares_written = 0

    # -- service ----------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        if self._run_in_thread is None:
            for which in ("journal", "redis"):
                pool = self._pools[which] = ThreadPool(minthreads=1, maxthreads=1, name=f"hashcoop-accounting-{which}")
                pool.start()
            self._run_in_thread = lambda which, fn, *a, **kw: deferToThreadPool(self.reactor, self._pools[which], fn, *a, **kw)
        # Opened here, so a journal another process holds (two pools on one
        # data_dir) stops the pool at start; reading it back is threaded.
        self.journal = Journal(self.journal_dir, segment_bytes=self.segment_bytes, fsync=self.journal_fsync)
        self.writer.journal = self.journal
        log.info("share accounting: batches every %g s, run %s, journal %s", self.flush_interval, self.run, self.journal_dir)
        self._run_in_thread("journal", recover, self.journal).addCallbacks(self._opened, self._recover_failed)
        self._loop.start(self.flush_interval, now=False)

    def _opened(self, recovered: list[Item]) -> None:
        self._journal_busy = False
        if recovered:
            n = sum(i.shares for i in recovered)
            log.warning("journal: replaying %d batches (%d accepted shares) left by an earlier run", len(recovered), n)
            if self.metrics is not None:
                self.metrics.journal_replayed_batches.inc(len(recovered))
            self._journaled.extend(recovered)
            self._spill_journaled()
        self._kick()
        self._notify_idle()

    def _recover_failed(self, f: Failure) -> None:
        log.error("accounting journal %s could not be read back: %s; new shares are journaled and written as usual",
                  self.journal_dir, f.getTraceback())
        self._journal_busy = False
        self._notify_idle()

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()

        def final(_):
            batch = self._take()
            d = self._run_in_thread("journal", append, self.journal, batch) if batch is not None else succeed(None)

            def to_redis(item):
                items, self._journaled = self._journaled, []
                if item is not None:
                    items.append(item)
                self._redis_busy = True
                return self._run_in_thread("redis", self.writer.close, items, self.stop_timeout).addBoth(self._written)

            return d.addCallback(to_redis).addCallback(
                lambda _: self._run_in_thread("journal", self.journal.close))

        def stop_pools(result):
            for pool in self._pools.values():
                pool.stop()
            self._pools.clear()
            if isinstance(result, Failure):
                log.error("accounting did not stop cleanly: %s", result.getTraceback())
            return None

        return self._when_idle().addCallback(final).addBoth(stop_pools)

    # -- the flush loop ------------------------------------------------------------
    def tick(self) -> None:
        if not self._journal_busy:
            batch = self._take()
            if batch is not None:
                self._journal_busy = True
                self._journaling = len(batch)
                self._run_in_thread("journal", append, self.journal, batch).addBoth(self._appended)
        self._kick()
        self._gauge_buffered()

    def _take(self):
        if self.collector.empty():
            return None
        self.counter += 1
        return self.collector.take(self.run, self.counter, self.clock.seconds())

    def _appended(self, result) -> None:
        self._journal_busy = False
        self._journaling = 0
        if isinstance(result, Failure):
            log.error("journal append failed: %s", result.getTraceback())
        else:
            self._journaled.append(result)
            if result.ref is None and self.metrics is not None:
                self.metrics.redis_errors.labels("journal").inc()
            self._spill_journaled()
        self._kick()
        self._notify_idle()

    def _spill_journaled(self) -> None:
        n = spill(self._journaled, self.max_buffered)
        if n:
            if self.metrics is not None:
                self.metrics.shares_spilled.inc(n)
            self._log_spill(n)

    def _kick(self) -> None:
        """Hand the journaled batches to the Redis thread, if it is free."""
        if self._redis_busy or not (self._journaled or self._backlog):
            return
        items, self._journaled = self._journaled, []
        self._redis_busy = True
        self._handed = sum(i.shares for i in items)
        self._run_in_thread("redis", self.writer.process, items).addBoth(self._written)

    def _written(self, result):
        self._redis_busy = False
        self._handed = 0
        if isinstance(result, Failure):
            log.error("accounting writer failed: %s", result.getTraceback())
        else:
            self._report(result)
        if self._journaled:
            self._kick()
        self._notify_idle()
        return None

    def _when_idle(self) -> Deferred:
        if not (self._journal_busy or self._redis_busy):
            return succeed(None)
        d = Deferred()
        self._idle_waiters.append(d)
        return d

    def _notify_idle(self) -> None:
        if self._journal_busy or self._redis_busy:
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)

    # -- metrics and logs --------------------------------------------------------------
    def buffered(self) -> int:
        """Accepted shares not yet in Redis: collected, journaled, queued."""
        queued = self._last.queued_shares if self._last else 0
        return len(self.collector) + self._journaling + sum(i.shares for i in self._journaled) + self._handed + queued

    def _log_spill(self, n: int) -> None:
        """Shares moved out of the full memory buffer: a warning when it
        starts, then one line per ``STILL_DOWN_LOG_INTERVAL`` at most (the
        metric counts every one), not one per flush interval."""
        now = self.clock.seconds()
        first = not self._spilling
        self._spilled_episode = n if first else self._spilled_episode + n
        if first or now - self._spill_logged >= STILL_DOWN_LOG_INTERVAL:
            self._spilling = True
            self._spill_logged = now
            log.warning("share buffer full (%d accepted shares in memory): %d%s accepted shares wait in the journal file "
                        "only (%d buffered in all)", self.max_buffered, self._spilled_episode, "" if first else " in all",
                        self.buffered())

    def _gauge_buffered(self) -> None:
        if self.metrics is not None:
            self.metrics.shares_buffered.set(self.buffered())

    def _report(self, r: Report) -> None:
        self._last = r
        self._backlog = r.queued_batches
        m = self.metrics
        now = self.clock.seconds()
        for n, seconds in r.applied:
            self.batches_written += 1
            self.shares_written += n
            if m is not None:
                m.redis_batch_shares.observe(n)
                m.redis_flush_seconds.observe(seconds)
        if m is not None:
            m.redis_up.set(1 if r.up else 0)
            m.shares_buffered.set(self.buffered())
            if r.spilled:
                m.shares_spilled.inc(r.spilled)
            for kind in r.errors:
                m.redis_errors.labels(kind).inc()
            if r.duplicates:
                m.redis_batches_duplicate.inc(r.duplicates)
            m.journal_bytes.set(r.journal_bytes)
        if r.duplicates:
            log.info("%d batches were already in Redis (replayed); skipped", r.duplicates)
        if r.spilled:
            self._log_spill(r.spilled)
        elif self._spilling and r.journal_only == 0 and not any(i.batch is None for i in self._journaled):
            self._spilling = False
            log.info("share buffer: the accepted shares held in the journal file only are all in Redis now (%d spilled)",
                        self._spilled_episode)
        for h in r.snapshots:
            log.info("PPLNS window snapshot taken for block %s", h)
        if r.went_down:
            self._down_since = self._down_logged = now
            log.warning("Redis unreachable (%s): accepted shares are buffered and journaled in %s; miners are not affected",
                        r.error, self.journal_dir)
        elif not r.up and self._down_since is not None and now - self._down_logged >= STILL_DOWN_LOG_INTERVAL:
            self._down_logged = now
            log.warning("Redis still unreachable after %ds (%s): %d accepted shares buffered, %d of them in the journal only",
                        now - self._down_since, r.error or "no attempt yet", self.buffered(), r.journal_only)
        if r.came_up:
            log.info("Redis reachable again after %ds: writing buffered shares (%d still queued)",
                        now - (self._down_since or now), r.queued_shares)
            self._down_since = None


def build_accounting(config, reactor, metrics=None) -> AccountingService:
    """The accounting service for a Config with a [redis] section."""
    rc = config.redis
    acct = config.accounting
    writer = RedisWriter(
        partial(redis_client, rc.url, socket_timeout=rc.socket_timeout, connect_timeout=rc.connect_timeout),
        Keys(rc.prefix), Settings.from_config(acct), max_buffered=acct.max_buffered_shares,
    )
    return AccountingService(reactor, writer, Path(config.pool.data_dir) / "accounting", flush_interval=acct.flush_interval,
                             max_buffered=acct.max_buffered_shares, journal_fsync=acct.journal_fsync, metrics=metrics)
