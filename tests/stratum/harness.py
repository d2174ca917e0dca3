"""A Stratum server on MemoryReactorClock with StringTransports: no sockets,
no sleeps. Templates come from the recorded Bitcoin Core getblocktemplate,
with the network target made harder so most shares are not blocks."""
from __future__ import annotations

import dataclasses

import orjson
from twisted.internet import defer
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from hashcoop.pool.config import load_config
from hashcoop.pool.core.btc.address import address_to_script, get_network
from hashcoop.pool.core.btc.hashing import fold_branch, sha256d
from hashcoop.pool.core.btc.target import DIFF1_TARGET, difficulty_to_target, target_to_bits
from hashcoop.pool.core.events import BlockStatus, MemorySink
from hashcoop.pool.core.jobs import JobManager
from hashcoop.pool.core.template import Template
from hashcoop.pool.metrics import Metrics
from hashcoop.stratum.protocol import StratumProtocol
from hashcoop.stratum.server import StratumFactory, StratumServer
from tests import vectors

GBT = vectors.core()["rpc"]["getblocktemplate"]
ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
ADDR2 = "bcrt1psjw83ferk5eyapl0f5fpd8u50s2t39hxp4pzuttnugf0acxfwy4qwwea25"
NETWORK_DIFF = 1e-6  # blocks are 100x harder than the default share difficulty below
SHARE_DIFF = 1e-8


def template(prev: bytes | None = None, network_diff: float = NETWORK_DIFF, **changes) -> Template:
    t = Template.from_gbt(GBT, node="test")
    target = difficulty_to_target(network_diff)
    bits = target_to_bits(target)
    from hashcoop.pool.core.btc.target import bits_to_target

    t = dataclasses.replace(t, bits=bits, target=bits_to_target(bits), **changes)
    if prev is not None:
        t = dataclasses.replace(t, prevhash=prev, height=t.height + 1)
    return t


def config(**stratum):
    ports = stratum.pop("ports", [{"port": 3333, "start_difficulty": SHARE_DIFF, "min_difficulty": 1e-10, "max_difficulty": 1e6}])
    return load_config(data={
        "pool": {"network": "regtest", "address": ADDR, "coinbase_tag": "/test/"},
        "nodes": [{"url": "http://127.0.0.1:1/"}],
        "stratum": {"ports": ports, **stratum},
        "vardiff": {"target_interval": 10, "retarget_interval": 60},
    }, env={})


class FakeSubmitter:
    def __init__(self):
        self.found = []
        self.stale = []

    def submit(self, found):
        """As BlockSubmitter.submit: fires with the first round's BlockStatus."""
        self.found.append(found)
        return defer.succeed(BlockStatus(time=found.time, height=found.height, hash=found.hash, status="submitted"))

    def record_stale(self, found, reason):
        self.stale.append((found, reason))


class Harness:
    def __init__(self, cfg=None, with_job=True):
        self.cfg = cfg or config()
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1795651986)
        self.sink = MemorySink()
        self.metrics = Metrics()
        self.submitter = FakeSubmitter()
        self.jobs = JobManager(payout_script=address_to_script(ADDR, get_network("regtest")), tag=b"/test/",
                               extranonce_size=4 + self.cfg.pool.extranonce2_size, now=self.reactor.seconds, first_seq=100)
        self.server = StratumServer(reactor=self.reactor, config=self.cfg, jobs=self.jobs, sink=self.sink,
                                    metrics=self.metrics, block_submitter=self.submitter)
        self.factory = StratumFactory(self.server, self.cfg.stratum.ports[0])
        if with_job:
            self.server.on_template(template(), True)

    def connect(self, ip="10.0.0.1", port=40000, peer=False):
        """A client; with ``peer``, on a ``PeerTransport`` (Twisted's output
        buffering, a peer that reads when told) instead of a StringTransport."""
        proto = self.factory.buildProtocol(IPv4Address("TCP", ip, port))
        if proto is None or not isinstance(proto, StratumProtocol):  # refused (closed at once, or told why first)
            return None
        return Client(self, proto, PeerTransport(self.reactor, ip) if peer else None)

    def metric(self, name, **labels):
        v = self.metrics.registry.get_sample_value(name, labels)
        return 0 if v is None else v


class PeerTransport(FileDescriptor):
    """Twisted's own output buffering and producer calls (``FileDescriptor``)
    over a peer that reads only when told: ``reading`` (it takes whatever is
    sent) or ``window`` (bytes it takes at the next ``doWrite``). What it
    read is ``value()``; ``half_closed`` once the pool sent its FIN."""

    def __init__(self, reactor, ip: str):
        super().__init__(reactor)
        self.connected = 1
        self.reading = True
        self.window = 0
        self.received = bytearray()
        self.half_closed = False
        self.aborted = False
        self.peer = IPv4Address("TCP", ip, 1)

    def writeSomeData(self, data) -> int:
        n = len(data) if self.reading else min(len(data), self.window)
        self.window -= n if not self.reading else 0
        self.received += data[:n]
        return n

    def _closeWriteConnection(self):
        self.half_closed = True

    def abortConnection(self):
        self.aborted = True
        self.disconnecting = True
        self.stopReading()
        self.stopWriting()

    def getPeer(self):
        return self.peer

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", 3333)

    def unsent(self) -> int:
        return len(self.dataBuffer) - self.offset + self._tempDataLen

    def read(self, n: int | None = None) -> None:
        """The peer reads ``n`` bytes (all there is when None)."""
        self.window = (1 << 62) if n is None else n
        self.doWrite()

    def value(self) -> bytes:
        if self.reading:
            self.doWrite()
        return bytes(self.received)


class Client:
    def __init__(self, h: Harness, proto, transport=None):
        self.h = h
        self.proto = proto
        self.transport = transport or StringTransport(peerAddress=IPv4Address("TCP", proto.ip, 1))
        proto.makeConnection(self.transport)
        self._next_id = 0
        self._read = 0

    @property
    def session(self):
        return self.proto.session

    @property
    def connected(self):
        return not self.transport.disconnecting and not getattr(self.transport, "disconnected", False) and not self.proto.closing

    def send_raw(self, data: bytes):
        self.proto.dataReceived(data)

    def send(self, method, params, mid=None):
        if mid is None:
            self._next_id += 1
            mid = self._next_id
        self.send_raw(orjson.dumps({"id": mid, "method": method, "params": params}) + b"\n")
        return mid

    def lines(self):
        """Every message received since the last call."""
        data = self.transport.value()
        new, self._read = data[self._read:], len(data)
        return [orjson.loads(x) for x in new.split(b"\n") if x]

    def call(self, method, params):
        mid = self.send(method, params)
        msgs = self.lines()
        replies = [m for m in msgs if m.get("id") == mid and "method" not in m]
        assert len(replies) == 1, msgs
        self.pushed = [m for m in msgs if "method" in m]
        return replies[0]

    def handshake(self, user=ADDR + ".rig1", password="x"):
        sub = self.call("mining.subscribe", ["test-miner/1.0"])
        self.en1 = bytes.fromhex(sub["result"][1])
        self.en2_size = sub["result"][2]
        auth = self.call("mining.authorize", [user, password])
        assert auth == {"id": auth["id"], "result": True, "error": None}
        self.user = user
        self.notifies = [m for m in self.pushed if m["method"] == "mining.notify"]
        self.difficulty = [m for m in self.pushed if m["method"] == "mining.set_difficulty"][-1]["params"][0]
        return self

    def last_notify(self):
        return self.notifies[-1]["params"]

    def solve(self, notify=None, difficulty=None, block=False, en2=0, version_bits=None, ntime=None, start_nonce=0):
        """Search nonces for a share meeting `difficulty` (and the network
        target when block=True, or missing it when block=False)."""
        params = notify or self.last_notify()
        job_id, prev_s, cb1, cb2, branch, version_s, bits_s, ntime_s = params[:8]
        difficulty = difficulty if difficulty is not None else self.difficulty
        share_target = difficulty_to_target(difficulty)
        from hashcoop.pool.core.btc.target import bits_to_target
        from hashcoop.pool.core.jobs import stratum_prevhash

        net_target = bits_to_target(int(bits_s, 16))
        en2_b = en2.to_bytes(self.en2_size, "big")
        cb = bytes.fromhex(cb1) + self.en1 + en2_b + bytes.fromhex(cb2)
        root = fold_branch(sha256d(cb), [bytes.fromhex(b) for b in branch])
        version = int(version_s, 16)
        if version_bits is not None:
            version = (version & ~0x1FFFE000) | version_bits
        prev = bytes.fromhex(stratum_prevhash(bytes.fromhex(prev_s)))
        t = int(ntime_s, 16) if ntime is None else ntime
        import struct

        for nonce in range(start_nonce, start_nonce + 10_000_000):
            header = struct.pack("<I", version) + prev + root + struct.pack("<III", t, int(bits_s, 16), nonce)
            h = int.from_bytes(sha256d(header), "little")
            if h <= share_target and (h <= net_target) == block:
                args = [self.user, job_id, en2_b.hex(), f"{t:08x}", f"{nonce:08x}"]
                if version_bits is not None:
                    args.append(f"{version_bits:08x}")
                return args, h
        raise AssertionError("no share found")

    def solve_miss(self, difficulty=None, **kw):
        """Nonce whose hash misses the share target (for high-hash)."""
        params = self.last_notify()
        d = difficulty if difficulty is not None else self.difficulty
        import struct

        from hashcoop.pool.core.jobs import stratum_prevhash

        job_id, prev_s, cb1, cb2, branch, version_s, bits_s, ntime_s = params[:8]
        en2_b = (0).to_bytes(self.en2_size, "big")
        cb = bytes.fromhex(cb1) + self.en1 + en2_b + bytes.fromhex(cb2)
        root = fold_branch(sha256d(cb), [bytes.fromhex(b) for b in branch])
        prev = bytes.fromhex(stratum_prevhash(bytes.fromhex(prev_s)))
        for nonce in range(10_000):
            header = struct.pack("<I", int(version_s, 16)) + prev + root + struct.pack("<III", int(ntime_s, 16), int(bits_s, 16), nonce)
            if int.from_bytes(sha256d(header), "little") > difficulty_to_target(d):
                return [self.user, job_id, en2_b.hex(), ntime_s, f"{nonce:08x}"]
        raise AssertionError


def share_diff_of(h: int) -> float:
    return DIFF1_TARGET / h
