"""Handshake deadlines for many connections with one timer.

A connection must subscribe within ``stratum.subscribe_timeout`` and then
authorize within ``authorize_timeout``. Thousands of miners connecting at
once would cost thousands of reactor timers; instead, deadlines of one
length fall due in the order they were set, so each length keeps a FIFO
and one reactor call waits for the earliest deadline of all.

An owner (a ``MinerSession``) holds its live entry in its ``timer``
attribute: clearing or replacing a deadline only changes that attribute,
and the stale entry is dropped when it reaches the front of its queue.
"""
from __future__ import annotations

from collections import deque
from typing import Callable


class DeadlineQueue:
    """``set(owner, seconds, reason)`` calls ``expire(owner, reason)`` after
    ``seconds`` unless ``clear(owner)`` or another ``set`` comes first.
    ``clock`` is an ``IReactorTime`` (a ``task.Clock`` in tests)."""

    def __init__(self, clock, expire: Callable[[object, str], None]):
        self.clock = clock
        self.expire = expire
        self._queues: dict[float, deque] = {}  # seconds -> FIFO of (due, owner, reason)
        self._call = None

    def set(self, owner, seconds: float, reason: str) -> None:
        entry = (self.clock.seconds() + seconds, owner, reason)
        owner.timer = entry
        queue = self._queues.get(seconds)
        if queue is None:
            queue = self._queues[seconds] = deque()
        queue.append(entry)
        self._prune()
        self._arm(entry[0])

    def clear(self, owner) -> None:
        if owner.timer is not None:
            owner.timer = None  # its queue entry is dropped when it comes up...
            self._prune()  # ...or now, if it is first: miners mostly finish their handshakes in order

    def stop(self) -> None:
        """Cancel the timer (the service stops); the entries stay."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def pending(self) -> int:
        """Entries still queued, live or stale (for tests and memory checks)."""
        return sum(len(q) for q in self._queues.values())

    def _prune(self) -> None:
        for queue in self._queues.values():
            while queue and queue[0][1].timer is not queue[0]:
                queue.popleft()

    def _arm(self, when: float) -> None:
        call = self._call
        if call is not None and call.active():
            if call.getTime() <= when:
                return
            call.cancel()
        self._call = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._due)

    def _due(self) -> None:
        self._call = None
        now = self.clock.seconds() + 1e-9  # a deadline is due at its time, whatever the float rounding
        later = None
        for queue in self._queues.values():
            while queue:
                entry = queue[0]
                owner = entry[1]
                if owner.timer is not entry:  # cleared or replaced
                    queue.popleft()
                    continue
                if entry[0] > now:
                    later = entry[0] if later is None else min(later, entry[0])
                    break
                queue.popleft()
                owner.timer = None
                self.expire(owner, entry[2])
        if later is not None:
            self._arm(later)
