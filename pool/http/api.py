"""Routing, the JSON API (``/api/v1``), ``/metrics`` and the operator
endpoints. One ``Root`` resource per listener; the public one serves the
operator part only to requests with the operator token.

Every answer that needs Redis or the ledger goes through ``reads.Reads``
(thread pool, cache, timeout); the reactor thread only routes, merges live
figures and encodes JSON.
"""
from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from hashcoop.pool.core.btc.address import AddressError, address_to_script
from hashcoop.pool.http import pages
from hashcoop.pool.http.reads import Busy, ReadTimeout

log = logging.getLogger("hashcoop.http")

WORKER_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
HASH_RE = re.compile(r"[0-9a-f]{64}")
MAX_ADDRESS = 100
RESOLUTIONS = ("10s", "5m")

SECURITY_HEADERS = {
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"X-Frame-Options": b"DENY",
}
HTML_CSP = b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass
class Reply:
    body: bytes
    content_type: bytes = b"application/json"
    status: int = 200
    headers: dict = field(default_factory=dict)


def json_reply(value, status: int = 200) -> Reply:
    return Reply(orjson.dumps(value), b"application/json", status)


def error_body(code: str, message: str, status: int) -> bytes:
    return orjson.dumps({"error": {"status": status, "code": code, "message": message}})


# -- input checks (pure) ----------------------------------------------------------------
def check_address(address: str, network) -> str:
    if not address or len(address) > MAX_ADDRESS:
        raise ApiError(400, "bad-address", f"not a {network.name} address: empty or longer than {MAX_ADDRESS} characters")
    try:
        address_to_script(address, network)
    except AddressError as e:
        raise ApiError(400, "bad-address", f"not a {network.name} address: {e}") from None
    return address


def check_worker(worker: str) -> str:
    if not WORKER_RE.fullmatch(worker):
        raise ApiError(400, "bad-worker", "worker names are 1 to 64 characters of A-Z a-z 0-9 _ -")
    return worker


def check_hash(h: str) -> str:
    h = h.lower()
    if not HASH_RE.fullmatch(h):
        raise ApiError(400, "bad-hash", "a block hash is 64 hexadecimal digits")
    return h


def _arg(request, name: str) -> str | None:
    v = request.args.get(name.encode())
    if v is None:
        return None
    try:
        return v[-1].decode()
    except UnicodeDecodeError:
        raise ApiError(400, "bad-parameter", f"{name}: not UTF-8") from None


def int_arg(request, name: str, default: int, lo: int, hi: int) -> int:
    raw = _arg(request, name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ApiError(400, "bad-parameter", f"{name}: must be an integer") from None
    if not lo <= v <= hi:
        raise ApiError(400, "bad-parameter", f"{name}: must be between {lo} and {hi}")
    return v


def float_arg(request, name: str) -> float | None:
    raw = _arg(request, name)
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        raise ApiError(400, "bad-parameter", f"{name}: must be a number") from None
    if not (0 <= v < 1e11):
        raise ApiError(400, "bad-parameter", f"{name}: must be a Unix time in seconds")
    return v


def choice_arg(request, name: str, choices: tuple[str, ...], default: str) -> str:
    raw = _arg(request, name)
    if raw is None:
        return default
    if raw not in choices:
        raise ApiError(400, "bad-parameter", f"{name}: one of {', '.join(choices)}")
    return raw


# -- the application ----------------------------------------------------------------------
class App:
    """Shared by every listener: config, reads, data, live figures, metrics."""

    def __init__(self, *, config, reads, data, live, metrics, static_dir):
        self.config = config
        self.http = config.http
        self.network = config.network
        self.reads = reads
        self.data = data  # PoolData, or None when share accounting ([redis]) is off
        self.live = live
        self.metrics = metrics
        self.pages = pages.Pages(config, static_dir)
        self.cors = set(self.http.cors_origins)
        self.token = self.http.operator_token.encode()
        ttl = self.http.cache_seconds
        self.window_ttl = max(ttl, 15.0)
        # path regex -> (handler, operator only, api)
        self.routes: list[tuple[re.Pattern, object, bool, bool]] = [
            (re.compile(p), h, op, p.startswith("/api/")) for p, h, op in [
                (r"/", self.page_pool, False),
                (r"/miner", self.page_miner_search, False),
                (r"/miner/([^/]+)", self.page_miner, False),
                (r"/blocks", self.page_blocks, False),
                (r"/static/([A-Za-z0-9_.\-]+)", self.static, False),
                (r"/favicon.ico", self.favicon, False),
                (r"/api/v1", self.api_index, False),
                (r"/api/v1/pool", self.api_pool, False),
                (r"/api/v1/pool/hashrate", self.api_pool_hashrate, False),
                (r"/api/v1/blocks", self.api_blocks, False),
                (r"/api/v1/blocks/([^/]+)", self.api_block, False),
                (r"/api/v1/window", self.api_window, False),
                (r"/api/v1/addresses/([^/]+)", self.api_address, False),
                (r"/api/v1/addresses/([^/]+)/hashrate", self.api_address_hashrate, False),
                (r"/api/v1/addresses/([^/]+)/workers/([^/]+)", self.api_worker, False),
                (r"/api/v1/addresses/([^/]+)/workers/([^/]+)/hashrate", self.api_worker_hashrate, False),
                (r"/metrics", self.metrics_page, True),
                (r"/api/v1/operator/status", self.api_operator_status, True),
                (r"/api/v1/operator/sessions", self.api_operator_sessions, True),
                (r"/api/v1/operator/withholding", self.api_operator_withholding, True),
            ]
        ]

    # query parameters each API handler takes; others are refused (400), so a
    # typo is not silently ignored
    params = {
        "api_pool_hashrate": ("resolution", "since"), "api_address_hashrate": ("resolution", "since"),
        "api_worker_hashrate": ("resolution", "since"), "api_blocks": ("limit", "offset"),
        "api_operator_sessions": ("limit", "offset"), "api_operator_withholding": ("limit",),
    }

    # -- dispatch ----------------------------------------------------------------------
    def handle(self, request, operator_site: bool) -> None:
        for k, v in SECURITY_HEADERS.items():
            request.setHeader(k, v)
        try:
            path = unquote(request.path.decode("utf-8"), errors="strict")
        except UnicodeDecodeError:
            return self._send_error(request, ApiError(400, "bad-path", "the path is not UTF-8"), True)
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        route = None
        for rx, handler, operator_only, api in self.routes:
            m = rx.fullmatch(path)
            if m:
                route = (handler, operator_only, api, m.groups())
                break
        is_api = path.startswith("/api/") or path == "/metrics"
        if route is None:
            return self._send_error(request, ApiError(404, "not-found", f"no such path: {path}"), is_api)
        handler, operator_only, api, args = route
        if operator_only and not operator_site:
            if not self.token:
                return self._send_error(request, ApiError(404, "not-found", f"no such path: {path}"), is_api)
            if not self._token_ok(request):
                return self._send_error(request, ApiError(
                    401, "unauthorized", "operator endpoint: send Authorization: Bearer <operator_token>",
                    {b"WWW-Authenticate": b'Bearer realm="hashcoop"'}), True)
        if api and not operator_only:
            self._cors(request)
        method = request.method
        if method == b"OPTIONS" and api and not operator_only:
            request.setResponseCode(204)
            request.setHeader(b"Allow", b"GET, HEAD, OPTIONS")
            request.finish()
            return
        if method not in (b"GET", b"HEAD"):
            return self._send_error(request, ApiError(405, "method-not-allowed", "read-only: GET or HEAD",
                                                      {b"Allow": b"GET, HEAD" + (b", OPTIONS" if api and not operator_only else b"")}),
                                    is_api)
        if api:
            allowed = self.params.get(handler.__name__, ())
            unknown = sorted(k.decode("utf-8", "replace") for k in request.args if k.decode("utf-8", "replace") not in allowed)
            if unknown:
                return self._send_error(request, ApiError(400, "bad-parameter", f"unknown parameter: {', '.join(unknown)}"), True)
        d = defer.maybeDeferred(handler, request, *args)
        d.addCallbacks(self._send, self._failed, callbackArgs=(request,), errbackArgs=(request, is_api))
        d.addErrback(lambda f: log.error("http: %s", f.getTraceback()))

    def _token_ok(self, request) -> bool:
        auth = (request.getHeader(b"authorization") or b"").decode("latin-1")
        scheme, _, given = auth.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token)

    def _cors(self, request) -> None:
        if not self.cors:
            return
        raw = request.getHeader(b"origin")
        if raw is None:
            return
        origin = raw.decode("latin-1")
        if "*" in self.cors:
            request.setHeader(b"Access-Control-Allow-Origin", b"*")
        elif origin in self.cors:
            request.setHeader(b"Access-Control-Allow-Origin", origin.encode())
            request.setHeader(b"Vary", b"Origin")
        else:
            return
        request.setHeader(b"Access-Control-Allow-Methods", b"GET, HEAD, OPTIONS")
        request.setHeader(b"Access-Control-Allow-Headers", b"Content-Type")
        request.setHeader(b"Access-Control-Max-Age", b"600")

    def _send(self, reply: Reply, request) -> None:
        if request.finished or request.channel is None:
            return  # the client went away while we read
        request.setResponseCode(reply.status)
        request.setHeader(b"Content-Type", reply.content_type)
        if reply.content_type.startswith(b"text/html"):
            request.setHeader(b"Content-Security-Policy", HTML_CSP)
        if b"Cache-Control" not in reply.headers:
            request.setHeader(b"Cache-Control", b"no-cache")
        for k, v in reply.headers.items():
            request.setHeader(k, v)
        request.setHeader(b"Content-Length", str(len(reply.body)).encode())
        request.write(reply.body)
        request.finish()

    def _failed(self, f, request, is_api: bool) -> None:
        e = f.value
        if isinstance(e, ApiError):
            err = e
        elif isinstance(e, Busy):
            err = ApiError(503, "busy", "too many requests are being answered; try again shortly", {b"Retry-After": b"2"})
        elif isinstance(e, ReadTimeout):
            err = ApiError(503, "timeout", str(e), {b"Retry-After": b"5"})
        elif _is_store_error(e):
            log.warning("http: store unavailable: %s", e)
            err = ApiError(503, "store-unavailable", f"the accounting store did not answer: {type(e).__name__}",
                           {b"Retry-After": b"5"})
        else:
            log.error("http: %s %s failed: %s", request.method.decode(), request.uri.decode("utf-8", "replace"),
                      f.getTraceback())
            err = ApiError(500, "internal", "internal error (logged)")
        self._send_error(request, err, is_api)

    def _send_error(self, request, err: ApiError, is_api: bool) -> None:
        if is_api:
            reply = Reply(error_body(err.code, err.message, err.status), b"application/json", err.status, dict(err.headers))
        else:
            reply = Reply(self.pages.error(err.status, err.message), b"text/html; charset=utf-8", err.status,
                          dict(err.headers))
        self._send(reply, request)

    # -- reads --------------------------------------------------------------------------
    def _need_data(self):
        if self.data is None:
            raise ApiError(503, "accounting-off", "share accounting is off on this pool ([redis] is not configured)")
        return self.data

    def summary(self) -> defer.Deferred:
        data = self._need_data()
        d = self.reads.get(("summary",), data.summary)
        return d.addCallback(self._with_live)

    def _with_live(self, s: dict) -> dict:
        live = self.live
        return {**s, "pool": live.pool(), "network": live.network(), "stratum": live.connections()}

    def address(self, address: str) -> defer.Deferred:
        data = self._need_data()
        return self.reads.get(("address", address), data.address, address)

    def blocks(self, limit: int, offset: int) -> defer.Deferred:
        data = self._need_data()
        return self.reads.get(("blocks", limit, offset), data.blocks, limit, offset)

    # -- JSON API -------------------------------------------------------------------------
    def api_index(self, request):
        return json_reply({"version": "v1", "pool": self.config.pool.name, "network": self.network.name, "endpoints": [
            "/api/v1/pool", "/api/v1/pool/hashrate", "/api/v1/blocks", "/api/v1/blocks/{hash}", "/api/v1/window",
            "/api/v1/addresses/{address}", "/api/v1/addresses/{address}/hashrate",
            "/api/v1/addresses/{address}/workers/{worker}", "/api/v1/addresses/{address}/workers/{worker}/hashrate",
        ]})

    def api_pool(self, request):
        return self.summary().addCallback(json_reply)

    def _series(self, request, address, worker):
        data = self._need_data()
        res = choice_arg(request, "resolution", RESOLUTIONS, "5m")
        since = float_arg(request, "since")
        # cache on a coarse since, so distinct values cannot defeat the cache
        step = 10 if res == "10s" else 300
        key_since = int(since // step * step) if since is not None else None
        d = self.reads.get(("series", address, worker, res, key_since), data.hashrate, address, worker, res, key_since)
        return d.addCallback(lambda pts: json_reply({"resolution": res, "interval": step, "series": pts}))

    def api_pool_hashrate(self, request):
        return self._series(request, None, None)

    def api_blocks(self, request):
        limit = int_arg(request, "limit", 20, 1, 100)
        offset = int_arg(request, "offset", 0, 0, 1_000_000)
        return self.blocks(limit, offset).addCallback(json_reply)

    def api_block(self, request, h):
        h = check_hash(h)
        data = self._need_data()
        d = self.reads.get(("block", h), data.block, h)
        return d.addCallback(lambda b: json_reply(b) if b is not None else _not_found(f"no block {h} found by this pool"))

    def api_window(self, request):
        data = self._need_data()
        return self.reads.get(("window",), data.window, ttl=self.window_ttl).addCallback(json_reply)

    def api_address(self, request, address):
        address = check_address(address, self.network)
        return self.address(address).addCallback(
            lambda a: json_reply(a) if a is not None else _not_found(f"no shares or payouts for {address}"))

    def api_address_hashrate(self, request, address):
        return self._series(request, check_address(address, self.network), None)

    def api_worker(self, request, address, worker):
        address, worker = check_address(address, self.network), check_worker(worker)
        data = self._need_data()
        d = self.reads.get(("worker", address, worker), data.worker, address, worker)
        return d.addCallback(
            lambda w: json_reply(w) if w is not None else _not_found(f"no worker {worker} for {address}"))

    def api_worker_hashrate(self, request, address, worker):
        return self._series(request, check_address(address, self.network), check_worker(worker))

    # -- operator -------------------------------------------------------------------------------
    def metrics_page(self, request):
        return Reply(generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST.encode())

    def api_operator_status(self, request):
        s = self.live.operator_status()
        s["http"] = {"reads_pending": self.reads.pending, "reads_started": self.reads.reads}
        return json_reply(s)

    def api_operator_sessions(self, request):
        limit = int_arg(request, "limit", 100, 1, 1000)
        offset = int_arg(request, "offset", 0, 0, 10_000_000)
        return json_reply(self.live.sessions(limit, offset))

    def api_operator_withholding(self, request):
        limit = int_arg(request, "limit", 100, 1, 1000)
        data = self._need_data()
        alpha = self.config.accounting.withholding_alpha
        return self.reads.get(("withholding", limit), data.withholding, alpha, limit).addCallback(json_reply)

    # -- pages ----------------------------------------------------------------------------------
    def _html(self, text: bytes, status: int = 200) -> Reply:
        return Reply(text, b"text/html; charset=utf-8", status)

    def page_pool(self, request):
        return self.summary().addCallback(lambda s: self._html(self.pages.pool(s)))

    def page_miner_search(self, request):
        address = (_arg(request, "address") or "").strip()
        if not address:
            return self._html(self.pages.search(None))
        try:
            check_address(address, self.network)
        except ApiError as e:
            return self._html(self.pages.search(e.message, address), 400)
        return Reply(b"", b"text/html; charset=utf-8", 303, {b"Location": b"/miner/" + quote(address).encode()})

    def page_miner(self, request, address):
        try:
            check_address(address, self.network)
        except ApiError as e:
            return self._html(self.pages.search(e.message, address), 400)

        def render(a):
            if a is None:
                return self._html(self.pages.miner_unknown(address), 404)
            return self._html(self.pages.miner(a))

        return self.address(address).addCallback(render)

    def page_blocks(self, request):
        limit = int_arg(request, "limit", 50, 1, 100)
        offset = int_arg(request, "offset", 0, 0, 1_000_000)
        return self.blocks(limit, offset).addCallback(lambda b: self._html(self.pages.blocks(b)))

    def favicon(self, request):
        return self.static(request, "favicon.svg")

    def static(self, request, name):
        found = self.pages.static(name)
        if found is None:
            raise ApiError(404, "not-found", f"no such file: {name}")
        body, ctype = found
        return Reply(body, ctype, 200, {b"Cache-Control": b"public, max-age=300"})


def _not_found(message: str):
    raise ApiError(404, "not-found", message)


def _is_store_error(e: BaseException) -> bool:
    return isinstance(e, (RedisError, OSError))


class Root(Resource):
    """The whole site of one listener."""

    isLeaf = True

    def __init__(self, app: App, operator: bool):
        super().__init__()
        self.app = app
        self.operator = operator

    def render(self, request):
        self.app.handle(request, self.operator)
        return NOT_DONE_YET
