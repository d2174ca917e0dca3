"""The devnode's adapters: JSON-RPC over HTTP (framed as Core frames it,
see .http) with Core's authentication, getblocktemplate longpoll, the ZMQ hashblock
publisher, -blocknotify, the synthetic mempool and auto-mining loops, and
:class:`DevNode`, which wires them around a :class:`~.chain.Chain`.

Nothing here imports the global reactor: :class:`DevNode` is handed one.

HTTP behaviour follows Core's httprpc.cpp: POST only (405 otherwise),
``/`` and ``/wallet/<name>`` (404 otherwise), HTTP Basic auth against the
cookie or rpcuser/rpcpassword (401 with ``WWW-Authenticate`` and an empty
body; a wrong password is answered after 250 ms), JSON-RPC 1.0 requests
answered the legacy way (``result``, ``error`` and ``id`` always present;
errors as HTTP 500, or 400 for an invalid request and 404 for an unknown
method), JSON-RPC 2.0 requests the 2.0 way (HTTP 200, no ``error`` on
success, notifications answered 204), and batches (always 200).
"""
from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import orjson
import zmq
from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import IReactorTime

from hashcoop.pool.core.btc.address import NETWORKS, script_to_address
from hashcoop.pool.tools.devnode.chain import Chain, TipChanged
from hashcoop.pool.tools.devnode.consensus import REGTEST_BITS, hash160
from hashcoop.pool.tools.devnode.http import SERVER_TIMEOUT, HttpRequest, HttpResponse, RpcHttpFactory
from hashcoop.pool.tools.devnode.mempool import Faucet, MempoolReject, p2wpkh_script
from hashcoop.pool.tools.devnode.rpc import (
    RPC_CLIENT_NOT_CONNECTED,
    RPC_INVALID_REQUEST,
    RPC_METHOD_NOT_FOUND,
    RPC_MISC_ERROR,
    RPC_PARSE_ERROR,
    TEMPLATE_REFRESH_SECONDS,
    Rpc,
    RpcError,
    dumps,
)
from hashcoop.pool.tools.devnode.store import JOURNAL_NAME, ChainJournal
from hashcoop.pool.tools.devnode.wallet import register_wallet_rpcs, wallet_from_path

log = logging.getLogger("hashcoop.devnode")

WWW_AUTH_HEADER_DATA = b'Basic realm="jsonrpc"'
COOKIE_USER = "__cookie__"
AUTH_FAILURE_DELAY = 0.25
LONGPOLL_FIRST_CHECK = 60.0  # Core checks the mempool after a minute,
LONGPOLL_INTERVAL = 10.0  # then every ten seconds
# Where --auto-mine pays: a key nobody in the pool holds ("the rest of the network").
OTHER_MINER_SCRIPT = p2wpkh_script(hash160(b"hashcoop devnode: the rest of the network"))


# --------------------------------------------------------------------------
# authentication


def write_cookie(path: Path) -> str:
    """Write Core's ``__cookie__:<64 hex>`` file (owner-only, via a temp
    file and rename, as Core does); return the password."""
    password = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{COOKIE_USER}:{password}")
    os.replace(tmp, path)
    return password


def delete_cookie(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class Authenticator:
    """HTTP Basic credentials the node accepts (cookie and/or rpcuser)."""

    def __init__(self, credentials: list[tuple[str, str]]):
        self.credentials = [f"{u}:{p}".encode() for u, p in credentials]

    def check(self, header: bytes | None) -> bool:
        if not header or not header.startswith(b"Basic "):
            return False
        try:
            userpass = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        if b":" not in userpass:
            return False
        ok = False
        for cred in self.credentials:
            ok |= hmac.compare_digest(userpass, cred)
        return ok


# --------------------------------------------------------------------------
# longpoll


class LongPollHub:
    """getblocktemplate longpoll waits, like Core: answer as soon as the tip
    is no longer the watched one; check the mempool counter after
    ``first_check`` seconds and then every ``interval`` seconds."""

    def __init__(self, chain: Chain, clock: IReactorTime, first_check: float = LONGPOLL_FIRST_CHECK, interval: float = LONGPOLL_INTERVAL):
        self.chain = chain
        self.clock = clock
        self.first_check = first_check
        self.interval = interval
        self._waiters: list[_Waiter] = []
        chain.listeners.append(self._on_event)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def wait(self, watched: bytes, counter: int) -> defer.Deferred:
        if self.chain.tip.hash != watched:
            return defer.succeed(None)
        w = _Waiter(watched, counter)
        w.deferred = defer.Deferred(lambda _: self._drop(w))
        w.call = self.clock.callLater(self.first_check, self._check, w)
        self._waiters.append(w)
        return w.deferred

    def _drop(self, w: "_Waiter") -> None:
        if w in self._waiters:
            self._waiters.remove(w)
        if w.call is not None and w.call.active():
            w.call.cancel()

    def _fire(self, w: "_Waiter") -> None:
        self._drop(w)
        if not w.deferred.called:
            w.deferred.callback(None)

    def _check(self, w: "_Waiter") -> None:
        w.call = None
        if self.chain.mempool.transactions_updated != w.counter or self.chain.tip.hash != w.watched:
            self._fire(w)
        else:
            w.call = self.clock.callLater(self.interval, self._check, w)

    def _on_event(self, event: object) -> None:
        if isinstance(event, TipChanged) and self._waiters:
            # answer after the chain finished its update, not from inside it
            self.clock.callLater(0, self._wake_tip_waiters)

    def _wake_tip_waiters(self) -> None:
        for w in list(self._waiters):
            if self.chain.tip.hash != w.watched:
                self._fire(w)

    def shutdown(self) -> None:
        for w in list(self._waiters):
            self._drop(w)
            if not w.deferred.called:
                w.deferred.errback(RpcError(RPC_CLIENT_NOT_CONNECTED, "Shutting down"))


class _Waiter:
    """One waiting longpoll: what it watches, its Deferred, its next check."""

    __slots__ = ("watched", "counter", "deferred", "call")

    def __init__(self, watched: bytes, counter: int):
        self.watched = watched
        self.counter = counter
        self.deferred: defer.Deferred | None = None
        self.call = None


# --------------------------------------------------------------------------
# JSON-RPC framing


@dataclass
class _Request:
    method: str = ""
    params: Any = None
    has_id: bool = True  # Core's default id is JSON null
    id: Any = None
    v2: bool = False
    wallet: str | None = None  # from the /wallet/<name> URI path

    @property
    def notification(self) -> bool:
        return self.v2 and not self.has_id


def _parse_request(value: Any, req: _Request) -> None:
    """JSONRPCRequest::parse, filling ``req`` as far as it gets."""
    if not isinstance(value, dict):
        raise RpcError(RPC_INVALID_REQUEST, "Invalid Request object")
    req.has_id = "id" in value
    req.id = value.get("id")
    req.v2 = False
    version = value.get("jsonrpc")
    if version is not None:
        if not isinstance(version, str):
            raise RpcError(RPC_INVALID_REQUEST, "jsonrpc field must be a string")
        if version == "2.0":
            req.v2 = True
        elif version != "1.0":
            raise RpcError(RPC_INVALID_REQUEST, "JSON-RPC version not supported")
    method = value.get("method")
    if method is None:
        raise RpcError(RPC_INVALID_REQUEST, "Missing method")
    if not isinstance(method, str):
        raise RpcError(RPC_INVALID_REQUEST, "Method must be a string")
    req.method = method
    params = value.get("params")
    if params is None:
        params = []
    elif not isinstance(params, (list, dict)):
        raise RpcError(RPC_INVALID_REQUEST, "Params must be an array or object")
    req.params = params


def _reply(result: Any, error: RpcError | None, req: _Request) -> dict:
    """JSONRPCReplyObj."""
    out: dict[str, Any] = {}
    if req.v2:
        out["jsonrpc"] = "2.0"
    if error is None:
        out["result"] = result
        if not req.v2:
            out["error"] = None
    else:
        if not req.v2:
            out["result"] = None
        out["error"] = error.to_json()
    if req.has_id:
        out["id"] = req.id
    return out


def _error_status(error: RpcError) -> int:
    if error.code == RPC_INVALID_REQUEST:
        return 400
    if error.code == RPC_METHOD_NOT_FOUND:
        return 404
    return 500


class JsonRpcDispatcher:
    """Turns a request body into (HTTP status, response body or None),
    running methods on ``rpc`` and longpoll waits on ``hub``."""

    def __init__(self, rpc: Rpc, hub: LongPollHub | None):
        self.rpc = rpc
        self.hub = hub

    def _run(self, req: _Request) -> defer.Deferred:
        """Deferred result of one call; fails with RpcError."""
        try:
            if req.method == "getblocktemplate" and self.hub is not None:
                spec = self.rpc.longpoll_request(req.params)
                if spec is not None:
                    d = self.hub.wait(*spec)
                    d.addCallback(lambda _: self._execute(req))
                    return d
            return defer.succeed(self._execute(req))
        except RpcError:
            return defer.fail()

    def _execute(self, req: _Request) -> Any:
        try:
            return self.rpc.execute(req.method, req.params, uri_wallet=req.wallet)
        except RpcError:
            raise
        except Exception as e:  # a bug: answer like Core answers a std::exception
            log.exception("RPC %s failed", req.method)
            raise RpcError(RPC_MISC_ERROR, str(e)) from e

    def _exec_one(self, req: _Request, catch: bool) -> defer.Deferred:
        """Deferred reply object. With ``catch`` (JSON-RPC 2.0, batches) an
        RpcError becomes an error reply; otherwise it fails the Deferred."""
        d = self._run(req)
        d.addCallback(lambda result: _reply(result, None, req))
        if catch:
            def as_reply(f):
                f.trap(RpcError)
                return _reply(None, f.value, req)

            d.addErrback(as_reply)
        return d

    def handle(self, body: bytes, wallet: str | None = None) -> defer.Deferred:
        req = _Request(wallet=wallet)
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            return defer.succeed(self._error(RpcError(RPC_PARSE_ERROR, "Parse error"), req))
        if isinstance(value, dict):
            try:
                _parse_request(value, req)
            except RpcError as e:
                return defer.succeed(self._error(e, req))
            d = self._exec_one(req, catch=req.v2)

            def done(reply: dict) -> tuple[int, bytes | None]:
                if req.notification:
                    return 204, None
                return 200, dumps(reply) + b"\n"

            def legacy_error(f):
                f.trap(RpcError)
                return self._error(f.value, req)

            d.addCallback(done)
            d.addErrback(legacy_error)
            return d
        if isinstance(value, list):
            calls: list[defer.Deferred] = []
            answered: list[bool] = []
            shared = _Request()  # Core reuses one request object across a batch
            for item in value:
                try:
                    _parse_request(item, shared)
                except RpcError as e:
                    calls.append(defer.succeed(_reply(None, e, shared)))
                    answered.append(not shared.notification)
                    continue
                one = _Request(shared.method, shared.params, shared.has_id, shared.id, shared.v2, wallet)
                calls.append(self._exec_one(one, catch=True))
                answered.append(not one.notification)

            def gathered(results: list) -> tuple[int, bytes | None]:
                replies = [r for (_, r), keep in zip(results, answered) if keep]
                if not replies and value:
                    return 204, None
                return 200, dumps(replies) + b"\n"

            return defer.DeferredList(calls, consumeErrors=True).addCallback(gathered)
        return defer.succeed(self._error(RpcError(RPC_PARSE_ERROR, "Top-level object parse error"), req))

    @staticmethod
    def _error(error: RpcError, req: _Request) -> tuple[int, bytes]:
        return _error_status(error), dumps(_reply(None, error, req)) + b"\n"


class RpcHttpHandler:
    """The JSON-RPC endpoint behind the HTTP framing (.http): Core's
    HTTPReq_JSONRPC. ``/`` exactly and ``/wallet/<name>`` (404 otherwise,
    a query string included), POST only (405), then authentication."""

    def __init__(self, dispatcher: JsonRpcDispatcher, auth: Authenticator, clock: IReactorTime):
        self.dispatcher = dispatcher
        self.auth = auth
        self.clock = clock

    def __call__(self, request: HttpRequest) -> HttpResponse | defer.Deferred:
        target = request.target
        if target != b"/" and not target.startswith(b"/wallet/"):
            return HttpResponse(404)
        if request.method != b"POST":
            return HttpResponse(405, body=b"JSONRPC server handles only POST requests")
        header = request.header(b"authorization")
        if header is None:
            return UNAUTHORIZED
        if not self.auth.check(header):
            log.warning("incorrect RPC password attempt")
            return task.deferLater(self.clock, AUTH_FAILURE_DELAY, lambda: UNAUTHORIZED)
        d = self.dispatcher.handle(request.body, wallet_from_path(target))

        def answer(result: tuple[int, bytes | None]) -> HttpResponse:
            status, payload = result
            if payload is None:
                return HttpResponse(status)
            return HttpResponse(status, [(b"Content-Type", b"application/json")], payload)

        def failed(f):
            if f.check(defer.CancelledError):
                return f
            log.error("RPC request failed: %s", f.getTraceback())
            return HttpResponse(500)

        return d.addCallbacks(answer, failed)


UNAUTHORIZED = HttpResponse(401, [(b"WWW-Authenticate", WWW_AUTH_HEADER_DATA)])


# --------------------------------------------------------------------------
# notifications


class ZmqHashblockPublisher:
    """``-zmqpubhashblock``: [b"hashblock", 32-byte hash in display order,
    4-byte little-endian sequence] on every new tip that connected blocks
    (not on invalidateblock), like Core's CZMQPublishHashBlockNotifier.
    Sends never block: a full queue drops the message, as ZMQ PUB does."""

    def __init__(self, endpoint: str, hwm: int = 1000):
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUB)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.TCP_KEEPALIVE, 1)
        self.socket.bind(endpoint)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)  # the real port when bound to tcp://host:*
        self.sequence = 0

    def attach(self, chain: Chain) -> None:
        chain.listeners.append(self._on_event)

    def _on_event(self, event: object) -> None:
        if isinstance(event, TipChanged) and event.connected:
            self.publish(event.tip.hash[::-1])

    def publish(self, block_hash_display: bytes) -> None:
        try:
            self.socket.send_multipart([b"hashblock", block_hash_display, struct.pack("<I", self.sequence)], flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("zmq hashblock queue full; notification dropped")
        self.sequence = (self.sequence + 1) & 0xFFFFFFFF

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


class _CommandProtocol(protocol.ProcessProtocol):
    def __init__(self, command: str):
        self.command = command

    def processEnded(self, reason) -> None:
        code = getattr(reason.value, "exitCode", 0)
        if code:
            log.warning("-blocknotify command %r exited with %s", self.command, code)


class BlockNotifier:
    """``-blocknotify``: run the command through /bin/sh with ``%s``
    replaced by the new tip's hash, on every tip change, without waiting."""

    def __init__(self, reactor, command: str):
        self.reactor = reactor
        self.command = command

    def attach(self, chain: Chain) -> None:
        chain.listeners.append(self._on_event)

    def _on_event(self, event: object) -> None:
        if isinstance(event, TipChanged):
            cmd = self.command.replace("%s", event.tip.hash_hex)
            self.reactor.spawnProcess(_CommandProtocol(cmd), "/bin/sh", ["/bin/sh", "-c", cmd], env=os.environ)


# --------------------------------------------------------------------------
# the node


@dataclass
class DevNodeOptions:
    rpcbind: str = "127.0.0.1"
    rpcport: int = 18443
    datadir: str = "./data/devnode"
    rpcuser: str | None = None
    rpcpassword: str | None = None
    zmqpubhashblock: str | None = None
    blocknotify: str | None = None
    bits: int = REGTEST_BITS
    initial_blocks: int = 110
    mempool_rate: float = 6.0
    auto_mine: float = 0.0
    persist: bool = False
    longpoll_first_check: float = LONGPOLL_FIRST_CHECK
    longpoll_interval: float = LONGPOLL_INTERVAL
    seed: int = 0xB17C01
    fallbackfee: int = 0  # sat/kvB for wallets when a call gives no fee rate (Core's -fallbackfee, 0 = disabled)
    rpcservertimeout: float = SERVER_TIMEOUT  # seconds an idle RPC connection stays open (Core's -rpcservertimeout)


class DevNode:
    """A running stand-in node: chain + RPC server + notifications + loops.

    ``reactor`` provides TCP, time and processes. ``on_stop_request`` is
    called when a client sends the ``stop`` RPC (the CLI stops the reactor).
    """

    def __init__(self, reactor, options: DevNodeOptions, *, clock: Callable[[], float] | None = None, on_stop_request: Callable[[], None] | None = None):
        self.reactor = reactor
        self.options = options
        self.network = NETWORKS["regtest"]
        self.clock = clock or reactor.seconds
        self.on_stop_request = on_stop_request
        # --bits takes effect after the initial blocks, which stay easy
        self.chain = Chain(clock=self.clock, bits=options.bits, bits_from_height=options.initial_blocks + 1)
        self.faucet = Faucet(seed=options.seed)
        self.regtest_dir = Path(options.datadir) / "regtest"
        self.cookie_path: Path | None = None
        self.journal: ChainJournal | None = None
        self.rpc: Rpc | None = None
        self.hub: LongPollHub | None = None
        self.zmq: ZmqHashblockPublisher | None = None
        self.port = None
        self._loops: list[task.LoopingCall] = []
        self._stopped = False

    @property
    def faucet_address(self) -> str:
        return script_to_address(self.faucet.mining_script, self.network)

    @property
    def rpc_port(self) -> int:
        return self.port.getHost().port

    @property
    def url(self) -> str:
        return f"http://{self.options.rpcbind}:{self.rpc_port}/"

    def prepare_chain(self) -> None:
        """Load the journal (--persist) and mine the initial blocks."""
        opts = self.options
        if opts.persist:
            self.journal = ChainJournal(self.regtest_dir / JOURNAL_NAME)
            n = self.journal.replay(self.chain)
            if n:
                log.info("reloaded %d journal records: height %d", n, self.chain.height)
            self.journal.attach(self.chain)
        missing = opts.initial_blocks - self.chain.height
        if missing > 0:
            self.chain.generate(self.faucet.mining_script, missing)
            log.info("mined %d initial blocks to the faucet %s", missing, self.faucet_address)

    def start(self) -> None:
        """Build the chain, listen, and start notifications and loops."""
        opts = self.options
        self.prepare_chain()
        # a short longpoll mempool wait must see new transactions when it wakes
        refresh = min(TEMPLATE_REFRESH_SECONDS, opts.longpoll_first_check)
        self.rpc = Rpc(self.chain, network=self.network, clock=self.clock, on_stop=self._stop_requested, template_refresh=refresh)
        self.wallets = register_wallet_rpcs(self.rpc, self.regtest_dir / "wallets", fallback_fee=opts.fallbackfee)
        self.hub = LongPollHub(self.chain, self.reactor, opts.longpoll_first_check, opts.longpoll_interval)
        credentials = []
        if opts.rpcpassword:
            credentials.append((opts.rpcuser or "", opts.rpcpassword))
        else:
            self.cookie_path = self.regtest_dir / ".cookie"
            credentials.append((COOKIE_USER, write_cookie(self.cookie_path)))
        handler = RpcHttpHandler(JsonRpcDispatcher(self.rpc, self.hub), Authenticator(credentials), self.reactor)
        self.port = self.reactor.listenTCP(opts.rpcport, RpcHttpFactory(handler, self.reactor, opts.rpcservertimeout), interface=opts.rpcbind)
        if opts.zmqpubhashblock:
            self.zmq = ZmqHashblockPublisher(opts.zmqpubhashblock)
            self.zmq.attach(self.chain)
        if opts.blocknotify:
            BlockNotifier(self.reactor, opts.blocknotify).attach(self.chain)
        if opts.mempool_rate > 0:
            self._start_loop(self.add_synthetic_tx, 60.0 / opts.mempool_rate)
        if opts.auto_mine > 0:
            self._start_loop(self.mine_other_block, opts.auto_mine)
        log.info("devnode listening on %s (height %d)", self.url, self.chain.height)

    def _start_loop(self, fn: Callable[[], None], interval: float) -> None:
        loop = task.LoopingCall(fn)
        loop.clock = self.reactor
        loop.start(interval, now=False).addErrback(lambda f: log.error("loop %s failed: %s", fn.__name__, f.getTraceback()))
        self._loops.append(loop)

    def ready_info(self) -> dict:
        """What --print-ready prints."""
        return {
            "ready": True,
            "rpc_url": self.url,
            "rpcport": self.rpc_port,
            "cookie": str(self.cookie_path.resolve()) if self.cookie_path else None,
            "zmqpubhashblock": self.zmq.endpoint if self.zmq else None,
            "height": self.chain.height,
            "faucet_address": self.faucet_address,
            "auto_mine_address": script_to_address(OTHER_MINER_SCRIPT, self.network),
            "pid": os.getpid(),
        }

    def add_synthetic_tx(self) -> bytes | None:
        """One synthetic transaction from the faucet into the mempool."""
        chain = self.chain
        coins = self.faucet.spendable(chain.utxos, chain.mempool, chain.next_height)
        tx = self.faucet.make_tx(coins, locktime=chain.height)
        if tx is None:
            log.debug("faucet has nothing spendable")
            return None
        try:
            chain.accept_to_mempool(tx)
        except MempoolReject as e:
            log.warning("synthetic transaction refused: %s", e.reason)
            return None
        return tx.txid

    def mine_other_block(self) -> None:
        """--auto-mine: a block by 'the rest of the network'."""
        hashes = self.chain.generate(OTHER_MINER_SCRIPT, 1)
        if hashes:
            log.info("auto-mined block %d %s", self.chain.height, hashes[0][::-1].hex())

    def _stop_requested(self) -> None:
        if self.on_stop_request is not None:
            self.reactor.callLater(0.05, self.on_stop_request)

    def stop(self) -> defer.Deferred:
        """Stop loops and listeners, drop the cookie, close the journal."""
        if self._stopped:
            return defer.succeed(None)
        self._stopped = True
        for loop in self._loops:
            if loop.running:
                loop.stop()
        if self.hub is not None:
            self.hub.shutdown()
        if self.zmq is not None:
            self.zmq.close()
        if self.cookie_path is not None:
            delete_cookie(self.cookie_path)
        if self.journal is not None:
            self.journal.close()
        if self.port is not None:
            return defer.maybeDeferred(self.port.stopListening)
        return defer.succeed(None)

