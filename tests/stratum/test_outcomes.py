"""``ShareEvents`` on its own, on a ``task.Clock``, with a stand-in session:
rejected shares go to the sink and the flood policy, whose steps it carries
out (fresh work, close, ban); requests past their budget close like a flood."""
from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock

from hashcoop.pool.core.events import MemorySink
from hashcoop.pool.core.shares import Reject
from hashcoop.pool.metrics import Metrics
from hashcoop.stratum.flood import OVERDRAWN, REFUSED, BanList, FloodPolicy, RequestBudget
from hashcoop.stratum.outcomes import ShareEvents


class Proto:
    def __init__(self):
        self.closed = None

    def close(self, reason):
        self.closed = reason


class Session:
    def __init__(self, ip="10.1.0.1"):
        self.ip = ip
        self.proto = Proto()
        self.workers = {"addr.w": None}
        self.port = SimpleNamespace(port=3333)
        self.difficulty = 1.0
        self.flood = None
        self.fresh = 0

    def fresh_work(self):
        self.fresh += 1
        return True


def events(exempt=lambda ip: False):
    clock = Clock()
    clock.advance(100)
    sink, metrics = MemorySink(), Metrics()
    ev = ShareEvents(clock=clock, jobs=None, sink=sink, metrics=metrics, flood=FloodPolicy(window=10),
                     bans=BanList(ban_after=2, ban_period=60, ban_seconds=30), requests=RequestBudget(rate=1, burst=5),
                     exempt=exempt, ready={})
    return clock, sink, metrics, ev


def reject(ev, s, n, clock):
    for _ in range(n):
        ev.share_rejected(s, None, Reject.BAD_NONCE, ["addr.w", "job1"])
        clock.advance(0.1)


def test_mostly_invalid_shares_get_fresh_work_then_a_close_then_a_ban():
    clock, sink, metrics, ev = events()
    a = Session()
    reject(ev, a, 10, clock)
    assert a.fresh == 1 and a.proto.closed is None
    reject(ev, a, 10, clock)
    assert a.proto.closed == "flood" and sink.rejected_by_reason[Reject.BAD_NONCE] == 20
    b = Session()
    reject(ev, b, 20, clock)
    assert b.proto.closed == "flood" and ev.bans.banned("10.1.0.1", clock.seconds()) is not None
    assert metrics.registry.get_sample_value("hashcoop_flood_actions_total", {"action": "ban"}) == 1


def test_an_exempt_network_is_closed_but_never_banned():
    clock, sink, metrics, ev = events(exempt=lambda ip: ip.startswith("10."))
    for _ in range(3):
        s = Session()
        reject(ev, s, 20, clock)
        assert s.proto.closed == "flood"
    assert ev.bans.banned("10.1.0.1", clock.seconds()) is None


def test_requests_overdrawn_close_the_connection_and_strike_its_ip():
    clock, sink, metrics, ev = events()
    s = Session()
    ev.request_refused(s, REFUSED, 0.0)
    assert s.proto.closed is None
    assert metrics.registry.get_sample_value("hashcoop_requests_refused_total") == 1
    ev.request_refused(s, OVERDRAWN, 0.0)
    assert s.proto.closed == "request-rate" and ev.bans.strikes["10.1.0.1"]
