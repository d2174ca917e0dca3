"""The devnode over real sockets (trial runs the reactor): HTTP framing and
auth like Core's httprpc, JSON-RPC 1.0/2.0/batches, the recorded error
objects and submitblock verdicts over HTTP, longpoll, ZMQ hashblock,
-blocknotify, the synthetic mempool and auto-mine loops, persistence."""
from __future__ import annotations

import base64
import json
import shutil
import tempfile
import time
from io import BytesIO
from pathlib import Path

import zmq
from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest
from twisted.web._newclient import ResponseNeverReceived
from twisted.web.client import Agent, FileBodyProducer, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from hashcoop.pool.core.btc.address import NETWORKS, script_to_address
from hashcoop.pool.tools.devnode.http import RpcHttpFactory
from hashcoop.pool.tools.devnode.rpc import Rpc
from hashcoop.pool.tools.devnode.server import (
    OTHER_MINER_SCRIPT,
    Authenticator,
    DevNode,
    DevNodeOptions,
    JsonRpcDispatcher,
    LongPollHub,
    RpcHttpHandler,
)
from tests.devnode.util import MINER, core_vectors, faucet_coinbase, funded_chain, recorded_chain, spend

V = core_vectors()
MINER_ADDR = script_to_address(MINER, NETWORKS["regtest"])
OTHER = bytes.fromhex("0014") + b"\x22" * 20


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def http(url: str, body: bytes | dict | list | None = None, auth: str | None = None, method: bytes = b"POST", path: str = ""):
    """(status, headers, body) of one request."""
    headers = Headers({b"content-type": [b"application/json"]})
    if auth is not None:
        headers.addRawHeader(b"authorization", b"Basic " + base64.b64encode(auth.encode()))
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    producer = FileBodyProducer(BytesIO(body)) if body is not None else None
    response = yield Agent(reactor).request(method, (url.rstrip("/") + "/" + path.lstrip("/")).encode(), headers, producer)
    done = defer.Deferred()
    response.deliverBody(_Collect(done))
    data = yield done
    return response.code, response.headers, data


class _Collect(protocol.Protocol):
    """Collects a response body."""

    def __init__(self, done: defer.Deferred):
        self.done = done
        self.parts: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.parts.append(data)

    def connectionLost(self, reason) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


class _Served:
    """An RPC server around a given chain on a free port."""

    auth = "__cookie__:" + "ab" * 32

    def serve(self, chain, **hub_kw):
        self.chain = chain
        self.rpc = Rpc(chain, clock=chain.clock, template_refresh=0)
        self.hub = LongPollHub(chain, reactor, **hub_kw)
        user, password = self.auth.split(":")
        handler = RpcHttpHandler(JsonRpcDispatcher(self.rpc, self.hub), Authenticator([(user, password)]), reactor)
        self.port = reactor.listenTCP(0, RpcHttpFactory(handler, reactor), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/"

    def call(self, method: str, params=None, *, id=1, v2=False):
        req = {"method": method, "params": params or [], "id": id}
        if v2:
            req["jsonrpc"] = "2.0"
        return http(self.url, req, self.auth)

    def tearDown(self):
        self.hub.shutdown()
        return self.port.stopListening()


class RecordedOverHttpTest(_Served, unittest.TestCase):
    def setUp(self):
        chain, _ = recorded_chain()
        self.serve(chain)

    @defer.inlineCallbacks
    def test_recorded_error_objects(self):
        for name, method, params, status in (
            ("getblockhash_out_of_range", "getblockhash", [1000], 500),
            ("unknown_method", "getblockchaininfos", [], 404),
            ("getblocktemplate_no_segwit_rule", "getblocktemplate", [{}], 500),
        ):
            code, headers, body = yield self.call(method, params)
            self.assertEqual(code, status)
            self.assertEqual(json.loads(body), V["rpc"][name])
            self.assertEqual(body, json.dumps(V["rpc"][name], separators=(",", ":")).encode() + b"\n")
            self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])

    @defer.inlineCallbacks
    def test_submitblock_replay_and_getblock_over_http(self):
        for case in V["submitblock"]:
            code, _, body = yield self.call("submitblock", [case["block"]])
            self.assertEqual((code, json.loads(body)), (200, case["result"]), case["case"])
        want = V["rpc"]["getblock_v1_after"]
        code, _, body = yield self.call("getblock", [want["hash"], 1])
        self.assertEqual(json.loads(body)["result"], want)
        self.assertIn(b'"difficulty":4.656542373906925e-10,', body)
        code, _, body = yield self.call("getblocktemplate", [{"rules": ["segwit"]}])
        self.assertEqual(json.loads(body)["result"]["previousblockhash"], V["submitblock"][-1]["hash"])

    @defer.inlineCallbacks
    def test_validateaddress_over_http(self):
        want = V["rpc"]["validateaddress_p2tr"]
        code, _, body = yield self.call("validateaddress", [want["address"]])
        self.assertEqual(json.loads(body)["result"], want)


class HttpFramingTest(_Served, unittest.TestCase):
    def setUp(self):
        self.serve(funded_chain(3))

    @defer.inlineCallbacks
    def test_authentication(self):
        code, headers, body = yield http(self.url, {"method": "getblockcount", "id": 1})
        self.assertEqual((code, body), (401, b""))
        self.assertEqual(headers.getRawHeaders(b"www-authenticate"), [b'Basic realm="jsonrpc"'])
        started = time.monotonic()
        code, headers, body = yield http(self.url, {"method": "getblockcount", "id": 1}, "__cookie__:wrong")
        self.assertEqual((code, body), (401, b""))
        self.assertGreaterEqual(time.monotonic() - started, 0.24)
        self.assertEqual(headers.getRawHeaders(b"www-authenticate"), [b'Basic realm="jsonrpc"'])
        code, _, body = yield http(self.url, {"method": "getblockcount", "id": 1}, "nocolon")
        self.assertEqual(code, 401)
        code, _, body = yield self.call("getblockcount")
        self.assertEqual((code, json.loads(body)), (200, {"result": 3, "error": None, "id": 1}))

    @defer.inlineCallbacks
    def test_methods_and_paths(self):
        code, _, body = yield http(self.url, None, self.auth, method=b"GET")
        self.assertEqual((code, body), (405, b"JSONRPC server handles only POST requests"))
        code, _, body = yield http(self.url, {"method": "getblockcount", "id": 1}, self.auth, path="/rest/x")
        self.assertEqual(code, 404)
        code, _, body = yield http(self.url, {"method": "getblockcount", "id": 1}, self.auth, path="/wallet/w1")
        self.assertEqual(json.loads(body)["result"], 3)

    @defer.inlineCallbacks
    def test_jsonrpc_1_and_2(self):
        code, headers, body = yield self.call("getblockcount", id=7)
        self.assertEqual(body, b'{"result":3,"error":null,"id":7}\n')
        code, _, body = yield self.call("getblockcount", id="x", v2=True)
        self.assertEqual((code, body), (200, b'{"jsonrpc":"2.0","result":3,"id":"x"}\n'))
        code, _, body = yield self.call("getblockhash", [9], v2=True)
        self.assertEqual((code, json.loads(body)), (200, {"jsonrpc": "2.0", "error": {"code": -8, "message": "Block height out of range"}, "id": 1}))
        code, _, body = yield self.call("nope", id=2)
        self.assertEqual((code, json.loads(body)), (404, {"result": None, "error": {"code": -32601, "message": "Method not found"}, "id": 2}))
        # a 2.0 notification is executed but not answered
        code, _, body = yield http(self.url, {"jsonrpc": "2.0", "method": "generatetoaddress", "params": [1, MINER_ADDR]}, self.auth)
        self.assertEqual((code, body), (204, b""))
        self.assertEqual(self.chain.height, 4)
        # a 1.0 request without id is answered, without an id
        code, _, body = yield http(self.url, {"method": "getblockcount"}, self.auth)
        self.assertEqual(body, b'{"result":4,"error":null}\n')
        code, _, body = yield http(self.url, {"jsonrpc": "1.0", "method": "getblockcount", "id": 3}, self.auth)
        self.assertEqual(body, b'{"result":4,"error":null,"id":3}\n')

    @defer.inlineCallbacks
    def test_malformed_requests(self):
        cases = [
            (b"{not json", 500, {"result": None, "error": {"code": -32700, "message": "Parse error"}, "id": None}),
            (b"42", 500, {"result": None, "error": {"code": -32700, "message": "Top-level object parse error"}, "id": None}),
            (b'{"id":5}', 400, {"result": None, "error": {"code": -32600, "message": "Missing method"}, "id": 5}),
            (b'{"id":5,"method":1}', 400, {"result": None, "error": {"code": -32600, "message": "Method must be a string"}, "id": 5}),
            (b'{"id":5,"method":"getblockcount","params":3}', 400, {"result": None, "error": {"code": -32600, "message": "Params must be an array or object"}, "id": 5}),
            (b'{"id":5,"method":"getblockcount","jsonrpc":"3.0"}', 400, {"result": None, "error": {"code": -32600, "message": "JSON-RPC version not supported"}, "id": 5}),
            (b'{"id":5,"method":"getblockcount","jsonrpc":2}', 400, {"result": None, "error": {"code": -32600, "message": "jsonrpc field must be a string"}, "id": 5}),
        ]
        for raw, status, want in cases:
            code, _, body = yield http(self.url, raw, self.auth)
            self.assertEqual((code, json.loads(body)), (status, want), raw)

    @defer.inlineCallbacks
    def test_batches(self):
        batch = [
            7,
            {"jsonrpc": "2.0", "method": "getblockcount", "id": 1},
            {"method": "getblockhash", "params": [99], "id": 2},
            {"jsonrpc": "2.0", "method": "getblockcount"},
            {"jsonrpc": "2.0", "method": "getblockhash", "params": {"height": 0}, "id": 3},
        ]
        code, _, body = yield http(self.url, batch, self.auth)
        self.assertEqual(code, 200)
        self.assertEqual(
            json.loads(body),
            [
                {"result": None, "error": {"code": -32600, "message": "Invalid Request object"}, "id": None},
                {"jsonrpc": "2.0", "result": 3, "id": 1},
                {"result": None, "error": {"code": -8, "message": "Block height out of range"}, "id": 2},
                {"jsonrpc": "2.0", "result": "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206", "id": 3},
            ],
        )
        code, _, body = yield http(self.url, [{"jsonrpc": "2.0", "method": "getblockcount"}], self.auth)
        self.assertEqual((code, body), (204, b""))
        code, _, body = yield http(self.url, [], self.auth)
        self.assertEqual((code, body), (200, b"[]\n"))


class LongPollTest(_Served, unittest.TestCase):
    def setUp(self):
        self.serve(funded_chain(110), first_check=0.4, interval=0.1)

    @defer.inlineCallbacks
    def template(self, longpollid=None):
        req = {"rules": ["segwit"]}
        if longpollid is not None:
            req["longpollid"] = longpollid
        code, _, body = yield self.call("getblocktemplate", [req])
        self.assertEqual(code, 200, body)
        return json.loads(body)["result"]

    @defer.inlineCallbacks
    def test_wakes_on_a_new_tip(self):
        first = yield self.template()
        started = time.monotonic()
        pending = self.template(first["longpollid"])
        yield sleep(0.1)
        self.assertFalse(pending.called)
        self.assertEqual(self.hub.waiting, 1)
        self.chain.generate(MINER, 1)
        second = yield pending
        self.assertLess(time.monotonic() - started, 0.4)  # did not wait for the mempool check
        self.assertEqual(second["previousblockhash"], self.chain.tip.hash_hex)
        self.assertNotEqual(second["longpollid"], first["longpollid"])
        self.assertEqual(self.hub.waiting, 0)

    @defer.inlineCallbacks
    def test_wakes_on_new_mempool_transactions(self):
        first = yield self.template()
        started = time.monotonic()
        pending = self.template(first["longpollid"])
        tx = spend([(faucet_coinbase(self.chain, 1).txid, 0)], [(50 * 10**8 - 5000, OTHER)])
        self.chain.accept_to_mempool(tx)
        yield sleep(0.2)
        self.assertFalse(pending.called)  # the mempool is only looked at after first_check
        second = yield pending
        self.assertGreaterEqual(time.monotonic() - started, 0.39)
        self.assertEqual([t["txid"] for t in second["transactions"]], [tx.txid[::-1].hex()])
        self.assertEqual(second["previousblockhash"], first["previousblockhash"])

    @defer.inlineCallbacks
    def test_keeps_waiting_while_nothing_changes(self):
        first = yield self.template()
        pending = self.template(first["longpollid"])
        yield sleep(0.7)  # several mempool checks, nothing new
        self.assertFalse(pending.called)
        self.chain.generate(MINER, 1)
        yield pending

    @defer.inlineCallbacks
    def test_stale_longpollid_answers_at_once(self):
        first = yield self.template()
        self.chain.generate(MINER, 1)
        second = yield self.template(first["longpollid"])
        self.assertEqual(second["height"], 112)

    @defer.inlineCallbacks
    def test_client_hanging_up_ends_the_wait(self):
        first = yield self.template()
        pending = self.template(first["longpollid"])
        yield sleep(0.1)
        self.assertEqual(self.hub.waiting, 1)
        pending.cancel()
        yield self.assertFailure(pending, ResponseNeverReceived)
        yield sleep(0.1)
        self.assertEqual(self.hub.waiting, 0)

    @defer.inlineCallbacks
    def test_shutdown_answers_waiting_clients(self):
        first = yield self.template()
        pending = self.call("getblocktemplate", [{"rules": ["segwit"], "longpollid": first["longpollid"]}])
        yield sleep(0.1)
        self.hub.shutdown()
        code, _, body = yield pending
        self.assertEqual((code, json.loads(body)["error"]), (500, {"code": -9, "message": "Shutting down"}))


class DevNodeTest(unittest.TestCase):
    def tempdir(self, prefix: str) -> str:
        """A directory removed when the test ends, passed or failed."""
        d = tempfile.mkdtemp(prefix=prefix)
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def make_node(self, **kw) -> DevNode:
        kw.setdefault("datadir", self.tempdir("devnode-test-"))
        kw.setdefault("rpcport", 0)
        kw.setdefault("mempool_rate", 0)
        kw.setdefault("initial_blocks", 110)
        node = DevNode(reactor, DevNodeOptions(**kw), on_stop_request=lambda: self.stop_requests.append(True))
        node.start()
        self.addCleanup(node.stop)
        return node

    def setUp(self):
        self.stop_requests = []

    @staticmethod
    def auth(node: DevNode) -> str:
        return node.cookie_path.read_text()

    @defer.inlineCallbacks
    def rpc(self, node: DevNode, method: str, params=None, auth=None):
        code, _, body = yield http(node.url, {"method": method, "params": params or [], "id": 1}, auth or self.auth(node))
        return json.loads(body)

    @defer.inlineCallbacks
    def test_cookie_file_and_stop(self):
        node = self.make_node()
        cookie = node.cookie_path.read_text()
        self.assertRegex(cookie, r"^__cookie__:[0-9a-f]{64}$")
        self.assertEqual(oct(node.cookie_path.stat().st_mode & 0o777), "0o600")
        self.assertEqual(node.cookie_path, Path(node.options.datadir) / "regtest" / ".cookie")
        info = node.ready_info()
        self.assertEqual((info["rpcport"], info["height"]), (node.rpc_port, 110))
        reply = yield self.rpc(node, "stop")
        self.assertEqual(reply["result"], "Bitcoin Core stopping")
        yield sleep(0.1)
        self.assertEqual(self.stop_requests, [True])
        yield node.stop()
        self.assertFalse(node.cookie_path.exists())

    @defer.inlineCallbacks
    def test_rpcuser_and_rpcpassword(self):
        node = self.make_node(rpcuser="alice", rpcpassword="s3cret", initial_blocks=0)
        self.assertIsNone(node.cookie_path)
        self.assertFalse((Path(node.options.datadir) / "regtest" / ".cookie").exists())
        reply = yield self.rpc(node, "getblockcount", auth="alice:s3cret")
        self.assertEqual(reply["result"], 0)
        code, _, _ = yield http(node.url, {"method": "getblockcount", "id": 1}, "alice:wrong")
        self.assertEqual(code, 401)

    @defer.inlineCallbacks
    def test_zmq_hashblock(self):
        node = self.make_node(zmqpubhashblock="tcp://127.0.0.1:*", initial_blocks=1)
        endpoint = node.ready_info()["zmqpubhashblock"]
        self.assertRegex(endpoint, r"^tcp://127\.0\.0\.1:\d+$")
        sub = zmq.Context.instance().socket(zmq.SUB)
        self.addCleanup(sub.close, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"hashblock")
        sub.connect(endpoint)
        yield sleep(0.3)  # let the subscription reach the publisher
        received = []

        @defer.inlineCallbacks
        def receive(n: int):
            deadline = time.monotonic() + 5
            while len(received) < n and time.monotonic() < deadline:
                try:
                    received.append(sub.recv_multipart(flags=zmq.NOBLOCK))
                except zmq.Again:
                    yield sleep(0.02)

        reply = yield self.rpc(node, "generatetoaddress", [2, MINER_ADDR])
        yield receive(2)
        self.assertEqual(received, [[b"hashblock", bytes.fromhex(h), seq.to_bytes(4, "little")] for seq, h in enumerate(reply["result"])])
        # invalidateblock only disconnects: Core publishes nothing
        yield self.rpc(node, "invalidateblock", [reply["result"][1]])
        yield sleep(0.2)
        with self.assertRaises(zmq.Again):
            sub.recv_multipart(flags=zmq.NOBLOCK)
        more = yield self.rpc(node, "generatetoaddress", [1, script_to_address(OTHER, NETWORKS["regtest"])])
        yield receive(3)
        self.assertEqual(received[2], [b"hashblock", bytes.fromhex(more["result"][0]), (2).to_bytes(4, "little")])

    @defer.inlineCallbacks
    def test_blocknotify_runs_the_command(self):
        out = Path(self.tempdir("devnode-notify-")) / "tips.txt"
        node = self.make_node(blocknotify=f"echo %s >> {out}", initial_blocks=1)
        reply = yield self.rpc(node, "generatetoaddress", [2, MINER_ADDR])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().split()) < 2):
            yield sleep(0.05)
        self.assertEqual(sorted(out.read_text().split()), sorted(reply["result"]))
        yield self.rpc(node, "invalidateblock", [reply["result"][1]])  # a tip change without a new block
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(out.read_text().split()) < 3:
            yield sleep(0.05)
        self.assertEqual(out.read_text().split()[-1], reply["result"][0])

    @defer.inlineCallbacks
    def test_synthetic_mempool_feeds_templates(self):
        node = self.make_node(mempool_rate=1200)  # one every 50 ms
        yield sleep(1.0)
        pool = yield self.rpc(node, "getrawmempool")
        self.assertGreaterEqual(len(pool["result"]), 5)
        tpl = yield self.rpc(node, "getblocktemplate", [{"rules": ["segwit"]}])
        txs = tpl["result"]["transactions"]
        self.assertEqual(len(txs), len(node.chain.mempool))
        self.assertEqual(tpl["result"]["coinbasevalue"], 50 * 10**8 + sum(t["fee"] for t in txs))
        self.assertTrue(all(t["fee"] > 0 and t["weight"] > 0 for t in txs))

    @defer.inlineCallbacks
    def test_auto_mine(self):
        node = self.make_node(auto_mine=0.1, initial_blocks=1)
        yield sleep(0.55)
        self.assertGreaterEqual(node.chain.height, 4)
        self.assertEqual(node.chain.tip.block.txs[0].outputs[0][1], OTHER_MINER_SCRIPT)

    @defer.inlineCallbacks
    def test_persistence_across_restart(self):
        datadir = self.tempdir("devnode-persist-")
        node = self.make_node(datadir=datadir, persist=True, initial_blocks=105)
        hashes = (yield self.rpc(node, "generatetoaddress", [3, MINER_ADDR]))["result"]
        yield self.rpc(node, "invalidateblock", [hashes[2]])
        tx = spend([(faucet_coinbase(node.chain, 1).txid, 0)], [(50 * 10**8 - 5000, OTHER)])
        node.chain.accept_to_mempool(tx)
        yield self.rpc(node, "generatetoaddress", [1, script_to_address(OTHER, NETWORKS["regtest"])])
        before = {
            "tip": node.chain.tip.hash,
            "height": node.chain.height,
            "utxos": dict(node.chain.utxos),
            "tips": (yield self.rpc(node, "getchaintips"))["result"],
        }
        yield node.stop()
        again = self.make_node(datadir=datadir, persist=True, initial_blocks=105)
        self.assertEqual(again.chain.tip.hash, before["tip"])
        self.assertEqual(again.chain.height, before["height"])
        self.assertEqual(again.chain.utxos, before["utxos"])
        tips = (yield self.rpc(again, "getchaintips"))["result"]
        self.assertEqual(tips, before["tips"])
        self.assertIn("invalid", {t["status"] for t in tips})
        # a larger --initial-blocks tops the reloaded chain up
        yield again.stop()
        third = self.make_node(datadir=datadir, persist=True, initial_blocks=before["height"] + 2)
        self.assertEqual(third.chain.height, before["height"] + 2)
        self.assertEqual(third.chain.at_height(before["height"]).hash, before["tip"])
