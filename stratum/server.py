"""The Stratum server: listening ports, sessions, job broadcast, limits.

``StratumServer`` is a Twisted Service built by the wiring point with
everything it needs passed in (reactor, config, job manager, sink, metrics,
block submitter). It owns no global state.

Protection from hostile peers:
* per-IP connection cap (our own: Twisted's LimitConnectionsByPeer never
  decrements correctly), with configurable exempt networks;
* handshake deadlines: subscribe, then authorize (one timer per connection,
  only during the handshake);
* idle sweep: authorized miners with no accepted share for ``idle_timeout``;
* flooding (``hashcoop.stratum.flood``): fresh work, then a disconnect, for mostly
  invalid shares; a disconnect for rejects faster than the configured rate;
  a temporary ban of IPs disconnected for flooding again and again;
* requests other than submits: a budget per connection
  (``stratum.request_rate``/``request_burst``), refused past it, closed
  and struck like a flood when the excess goes on; difficulty changes at
  most one per ``stratum.difficulty_change_interval``, coalesced;
* backpressure (``hashcoop.stratum.protocol``): reading paused while a connection's
  unsent output is past ``output_pause_bytes``; closed when it stays so for
  ``output_stall_timeout`` or passes ``output_limit_bytes``;
* a large listen backlog for reconnect storms.
"""
from __future__ import annotations

import logging

from twisted.application.service import Service
from twisted.internet.defer import gatherResults, maybeDeferred
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall

from hashcoop.pool.core.btc.address import AddressError, address_to_script
from hashcoop.pool.core.jobs import JobManager
from hashcoop.pool.core.shares import validate_share
from hashcoop.pool.core.vardiff import Vardiff
from hashcoop.pool.metrics import NullMetrics
from hashcoop.pool.transports import unsent_bytes as unsent
from hashcoop.stratum.admission import Admission
from hashcoop.stratum.deadlines import DeadlineQueue
from hashcoop.stratum.extranonce import Extranonce1Allocator
from hashcoop.stratum.flood import BanList, FloodPolicy, RequestBudget
from hashcoop.stratum.outcomes import ShareEvents
from hashcoop.stratum.protocol import StratumProtocol
from hashcoop.stratum.session import MinerSession
from hashcoop.stratum.transport import listen

log = logging.getLogger("hashcoop.stratum")

SWEEP_INTERVAL = 1.0
SWEEP_SLICES = 10  # the sweep runs every SWEEP_INTERVAL / SWEEP_SLICES over a tenth of the sessions


class StratumFactory(Factory):
    def __init__(self, server: "StratumServer", port):
        self.server = server
        self.port = port

    def buildProtocol(self, addr):
        ip = getattr(addr, "host", "") or "unix"
        refused = self.server.refusal(ip)
        if refused is None:
            return StratumProtocol(self.server, self.port, ip, self.server.max_line)
        if refused == "stale-template":
            return Farewell(STALE_TEMPLATE_MESSAGE)  # a miner (not an attacker): tell it why
        return None  # Twisted closes the socket at once


# what a miner refused for a stale template reads (cgminer & co. show client.show_message)
STALE_TEMPLATE_MESSAGE = b'{"id":null,"method":"client.show_message","params":["This pool has no current work ' \
                         b'(its Bitcoin node does not answer): connect to a backup pool"]}\n'


class Farewell(Protocol):
    """A refused connection that is told why, then closed."""

    def __init__(self, line: bytes):
        self.line = line

    def connectionMade(self):
        self.transport.write(self.line)
        self.transport.loseConnection()


class StratumServer(Service):
    name = "stratum"

    def __init__(self, *, reactor, config, jobs: JobManager, sink, metrics=None, block_submitter=None, clock=None, work=None):
        self.reactor = reactor
        self.clock = clock or reactor
        self.config = config
        sc = config.stratum
        self._jobs = jobs
        self._sink = sink
        self.metrics = metrics = metrics if metrics is not None else NullMetrics()  # no `if metrics` guards below
        # the share check, timed one call in every few (as is, with NullMetrics)
        self.validate_share = metrics.share_validation.wrap(validate_share)
        self._block_submitter = block_submitter
        self._work = work
        self.network = config.network
        self.network_name = self.network.name
        self.extranonce2_size = config.pool.extranonce2_size
        self.version_mask = int(sc.version_rolling_mask, 16)
        self.max_line = sc.max_line_length
        self.subscribe_timeout = sc.subscribe_timeout
        self.authorize_timeout = sc.authorize_timeout
        self.idle_timeout = sc.idle_timeout
        self.allow_password_difficulty = sc.allow_password_difficulty
        self.vardiff_cfg = config.vardiff
        fc = sc.flood
        self.flood = FloodPolicy.from_config(fc) if fc.enabled else None
        self.bans = BanList.from_config(fc)
        self.admission = Admission(clock=self.clock, bans=self.bans, max_per_ip=sc.max_connections_per_ip,
                                   exempt=sc.connection_limit_exempt, max_template_age=sc.max_template_age, work=work,
                                   metrics=metrics)
        self.requests = RequestBudget(rate=sc.request_rate, burst=sc.request_burst)
        self.difficulty_change_interval = sc.difficulty_change_interval
        self.output_pause_bytes = sc.output_pause_bytes
        self.output_limit_bytes = sc.output_limit_bytes
        self.output_stall_timeout = sc.output_stall_timeout
        self.close_timeout = sc.close_timeout
        # connections not read for their unsent output -> [since when it took none of it, bytes unsent then]
        self.blocked: dict[StratumProtocol, list] = {}
        metrics.banned_peers.set_function(lambda: self.bans.count(self.now()))
        metrics.output_blocked.set_function(lambda: len(self.blocked))
        metrics.output_held.set_function(lambda: sum(unsent(p.transport) for p in list(self.blocked)))
        self.extranonce = Extranonce1Allocator(config.pool.instance_id)
        self.sessions: set[MinerSession] = set()
        self.ready: dict[MinerSession, None] = {}  # insertion-ordered set of sessions receiving jobs
        self._addresses: dict[str, str | None] = {}  # address -> itself when valid, None when not
        self._texts: dict[str, str] = {}
        self.listeners: list = []
        self.deadlines = DeadlineQueue(self.clock, self._deadline_expired)  # the handshake's
        self._sweep_todo: list[MinerSession] = []
        self._sweep_slice = 1
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = self.clock
        self.events = ShareEvents(clock=self.clock, jobs=jobs, sink=sink, metrics=metrics, block_submitter=block_submitter,
                                  work=work, flood=self.flood, bans=self.bans, requests=self.requests,
                                  exempt=self.admission.exempt, ready=self.ready)
        # what sessions call, bound once: no extra call on the hot path
        ev = self.events
        self.share_accepted = ev.share_accepted
        self.share_rejected = ev.share_rejected
        self.stale_block = ev.stale_block
        self.late_share = ev.late_share
        self.request_refused = ev.request_refused
        self.count_reject = ev.count_reject

    # -- service -------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self.admission.start()
        sc = self.config.stratum
        lean = isinstance(self.reactor, PosixReactorBase)  # a real reactor: lean transports
        for port in sc.ports:
            factory = StratumFactory(self, port)
            if lean:
                lp = listen(self.reactor, port.port, factory, backlog=sc.backlog, interface=port.bind,
                            reuse_port=sc.reuse_port)
            else:
                lp = self.reactor.listenTCP(port.port, factory, backlog=sc.backlog, interface=port.bind)
            self.listeners.append(lp)
            log.info("stratum listening on %s:%d (difficulty start %g, min %g, max %g)", port.bind,
                     lp.getHost().port, port.start_difficulty, port.min_difficulty, port.max_difficulty)
        self._sweeper.start(SWEEP_INTERVAL / SWEEP_SLICES, now=False)

    def stopService(self):
        super().stopService()
        if self._sweeper.running:
            self._sweeper.stop()
        self.deadlines.stop()
        for s in list(self.sessions):
            s.proto.close("shutdown")

        ds = [maybeDeferred(lp.stopListening) for lp in self.listeners]
        self.listeners = []
        return gatherResults(ds)

    def listening_ports(self) -> list[int]:
        return [lp.getHost().port for lp in self.listeners]

    def now(self) -> float:
        return self.clock.seconds()

    @property
    def work(self):
        """The optional WorkSource: ``tip_seen_at``, ``own_block``,
        ``current_since`` (the admission's template age). The wiring point
        sets it once the WorkSource exists."""
        return self._work

    @work.setter
    def work(self, work) -> None:
        self._work = work
        self.admission.work = work
        self.events.work = work

    @property
    def blocks_found(self) -> int:
        return self.events.blocks_found

    # the collaborators the share events share with the server: replacing
    # one (a test, a restart of the job manager) replaces it for both
    @property
    def jobs(self) -> JobManager:
        return self._jobs

    @jobs.setter
    def jobs(self, jobs: JobManager) -> None:
        self._jobs = self.events.jobs = jobs

    @property
    def sink(self):
        return self._sink

    @sink.setter
    def sink(self, sink) -> None:
        self._sink = self.events.sink = sink

    @property
    def block_submitter(self):
        return self._block_submitter

    @block_submitter.setter
    def block_submitter(self, submitter) -> None:
        self._block_submitter = self.events.block_submitter = submitter

    # -- connection admission (hashcoop.stratum.admission) --------------------------------
    def refusal(self, ip: str) -> str | None:
        return self.admission.refusal(ip)

    def open_session(self, proto: StratumProtocol) -> MinerSession:
        s = MinerSession(self, proto, proto.port, proto.ip, self.now())
        self.sessions.add(s)
        self.metrics.connections.labels(str(proto.port.port)).inc()
        self.set_deadline(s, self.subscribe_timeout, "subscribe-timeout")
        return s

    def close_session(self, s: MinerSession) -> None:
        if s not in self.sessions:
            return
        self.sessions.discard(s)
        self.ready.pop(s, None)
        self.clear_deadline(s)
        if s.en1:
            self.extranonce.release(s.en1)
        self.admission.release(s.ip)
        port = str(s.port.port)
        self.metrics.connections.labels(port).dec()
        if s.authorized:
            self.metrics.workers_authorized.labels(port).dec()

    def set_deadline(self, s: MinerSession, seconds: float, reason: str) -> None:
        """Close ``s`` with ``reason`` unless the deadline is cleared or
        replaced within ``seconds`` (``DeadlineQueue``: no timer per
        connection)."""
        self.deadlines.set(s, seconds, reason)

    def clear_deadline(self, s: MinerSession) -> None:
        self.deadlines.clear(s)

    def _deadline_expired(self, s: MinerSession, reason: str) -> None:
        log.info("closing %s: %s", s.ip, reason)
        s.proto.close(reason)

    def _sweep(self) -> None:
        """Idle check and vardiff tick for every ready session, at least once
        every ``SWEEP_INTERVAL``: each call (every ``SWEEP_INTERVAL /
        SWEEP_SLICES``) takes the next slice of a snapshot of the sessions,
        so thousands of miners cost many short pauses rather than one long
        one."""
        todo = self._sweep_todo
        now = self.now()
        if self.blocked:
            self._stalled(now)
        if not todo:
            todo = self._sweep_todo = list(self.ready)
            todo.reverse()  # popped from the end: oldest sessions first
            self._sweep_slice = max(1, -(-len(todo) // SWEEP_SLICES))
            if self.bans.bans or self.bans.strikes:
                for ip in self.bans.expire(now):
                    log.info("ban on %s for flooding expired", ip)
        idle_before = now - self.idle_timeout
        ready = self.ready
        for _ in range(min(self._sweep_slice, len(todo))):
            s = todo.pop()
            if s not in ready:
                continue  # closed since the snapshot
            if max(s.last_share_at, s.connected_at) < idle_before:
                log.info("closing %s (%s): no share for %ds", s.ip, next(iter(s.workers), "?"), self.idle_timeout)
                s.proto.close("idle-timeout")
                continue
            s.tick(now)

    def _stalled(self, now: float) -> None:
        """Abort the connections, reading paused, that took none of their
        unsent output for ``output_stall_timeout`` (one that takes some,
        however slowly, holds no more than the hard limit)."""
        before = now - self.output_stall_timeout
        for p, mark in list(self.blocked.items()):
            left = unsent(p.transport)
            if left < mark[1]:
                mark[0], mark[1] = now, left  # it read some: the stall starts again
            elif mark[0] <= before:
                log.warning("closing %s: it has not read its replies for %ds (%d bytes unsent)", p.ip,
                            round(now - mark[0]), left)
                p.abort("output-stalled")

    # -- backpressure (called by StratumProtocol) ------------------------------
    def output_blocked(self, p: StratumProtocol) -> None:
        self.blocked[p] = [p.paused, unsent(p.transport)]
        self.metrics.output_pauses.inc()
        log.info("not reading from %s: %d bytes of its replies unsent (stratum.output_pause_bytes %d)", p.ip,
                 unsent(p.transport), self.output_pause_bytes)

    def output_drained(self, p: StratumProtocol) -> None:
        self.blocked.pop(p, None)

    # -- shared state for sessions -------------------------------------------
    def allocate_extranonce1(self) -> bytes:
        return self.extranonce.allocate()

    def shared_address(self, address: str) -> str | None:
        """``address`` if it is valid on this network, else None; the string
        returned is the one cached for it, so that the workers of one
        payout address share it (a small pool has far more workers than
        addresses)."""
        known = self._addresses.get(address, False)
        if known is False:
            try:
                address_to_script(address, self.network)
                known = address
            except AddressError:
                known = None
            if len(self._addresses) > 100_000:
                self._addresses.clear()
            self._addresses[address] = known
        return known

    def shared_text(self, text: str) -> str:
        """One string object for texts many sessions repeat (user agents)."""
        shared = self._texts.get(text)
        if shared is None:
            if len(self._texts) > 10_000:
                self._texts.clear()
            shared = self._texts[text] = text
        return shared

    def make_vardiff(self, s: MinerSession) -> Vardiff:
        v = self.vardiff_cfg
        return Vardiff(target_interval=v.target_interval, retarget_interval=v.retarget_interval, variance=v.variance,
                       min_shares=v.min_shares, low=s.floor, high=s.port.max_difficulty, now=self.now())

    def session_authorized(self, s: MinerSession) -> None:
        self.metrics.workers_authorized.labels(str(s.port.port)).inc()

    def session_ready(self, s: MinerSession) -> None:
        self.ready[s] = None
        job = self.jobs.current
        if job is not None:
            s.send_job(job, job.notify_line(True))

    # -- work ------------------------------------------------------------------
    def on_template(self, template, clean: bool) -> None:
        """WorkSource listener: build a job and send it to every miner."""
        job, clean = self.jobs.new_job(template, clean)
        self.broadcast(job, clean)

    def broadcast(self, job, clean: bool) -> None:
        line = job.notify_line(clean)
        for s in list(self.ready):
            s.send_job(job, line)
        self.metrics.jobs_broadcast.labels("true" if clean else "false").inc()
        self.metrics.template_height.set(job.height)
        self.metrics.network_difficulty.set(job.network_difficulty)
        if clean and self.work is not None and getattr(self.work, "tip_seen_at", None):
            self.metrics.tip_to_notify_seconds.observe(max(0.0, self.now() - self.work.tip_seen_at))
        log.debug("job %s height %d sent to %d miners (clean=%s)", job.id, job.height, len(self.ready), clean)

    # -- metrics helpers -----------------------------------------------------------
    def count_disconnect(self, reason: str, ip: str) -> None:
        self.metrics.disconnects.labels(reason).inc()
        if reason not in ("shutdown",):
            log.info("disconnect %s: %s", ip, reason)

    def count_coalesced(self) -> None:
        self.metrics.difficulty_coalesced.inc()

    def count_retarget(self, up: bool) -> None:
        self.metrics.vardiff_retargets.labels("up" if up else "down").inc()

    def metrics_protocol_error(self, kind: str, n: int = 1) -> None:
        self.metrics.protocol_errors.labels(kind).inc(n)
