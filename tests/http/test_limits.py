"""The HTTP side's connection bounds on a clock (pool/http/limits.py and
bounds.py): pipelined requests wait while output is backed up, a peer that
stops reading is aborted after http.write_timeout and one that reads slowly
is not, idle connections close after http.idle_timeout, the per-listener
and per-IP caps, and the rationed log lines. The same on real sockets:
tests/http/test_bounds.py."""
from __future__ import annotations

import logging
from io import BytesIO

import pytest
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from hashcoop.pool.config import ConfigError
from hashcoop.pool.http.bounds import REFUSED, BoundedChannel, BoundedSite, Bounds
from hashcoop.pool.http.limits import Admission, Disconnect, LogThrottle, Refusal, peer_ip
from hashcoop.pool.metrics import Metrics
from tests.http.test_units import config

BUFFER = 1000  # the stand-in transport's bufferSize (Twisted's is 64 KiB)
PAGE = 3000  # a page bigger than that
GET = b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n"


class Pipe(StringTransport):
    """A TCP transport as Twisted's FileDescriptor behaves: output over
    ``bufferSize`` pauses the registered streaming producer on every write,
    and it is resumed once the peer has taken all of it; reading stops while
    the transport is paused or closing (``send`` data waits in ``inbox``). ``take`` is
    the peer reading; ``taken`` what the kernel would say it acknowledged."""

    bufferSize = BUFFER

    def __init__(self, ip: str = "10.0.0.7"):
        super().__init__(peerAddress=IPv4Address("TCP", ip, 40000), lenient=True)
        self.taken = 0
        self.closed: str | None = None
        self.inbox = b""
        self.producerPaused = False
        self.peak = 0  # the most output held at once
        self.protocol = None

    def write(self, data):
        if self.closed or self.disconnecting and not self.value():
            return
        super().write(data)
        self.peak = max(self.peak, len(self.value()))
        if self.producer is not None and self.streaming and len(self.value()) > self.bufferSize:
            self.producerPaused = True
            self.producer.pauseProducing()

    def writeSequence(self, seq):
        self.write(b"".join(seq))

    def unregisterProducer(self):
        self.producer = None

    def send(self, data: bytes) -> None:
        self.inbox += data
        self.deliver()

    def deliver(self) -> None:
        while self.inbox and self.producerState == "producing" and not self.closed and not self.disconnecting:
            chunk, self.inbox = self.inbox[:65536], self.inbox[65536:]
            self.protocol.dataReceived(chunk)

    def take(self, n: int | None = None) -> bytes:
        v = self.value()
        n = len(v) if n is None else n
        data, rest = v[:n], v[n:]
        self.io = BytesIO()
        self.io.write(rest)
        self.taken += len(data)
        if not rest:
            if self.producer is not None and self.producerPaused:
                self.producerPaused = False
                self.producer.resumeProducing()
            elif self.disconnecting:
                self._lost("closed")
        self.deliver()
        return data

    def loseConnection(self):
        super().loseConnection()
        if not self.value():
            self._lost("closed")

    def abortConnection(self):
        self._lost("aborted")

    def _lost(self, how: str) -> None:
        if self.closed:
            return
        self.closed = how
        self.protocol.connectionLost(Failure(ConnectionDone()))


class Page(Resource):
    isLeaf = True

    def __init__(self, body: bytes):
        super().__init__()
        self.body = body

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/plain")
        return self.body

    def render_POST(self, request):
        request.setResponseCode(405)
        return b"read-only"


def resource() -> Resource:
    root = Resource()
    root.putChild(b"page", Page(b"p" * PAGE))
    root.putChild(b"small", Page(b"s" * 100))
    return root


def site(clock=None, *, progress=lambda t: t.taken, **http):
    clock = clock or Clock()
    cfg = config(**{"idle_timeout": 15, "write_timeout": 30, **http})
    metrics = Metrics()
    return BoundedSite(resource(), Bounds("public", cfg.http, metrics, clock, progress=progress)), clock, metrics


def connect(s, ip: str = "10.0.0.7") -> Pipe:
    pipe = Pipe(ip)
    proto = s.buildProtocol(IPv4Address("TCP", ip, 40000))
    pipe.protocol = proto
    proto.makeConnection(pipe)
    return pipe


def run(clock: Clock, seconds: float, step: float = 0.25) -> None:
    """Move the clock on in small steps, as a reactor would run the calls
    that calls schedule."""
    n, rest = divmod(seconds, step)
    clock.pump([step] * int(n) + ([rest] if rest else []))


def sample(metrics: Metrics, name: str, **labels) -> float:
    v = metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def responses(data: bytes) -> int:
    return data.count(b"HTTP/1.1 200 OK")


# -- what Twisted does by itself ------------------------------------------------------------
def test_plain_twisted_answers_every_pipelined_request_into_the_buffer():
    """The case the bounds exist for: twisted.web's channel, a peer that
    pipelines 100 requests and reads nothing: every response is buffered
    (the transport pauses the channel, which does not stop it)."""
    clock = Clock()
    plain = Site(resource(), reactor=clock)
    pipe = Pipe()
    proto = plain.buildProtocol(IPv4Address("TCP", "10.0.0.7", 40000))
    pipe.protocol = proto
    proto.makeConnection(pipe)
    pipe.send(GET * 100)
    assert responses(pipe.value()) == 100 and len(pipe.value()) > 100 * PAGE
    assert pipe.producerPaused and pipe.producerState == "producing"  # paused, and still reading


# -- pipelining ------------------------------------------------------------------------------
def test_pipelined_requests_wait_while_the_output_is_backed_up():
    s, clock, metrics = site()
    pipe = connect(s)
    pipe.send(GET * 100)
    # one response over the buffer, then nothing more answered and nothing more read
    assert responses(pipe.value()) == 1 and pipe.producerState == "paused"
    got = b""
    for _ in range(100):
        got += pipe.take()
    assert responses(got) == 100 and pipe.closed is None
    assert pipe.peak < BUFFER + PAGE + 500  # the buffer plus one response (and its headers)
    assert pipe.producerState == "producing"


def test_small_pipelined_responses_fill_the_buffer_then_wait():
    s, clock, metrics = site()
    pipe = connect(s)
    pipe.send(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
    first = responses(pipe.value())
    assert 1 < first < 200 and len(pipe.value()) < BUFFER + 400
    got = b""
    while chunk := pipe.take():
        got += chunk
    assert responses(got) == 200 and pipe.peak < BUFFER + 400


def test_every_pipelined_request_is_answered_in_order_when_the_peer_reads():
    s, clock, metrics = site()
    pipe = connect(s)
    pipe.send((GET + b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n") * 20)
    out = b""
    while chunk := pipe.take():
        out += chunk
    assert responses(out) == 40
    lengths = [int(x.split(b"\r\n")[0]) for x in out.split(b"Content-Length: ")[1:]]
    assert lengths == [PAGE, 100] * 20


# -- write stall ------------------------------------------------------------------------------
def test_a_peer_that_stops_reading_is_aborted_after_write_timeout(caplog):
    s, clock, metrics = site(write_timeout=30)
    pipe = connect(s)
    pipe.send(GET * 50)
    run(clock, 29)
    assert pipe.closed is None
    with caplog.at_level(logging.INFO, logger="hashcoop.http"):
        run(clock, 1.5)
    assert pipe.closed == "aborted"
    assert sample(metrics, "hashcoop_http_disconnects_total", reason="write-stalled") == 1
    assert sample(metrics, "hashcoop_http_connections", listener="public") == 0
    assert "aborted the connection of 10.0.0.7" in caplog.text and "http.write_timeout" in caplog.text
    assert not s.bounds.channels and s.bounds.admission.open == 0


def test_many_stalled_peers_get_one_log_line_then_a_sum(caplog):
    s, clock, metrics = site(write_timeout=30)
    pipes = [connect(s, f"10.0.0.{i}") for i in range(1, 6)]
    for p in pipes:
        p.send(GET * 2)
    with caplog.at_level(logging.INFO, logger="hashcoop.http"):
        run(clock, 31)
        assert all(p.closed == "aborted" for p in pipes) and len(caplog.records) == 1
        run(clock, 60)
    assert [r.getMessage() for r in caplog.records][1] == \
        "http public: aborted 4 more connections whose peer stopped reading in the last 60 s"
    assert sample(metrics, "hashcoop_http_disconnects_total", reason="write-stalled") == 5


def test_a_slow_steady_reader_is_never_aborted():
    s, clock, metrics = site(write_timeout=30, idle_timeout=15)
    pipe = connect(s)
    pipe.send(GET * 20)
    got = b""
    for _ in range(2000):  # 200 bytes every 20 s: 10 B/s, far slower than the page, and it keeps going
        run(clock, 20)
        got += pipe.take(200)
        if responses(got) == 20 and not pipe.value():
            break
    assert responses(got) == 20 and pipe.closed is None
    assert clock.seconds() > 20 * PAGE / 10  # hours on the clock, far past both timeouts
    assert sample(metrics, "hashcoop_http_disconnects_total", reason="write-stalled") == 0


def test_a_reader_that_stops_halfway_is_aborted_write_timeout_after_its_last_read():
    s, clock, metrics = site(write_timeout=30)
    pipe = connect(s)
    pipe.send(GET * 2)
    pipe.take(500)
    run(clock, 20)
    pipe.take(500)  # its last read, at 20 s
    run(clock, 29)
    assert pipe.closed is None  # 29 s since it last took something, 49 s since the output backed up
    run(clock, 1 + 30 / 4)
    assert pipe.closed == "aborted"  # within a quarter of write_timeout past it


def test_a_response_still_being_written_to_a_peer_that_does_not_read_is_aborted():
    """A request answered later (a read in a thread, here a Deferred) whose
    response lands in a full buffer: same deadline."""
    from twisted.web.server import NOT_DONE_YET

    class Later(Resource):
        isLeaf = True
        pending = []

        def render_GET(self, request):
            self.pending.append(request)
            return NOT_DONE_YET

    clock = Clock()
    cfg = config(write_timeout=10)
    metrics = Metrics()
    s = BoundedSite(Later(), Bounds("public", cfg.http, metrics, clock, progress=lambda t: t.taken))
    pipe = connect(s)
    pipe.send(GET * 3)
    req = Later.pending.pop()
    req.write(b"x" * 5000)
    assert pipe.producerState == "paused"  # stops reading even while a request is being answered
    req.finish()
    run(clock, 10.5)
    assert pipe.closed == "aborted" and not Later.pending


# -- idle ---------------------------------------------------------------------------------------
def test_idle_keep_alive_connections_close_after_idle_timeout():
    s, clock, metrics = site(idle_timeout=15)
    idle = connect(s)
    used = connect(s, "10.0.0.8")
    used.send(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
    used.take()
    run(clock, 10)
    used.send(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")  # a request restarts its idle clock
    used.take()
    run(clock, 5.5)
    assert idle.closed == "closed" and used.closed is None
    run(clock, 10)
    assert used.closed == "closed"
    assert sample(metrics, "hashcoop_http_disconnects_total", reason="idle-timeout") == 2
    assert sample(metrics, "hashcoop_http_connections", listener="public") == 0


def test_the_idle_clock_does_not_run_while_output_waits_for_the_peer():
    s, clock, metrics = site(idle_timeout=15, write_timeout=30)
    pipe = connect(s)
    pipe.send(GET * 2)
    for _ in range(10):  # 100 s of slow reading, no request sent
        run(clock, 10)
        pipe.take(100)
    assert pipe.closed is None
    assert sample(metrics, "hashcoop_http_disconnects_total", reason="idle-timeout") == 0


# -- requests arriving ------------------------------------------------------------------------
def test_a_request_trickled_in_is_closed_at_request_timeout(caplog):
    s, clock, metrics = site(idle_timeout=15, request_timeout=30)
    pipe = connect(s)
    with caplog.at_level(logging.INFO, logger="hashcoop.http"):
        for b in GET[:-2]:  # a byte every 5 s: the idle timeout never fires
            pipe.send(bytes([b]))
            run(clock, 5)
            if pipe.closed:
                break
    assert pipe.closed == "closed" and 29 <= clock.seconds() <= 35
    assert sample(metrics, "hashcoop_http_disconnects_total", reason="request-timeout") == 1
    assert sample(metrics, "hashcoop_http_disconnects_total", reason="idle-timeout") == 0
    assert "its request was still arriving after 30 s (http.request_timeout)" in caplog.text


def test_each_request_has_its_own_deadline_on_a_keep_alive_connection():
    s, clock, metrics = site(idle_timeout=15, request_timeout=30)
    pipe = connect(s)
    for _ in range(6):  # a request every 10 s for a minute, each arriving in two halves 8 s apart
        pipe.send(GET[:10])
        run(clock, 8)
        pipe.send(GET[10:])
        assert responses(pipe.take()) == 1
        run(clock, 2)
    assert pipe.closed is None
    run(clock, 16)
    assert pipe.closed == "closed"  # then idle
    assert sample(metrics, "hashcoop_http_disconnects_total", reason="idle-timeout") == 1


def test_pipelined_requests_waiting_for_a_slow_reader_are_not_a_slow_request():
    s, clock, metrics = site(request_timeout=30, write_timeout=30)
    pipe = connect(s)
    pipe.send(GET * 5)
    got = b""
    for _ in range(200):  # 500 B every 10 s: the pipelined requests wait for minutes, not the client
        run(clock, 10)
        got += pipe.take(500)
        if responses(got) == 5 and not pipe.value():
            break
    assert responses(got) == 5 and pipe.closed is None
    assert sample(metrics, "hashcoop_http_disconnects_total", reason="request-timeout") == 0


@pytest.mark.parametrize("headers, detail", [
    (b"Content-Length: 10000000\r\n", "10000000 bytes"),
    (b"Transfer-Encoding: chunked\r\n", "chunked encoding"),
])
def test_a_request_body_is_refused_unread(headers, detail, caplog):
    s, clock, metrics = site()
    pipe = connect(s)
    with caplog.at_level(logging.INFO, logger="hashcoop.http"):
        pipe.send(b"POST /page HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + b"z" * 100_000)
    assert pipe.value().startswith(b"HTTP/1.1 413 Content Too Large\r\n") and pipe.disconnecting
    assert len(pipe.inbox) > 30_000  # the rest of the body was never read
    assert sample(metrics, "hashcoop_http_disconnects_total", reason="body-too-large") == 1
    assert f"with a body of {detail}" in caplog.text
    pipe.take()
    assert pipe.closed == "closed" and not s.bounds.channels


def test_a_small_body_is_read_and_answered():
    s, clock, metrics = site()
    pipe = connect(s)
    pipe.send(b"POST /page HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    assert pipe.value().startswith(b"HTTP/1.1 405")  # the resource's answer: no POST here
    assert sample(metrics, "hashcoop_http_disconnects_total", reason="body-too-large") == 0


# -- admission ---------------------------------------------------------------------------------
def test_connections_beyond_the_per_ip_cap_are_refused_with_a_503():
    s, clock, metrics = site(max_connections_per_ip=3, max_connections=10)
    pipes = [connect(s, "10.0.0.7") for _ in range(3)]
    refused = connect(s, "10.0.0.7")
    assert refused.value() == REFUSED and refused.disconnecting  # closed once the peer takes it
    other = connect(s, "10.0.0.8")
    assert other.closed is None
    assert sample(metrics, "hashcoop_http_connections_refused_total", reason="per-ip-limit") == 1
    assert sample(metrics, "hashcoop_http_connections", listener="public") == 4
    pipes[0].loseConnection()
    again = connect(s, "10.0.0.7")  # one closed: room for one more
    assert again.closed is None and again.value() == b""
    assert s.bounds.admission.per_ip == {"10.0.0.7": 3, "10.0.0.8": 1}


def test_connections_beyond_the_listener_cap_are_refused_and_exempt_networks_skip_the_per_ip_cap():
    s, clock, metrics = site(max_connections_per_ip=2, max_connections=5, connection_limit_exempt=["10.1.0.0/16"])
    proxy = [connect(s, "10.1.2.3") for _ in range(4)]
    assert all(p.closed is None for p in proxy)  # exempt from the per-IP cap
    last = connect(s, "10.0.0.9")
    over = connect(s, "10.0.0.10")
    assert last.closed is None and over.value() == REFUSED
    assert sample(metrics, "hashcoop_http_connections_refused_total", reason="max-connections") == 1


def test_refusals_get_one_log_line_then_one_a_minute(caplog):
    s, clock, metrics = site(max_connections_per_ip=1)
    connect(s)
    with caplog.at_level(logging.INFO, logger="hashcoop.http"):
        for _ in range(500):
            connect(s)
            run(clock, 0.01)
        assert len(caplog.records) == 1 and "refused a connection from 10.0.0.7" in caplog.text
        run(clock, 60)
    assert len(caplog.records) == 2
    assert "refused 499 more connections (per-ip-limit 499) in the last 60 s" in caplog.records[1].getMessage()
    assert sample(metrics, "hashcoop_http_connections_refused_total", reason="per-ip-limit") == 500


def test_a_unix_socket_peer_counts_toward_the_total_only():
    s, clock, metrics = site(max_connections_per_ip=1, max_connections=3)
    for _ in range(3):
        pipe = Pipe()
        proto = s.buildProtocol(UNIXAddress(b"/run/hashcoop.sock"))
        assert isinstance(proto, BoundedChannel)
        pipe.protocol = proto
        proto.makeConnection(pipe)
    assert not isinstance(s.buildProtocol(UNIXAddress(b"/run/hashcoop.sock")), BoundedChannel)


# -- the pure parts ---------------------------------------------------------------------------
def test_admission_counts_and_releases():
    a = Admission(3, 2, ["192.168.0.0/24"])
    assert a.admit("1.2.3.4") is None and a.admit("1.2.3.4") is None
    assert a.admit("1.2.3.4") is Refusal.PER_IP
    assert a.admit("192.168.0.5") is None
    assert a.admit("5.6.7.8") is Refusal.MAX_CONNECTIONS and a.admit(None) is Refusal.MAX_CONNECTIONS
    a.release("1.2.3.4")
    a.release("1.2.3.4")
    a.release("192.168.0.5")
    assert a.open == 0 and a.per_ip == {}


def test_peer_ip():
    assert peer_ip("::ffff:10.0.0.1") == "10.0.0.1"
    assert peer_ip("2001:db8::1") == "2001:db8::1"
    assert peer_ip(None) is None and peer_ip(b"/run/x.sock") is None


def test_log_throttle():
    t = LogThrottle(60)
    assert t.event(0, "a") and t.due is None
    assert not t.event(1, "a") and not t.event(2, "b")
    assert t.due == 60
    assert t.flush(60) == {"a": 1, "b": 1} and t.due is None
    assert not t.event(61, "a")  # within a minute of the summary line
    assert t.due == 120 and t.flush(120) == {"a": 1}
    assert t.event(181, "a") and t.flush(190) == {}


def test_config_keys_and_their_errors():
    h = config().http
    assert (h.idle_timeout, h.write_timeout, h.max_connections, h.max_connections_per_ip) == (15, 30, 1000, 50)
    with pytest.raises(ConfigError) as e:
        config(idle_timeout=0, write_timeout=-1, max_connections=0, max_connections_per_ip=0,
               connection_limit_exempt=["not-a-net"])
    assert {k for k, _ in e.value.errors} == {"http.idle_timeout", "http.write_timeout", "http.max_connections",
                                              "http.max_connections_per_ip", "http.connection_limit_exempt"}


def test_disconnect_reasons_are_the_metric_labels():
    assert [str(d) for d in Disconnect] == ["idle-timeout", "write-stalled", "request-timeout", "body-too-large"]
    assert [str(r) for r in Refusal] == ["max-connections", "per-ip-limit"]
