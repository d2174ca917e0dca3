"""Stratum V1 line protocol: framing and JSON only. Decisions belong to the
session (``stratum.session.MinerSession``).

* Lines end with ``\\n`` (a trailing ``\\r`` is tolerated); a line longer than
  the cap, or a partial line growing past it, aborts the connection at once.
* A line that is not a JSON object disconnects (bad firmware or hostile),
  and so does an object whose ``id`` is not null, a number, a string or a
  boolean (an array or object id would be echoed back in the reply).
* Everything else goes to ``session.handle(msg)``.

Output: what the session writes while one read is being handled is
gathered and sent as one write when the read is done (the replies to
pipelined submits go out together). A write goes straight to the socket
when the transport holds nothing unsent, as Twisted's own ``doWrite``
would do one reactor turn later; whatever the socket does not take at once
is handed to the transport, which sends it in order when the socket is
writable again. Transports without a plain socket (tests, TLS) always get
``transport.write``.
"""
from __future__ import annotations

import logging

from orjson import JSONDecodeError, loads
from twisted.internet.interfaces import IProtocol
from zope.interface import implementer

log = logging.getLogger("hashcoop.stratum")

_ID_TYPES = frozenset((type(None), int, float, str, bool))


def _direct_socket(transport):
    """The transport's socket if bytes may be sent on it directly: a plain
    (non-TLS) Twisted TCP connection with its usual buffers; else None."""
    skt = getattr(transport, "socket", None)
    if skt is None or getattr(transport, "TLS", False):
        return None
    if not all(hasattr(transport, a) for a in ("dataBuffer", "offset", "_tempDataBuffer", "connected")):
        return None
    return skt


@implementer(IProtocol)
class StratumProtocol:
    """One connection. A plain class with slots, not a Twisted ``Protocol``
    subclass, so that an idle connection costs no instance dictionary."""

    __slots__ = ("server", "port", "ip", "max_line", "session", "_buf", "closing", "transport", "connected",
                 "_out", "_socket")

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
            return
        buf = self._buf + data if self._buf else data
        if b"\n" not in buf:
            if len(buf) > self.max_line:
                self._buf = b""
                self.drop("line-too-long")
                return
            self._buf = buf
            return
        lines = buf.split(b"\n")
        rest = lines.pop()
        if len(rest) > self.max_line:
            self._buf = b""
            self.drop("line-too-long")
            return
        self._buf = rest
        session = self.session
        out = self._out = []
        try:
            for line in lines:
                if len(line) > self.max_line:
                    self.drop("line-too-long")
                    return
                try:
                    msg = loads(line)
                except JSONDecodeError:
                    if not line.strip():
                        continue
                    self.drop("bad-json")
                    return
                if type(msg) is not dict:
                    self.drop("bad-json")
                    return
                if type(msg.get("id")) not in _ID_TYPES:
                    # JSON-RPC ids are null, numbers or strings; an array or
                    # object id would be echoed in the reply (and one nested
                    # deeper than orjson writes, 255, would fail the reply)
                    self.drop("bad-id")
                    return
                session.handle(msg)
                if self.closing:
                    return
        finally:
            self._out = None
            if out and not self.closing:
                self._send(out[0] if len(out) == 1 else b"".join(out))

    def connectionLost(self, reason=None) -> None:
        self.connected = 0
        self.closing = True
        self._out = None
        self._socket = None
        if self.session is not None:
            self.session.closed()
            self.session = None

    def logPrefix(self) -> str:
        return "StratumProtocol"

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
        if skt is not None:
            t = self.transport
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
        self.transport.write(data)

    def close(self, reason: str) -> None:
        """Flush what is queued, then close (timeouts, bans)."""
        if self.closing:
            return
        out = self._out
        if out:
            self._out = None
            self._send(b"".join(out))
        self.closing = True
        self.server.count_disconnect(reason, self.ip)
        self.transport.loseConnection()

    def drop(self, reason: str) -> None:
        """Close at once without reading or flushing (hostile input)."""
        if self.closing:
            return
        self.closing = True
        self._out = None
        self.server.count_disconnect(reason, self.ip)
        self.transport.abortConnection()
