"""Test helpers for the node side: a real JSON-RPC HTTP server that answers
like Bitcoin Core in legacy (JSON-RPC 1.0) mode, and in-memory fakes of
NodeClient / NodeSet driven by a task.Clock."""
from __future__ import annotations

import base64
import dataclasses

import orjson
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from hashcoop.pool.core.btc.hashing import hex_to_hash
from hashcoop.pool.core.template import Template
from hashcoop.pool.rpc import RPCError, RPCTimeout, RPCTransportError
from tests import vectors
from tests.vectors import DIR as VECTORS

CORE = vectors.core()
GBT = CORE["rpc"]["getblocktemplate"]
GBT_NEXT = CORE["rpc"]["getblocktemplate_next"]


class CoreError(Exception):
    """Raise from a handler to answer with a JSON-RPC error object."""

    def __init__(self, code: int, message: str):
        self.code = code
        self.message = message


def legacy_status(code: int) -> int:
    """The HTTP status Bitcoin Core uses with an error object in legacy mode."""
    return {-32600: 400, -32601: 404}.get(code, 500)


class _Tracking(WrappingFactory):
    """Keeps the open server-side connections so tests can close them."""

    def unregisterProtocol(self, p):
        super().unregisterProtocol(p)
        for d in list(getattr(p, "_lost_waiters", [])):
            d.callback(None)


class FakeCore(Resource):
    """POST / JSON-RPC. ``handlers[method](*params)`` returns the result,
    raises CoreError, or returns a Deferred (answered when it fires; it is
    cancelled if the client goes away). ``raw`` overrides the next answers
    with (status, body) pairs. ``auth`` is "user:password" or None."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.handlers: dict = {}
        self.auth: str | None = None
        self.raw: list[tuple[int, bytes]] = []
        self.requests: list[tuple[str, list, bytes | None]] = []
        self.pending: list[defer.Deferred] = []

    def render_POST(self, request):
        auth = request.getHeader(b"authorization")
        self.requests.append(("?", [], auth))
        if self.auth is not None:
            want = b"Basic " + base64.b64encode(self.auth.encode())
            if auth != want:
                request.setResponseCode(401)
                request.setHeader(b"WWW-Authenticate", b'Basic realm="jsonrpc"')
                return b""
        if self.raw:
            status, body = self.raw.pop(0)
            request.setResponseCode(status)
            return body
        req = orjson.loads(request.content.read())
        method, params, rid = req["method"], req.get("params", []), req.get("id")
        self.requests[-1] = (method, params, auth)
        handler = self.handlers.get(method)
        if handler is None:
            return self._error(request, rid, -32601, "Method not found")
        try:
            result = handler(*params)
        except CoreError as e:
            return self._error(request, rid, e.code, e.message)
        if isinstance(result, defer.Deferred):
            self.pending.append(result)

            def answer(value):
                if not finished.called:
                    request.setHeader(b"Content-Type", b"application/json")
                    request.write(orjson.dumps({"result": value, "error": None, "id": rid}))
                    request.finish()

            def answer_error(f):
                if f.check(CoreError) and not finished.called:
                    request.write(self._error(request, rid, f.value.code, f.value.message))
                    request.finish()

            finished = request.notifyFinish()
            finished.addErrback(lambda _: result.cancel())
            result.addCallbacks(answer, answer_error)
            result.addErrback(lambda _: None)
            return NOT_DONE_YET
        request.setHeader(b"Content-Type", b"application/json")
        return orjson.dumps({"result": result, "error": None, "id": rid})

    def _error(self, request, rid, code, message) -> bytes:
        request.setResponseCode(legacy_status(code))
        request.setHeader(b"Content-Type", b"application/json")
        return orjson.dumps({"result": None, "error": {"code": code, "message": message}, "id": rid})


class FakeCoreServer:
    """A FakeCore listening on 127.0.0.1 with a real socket."""

    def __init__(self, reactor, core: FakeCore | None = None, port: int = 0):
        self.reactor = reactor
        self.core = core or FakeCore()
        self.factory = _Tracking(Site(self.core, reactor=reactor))
        self.port = reactor.listenTCP(port, self.factory, interface="127.0.0.1")
        self.number = self.port.getHost().port
        self.url = f"http://127.0.0.1:{self.number}/"
        self.stopped = False

    def stop(self) -> defer.Deferred:
        """Stop listening and close every server-side connection."""
        self.stopped = True
        waits = [defer.maybeDeferred(self.port.stopListening)]
        for p in list(self.factory.protocols):
            d = defer.Deferred()
            p._lost_waiters = getattr(p, "_lost_waiters", []) + [d]
            waits.append(d)
            p.transport.abortConnection()
        return defer.gatherResults(waits)


def closed_port(reactor) -> int:
    """A TCP port on 127.0.0.1 where nothing listens (bound, then released)."""
    p = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    n = p.getHost().port
    p.stopListening()
    return n


# -- in-memory fakes ------------------------------------------------------------


def template(height: int = 103, prev: str | None = None, node: str = "node0", lp: str | None = "lp", **changes) -> Template:
    """The recorded Core template, moved to ``height`` on block ``prev``."""
    t = Template.from_gbt(GBT, node=node)
    prev = prev or f"{height - 1:064x}"
    return dataclasses.replace(t, height=height, prevhash=hex_to_hash(prev), longpollid=lp, **changes)


def tip(n: int) -> str:
    """A recognisable block hash (display hex) for block number n."""
    return f"{n:064x}"


class FakeClient:
    """Stands in for NodeClient: every call returns a Deferred the test
    resolves, or a scripted answer from ``answers[method]`` (a value, an
    exception instance, or a callable(*params))."""

    def __init__(self, name: str):
        self.name = name
        self.calls: list[tuple[str, tuple, float | None]] = []
        self.waiting: list[tuple[str, tuple, defer.Deferred]] = []
        self.answers: dict = {}
        self.closed = False

    def call(self, method, *params, timeout=None):
        self.calls.append((method, params, timeout))
        if method in self.answers:
            a = self.answers[method]
            if callable(a) and not isinstance(a, Exception):
                a = a(*params)
            if isinstance(a, defer.Deferred):
                return a
            return defer.fail(a) if isinstance(a, Exception) else defer.succeed(a)
        d = defer.Deferred()
        self.waiting.append((method, params, d))
        return d

    def close(self):
        self.closed = True
        return defer.succeed(None)


def down(name: str = "node0") -> RPCTransportError:
    return RPCTransportError("connection refused", node=name)


def timeout(name: str = "node0") -> RPCTimeout:
    return RPCTimeout("no answer", node=name)


class FakeNodeSet:
    """The parts of NodeSet WorkSource and the pollers use, with Deferreds
    the test fires by hand."""

    def __init__(self, names=("node0",)):
        self.names = list(names)
        self.healthy = {n: True for n in names}
        self.template_calls: list[defer.Deferred] = []
        self.min_heights: list[int] = []  # get_template's min_height, per call
        self.from_calls: list[tuple[str, str | None, float | None, defer.Deferred]] = []
        self.best_calls: list[defer.Deferred] = []
        self.submit_timeout = 30.0

    def is_healthy(self, name):
        return self.healthy[name]

    def get_template(self, longpollid=None, timeout=None, min_height=0):
        d = defer.Deferred()
        self.template_calls.append(d)
        self.min_heights.append(min_height)
        return d

    def get_template_from(self, name, longpollid=None, timeout=None):
        d = defer.Deferred()
        self.from_calls.append((name, longpollid, timeout, d))
        return d

    def best_block_hash(self, timeout=None):
        d = defer.Deferred()
        self.best_calls.append(d)
        return d

    def pending_templates(self):
        return [d for d in self.template_calls if not d.called]


__all__ = [
    "CORE", "GBT", "GBT_NEXT", "VECTORS", "CoreError", "FakeCore", "FakeCoreServer", "FakeClient", "FakeNodeSet",
    "RPCError", "closed_port", "down", "template", "timeout", "tip",
]


class FakeChain:
    """A tiny chain behind a FakeCore: getblocktemplate with Core-style
    longpoll (held until the tip changes), getbestblockhash, getblockcount,
    getblockhash, getblockheader and submitblock (which connects the block).
    Block hashes are made up; only the bookkeeping matters."""

    def __init__(self, core: FakeCore, height: int = 102):
        self.core = core
        self.hashes = [tip(i) for i in range(height + 1)]
        self.mempool_counter = 1
        self.waiting: list[defer.Deferred] = []
        core.handlers.update(
            getblocktemplate=self.getblocktemplate,
            getbestblockhash=lambda: self.hashes[-1],
            getblockcount=lambda: len(self.hashes) - 1,
            getblockhash=self.getblockhash,
            getblockheader=self.getblockheader,
            submitblock=self.submitblock,
        )

    @property
    def longpollid(self) -> str:
        return f"{self.hashes[-1]}{self.mempool_counter}"

    def template(self) -> dict:
        return dict(GBT, previousblockhash=self.hashes[-1], height=len(self.hashes), longpollid=self.longpollid)

    def getblocktemplate(self, params):
        if "segwit" not in params.get("rules", []):
            raise CoreError(-8, CORE["rpc"]["getblocktemplate_no_segwit_rule"]["error"]["message"])
        lp = params.get("longpollid")
        if lp is not None and lp == self.longpollid:
            d = defer.Deferred()
            self.waiting.append(d)
            return d.addCallback(lambda _: self.template())
        return self.template()

    def getblockhash(self, height):
        if not 0 <= height < len(self.hashes):
            raise CoreError(-8, "Block height out of range")
        return self.hashes[height]

    def getblockheader(self, blockhash, verbose=True):
        if blockhash not in self.hashes:
            raise CoreError(-5, "Block not found")
        h = self.hashes.index(blockhash)
        return {"hash": blockhash, "height": h, "confirmations": len(self.hashes) - h}

    def submitblock(self, block_hex):
        from hashcoop.pool.core.btc.block import parse_block
        from hashcoop.pool.core.btc.hashing import hash_to_hex, sha256d

        header = parse_block(bytes.fromhex(block_hex))[0]
        h = hash_to_hex(sha256d(header))
        if h in self.hashes:
            return "duplicate"
        self.mine(h)
        return None

    def mine(self, blockhash: str | None = None) -> str:
        """Connect a new block; wakes the longpolls."""
        self.hashes.append(blockhash or tip(len(self.hashes) + 10_000))
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            if not d.called:
                d.callback(None)
        return self.hashes[-1]
