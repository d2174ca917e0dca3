"""``DeadlineQueue`` on its own, on a ``task.Clock``: one timer for any
number of deadlines, in order, cleared and replaced ones never fired."""
from __future__ import annotations

from twisted.internet.task import Clock

from hashcoop.stratum.deadlines import DeadlineQueue


class Owner:
    def __init__(self, name):
        self.name = name
        self.timer = None


def queue():
    clock = Clock()
    fired = []
    return clock, DeadlineQueue(clock, lambda owner, reason: fired.append((clock.seconds(), owner.name, reason))), fired


def test_deadlines_fire_at_their_time_in_order_with_one_timer():
    clock, q, fired = queue()
    owners = [Owner(i) for i in range(1000)]
    for i, o in enumerate(owners):
        q.set(o, 15 if i % 2 else 60, "late")
        clock.advance(0.01)
    assert len(clock.getDelayedCalls()) == 1  # one reactor call, not 1,000
    clock.pump([0.005] * 3000)  # to t = 25
    assert [f[1] for f in fired] == list(range(1, 1000, 2))  # the 15 s ones, in the order they were set
    assert all(-1e-6 <= t - (15 + 0.01 * name) < 0.006 for t, name, _ in fired)  # each at its time
    clock.advance(60)
    assert [f[1] for f in fired[500:]] == list(range(0, 1000, 2)) and clock.getDelayedCalls() == []
    assert all(o.timer is None for o in owners) and q.pending() == 0


def test_a_cleared_deadline_never_fires_and_a_replaced_one_fires_with_its_new_reason():
    clock, q, fired = queue()
    a, b, c = Owner("a"), Owner("b"), Owner("c")
    q.set(a, 15, "subscribe-timeout")
    q.set(b, 15, "subscribe-timeout")
    q.set(c, 15, "subscribe-timeout")
    q.clear(a)  # first in its queue: dropped at once
    assert q.pending() == 2
    clock.advance(5)
    q.set(b, 60, "authorize-timeout")  # replaced: the 15 s entry goes stale
    clock.advance(10)
    assert fired == [(15, "c", "subscribe-timeout")]
    clock.advance(50)
    assert fired[-1] == (65, "b", "authorize-timeout") and len(fired) == 2
    assert clock.getDelayedCalls() == []


def test_a_shorter_deadline_set_later_rearms_the_timer_earlier():
    clock, q, fired = queue()
    q.set(Owner("long"), 60, "x")
    q.set(Owner("short"), 5, "y")
    assert clock.getDelayedCalls()[0].getTime() == 5
    clock.advance(5)
    assert fired == [(5, "short", "y")]
    assert clock.getDelayedCalls()[0].getTime() == 60


def test_stop_cancels_the_timer():
    clock, q, fired = queue()
    q.set(Owner("a"), 5, "x")
    q.stop()
    clock.advance(10)
    assert fired == [] and clock.getDelayedCalls() == []
