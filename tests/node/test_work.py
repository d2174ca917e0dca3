"""WorkSource logic on a task.Clock with a fake NodeSet: startup retry, tip
hints and coalescing, refresh, longpoll templates, which template wins,
outage handling, metrics, clean stop."""
from __future__ import annotations

import logging

import pytest
from twisted.internet import task

from hashcoop.pool.core.btc.target import bits_difficulty
from hashcoop.pool.core.template import Template, signet_needs_solution
from hashcoop.pool.metrics import Metrics
from hashcoop.pool.node.tipwatch import BestHashPoller, LongPoller, NotifyListener, ZMQHashblock
from hashcoop.pool.node.work import WorkSource
from tests.node.helpers import GBT, FakeNodeSet, down, template, tip


class Rig:
    def __init__(self, names=("node0",), **kw):
        self.clock = task.Clock()
        self.nodes = FakeNodeSet(list(names))
        self.metrics = Metrics()
        self.got: list[tuple] = []
        kw.setdefault("longpoll", False)
        kw.setdefault("poll_interval", None)
        self.ws = WorkSource(self.clock, self.nodes, lambda t, clean: self.got.append((t, clean)),
                             metrics=self.metrics, clock=self.clock, **kw)

    def answer(self, value):
        """Answer the oldest pending template fetch."""
        d = self.nodes.pending_templates()[0]
        (d.errback if isinstance(value, Exception) else d.callback)(value)

    def start(self, first=None):
        self.ws.startService()
        if first is not None:
            self.answer(first)

    def metric(self, name, **labels):
        return self.metrics.registry.get_sample_value(name, labels)

    @property
    def fetches(self):
        return len(self.nodes.template_calls)


def test_startup_fetch_listener_ready_and_metrics():
    r = Rig()
    ready = r.ws.ready()
    r.start()
    assert r.fetches == 1 and not ready.called
    r.clock.advance(2)
    t = template(103, prev=tip(102))
    r.answer(t)
    assert r.got == [(t, True)]
    assert ready.result is t and r.ws.current is t
    assert r.ws.current_since == 2 and r.ws.tip_seen_at == 2
    assert r.metric("hashcoop_template_height") == 103
    assert r.metric("hashcoop_network_difficulty") == bits_difficulty(t.bits)
    assert r.metric("hashcoop_templates_fetched_total", node="node0") == 1
    assert r.metric("hashcoop_new_tips_total", source="startup") is None  # startup is not a new tip
    r.clock.advance(7)
    assert r.metric("hashcoop_template_age_seconds") == 7
    assert r.ws.ready().result is t


def test_startup_retries_with_backoff_and_logs_once(caplog):
    r = Rig(retry_min=0.5, retry_max=4)
    caplog.set_level(logging.INFO, logger="hashcoop.work")
    r.start()
    times = []
    for _ in range(6):
        r.answer(down())
        n = r.fetches
        waited = 0.0
        while r.fetches == n:
            r.clock.advance(0.25)
            waited += 0.25
        times.append(waited)
    assert times == [0.5, 1, 2, 4, 4, 4]
    assert sum("no node serves" in m for m in caplog.messages) == 1
    t = template(103)
    r.answer(t)
    assert r.got == [(t, True)]
    assert sum("templates again" in m for m in caplog.messages) == 1


def test_hint_fetches_at_once_and_records_who_saw_the_tip_first():
    r = Rig()
    r.start(template(103, prev=tip(102)))
    r.clock.advance(10)
    r.ws.hint(tip(103), "zmq")
    assert r.fetches == 2
    r.clock.advance(0.5)
    r.ws.hint(tip(103), "notify")  # coalesced
    r.ws.hint(tip(103).upper(), "poll")
    assert r.fetches == 2
    t = template(104, prev=tip(103))
    r.clock.advance(0.25)
    r.answer(t)
    assert r.got[-1] == (t, True)
    assert r.ws.tip_seen_at == 10 and r.ws.current_since == 10.75
    assert r.metric("hashcoop_new_tips_total", source="zmq") == 1
    assert r.metric("hashcoop_new_tips_total", source="notify") is None
    # Hints for the tip we build on are ignored, and so are old tips.
    r.ws.hint(tip(103), "poll")
    r.ws.hint(tip(102), "poll")
    assert r.fetches == 2


def test_one_follow_up_when_a_hint_during_the_fetch_is_not_built_on():
    r = Rig()
    r.start(template(103, prev=tip(102)))
    r.ws.hint(tip(103), "zmq")
    r.ws.hint(tip(104), "notify")
    r.ws.hint(tip(104), "poll")
    r.ws.hint(None, "poll")
    assert r.fetches == 2
    r.answer(template(104, prev=tip(103)))
    assert r.fetches == 3  # exactly one follow-up
    t = template(105, prev=tip(104))
    r.answer(t)
    assert r.fetches == 3
    assert [c for _, c in r.got] == [True, True, True]
    assert r.ws.tip_seen_at is not None
    assert r.metric("hashcoop_new_tips_total", source="notify") == 1


def test_no_follow_up_when_the_fetch_already_builds_on_every_hint():
    r = Rig()
    r.start(template(103, prev=tip(102)))
    r.ws.hint(tip(103), "zmq")
    r.ws.hint(tip(103), "notify")
    r.answer(template(104, prev=tip(103)))
    assert r.fetches == 2 and r.nodes.pending_templates() == []


def test_hint_fetch_that_finds_the_same_tip_changes_nothing():
    r = Rig()
    r.start(template(103, prev=tip(102)))
    r.ws.hint(tip(200), "zmq")
    r.answer(template(103, prev=tip(102)))
    assert len(r.got) == 1


def test_periodic_refresh_is_clean_false_and_restarts_after_each_template():
    r = Rig(refresh_interval=30)
    r.start(template(103, prev=tip(102)))
    r.clock.advance(29)
    assert r.fetches == 1
    r.clock.advance(1)
    assert r.fetches == 2
    t = template(103, prev=tip(102), curtime=999)
    r.answer(t)
    assert r.got[-1] == (t, False)
    # A new tip 10 s later pushes the next refresh to 30 s after it.
    r.clock.advance(10)
    r.ws.hint(tip(103), "zmq")
    r.answer(template(104, prev=tip(103)))
    r.clock.advance(29)
    assert r.fetches == 3
    r.clock.advance(1)
    assert r.fetches == 4


def test_refresh_due_during_a_hint_fetch_is_served_by_it():
    r = Rig(refresh_interval=30)
    r.start(template(103, prev=tip(102)))
    r.clock.advance(29.5)
    r.ws.hint(tip(300), "poll")  # a stray hint; fetch in flight
    r.clock.advance(1)  # refresh comes due meanwhile
    assert r.fetches == 2
    t = template(103, prev=tip(102), curtime=5)
    r.answer(t)
    assert r.got[-1] == (t, False)


def test_longpoll_templates():
    r = Rig()
    r.start(template(103, prev=tip(102)))
    same = template(103, prev=tip(102), curtime=1)
    r.ws.offer_template(same, "longpoll")
    assert r.got[-1] == (same, False)
    new = template(104, prev=tip(103))
    r.clock.advance(3)
    r.ws.offer_template(new, "longpoll")
    assert r.got[-1] == (new, True)
    assert r.ws.tip_seen_at == 3
    assert r.metric("hashcoop_new_tips_total", source="longpoll") == 1
    assert r.metric("hashcoop_templates_fetched_total", node="node0") == 3


def test_lagging_node_does_not_move_the_tip_back():
    r = Rig(names=("node0", "node1"))
    r.start(template(104, prev=tip(103), node="node1"))
    # node0 is a block behind: its answer to a later fetch is ignored...
    r.ws.hint(tip(500), "zmq")
    r.answer(template(103, prev=tip(102), node="node0"))
    assert r.ws.current.height == 104 and len(r.got) == 1
    # ...and so is a competing block at the same height from another node.
    r.ws.offer_template(template(104, prev=tip(9103), node="node0"), "longpoll")
    assert r.ws.current.prevhash_hex == tip(103)
    # The node the current template came from may reorg.
    r.ws.offer_template(template(104, prev=tip(9103), node="node1"), "longpoll")
    assert r.ws.current.prevhash_hex == tip(9103) and r.got[-1][1] is True


def test_fetches_ask_for_a_template_above_the_tip_a_hint_named():
    """A hint naming a new block asks for a template above the current
    height, so a first node that has not got the block (restarted behind,
    still syncing) is passed over by the node set; other fetches ask for at
    least the current height."""
    r = Rig(names=("node0", "node1"), refresh_interval=30)
    r.start(template(103, prev=tip(102)))
    assert r.nodes.min_heights == [0]  # startup: anything
    r.ws.hint(tip(103), "zmq")
    r.answer(template(104, prev=tip(103), node="node1"))
    r.ws.hint(None, "notify")  # says "something changed", names no block
    r.answer(template(104, prev=tip(103), node="node1"))
    r.clock.advance(30)  # refresh
    r.answer(template(104, prev=tip(103), node="node1", curtime=9))
    assert r.nodes.min_heights == [0, 104, 104, 104]
    # a follow-up for a block named during a fetch asks above the new height
    r.ws.hint(tip(104), "zmq")
    r.ws.hint(tip(105), "poll")
    r.answer(template(105, prev=tip(104)))
    r.answer(template(106, prev=tip(105)))
    assert r.nodes.min_heights[-2:] == [105, 106] and r.ws.current.height == 106
    # a follow-up for unnamed hints only asks for the current height
    r.ws.hint(tip(106), "zmq")
    r.ws.hint(None, "notify")
    r.answer(template(107, prev=tip(106)))
    r.answer(template(107, prev=tip(106)))
    assert r.nodes.min_heights[-2:] == [107, 107]
    # a retry after a failed fetch asks for the current height
    r.ws.hint(tip(107), "zmq")
    r.answer(down())
    r.clock.advance(1)
    assert r.nodes.min_heights[-2:] == [108, 107]


def test_failover_to_a_lagging_node_when_the_current_node_is_down():
    r = Rig(names=("node0", "node1"))
    r.start(template(104, prev=tip(103), node="node0"))
    r.nodes.healthy["node0"] = False
    r.clock.advance(30)
    r.answer(template(103, prev=tip(102), node="node1"))
    assert r.ws.current.node == "node1" and r.got[-1][1] is True


def test_answer_requested_before_the_current_template_never_moves_back():
    r = Rig()
    r.start(template(103, prev=tip(102)))
    r.clock.advance(30)  # refresh fetch goes out
    r.clock.advance(0.1)
    r.ws.offer_template(template(104, prev=tip(103)), "longpoll")  # new tip arrives first
    r.answer(template(103, prev=tip(102), curtime=7))  # then the old refresh answer
    assert r.ws.current.height == 104 and len(r.got) == 2
    # A fetch sent after it that sees a reorg on the same node is taken.
    r.ws.hint(tip(777), "poll")
    r.answer(template(104, prev=tip(777)))
    assert r.ws.current.prevhash_hex == tip(777)


def test_outage_keeps_the_last_template_and_recovers(caplog):
    caplog.set_level(logging.INFO, logger="hashcoop.work")
    r = Rig(refresh_interval=30, retry_max=2)
    t = template(103, prev=tip(102))
    r.start(t)
    r.clock.advance(30)
    for _ in range(5):
        r.answer(down())
        r.clock.advance(2)
    assert r.ws.current is t and len(r.got) == 1
    assert sum("keeping the last one" in m for m in caplog.messages) == 1
    # A hint during the outage fetches at once instead of waiting.
    r.answer(down())
    n = r.fetches
    r.ws.hint(tip(103), "zmq")
    assert r.fetches == n + 1
    new = template(104, prev=tip(103))
    r.answer(new)
    assert r.got[-1] == (new, True)
    assert sum("templates again" in m for m in caplog.messages) == 1
    assert r.nodes.pending_templates() == []
    assert len([c for c in r.clock.getDelayedCalls() if c.active()]) == 1  # just the refresh


def test_listener_exception_is_contained():
    clock = task.Clock()
    nodes = FakeNodeSet()
    ws = WorkSource(clock, nodes, lambda t, c: 1 / 0, longpoll=False, poll_interval=None, clock=clock)
    ws.startService()
    nodes.template_calls[0].callback(template(103))
    assert ws.current.height == 103
    ws.stopService()


def test_sources_are_built_from_the_arguments():
    nodes = FakeNodeSet(["a", "b", "c"])
    clock = task.Clock()
    ws = WorkSource(clock, nodes, lambda t, c: None, clock=clock, zmq_endpoints=["tcp://127.0.0.1:28332"],
                    notify_endpoint="tcp:3335")
    kinds = [type(s) for s in ws.sources]
    assert kinds == [LongPoller, LongPoller, LongPoller, ZMQHashblock, NotifyListener, BestHashPoller]
    ws = WorkSource(clock, nodes, lambda t, c: None, clock=clock, longpoll=["b"], poll_interval=0)
    assert [(type(s), s.node_name) for s in ws.sources] == [(LongPoller, "b")]


def test_startup_logs_the_new_block_sources(caplog):
    nodes = FakeNodeSet(["a", "b"])
    clock = task.Clock()
    ws = WorkSource(clock, nodes, lambda t, c: None, clock=clock, longpoll=["b"], poll_interval=0.5)
    with caplog.at_level(logging.INFO, logger="hashcoop.work"):
        ws.startService()
    ws.stopService()
    assert "new-block sources: longpoll on b; poll every 0.5 s" in caplog.text
    ws = WorkSource(clock, nodes, lambda t, c: None, clock=clock, longpoll=False, poll_interval=None,
                    zmq_endpoints=["tcp://127.0.0.1:28332"], notify_endpoint="tcp:3335:interface=127.0.0.1")
    assert [s.describe() for s in ws.sources] == ["zmq tcp://127.0.0.1:28332", "notify on tcp:3335:interface=127.0.0.1"]
    caplog.clear()
    ws = WorkSource(clock, nodes, lambda t, c: None, clock=clock, longpoll=False, poll_interval=0, refresh_interval=600)
    with caplog.at_level(logging.INFO, logger="hashcoop.work"):
        ws.startService()
    ws.stopService()
    assert "new-block sources: none (only the template refresh every 600 s)" in caplog.text


def test_poll_interval_zero_in_the_config_turns_the_poll_off(tmp_path):
    from twisted.internet.testing import MemoryReactorClock

    from hashcoop.pool.app.service import build_pool
    from hashcoop.pool.config import load_config

    data = {"pool": {"network": "regtest", "address": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "data_dir": str(tmp_path)},
            "nodes": [{"url": "http://127.0.0.1:1/", "user": "u", "password": "p", "longpoll": False}],
            "work": {"notify_listen": ""}}
    pool = build_pool(load_config(data=data, env={}), MemoryReactorClock())
    assert [type(s) for s in pool.work.sources] == [BestHashPoller] and pool.work.sources[0].interval == 1.0
    pool = build_pool(load_config(data={**data, "work": {"notify_listen": "", "poll_interval": 0}}, env={}), MemoryReactorClock())
    assert pool.work.sources == []


def test_with_real_pollers_and_a_clean_stop():
    r = Rig(names=("node0", "node1"), longpoll=True, poll_interval=1.0)
    r.start()
    assert len(r.nodes.from_calls) == 2 and len(r.nodes.best_calls) == 1
    r.answer(template(103, prev=tip(102)))
    # The poll sees the tip we build on: nothing to do.
    r.nodes.best_calls[0].callback(tip(102))
    assert r.fetches == 1
    r.clock.advance(1)
    r.nodes.best_calls[1].callback(tip(103))  # a new block
    assert r.fetches == 2
    r.answer(template(104, prev=tip(103)))
    assert r.metric("hashcoop_new_tips_total", source="poll") == 1
    # Longpoll primes, then delivers a same-tip refresh.
    for name, lpid, _, d in list(r.nodes.from_calls):
        d.callback(template(104, prev=tip(103), node=name, lp=f"{name}-1"))
    r.nodes.from_calls[-1][3].callback(template(104, prev=tip(103), node="node1", lp="node1-2", curtime=1))
    assert r.got[-1][1] is False and r.got[-1][0].node == "node1"
    r.ws.hint(tip(104), "zmq")
    stopped = r.ws.stopService()
    assert stopped.called
    assert all(d.called for d in r.nodes.template_calls)
    assert all(d.called for *_, d in r.nodes.from_calls)
    assert all(d.called for d in r.nodes.best_calls)
    assert [c for c in r.clock.getDelayedCalls() if c.active()] == []
    r.ws.hint(tip(105), "zmq")  # after stop: ignored
    assert len(r.nodes.pending_templates()) == 0


@pytest.mark.parametrize("hint", [tip(103), None])
def test_hints_before_the_first_template_join_the_startup_fetch(hint):
    r = Rig()
    r.start()
    r.ws.hint(hint, "notify")
    assert r.fetches == 1
    r.answer(template(104, prev=tip(103)))
    assert r.fetches == (2 if hint is None else 1)


def test_every_report_of_every_source_is_counted_first_or_not():
    r = Rig()
    r.start(template(103, prev=tip(102)))
    r.ws.hint(tip(103), "zmq")
    r.ws.hint(tip(103), "notify")  # the same block again: counted, not fetched twice
    r.ws.offer_template(template(104, prev=tip(103)), "longpoll")
    assert r.metric("hashcoop_tip_reports_total", source="zmq") == 1
    assert r.metric("hashcoop_tip_reports_total", source="notify") == 1
    assert r.metric("hashcoop_tip_reports_total", source="longpoll") == 1
    assert r.fetches == 2


# the default signet's challenge: a 1-of-2 multisig of its operators' keys
DEFAULT_SIGNET = bytes.fromhex("512103ad5e0edad18cb1f0fc0d28a3d4f1f3e445640337489abb10404f2d1e086be430210359ef50"
                               "21964fe22d6f8e05b2463c9540ce96883fe3b278760f048f5189f2e6c452ae")


def test_signet_challenge_is_parsed_and_judged():
    assert Template.from_gbt({**GBT, "signet_challenge": "51"}).signet_challenge == b"\x51"
    assert Template.from_gbt(GBT).signet_challenge is None  # regtest: none
    assert not signet_needs_solution(b"\x51") and not signet_needs_solution(b"\x60")
    for challenge in (DEFAULT_SIGNET, b"", b"\x00", b"\x50", b"\x61", b"\x51\x51", bytes.fromhex("0014" + "11" * 20)):
        assert signet_needs_solution(challenge), challenge.hex()


def test_a_signet_whose_blocks_need_a_signature_is_named_once(caplog):
    """On such a signet (the default one) Bitcoin Core rejects every block
    the pool finds with bad-signet-blksig (tests/realnode/test_signet.py):
    the operator is told at the first template, not at the first lost block."""
    caplog.set_level(logging.INFO, logger="hashcoop.work")
    r = Rig()
    r.start(template(103, prev=tip(102), signet_challenge=DEFAULT_SIGNET))
    r.ws.hint(tip(103), "zmq")
    r.answer(template(104, prev=tip(103), signet_challenge=DEFAULT_SIGNET))
    told = [m for m in caplog.messages if "bad-signet-blksig" in m]
    assert len(told) == 1 and DEFAULT_SIGNET.hex() in told[0] and "-signetchallenge=51" in told[0]
    assert [rec.levelname for rec in caplog.records if "bad-signet-blksig" in rec.getMessage()] == ["ERROR"]
    caplog.clear()
    r = Rig()
    r.start(template(103, prev=tip(102), signet_challenge=b"\x51"))  # anyone can sign
    r2 = Rig()
    r2.start(template(103, prev=tip(102)))  # not signet
    assert not [m for m in caplog.messages if "signet" in m]
