"""``Admission`` on its own, on a ``task.Clock``: bans, the per-IP cap with
its exempt networks, a stale template, and the counts released."""
from __future__ import annotations

import logging

from twisted.internet.task import Clock

from hashcoop.pool.metrics import Metrics
from hashcoop.stratum.admission import Admission
from hashcoop.stratum.flood import BanList


class Work:
    current_since = None


def admission(**kw):
    clock = Clock()
    clock.advance(1000)
    metrics = Metrics()
    bans = BanList(ban_after=1, ban_period=60, ban_seconds=30)
    return clock, bans, metrics, Admission(clock=clock, bans=bans, metrics=metrics, **kw)


def refused(metrics, reason):
    return metrics.registry.get_sample_value("hashcoop_connections_refused_total", {"reason": reason}) or 0


def test_the_per_ip_cap_counts_open_connections_and_spares_exempt_networks():
    clock, bans, metrics, a = admission(max_per_ip=2, exempt=["192.168.0.0/16"])
    assert a.refusal("10.0.0.1") is None and a.refusal("10.0.0.1") is None
    assert a.refusal("10.0.0.1") == "per-ip-limit" and refused(metrics, "per-ip-limit") == 1
    assert all(a.refusal("192.168.4.4") is None for _ in range(10))
    a.release("10.0.0.1")
    assert a.refusal("10.0.0.1") is None
    for _ in range(2):
        a.release("10.0.0.1")
    for _ in range(10):
        a.release("192.168.4.4")
    assert a.per_ip == {}
    assert a.exempt("192.168.1.1") and not a.exempt("10.0.0.1") and not a.exempt("unix")


def test_a_banned_ip_is_refused_until_its_ban_ends_with_a_log_line_a_minute(caplog):
    caplog.set_level(logging.INFO, logger="hashcoop.stratum")
    clock, bans, metrics, a = admission(max_per_ip=100)
    bans.strike("10.0.0.9", clock.seconds())
    for _ in range(50):
        assert a.refusal("10.0.0.9") == "banned"
        clock.advance(0.5)
    assert refused(metrics, "banned") == 50
    assert sum("banned for flooding" in r.getMessage() for r in caplog.records) == 1  # 25 s: one line
    clock.advance(6)
    assert a.refusal("10.0.0.9") is None and a.per_ip == {"10.0.0.9": 1}


def test_new_miners_are_refused_while_the_template_is_stale_and_admitted_when_it_is_fresh(caplog):
    caplog.set_level(logging.INFO, logger="hashcoop.stratum")
    clock, bans, metrics, a = admission(max_per_ip=100, max_template_age=60, work=Work())
    a.start()  # no template yet: the age counts from the start
    assert a.refusal("10.0.0.1") is None
    clock.advance(61)
    assert a.refusal("10.0.0.2") == "stale-template" and a.refusal("10.0.0.3") == "stale-template"
    assert sum("none yet since the start" in r.getMessage() for r in caplog.records) == 1  # once an episode
    a.work.current_since = clock.seconds()
    assert a.refusal("10.0.0.2") is None
    assert sum("fresh again" in r.getMessage() for r in caplog.records) == 1
    assert refused(metrics, "stale-template") == 2 and a.per_ip == {"10.0.0.1": 1, "10.0.0.2": 1}
