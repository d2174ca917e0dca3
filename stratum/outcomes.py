"""What happens to a share once the session has judged it: accepted shares
and found blocks go to the event sink and the block submitter, rejected
ones to the sink and the flood policy, whose steps (fresh work, close,
ban) are carried out here; requests past their budget too. The sessions
call these through the server (``StratumServer.share_accepted`` is this
object's method), so the hot path pays no extra call.

Collaborators are passed in: the event sink, metrics (optional), the
block submitter and WorkSource (optional), the job manager (for the tip),
the flood policy, ban list and request budget, the admission's exempt
check, the clock, and the sessions receiving jobs (told of a found block).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable

from hashcoop.pool.core.btc.block import parse_header
from hashcoop.pool.core.btc.hashing import hash_to_hex
from hashcoop.pool.core.btc.target import DIFF1_TARGET
from hashcoop.pool.core.events import BlockFound, ShareAccepted, ShareRejected
from hashcoop.pool.core.shares import Reject, ShareResult
from hashcoop.pool.metrics import NullMetrics
from hashcoop.stratum.flood import BAN, DISCONNECT, NEW_WORK, OVERDRAWN, RATE, REQUESTS, BanList, FloodPolicy, RequestBudget

if TYPE_CHECKING:
    from hashcoop.stratum.session import MinerSession

log = logging.getLogger("hashcoop.stratum")

_INF = float("inf")


class ShareEvents:
    def __init__(self, *, clock, jobs, sink, metrics=None, block_submitter=None, work=None,
                 flood: FloodPolicy | None, bans: BanList, requests: RequestBudget, exempt: Callable[[str], bool],
                 ready: dict):
        self.clock = clock
        self.jobs = jobs
        self.sink = sink
        self.metrics = metrics if metrics is not None else NullMetrics()
        self.block_submitter = block_submitter
        self.work = work  # optional WorkSource: tip_seen_at, own_block (the server's setter keeps it current)
        self.flood = flood
        self.bans = bans
        self.requests = requests
        self.exempt = exempt
        self.ready = ready  # the server's sessions receiving jobs (the same dict)
        self.blocks_found = 0
        self._block_hashes: OrderedDict[str, None] = OrderedDict()  # blocks found lately (display hex)
        # labelled metric children, looked up once (labels() costs more than inc())
        self._port_counters: dict[int, tuple] = {}
        self._reject_counters: dict[str, object] = {}

    def now(self) -> float:
        return self.clock.seconds()

    def share_accepted(self, s: MinerSession, worker, job, result, now: float) -> None:
        h = result.hash_int
        port = s.port.port
        # positional, in field order: (time, address, worker, difficulty,
        # share_difficulty, job_id, height, hash, network_difficulty,
        # is_block, port, ip)
        ev = ShareAccepted(
            now, worker.address, worker.name, result.credit, DIFF1_TARGET / h if h else _INF, job.id, job.height,
            h.to_bytes(32, "big").hex(), job.network_difficulty, result.is_block, port, s.ip,
        )
        counters = self._port_counters.get(port)
        if counters is None:
            counters = self._port_counters[port] = self._counters_for(port)
        counters[0].inc()
        counters[1].inc(result.credit)
        self.sink.share_accepted(ev)
        if result.is_block:
            self.block_found(s, worker, job, result, now)

    def _counters_for(self, port: int) -> tuple:
        label = str(port)
        return (self.metrics.shares_accepted.labels(label), self.metrics.share_difficulty_accepted.labels(label))

    def share_rejected(self, s: MinerSession, worker, reason: str, params) -> None:
        self.count_reject(reason)
        job_id = params[1] if len(params) > 1 and type(params[1]) is str else None
        now = self.now()
        self.sink.share_rejected(ShareRejected(
            time=now, reason=reason, address=worker.address if worker else None,
            worker=worker.name if worker else None, difficulty=s.difficulty,
            job_id=job_id[:64] if job_id else None, port=s.port.port, ip=s.ip,
        ))
        flood = self.flood
        if flood is not None:
            st = s.flood
            if st is None:
                st = s.flood = flood.new_state(now)
            action = flood.on_reject(st, reason, now)
            if action is not None:
                self._flood_step(s, action, now)

    def _flood_step(self, s: MinerSession, action: str, now: float) -> None:
        """Carry out what the flood policy decided for session ``s``."""
        who = f"{s.ip} ({next(iter(s.workers), 'not authorized')})"
        if action == NEW_WORK:
            if s.fresh_work():
                self.count_flood(NEW_WORK)
                log.info("flood: %s sent mostly invalid shares (%d%% or more of the last %d counted submits): "
                         "fresh work sent", who, round(self.flood.invalid_fraction * 100), self.flood.window)
                return
            action = DISCONNECT  # nothing to re-send: not mining yet
        self.count_flood(DISCONNECT)
        if action == RATE:
            reason = "reject-rate"
            log.warning("flood: closing %s: rejected submits faster than %g a second (burst %d)", who, self.flood.rate,
                        self.flood.burst)
        elif action == REQUESTS:
            reason = "request-rate"
            log.warning("flood: closing %s: requests other than submits went on far past %g a second (burst %d)", who,
                        1 / self.requests.interval, self.requests.burst)
        else:
            reason = "flood"
            log.warning("flood: closing %s: mostly invalid shares again after fresh work", who)
        s.proto.close(reason)
        if self.exempt(s.ip):
            log.info("flood: %s is in stratum.connection_limit_exempt: never banned", s.ip)
            return
        strikes = self.bans.strike(s.ip, now)
        ban = self.bans.banned(s.ip, now)
        if ban is not None and strikes >= self.bans.ban_after:
            self.count_flood(BAN)
            log.warning("flood: banning %s for %ds: %d flood disconnects within %ds", s.ip, round(self.bans.ban_seconds),
                        strikes, round(self.bans.ban_period))

    def request_refused(self, s: MinerSession, verdict: int, tat: float) -> None:
        """A request past ``s``'s budget (``RequestBudget``): counted, logged
        at the first of a run, and a sustained excess closes the connection."""
        if verdict == OVERDRAWN:
            self._flood_step(s, REQUESTS, self.now())
            return
        self.metrics.requests_refused.inc()
        if self.requests.first_refusal(tat, self.now()):
            log.info("refusing requests from %s (%s): more than %g a second (burst %d)", s.ip,
                     next(iter(s.workers), "not authorized"), 1 / self.requests.interval, self.requests.burst)

    def _found(self, worker, job, result, now: float, h: str) -> BlockFound:
        return BlockFound(
            time=now, height=job.height, hash=h, prevhash=hash_to_hex(parse_header(result.header)["prevhash"]),
            address=worker.address, worker=worker.name, reward=job.template.coinbasevalue,
            share_difficulty=result.share_difficulty, network_difficulty=job.network_difficulty, job_id=job.id,
            block_hex=job.build_block(result.coinbase, result.header).hex(),
        )

    def _remember_block(self, h: str) -> None:
        self._block_hashes[h] = None
        while len(self._block_hashes) > 10_000:
            self._block_hashes.popitem(last=False)

    def stale_block(self, s: MinerSession, worker, job, result, late: bool = False) -> str | None:
        """A share that meets the network target on a job a new tip replaced
        (``validate_share`` said stale-job, with ``is_block``). Returns None
        when the job's previous block is the tip again: the block is valid
        and the caller credits and submits it like any other. Otherwise the
        reject reason: ``duplicate`` for a block seen before, else
        ``stale-job``, once the lost block is recorded (block journal,
        status ``stale``; an error line; ``hashcoop_blocks_stale_total``).
        ``late``: the share is credited all the same (``late_share``), which
        the error line says."""
        h = hash_to_hex(result.hash)
        if h in self._block_hashes:
            return Reject.DUPLICATE
        self._remember_block(h)
        if job.prevhash == self.jobs.prevhash:
            return None
        tip = hash_to_hex(self.jobs.prevhash) if self.jobs.prevhash else "none"
        found = self._found(worker, job, result, self.now(), h)
        reason = f"its previous block {found.prevhash} is no longer the tip ({tip})"
        log.error("stale block %d %s by %s.%s (%s): %s; not submitted%s", job.height, h, worker.address, worker.name, s.ip,
                  reason, " (a late share: credited as a share)" if late else "")
        self.metrics.blocks_stale.inc()
        if self.block_submitter is not None:
            self.block_submitter.record_stale(found, reason)
        return Reject.STALE_JOB

    def late_share(self, s: MinerSession, worker, job, result) -> ShareResult:
        """A valid share on a job of the tip a new tip replaced less than
        ``stratum.stale_grace`` seconds ago (``JobManager.in_grace``): the
        miner found it before it could read the new job, so it is credited
        like any share. It cannot extend the chain: a block it solves is
        recorded as lost (``stale_block``) and the share is credited as a
        share only."""
        self.metrics.shares_late.inc()
        if not result.is_block:
            return result
        verdict = self.stale_block(s, worker, job, result, late=True)
        if verdict == Reject.DUPLICATE:
            return ShareResult(False, Reject.DUPLICATE)
        return ShareResult(True, None, result.hash_int, result.credit, False, result.header, result.coinbase)

    def block_found(self, s: MinerSession, worker, job, result, now: float) -> None:
        h = hash_to_hex(result.hash)
        self._remember_block(h)
        found = self._found(worker, job, result, now, h)
        self.blocks_found += 1
        self.metrics.blocks_found.inc()
        self.sink.block_found(found)
        if self.work is not None:
            self.work.own_block(found, job.template)  # miners move onto the block at once
        if self.block_submitter is not None:
            verdict = self.block_submitter.submit(found)  # journaled (fsync) first, then to every node
            if self.work is not None:
                verdict.addCallback(self.work.own_block_verdict)
        message = f"Block {job.height} found by {worker.name} ({worker.address[:12]}...): {h}"
        for other in list(self.ready):
            other.show_message(message)

    def count_reject(self, reason: str) -> None:
        c = self._reject_counters.get(reason)
        if c is None:
            c = self._reject_counters[reason] = self.metrics.shares_rejected.labels(reason)
        c.inc()

    def count_flood(self, action: str) -> None:
        self.metrics.flood_actions.labels(action).inc()
