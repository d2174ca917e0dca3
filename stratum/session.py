"""One miner connection's state machine. No sockets here: the session writes
through its protocol (``write``/``close``) and asks its server for shared
state (jobs, extranonce1, addresses, sink, metrics, clock).

Difficulty bookkeeping: ``steps`` holds ``Step(seq, alias, difficulty,
target)`` in the order they took effect. A job (or job alias, see
``hashcoop.pool.core.jobs``) is credited at the last step at or before it, which is the
difficulty in force when that job was sent to this miner.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable, Protocol

import orjson

from hashcoop.pool.core.btc.target import difficulty_to_target
from hashcoop.pool.core.shares import Reject, ShareResult, Step, Submit
from hashcoop.pool.core.vardiff import Vardiff
from hashcoop.stratum.errors import ERROR_JSON
from hashcoop.stratum.flood import ALLOWED, REFUSED

if TYPE_CHECKING:
    from hashcoop.pool.core.jobs import JobManager
    from hashcoop.stratum.flood import RequestBudget

log = logging.getLogger("hashcoop.stratum")

MAX_WORKERS_PER_CONNECTION = 64
MAX_STEPS = 32
_WORKER_OK = re.compile(r"[^A-Za-z0-9_\-]")
_NEVER = float("-inf")


class SessionHost(Protocol):
    """What a session may use of its server, and nothing else (a test runs
    sessions against a proxy that has only these: tests/stratum/test_session_host.py).
    ``StratumServer`` provides it; share outcomes are ``ShareEvents``'
    methods, bound onto the server."""

    jobs: "JobManager"
    extranonce2_size: int
    version_mask: int
    network_name: str
    authorize_timeout: float
    allow_password_difficulty: bool
    difficulty_change_interval: float
    requests: "RequestBudget"
    validate_share: Callable[..., ShareResult]

    def now(self) -> float: ...
    def allocate_extranonce1(self) -> bytes: ...
    def shared_address(self, address: str) -> str | None: ...
    def shared_text(self, text: str) -> str: ...
    def set_deadline(self, s: "MinerSession", seconds: float, reason: str) -> None: ...
    def clear_deadline(self, s: "MinerSession") -> None: ...
    def make_vardiff(self, s: "MinerSession") -> Vardiff: ...
    def session_authorized(self, s: "MinerSession") -> None: ...
    def session_ready(self, s: "MinerSession") -> None: ...
    def close_session(self, s: "MinerSession") -> None: ...
    def share_accepted(self, s: "MinerSession", worker: "Worker", job, result: ShareResult, now: float) -> None: ...
    def share_rejected(self, s: "MinerSession", worker: "Worker | None", reason: str, params: list) -> None: ...
    def stale_block(self, s: "MinerSession", worker: "Worker", job, result: ShareResult) -> str | None: ...
    def late_share(self, s: "MinerSession", worker: "Worker", job, result: ShareResult) -> ShareResult: ...
    def request_refused(self, s: "MinerSession", verdict: int, tat: float) -> None: ...
    def count_reject(self, reason: str) -> None: ...
    def count_retarget(self, up: bool) -> None: ...
    def count_coalesced(self) -> None: ...
    def metrics_protocol_error(self, kind: str, n: int = 1) -> None: ...


class Worker:
    __slots__ = ("username", "address", "name")

    def __init__(self, username: str, address: str, name: str):
        self.username = username
        self.address = address
        self.name = name


class OneWorker(Mapping):
    """``MinerSession.workers`` while a connection has a single worker, as
    nearly all do: a read-only mapping of one username, a fraction of a
    dictionary's size. A second worker turns it into a dict."""

    __slots__ = ("username", "worker")

    def __init__(self, username: str, worker: Worker):
        self.username = username
        self.worker = worker

    def __getitem__(self, key):
        if key == self.username:
            return self.worker
        raise KeyError(key)

    def get(self, key, default=None):
        return self.worker if key == self.username else default

    def __contains__(self, key) -> bool:
        return key == self.username

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield self.username


_NO_WORKERS: Mapping = MappingProxyType({})


def parse_password_difficulty(password: str) -> float | None:
    """``d=N`` anywhere in the password (``x,d=64``, ``d=0.5``); None if absent
    or not a positive finite number."""
    for token in re.split(r"[,;\s]+", password):
        if token[:2].lower() == "d=":
            try:
                d = float(token[2:])
            except ValueError:
                return None
            return d if math.isfinite(d) and d > 0 else None
    return None


def _number(v) -> float | None:
    """A positive finite difficulty from untrusted JSON, else None."""
    if type(v) is str:
        try:
            v = float(v)
        except ValueError:
            return None
    if type(v) not in (int, float):
        return None
    try:
        v = float(v)
    except OverflowError:
        return None
    return v if math.isfinite(v) and v > 0 else None


def _diff_json(d: float) -> bytes:
    return orjson.dumps(int(d) if d >= 1 and d == int(d) else d)


def _whole(d: float) -> float:
    """Difficulties from 1 up are whole numbers: ESP-Miner and Braiins keep
    the difficulty as an integer and would otherwise mine at another one."""
    return float(round(d)) if d >= 1 else d


class MinerSession:
    __slots__ = (
        "server", "proto", "port", "ip", "connected_at", "en1", "subscribed", "user_agent",
        "workers", "authorized", "ready", "difficulty", "pending", "steps", "alias", "floor", "fixed",
        "vardiff", "version_mask", "last_share_at", "timer", "last_seq", "rejects", "accepted", "flood",
        "tat", "changed_at",
    )

    def __init__(self, server: SessionHost, proto, port, ip: str, now: float):
        self.server = server
        self.proto = proto
        self.port = port  # config.PortSection
        self.ip = ip
        self.connected_at = now
        self.en1 = b""
        self.subscribed = False
        self.user_agent = ""
        self.workers: Mapping[str, Worker] = _NO_WORKERS  # username -> Worker: OneWorker, or a dict for several
        self.authorized = False
        self.ready = False  # subscribed and authorized: receives jobs
        self.difficulty = port.start_difficulty
        self.pending: float | None = None  # difficulty to send with the next job
        self.steps: tuple[Step, ...] = ()
        self.alias = 0
        self.floor = port.min_difficulty
        self.fixed = False
        self.vardiff: Vardiff | None = None
        self.version_mask = 0
        self.last_share_at = 0.0
        self.timer = None  # handshake deadline entry (subscribe, then authorize), see StratumServer.set_deadline
        self.last_seq = -1
        self.rejects = 0
        self.accepted = 0
        self.flood = None  # hashcoop.stratum.flood.FloodState, from the first rejected submit on
        self.tat = 0.0  # request budget state (hashcoop.stratum.flood.RequestBudget)
        self.changed_at = _NEVER  # when the last difficulty change was sent on its own (not with a broadcast job)

    # -- framing-level entry ------------------------------------------------
    def handle(self, msg: dict) -> None:
        method = msg.get("method")
        mid = msg.get("id")
        if method != "mining.submit":
            # everything but a share draws on the request budget (shares
            # have the flood policy): past it, refused or ignored
            verdict = self._charge()
            if verdict != ALLOWED:
                if verdict == REFUSED and method is not None:
                    self._error(mid, 20, "Too many requests: slow down")
                return
            if method is None:
                return  # a reply to something we sent (client.get_version...)
        handler = _HANDLERS.get(method) if type(method) is str else None
        if handler is None:
            self.server.metrics_protocol_error("unknown-method")
            self._error(mid, 20, "Unknown method")
            return
        params = msg.get("params")
        if params is None:
            params = []
        elif type(params) is not list:
            self.server.metrics_protocol_error("bad-params")
            self._error(mid, 20, "params must be an array")
            return
        handler(self, mid, params)

    def closed(self) -> None:
        self.server.close_session(self)

    def blank(self, n: int) -> None:
        """``n`` blank or whitespace-only lines: no answer, but each costs a
        request, so a stream of them ends in a close."""
        self.server.metrics_protocol_error("blank-line", n)
        self._charge(n)

    def _charge(self, n: int = 1) -> int:
        """``n`` requests against this connection's budget (``RequestBudget``):
        ALLOWED, REFUSED, or OVERDRAWN (the server has closed the connection)."""
        server = self.server
        tat = self.tat
        self.tat, verdict = server.requests.charge(tat, server.now(), n)
        if verdict != ALLOWED:
            server.request_refused(self, verdict, tat)
        return verdict

    # -- replies -------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        self.proto.write(data)

    # A request with a null id is a notification: it gets no reply
    # (BFGMiner sends mining.suggest_target that way).
    def _result(self, mid, result) -> None:
        if mid is not None:
            self.proto.write(orjson.dumps({"id": mid, "result": result, "error": None}) + b"\n")

    def _error(self, mid, code: int, message: str, result=None) -> None:
        if mid is not None:
            self.proto.write(orjson.dumps({"id": mid, "result": result, "error": [code, message, None]}) + b"\n")

    def _reject_reply(self, mid, reason: str) -> None:
        if mid is not None:
            self.proto.write(b'{"id":' + orjson.dumps(mid) + b',"result":false,"error":' + ERROR_JSON[reason] + b"}\n")

    # -- methods ---------------------------------------------------------------
    def m_subscribe(self, mid, params) -> None:
        first = not self.subscribed
        if first:
            if params and type(params[0]) is str:
                self.user_agent = self.server.shared_text(params[0][:80])
            self.en1 = self.server.allocate_extranonce1()
            self.subscribed = True
        sub_id = self.en1.hex()
        self._result(mid, [[["mining.set_difficulty", sub_id], ["mining.notify", sub_id]], sub_id, self.server.extranonce2_size])
        if self.authorized:
            self._start_work()
        elif first:
            # from the first subscribe only: subscribing again must not
            # stretch the deadline (a socket could otherwise idle forever)
            self.server.set_deadline(self, self.server.authorize_timeout, "authorize-timeout")

    def m_authorize(self, mid, params) -> None:
        if not params or type(params[0]) is not str or len(params[0]) > 256:
            self._error(mid, 20, "Invalid parameters", False)
            return
        username = params[0].strip()
        password = params[1] if len(params) > 1 and type(params[1]) is str else ""
        address, _, name = username.partition(".")
        shared = self.server.shared_address(address)
        if shared is None:
            self.server.count_reject(Reject.UNAUTHORIZED)
            self._error(mid, 24, f"Invalid {self.server.network_name} address: {address[:100]!r}", False)
            return
        address = shared  # one string for every worker paying this address
        if username not in self.workers and len(self.workers) >= MAX_WORKERS_PER_CONNECTION:
            self._error(mid, 24, "Too many workers on one connection", False)
            return
        name = _WORKER_OK.sub("_", name)[:64] or "default"
        worker = Worker(username, address, name)
        workers = self.workers
        if type(workers) is dict:
            workers[username] = worker
        elif not workers or username in workers:
            self.workers = OneWorker(username, worker)
        else:
            self.workers = {**workers, username: worker}
        if self.server.allow_password_difficulty and password:
            d = parse_password_difficulty(password[:128])
            if d is not None and not self.ready:
                self.fixed = True
                self.difficulty = self._port_clamp(d)
        self._result(mid, True)
        if not self.authorized:
            self.authorized = True
            self.server.session_authorized(self)
            if self.subscribed:
                self._start_work()
            # else the subscribe deadline set at connect still runs: an
            # authorize does not buy time to subscribe

    def m_configure(self, mid, params) -> None:
        if len(params) < 1 or type(params[0]) is not list:
            self._error(mid, 20, "Invalid parameters")
            return
        exts = params[0]
        opts = params[1] if len(params) > 1 and type(params[1]) is dict else {}
        result: dict = {}
        for ext in exts[:16]:
            if ext == "version-rolling":
                requested = opts.get("version-rolling.mask", "ffffffff")
                try:
                    want = int(requested, 16) if type(requested) is str and len(requested) <= 8 else 0xFFFFFFFF
                except ValueError:
                    want = 0
                mask = want & self.server.version_mask
                self.version_mask = mask
                result["version-rolling"] = mask != 0
                result["version-rolling.mask"] = f"{mask:08x}"
            elif ext == "minimum-difficulty":
                v = _number(opts.get("minimum-difficulty.value"))
                if v is not None:
                    self.floor = self._port_clamp(v)
                    if self.vardiff is not None:
                        self.vardiff.low = self.floor
                    if self.difficulty < self.floor:
                        self._change_difficulty(self.floor)
                result["minimum-difficulty"] = v is not None
            elif ext == "subscribe-extranonce":
                result["subscribe-extranonce"] = True
            elif type(ext) is str and len(ext) <= 64:
                result[ext] = False
        self._result(mid, result)

    def m_suggest_difficulty(self, mid, params) -> None:
        d = _number(params[0]) if params else None
        if d is None:
            self._error(mid, 20, "Invalid difficulty", False)
            return
        d = self._port_clamp(d)
        if d == self.floor and self.ready:
            # NerdMiner repeats its suggestion every 30 s as a keep-alive: an
            # unchanged suggestion must not undo what vardiff learned.
            self._result(mid, True)
            return
        self.floor = d
        if self.vardiff is not None:
            self.vardiff.low = d
        self._result(mid, True)
        if not self.fixed:
            self._change_difficulty(d)

    def m_extranonce_subscribe(self, mid, params) -> None:
        self._result(mid, True)

    def m_submit(self, mid, params) -> None:
        server = self.server
        if not self.subscribed:
            self._reject(mid, Reject.NOT_SUBSCRIBED, None, params)
            return
        if len(params) < 5 or len(params) > 6 or type(params[0]) is not str or type(params[1]) is not str:
            self._reject(mid, Reject.BAD_PARAMS, None, params)
            return
        worker = self.workers.get(params[0])
        if worker is None:
            self._reject(mid, Reject.UNAUTHORIZED, None, params)
            return
        job, alias = server.jobs.resolve(params[1])
        step = self._step_for(job.seq, alias) if job is not None else None
        if step is None:
            self._reject(mid, Reject.UNKNOWN_JOB, worker, params)
            return
        stale = job.seen is None or job.prevhash != server.jobs.prevhash
        late = stale and server.jobs.in_grace(job)  # found before this miner could read the new tip's job
        submit = Submit(self.en1, params[2], params[3], params[4], params[5] if len(params) == 6 else None,
                        self.version_mask, alias)
        result = server.validate_share(job, submit, step, server.extranonce2_size, stale and not late)
        if late and result.ok:
            result = server.late_share(self, worker, job, result)
        if not result.ok:
            if not result.is_block:
                self._reject(mid, result.reason, worker, params)
                return
            # a block on a job a new tip replaced: submitted if its previous
            # block is the tip again, recorded as lost otherwise
            verdict = server.stale_block(self, worker, job, result)
            if verdict is not None:
                self._reject(mid, verdict, worker, params)
                return
            result = ShareResult(True, None, result.hash_int, result.credit, True, result.header, result.coinbase)
        if mid is not None:
            self.proto.write(b'{"id":' + orjson.dumps(mid) + b',"result":true,"error":null}\n')
        now = server.now()
        self.last_share_at = now
        self.accepted += 1
        if self.flood is not None:
            self.flood.n += 1  # a counted submit for the flood policy
        server.share_accepted(self, worker, job, result, now)
        if self.vardiff is not None:
            new = self.vardiff.on_share(result.credit, self.difficulty, now)
            if new is not None and new != self.difficulty:
                self._change_difficulty(new)

    def m_get_transactions(self, mid, params) -> None:
        self._error(mid, 20, "Not supported")

    # -- helpers ---------------------------------------------------------------
    def _reject(self, mid, reason: str, worker: Worker | None, params) -> None:
        self._reject_reply(mid, reason)
        self.rejects += 1
        self.server.share_rejected(self, worker, reason, params)

    def _port_clamp(self, d: float) -> float:
        return min(max(_whole(d), self.port.min_difficulty), self.port.max_difficulty)

    def _clamp(self, d: float) -> float:
        """Within the port's limits and not below the miner's own floor
        (suggest_difficulty / minimum-difficulty), which is itself within them."""
        return min(max(_whole(d), self.floor), self.port.max_difficulty)

    def _step_for(self, seq: int, alias: int) -> Step | None:
        """The difficulty step a job id was sent under, or None if this
        session was never sent that job (or alias)."""
        steps = self.steps
        for i in range(len(steps) - 1, -1, -1):
            s = steps[i]
            if s.seq == seq and s.alias == alias:
                return s
            if alias == 0 and s.seq < seq:
                return s if seq <= self.last_seq else None
            if s.seq < seq:
                return None
        return None

    def _add_step(self, seq: int, alias: int, diff: float) -> None:
        # a tuple, not a list: a miner holds one or two steps for hours
        self.steps = self.steps[1 - MAX_STEPS:] + (Step(seq, alias, diff, difficulty_to_target(diff)),)

    def _start_work(self) -> None:
        if self.ready:
            return
        self.server.clear_deadline(self)
        self.ready = True
        self.difficulty = self._clamp(self.difficulty)
        if self.port.vardiff and not self.fixed:
            self.vardiff = self.server.make_vardiff(self)
        self.server.session_ready(self)

    def send_job(self, job, line: bytes) -> None:
        """Called by the server for each broadcast job (same bytes for all)."""
        if self.pending is not None or not self.steps:
            if self.pending is not None:
                self.difficulty = self.pending
                self.pending = None
            self._add_step(job.seq, 0, self.difficulty)
            self.proto.write(self._set_difficulty_line(self.difficulty) + line)
        else:
            self.proto.write(line)
        self.last_seq = job.seq
        self.alias = 0  # aliases count per job: (seq, alias) stays ordered

    def _set_difficulty_line(self, d: float) -> bytes:
        return b'{"id":null,"method":"mining.set_difficulty","params":[' + _diff_json(d) + b"]}\n"

    def _change_difficulty(self, new: float) -> None:
        """Apply a new difficulty from a new job: re-send the current job under
        an alias id right after mining.set_difficulty. Going down, the job is
        sent clean so miners stop submitting old work at the lower target.
        At most one such change goes out per ``difficulty_change_interval``:
        one asked for sooner waits in ``pending``, and the next one replaces
        it (``tick`` sends it when the interval is over, unless a broadcast
        job has carried it already)."""
        new = self._clamp(new)
        if new == self.difficulty:
            self.pending = None  # back to the difficulty in force: nothing to send
            return
        if not self.ready or not self.steps:
            self.difficulty = new
            return
        job = self.server.jobs.current
        if job is None or self.alias >= 0xFFFF:
            # no job to re-send, or this job's aliases are used up: the
            # difficulty goes out with the next broadcast job
            self.pending = new
            return
        now = self.server.now()
        if now - self.changed_at < self.server.difficulty_change_interval:
            self.server.count_coalesced()
            self.pending = new
            return
        self.changed_at = now
        self.server.count_retarget(new > self.difficulty)
        clean = new < self.difficulty
        self.pending = None
        self.difficulty = new
        self.alias += 1
        self._add_step(job.seq, self.alias, new)
        self.proto.write(self._set_difficulty_line(new) + job.alias_notify_line(self.server.jobs.alias_id(job, self.alias), clean, self.alias))
        if self.vardiff is not None:
            self.vardiff.reset(now)

    def fresh_work(self) -> bool:
        """Re-send this session's difficulty and the current job, clean,
        under a new job id (an alias, as a retarget does), so a miner that
        lost track of its work starts over. False when there is nothing to
        send (not mining yet, no job, or the job's aliases are used up)."""
        job = self.server.jobs.current
        if job is None or not self.ready or not self.steps or self.alias >= 0xFFFF:
            return False
        if self.pending is not None:
            self.difficulty = self.pending
            self.pending = None
        self.alias += 1
        self._add_step(job.seq, self.alias, self.difficulty)
        self.proto.write(self._set_difficulty_line(self.difficulty)
                         + job.alias_notify_line(self.server.jobs.alias_id(job, self.alias), True, self.alias))
        return True

    def tick(self, now: float) -> None:
        """Periodic: a difficulty change held back by the interval; vardiff
        for miners whose shares stopped."""
        if self.pending is not None and now - self.changed_at >= self.server.difficulty_change_interval:
            self._change_difficulty(self.pending)
        if self.vardiff is not None:
            new = self.vardiff.on_tick(self.difficulty, now)
            if new is not None and new != self.difficulty:
                self._change_difficulty(new)

    def show_message(self, text: str) -> None:
        self.proto.write(orjson.dumps({"id": None, "method": "client.show_message", "params": [text]}) + b"\n")


_HANDLERS = {
    "mining.subscribe": MinerSession.m_subscribe,
    "mining.authorize": MinerSession.m_authorize,
    "mining.configure": MinerSession.m_configure,
    "mining.suggest_difficulty": MinerSession.m_suggest_difficulty,
    "mining.suggest_target": None,
    "mining.extranonce.subscribe": MinerSession.m_extranonce_subscribe,
    "mining.submit": MinerSession.m_submit,
    "mining.get_transactions": MinerSession.m_get_transactions,
}
del _HANDLERS["mining.suggest_target"]
