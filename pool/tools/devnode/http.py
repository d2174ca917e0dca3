"""HTTP/1.x for the devnode's JSON-RPC port, framed the way Bitcoin Core
v31's RPC server frames it (observed on the wire; the live comparison is
``tests/realnode/test_standin_http.py``).

Requests (:class:`RequestParser`, bytes in, :class:`HttpRequest` out):

* lines end in CRLF **or a bare LF** (ckpool's RPC client sends bare LF);
* ``METHOD SP target SP HTTP/1.x`` exactly (any 1.x; other versions,
  extra spaces, a tab: 400); header names without spaces, no folded lines
  (400); request line and headers at most 8192 bytes (400);
* a body only with ``Content-Length`` (digits only; repeated headers must
  agree; 400 otherwise) or ``Transfer-Encoding: chunked``; without either
  the body is empty and any bytes that follow are the next request; more
  than 32 MiB is ``413 Content too large``; ``Expect: 100-continue`` is
  not answered;
* methods other than GET, POST, HEAD and PUT (OPTIONS, DELETE, PATCH, a
  lowercase ``post``) get ``405`` with an empty body before any handler.

Responses (:func:`render_response`): the handler's headers, then ``Date``
(HTTP/1.1 only), ``Connection: keep-alive`` (HTTP/1.0 that asked for it),
``Content-Length`` (HTTP/1.1, or HTTP/1.0 keep-alive; not for 204),
``Content-Type: text/html; charset=ISO-8859-1`` when the handler set none,
and ``Connection: close`` when the request said so. The status line
carries the request's own version. An HTTP/1.0 request without
keep-alive is answered without a length and the connection closed; an
HTTP/1.1 one stays open unless it said ``Connection: close``. Parse errors
are answered (400/413) and the connection closed.

:class:`RpcHttpChannel` serves one connection: requests in the order they
arrive, pipelined ones one after another, a connection idle for
``timeout`` seconds (Core's ``-rpcservertimeout``, 30) closed. A client
that half-closes gets its answers; a request still waiting then (a
longpoll) is cancelled and the connection closed.

Not copied, on purpose: when a pipelined request after a valid one is
malformed, Core answers only the 400 and never the valid one; the devnode
answers both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Callable

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime
from twisted.python import failure
from zope.interface import implementer

MAX_HEADERS_SIZE = 8192  # request line + headers
MAX_BODY_SIZE = 0x02000000  # Core's MAX_SIZE
SERVER_TIMEOUT = 30.0  # -rpcservertimeout
ALLOWED_METHODS = frozenset((b"GET", b"POST", b"HEAD", b"PUT"))
DEFAULT_CONTENT_TYPE = b"text/html; charset=ISO-8859-1"
REASONS = {
    200: b"OK",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content too large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}

_VERSION = re.compile(rb"HTTP/(\d+)\.(\d+)")
_HEX = re.compile(rb"[0-9a-fA-F]+")


@dataclass
class HttpRequest:
    method: bytes
    target: bytes  # the request target as sent, query string included
    version: tuple[int, int]
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        """The first header called ``name`` (any case)."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def _connection_is(self, token: bytes) -> bool:
        value = self.header(b"connection")
        return value is not None and value.lower() == token

    @property
    def close_requested(self) -> bool:
        return self._connection_is(b"close")

    @property
    def keep_alive_1_0(self) -> bool:
        """An HTTP/1.0 request that asked to keep the connection."""
        return self.version[1] == 0 and self._connection_is(b"keep-alive")

    @property
    def persistent(self) -> bool:
        """Whether the connection stays open after the answer."""
        if self.close_requested:
            return False
        return self.version[1] >= 1 or self.keep_alive_1_0


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


class BadRequest(Exception):
    """A request that cannot be parsed: answer ``status`` and close."""

    def __init__(self, status: int, version: tuple[int, int] = (1, 1)):
        super().__init__(status)
        self.status = status
        self.version = version


_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER = range(6)


class RequestParser:
    """Bytes in (:meth:`feed`), requests out (:meth:`next`): no I/O."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.state = _HEAD
        self.failed = False
        self._req: HttpRequest | None = None
        self._need = 0
        self._body = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data

    def _line(self) -> bytes | None:
        end = self.buf.find(b"\n")
        if end < 0:
            return None
        line = bytes(self.buf[:end])
        del self.buf[:end + 1]
        return line[:-1] if line.endswith(b"\r") else line

    def next(self) -> HttpRequest | None:
        """The next complete request, or None until more bytes come.
        Raises :class:`BadRequest` (and stays failed)."""
        if self.failed:
            return None
        try:
            return self._next()
        except BadRequest:
            self.failed = True
            raise

    def _next(self) -> HttpRequest | None:
        if self.state == _HEAD:
            head_end = self._head_end()
            if head_end is None:
                if len(self.buf) > MAX_HEADERS_SIZE:
                    raise BadRequest(400)
                return None
            if head_end > MAX_HEADERS_SIZE:
                raise BadRequest(400)
            self._req = self._parse_head()
        req = self._req
        while True:
            if self.state == _BODY:
                if len(self.buf) < self._need:
                    return None
                req.body = bytes(self.buf[:self._need])
                del self.buf[:self._need]
                return self._done()
            if self.state == _CHUNK_SIZE:
                line = self._line()
                if line is None:
                    return None
                size = line.split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size):
                    raise BadRequest(400, req.version)
                self._need = int(size, 16)
                if len(self._body) + self._need > MAX_BODY_SIZE:
                    raise BadRequest(413, req.version)
                self.state = _CHUNK_DATA if self._need else _TRAILER
            elif self.state == _CHUNK_DATA:
                if len(self.buf) < self._need:
                    return None
                self._body += self.buf[:self._need]
                del self.buf[:self._need]
                self.state = _CHUNK_END
            elif self.state == _CHUNK_END:
                line = self._line()
                if line is None:
                    return None
                if line:
                    raise BadRequest(400, req.version)
                self.state = _CHUNK_SIZE
            elif self.state == _TRAILER:
                line = self._line()
                if line is None:
                    return None
                if not line:
                    req.body = bytes(self._body)
                    return self._done()

    def _done(self) -> HttpRequest:
        req = self._req
        self._req = None
        self._body = bytearray()
        self.state = _HEAD
        return req

    def _head_end(self) -> int | None:
        """Where the blank line ending the head ends, or None."""
        pos = 0
        while True:
            end = self.buf.find(b"\n", pos)
            if end < 0:
                return None
            if end == pos or (end == pos + 1 and self.buf[pos] == 0x0D):
                if pos == 0:  # an empty line where the request line should be
                    raise BadRequest(400)
                return end + 1
            pos = end + 1

    def _parse_head(self) -> HttpRequest:
        parts = self._line().split(b" ")
        if len(parts) != 3 or not all(parts):
            raise BadRequest(400)
        method, target, version = parts
        m = _VERSION.fullmatch(version)
        if m is None or int(m.group(1)) != 1:
            raise BadRequest(400)
        req = HttpRequest(method, target, (1, int(m.group(2))))
        while True:
            line = self._line()
            if not line:
                break
            name, colon, value = line.partition(b":")
            if not colon or not name or any(c in name for c in b" \t") or line[:1] in (b" ", b"\t"):
                raise BadRequest(400, req.version)
            req.headers.append((name, value.strip(b" \t")))
        if any(k.lower() == b"transfer-encoding" and v.lower() == b"chunked" for k, v in req.headers):
            self.state = _CHUNK_SIZE
            return req
        lengths = {v for k, v in req.headers if k.lower() == b"content-length"}
        self._need = 0  # no length, no body: what follows is the next request
        if lengths:
            if len(lengths) > 1 or not next(iter(lengths)).isdigit():
                raise BadRequest(400, req.version)
            self._need = int(next(iter(lengths)))
            if self._need > MAX_BODY_SIZE:
                raise BadRequest(413, req.version)
        self.state = _BODY
        return req


def http_date(seconds: float) -> bytes:
    return formatdate(seconds, usegmt=True).encode()


def render_response(request: HttpRequest | None, response: HttpResponse, now: float,
                    version: tuple[int, int] = (1, 1)) -> bytes:
    """The bytes Core sends for ``response`` to ``request`` (None: a request
    that could not be parsed; ``version`` is then the one it named, if any)."""
    if request is not None:
        version = request.version
    headers = list(response.headers)
    status = response.status
    http11 = version[1] >= 1
    keep_alive_1_0 = request is not None and request.keep_alive_1_0
    has_body = status != 204 and status != 304 and not 100 <= status < 200
    if http11:
        headers.append((b"Date", http_date(now)))
    if keep_alive_1_0:
        headers.append((b"Connection", b"keep-alive"))
    framed = http11 or keep_alive_1_0
    if framed and has_body:
        headers.append((b"Content-Length", b"%d" % len(response.body)))
    if has_body and not any(k.lower() == b"content-type" for k, _ in headers):
        headers.append((b"Content-Type", DEFAULT_CONTENT_TYPE))
    if request is not None and request.close_requested:
        headers.append((b"Connection", b"close"))
    out = [b"HTTP/%d.%d %d %s\r\n" % (version[0], version[1], status, REASONS.get(status, b"Unknown"))]
    out += [k + b": " + v + b"\r\n" for k, v in headers]
    out.append(b"\r\n")
    out.append(response.body if has_body else b"")  # HEAD too: Core sends the body
    return b"".join(out)


Handler = Callable[[HttpRequest], "defer.Deferred | HttpResponse"]


@implementer(IHalfCloseableProtocol)
class RpcHttpChannel(protocol.Protocol):
    """One client connection: parse, hand each request to ``handler`` (an
    :class:`HttpResponse` or a Deferred of one), answer in order."""

    def __init__(self, handler: Handler, clock: IReactorTime, timeout: float = SERVER_TIMEOUT):
        self.handler = handler
        self.clock = clock
        self.timeout = timeout
        self.parser = RequestParser()
        self._inflight: defer.Deferred | None = None
        self._pumping = False
        self._eof = False
        self._closing = False
        self._idle = None

    # -- connection ------------------------------------------------------
    def connectionMade(self) -> None:
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.parser.feed(data)
        self._arm()
        self._pump()

    def readConnectionLost(self) -> None:
        self._eof = True
        if self._inflight is not None:
            self._inflight.cancel()  # nobody will read a longpoll's answer
        if self._inflight is None:
            self._close()

    def writeConnectionLost(self) -> None:
        self._close()

    def connectionLost(self, reason: failure.Failure = protocol.connectionDone) -> None:
        self._closing = True
        self._disarm()
        if self._inflight is not None:
            self._inflight.cancel()

    # -- idle timeout --------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        if self.timeout and self._inflight is None and not self._closing:
            self._idle = self.clock.callLater(self.timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _timed_out(self) -> None:
        self._idle = None
        if self._inflight is None:
            self._close()

    def _close(self) -> None:
        if not self._closing:
            self._closing = True
            self._disarm()
            self.transport.loseConnection()

    # -- requests ------------------------------------------------------------
    def _pump(self) -> None:
        if self._pumping:  # an answer given synchronously, inside the loop below
            return
        self._pumping = True
        try:
            self._pump_loop()
        finally:
            self._pumping = False

    def _pump_loop(self) -> None:
        while self._inflight is None and not self._closing:
            try:
                req = self.parser.next()
            except BadRequest as e:
                self.transport.write(render_response(None, HttpResponse(e.status), self.clock.seconds(), e.version))
                self._close()
                return
            if req is None:
                if self._eof:
                    self._close()
                return
            if req.method not in ALLOWED_METHODS:
                d = defer.succeed(HttpResponse(405))
            else:
                d = defer.maybeDeferred(self.handler, req)
            self._disarm()
            self._inflight = d
            d.addBoth(self._answer, req)

    def _answer(self, result, req: HttpRequest) -> None:
        self._inflight = None
        if isinstance(result, failure.Failure):
            if result.check(defer.CancelledError) or self._closing:
                self._close()
                return
            result = HttpResponse(500)
        if self._closing:
            return
        self.transport.write(render_response(req, result, self.clock.seconds()))
        if not req.persistent:
            self._close()
            return
        self._arm()
        self._pump()  # pipelined requests


class RpcHttpFactory(protocol.ServerFactory):
    def __init__(self, handler: Handler, clock: IReactorTime, timeout: float = SERVER_TIMEOUT):
        self.handler = handler
        self.clock = clock
        self.timeout = timeout

    def buildProtocol(self, addr) -> RpcHttpChannel:
        p = RpcHttpChannel(self.handler, self.clock, self.timeout)
        p.factory = self
        return p
