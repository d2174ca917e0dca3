"""New-block detection from several independent sources, so one failing is
not fatal. Every source reports to a callback ``hint(blockhash, source)``
(display hex, or None when it only knows "something changed"):

* :class:`LongPoller` -- ``getblocktemplate`` longpolling on one node; it
  hands whole templates to ``on_template(template, "longpoll")``;
* :class:`ZMQHashblock` -- a node's ``zmqpubhashblock`` publisher (pyzmq on
  the reactor, no threads);
* :class:`NotifyListener` -- a line protocol fed by ``hashcoop notify``,
  which bitcoind runs with ``-blocknotify``;
* :class:`BestHashPoller` -- ``getbestblockhash`` every ``interval`` seconds,
  the cheap fallback.

The ``hashcoop notify`` command, which bitcoind runs for every block, is
:mod:`hashcoop.pool.node.notify`: it imports only the standard library.
"""
from __future__ import annotations

import logging
from functools import cache

import zmq
from twisted.internet import defer
from twisted.internet.defer import CancelledError
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver
from twisted.protocols.policies import TimeoutMixin
from zmq.utils.monitor import recv_monitor_message

from hashcoop.pool.node.notify import HASH_RE
from hashcoop.pool.rpc import RPCTimeout

log = logging.getLogger("hashcoop.tipwatch")



def _call_hint(hint, blockhash, source) -> None:
    try:
        hint(blockhash, source)
    except Exception:  # a consumer bug must not kill the source
        log.exception("tip hint from %s failed", source)


# -- longpoll ---------------------------------------------------------------


class _Loop:
    """A repeating request: one in flight at a time, the next one scheduled
    on ``clock`` when it is done; ``stop`` cancels both."""

    def __init__(self, clock, name: str):
        self.clock = clock
        self.name = name
        self._running = False
        self._inflight = None
        self._later = None
        self._failing = False

    def start(self) -> None:
        self._running = True
        self._poll()

    def stop(self) -> None:
        self._running = False
        if self._later is not None and self._later.active():
            self._later.cancel()
        self._later = None
        if self._inflight is not None:
            self._inflight.cancel()

    def _schedule(self, delay: float) -> None:
        if self._running:
            self._later = self.clock.callLater(delay, self._poll)

    def _poll(self) -> None:
        raise NotImplementedError


class LongPoller(_Loop):
    """Loops ``getblocktemplate`` with the last ``longpollid`` on one node.

    The first call only learns a longpollid; every later answer (new tip, or
    Core's "mempool changed" wake-up about once a minute) goes to
    ``on_template(template, name)``. A longpoll that runs into ``timeout``
    simply starts again; other errors retry with exponential backoff from
    ``retry_min`` to ``retry_max``. A node that answers at once with an
    unchanged longpollid is not longpolling: the next call waits
    ``retry_min`` so the loop never spins.
    """

    def __init__(self, nodes, node_name: str, on_template, *, clock, timeout: float = 300.0,
                 retry_min: float = 1.0, retry_max: float = 30.0, name: str = "longpoll"):
        super().__init__(clock, name)
        self.nodes = nodes
        self.node_name = node_name
        self.on_template = on_template
        self.timeout = timeout
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.longpollid: str | None = None
        self._delay = retry_min

    def describe(self) -> str:
        return f"{self.name} on {self.node_name}"

    def _poll(self) -> None:
        self._later = None
        if not self._running:
            return
        sent = self.longpollid
        d = self.nodes.get_template_from(self.node_name, longpollid=sent, timeout=self.timeout if sent else None)
        self._inflight = d
        d.addCallbacks(self._got, self._failed, callbackArgs=(sent,))
        d.addErrback(lambda f: log.error("longpoll on %s: %s", self.node_name, f.getTraceback()))

    def _got(self, tpl, sent: str | None) -> None:
        self._inflight = None
        if self._failing:
            log.info("longpoll on %s works again", self.node_name)
            self._failing = False
        self._delay = self.retry_min
        if tpl.longpollid is None:
            log.warning("node %s gives no longpollid; longpolling it stops", self.node_name)
            self._running = False
            return
        self.longpollid = tpl.longpollid
        if sent is not None:
            try:
                self.on_template(tpl, self.name)
            except Exception:
                log.exception("longpoll template consumer failed")
        if sent is not None and tpl.longpollid == sent:
            self._schedule(self.retry_min)
        elif self._running:
            self._poll()

    def _failed(self, f) -> None:
        self._inflight = None
        if not self._running or f.check(CancelledError):
            return
        if f.check(RPCTimeout) and self.longpollid is not None:
            self._poll()  # nothing happened for `timeout` seconds: ask again
            return
        if not self._failing:
            log.warning("longpoll on %s failed, retrying with backoff: %s", self.node_name, f.value)
            self._failing = True
        delay, self._delay = self._delay, min(self._delay * 2, self.retry_max)
        self._schedule(delay)


# -- ZMQ ----------------------------------------------------------------------


class ZMQHashblock:
    """Subscribes to a node's ``zmqpubhashblock`` endpoint.

    The SUB socket's ``zmq.FD`` is watched by the reactor as a read
    descriptor (this object is the ``IReadDescriptor``). That FD is
    edge-triggered: it only says "zmq state changed", so every wake-up
    drains messages while ``zmq.EVENTS`` has ``POLLIN``, and the state is
    checked once right after connecting. Messages are
    ``[b"hashblock", hash (32 bytes, display order), sequence (4 bytes LE)]``;
    a gap in the sequence is logged. Reconnecting is left to libzmq; ZMTP
    heartbeats let it notice a dead publisher.

    A publisher drops what it sends while nobody is subscribed, so a block
    found before the subscription is live (at startup, or while libzmq
    reconnects after the node restarted or the link broke) never arrives.
    A monitor socket (same reactor, same edge-triggered drain) reports each
    completed connection: it is logged, and hinted as ``None`` ("something
    may have changed") so the pool fetches a template and catches up. A
    lost connection is logged too, and so is an endpoint that has not
    answered ``connect_warning`` seconds after start (a wrong port, or a
    node without ``-zmqpubhashblock``).
    """

    def __init__(self, reactor, endpoint: str, hint, *, name: str = "zmq", context=None,
                 heartbeat_ms: int = 30_000, connect_warning: float = 10.0):
        self.reactor = reactor
        self.endpoint = endpoint
        self.hint = hint
        self.name = name
        self._context = context
        self._own_context = False
        self.heartbeat_ms = heartbeat_ms
        self.connect_warning = connect_warning
        self._sock = None
        self._fd = -1
        self._monitor: _ZMQMonitor | None = None
        self._warn_call = None
        self.sequence: int | None = None
        self.received = 0
        self.connected = False
        self.connections = 0  # completed handshakes, reconnections included

    def describe(self) -> str:
        return f"{self.name} {self.endpoint}"

    def start(self) -> None:
        if self._context is None:
            self._context = zmq.Context()
            self._own_context = True
        sock = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 1000)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.HEARTBEAT_IVL, self.heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, self.heartbeat_ms * 3)
        sock.setsockopt(zmq.SUBSCRIBE, b"hashblock")
        monitor = None
        try:
            # before connect, so that the first handshake is reported too
            monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
            monitor.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoint)
        except zmq.ZMQError:
            if monitor is not None:
                sock.disable_monitor()
                monitor.close(linger=0)
            sock.close(linger=0)
            self._close_context()
            raise
        self._sock = sock
        self._fd = sock.getsockopt(zmq.FD)
        self._monitor = _ZMQMonitor(self, monitor)
        self.reactor.addReader(self)
        self.reactor.addReader(self._monitor)
        if self.connect_warning:
            self._warn_call = self.reactor.callLater(self.connect_warning, self._not_connected)
        self.doRead()
        self._monitor.doRead()

    def stop(self) -> None:
        if self._warn_call is not None and self._warn_call.active():
            self._warn_call.cancel()
        self._warn_call = None
        if self._monitor is not None:
            self.reactor.removeReader(self._monitor)
            self._monitor.close()
            self._monitor = None
        if self._sock is not None:
            self.reactor.removeReader(self)
            self._sock.close(linger=0)
            self._sock = None
            self._fd = -1
        self.connected = False
        self._close_context()

    def _close_context(self) -> None:
        if self._own_context and self._context is not None:
            self._context.term()
            self._context = None
            self._own_context = False

    # -- connection events (from the monitor socket) --

    def _not_connected(self) -> None:
        self._warn_call = None
        if self.connections == 0 and self._sock is not None:
            log.warning("%s: no connection to %s after %g s (is the node running with -zmqpubhashblock=%s?); "
                        "libzmq keeps trying", self.name, self.endpoint, self.connect_warning, self.endpoint)

    def _event(self, event: int) -> None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.connected = True
            self.connections += 1
            if self.connections == 1:
                log.info("%s connected to %s", self.name, self.endpoint)
            else:
                log.info("%s connected to %s again; fetching a template in case a block went by", self.name, self.endpoint)
            # Blocks published before the subscription was live are lost:
            # let the pool look for itself.
            _call_hint(self.hint, None, self.name)
        elif event == zmq.EVENT_DISCONNECTED and self.connected:
            self.connected = False
            log.warning("%s lost its connection to %s; libzmq reconnects", self.name, self.endpoint)

    # IReadDescriptor
    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return f"zmq {self.endpoint}"

    def connectionLost(self, reason) -> None:
        """The reactor dropped us (shutdown): release the sockets."""
        if self._monitor is not None:
            self.reactor.removeReader(self._monitor)
            self._monitor.close()
            self._monitor = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
            self._fd = -1
        self._close_context()

    def doRead(self) -> None:
        while self._sock is not None and self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                parts = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._message(parts)

    def _message(self, parts: list[bytes]) -> None:
        if len(parts) != 3 or parts[0] != b"hashblock" or len(parts[1]) != 32 or len(parts[2]) != 4:
            log.warning("%s: ignoring malformed message %r", self.endpoint, [p[:40] for p in parts])
            return
        seq = int.from_bytes(parts[2], "little")
        if self.sequence is not None and seq != (self.sequence + 1) & 0xFFFFFFFF:
            log.info("%s: hashblock sequence jumped from %d to %d (missed messages or node restart)", self.endpoint, self.sequence, seq)
        self.sequence = seq
        self.received += 1
        _call_hint(self.hint, parts[1].hex(), self.name)


class _ZMQMonitor:
    """The read descriptor for a :class:`ZMQHashblock`'s monitor socket
    (a PAIR socket libzmq writes connection events to)."""

    def __init__(self, owner: ZMQHashblock, sock):
        self.owner = owner
        self.sock = sock
        self._fd = sock.getsockopt(zmq.FD)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return f"zmq monitor {self.owner.endpoint}"

    def doRead(self) -> None:
        while self.sock is not None and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                msg = recv_monitor_message(self.sock, zmq.NOBLOCK)
            except zmq.Again:
                break
            self.owner._event(msg["event"])

    def connectionLost(self, reason) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            owner_sock = self.owner._sock
            if owner_sock is not None and not owner_sock.closed:
                owner_sock.disable_monitor()
            self.sock.close(linger=0)
            self.sock = None
            self._fd = -1


# -- hashcoop notify listener -------------------------------------------------


@cache
def _notify_protocol_class():
    """The listener's protocol class, built on first use so that importing
    this module stays free of Twisted."""

    class NotifyProtocol(LineOnlyReceiver, TimeoutMixin):
        delimiter = b"\n"
        MAX_LENGTH = 256

        def connectionMade(self):
            self.listener = self.factory.listener
            self.callLater = self.listener.reactor.callLater
            self.setTimeout(self.listener.idle_timeout)
            self.listener.connections.add(self)

        def connectionLost(self, reason):
            self.setTimeout(None)
            self.listener.connections.discard(self)

        def timeoutConnection(self):
            self.transport.loseConnection()

        def lineReceived(self, line: bytes):
            self.resetTimeout()
            text = line.strip().decode("ascii", "replace")
            if not text:
                return
            if HASH_RE.fullmatch(text):
                self.listener.received += 1
                _call_hint(self.listener.hint, text.lower(), self.listener.name)
                self.sendLine(b"ok")
            else:
                self.sendLine(b"error: expected a block hash (64 hex digits)")

        def lineLengthExceeded(self, line):
            self.sendLine(b"error: line too long")
            self.transport.loseConnection()

    return NotifyProtocol


class NotifyListener:
    """Serves the ``hashcoop notify`` line protocol on a Twisted server
    endpoint string (``tcp:3335:interface=127.0.0.1``,
    ``unix:/run/hashcoop/notify.sock:lockfile=1``). One block hash (64 hex)
    per line, answered ``ok``; anything else gets an ``error: ...`` line."""

    def __init__(self, reactor, endpoint: str, hint, *, name: str = "notify", idle_timeout: float = 30.0):
        self.reactor = reactor
        self.endpoint = endpoint
        self.hint = hint
        self.name = name
        self.idle_timeout = idle_timeout
        self.port = None
        self.connections: set = set()
        self.received = 0

    def describe(self) -> str:
        return f"{self.name} on {self.endpoint}"

    def start(self):
        """Start listening; a Deferred firing with the listening port."""

        factory = Factory.forProtocol(_notify_protocol_class())
        factory.noisy = False
        factory.listener = self

        def listening(port):
            self.port = port
            log.info("notify listener on %s", self.endpoint)
            return port

        return serverFromString(self.reactor, self.endpoint).listen(factory).addCallback(listening)

    def stop(self):
        for p in list(self.connections):
            p.transport.loseConnection()
        port, self.port = self.port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)


# -- getbestblockhash poll -----------------------------------------------------


class BestHashPoller(_Loop):
    """``getbestblockhash`` (on the preferred node, with failover) every
    ``interval`` seconds; hints when the answer changes. Polls never
    overlap: the next one is scheduled when the last one is done."""

    def __init__(self, nodes, hint, *, clock, interval: float = 1.0, name: str = "poll"):
        super().__init__(clock, name)
        self.nodes = nodes
        self.hint = hint
        self.interval = interval
        self.last: str | None = None

    def describe(self) -> str:
        return f"{self.name} every {self.interval:g} s"

    def _poll(self) -> None:
        self._later = None
        if not self._running:
            return
        d = self.nodes.best_block_hash()
        self._inflight = d
        d.addCallbacks(self._got, self._failed)
        d.addErrback(lambda f: log.error("best hash poll: %s", f.getTraceback()))

    def _next(self) -> None:
        self._inflight = None
        self._schedule(self.interval)

    def _got(self, blockhash) -> None:
        if self._failing:
            log.info("getbestblockhash answers again")
            self._failing = False
        if isinstance(blockhash, str) and HASH_RE.fullmatch(blockhash):
            blockhash = blockhash.lower()
            if blockhash != self.last:
                self.last = blockhash
                _call_hint(self.hint, blockhash, self.name)
        else:
            log.warning("getbestblockhash returned %r", blockhash)
        self._next()

    def _failed(self, f) -> None:
        if f.check(CancelledError) and not self._running:
            self._inflight = None
            return
        if not self._failing:
            log.warning("getbestblockhash poll failing: %s", f.value)
            self._failing = True
        self._next()
