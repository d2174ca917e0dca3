"""The node side against the real regtest stand-in (``hashcoop devnode``
run as a subprocess): cookie auth, template fetch, longpoll wake-up on
generatetoaddress, ZMQ hashblock, -blocknotify through ``hashcoop notify``,
and submitblock verdicts followed to confirmed / rejected / orphaned."""
from __future__ import annotations

import dataclasses
import json
import os
import sys

from twisted.internet import defer, protocol, task
from twisted.trial import unittest

from hashcoop.pool.core.btc.address import get_network
from hashcoop.pool.core.btc.block import parse_block
from hashcoop.pool.core.btc.hashing import hash_to_hex, sha256d
from hashcoop.pool.core.btc.target import bits_to_target
from hashcoop.pool.core.events import MemorySink
from hashcoop.pool.metrics import Metrics
from hashcoop.pool.node.blocks import BlockSubmitter
from hashcoop.pool.node.nodes import NodeSet
from hashcoop.pool.node.tipwatch import NotifyListener
from hashcoop.pool.node.work import WorkSource
from hashcoop.pool.rpc import NodeClient, RPCError, RPCTransportError
from tests.node.test_blocks import found as recorded_found
from tests.node.test_tipwatch import REPO
from tests.procs import free_port

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"



class _Devnode(protocol.ProcessProtocol):
    def __init__(self):
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()
        self.out = b""
        self.err = b""

    def outReceived(self, data):
        self.out += data
        if not self.ready.called and b"\n" in self.out:
            self.ready.callback(json.loads(self.out.split(b"\n", 1)[0]))

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        if not self.ready.called:
            self.ready.errback(RuntimeError("devnode exited: " + self.err.decode(errors="replace")[-2000:]))
        self.ended.callback(None)


class DevnodeTest(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.metrics = Metrics()
        self.services = []
        self.got = []
        # The notify listener must exist before the node runs -blocknotify.
        self.notify_hints = []
        self.listener = NotifyListener(reactor, "tcp:0:interface=127.0.0.1", lambda h, s: self.notify_hints.append(h))
        yield self.listener.start()
        notify = (f"{sys.executable} -m hashcoop.pool.app.cli notify --endpoint "
                  f"tcp:host=127.0.0.1:port={self.listener.port.getHost().port} %s")
        self.zmq_endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.datadir = self.mktemp()
        self.args = ["--datadir", self.datadir, "--print-ready", "--mempool-rate", "0", "--initial-blocks", "110",
                     "--zmqpubhashblock", self.zmq_endpoint, "--blocknotify", notify, "--log-level", "WARNING"]
        self.info = yield self.spawn("--rpcport", "0")
        self.client = NodeClient(reactor, self.info["rpc_url"], name="devnode", cookie_file=self.info["cookie"],
                                 timeout=10, metrics=self.metrics)
        self.nodes = NodeSet(reactor, [self.client], get_network("regtest"))

    def spawn(self, *extra) -> defer.Deferred:
        self.proc = _Devnode()
        args = [sys.executable, "-m", "hashcoop.pool.app.cli", "devnode", *extra, *self.args]
        self.reactor.spawnProcess(self.proc, sys.executable, args, env=dict(os.environ), path=str(REPO))
        return self.proc.ready.addTimeout(30, self.reactor)

    @defer.inlineCallbacks
    def tearDown(self):
        for s in reversed(self.services):
            yield s.stopService()
        yield self.nodes.close()
        yield self.listener.stop()
        if not self.proc.ended.called:
            self.proc.transport.signalProcess("TERM")
        yield self.proc.ended

    def work(self, **kw) -> WorkSource:
        kw.setdefault("longpoll", False)
        kw.setdefault("poll_interval", None)
        ws = WorkSource(self.reactor, self.nodes, lambda t, clean: self.got.append((t, clean)), metrics=self.metrics, **kw)
        self.services.append(ws)
        ws.startService()
        return ws

    @defer.inlineCallbacks
    def until(self, predicate, limit=15.0):
        start = self.reactor.seconds()
        while not predicate():
            if self.reactor.seconds() - start > limit:
                self.fail("condition not met in time")
            yield task.deferLater(self.reactor, 0.02, lambda: None)

    def new_tips(self, source):
        return self.metrics.registry.get_sample_value("hashcoop_new_tips_total", {"source": source}) or 0

    @defer.inlineCallbacks
    def test_cookie_auth_and_template(self):
        tpl = yield self.nodes.get_template()
        self.assertEqual((tpl.height, tpl.node), (111, "devnode"))
        self.assertEqual(tpl.prevhash_hex, (yield self.nodes.best_block_hash()))
        self.assertIsNotNone(tpl.longpollid)
        self.assertIsNotNone(tpl.witness_commitment)
        # A wrong cookie is refused with 401.
        bad = NodeClient(self.reactor, self.info["rpc_url"], user="__cookie__", password="0" * 64)
        self.addCleanup(bad.close)
        with self.assertRaises(RPCTransportError) as cm:
            yield bad.call("getblockcount")
        self.assertEqual(cm.exception.http_status, 401)
        # Core's error objects come through as RPCError.
        with self.assertRaises(RPCError) as cm:
            yield self.client.call("getblockhash", 10_000)
        self.assertEqual(cm.exception.code, -8)

    @defer.inlineCallbacks
    def test_node_restart_with_a_new_cookie(self):
        self.assertEqual((yield self.client.call("getblockcount")), 110)
        with open(self.info["cookie"]) as f:
            old = f.read()
        self.assertEqual(self.client._cookie, old)
        self.proc.transport.signalProcess("TERM")
        yield self.proc.ended
        with self.assertRaises(RPCTransportError):
            yield self.client.call("getblockcount")
        yield self.spawn("--rpcport", str(self.info["rpcport"]))
        with open(self.info["cookie"]) as f:
            self.assertNotEqual(f.read(), old)
        # The first call gets a 401, reads the new cookie and succeeds.
        self.assertEqual((yield self.client.call("getblockcount")), 110)
        self.assertNotEqual(self.client._cookie, old)

    @defer.inlineCallbacks
    def test_longpoll_wakes_on_generatetoaddress(self):
        ws = self.work(longpoll=True)
        yield ws.ready()
        yield task.deferLater(self.reactor, 0.3, lambda: None)  # the longpoll is parked
        [h] = yield self.client.call("generatetoaddress", 1, ADDRESS)
        yield self.until(lambda: ws.current.prevhash_hex == h)
        self.assertEqual(self.got[-1][1], True)
        self.assertEqual(ws.current.height, 112)
        self.assertEqual(self.new_tips("longpoll"), 1)

    @defer.inlineCallbacks
    def test_zmq_hashblock_from_the_stand_in(self):
        ws = self.work(zmq_endpoints=[self.zmq_endpoint])
        yield ws.ready()
        yield task.deferLater(self.reactor, 0.3, lambda: None)  # let the subscription settle
        [h] = yield self.client.call("generatetoaddress", 1, ADDRESS)
        yield self.until(lambda: ws.current.prevhash_hex == h)
        self.assertEqual(self.new_tips("zmq"), 1)

    @defer.inlineCallbacks
    def test_blocknotify_runs_hashcoop_notify(self):
        hashes = yield self.client.call("generatetoaddress", 2, ADDRESS)
        yield self.until(lambda: set(hashes) <= set(self.notify_hints))

    @defer.inlineCallbacks
    def test_found_block_submitted_confirmed_duplicate_and_rejected(self):
        sink = MemorySink()
        sub = BlockSubmitter(self.reactor, self.nodes, sink, self.mktemp(), recheck_interval=0.2, final_depth=2,
                             metrics=self.metrics)
        self.services.append(sub)
        sub.startService()
        made = yield self.client.call("generateblock", ADDRESS, [], False)
        f = self.found(made["hex"], 111)
        self.assertEqual(f.hash, made["hash"])
        status = yield sub.submit(f)
        self.assertEqual((status.status, status.verdicts), ("submitted", {"devnode": None}))
        self.assertEqual((yield self.client.call("getbestblockhash")), f.hash)
        yield self.until(lambda: sub.status_of(f.hash) == "confirmed")
        # The same block again is "duplicate", which counts as taken.
        verdicts = yield self.nodes.submit_block(made["hex"])
        self.assertEqual(verdicts, {"devnode": "duplicate"})
        yield self.client.call("generatetoaddress", 1, ADDRESS)
        yield self.until(lambda: sub.blocks[f.hash].final)
        # A block whose merkle root does not match: rejected by every node.
        made = yield self.client.call("generateblock", ADDRESS, [], False)
        raw = bytearray.fromhex(made["hex"])
        target = bits_to_target(int.from_bytes(raw[72:76], "little"))
        for i in range(36, 68):  # a wrong merkle root whose header still meets the target
            raw[i] ^= 1
            if int.from_bytes(sha256d(bytes(raw[:80])), "little") <= target:
                break
            raw[i] ^= 1
        bad = self.found(raw.hex(), 113)
        status = yield sub.submit(bad)
        self.assertEqual((status.status, status.verdicts), ("rejected", {"devnode": "bad-txnmrklroot"}))
        self.assertEqual(self.metrics.registry.get_sample_value(
            "hashcoop_block_submissions_total", {"node": "devnode", "result": "bad-txnmrklroot"}), 1)
        self.assertEqual([s.status for s in sink.statuses], ["submitted", "confirmed", "rejected"])

    @defer.inlineCallbacks
    def test_block_that_loses_the_race_ends_orphaned(self):
        sink = MemorySink()
        sub = BlockSubmitter(self.reactor, self.nodes, sink, self.mktemp(), recheck_interval=0.2, metrics=self.metrics)
        self.services.append(sub)
        sub.startService()
        ours = yield self.client.call("generateblock", ADDRESS, [], False)
        # Someone else's block at the same height arrives first.
        yield self.client.call("generatetoaddress", 1, self.info["faucet_address"])
        status = yield sub.submit(self.found(ours["hex"], 111))
        self.assertEqual((status.status, status.verdicts), ("pending", {"devnode": "inconclusive"}))
        yield self.until(lambda: sub.status_of(ours["hash"]) == "orphaned")
        self.assertEqual([s.status for s in sink.statuses], ["pending", "submitted", "orphaned"])

    def found(self, block_hex: str, height: int):
        header = parse_block(bytes.fromhex(block_hex))[0]
        return dataclasses.replace(recorded_found(), height=height, hash=hash_to_hex(sha256d(header)),
                                   prevhash=hash_to_hex(header[4:36]), block_hex=block_hex)
