"""Slowloris on a clock, with the default deadlines (15 s to subscribe, 60 s
to authorize, 900 s without an accepted share): every way of stalling a
handshake ends on time, and nothing a peer sends stretches a deadline.
The same on real sockets, shortened: test_connections.py."""
from __future__ import annotations

import pytest

from tests.stratum.harness import ADDR, Harness, config

pytestmark = pytest.mark.hostile


@pytest.fixture
def h():
    h = Harness(config())
    assert (h.server.subscribe_timeout, h.server.authorize_timeout, h.server.idle_timeout) == (15.0, 60.0, 900.0)
    h.server._sweeper.clock = h.reactor
    h.server._sweeper.start(0.1, now=False)
    return h


def closed_at(h, c, step=0.1, limit=2000.0):
    t0 = h.reactor.seconds()
    while c.connected:
        h.reactor.advance(step)
        assert h.reactor.seconds() - t0 < limit, "never closed"
    return h.reactor.seconds()


def test_never_subscribes_closed_at_15s(h):
    t0 = h.reactor.seconds()
    c = h.connect(port=1)
    assert closed_at(h, c) - t0 == pytest.approx(15.0, abs=0.11)
    assert h.metric("hashcoop_disconnects_total", reason="subscribe-timeout") == 1


def test_authorizing_without_subscribing_does_not_stretch_the_15s(h):
    t0 = h.reactor.seconds()
    c = h.connect(port=1)
    h.reactor.advance(14.0)
    assert c.call("mining.authorize", [ADDR + ".w", "x"])["result"] is True
    assert closed_at(h, c) - t0 == pytest.approx(15.0, abs=0.11)


def test_subscribed_never_authorized_closed_60s_after_the_subscribe(h):
    c = h.connect(port=1)
    h.reactor.advance(5.0)
    t_sub = h.reactor.seconds()
    c.call("mining.subscribe", [])
    assert closed_at(h, c) - t_sub == pytest.approx(60.0, abs=0.11)
    assert h.metric("hashcoop_disconnects_total", reason="authorize-timeout") == 1


def test_subscribing_again_does_not_stretch_the_60s(h):
    c = h.connect(port=1)
    t_sub = h.reactor.seconds()
    c.call("mining.subscribe", [])
    for _ in range(5):
        h.reactor.advance(50.0)
        if not c.connected:
            break
        c.call("mining.subscribe", [])
    assert not c.connected
    assert h.reactor.seconds() - t_sub <= 60.0 + 50.0


def test_failed_authorizations_do_not_stretch_the_60s(h):
    c = h.connect(port=1)
    t_sub = h.reactor.seconds()
    c.call("mining.subscribe", [])
    while c.connected:
        h.reactor.advance(10.0)
        if c.connected:
            assert c.call("mining.authorize", ["not-an-address", "x"])["result"] is False
    assert h.reactor.seconds() - t_sub <= 60.0 + 10.0


def test_authorized_without_shares_closed_after_the_idle_time(h):
    t0 = h.reactor.seconds()
    c = h.connect(port=1).handshake()
    t = closed_at(h, c, step=1.0)
    assert 900.0 <= t - t0 <= 902.0
    assert h.metric("hashcoop_disconnects_total", reason="idle-timeout") == 1


def test_rejected_shares_and_keepalives_do_not_count_as_activity(h):
    t0 = h.reactor.seconds()
    c = h.connect(port=1).handshake()
    bad = c.solve_miss()
    while c.connected:
        h.reactor.advance(30.0)
        if c.connected:
            c.send("mining.submit", bad)  # high-hash
            c.send("mining.suggest_difficulty", [1e-8])  # NerdMiner's keep-alive
            c.send("mining.extranonce.subscribe", [])
            c.lines()
    assert 900.0 <= h.reactor.seconds() - t0 <= 931.0


def test_an_accepted_share_restarts_the_idle_time(h):
    c = h.connect(port=1).handshake()
    h.reactor.advance(800.0)
    share, _ = c.solve()
    assert c.call("mining.submit", share)["result"] is True
    t_share = h.reactor.seconds()
    t = closed_at(h, c, step=1.0)
    assert 900.0 <= t - t_share <= 902.0
