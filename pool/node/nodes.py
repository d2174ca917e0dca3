"""Several nodes behind one interface: template failover, calls to any or
all of them, and submitblock to every node at once.

Health here means "the last call this set made to the node worked". Nodes
are tried healthy-first in configuration order, so the first configured
node serves templates whenever it can and is not behind (a template below
the height the caller asks for sends the request on to the next node). A
node marked down is still tried when every healthy one failed, and it is
probed in the background (with ``getblocktemplate``, the call this set
exists for) at most every ``probe_interval`` seconds, so it is preferred
again soon after it recovers, without ever delaying a template fetch on a
dead node.

``NodeSet`` is a ``Service`` only so that stopping it closes every client's
connections: add it to the service tree before the services using it, so it
stops after them.
"""
from __future__ import annotations

import logging

from twisted.application.service import Service
from twisted.internet import defer

from hashcoop.pool.core.btc.address import Network
from hashcoop.pool.core.template import Template, TemplateError
from hashcoop.pool.rpc import NodeClient, RPCError, RPCTimeout, RPCTransportError

log = logging.getLogger("hashcoop.node")

# RPC error codes that mean "this node cannot answer now", not "the answer is
# no": RPC_IN_WARMUP, RPC_CLIENT_IN_INITIAL_DOWNLOAD, RPC_CLIENT_NOT_CONNECTED.
NODE_NOT_READY_CODES = frozenset({-28, -10, -9})

DEFAULT_SUBMIT_TIMEOUT = 30.0


class NoNodeAvailable(RPCTransportError):
    """Every node failed; ``errors`` maps node name to its error."""

    def __init__(self, method: str, errors: dict[str, Exception]):
        detail = "; ".join(f"{n}: {e}" for n, e in errors.items()) or "no nodes configured"
        super().__init__(f"no node could answer: {detail}", method=method)
        self.errors = errors


async def gather(ds: list[defer.Deferred]) -> list:
    """``gatherResults`` that fails with the first error itself (a
    cancellation stays a CancelledError) instead of a FirstError."""
    try:
        return await defer.gatherResults(ds, consumeErrors=True)
    except defer.FirstError as e:
        e.subFailure.raiseException()


def is_node_failure(err: BaseException) -> bool:
    """True when ``err`` says the node is unusable (so another node should be
    asked), False when it is the node's real answer (e.g. height out of
    range)."""
    if isinstance(err, RPCTransportError):
        return True
    return isinstance(err, RPCError) and err.code in NODE_NOT_READY_CODES


class NodeSet(Service):
    def __init__(
        self,
        reactor,
        clients: list[NodeClient],
        network: Network,
        *,
        submit_timeout: float = DEFAULT_SUBMIT_TIMEOUT,
        probe_interval: float = 10.0,
        metrics=None,
    ):
        if not clients:
            raise ValueError("a NodeSet needs at least one node")
        names = [c.name for c in clients]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique: {names}")
        self.reactor = reactor
        self.clients = list(clients)
        self.network = network
        self.submit_timeout = submit_timeout
        self.probe_interval = probe_interval
        self.metrics = metrics
        self._healthy: dict[str, bool] = {c.name: True for c in clients}
        self._last_probe: dict[str, float] = {c.name: float("-inf") for c in clients}
        self._probes: dict[str, defer.Deferred] = {}
        self._closed = False
        self._up_listeners: list = []

    # -- health ------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.clients]

    def client(self, name: str) -> NodeClient:
        for c in self.clients:
            if c.name == name:
                return c
        raise KeyError(name)

    def is_healthy(self, name: str) -> bool:
        return self._healthy[name]

    def healthy_names(self) -> list[str]:
        return [c.name for c in self.clients if self._healthy[c.name]]

    def on_node_up(self, listener) -> None:
        """``listener(name)`` is called (on the reactor) each time a node
        marked down answers again."""
        self._up_listeners.append(listener)

    def remove_on_node_up(self, listener) -> None:
        if listener in self._up_listeners:
            self._up_listeners.remove(listener)

    def _mark(self, name: str, ok: bool, err: BaseException | None = None) -> None:
        if self._healthy[name] == ok:
            return
        self._healthy[name] = ok
        if ok:
            log.info("node %s is usable again", name)
            for listener in list(self._up_listeners):
                try:
                    listener(name)
                except Exception:
                    log.exception("node-up listener failed")
        else:
            log.warning("node %s marked down: %s", name, err)
            self._last_probe[name] = self.reactor.seconds()

    def _order(self) -> list[NodeClient]:
        """Healthy nodes in config order, then the others (last resort).
        Starts a background probe of down nodes that are due one."""
        now = self.reactor.seconds()
        for c in self.clients:
            if not self._healthy[c.name] and c.name not in self._probes and now - self._last_probe[c.name] >= self.probe_interval:
                self._probe(c)
        return [c for c in self.clients if self._healthy[c.name]] + [c for c in self.clients if not self._healthy[c.name]]

    def _probe(self, client: NodeClient) -> None:
        if self._closed:
            return
        self._last_probe[client.name] = self.reactor.seconds()
        d = self._gbt(client)
        self._probes[client.name] = d

        def ok(_):
            self._mark(client.name, True)

        def failed(f):
            if not f.check(defer.CancelledError):
                log.debug("probe of %s failed: %s", client.name, f.value)

        d.addCallbacks(ok, failed)
        d.addBoth(lambda _: self._probes.pop(client.name, None) and None)

    # -- templates ---------------------------------------------------------

    def _gbt_params(self, longpollid: str | None) -> dict:
        params: dict = {"rules": list(self.network.gbt_rules)}
        if longpollid is not None:
            params["longpollid"] = longpollid
        return params

    async def _gbt_async(self, client: NodeClient, longpollid: str | None, timeout: float | None) -> Template:
        result = await client.call("getblocktemplate", self._gbt_params(longpollid), timeout=timeout)
        try:
            return Template.from_gbt(result, node=client.name)
        except TemplateError:
            if self.metrics is not None:
                self.metrics.rpc_errors.labels(node=client.name, method="getblocktemplate", kind="template").inc()
            raise

    def _gbt(self, client: NodeClient, longpollid: str | None = None, timeout: float | None = None) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._gbt_async(client, longpollid, timeout))

    def get_template(self, longpollid: str | None = None, timeout: float | None = None, min_height: int = 0) -> defer.Deferred:
        """A :class:`Template` from the first node that serves one at
        ``min_height`` or above; fails with :class:`NoNodeAvailable` when no
        node answers.

        A node that answers with a lower template is behind: restarted and
        still catching up, or cut off from its peers. It stays healthy (it
        answered), but the next node is asked, so a lagging first node
        cannot hold the pool on an old tip. When no node reaches
        ``min_height``, the highest template wins (the first node's among
        equals), and the caller decides what to make of it."""
        return defer.Deferred.fromCoroutine(self._get_template(longpollid, timeout, min_height))

    async def _get_template(self, longpollid, timeout, min_height: int) -> Template:
        errors: dict[str, Exception] = {}
        best: Template | None = None
        order = self._order()
        for c in order:
            try:
                tpl = await self._gbt(c, longpollid, timeout)
            except (RPCError, TemplateError) as e:
                log.info("getblocktemplate from %s failed: %s", c.name, e)
                errors[c.name] = e
                self._mark(c.name, False, e)
                continue
            self._mark(c.name, True)
            if tpl.height >= min_height:
                return tpl
            if c is not order[-1]:
                log.info("node %s serves a template at height %d, below %d: asking the next node", c.name, tpl.height,
                         min_height)
            if best is None or tpl.height > best.height:
                best = tpl
        if best is not None:
            return best
        raise NoNodeAvailable("getblocktemplate", errors)

    def get_template_from(self, name: str, longpollid: str | None = None, timeout: float | None = None) -> defer.Deferred:
        """A template from one given node, no failover (for longpolling)."""
        client = self.client(name)
        d = self._gbt(client, longpollid, timeout)

        def ok(tpl):
            self._mark(name, True)
            return tpl

        def failed(f):
            # A longpoll that runs into its (long) timeout only means no new
            # work came; it says nothing bad about the node.
            if f.check(RPCError, TemplateError) and not (longpollid is not None and f.check(RPCTimeout)):
                self._mark(name, False, f.value)
            return f

        return d.addCallbacks(ok, failed)

    # -- other calls -------------------------------------------------------

    def call_any(self, method: str, *params, timeout: float | None = None) -> defer.Deferred:
        """``method`` on the first node able to answer. A node's real error
        answer (e.g. -8 height out of range) is returned as is; only node
        failures (unreachable, warming up, in IBD) move on to the next node."""
        return defer.Deferred.fromCoroutine(self._call_any(method, params, timeout))

    async def _call_any(self, method, params, timeout):
        errors: dict[str, Exception] = {}
        for c in self._order():
            try:
                result = await c.call(method, *params, timeout=timeout)
            except RPCError as e:
                if not is_node_failure(e):
                    self._mark(c.name, True)
                    raise
                errors[c.name] = e
                self._mark(c.name, False, e)
                continue
            self._mark(c.name, True)
            return result
        raise NoNodeAvailable(method, errors)

    def best_block_hash(self, timeout: float | None = None) -> defer.Deferred:
        """The best block hash (display hex) of the first node that answers."""
        return self.call_any("getbestblockhash", timeout=timeout)

    def call_all(self, method: str, *params, timeout: float | None = None) -> defer.Deferred:
        """``method`` on every node in parallel; fires with {node name: result
        or the RPCError instance}. Never fails for RPC errors."""
        return defer.Deferred.fromCoroutine(self._call_all(method, params, timeout))

    async def _call_all(self, method, params, timeout) -> dict:
        results = await gather([self._call_one(c, method, params, timeout) for c in self.clients])
        return {c.name: r for c, r in zip(self.clients, results)}

    def _call_one(self, c: NodeClient, method: str, params, timeout) -> defer.Deferred:
        """``method`` on one node; fires with the result or the RPCError instance."""
        return c.call(method, *params, timeout=timeout).addCallbacks(self._all_ok(c.name), self._all_failed(c.name))

    def _all_ok(self, name):
        def ok(result):
            self._mark(name, True)
            return result

        return ok

    def _all_failed(self, name):
        def failed(f):
            f.trap(RPCError)
            if is_node_failure(f.value):
                self._mark(name, False, f.value)
            else:
                self._mark(name, True)
            return f.value

        return failed

    def submit_block(self, block_hex: str, timeout: float | None = None) -> defer.Deferred:
        """``submitblock`` to every node in parallel. Fires with {node name:
        verdict}: None (accepted), a BIP22 string ('duplicate',
        'inconclusive', 'high-hash', ...) or the RPCError (including
        RPCTimeout) that node gave."""
        return self.call_all("submitblock", block_hex, timeout=self.submit_timeout if timeout is None else timeout)

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> defer.Deferred:
        """Cancel probes and close every client's connections."""
        self._closed = True
        for d in list(self._probes.values()):
            d.cancel()
        return defer.gatherResults([c.close() for c in self.clients], consumeErrors=True)

    def stopService(self):
        Service.stopService(self)
        return self.close()


def clients_from_config(reactor, cfg, *, metrics=None) -> list[NodeClient]:
    """One NodeClient per ``[[nodes]]`` entry of a ``hashcoop.pool.config.Config``."""
    return [
        NodeClient(
            reactor,
            n.url,
            name=cfg.node_name(i),
            user=n.user,
            password=n.password,
            cookie_file=n.cookie_file,
            timeout=n.timeout,
            metrics=metrics,
        )
        for i, n in enumerate(cfg.nodes)
    ]
