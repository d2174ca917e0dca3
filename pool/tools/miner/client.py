"""The miner's Stratum V1 client.

* :class:`StratumSession`: one connection's protocol state machine. Pure: it
  sends dicts through a callable and reports to a listener; it knows nothing
  of sockets or time beyond the ``now`` callable it is given.
* :class:`StratumLineProtocol`: the thin Twisted adapter (``\\n``-framed JSON).
* :class:`MinerController`: connection lifecycle (reconnect with backoff,
  ``client.reconnect``, timeouts), work distribution to hashers, share
  checking and submission, counters, status lines, ``--duration`` and
  ``--max-shares``. It is handed a reactor and never imports the global one.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import sys
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from twisted.internet import defer, task
from twisted.internet.protocol import ClientFactory
from twisted.protocols.basic import LineOnlyReceiver

from hashcoop.pool.tools.miner import user_agent
from hashcoop.pool.tools.miner.hasher import HasherPool
from hashcoop.pool.tools.miner.work import (
    DEFAULT_VERSION_MASK,
    NONCE_SPACE,
    Job,
    NotifyError,
    Share,
    WorkSource,
    WorkUnit,
    check_share,
)

log = logging.getLogger("hashcoop.miner")

# Stratum's "other/unknown" error code, used for methods we do not implement.
ERR_UNKNOWN = 20
RECENT_JOBS = 8
MAX_QUEUED_SHARES = 100  # found while waiting for authorize
MAX_RECONNECT_WAIT = 3600.0


def format_error(error: Any) -> str:
    """A Stratum error ([code, message, data], {"code", "message"} or a bare
    value) as ``"CODE message"``: the key rejects are counted under."""
    if isinstance(error, (list, tuple)) and error:
        code = error[0]
        msg = error[1] if len(error) > 1 else ""
        return f"{code} {msg}".strip()
    if isinstance(error, dict):
        return f"{error.get('code', '')} {error.get('message', '')}".strip() or json.dumps(error)
    if error is None:
        return "rejected"
    return str(error)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class SessionListener(Protocol):
    def session_version_mask(self, mask: int | None) -> None: ...
    def session_subscribed(self) -> None: ...
    def session_authorized(self, ok: bool, error: str | None) -> None: ...
    def session_job(self, job: Job) -> None: ...
    def session_share_result(self, share: Share, accepted: bool, error: str | None) -> None: ...
    def session_message(self, text: str) -> None: ...
    def session_reconnect(self, host: str | None, port: int | None, wait: float) -> str | None: ...
    def session_failed(self, reason: str) -> None: ...


class StratumSession:
    """One Stratum connection, from the miner's side.

    ``start()`` pipelines ``mining.configure`` (unless version rolling is
    off), ``mining.subscribe``, ``mining.suggest_difficulty`` (if asked) and
    ``mining.authorize``. Server calls are answered with ``result`` and
    ``error``; notifications (id null) are not answered.

    ``mining.set_difficulty`` and ``mining.set_extranonce`` apply from the
    next job: each :class:`Job` captures the values in force when it arrived.
    """

    def __init__(self, send: Callable[[dict], None], listener: SessionListener, *, user: str,
                 password: str = "x", agent: str | None = None, version_rolling: bool = True,
                 version_mask: int = DEFAULT_VERSION_MASK, min_bit_count: int = 2,
                 suggest_difficulty: float | None = None, now: Callable[[], float] = lambda: 0.0):
        self.send = send
        self.listener = listener
        self.user = user
        self.password = password
        self.agent = agent or user_agent()
        self.version_rolling = version_rolling
        self.requested_mask = version_mask & 0xFFFFFFFF
        self.min_bit_count = min_bit_count
        self.suggest_difficulty = suggest_difficulty
        self.now = now
        self._ids = itertools.count(1)
        self.pending: dict[int, tuple[str, Any]] = {}
        self.subscribed = False
        self.authorized = False
        self.extranonce1: bytes | None = None
        self.extranonce2_size: int | None = None
        self.difficulty = 1.0  # Stratum's default until set_difficulty
        self.version_mask: int | None = None  # negotiated; None = no rolling

    # ------------------------------------------------------------ requests

    def request(self, method: str, params: list, context: Any = None) -> int:
        rid = next(self._ids)
        self.pending[rid] = (method, context)
        self.send({"id": rid, "method": method, "params": params})
        return rid

    def start(self) -> None:
        if self.version_rolling:
            self.request("mining.configure", [["version-rolling"], {
                "version-rolling.mask": f"{self.requested_mask:08x}",
                "version-rolling.min-bit-count": self.min_bit_count,
            }])
        self.request("mining.subscribe", [self.agent])
        if self.suggest_difficulty is not None:
            self.request("mining.suggest_difficulty", [self.suggest_difficulty])
        self.request("mining.authorize", [self.user, self.password])

    def submit(self, share: Share) -> int:
        return self.request("mining.submit", share.submit_params(self.user), context=share)

    @property
    def pending_submits(self) -> int:
        return sum(1 for method, _ in self.pending.values() if method == "mining.submit")

    # ------------------------------------------------------------ incoming

    def handle(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            log.warning("ignoring non-object message: %.200r", msg)
            return
        method = msg.get("method")
        if isinstance(method, str):
            params = msg.get("params")
            self._server_call(method, params if isinstance(params, list) else [], msg.get("id"))
            return
        rid = msg.get("id")
        entry = self.pending.pop(rid, None) if isinstance(rid, int) else None
        if entry is None:
            log.warning("ignoring reply to unknown id: %.200r", msg)
            return
        method, context = entry
        result, error = msg.get("result"), msg.get("error")
        getattr(self, "_reply_" + method.split(".")[1])(result, error, context)

    def _reply_configure(self, result, error, _ctx) -> None:
        mask = None
        if error is None and isinstance(result, dict) and result.get("version-rolling") is True:
            try:
                mask = int(result.get("version-rolling.mask", "0"), 16) & self.requested_mask
            except (TypeError, ValueError):
                mask = None
        if mask is None:
            log.info("pool did not agree to version rolling (%s); rolling extranonce2 only",
                     format_error(error) if error is not None else result)
        self.version_mask = mask
        self.listener.session_version_mask(mask)

    def _reply_subscribe(self, result, error, _ctx) -> None:
        try:
            if error is not None:
                raise ValueError(format_error(error))
            _subs, en1, en2_size = result[:3]
            extranonce1 = bytes.fromhex(en1)
            if not isinstance(en2_size, int) or isinstance(en2_size, bool) or not 0 <= en2_size <= 32:
                raise ValueError(f"bad extranonce2 size {en2_size!r}")
        except (TypeError, ValueError, IndexError) as e:
            self.listener.session_failed(f"subscribe failed: {e}")
            return
        self.extranonce1, self.extranonce2_size = extranonce1, en2_size
        self.subscribed = True
        self.listener.session_subscribed()

    def _reply_suggest_difficulty(self, result, error, _ctx) -> None:
        if error is not None:
            log.info("pool answered suggest_difficulty with %s", format_error(error))

    def _reply_authorize(self, result, error, _ctx) -> None:
        self.authorized = result is True and error is None
        self.listener.session_authorized(self.authorized, None if self.authorized else format_error(error))

    def _reply_submit(self, result, error, share) -> None:
        accepted = result is True and error is None
        self.listener.session_share_result(share, accepted, None if accepted else format_error(error))

    def _server_call(self, method: str, params: list, rid) -> None:
        handler = getattr(self, "_call_" + method.replace(".", "_"), None)
        if handler is None:
            log.info("pool sent unknown method %s", method)
            result, error = None, [ERR_UNKNOWN, f"unknown method {method}", None]
        else:
            result, error = handler(params)
        if rid is not None:
            self.send({"id": rid, "result": result, "error": error})

    def _call_mining_notify(self, params):
        if not self.subscribed:
            log.warning("job before subscribe reply; ignored")
            return None, [ERR_UNKNOWN, "not subscribed", None]
        try:
            job = Job.from_notify(params, difficulty=self.difficulty, extranonce1=self.extranonce1,
                                  extranonce2_size=self.extranonce2_size, received_at=self.now())
        except NotifyError as e:
            log.warning("bad mining.notify: %s", e)
            return None, [ERR_UNKNOWN, f"bad notify: {e}", None]
        self.listener.session_job(job)
        return True, None

    def _call_mining_set_difficulty(self, params):
        if not params or not _is_number(params[0]) or params[0] <= 0:
            log.warning("bad mining.set_difficulty %.100r", params)
            return None, [ERR_UNKNOWN, "bad difficulty", None]
        self.difficulty = float(params[0])
        return True, None

    def _call_mining_set_extranonce(self, params):
        try:
            extranonce1 = bytes.fromhex(params[0])
            size = params[1]
            if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= 32:
                raise ValueError("bad size")
        except (TypeError, ValueError, IndexError):
            log.warning("bad mining.set_extranonce %.100r", params)
            return None, [ERR_UNKNOWN, "bad extranonce", None]
        self.extranonce1, self.extranonce2_size = extranonce1, size
        return True, None

    def _call_mining_set_version_mask(self, params):
        if self.version_mask is None:
            return None, [ERR_UNKNOWN, "version rolling not negotiated", None]
        try:
            mask = int(params[0], 16) & self.requested_mask
        except (TypeError, ValueError, IndexError):
            return None, [ERR_UNKNOWN, "bad mask", None]
        self.version_mask = mask
        self.listener.session_version_mask(mask)
        return True, None

    def _call_client_show_message(self, params):
        self.listener.session_message(str(params[0]) if params else "")
        return True, None

    def _call_client_get_version(self, params):
        return self.agent, None

    def _call_client_reconnect(self, params):
        host = params[0] if len(params) > 0 and params[0] not in ("", None) else None
        port = params[1] if len(params) > 1 and params[1] not in ("", None) else None
        wait = params[2] if len(params) > 2 else 0
        try:
            if host is not None and not isinstance(host, str):
                raise ValueError("bad host")
            port = None if port is None else int(port)
            if port is not None and not 0 < port < 65536:
                raise ValueError("bad port")
            if not _is_number(wait):
                wait = float(wait)
        except (TypeError, ValueError):
            return None, [ERR_UNKNOWN, "bad reconnect params", None]
        error = self.listener.session_reconnect(host, port, min(max(float(wait), 0.0), MAX_RECONNECT_WAIT))
        return (None, [ERR_UNKNOWN, error, None]) if error else (True, None)


class Backoff:
    """Reconnect delays: ``initial``, doubling up to ``maximum``; ``reset()``
    after a connection got as far as an accepted authorize."""

    def __init__(self, initial: float = 1.0, maximum: float = 60.0, factor: float = 2.0):
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self.delay = initial

    def next(self) -> float:
        d = self.delay
        self.delay = min(self.delay * self.factor, self.maximum)
        return d

    def reset(self) -> None:
        self.delay = self.initial


class StratumLineProtocol(LineOnlyReceiver):
    """``\\n``-framed JSON lines; everything else is the controller's."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, controller: "MinerController"):
        self.controller = controller

    def connectionMade(self) -> None:
        self.controller.connection_made(self)

    def send_message(self, msg: dict) -> None:
        self.sendLine(json.dumps(msg, separators=(",", ":")).encode())

    def lineReceived(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            msg = json.loads(line)
        except ValueError:
            log.warning("pool sent a line that is not JSON: %.200r", line)
            return
        self.controller.message_received(self, msg)

    def connectionLost(self, reason) -> None:
        self.controller.connection_lost(self, reason)


class _Factory(ClientFactory):
    def __init__(self, controller: "MinerController"):
        self.controller = controller

    def buildProtocol(self, addr):
        return StratumLineProtocol(self.controller)

    def clientConnectionFailed(self, connector, reason):
        self.controller.connection_failed(reason)


@dataclass
class MinerOptions:
    host: str
    port: int
    user: str
    password: str = "x"
    processes: int = 1
    suggest_difficulty: float | None = None
    version_rolling: bool = True
    version_mask: int = DEFAULT_VERSION_MASK
    duration: float | None = None
    max_shares: int | None = None
    status_interval: float = 10.0
    quiet: bool = False
    nonces_per_unit: int = NONCE_SPACE
    connect_timeout: float = 10.0
    setup_timeout: float = 30.0
    silence_timeout: float = 300.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    answer_grace: float = 10.0  # after --max-shares, wait this long for answers


def format_hashrate(rate: float) -> str:
    for unit, scale in (("GH/s", 1e9), ("MH/s", 1e6), ("kH/s", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.2f} {unit}"
    return f"{rate:.0f} H/s"


class MinerController:
    """Runs the miner: one connection at a time, N hashers, counters.

    ``hashers`` builds the hasher pool for a listener (default: worker
    processes via ``reactor.spawnProcess``); ``say`` prints a human line.
    ``done`` fires with :meth:`summary` once the miner has stopped.
    """

    def __init__(self, reactor, options: MinerOptions, *,
                 hashers: Callable[[Any], Any] | None = None,
                 say: Callable[[str], None] | None = None):
        self.reactor = reactor
        self.options = options
        self.host, self.port = options.host, options.port
        make = hashers or (lambda listener: HasherPool(reactor, options.processes, listener))
        self.hashers = make(self)
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.backoff = Backoff(options.backoff_initial, options.backoff_max)
        self.done: defer.Deferred = defer.Deferred()

        self.protocol: StratumLineProtocol | None = None
        self.session: StratumSession | None = None
        self.version_mask: int | None = None
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.source: WorkSource | None = None
        self.units: dict[int, WorkUnit] = {}
        self.worker_units: list[int | None] = [None] * options.processes
        self._unit_ids = itertools.count(1)
        self.queue: list[Share] = []  # found before authorize succeeded
        self.paused = False  # --max-shares reached or --duration over: waiting for the answers to shares in flight
        self._pause_reason = "max-shares"

        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.stale = 0
        self.hw_errors = 0
        self.blocks = 0  # block candidates found
        self.blocks_accepted = 0  # ... that the pool accepted (not stale by then)
        self.submitted = 0
        self.unanswered = 0
        self.hashes = 0
        self.started_at: float | None = None
        self.finish_reason: str | None = None
        self._redirect_wait: float | None = None
        self._timers: dict[str, Any] = {}
        self._status_loop: task.LoopingCall | None = None
        self._last_status = (0.0, 0)
        self._stopping: defer.Deferred | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.started_at = self.reactor.seconds()
        self._last_status = (self.started_at, 0)
        self.hashers.start()
        if self.options.duration is not None:
            self._later("duration", self.options.duration, self._duration_over)
        if not self.options.quiet and self.options.status_interval > 0:
            self._status_loop = task.LoopingCall(self.print_status)
            self._status_loop.clock = self.reactor
            self._status_loop.start(self.options.status_interval, now=False)
        self._connect()

    def stop(self, reason: str = "stopped") -> defer.Deferred:
        """Stop for good: drop the connection, stop the hashers, then fire
        ``done`` with the summary. Idempotent."""
        if self._stopping is not None:
            return self._stopping
        self.finish_reason = reason
        for name in list(self._timers):
            self._cancel(name)
        if self._status_loop is not None and self._status_loop.running:
            self._status_loop.stop()
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.loseConnection()
        self.worker_units = [None] * len(self.worker_units)
        d = defer.maybeDeferred(self.hashers.stop)
        d.addErrback(lambda f: log.error("stopping hashers: %s", f.getErrorMessage()))
        d.addCallback(lambda _: self.summary())
        d.addCallback(self._finished)
        self._stopping = d
        return d

    def _finished(self, summary: dict) -> dict:
        self.done.callback(summary)
        return summary

    def summary(self) -> dict:
        elapsed = max(self.reactor.seconds() - (self.started_at or self.reactor.seconds()), 1e-9)
        return {
            "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            "rejected_by_error": dict(self.rejected),
            "stale": self.stale,
            "hw_errors": self.hw_errors,
            "unanswered": self.unanswered + (self.session.pending_submits if self.session else 0),
            "blocks": self.blocks,
            "blocks_accepted": self.blocks_accepted,
            "hashes": self.hashes,
            "elapsed": round(elapsed, 3),
            "hashrate": round(self.hashes / elapsed, 1),
            "reason": self.finish_reason,
        }

    def _later(self, name: str, delay: float, fn, *args) -> None:
        self._cancel(name)
        self._timers[name] = self.reactor.callLater(delay, fn, *args)

    def _cancel(self, name: str) -> None:
        call = self._timers.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    # ------------------------------------------------------------ connection

    def _connect(self) -> None:
        if self._stopping is not None:
            return
        log.info("connecting to %s:%d", self.host, self.port)
        self.reactor.connectTCP(self.host, self.port, _Factory(self), timeout=self.options.connect_timeout)

    def _schedule_reconnect(self) -> None:
        if self._stopping is not None:
            return
        if self._redirect_wait is not None:
            delay, self._redirect_wait = self._redirect_wait, None
        else:
            delay = self.backoff.next()
        self.say(f"reconnecting to {self.host}:{self.port} in {delay:g}s")
        self._later("reconnect", delay, self._connect)

    def connection_failed(self, reason) -> None:
        self.say(f"connection to {self.host}:{self.port} failed: {reason.getErrorMessage()}")
        self._schedule_reconnect()

    def connection_made(self, protocol: StratumLineProtocol) -> None:
        if self._stopping is not None:
            protocol.transport.loseConnection()
            return
        self.protocol = protocol
        o = self.options
        self.session = StratumSession(protocol.send_message, self, user=o.user, password=o.password,
                                      version_rolling=o.version_rolling, version_mask=o.version_mask,
                                      suggest_difficulty=o.suggest_difficulty, now=self.reactor.seconds)
        self.version_mask = None
        self.say(f"connected to {self.host}:{self.port}")
        self._later("setup", o.setup_timeout, self._drop, "no subscribe reply")
        self._later("silence", o.silence_timeout, self._drop, "pool silent")
        self.session.start()

    def message_received(self, protocol: StratumLineProtocol, msg) -> None:
        if protocol is not self.protocol or self.session is None:
            return
        self._later("silence", self.options.silence_timeout, self._drop, "pool silent")
        self.session.handle(msg)

    def _drop(self, why: str) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.say(f"dropping connection: {why}")
            self.protocol.transport.loseConnection()

    def connection_lost(self, protocol: StratumLineProtocol, reason) -> None:
        if protocol is not self.protocol:
            return
        if self.session is not None:
            lost = self.session.pending_submits
            self.unanswered += lost
        self.protocol = self.session = None
        self._cancel("setup")
        self._cancel("silence")
        self.stale += len(self.queue)
        self.queue.clear()
        self.jobs.clear()
        self.units.clear()
        self.source = None
        if self._stopping is None:
            self._idle_all()
            self.say(f"disconnected from {self.host}:{self.port}: {reason.getErrorMessage()}")
            if self.paused:  # waiting for answers that will never come
                self.stop(self._pause_reason)
            else:
                self._schedule_reconnect()

    # ------------------------------------------------------------ session events

    def session_version_mask(self, mask: int | None) -> None:
        if mask == self.version_mask:
            return
        self.version_mask = mask
        if mask is not None:
            log.info("version rolling mask %08x", mask)
        if self.source is not None:
            self.source.set_version_mask(mask)
            self._assign_all()

    def session_subscribed(self) -> None:
        self._cancel("setup")

    def session_authorized(self, ok: bool, error: str | None) -> None:
        if not ok:
            self.say(f"authorization of {self.options.user} failed: {error}")
            self._drop("not authorized")
            return
        self.backoff.reset()
        queued, self.queue = self.queue, []
        for share in queued:
            self._submit(share)

    def session_job(self, job: Job) -> None:
        if job.clean:
            self.stale += len(self.queue)
            self.queue.clear()
            self.jobs.clear()
        self.jobs.pop(job.job_id, None)
        self.jobs[job.job_id] = job
        while len(self.jobs) > RECENT_JOBS:
            self.jobs.popitem(last=False)
        self.units = {uid: u for uid, u in self.units.items() if self.jobs.get(u.job.job_id) is u.job}
        self.source = WorkSource(job, self.version_mask, self.options.nonces_per_unit)
        self._assign_all()

    def session_share_result(self, share: Share, accepted: bool, error: str | None) -> None:
        if accepted:
            self.accepted += 1
            if share.is_block:
                self.blocks_accepted += 1
            if not self.options.quiet:
                self.say(f"share accepted ({self.accepted}/{self.accepted + sum(self.rejected.values())}) "
                         f"job {share.job_id} diff {share.difficulty:g}")
        else:
            self.rejected[error or "rejected"] += 1
            self.say(f"share rejected: {error} (job {share.job_id})")
        self._maybe_finish_shares()

    def session_message(self, text: str) -> None:
        self.say(f"pool says: {text}")

    def session_reconnect(self, host: str | None, port: int | None, wait: float) -> str | None:
        # Like cgminer: only a different port on the same host, so a pool
        # cannot send our hashrate somewhere else.
        if host is not None and host.lower() != self.host.lower():
            self.say(f"refusing client.reconnect to another host ({host})")
            return "reconnect to another host refused"
        if port is not None:
            self.port = port
        self._redirect_wait = wait
        self.say(f"pool asked to reconnect to {self.host}:{self.port} in {wait:g}s")
        # after our reply has been written
        self.reactor.callLater(0, self._drop, "client.reconnect")
        return None

    def session_failed(self, reason: str) -> None:
        self._drop(reason)

    # ------------------------------------------------------------ work

    def _assign(self, worker: int) -> None:
        unit = None
        if not self.paused and self.source is not None and self._stopping is None:
            unit = self.source.next_unit(self.reactor.seconds(), next(self._unit_ids))
        if unit is None:
            if self.worker_units[worker] is not None:
                self.worker_units[worker] = None
                self.hashers.idle(worker)
            return
        self.units[unit.unit_id] = unit
        self.worker_units[worker] = unit.unit_id
        self.hashers.assign(worker, unit)

    def _assign_all(self) -> None:
        for worker in range(len(self.worker_units)):
            self._assign(worker)

    def _idle_all(self) -> None:
        for worker, unit_id in enumerate(self.worker_units):
            if unit_id is not None:
                self.worker_units[worker] = None
                self.hashers.idle(worker)

    # hasher listener

    def on_hashes(self, worker: int, unit_id: int, count: int) -> None:
        self.hashes += count

    def on_done(self, worker: int, unit_id: int) -> None:
        if self.worker_units[worker] == unit_id:
            self._assign(worker)

    def on_worker_restarted(self, worker: int) -> None:
        self.worker_units[worker] = None
        self._assign(worker)

    def on_found(self, worker: int, unit_id: int, nonce: int) -> None:
        if self.paused or self._stopping is not None:
            return
        unit = self.units.get(unit_id)
        if unit is None or self.jobs.get(unit.job.job_id) is not unit.job:
            self.stale += 1
            return
        share = check_share(unit, nonce)
        if share is None:
            self.hw_errors += 1
            self.say(f"hasher returned a nonce that misses the share target (job {unit.job.job_id})")
            return
        if share.is_block:
            self.blocks += 1
            self.say(f"block candidate! hash {share.header_hash[::-1].hex()} (job {share.job_id})")
        self._submit(share)

    def _submit(self, share: Share) -> None:
        if self.session is None or not self.session.authorized:
            if len(self.queue) < MAX_QUEUED_SHARES:
                self.queue.append(share)
            else:
                self.stale += 1
            return
        self.session.submit(share)
        self.submitted += 1
        limit = self.options.max_shares
        if limit is not None and self.submitted >= limit and not self.paused:
            self._pause("max-shares")

    def _duration_over(self) -> None:
        """--duration: stop hashing, and stop once the shares in flight are
        answered (at most ``answer_grace`` later): a share the pool accepted
        is one the miner was told about."""
        if self.paused:
            self._pause_reason = "duration"
        elif self.session is None or self.session.pending_submits == 0:
            self.stop("duration")
        else:
            self._pause("duration")

    def _pause(self, reason: str) -> None:
        self.paused = True
        self._pause_reason = reason
        self._idle_all()
        self._later("answers", self.options.answer_grace, lambda: self.stop(self._pause_reason))
        self._maybe_finish_shares()

    def _maybe_finish_shares(self) -> None:
        if self.paused and self.session is not None and self.session.pending_submits == 0:
            self.stop(self._pause_reason)

    # ------------------------------------------------------------ status

    def current_difficulty(self) -> float | None:
        if self.source is not None:
            return self.source.job.difficulty
        return None

    def print_status(self) -> None:
        now = self.reactor.seconds()
        t0, h0 = self._last_status
        rate = (self.hashes - h0) / (now - t0) if now > t0 else 0.0
        self._last_status = (now, self.hashes)
        diff = self.current_difficulty()
        rejected = sum(self.rejected.values())
        state = f"diff {diff:g}" if diff is not None else ("no work" if self.protocol else "disconnected")
        self.say(f"{format_hashrate(rate)} | accepted {self.accepted} rejected {rejected} | {state}")
