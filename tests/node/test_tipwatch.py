"""Tip sources: LongPoller and BestHashPoller on a task.Clock with a fake
NodeSet; ZMQHashblock against a real pyzmq PUB; NotifyListener on real
sockets; ``hashcoop notify`` end to end as a subprocess."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from twisted.internet import defer, task
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver
from twisted.trial import unittest

from hashcoop.pool.config import WorkSection
from hashcoop.pool.node.notify import DEFAULT_NOTIFY_LISTEN, client_address, notify_listen_from_config, split_endpoint
from hashcoop.pool.node.tipwatch import BestHashPoller, LongPoller, NotifyListener, ZMQHashblock
from hashcoop.pool.rpc import RPCTimeout
from tests.node.helpers import FakeNodeSet, down, template, tip
from tests.procs import free_port

REPO = Path(__file__).resolve().parents[2]
HASH = "26e6ca76b3f41be296332042168cdb74be5943754093df575c848d219e2f568c"


# -- LongPoller -------------------------------------------------------------------


def longpoller(**kw):
    clock = task.Clock()
    nodes = FakeNodeSet(["node0", "node1"])
    got = []
    lp = LongPoller(nodes, "node1", lambda t, src: got.append((t, src)), clock=clock, **kw)
    return clock, nodes, lp, got


def test_longpoll_primes_then_delivers_and_loops_with_the_last_id():
    clock, nodes, lp, got = longpoller(timeout=300)
    lp.start()
    name, lpid, timeout, d = nodes.from_calls[-1]
    assert (name, lpid, timeout) == ("node1", None, None)
    d.callback(template(103, lp="A1"))
    assert got == []  # the first answer only gives a longpollid
    name, lpid, timeout, d = nodes.from_calls[-1]
    assert (lpid, timeout) == ("A1", 300)
    t = template(104, lp="B1")
    d.callback(t)
    assert got == [(t, "longpoll")]
    assert nodes.from_calls[-1][1] == "B1"
    assert len(nodes.from_calls) == 3
    lp.stop()
    assert nodes.from_calls[-1][3].called  # cancelled


def test_longpoll_timeout_asks_again_at_once_errors_back_off():
    clock, nodes, lp, got = longpoller(retry_min=1, retry_max=4)
    lp.start()
    nodes.from_calls[-1][3].callback(template(103, lp="A1"))
    nodes.from_calls[-1][3].errback(RPCTimeout("no answer"))
    assert len(nodes.from_calls) == 3 and nodes.from_calls[-1][1] == "A1"
    delays = []
    for _ in range(4):
        n = len(nodes.from_calls)
        nodes.from_calls[-1][3].errback(down("node1"))
        waited = 0.0
        while len(nodes.from_calls) == n:
            clock.advance(0.5)
            waited += 0.5
        delays.append(waited)
    assert delays == [1, 2, 4, 4]
    # A success resets the backoff and keeps the longpollid.
    assert nodes.from_calls[-1][1] == "A1"
    t = template(104, lp="B1")
    nodes.from_calls[-1][3].callback(t)
    assert got == [(t, "longpoll")]
    n = len(nodes.from_calls)
    nodes.from_calls[-1][3].errback(down("node1"))
    clock.advance(1)
    assert len(nodes.from_calls) == n + 1
    lp.stop()


def test_longpoll_that_does_not_wait_is_rate_limited_and_missing_id_stops():
    clock, nodes, lp, got = longpoller(retry_min=1)
    lp.start()
    nodes.from_calls[-1][3].callback(template(103, lp="A1"))
    nodes.from_calls[-1][3].callback(template(103, lp="A1"))  # same id back at once
    n = len(nodes.from_calls)
    clock.advance(0.9)
    assert len(nodes.from_calls) == n
    clock.advance(0.1)
    assert len(nodes.from_calls) == n + 1
    nodes.from_calls[-1][3].callback(template(103, lp=None))
    clock.advance(100)
    assert len(nodes.from_calls) == n + 1
    assert clock.getDelayedCalls() == []


def test_longpoll_consumer_exception_does_not_stop_the_loop():
    clock = task.Clock()
    nodes = FakeNodeSet()
    lp = LongPoller(nodes, "node0", lambda t, s: 1 / 0, clock=clock)
    lp.start()
    nodes.from_calls[-1][3].callback(template(103, lp="A"))
    nodes.from_calls[-1][3].callback(template(104, lp="B"))
    assert nodes.from_calls[-1][1] == "B"
    lp.stop()


# -- BestHashPoller ----------------------------------------------------------------


def test_best_hash_poller_hints_changes_only_and_never_overlaps():
    clock = task.Clock()
    nodes = FakeNodeSet()
    hints = []
    p = BestHashPoller(nodes, lambda h, s: hints.append((h, s)), clock=clock, interval=1.0)
    p.start()
    assert len(nodes.best_calls) == 1
    clock.advance(5)
    assert len(nodes.best_calls) == 1  # still waiting for the first answer
    nodes.best_calls[-1].callback(tip(1).upper())
    assert hints == [(tip(1), "poll")]
    clock.advance(1)
    nodes.best_calls[-1].callback(tip(1))
    clock.advance(1)
    nodes.best_calls[-1].errback(down())
    clock.advance(1)
    nodes.best_calls[-1].callback("not a hash")
    clock.advance(1)
    nodes.best_calls[-1].callback(tip(2))
    assert hints == [(tip(1), "poll"), (tip(2), "poll")]
    assert len(nodes.best_calls) == 5
    p.stop()
    clock.advance(10)
    assert len(nodes.best_calls) == 5


def test_best_hash_poller_stop_cancels_call_in_flight():
    clock = task.Clock()
    nodes = FakeNodeSet()
    p = BestHashPoller(nodes, lambda h, s: None, clock=clock)
    p.start()
    p.stop()
    assert nodes.best_calls[0].called
    assert clock.getDelayedCalls() == []


# -- endpoint strings and config --------------------------------------------------------


def test_split_endpoint_and_client_address():
    assert split_endpoint(r"tcp:3335:interface=\:\:1") == ("tcp", ["3335"], {"interface": "::1"})
    assert client_address("tcp:3335:interface=127.0.0.1") == ("tcp", ("127.0.0.1", 3335))
    assert client_address("tcp:3335") == ("tcp", ("127.0.0.1", 3335))
    assert client_address("tcp:port=3335:interface=0.0.0.0") == ("tcp", ("127.0.0.1", 3335))
    assert client_address(r"tcp6:3335:interface=\:\:") == ("tcp", ("::1", 3335))
    assert client_address("tcp:host=10.0.0.2:port=4000") == ("tcp", ("10.0.0.2", 4000))
    assert client_address("unix:/run/hashcoop/notify.sock:lockfile=1") == ("unix", "/run/hashcoop/notify.sock")
    assert client_address("unix:address=/tmp/n.sock") == ("unix", "/tmp/n.sock")
    assert client_address("unix:path=/tmp/n.sock") == ("unix", "/tmp/n.sock")
    for bad in ("ssl:443", "tcp:interface=1.2.3.4", "tcp:99999", "unix:"):
        with pytest.raises(ValueError):
            client_address(bad)


def test_default_listen_matches_config_and_env_override(tmp_path):
    assert DEFAULT_NOTIFY_LISTEN == WorkSection().notify_listen
    cfg = tmp_path / "c.toml"
    cfg.write_text('[pool]\naddress = "x"\n')
    assert notify_listen_from_config(str(cfg), env={}) == DEFAULT_NOTIFY_LISTEN
    cfg.write_text('[work]\nnotify_listen = "unix:/tmp/x.sock"\n')
    assert notify_listen_from_config(str(cfg), env={}) == "unix:/tmp/x.sock"
    assert notify_listen_from_config(str(cfg), env={"HASHCOOP__WORK__NOTIFY_LISTEN": "tcp:1"}) == "tcp:1"


def test_notify_command_stays_light():
    code = (
        "import sys; from hashcoop.pool.app.cli import main\n"
        "rc = main(['notify', '--endpoint', 'tcp:host=127.0.0.1:port=1', '--timeout', '0.5', '" + HASH + "'])\n"
        "heavy = [m for m in ('twisted', 'zmq', 'pydantic', 'orjson', 'bitcoin') if m in sys.modules]\n"
        "print(rc, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert out.stdout.strip() == "3 []", out.stdout + out.stderr


def run_notify(*args, env=None, timeout=30):
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "hashcoop.pool.app.cli", "notify", *args], capture_output=True, text=True,
                       cwd=REPO, timeout=timeout, env=env)
    return p.returncode, p.stderr, time.monotonic() - start


def test_notify_exits_fast_and_clearly_when_the_pool_is_not_there(tmp_path):
    port = free_port()
    cfg = tmp_path / "pool.toml"
    cfg.write_text(f'[work]\nnotify_listen = "tcp:{port}:interface=127.0.0.1"\n')
    rc, err, took = run_notify("-c", str(cfg), HASH)
    assert rc == 3 and "not reachable at 127.0.0.1:" in err and took < 5
    rc, err, took = run_notify("--endpoint", f"unix:{tmp_path / 'nothing.sock'}", HASH)
    assert rc == 3 and "not reachable" in err and took < 5
    # A pool that accepts the connection but never answers: the timeout.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        rc, err, took = run_notify("--endpoint", f"tcp:host=127.0.0.1:port={srv.getsockname()[1]}", "--timeout", "1", HASH)
    finally:
        srv.close()
    assert rc == 3 and "timed out" in err and took < 5


def test_notify_argument_and_config_errors(tmp_path):
    assert run_notify("--endpoint", "tcp:host=127.0.0.1:port=1", "xyz")[0] == 2
    assert run_notify(HASH)[0] == 2
    rc, err, _ = run_notify("-c", str(tmp_path / "missing.toml"), HASH)
    assert rc == 2 and "missing.toml" in err
    cfg = tmp_path / "off.toml"
    cfg.write_text('[work]\nnotify_listen = ""\n')
    rc, err, _ = run_notify("-c", str(cfg), HASH)
    assert rc == 2 and "disabled" in err
    cfg.write_text('[work]\nnotify_listen = "ssl:3335"\n')
    assert run_notify("-c", str(cfg), HASH)[0] == 2


# -- real sockets: listener, notify subprocess, ZMQ ------------------------------------------


class _Lines(LineOnlyReceiver):
    delimiter = b"\n"

    def connectionMade(self):
        self.factory.connected.callback(self)

    def lineReceived(self, line):
        self.factory.lines.append(line)
        if self.factory.waiting:
            self.factory.waiting.pop(0).callback(line)


class NotifyListenerTest(unittest.TestCase):
    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.hints = []
        self.listeners = []
        self.clients = []

    @defer.inlineCallbacks
    def listen(self, endpoint):
        lst = NotifyListener(self.reactor, endpoint, lambda h, s: self.hints.append((h, s)))
        self.listeners.append(lst)
        yield lst.start()
        return lst

    @defer.inlineCallbacks
    def tearDown(self):
        for p in self.clients:
            p.transport.loseConnection()
        for lst in self.listeners:
            yield lst.stop()
        yield task.deferLater(self.reactor, 0.01, lambda: None)

    @defer.inlineCallbacks
    def connect(self, port):
        from twisted.internet.endpoints import TCP4ClientEndpoint

        f = Factory.forProtocol(_Lines)
        f.connected, f.lines, f.waiting = defer.Deferred(), [], []
        yield TCP4ClientEndpoint(self.reactor, "127.0.0.1", port).connect(f)
        p = yield f.connected
        self.clients.append(p)
        return p

    def ask(self, p, line: bytes) -> defer.Deferred:
        d = defer.Deferred()
        p.factory.waiting.append(d)
        p.transport.write(line + b"\n")
        return d

    @defer.inlineCallbacks
    def test_line_protocol(self):
        lst = yield self.listen("tcp:0:interface=127.0.0.1")
        p = yield self.connect(lst.port.getHost().port)
        self.assertEqual((yield self.ask(p, HASH.upper().encode())), b"ok")
        self.assertEqual(self.hints, [(HASH, "notify")])
        self.assertEqual((yield self.ask(p, b"hello")), b"error: expected a block hash (64 hex digits)")
        self.assertEqual((yield self.ask(p, HASH.encode() + b"\r")), b"ok")  # CRLF clients
        self.assertEqual((yield self.ask(p, HASH[:-1].encode())), b"error: expected a block hash (64 hex digits)")
        self.assertEqual(len(self.hints), 2)
        self.assertEqual(lst.received, 2)
        self.assertEqual((yield self.ask(p, b"x" * 300)), b"error: line too long")

    @defer.inlineCallbacks
    def test_hashcoop_notify_end_to_end_tcp_and_unix(self):
        from twisted.internet.utils import getProcessOutputAndValue

        lst = yield self.listen("tcp:0:interface=127.0.0.1")
        cfg = self.mktemp()
        with open(cfg, "w") as f:
            f.write(f'[pool]\naddress = "ignored by notify"\n[work]\nnotify_listen = "tcp:{lst.port.getHost().port}:interface=127.0.0.1"\n')
        out, err, code = yield getProcessOutputAndValue(sys.executable, ["-m", "hashcoop.pool.app.cli", "notify", "-c", cfg, HASH], env=dict(os.environ), path=str(REPO))
        self.assertEqual(code, 0, err)
        self.assertEqual(self.hints, [(HASH, "notify")])
        sock = os.path.join(self.mktemp() + "d", "n.sock")
        os.makedirs(os.path.dirname(sock))
        yield self.listen(f"unix:{sock}")
        out, err, code = yield getProcessOutputAndValue(sys.executable, ["-m", "hashcoop.pool.app.cli", "notify", "--endpoint", f"unix:{sock}", tip(7)], env=dict(os.environ), path=str(REPO))
        self.assertEqual(code, 0, err)
        self.assertEqual(self.hints[-1], (tip(7), "notify"))

    @defer.inlineCallbacks
    def test_notify_reports_an_error_answer(self):
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.internet.utils import getProcessOutputAndValue

        class Grumpy(LineOnlyReceiver):
            delimiter = b"\n"

            def lineReceived(self, line):
                self.sendLine(b"error: go away")

        port = yield TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(Grumpy))
        self.addCleanup(port.stopListening)
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "hashcoop.pool.app.cli", "notify", "--endpoint", f"tcp:host=127.0.0.1:port={port.getHost().port}", HASH],
            env=dict(os.environ), path=str(REPO))
        self.assertEqual(code, 1)
        self.assertIn(b"go away", err)

    @defer.inlineCallbacks
    def test_stop_closes_open_connections(self):
        lst = yield self.listen("tcp:0:interface=127.0.0.1")
        p = yield self.connect(lst.port.getHost().port)
        yield self.ask(p, HASH.encode())
        lost = defer.Deferred()
        p.connectionLost = lambda reason: lost.callback(None)
        yield lst.stop()
        yield lost
        self.assertEqual(lst.connections, set())


class LogRecords(logging.Handler):
    """Collects one logger's records (trial test cases have no caplog)."""

    def __init__(self, name: str):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(name)
        self.level = self.logger.level
        self.logger.setLevel(logging.DEBUG)  # INFO lines too (a recovery is logged at INFO)
        self.logger.addHandler(self)

    def emit(self, record):
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)

    def close(self):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)
        super().close()


class ZMQHashblockTest(unittest.TestCase):
    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.hints = []
        self.sub = ZMQHashblock(reactor, self.endpoint, lambda h, s: self.hints.append((h, s)))

    def tearDown(self):
        self.sub.stop()
        self.pub.close(linger=0)
        self.ctx.term()

    def publish(self, blockhash: str, seq: int):
        self.pub.send_multipart([b"hashblock", bytes.fromhex(blockhash), seq.to_bytes(4, "little")])

    @defer.inlineCallbacks
    def wait_for(self, predicate, resend=None, limit=5.0):
        start = self.reactor.seconds()
        while not predicate():
            if self.reactor.seconds() - start > limit:
                self.fail("timed out waiting")
            if resend:
                resend()
            yield task.deferLater(self.reactor, 0.02, lambda: None)

    def blocks(self):
        return [h for h in self.hints if h[0] is not None]

    @defer.inlineCallbacks
    def test_hashblock_messages_reach_the_reactor(self):
        self.sub.start()
        # The completed connection is a hint of its own ("look for yourself").
        yield self.wait_for(lambda: self.sub.connected)
        self.assertEqual(self.hints, [(None, "zmq")])
        self.assertEqual(self.sub.connections, 1)
        # PUB/SUB "slow joiner": the subscription follows the handshake;
        # publish until it is live.
        yield self.wait_for(lambda: self.blocks(), resend=lambda: self.publish(HASH, 0))
        self.assertEqual(self.blocks()[0], (HASH, "zmq"))
        n = len(self.hints)
        last = self.sub.sequence
        # A burst arrives in one wake-up and is drained completely.
        for i in range(1, 51):
            self.publish(tip(i), last + i)
        yield self.wait_for(lambda: len(self.hints) >= n + 50)
        self.assertEqual([h for h, _ in self.hints[n:]], [tip(i) for i in range(1, 51)])
        self.assertEqual(self.sub.sequence, last + 50)
        # Other topics are not subscribed; malformed hashblock messages are dropped.
        self.pub.send_multipart([b"rawtx", b"\x00" * 100, b"\x00" * 4])
        self.pub.send_multipart([b"hashblock", b"\x01" * 31, b"\x00" * 4])
        self.pub.send_multipart([b"hashblock", b"\x02" * 32])
        self.publish(tip(99), last + 51)
        yield self.wait_for(lambda: self.hints[-1][0] == tip(99))
        self.assertEqual(len(self.hints), n + 51)

    @defer.inlineCallbacks
    def test_subscriber_started_before_the_publisher_exists(self):
        self.pub.close(linger=0)
        port = free_port()
        self.sub.stop()
        self.sub = ZMQHashblock(self.reactor, f"tcp://127.0.0.1:{port}", lambda h, src: self.hints.append((h, src)))
        self.sub.start()
        yield task.deferLater(self.reactor, 0.1, lambda: None)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(f"tcp://127.0.0.1:{port}")
        yield self.wait_for(lambda: self.blocks(), resend=lambda: self.publish(HASH, 5), limit=10)
        self.assertEqual(self.hints[0], (None, "zmq"))
        self.assertEqual(self.blocks()[0], (HASH, "zmq"))
        self.assertEqual(self.sub.connections, 1)

    @defer.inlineCallbacks
    def test_reconnection_is_logged_and_hinted(self):
        """A publisher that goes away and comes back (bitcoind restarted):
        the loss is logged, and the new connection hints None, because what
        the node published meanwhile is gone."""
        records = LogRecords("hashcoop.tipwatch")
        self.addCleanup(records.close)
        port = int(self.endpoint.rsplit(":", 1)[1])
        self.sub.start()
        yield self.wait_for(lambda: self.sub.connected)
        self.pub.close(linger=0)
        yield self.wait_for(lambda: not self.sub.connected)
        self.assertIn("lost its connection", records.text())
        self.assertEqual(self.hints, [(None, "zmq")])
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(f"tcp://127.0.0.1:{port}")
        yield self.wait_for(lambda: self.sub.connected, limit=10)
        self.assertEqual(self.hints, [(None, "zmq"), (None, "zmq")])
        self.assertEqual(self.sub.connections, 2)
        self.assertIn("connected to %s again" % self.endpoint, records.text())
        # and blocks flow again
        yield self.wait_for(lambda: self.blocks(), resend=lambda: self.publish(HASH, 0))

    @defer.inlineCallbacks
    def test_an_endpoint_nobody_serves_is_reported_once(self):
        records = LogRecords("hashcoop.tipwatch")
        self.addCleanup(records.close)
        port = free_port()
        self.sub = ZMQHashblock(self.reactor, f"tcp://127.0.0.1:{port}", lambda h, src: self.hints.append((h, src)),
                                connect_warning=0.2)
        self.sub.start()
        yield self.wait_for(lambda: "no connection to" in records.text())
        yield task.deferLater(self.reactor, 0.3, lambda: None)
        self.assertEqual(records.text().count("no connection to"), 1)
        self.assertIn(f"-zmqpubhashblock=tcp://127.0.0.1:{port}", records.text())
        self.assertEqual((self.hints, self.sub.connected), ([], False))
        # stopping before the warning cancels it
        quiet = ZMQHashblock(self.reactor, f"tcp://127.0.0.1:{port}", lambda h, src: None, connect_warning=0.1)
        quiet.start()
        quiet.stop()
        yield task.deferLater(self.reactor, 0.2, lambda: None)
        self.assertEqual(records.text().count("no connection to"), 1)

    def test_bad_endpoint_raises_and_leaves_nothing_behind(self):
        bad = ZMQHashblock(self.reactor, "nonsense://", lambda h, s: None)
        with self.assertRaises(zmq.ZMQError):
            bad.start()
        self.assertEqual(bad.fileno(), -1)
