"""The HTTP side's bounds on Twisted (the decisions are in ``limits.py``).

What twisted.web does not do by itself (``tests/http/test_bounds.py``
shows each on a real socket):

* A client that pipelines requests and never reads: ``HTTPChannel`` pauses
  reading only while a request is still being answered, so responses
  written at once (all of ours) let it read and answer everything the
  client sends, into the transport's buffer, without end. ``BoundedChannel``
  stops reading whenever the transport's buffer is over its ``bufferSize``
  and answers the next pipelined request only once the peer has taken it:
  what a connection holds is that buffer, at most one response over it,
  and one read of unparsed requests.
* A client that stops reading a response: nothing times out while a
  request is being answered. ``BoundedChannel`` aborts a connection whose
  backed-up output the peer has taken none of for ``http.write_timeout``
  seconds; a slow reader that keeps taking some is left alone.
* A client that trickles a request (a byte every few seconds resets the
  idle timeout): ``BoundedChannel`` closes a connection whose request is
  still arriving ``http.request_timeout`` seconds after its first byte.
* A request body: twisted.web reads any body, however large, into a
  temporary file before the resource answers; no endpoint takes one, so a
  body over 64 KiB, or chunked, gets a 413 and the connection is closed
  before it is read.
* Many connections: ``BoundedSite`` refuses connections beyond
  ``http.max_connections`` per listener and ``http.max_connections_per_ip``
  per peer IP with a canned 503, one log line a minute at most.
  ``http.idle_timeout`` is Twisted's own idle timeout (kept off while a
  request is being answered or its output waits), counted here.
"""
from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable

from twisted.internet import interfaces
from twisted.internet.protocol import Protocol
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

from hashcoop.pool.http.limits import MAX_REQUEST_BODY, Admission, Disconnect, LogThrottle, Refusal, body_refused, peer_ip
from hashcoop.pool.transports import unsent_bytes

log = logging.getLogger("hashcoop.http")

_REFUSED_BODY = b"too many connections; try again shortly\n"
REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Length: %d\r\nRetry-After: 10\r\nConnection: close\r\n\r\n%s" % (len(_REFUSED_BODY), _REFUSED_BODY))

_TOO_LARGE_BODY = b"this pool takes no request bodies over %d bytes\n" % MAX_REQUEST_BODY
TOO_LARGE = (b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY))

# What is logged of each disconnect: the first at once, then a sum a minute
# (idle timeouts only at DEBUG: browsers leave connections idle all the time).
_FIRST = {
    Disconnect.WRITE_STALLED: "aborted the connection of {peer}: it took none of its output for {t:g} s (http.write_timeout)",
    Disconnect.REQUEST_TIMEOUT: "closed the connection of {peer}: its request was still arriving after {t:g} s "
                                "(http.request_timeout)",
    Disconnect.BODY_TOO_LARGE: "refused a request from {peer} with a body of {detail} (413, not read: the API takes none)",
}
_SUM = {
    Disconnect.WRITE_STALLED: "aborted {n} more connection{s} whose peer stopped reading",
    Disconnect.REQUEST_TIMEOUT: "closed {n} more connection{s} whose request was too slow to arrive",
    Disconnect.BODY_TOO_LARGE: "refused {n} more request{s} with a body",
}

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked, a u64 at byte 120 (Linux 4.1+)
_TCPI_BYTES_ACKED = 120


def _socket(transport) -> socket.socket | None:
    t = transport
    for _ in range(3):  # TLS: the TCP transport under the TLS protocol
        inner = getattr(t, "transport", None)
        if inner is None:
            break
        t = inner
    try:
        handle = t.getHandle()
    except Exception:  # noqa: BLE001 - any transport without a socket
        return None
    return handle if isinstance(handle, socket.socket) else None


def acked_bytes(transport) -> int | None:
    """Bytes of this connection's output the peer has acknowledged (the
    kernel's count, ``TCP_INFO``), or None where the kernel does not say."""
    sock = _socket(transport)
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    except OSError:
        return None
    if len(info) < _TCPI_BYTES_ACKED + 8:
        return None
    return struct.unpack_from("Q", info, _TCPI_BYTES_ACKED)[0]


def progress_mark(transport) -> int:
    """A number that grows when the peer takes some of the output: the
    bytes it acknowledged; without that count, the less output waits in
    the transport's buffer the higher (coarser: the kernel's send buffer
    hides a slow reader's progress)."""
    acked = acked_bytes(transport)
    return acked if acked is not None else -unsent_bytes(transport)


class Refused(Protocol):
    """A connection refused by ``BoundedSite``: a canned 503, then closed at
    once; nothing it sends is read."""

    def connectionMade(self):
        self.transport.write(REFUSED)
        self.transport.loseConnection()


class Bounds:
    """What the connections of one listener share: the admission count, the
    two timeouts, the rationed log lines, the metrics and the clock.

    ``progress(transport)`` is how a stall is seen (``progress_mark``)."""

    def __init__(self, listener: str, http, metrics, clock, *, progress: Callable[[object], int] = progress_mark,
                 log_interval: float = 60.0):
        self.listener = listener
        self.admission = Admission(http.max_connections, http.max_connections_per_ip, http.connection_limit_exempt)
        self.idle_timeout = http.idle_timeout
        self.request_timeout = http.request_timeout
        self.write_timeout = http.write_timeout
        self.metrics = metrics
        self.clock = clock
        self.progress = progress
        self.channels: set[BoundedChannel] = set()
        self._gauge = metrics.http_connections.labels(listener)
        self._refusals = LogThrottle(log_interval)
        self._disconnects = {reason: LogThrottle(log_interval) for reason in _FIRST}
        self._flushes: dict[int, object] = {}  # id(throttle) -> the pending flush call

    # -- admission -------------------------------------------------------------------------
    def admit(self, ip: str | None) -> bool:
        refusal = self.admission.admit(ip)
        if refusal is None:
            self._gauge.inc()
            return True
        self.metrics.http_connections_refused.labels(refusal).inc()
        if self._refusals.event(self.clock.seconds(), refusal):
            if refusal is Refusal.PER_IP:
                why = f"{self.admission.max_per_ip} open from that IP (http.max_connections_per_ip)"
            else:
                why = f"{self.admission.max_total} open (http.max_connections)"
            log.warning("http %s: refused a connection from %s: %s, %s; further refusals are summed up once a minute",
                        self.listener, ip or "a local socket", refusal, why)
        else:
            self._later(self._refusals, logging.WARNING, "refused {n} more connection{s} ({by})")
        return False

    def opened(self, channel: BoundedChannel) -> None:
        self.channels.add(channel)

    def closed(self, channel: BoundedChannel) -> None:
        self.channels.discard(channel)
        self.admission.release(channel.ip)
        self._gauge.dec()

    # -- disconnects ---------------------------------------------------------------------
    def disconnected(self, channel: BoundedChannel, reason: Disconnect, detail: str = "") -> None:
        self.metrics.http_disconnects.labels(reason).inc()
        peer = channel.ip or "a local socket"
        if reason is Disconnect.IDLE:
            log.debug("http %s: closed %s: idle for %g s (http.idle_timeout)", self.listener, peer, self.idle_timeout)
            return
        throttle = self._disconnects[reason]
        if throttle.event(self.clock.seconds(), reason):
            t = self.write_timeout if reason is Disconnect.WRITE_STALLED else self.request_timeout
            log.info("http %s: %s; further ones are summed up once a minute", self.listener,
                     _FIRST[reason].format(peer=peer, t=t, detail=detail))
        else:
            self._later(throttle, logging.INFO, _SUM[reason])

    # -- rationed log lines --------------------------------------------------------------
    def _later(self, throttle: LogThrottle, level: int, text: str) -> None:
        if id(throttle) in self._flushes:
            return
        delay = max(0.0, throttle.due - self.clock.seconds())
        self._flushes[id(throttle)] = self.clock.callLater(delay, self._flush, throttle, level, text)

    def _flush(self, throttle: LogThrottle, level: int, text: str) -> None:
        del self._flushes[id(throttle)]
        held = throttle.flush(self.clock.seconds())
        if held:
            n = sum(held.values())
            by = ", ".join(f"{k} {v}" for k, v in sorted(held.items()))
            log.log(level, "http %s: %s in the last %g s", self.listener,
                    text.format(n=n, s="" if n == 1 else "s", by=by), throttle.interval)

    def stop(self) -> None:
        for call in self._flushes.values():
            if call.active():
                call.cancel()
        self._flushes.clear()


class BoundedChannel(HTTPChannel):
    """``HTTPChannel`` with the bounds of its listener (module docstring).
    Built by ``BoundedSite``, which sets ``bounds`` and ``ip``."""

    bounds: Bounds
    ip: str | None = None
    _paused = False  # the transport holds more than its bufferSize of our output
    _held = None  # a finished request whose requestDone waits for the peer to take its output
    _stall_call = None
    _mark = 0
    _quiet = 0
    _answering = False  # a request has arrived whole and its requestDone has not run yet
    _request_call = None  # the deadline of the request arriving

    def connectionMade(self):
        super().connectionMade()
        # the idle timeout's close waits this long for the output to drain
        self.abortTimeout = self.bounds.write_timeout
        self.bounds.opened(self)

    # -- the transport's push-producer calls ------------------------------------------------
    def pauseProducing(self):
        super().pauseProducing()
        if self._paused:
            return  # the transport calls again on every write while full
        self._paused = True
        # stop reading even while a request is being answered (HTTPChannel
        # keeps reading then, and a response written at once never leaves
        # that state before the next request is read)
        network = interfaces.IPushProducer(self.transport, None)
        if network is not None:
            network.pauseProducing()
        self._watch(self.bounds.progress(self.transport))

    def resumeProducing(self):
        self._paused = False
        self._unwatch()
        super().resumeProducing()
        held, self._held = self._held, None
        if held is not None:
            self._done(held)  # answers the pipelined requests already read, then reads on

    def requestDone(self, request):
        if self._paused and self.persistent:
            self._held = request  # the next pipelined request waits for the peer to read
            return
        self._done(request)

    def _done(self, request):
        self._answering = False
        super().requestDone(request)

    # -- a request arriving ----------------------------------------------------------------
    def dataReceived(self, data):
        # bytes while no request is being answered are (part of) the next one:
        # it has request_timeout from here to arrive whole (pipelined bytes
        # read while one is answered are looked at again once it is done)
        if self._request_call is None and not self._answering and data:
            self._request_call = self.callLater(self.bounds.request_timeout, self._request_too_slow)
        super().dataReceived(data)

    def allHeadersReceived(self):
        request = self.requests[-1]
        chunked = request.requestHeaders.hasHeader(b"transfer-encoding")
        if body_refused(self.length, chunked):
            self._cancel_request_deadline()
            self.bounds.disconnected(self, Disconnect.BODY_TOO_LARGE,
                                     "chunked encoding" if chunked else f"{self.length} bytes")
            self.transport.write(TOO_LARGE)
            self.loseConnection()  # stops reading: the body is never read
            return
        super().allHeadersReceived()

    def allContentReceived(self):
        self._cancel_request_deadline()
        self._answering = True
        super().allContentReceived()

    def _request_too_slow(self):
        self._request_call = None
        self.bounds.disconnected(self, Disconnect.REQUEST_TIMEOUT)
        self.loseConnection()

    def _cancel_request_deadline(self):
        if self._request_call is not None:
            if self._request_call.active():
                self._request_call.cancel()
            self._request_call = None

    # -- write stall -----------------------------------------------------------------------
    # Backed-up output is looked at every write_timeout / STALL_CHECKS
    # seconds; STALL_CHECKS looks in a row that find the peer took none of
    # it abort the connection: write_timeout to 1.25 x write_timeout after
    # the peer last took something.
    STALL_CHECKS = 4

    def _watch(self, mark: int) -> None:
        self._mark = mark
        self._quiet = 0
        self._stall_call = self.callLater(self.bounds.write_timeout / self.STALL_CHECKS, self._check_progress)

    def _unwatch(self) -> None:
        if self._stall_call is not None:
            if self._stall_call.active():
                self._stall_call.cancel()
            self._stall_call = None

    def _check_progress(self):
        self._stall_call = None
        mark = self.bounds.progress(self.transport)
        if mark > self._mark:
            self._mark, self._quiet = mark, 0  # the peer took some
        else:
            self._quiet += 1
            if self._quiet >= self.STALL_CHECKS:
                self.bounds.disconnected(self, Disconnect.WRITE_STALLED)
                self.transport.abortConnection()
                return
        self._stall_call = self.callLater(self.bounds.write_timeout / self.STALL_CHECKS, self._check_progress)

    # -- idle ------------------------------------------------------------------------------
    def timeoutConnection(self):
        self.bounds.disconnected(self, Disconnect.IDLE)
        super().timeoutConnection()

    def forceAbortClient(self):
        # the idle timeout's close found output the peer had not taken after write_timeout
        self.bounds.disconnected(self, Disconnect.WRITE_STALLED)
        super().forceAbortClient()

    def connectionLost(self, reason):
        self._unwatch()
        self._cancel_request_deadline()
        self._held = None
        super().connectionLost(reason)
        self.bounds.closed(self)


class BoundedSite(Site):
    """A listener's Site: refuses connections beyond its caps, closes idle
    ones after ``http.idle_timeout``, its channels are ``BoundedChannel``s
    (HTTP/1.1 only: no HTTP/2 over TLS, which these bounds do not cover).
    No access log line per request (a dashboard polls)."""

    protocol = BoundedChannel

    def __init__(self, resource, bounds: Bounds):
        super().__init__(resource, timeout=bounds.idle_timeout, reactor=bounds.clock)
        self.bounds = bounds

    def log(self, request):
        pass

    def buildProtocol(self, addr):
        ip = peer_ip(getattr(addr, "host", None))
        if not self.bounds.admit(ip):
            p = Refused()
            p.factory = self
            return p
        channel = super().buildProtocol(addr)
        channel.bounds = self.bounds
        channel.ip = ip
        return channel

    def stopFactory(self):
        super().stopFactory()
        self.bounds.stop()
