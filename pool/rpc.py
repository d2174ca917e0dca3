"""Asynchronous JSON-RPC client for Bitcoin Core (Twisted ``Agent``).

Requests are JSON-RPC 1.0 style, like ``bitcoin-cli`` sends them, so Core
answers ``{"result", "error", "id"}``. In that legacy mode Core reports an
error object with HTTP 500 (404 for an unknown method, 400 for a bad
request): the body is parsed whatever the status.

Errors are exceptions of one family:

* :class:`RPCError` -- the node answered with a JSON-RPC error object;
* :class:`RPCTransportError` -- no usable answer: connection refused or
  lost, HTTP 401/403, a body that is not JSON-RPC;
* :class:`RPCTimeout` -- no answer within the timeout (the request is
  cancelled, which closes its connection).

Cookie authentication reads ``__cookie__:password`` from the node's
``.cookie`` file. bitcoind writes a new cookie every time it starts, so a
401 makes the client read the file again and retry once.
"""
from __future__ import annotations

import base64
import ipaddress
import itertools
import logging
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseNeverReceived, _HTTP11ClientFactory
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

log = logging.getLogger("hashcoop.rpc")

# Core closes idle keep-alive connections after -rpcservertimeout (30 s by
# default); drop ours earlier so a request rarely meets a closing socket.
CACHED_CONNECTION_TIMEOUT = 20.0
# Far above any getblocktemplate answer (a full mainnet block is < 4 MB,
# 8 MB as hex), but bounded.
MAX_BODY = 64 << 20


class RPCError(Exception):
    """A JSON-RPC error object from the node (``code`` as Core sends it), or,
    in the subclasses, a failure to get an answer at all (``code`` None)."""

    def __init__(self, code: int | None, message: str, *, method: str | None = None, node: str | None = None):
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.method = method
        self.node = node

    def __str__(self) -> str:
        where = ":".join(p for p in (self.node, self.method) if p)
        code = f" (code {self.code})" if self.code is not None else ""
        return f"{where + ': ' if where else ''}{self.message}{code}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, method={self.method!r}, node={self.node!r})"


class RPCTransportError(RPCError):
    """No usable JSON-RPC answer: refused/lost connection, HTTP 401/403,
    or a body that is not a JSON-RPC response."""

    def __init__(self, message: str, *, method: str | None = None, node: str | None = None, http_status: int | None = None):
        super().__init__(None, message, method=method, node=node)
        self.http_status = http_status


class RPCTimeout(RPCTransportError):
    """The node did not answer within the timeout."""


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body already in memory. (``FileBodyProducer`` would use the
    global cooperator, i.e. the global reactor.)"""

    def __init__(self, body: bytes):
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer):
        consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    """Twisted logs "Starting factory ..." for every new connection; the
    usual fix (there is no public switch) is a quiet subclass as the pool's
    ``_factory``."""

    noisy = False


class _TimedOut(Exception):
    pass


class _BodyTooLarge(Exception):
    pass


class _BodyReader(Protocol):
    """Collects a response body, at most ``limit`` bytes. (Twisted's
    ``readBody`` cannot abort the connection when cancelled in this Twisted
    version and warns on every call; this one stops the transport.)"""

    def __init__(self, finished: defer.Deferred, limit: int):
        self.finished = finished
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.finished.errback(_BodyTooLarge(f"response body over {self.limit} bytes"))
            self.transport.stopProducing()
            return
        self.parts.append(data)

    def connectionLost(self, reason) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.parts))
        else:
            self.finished.errback(reason)


def _read_body(response, limit: int) -> defer.Deferred:
    reader: list[_BodyReader] = []

    def cancel(_):
        if reader and reader[0].transport is not None:
            reader[0].transport.stopProducing()

    d = defer.Deferred(cancel)
    reader.append(_BodyReader(d, limit))
    response.deliverBody(reader[0])
    return d


def _timed_out(result, timeout):
    """addTimeout's translation: whatever a timed-out request failed with
    (Agent wraps the cancellation in ResponseNeverReceived), it timed out."""
    if isinstance(result, Failure):
        return Failure(_TimedOut())
    return result


def _is_cancellation(e: BaseException) -> bool:
    if isinstance(e, defer.CancelledError):
        return True
    return any(r.check(defer.CancelledError) for r in getattr(e, "reasons", None) or ())


@implementer(IAgentEndpointFactory)
class _DirectEndpoints:
    """Plain TCP straight to one IP address, for Agent."""

    def __init__(self, reactor, ip: ipaddress.IPv4Address | ipaddress.IPv6Address):
        self.reactor = reactor
        self.ip = ip

    def endpointForURI(self, uri):
        endpoint = TCP4ClientEndpoint if self.ip.version == 4 else TCP6ClientEndpoint
        return endpoint(self.reactor, str(self.ip), uri.port)


def _agent(reactor, parts, pool: HTTPConnectionPool) -> Agent:
    """The Agent for a node's URL. Agent's default endpoint (HostnameEndpoint)
    notices that the only address it had refused the connection at the next
    tick of its 0.3 s attempt timer, so every call to a dead node would fail
    0.3 s late, and the node set would fail over that much later (a new tip
    reaching miners late, with their work wasted meanwhile; seen on real
    Bitcoin Core, tests/realnode/test_failover.py). A plain-HTTP node named
    by its IP address, the usual case, is connected to directly: a refused
    connection fails at once. Host names and HTTPS keep Agent's endpoints."""
    try:
        ip = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return Agent(reactor, pool=pool)
    if parts.scheme != "http":
        return Agent(reactor, pool=pool)
    return Agent.usingEndpointFactory(reactor, _DirectEndpoints(reactor, ip), pool=pool)


class NodeClient:
    """One node's JSON-RPC endpoint.

    ``url`` may carry ``user:password@`` (used when ``user`` is not given)
    and a path such as ``/wallet/name``. ``timeout`` is the default per
    request; :meth:`call` takes a per-call override (longpoll and
    submitblock need longer ones).
    """

    def __init__(
        self,
        reactor,
        url: str,
        *,
        name: str = "node0",
        user: str | None = None,
        password: str | None = None,
        cookie_file: str | None = None,
        timeout: float = 10.0,
        metrics=None,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        if user is None and parts.username is not None:
            user, password = unquote(parts.username), unquote(parts.password or "")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port:
            netloc += f":{parts.port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        self.reactor = reactor
        self.name = name
        self.timeout = timeout
        self.metrics = metrics
        self.max_body = MAX_BODY
        self._user = user
        self._password = password
        self.cookie_file = str(Path(cookie_file).expanduser()) if cookie_file else None
        self._cookie: str | None = None
        self._ids = itertools.count(1)
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 4
        self._pool.cachedConnectionTimeout = CACHED_CONNECTION_TIMEOUT
        self._pool._factory = _QuietHTTP11ClientFactory
        self._agent = _agent(reactor, parts, self._pool)
        self._inflight: set[defer.Deferred] = set()
        self._closed = False
        # None until the first call; True when the node gave a JSON answer.
        self.up: bool | None = None

    def __repr__(self) -> str:
        return f"NodeClient({self.name!r}, {self.url!r})"

    # -- auth --------------------------------------------------------------

    def _read_cookie(self) -> str:
        try:
            cookie = Path(self.cookie_file).read_text().strip()
        except OSError as e:
            raise RPCTransportError(f"cannot read cookie file {self.cookie_file}: {e.strerror or e}", node=self.name) from None
        if ":" not in cookie:
            raise RPCTransportError(f"cookie file {self.cookie_file} does not hold user:password", node=self.name)
        return cookie

    def _authorization(self, reload_cookie: bool = False) -> bytes | None:
        if self.cookie_file:
            if self._cookie is None or reload_cookie:
                self._cookie = self._read_cookie()
            cred = self._cookie
        elif self._user is not None:
            cred = f"{self._user}:{self._password or ''}"
        else:
            return None
        return b"Basic " + base64.b64encode(cred.encode())

    # -- calls -------------------------------------------------------------

    def call(self, method: str, *params, timeout: float | None = None) -> defer.Deferred:
        """Call ``method`` with positional ``params``; a Deferred firing with
        the result, or failing with an :class:`RPCError` (sub)class.
        Cancelling it aborts the HTTP request."""
        if self._closed:
            return defer.fail(RPCTransportError("client closed", method=method, node=self.name))
        d = defer.Deferred.fromCoroutine(self._call(method, list(params), self.timeout if timeout is None else timeout))
        self._inflight.add(d)

        def done(result):
            self._inflight.discard(d)
            return result

        return d.addBoth(done)

    async def _call(self, method: str, params: list, timeout: float):
        start = self.reactor.seconds()
        body = orjson.dumps({"method": method, "params": params, "id": next(self._ids)})
        try:
            result = await self._exchange(method, body, timeout)
        except RPCError as e:
            self._record(method, start, e)
            raise
        self._record(method, start, None)
        return result

    async def _exchange(self, method: str, body: bytes, timeout: float):
        reloaded = False
        retried_stale = False
        while True:
            try:
                auth = self._authorization(reload_cookie=reloaded)
            except RPCTransportError as e:
                e.method = method
                raise
            try:
                status, data = await self._post(body, auth, timeout)
            except _TimedOut:
                raise RPCTimeout(f"no answer within {timeout:g} s", method=method, node=self.name) from None
            except Exception as e:
                if _is_cancellation(e):
                    raise defer.CancelledError() from None
                if isinstance(e, _BodyTooLarge):
                    raise RPCTransportError(str(e), method=method, node=self.name) from None
                if not isinstance(e, ResponseNeverReceived):
                    # refused, DNS, reset...: all transport
                    raise RPCTransportError(f"connection failed: {_reason(e)}", method=method, node=self.name) from None
                # A kept-alive connection the node closed just as we sent.
                # Every call this pool makes is idempotent (reads, or
                # submitblock, which answers "duplicate"), so retry once.
                if not retried_stale:
                    retried_stale = True
                    continue
                raise RPCTransportError(f"connection failed: {_reason(e)}", method=method, node=self.name) from None
            if status == 401 and self.cookie_file and not reloaded:
                reloaded = True
                log.info("%s: HTTP 401, reading cookie file %s again", self.name, self.cookie_file)
                continue
            if status in (401, 403):
                what = "authentication failed" if status == 401 else "access forbidden (rpcallowip?)"
                raise RPCTransportError(f"HTTP {status}: {what}", method=method, node=self.name, http_status=status)
            return self._parse(method, status, data)

    def _post(self, body: bytes, auth: bytes | None, timeout: float) -> defer.Deferred:
        headers = Headers({b"Content-Type": [b"application/json"], b"User-Agent": [b"hashcoop"]})
        if auth is not None:
            headers.addRawHeader(b"Authorization", auth)
        d = self._agent.request(b"POST", self.url.encode(), headers, _BytesProducer(body))

        def read(response):
            return _read_body(response, self.max_body).addCallback(lambda data: (response.code, data))

        d.addCallback(read)
        d.addTimeout(timeout, self.reactor, onTimeoutCancel=_timed_out)
        return d

    def _parse(self, method: str, status: int, data: bytes):
        try:
            reply = orjson.loads(data)
        except orjson.JSONDecodeError:
            snippet = data[:80].decode("utf-8", "replace").strip()
            raise RPCTransportError(
                f"HTTP {status}: not a JSON-RPC answer: {snippet!r}", method=method, node=self.name, http_status=status
            ) from None
        if not isinstance(reply, dict) or ("result" not in reply and "error" not in reply):
            raise RPCTransportError(f"HTTP {status}: not a JSON-RPC answer", method=method, node=self.name, http_status=status)
        err = reply.get("error")
        if err is not None:
            if isinstance(err, dict):
                code = err.get("code")
                raise RPCError(code if isinstance(code, int) else None, str(err.get("message", "")), method=method, node=self.name)
            raise RPCError(None, str(err), method=method, node=self.name)
        return reply.get("result")

    def _record(self, method: str, start: float, err: RPCError | None) -> None:
        answered = err is None or not isinstance(err, RPCTransportError)
        if answered != self.up:
            if answered:
                if self.up is False:
                    log.info("%s: node answers again", self.name)
            else:
                log.warning("%s: node unreachable: %s", self.name, err)
        self.up = answered
        m = self.metrics
        if m is None:
            return
        m.rpc_seconds.labels(node=self.name, method=method).observe(max(0.0, self.reactor.seconds() - start))
        m.node_up.labels(node=self.name).set(1 if answered else 0)
        if err is not None:
            if isinstance(err, RPCTimeout):
                kind = "timeout"
            elif isinstance(err, RPCTransportError):
                kind = "auth" if err.http_status in (401, 403) else "transport"
            else:
                kind = "rpc"
            m.rpc_errors.labels(node=self.name, method=method, kind=kind).inc()

    def close(self) -> defer.Deferred:
        """Cancel calls in flight and close every kept-alive connection; the
        Deferred fires once they are closed."""
        self._closed = True
        for d in list(self._inflight):
            d.cancel()
        return self._pool.closeCachedConnections()


def _reason(e: BaseException) -> str:
    """A readable reason from Twisted's wrapped connection errors."""
    reasons = getattr(e, "reasons", None)
    if reasons:
        return "; ".join(str(r.value) or type(r.value).__name__ for r in reasons)
    return str(e) or type(e).__name__
