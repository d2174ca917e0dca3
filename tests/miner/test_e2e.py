"""End to end: ``hashcoop miner`` as a subprocess against a tiny scripted
Stratum server on a real socket. The server checks every share with
``hashcoop.pool.core.btc`` primitives only (not the miner's own code)."""
import json
import os
import sys

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.utils import getProcessOutputAndValue
from twisted.protocols.basic import LineOnlyReceiver
from twisted.trial import unittest

from hashcoop.pool.core.btc.block import build_header
from hashcoop.pool.core.btc.hashing import fold_branch, sha256d
from hashcoop.pool.core.btc.target import difficulty_to_target
from tests.miner.vectors import notify

EXTRANONCE2_SIZE = 4
MASK = 0x1FFFE000
USER = "bcrt1ql7tjprhhlrdzkj3tewzuttn9mt0u4d0564ntyj.e2e"


def scripted_job(job_id: str) -> list:
    params = list(notify()["params"])
    params[0] = job_id
    params[6] = "1d00ffff"  # mainnet-like bits, so shares are not blocks
    params[8] = True
    return params


def verify_share(params: list, job: list, extranonce1: bytes, difficulty: float, mask: int | None) -> bytes:
    """The header hash of a submitted share, checked from scratch; raises
    AssertionError for anything a pool would reject."""
    user, job_id, en2_hex, ntime_hex, nonce_hex, *rest = params
    assert user == USER and job_id == job[0]
    en2 = bytes.fromhex(en2_hex)
    assert len(en2) == EXTRANONCE2_SIZE and len(ntime_hex) == 8 and len(nonce_hex) == 8
    version = int(job[5], 16)
    if mask is None:
        assert rest == []
    else:
        (vbits_hex,) = rest
        vbits = int(vbits_hex, 16)
        assert vbits & ~mask == 0, "version bits outside the mask"
        version = (version & ~mask) | (vbits & mask)
    ntime = int(ntime_hex, 16)
    assert int(job[7], 16) <= ntime <= int(job[7], 16) + 600
    coinbase = bytes.fromhex(job[2]) + extranonce1 + en2 + bytes.fromhex(job[3])
    root = fold_branch(sha256d(coinbase), [bytes.fromhex(b) for b in job[4]])
    raw_prev = bytes.fromhex(job[1])
    prevhash = b"".join(raw_prev[i:i + 4][::-1] for i in range(0, 32, 4))
    header = build_header(version, prevhash, root, ntime, int(job[6], 16), int(nonce_hex, 16))
    h = sha256d(header)
    assert int.from_bytes(h, "little") <= difficulty_to_target(difficulty), "high hash"
    return h


class ScriptedPool(LineOnlyReceiver):
    delimiter = b"\n"

    def connectionMade(self):
        self.factory.connections.append(self)
        n = len(self.factory.connections)
        self.job = scripted_job(f"job{n}")
        self.extranonce1 = n.to_bytes(4, "big")  # unique per connection, as in a real pool
        self.mask = None
        self.submits = 0

    def send(self, msg):
        self.sendLine(json.dumps(msg).encode())

    def lineReceived(self, line):
        msg = json.loads(line)
        f = self.factory
        f.received.append(msg)
        method, rid = msg.get("method"), msg.get("id")
        if method == "mining.configure":
            self.mask = MASK
            self.send({"id": rid, "result": {"version-rolling": True,
                                             "version-rolling.mask": f"{MASK:08x}"}, "error": None})
        elif method == "mining.subscribe":
            self.send({"id": rid, "result": [[["mining.notify", "1"]], self.extranonce1.hex(), EXTRANONCE2_SIZE],
                       "error": None})
            self.send({"id": None, "method": "mining.set_difficulty", "params": [f.difficulty]})
            self.send({"id": None, "method": "mining.notify", "params": self.job})
        elif method == "mining.authorize":
            self.send({"id": rid, "result": True, "error": None})
        elif method == "mining.submit":
            try:
                h = verify_share(msg["params"], self.job, self.extranonce1, f.difficulty, self.mask)
                assert h not in f.hashes, "duplicate"
                f.hashes.add(h)
            except AssertionError as e:
                f.invalid.append((msg["params"], str(e)))
                self.send({"id": rid, "result": None, "error": [23, str(e), None]})
                return
            self.submits += 1
            self.send({"id": rid, "result": True, "error": None})
            if f.reconnect_after and self.submits == f.reconnect_after and len(f.connections) == 1:
                self.send({"id": None, "method": "client.reconnect", "params": ["127.0.0.1", f.port, 0]})
        f.changed()


class ScriptedPoolFactory(protocol.ServerFactory):
    protocol = ScriptedPool

    def __init__(self, difficulty: float, reconnect_after: int = 0):
        self.difficulty = difficulty
        self.reconnect_after = reconnect_after
        self.connections: list[ScriptedPool] = []
        self.received: list[dict] = []
        self.hashes: set[bytes] = set()
        self.invalid: list = []
        self.port = 0
        self._waiters = []

    def changed(self):
        for cond, d in list(self._waiters):
            if cond():
                self._waiters.remove((cond, d))
                d.callback(None)

    def wait(self, cond, timeout=60.0):
        d = defer.Deferred()
        self._waiters.append((cond, d))
        self.changed()
        return d.addTimeout(timeout, reactor)


def miner_args(port: int, *extra: str) -> list[str]:
    return ["-m", "hashcoop.pool.app.cli", "miner", "-o", f"stratum+tcp://127.0.0.1:{port}", "-u", USER, *extra]


class MinerProcess(protocol.ProcessProtocol):
    def __init__(self):
        self.out = b""
        self.err = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.out += data

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


class MinerEndToEnd(unittest.TestCase):
    timeout = 120

    def listen(self, difficulty, **kw) -> ScriptedPoolFactory:
        factory = ScriptedPoolFactory(difficulty, **kw)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        factory.port = port.getHost().port
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: [c.transport.loseConnection() for c in factory.connections])
        return factory

    def summary(self, out: bytes) -> dict:
        return json.loads(out.decode().strip().splitlines()[-1])

    @defer.inlineCallbacks
    def test_miner_submits_valid_shares_and_exits_with_summary(self):
        pool = self.listen(0.00005)
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, miner_args(pool.port, "-t", "2", "--max-shares", "3", "--duration", "90"),
            env=dict(os.environ), reactor=reactor)
        self.assertEqual(code, 0, err.decode())
        summary = self.summary(out)
        self.assertEqual((summary["accepted"], summary["rejected"]), (3, 0), err.decode())
        self.assertEqual(summary["reason"], "max-shares")
        self.assertGreater(summary["hashes"], 0)
        self.assertGreater(summary["hashrate"], 0)
        self.assertEqual(pool.invalid, [])
        self.assertEqual(len(pool.hashes), 3)
        methods = [m["method"] for m in pool.received if "method" in m]
        self.assertEqual(methods[:3], ["mining.configure", "mining.subscribe", "mining.authorize"])
        submits = [m for m in pool.received if m.get("method") == "mining.submit"]
        self.assertTrue(all(len(m["params"]) == 6 for m in submits))

    @defer.inlineCallbacks
    def test_miner_follows_client_reconnect_and_keeps_mining(self):
        pool = self.listen(0.00005, reconnect_after=1)
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, miner_args(pool.port, "--no-version-rolling", "--max-shares", "3", "--duration", "90"),
            env=dict(os.environ), reactor=reactor)
        self.assertEqual(code, 0, err.decode())
        summary = self.summary(out)
        self.assertEqual(len(pool.connections), 2, err.decode())
        self.assertEqual(pool.invalid, [])
        submitted = sum(1 for m in pool.received if m.get("method") == "mining.submit")
        # every submit is either answered or lost with the first connection
        self.assertEqual(summary["accepted"] + summary["unanswered"], submitted)
        self.assertGreaterEqual(summary["accepted"], 2)
        self.assertGreaterEqual(pool.connections[1].submits, 1)
        self.assertNotIn("mining.configure", [m.get("method") for m in pool.received])

    @defer.inlineCallbacks
    def _stop_with(self, sig):
        pool = self.listen(0.00005)
        proc = MinerProcess()
        reactor.spawnProcess(proc, sys.executable, [sys.executable, *miner_args(pool.port)], env=dict(os.environ))
        yield pool.wait(lambda: len(pool.hashes) >= 1)
        yield task.deferLater(reactor, 0.3, lambda: None)  # let the miner read the answer
        proc.transport.signalProcess(sig)
        code = yield proc.ended
        self.assertEqual(code, 0, proc.err.decode())
        summary = self.summary(proc.out)
        self.assertEqual(summary["reason"], "signal")
        self.assertGreaterEqual(summary["accepted"], 1)
        self.assertGreater(summary["hashes"], 0)

    def test_sigterm_exits_cleanly_with_summary(self):
        return self._stop_with("TERM")

    def test_sigint_exits_cleanly_with_summary(self):
        return self._stop_with("INT")

    @defer.inlineCallbacks
    def test_duration_exits_while_the_pool_is_unreachable(self):
        # a port with nothing listening: take one, then close it
        closed = reactor.listenTCP(0, protocol.ServerFactory(), interface="127.0.0.1")
        port = closed.getHost().port
        yield closed.stopListening()
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, miner_args(port, "--duration", "1.5"), env=dict(os.environ), reactor=reactor)
        self.assertEqual(code, 0, err.decode())
        summary = self.summary(out)
        self.assertEqual((summary["accepted"], summary["reason"]), (0, "duration"))
        self.assertIn(b"reconnecting", err)
