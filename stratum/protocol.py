"""Stratum V1 line protocol: framing and JSON only. Decisions belong to the
session (``hashcoop.stratum.session.MinerSession``).

* Lines end with ``\\n`` (a trailing ``\\r`` is tolerated); a line longer than
  the cap, or a partial line growing past it, closes the connection.
* A line that is not a JSON object closes the connection (bad firmware or
  hostile), and so does an object whose ``id`` is not null, a number, a
  string or a boolean (an array or object id would be echoed back).
* Blank and whitespace-only lines are not parsed (empty ones are dropped
  in bulk): each costs the session a request (``MinerSession.blank``, once
  per run of them), which closes a connection sending many.
* Everything else goes to ``session.handle(msg)``.

Output: what the session writes while one read is being handled is
gathered and sent as one write when the read is done (the replies to
pipelined submits go out together), or every ``FLUSH_EVERY`` writes. A write
goes straight to the socket when the transport holds nothing unsent, as
Twisted's own ``doWrite`` would do one reactor turn later; whatever the
socket does not take at once is handed to the transport, which sends it in
order when the socket is writable again. Transports without a plain socket
(tests, TLS) always get ``transport.write``.

Backpressure: the first time output is left unsent, the protocol registers
itself with the transport as a streaming producer, with the transport's
buffer size set to ``stratum.output_pause_bytes``. Twisted then calls
``pauseProducing`` when the unsent output passes it: the protocol stops
reading (lines already read are held, not handled) until Twisted calls
``resumeProducing`` once everything is sent. A connection paused that takes none
of its output for ``stratum.output_stall_timeout`` (the server's sweep), or
with more than ``stratum.output_limit_bytes`` unsent, is aborted: it does
not read.

Closing: ``close`` sends what is queued, then a FIN once it has gone
(``loseWriteConnection``), and keeps reading, dropping what arrives, until
the peer closes its side; after ``stratum.close_timeout``, or once
``DRAIN_LIMIT`` bytes were dropped, it aborts. A
miner thus always receives the replies sent before the close, also when
bad input follows a share in the same write (an abort, or a close with
unread input, would send an RST that discards them). ``abort`` is for
peers that do not read: nothing could be delivered.
"""
from __future__ import annotations

import logging

from orjson import JSONDecodeError, loads
from twisted.internet.interfaces import IProtocol, IPushProducer
from zope.interface import implementer

from hashcoop.pool.transports import unsent_bytes as unsent

log = logging.getLogger("hashcoop.stratum")

_ID_TYPES = frozenset((type(None), int, float, str, bool))
FLUSH_EVERY = 64  # writes gathered during one read before they are sent (and backpressure can act)
DRAIN_LIMIT = 65536  # bytes read and dropped after a close before the connection is aborted


def _direct_socket(transport):
    """The transport's socket if bytes may be sent on it directly: a plain
    (non-TLS) Twisted TCP connection with its usual buffers; else None."""
    skt = getattr(transport, "socket", None)
    if skt is None or getattr(transport, "TLS", False):
        return None
    if not all(hasattr(transport, a) for a in ("dataBuffer", "offset", "_tempDataBuffer", "connected")):
        return None
    return skt


@implementer(IProtocol, IPushProducer)
class StratumProtocol:
    """One connection. A plain class with slots, not a Twisted ``Protocol``
    subclass, so that an idle connection costs no instance dictionary."""

    __slots__ = ("server", "port", "ip", "max_line", "session", "_buf", "closing", "transport", "connected",
                 "_out", "_socket", "paused", "_closer", "_drained")

    def __init__(self, server, port, ip: str, max_line: int):
        self.server = server
        self.port = port
        self.ip = ip
        self.max_line = max_line
        self.session = None
        self._buf = b""
        self.closing = False
        self.transport = None
        self.connected = 0
        self._out: list[bytes] | None = None  # writes gathered while a read is handled
        self._socket = None
        self.paused: float | None = None  # when reading was paused for unsent output
        self._closer = None  # the abort due close_timeout after a close
        self._drained = 0  # bytes read and dropped since the close

    # -- Twisted callbacks -------------------------------------------------
    def makeConnection(self, transport) -> None:
        self.connected = 1
        self.transport = transport
        self.connectionMade()

    def connectionMade(self) -> None:
        try:
            self.transport.setTcpNoDelay(True)
        except Exception:  # not TCP (tests, unix sockets)
            pass
        self._socket = _direct_socket(self.transport)
        self.session = self.server.open_session(self)

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            # closed: what the peer still sends is read and dropped, up to a
            # limit (a peer sending a 10 MB line is not read to its end)
            if self._closer is not None:
                self._drained += len(data)
                if self._drained > DRAIN_LIMIT:
                    self._close_timed_out()
            return
        buf = self._buf + data if self._buf else data
        if self.paused is not None:
            # reading is paused: only what a transport read before it paused
            self._buf = buf
            if len(buf) > self.max_line + self.server.output_pause_bytes:
                self.abort("output-stalled")
            return
        if b"\n" not in buf:
            if len(buf) > self.max_line:
                self._buf = b""
                self.close("line-too-long")
                return
            self._buf = buf
            return
        lines = buf.split(b"\n")
        rest = lines.pop()
        if len(rest) > self.max_line:
            self._buf = b""
            self.close("line-too-long")
            return
        self._buf = rest
        session = self.session
        blank = 0  # blank and whitespace-only lines, not parsed: the session counts them against its budget
        if buf[:1] == b"\n" or b"\n\n" in buf:
            n = len(lines)
            lines = [*filter(None, lines)]  # empty lines dropped at C speed (a stream of them costs little)
            blank = n - len(lines)
        out = self._out = []
        lines_left = iter(lines)
        try:
            for line in lines_left:
                if len(line) > self.max_line:
                    self.close("line-too-long")
                    return
                if line[:1] != b"{" and not line.strip():
                    blank += 1
                    continue
                if blank:
                    session.blank(blank)
                    blank = 0
                    if self.closing:
                        return
                try:
                    msg = loads(line)
                except JSONDecodeError:
                    self.close("bad-json")
                    return
                if type(msg) is not dict:
                    self.close("bad-json")
                    return
                if type(msg.get("id")) not in _ID_TYPES:
                    # JSON-RPC ids are null, numbers or strings; an array or
                    # object id would be echoed in the reply (and one nested
                    # deeper than orjson writes, 255, would fail the reply)
                    self.close("bad-id")
                    return
                session.handle(msg)
                if self.closing:
                    return
                if len(out) >= FLUSH_EVERY:
                    self._send(b"".join(out))
                    out.clear()
                    if self.closing:  # aborted: the output passed its limit
                        return
                    if self.paused is not None:
                        # the peer is not reading: the lines not yet handled
                        # wait with the partial one until the output drains
                        held = list(lines_left)
                        if held:
                            held.append(self._buf)
                            self._buf = b"\n".join(held)
                        return
        finally:
            if blank and not self.closing:
                session.blank(blank)
            self._out = None
            if out and not self.closing:
                self._send(out[0] if len(out) == 1 else b"".join(out))

    def connectionLost(self, reason=None) -> None:
        self.connected = 0
        self.closing = True
        self._out = None
        self._socket = None
        self._buf = b""
        if self._closer is not None:
            if self._closer.active():
                self._closer.cancel()
            self._closer = None
        if self.paused is not None:
            self.paused = None
            self.server.output_drained(self)
        if self.session is not None:
            self.session.closed()
            self.session = None

    def logPrefix(self) -> str:
        return "StratumProtocol"

    # -- IPushProducer: called by the transport -----------------------------
    def pauseProducing(self) -> None:
        """The unsent output passed ``output_pause_bytes``: stop reading."""
        if self.paused is None and not self.closing:
            self.paused = self.server.now()
            self.transport.pauseProducing()
            self.server.output_blocked(self)

    def resumeProducing(self) -> None:
        """Everything unsent has gone: read again, starting with the lines
        held back."""
        if self.paused is None:
            return
        self.paused = None
        self.server.output_drained(self)
        self.transport.resumeProducing()
        if not self.closing and b"\n" in self._buf:
            self.dataReceived(b"")

    def stopProducing(self) -> None:
        pass  # the connection is gone: connectionLost follows

    # -- used by the session ----------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closing:
            return
        out = self._out
        if out is not None:
            out.append(data)
        else:
            self._send(data)

    def _send(self, data: bytes) -> None:
        skt = self._socket
        t = self.transport
        if skt is not None:
            if t.connected and not t._tempDataBuffer and t.offset == len(t.dataBuffer):
                try:
                    n = skt.send(data)
                except BlockingIOError:
                    n = 0
                except OSError:
                    # let the transport meet the error and close as usual
                    self._socket = None
                    n = 0
                if n == len(data):
                    return
                if n:
                    data = data[n:]
        if getattr(t, "producer", 0) is None and getattr(t, "connected", False):
            # the first output left unsent: backpressure from now on
            t.bufferSize = self.server.output_pause_bytes
            t.registerProducer(self, True)
        t.write(data)
        if self.paused is not None and unsent(t) > self.server.output_limit_bytes:
            self.abort("output-limit")

    def close(self, reason: str) -> None:
        """Send what is queued, then close gracefully (see the module's
        docstring): bad input, timeouts, floods, bans, shutdown."""
        if self.closing:
            return
        out = self._out
        if out:
            self._out = None
            self._send(b"".join(out))
            if self.closing:  # aborted: the output passed its limit
                return
        self.closing = True
        self.server.count_disconnect(reason, self.ip)
        t = self.transport
        half_close = getattr(t, "loseWriteConnection", None)
        if half_close is None:  # a transport that cannot half-close
            t.loseConnection()
            return
        if getattr(t, "producer", None) is self:
            # nothing more to produce: Twisted sends the FIN once the output
            # has gone (with a paused producer it would wait for more)
            t.unregisterProducer()
        half_close()
        if self.paused is not None:
            self.paused = None
            self.server.output_drained(self)
            t.resumeProducing()  # read on, to see the peer's FIN
        self._closer = self.server.clock.callLater(self.server.close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        """The peer did not close within ``close_timeout``, or sent more
        than ``DRAIN_LIMIT`` bytes after the close: abort."""
        closer, self._closer = self._closer, None
        if closer is not None and closer.active():
            closer.cancel()
        log.debug("connection from %s closed, then aborted (%d bytes dropped since)", self.ip, self._drained)
        self.transport.abortConnection()

    def abort(self, reason: str) -> None:
        """Close at once, dropping what is unsent: the peer does not read."""
        if self.closing:
            return
        self.closing = True
        self._out = None
        self.server.count_disconnect(reason, self.ip)
        self.transport.abortConnection()
