"""The hot path's shortcuts keep the protocol's behaviour: replies gathered
per read and written once, in order; direct socket writes only when the
transport holds nothing unsent; the event emitted per share carries every
field; shared strings; the lighter reactor dispatch; SO_REUSEPORT."""
from __future__ import annotations

import gc
import socket
import subprocess
import sys

import orjson
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import StringTransport

from hashcoop.pool.core.btc.target import DIFF1_TARGET
from hashcoop.pool.core.events import MultiSink
from hashcoop.stratum.protocol import _direct_socket
from tests.stratum.harness import ADDR, Harness, config


class CountingTransport(StringTransport):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)


def connect(h, transport):
    proto = h.factory.buildProtocol(IPv4Address("TCP", "10.0.0.9", 5000))
    proto.makeConnection(transport)
    return proto


def test_replies_to_pipelined_submits_are_one_write_in_order():
    h = Harness()
    c = h.connect().handshake()
    shares = [c.solve(en2=i)[0] for i in range(3)]
    t = CountingTransport()
    c.transport.clear()
    c.proto.transport = t
    c.proto._socket = None
    data = b"".join(orjson.dumps({"id": 100 + i, "method": "mining.submit", "params": p}) + b"\n"
                    for i, p in enumerate(shares))
    c.send_raw(data + orjson.dumps({"id": 200, "method": "mining.submit", "params": shares[0]}) + b"\n")
    assert t.writes == 1
    replies = [orjson.loads(x) for x in t.value().split(b"\n") if x]
    assert [r["id"] for r in replies] == [100, 101, 102, 200]
    assert [r["result"] for r in replies] == [True, True, True, False]
    assert replies[3]["error"][0] == 22  # duplicate


def test_a_close_during_a_read_sends_what_was_gathered_first():
    from hashcoop.stratum import session as session_module

    h = Harness()
    c = h.connect()
    sent = []
    c.proto.transport.loseConnection = lambda: sent.append(c.transport.value())

    def reply_then_close(session, mid, params):
        session._result(mid, True)
        session.proto.close("test")

    handlers = dict(session_module._HANDLERS)
    session_module._HANDLERS["mining.extranonce.subscribe"] = reply_then_close
    try:
        c.send_raw(b'{"id":7,"method":"mining.extranonce.subscribe","params":[]}\n'
                   b'{"id":8,"method":"mining.extranonce.subscribe","params":[]}\n')
    finally:
        session_module._HANDLERS.clear()
        session_module._HANDLERS.update(handlers)
    # the reply went out before the close; nothing after it
    assert sent == [b'{"id":7,"result":true,"error":null}\n']
    assert c.transport.value() == sent[0]


class FakeSocket:
    def __init__(self, takes=None, error=None):
        self.takes = takes  # bytes accepted per send (None: all)
        self.error = error
        self.sent = []

    def send(self, data):
        if self.error is not None:
            raise self.error
        n = len(data) if self.takes is None else min(self.takes, len(data))
        self.sent.append(bytes(data[:n]))
        return n


class SocketTransport(StringTransport):
    """The attributes of a Twisted TCP connection the direct path reads."""

    TLS = False

    def __init__(self, skt):
        super().__init__()
        self.socket = skt
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataBuffer = []
        self.connected = 1


def test_direct_write_when_the_transport_is_empty():
    h = Harness()
    skt = FakeSocket()
    t = SocketTransport(skt)
    proto = connect(h, t)
    assert proto._socket is skt
    proto.write(b"hello\n")
    assert skt.sent == [b"hello\n"] and t.value() == b""


def test_what_the_socket_does_not_take_goes_to_the_transport_in_order():
    h = Harness()
    skt = FakeSocket(takes=3)
    t = SocketTransport(skt)
    proto = connect(h, t)
    proto.write(b"abcdef\n")
    assert skt.sent == [b"abc"] and t.value() == b"def\n"
    # with bytes still queued in the transport, later writes queue behind them
    t._tempDataBuffer = [b"def\n"]
    proto.write(b"ghi\n")
    assert skt.sent == [b"abc"] and t.value() == b"def\nghi\n"


@pytest.mark.parametrize("error", [BlockingIOError(), ConnectionResetError()])
def test_socket_errors_leave_the_bytes_to_the_transport(error):
    h = Harness()
    t = SocketTransport(FakeSocket(error=error))
    proto = connect(h, t)
    proto.write(b"x\n")
    assert t.value() == b"x\n"


def test_no_direct_path_for_tls_or_other_transports():
    assert _direct_socket(StringTransport()) is None
    t = SocketTransport(FakeSocket())
    t.TLS = True
    assert _direct_socket(t) is None
    t = SocketTransport(FakeSocket())
    del t._tempDataBuffer
    assert _direct_socket(t) is None


def test_accepted_share_event_carries_every_field():
    h = Harness()
    c = h.connect(ip="10.1.2.3").handshake()
    share, hv = c.solve()
    h.reactor.advance(5)
    assert c.call("mining.submit", share)["result"] is True
    ev = h.sink.accepted[-1]
    job = h.jobs.current
    assert ev.time == h.reactor.seconds()
    assert (ev.address, ev.worker, ev.job_id, ev.height) == (ADDR, "rig1", job.id, job.height)
    assert ev.difficulty == c.difficulty
    assert ev.share_difficulty == DIFF1_TARGET / hv
    assert ev.hash == hv.to_bytes(32, "big").hex()
    assert ev.network_difficulty == job.network_difficulty
    assert (ev.is_block, ev.port, ev.ip) == (False, 3333, "10.1.2.3")
    assert h.metric("hashcoop_share_difficulty_accepted_total", port="3333") == c.difficulty


def test_workers_of_one_address_share_its_string_and_user_agents_are_shared():
    h = Harness()
    a = h.connect(port=1).handshake(user=ADDR + ".a")
    b = h.connect(port=2).handshake(user="".join(ADDR) + ".b")
    wa = next(iter(a.session.workers.values()))
    wb = next(iter(b.session.workers.values()))
    assert wa.address == wb.address == ADDR and wa.address is wb.address
    assert a.session.user_agent == "test-miner/1.0" and a.session.user_agent is b.session.user_agent
    assert h.server.shared_address("notanaddress") is None


def test_multisink_isolates_failures_and_sees_sinks_added_later(caplog):
    class Broken:
        def share_accepted(self, ev):
            raise RuntimeError("boom")

    class Recorder:
        def __init__(self):
            self.seen = []

        def share_accepted(self, ev):
            self.seen.append(ev)

        def block_status(self, ev):
            self.seen.append(ev)

    good, late = Recorder(), Recorder()
    multi = MultiSink(Broken(), good)
    multi.share_accepted("ev1")
    multi.block_status("st")  # Broken has no block_status: logged, the others still get it
    multi.sinks.append(late)
    multi.share_accepted("ev2")
    assert good.seen == ["ev1", "st", "ev2"] and late.seen == ["ev2"]
    failures = [r for r in caplog.records if "failed on" in r.getMessage()]
    assert len(failures) == 3 and "block_status" in failures[1].getMessage()


# -- the reactor ------------------------------------------------------------------------


def test_stratum_reactor_dispatches_reads_and_failures():
    from twisted.internet.abstract import FileDescriptor

    from hashcoop.stratum.reactor import StratumReactor

    r = StratumReactor()
    a, b = socket.socketpair()
    events = []

    class Reader(FileDescriptor):
        def __init__(self, skt, fail=False):
            super().__init__(reactor=r)
            self.skt = skt
            self.fail = fail

        def fileno(self):
            return self.skt.fileno()

        def doRead(self):
            events.append(("read", self.skt.recv(100)))
            if self.fail:
                raise ValueError("bad reader")

        def connectionLost(self, reason):
            events.append(("lost", reason.type))
            r.removeReader(self)

    try:
        reader = Reader(a)
        r.addReader(reader)
        b.send(b"ping")
        r.doIteration(1.0)
        assert events == [("read", b"ping")]
        reader.fail = True
        b.send(b"pong")
        r.doIteration(1.0)
        assert events[1] == ("read", b"pong") and events[2] == ("lost", ValueError)
        assert reader not in r.getReaders()
    finally:
        a.close()
        b.close()
        r._poller.close()


def test_run_installs_the_stratum_reactor_in_a_fresh_process():
    out = subprocess.run(
        [sys.executable, "-c", "from hashcoop.stratum.reactor import install; ok = install(); "
         "from twisted.internet import reactor; print(ok, type(reactor).__name__, install())"],
        capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "StratumReactor", "False"]


def test_tune_gc():
    from hashcoop.stratum import reactor as module

    before = (gc.get_threshold(), sys.getswitchinterval())
    try:
        module.tune_gc()
        assert gc.get_threshold() == module.GC_THRESHOLD
        assert gc.get_freeze_count() > 0
        assert sys.getswitchinterval() == pytest.approx(module.SWITCH_INTERVAL)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before[0])
        sys.setswitchinterval(before[1])


# -- SO_REUSEPORT ---------------------------------------------------------------------------


def _server(reactor, port, reuse):
    from hashcoop.pool.core.btc.address import address_to_script, get_network
    from hashcoop.pool.core.events import MemorySink as Sink
    from hashcoop.pool.core.jobs import JobManager
    from hashcoop.stratum.server import StratumServer

    cfg = config(ports=[{"port": port, "bind": "127.0.0.1"}], reuse_port=reuse)
    jobs = JobManager(payout_script=address_to_script(ADDR, get_network("regtest")), tag=b"/t/", extranonce_size=8,
                      now=reactor.seconds)
    return StratumServer(reactor=reactor, config=cfg, jobs=jobs, sink=Sink())


def test_two_servers_share_a_port_with_reuse_port():
    from twisted.internet.epollreactor import EPollReactor

    from tests.procs import free_port

    r = EPollReactor()
    port = free_port()
    one, two = _server(r, port, True), _server(r, port, True)
    one.startService()
    two.startService()
    try:
        assert one.listening_ports() == two.listening_ports() == [port]
        lone = _server(r, port, False)
        with pytest.raises(CannotListenError):
            lone.startService()
    finally:
        one.stopService()
        two.stopService()
        for _ in range(3):
            r.iterate(0)  # the ports close on the next turn
        r._poller.close()
    # both closed their sockets: the port is free again
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_handshake_deadlines_without_a_timer_per_connection():
    h = Harness()
    first = h.connect(port=1)
    h.reactor.advance(5)
    second = h.connect(port=2)
    h.reactor.advance(5)
    third = h.connect(port=3)
    h.reactor.advance(2)
    second.call("mining.subscribe", [])  # t=12: now an authorize deadline, due at 72
    assert len(h.reactor.getDelayedCalls()) == 1
    h.reactor.advance(2.9)  # t=14.9
    assert first.connected
    h.reactor.advance(0.2)  # t=15.1
    assert not first.connected and second.connected and third.connected
    h.reactor.advance(9.8)  # t=24.9
    assert third.connected
    h.reactor.advance(0.2)
    assert not third.connected and second.connected
    h.reactor.advance(46.9)  # t=72.0
    assert not second.connected
    assert h.metric("hashcoop_disconnects_total", reason="subscribe-timeout") == 2
    assert h.metric("hashcoop_disconnects_total", reason="authorize-timeout") == 1
    # a miner that finishes its handshake is never closed by a deadline
    done = h.connect(port=4).handshake()
    h.reactor.advance(120)
    assert done.connected and h.reactor.getDelayedCalls() == []


def test_the_sweep_visits_every_session_once_a_second_in_slices():
    from hashcoop.stratum.server import SWEEP_INTERVAL, SWEEP_SLICES

    h = Harness(config(idle_timeout=30))
    h.server._sweeper.clock = h.reactor
    h.server._sweeper.start(SWEEP_INTERVAL / SWEEP_SLICES, now=False)
    clients = [h.connect(port=i).handshake(user=f"{ADDR}.w{i}") for i in range(25)]
    seen = {}
    original = type(clients[0].session).tick

    def counting_tick(self, now):
        seen[self] = seen.get(self, 0) + 1
        original(self, now)

    type(clients[0].session).tick = counting_tick
    try:
        for _ in range(10 * SWEEP_SLICES):  # ten seconds
            h.reactor.advance(SWEEP_INTERVAL / SWEEP_SLICES)
        # at least once a second; a round is ceil(25 / SWEEP_SLICES) sessions a call, so 9 calls here
        assert len(seen) == 25 and all(10 <= n <= 12 for n in seen.values()), seen
        assert all(c.connected for c in clients)
        for _ in range(21 * SWEEP_SLICES):  # past the idle timeout, plus one round
            h.reactor.advance(SWEEP_INTERVAL / SWEEP_SLICES)
        assert not any(c.connected for c in clients)
    finally:
        type(clients[0].session).tick = original
        h.server._sweeper.stop()


def test_job_history_is_bounded_by_the_keys_it_holds():
    from hashcoop.pool.core.btc.address import address_to_script, get_network
    from hashcoop.pool.core.jobs import JobManager
    from hashcoop.pool.core.shares import Reject
    from tests.stratum.harness import template

    h = Harness(config(ports=[{"port": 3333, "start_difficulty": 1e-8, "min_difficulty": 1e-10, "vardiff": False}]))
    h.server.jobs = jobs = JobManager(payout_script=address_to_script(ADDR, get_network("regtest")), tag=b"/t/",
                                      extranonce_size=8, now=h.reactor.seconds, first_seq=500, max_seen=4)
    h.server.on_template(template(), True)
    c = h.connect().handshake()
    first = c.last_notify()
    for en2 in range(3):  # 3 keys on the first job
        assert c.call("mining.submit", c.solve(en2=en2)[0])["result"] is True
    for i in range(3):  # refreshes on the same tip: the first job is replaced, then two more jobs follow
        h.server.on_template(template(curtime=1795652000 + i), False)
        c.notifies = [m for m in c.lines() if m.get("method") == "mining.notify"] or c.notifies
        for en2 in range(2):
            assert c.call("mining.submit", c.solve(en2=en2)[0])["result"] is True
    # at the last refresh the jobs before the previous one held 2 + 3 keys, over max_seen=4: the oldest is forgotten
    assert first[0] not in jobs.jobs and len(jobs.jobs) == 3
    share, _ = c.solve(notify=first, en2=7)
    r = c.call("mining.submit", share)
    assert r["result"] is False and h.sink.rejected[-1].reason == Reject.UNKNOWN_JOB
    # the current job and the one before it are never dropped, however many keys they hold
    jobs.max_seen = 0
    h.server.on_template(template(curtime=1795652100), False)
    assert len(jobs.jobs) == 2 and jobs.current.id in jobs.jobs


def test_lean_transport_derives_what_twisted_stores():
    from twisted.internet.epollreactor import EPollReactor
    from twisted.internet.protocol import Factory, Protocol

    from hashcoop.stratum.transport import LeanServer, listen
    from tests.procs import free_port

    r = EPollReactor()
    made, lost = [], []

    class Echo(Protocol):
        def connectionMade(self):
            made.append(self.transport)

        def dataReceived(self, data):
            self.transport.write(data.upper())

        def connectionLost(self, reason):
            lost.append(self.transport)

    port = free_port()
    lp = listen(r, port, Factory.forProtocol(Echo), backlog=16, interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port))
    try:
        while not made:
            r.iterate(0.05)
        t = made[0]
        assert isinstance(t, LeanServer)
        assert not {"logstr", "repstr", "fileno"} & set(vars(t))
        assert t.logstr == f"Echo,{t.sessionno},127.0.0.1"
        assert repr(t) == f"<Echo #{t.sessionno} on {port}>"
        assert t.fileno() == t.socket.fileno() > 0
        client.sendall(b"ping")
        got = b""
        client.settimeout(0.05)
        while got != b"PING":
            r.iterate(0.05)
            try:
                got += client.recv(10)
            except socket.timeout:
                pass
        client.close()
        while not lost:
            r.iterate(0.05)
        assert t.fileno() == -1 and t.logstr.startswith("Uninitialized,")
    finally:
        lp.stopListening()
        for _ in range(3):
            r.iterate(0)
        r._poller.close()


def test_one_worker_mapping_then_a_dict_for_several():
    from hashcoop.stratum.session import OneWorker

    h = Harness()
    c = h.connect().handshake(user=ADDR + ".a")
    w = c.session.workers
    assert type(w) is OneWorker and len(w) == 1 and list(w) == [ADDR + ".a"]
    assert w.get(ADDR + ".a").name == "a" and w.get("nope") is None and ADDR + ".a" in w
    assert [x.name for x in w.values()] == ["a"] and dict(w.items()) == {ADDR + ".a": w[ADDR + ".a"]}
    with pytest.raises(KeyError):
        w["nope"]
    assert c.call("mining.authorize", [ADDR + ".a", "x"])["result"] is True  # again: still one
    assert type(c.session.workers) is OneWorker
    assert c.call("mining.authorize", [ADDR + ".b", "x"])["result"] is True
    w = c.session.workers
    assert type(w) is dict and sorted(x.name for x in w.values()) == ["a", "b"]
    share, _ = c.solve()
    share[0] = ADDR + ".b"
    assert c.call("mining.submit", share)["result"] is True and h.sink.accepted[-1].worker == "b"
