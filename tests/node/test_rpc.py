"""NodeClient against a real HTTP server on a real socket (trial runs the
reactor): results, Core's legacy error bodies, auth and cookie rotation,
timeouts, refused connections, metrics."""
from __future__ import annotations

import orjson
import pytest
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial import unittest

from hashcoop.pool.metrics import Metrics
from hashcoop.pool.rpc import NodeClient, RPCError, RPCTimeout, RPCTransportError
from tests.node.helpers import CORE, CoreError, FakeCoreServer, closed_port


def metric(m: Metrics, name: str, **labels) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


class NodeClientTest(unittest.TestCase):
    def setUp(self):
        self.server = FakeCoreServer(reactor)
        self.core = self.server.core
        self.metrics = Metrics()
        self.clients: list[NodeClient] = []

    def client(self, url=None, **kw) -> NodeClient:
        kw.setdefault("metrics", self.metrics)
        c = NodeClient(reactor, url or self.server.url, **kw)
        self.clients.append(c)
        return c

    @defer.inlineCallbacks
    def tearDown(self):
        for c in self.clients:
            yield c.close()
        yield self.server.stop()

    @defer.inlineCallbacks
    def test_result_and_request_shape(self):
        self.core.handlers["getblockchaininfo"] = lambda: CORE["rpc"]["getblockchaininfo"]
        self.core.handlers["getblockhash"] = lambda h: f"{h:064x}"
        c = self.client()
        info = yield c.call("getblockchaininfo")
        self.assertEqual(info["chain"], "regtest")
        h = yield c.call("getblockhash", 7)
        self.assertEqual(h, f"{7:064x}")
        self.assertEqual(self.core.requests[-1][:2], ("getblockhash", [7]))
        self.assertTrue(c.up)
        self.assertEqual(metric(self.metrics, "hashcoop_node_up", node="node0"), 1.0)
        self.assertEqual(metric(self.metrics, "hashcoop_rpc_request_seconds_count", node="node0", method="getblockhash"), 1.0)

    @defer.inlineCallbacks
    def test_one_persistent_connection_is_reused(self):
        self.core.handlers["getblockcount"] = lambda: 102
        c = self.client()
        for _ in range(5):
            self.assertEqual((yield c.call("getblockcount")), 102)
        self.assertEqual(len(self.server.factory.protocols), 1)

    @defer.inlineCallbacks
    def test_core_error_objects_whatever_the_http_status(self):
        # The recorded Core answers: -8 with HTTP 500, -32601 with HTTP 404.
        for case, status in (("getblockhash_out_of_range", 500), ("unknown_method", 404), ("getblocktemplate_no_segwit_rule", 500)):
            self.core.raw.append((status, orjson.dumps(CORE["rpc"][case])))
        c = self.client(name="n1")
        with self.assertRaises(RPCError) as cm:
            yield c.call("getblockhash", 1000)
        e = cm.exception
        self.assertNotIsInstance(e, RPCTransportError)
        self.assertEqual((e.code, e.message, e.method, e.node), (-8, "Block height out of range", "getblockhash", "n1"))
        with self.assertRaises(RPCError) as cm:
            yield c.call("nosuchmethod")
        self.assertEqual(cm.exception.code, -32601)
        with self.assertRaises(RPCError) as cm:
            yield c.call("getblocktemplate", {})
        self.assertEqual(cm.exception.code, -8)
        self.assertIn("segwit rule", cm.exception.message)
        self.assertTrue(c.up)  # an error object is still an answer
        self.assertEqual(metric(self.metrics, "hashcoop_rpc_errors_total", node="n1", method="getblockhash", kind="rpc"), 1.0)

    @defer.inlineCallbacks
    def test_error_from_handler_uses_legacy_status(self):
        def gbt(params):
            raise CoreError(-10, "Bitcoin Core is in initial sync and waiting for blocks...")

        self.core.handlers["getblocktemplate"] = gbt
        with self.assertRaises(RPCError) as cm:
            yield self.client().call("getblocktemplate", {"rules": ["segwit"]})
        self.assertEqual(cm.exception.code, -10)

    @defer.inlineCallbacks
    def test_non_json_body_is_transport_error(self):
        self.core.raw.append((503, b"Work queue depth exceeded"))
        c = self.client()
        with self.assertRaises(RPCTransportError) as cm:
            yield c.call("getblockcount")
        self.assertEqual(cm.exception.http_status, 503)
        self.assertIn("Work queue depth exceeded", str(cm.exception))
        self.assertFalse(c.up)
        self.core.raw.append((200, b'{"foo": 1}'))
        with self.assertRaises(RPCTransportError):
            yield c.call("getblockcount")

    @defer.inlineCallbacks
    def test_user_password_and_url_credentials(self):
        self.core.auth = "alice:s3cret"
        self.core.handlers["getblockcount"] = lambda: 5
        self.assertEqual((yield self.client(user="alice", password="s3cret").call("getblockcount")), 5)
        url = self.server.url.replace("http://", "http://alice:s3cret@")
        c = self.client(url)
        self.assertNotIn("s3cret", c.url)
        self.assertEqual((yield c.call("getblockcount")), 5)

    @defer.inlineCallbacks
    def test_wrong_password_is_auth_error_without_retry(self):
        self.core.auth = "alice:s3cret"
        self.core.handlers["getblockcount"] = lambda: 5
        c = self.client(user="alice", password="nope")
        with self.assertRaises(RPCTransportError) as cm:
            yield c.call("getblockcount")
        self.assertEqual(cm.exception.http_status, 401)
        self.assertEqual(len(self.core.requests), 1)
        self.assertEqual(metric(self.metrics, "hashcoop_rpc_errors_total", node="node0", method="getblockcount", kind="auth"), 1.0)

    @defer.inlineCallbacks
    def test_http_403(self):
        self.core.raw.append((403, b""))
        with self.assertRaises(RPCTransportError) as cm:
            yield self.client().call("getblockcount")
        self.assertEqual(cm.exception.http_status, 403)

    @defer.inlineCallbacks
    def test_cookie_rotation_after_401(self):
        cookie = self.mktemp()
        with open(cookie, "w") as f:
            f.write("__cookie__:first\n")
        self.core.auth = "__cookie__:first"
        self.core.handlers["getblockcount"] = lambda: 1
        c = self.client(cookie_file=cookie)
        self.assertEqual((yield c.call("getblockcount")), 1)
        # bitcoind restarts: new cookie on disk, old one refused.
        with open(cookie, "w") as f:
            f.write("__cookie__:second")
        self.core.auth = "__cookie__:second"
        n = len(self.core.requests)
        self.assertEqual((yield c.call("getblockcount")), 1)
        self.assertEqual(len(self.core.requests), n + 2)  # one 401, one retry
        # A cookie that still does not work: one retry only, then an error.
        self.core.auth = "__cookie__:third"
        n = len(self.core.requests)
        with self.assertRaises(RPCTransportError) as cm:
            yield c.call("getblockcount")
        self.assertEqual(cm.exception.http_status, 401)
        self.assertEqual(len(self.core.requests), n + 2)

    @defer.inlineCallbacks
    def test_missing_cookie_file_then_it_appears(self):
        cookie = self.mktemp()
        self.core.auth = "__cookie__:abc"
        self.core.handlers["getblockcount"] = lambda: 3
        c = self.client(cookie_file=cookie)
        with self.assertRaises(RPCTransportError) as cm:
            yield c.call("getblockcount")
        self.assertIn("cookie", str(cm.exception))
        with open(cookie, "w") as f:
            f.write("__cookie__:abc")
        self.assertEqual((yield c.call("getblockcount")), 3)

    @defer.inlineCallbacks
    def test_timeout_cancels_the_request(self):
        held = defer.Deferred()
        self.core.handlers["getblocktemplate"] = lambda params: held
        c = self.client(timeout=0.2)
        start = reactor.seconds()
        with self.assertRaises(RPCTimeout) as cm:
            yield c.call("getblocktemplate", {"rules": ["segwit"]})
        self.assertLess(reactor.seconds() - start, 2.0)
        self.assertEqual(cm.exception.method, "getblocktemplate")
        self.assertFalse(c.up)
        self.assertEqual(metric(self.metrics, "hashcoop_node_up", node="node0"), 0.0)
        self.assertEqual(metric(self.metrics, "hashcoop_rpc_errors_total", node="node0", method="getblocktemplate", kind="timeout"), 1.0)
        # The aborted connection reaches the server, which drops the request.
        for _ in range(50):
            if held.called:
                break
            yield deferLater(0.02)
        self.assertTrue(held.called)
        # The client works again afterwards, on a new connection.
        self.core.handlers["getblockcount"] = lambda: 9
        self.assertEqual((yield c.call("getblockcount", timeout=5)), 9)
        self.assertTrue(c.up)

    @defer.inlineCallbacks
    def test_per_call_timeout_override(self):
        held = defer.Deferred()
        self.core.handlers["submitblock"] = lambda hexdata: held
        c = self.client(timeout=0.1)
        d = c.call("submitblock", "00", timeout=5.0)
        yield deferLater(0.3)
        self.assertFalse(d.called)
        held.callback("inconclusive")
        self.assertEqual((yield d), "inconclusive")

    @defer.inlineCallbacks
    def test_connection_refused(self):
        c = self.client(f"http://127.0.0.1:{closed_port(reactor)}/", name="gone")
        with self.assertRaises(RPCTransportError) as cm:
            yield c.call("getblockcount")
        self.assertNotIsInstance(cm.exception, RPCTimeout)
        self.assertIn("refused", str(cm.exception).lower())
        self.assertEqual(cm.exception.node, "gone")
        self.assertEqual(metric(self.metrics, "hashcoop_node_up", node="gone"), 0.0)
        self.assertEqual(metric(self.metrics, "hashcoop_rpc_errors_total", node="gone", method="getblockcount", kind="transport"), 1.0)

    @defer.inlineCallbacks
    def test_server_closing_kept_alive_connection_is_survived(self):
        self.core.handlers["getblockcount"] = lambda: 4
        c = self.client()
        self.assertEqual((yield c.call("getblockcount")), 4)
        # The node drops the idle keep-alive connection (rpcservertimeout).
        for p in list(self.server.factory.protocols):
            p.transport.loseConnection()
        yield deferLater(0.05)
        self.assertEqual((yield c.call("getblockcount")), 4)

    @defer.inlineCallbacks
    def test_close_cancels_calls_in_flight(self):
        held = defer.Deferred()
        self.core.handlers["getblocktemplate"] = lambda params: held
        c = self.client(timeout=30)
        d = c.call("getblocktemplate", {"rules": ["segwit"]})
        yield deferLater(0.05)
        yield c.close()
        with self.assertRaises(defer.CancelledError):
            yield d
        with self.assertRaises(RPCTransportError):
            yield c.call("getblockcount")

    @defer.inlineCallbacks
    def test_oversized_body_is_refused(self):
        self.core.handlers["getrawmempool"] = lambda: ["ab" * 32] * 1000
        c = self.client()
        c.max_body = 10_000
        with self.assertRaises(RPCTransportError) as cm:
            yield c.call("getrawmempool")
        self.assertIn("over 10000 bytes", str(cm.exception))
        c.max_body = 1 << 20
        self.assertEqual(len((yield c.call("getrawmempool"))), 1000)

    @defer.inlineCallbacks
    def test_new_connections_are_not_logged(self):
        from twisted.logger import formatEvent, globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.core.handlers["getblockcount"] = lambda: 1
        yield self.client().call("getblockcount")
        self.assertEqual([formatEvent(e) for e in events if "factory" in formatEvent(e).lower()], [])

    def test_bad_url(self):
        with self.assertRaises(ValueError):
            NodeClient(reactor, "ftp://example.org/")


def deferLater(seconds: float) -> defer.Deferred:
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


@pytest.mark.parametrize("url", ["http://127.0.0.1:18443/", "http://[::1]:18443/"])
def test_a_refused_connection_to_a_node_by_ip_address_fails_at_once(url):
    """Agent's default endpoint learns that its only address refused the
    connection at the next tick of its 0.3 s attempt timer: a dead node's
    calls failed 0.3 s late, and the pool failed over that much later (on
    real Bitcoin Core a block went stale meanwhile,
    tests/realnode/test_failover.py). No clock time may pass here."""
    clock = MemoryReactorClock()
    c = NodeClient(clock, url, name="gone", timeout=5)
    d = c.call("getblockcount")
    (host, port, factory, _, _), = clock.tcpClients
    assert (host, port) == (url.split("//")[1].rsplit(":", 1)[0].strip("[]"), 18443)
    factory.clientConnectionFailed(clock.connectors[0], Failure(ConnectionRefusedError()))
    out = []
    d.addBoth(out.append)
    assert out and out[0].check(RPCTransportError) and "refused" in str(out[0].value)
