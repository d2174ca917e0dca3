"""Blocking reads (Redis, the payout ledger) for the HTTP side, kept off the
reactor and rationed so a dashboard cannot overload Redis:

* every read runs in a bounded thread pool (``deferToThreadPool``);
* answers are cached per key for ``ttl`` seconds (an LRU of ``max_entries``
  keys), errors for ``error_ttl`` seconds, so a broken Redis is not asked
  again by every request;
* concurrent requests for the same key share one read (single flight);
* a caller waits at most ``timeout`` seconds (``ReadTimeout``); the read
  itself carries on in its thread and still fills the cache;
* no more than ``max_pending`` reads are queued or running: beyond that a
  new key is refused at once with ``Busy``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure


class Busy(Exception):
    """Too many reads queued; try again shortly."""


class ReadTimeout(Exception):
    """The read took longer than the configured timeout."""


class Reads:
    def __init__(self, reactor, threadpool, *, ttl: float = 5.0, timeout: float = 5.0, max_pending: int = 64,
                 max_entries: int = 2048, error_ttl: float = 1.0, clock=None, run_in_thread=None):
        self.reactor = reactor
        self.clock = clock or reactor
        self.ttl = ttl
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_entries = max_entries
        self.error_ttl = min(error_ttl, ttl)
        self._run = run_in_thread or (lambda fn, *a: deferToThreadPool(reactor, threadpool, fn, *a))
        self._cache: OrderedDict[Hashable, tuple[float, bool, object]] = OrderedDict()
        self._inflight: dict[Hashable, list[defer.Deferred]] = {}
        self.pending = 0
        self.reads = 0  # reads started (for tests and the operator status)

    def get(self, key: Hashable, fn: Callable, *args, ttl: float | None = None) -> defer.Deferred:
        """Fires with ``fn(*args)`` (run in a thread), possibly cached."""
        now = self.clock.seconds()
        hit = self._cache.get(key)
        if hit is not None:
            expires, ok, value = hit
            if expires > now:
                self._cache.move_to_end(key)
                return defer.succeed(value) if ok else defer.fail(value)
            del self._cache[key]
        waiter = defer.Deferred()
        waiters = self._inflight.get(key)
        if waiters is not None:
            waiters.append(waiter)
        else:
            if self.pending >= self.max_pending:
                return defer.fail(Busy(f"{self.pending} reads in progress"))
            self._inflight[key] = [waiter]
            self.pending += 1
            self.reads += 1
            d = self._run(fn, *args)
            d.addBoth(self._done, key, self.ttl if ttl is None else ttl)
        waiter.addTimeout(self.timeout, self.reactor, onTimeoutCancel=self._timed_out)
        return waiter

    def _timed_out(self, result, timeout):
        if isinstance(result, Failure) and result.check(defer.CancelledError):
            return Failure(ReadTimeout(f"read took longer than {timeout:g} s"))
        return result

    def _done(self, result, key, ttl: float) -> None:
        self.pending -= 1
        waiters = self._inflight.pop(key, [])
        ok = not isinstance(result, Failure)
        self._cache[key] = (self.clock.seconds() + (ttl if ok else self.error_ttl), ok, result)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        for w in waiters:
            if not w.called:
                w.callback(result) if ok else w.errback(result)
        return None
