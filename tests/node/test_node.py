"""NodeSet: failover, health and recovery, call_any/call_all, submitblock
verdicts. Logic with in-memory clients on a task.Clock; one class with real
HTTP servers."""
from __future__ import annotations

import orjson
import pytest
from twisted.internet import defer, task
from twisted.trial import unittest

from hashcoop.pool.core.btc.address import get_network
from hashcoop.pool.core.template import Template
from hashcoop.pool.metrics import Metrics
from hashcoop.pool.node.nodes import NodeSet, NoNodeAvailable
from hashcoop.pool.rpc import NodeClient, RPCError, RPCTimeout
from tests.node.helpers import CORE, GBT, CoreError, FakeClient, FakeCoreServer, closed_port, down

REGTEST = get_network("regtest")


def result(d: defer.Deferred):
    """The result of an already-fired Deferred (raises its failure)."""
    out = []
    d.addBoth(out.append)
    assert out, "deferred has not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def make(n=2, network=REGTEST, **kw):
    clock = task.Clock()
    clients = [FakeClient(f"node{i}") for i in range(n)]
    return clock, clients, NodeSet(clock, clients, network, **kw)


def gbt_calls(c: FakeClient):
    return [p for m, p, _ in c.calls if m == "getblocktemplate"]


def test_template_from_first_node_with_network_rules():
    clock, (a, b), ns = make()
    a.answers["getblocktemplate"] = GBT
    tpl = result(ns.get_template())
    assert isinstance(tpl, Template) and tpl.node == "node0" and tpl.height == 103
    assert gbt_calls(a) == [({"rules": ["segwit"]},)]
    assert b.calls == []
    _, (s,), signet = make(1, get_network("signet"))
    s.answers["getblocktemplate"] = GBT
    result(signet.get_template(longpollid="abc"))
    assert gbt_calls(s) == [({"rules": ["segwit", "signet"], "longpollid": "abc"},)]


def test_failover_prefers_healthy_and_probes_the_down_node_in_background():
    clock, (a, b), ns = make(probe_interval=10)
    a.answers["getblocktemplate"] = down()
    b.answers["getblocktemplate"] = GBT
    assert result(ns.get_template()).node == "node1"
    assert not ns.is_healthy("node0") and ns.healthy_names() == ["node1"]
    # Next fetches go straight to node1; node0 is not retried inline.
    clock.advance(5)
    assert result(ns.get_template()).node == "node1"
    assert len(gbt_calls(a)) == 1
    # Once the probe interval passed, the next call probes node0 in the
    # background (still served by node1 at once).
    del a.answers["getblocktemplate"]
    clock.advance(5)
    assert result(ns.get_template()).node == "node1"
    assert len(a.waiting) == 1  # the probe, not awaited
    a.waiting[0][2].callback(GBT)  # node0 is back
    assert ns.is_healthy("node0")
    a.answers["getblocktemplate"] = GBT
    assert result(ns.get_template()).node == "node0"


def test_failed_probe_waits_another_interval():
    clock, (a, b), ns = make(probe_interval=10)
    a.answers["getblocktemplate"] = down()
    b.answers["getblocktemplate"] = GBT
    result(ns.get_template())
    clock.advance(10)
    result(ns.get_template())  # probe fails at once
    assert len(gbt_calls(a)) == 2 and not ns.is_healthy("node0")
    clock.advance(3)
    result(ns.get_template())
    assert len(gbt_calls(a)) == 2


def test_all_down_raises_then_recovers_on_next_call():
    clock, (a, b), ns = make()
    a.answers["getblocktemplate"] = down("node0")
    b.answers["getblocktemplate"] = RPCTimeout("no answer", node="node1")
    with pytest.raises(NoNodeAvailable) as e:
        result(ns.get_template())
    assert set(e.value.errors) == {"node0", "node1"}
    assert isinstance(e.value.errors["node1"], RPCTimeout)
    assert ns.healthy_names() == []
    # Down nodes are still tried, in config order, when nothing else is left.
    b.answers["getblocktemplate"] = GBT
    assert result(ns.get_template()).node == "node1"
    a.answers["getblocktemplate"] = GBT
    clock.advance(60)
    result(ns.get_template())  # starts the probe of node0, which answers
    assert ns.healthy_names() == ["node0", "node1"]
    assert result(ns.get_template()).node == "node0"


def test_rpc_error_and_malformed_template_fail_over():
    m = Metrics()
    clock, (a, b, c), ns = make(3, metrics=m)
    a.answers["getblocktemplate"] = RPCError(-10, "Bitcoin Core is in initial sync and waiting for blocks...")
    b.answers["getblocktemplate"] = {"height": 5}  # not a template
    c.answers["getblocktemplate"] = GBT
    assert result(ns.get_template()).node == "node2"
    assert ns.healthy_names() == ["node2"]
    assert m.registry.get_sample_value("hashcoop_rpc_errors_total", {"node": "node1", "method": "getblocktemplate", "kind": "template"}) == 1


def test_a_node_behind_min_height_is_passed_over_but_stays_healthy():
    """The first node restarted behind (still syncing, or cut off from its
    peers) answers with an old template: the next node's template is used,
    as Bitcoin Core showed (tests/realnode/test_failover.py), where a first
    node preferred again at an old height held the pool on a stale tip."""
    clock, (a, b, c), ns = make(3)
    a.answers["getblocktemplate"] = {**GBT, "height": 100}
    b.answers["getblocktemplate"] = {**GBT, "height": 102}
    c.answers["getblocktemplate"] = {**GBT, "height": 104}
    got = result(ns.get_template(min_height=104))
    assert got.node == "node2" and got.height == 104
    assert ns.healthy_names() == ["node0", "node1", "node2"]  # behind is not down
    # at or above min_height, the first node serves as before, alone
    assert result(ns.get_template(min_height=100)).node == "node0"
    assert len(gbt_calls(b)) == 1
    # no node reaches min_height: the highest template, the first among equals
    c.answers["getblocktemplate"] = {**GBT, "height": 102}
    assert result(ns.get_template(min_height=110)).node == "node1"
    # a node that fails is still failed over, and marked down
    b.answers["getblocktemplate"] = down("node1")
    assert result(ns.get_template(min_height=110)).node == "node2"
    assert ns.healthy_names() == ["node0", "node2"]


def test_call_any_returns_real_answers_and_fails_over_on_node_failures():
    clock, (a, b), ns = make()
    a.answers["getblockhash"] = RPCError(-8, "Block height out of range")
    b.answers["getblockhash"] = "00" * 32
    with pytest.raises(RPCError) as e:
        result(ns.call_any("getblockhash", 500))
    assert e.value.code == -8 and b.calls == [] and ns.is_healthy("node0")
    a.answers["getbestblockhash"] = RPCError(-28, "Loading block index...")
    b.answers["getbestblockhash"] = CORE["rpc"]["getbestblockhash"]
    assert result(ns.best_block_hash()) == CORE["rpc"]["getbestblockhash"]
    assert not ns.is_healthy("node0")
    b.answers["getblockcount"] = down("node1")
    a.answers["getblockcount"] = down("node0")
    with pytest.raises(NoNodeAvailable):
        result(ns.call_any("getblockcount"))


def test_call_all_and_submit_block_collect_every_verdict():
    clock, (a, b, c), ns = make(3, submit_timeout=45)
    a.answers["submitblock"] = None
    b.answers["submitblock"] = "duplicate"
    c.answers["submitblock"] = RPCTimeout("no answer", node="node2")
    verdicts = result(ns.submit_block("00" * 81))
    assert verdicts["node0"] is None and verdicts["node1"] == "duplicate"
    assert isinstance(verdicts["node2"], RPCTimeout)
    assert [t for m, _, t in a.calls if m == "submitblock"] == [45]
    assert not ns.is_healthy("node2")
    a.answers["getblockcount"] = 7
    b.answers["getblockcount"] = RPCError(-32601, "Method not found")
    c.answers["getblockcount"] = 7
    got = result(ns.call_all("getblockcount"))
    assert got["node0"] == 7 and got["node2"] == 7 and got["node1"].code == -32601
    assert ns.is_healthy("node2")  # it answered again


def test_submit_block_is_parallel():
    clock, (a, b), ns = make()
    d = ns.submit_block("ab")
    assert [m for m, _, _ in a.calls] == ["submitblock"] and [m for m, _, _ in b.calls] == ["submitblock"]
    b.waiting[0][2].callback("inconclusive")
    assert not d.called
    a.waiting[0][2].callback(None)
    assert result(d) == {"node0": None, "node1": "inconclusive"}


def test_get_template_from_one_node_without_failover():
    clock, (a, b), ns = make()
    a.answers["getblocktemplate"] = RPCTimeout("no answer", node="node0")
    with pytest.raises(RPCTimeout):
        result(ns.get_template_from("node0", longpollid="x", timeout=300))
    assert ns.is_healthy("node0")  # a longpoll running out of time is normal
    assert a.calls[-1][2] == 300 and b.calls == []
    with pytest.raises(RPCTimeout):
        result(ns.get_template_from("node0"))
    assert not ns.is_healthy("node0")


def test_close_cancels_probes_and_closes_clients():
    clock, (a, b), ns = make(probe_interval=1)
    a.answers["getblocktemplate"] = down()
    b.answers["getblocktemplate"] = GBT
    result(ns.get_template())
    del a.answers["getblocktemplate"]
    clock.advance(2)
    result(ns.get_template())
    probe = a.waiting[0][2]
    ns.startService()
    result(ns.stopService())
    assert probe.called and a.closed and b.closed


def test_names_must_be_unique():
    with pytest.raises(ValueError):
        NodeSet(task.Clock(), [FakeClient("x"), FakeClient("x")], REGTEST)
    with pytest.raises(ValueError):
        NodeSet(task.Clock(), [], REGTEST)


class RealHTTPNodeSetTest(unittest.TestCase):
    """Two fake Cores on real sockets plus one that is not listening."""

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.servers = [FakeCoreServer(reactor), FakeCoreServer(reactor)]
        urls = [f"http://127.0.0.1:{closed_port(reactor)}/"] + [s.url for s in self.servers]
        self.clients = [NodeClient(reactor, u, name=f"n{i}", timeout=5) for i, u in enumerate(urls)]
        self.nodes = NodeSet(reactor, self.clients, REGTEST)

    @defer.inlineCallbacks
    def tearDown(self):
        yield self.nodes.close()
        for s in self.servers:
            yield s.stop()

    @defer.inlineCallbacks
    def test_failover_over_http_and_recorded_submitblock_verdicts(self):
        a, b = (s.core for s in self.servers)

        def gbt(params):
            if params.get("rules") != ["segwit"]:
                raise CoreError(-8, CORE["rpc"]["getblocktemplate_no_segwit_rule"]["error"]["message"])
            return GBT

        a.handlers["getblocktemplate"] = lambda params: (_ for _ in ()).throw(CoreError(-9, "Bitcoin Core is not connected!"))
        b.handlers["getblocktemplate"] = gbt
        tpl = yield self.nodes.get_template()
        self.assertEqual((tpl.node, tpl.height, tpl.prevhash_hex), ("n2", 103, GBT["previousblockhash"]))
        self.assertEqual(self.nodes.healthy_names(), ["n2"])
        # Every recorded Core verdict, as Core sent it, arrives unchanged.
        for case in CORE["submitblock"]:
            for s in self.servers:
                s.core.raw.append((200, orjson.dumps(case["result"])))
            verdicts = yield self.nodes.submit_block(case["block"])
            self.assertEqual(verdicts["n1"], verdicts["n2"])
            self.assertEqual(verdicts["n1"], case["result"]["result"], case["case"])
            self.assertIsInstance(verdicts["n0"], RPCError)


def test_clients_from_config(tmp_path):
    from hashcoop.pool.config import load_config
    from hashcoop.pool.node.nodes import clients_from_config

    cfg = load_config(data={
        "pool": {"network": "regtest", "address": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"},
        "nodes": [{"url": "http://u:p@127.0.0.1:18443/", "timeout": 3},
                  {"name": "backup", "url": "http://10.0.0.2:18443", "cookie_file": "~/.bitcoin/regtest/.cookie"}],
    }, env={})
    a, b = clients_from_config(task.Clock(), cfg)
    assert (a.name, a.url, a.timeout, a._user, a._password) == ("node0", "http://127.0.0.1:18443/", 3, "u", "p")
    assert b.name == "backup" and b.cookie_file.endswith("/.bitcoin/regtest/.cookie") and not b.cookie_file.startswith("~")
