"""``BlockSubmitter``: a found block is journaled, submitted to every node,
re-checked until a node has it, then followed on chain.

Journal
    An append-only JSON-lines file. A found block is written (and fsynced)
    *before* it is submitted, and every status change after it, so a block
    survives the process dying at any point. ``startService`` replays the
    file and carries on with every block that is not final. A torn last line
    (crash mid-write) is skipped. The file is never rewritten.

Verdicts (Bitcoin Core's ``submitblock``, BIP22)
    ``null`` and ``duplicate``: the node has the block. ``inconclusive``, a
    timeout, an unreachable node or an RPC error that is not about the block
    (warm-up, IBD): unknown, asked again later -- ``getblockheader`` first;
    a block already in the node's main chain counts as taken, otherwise it is
    submitted again (Core answers ``duplicate`` for a block it stored,
    ``duplicate-invalid`` for one it found invalid). ``prev-blk-not-found``
    for a block built on one of the pool's own blocks still on its way to
    the nodes (found on ``WorkSource.own_block``'s empty template before a
    node had its parent) is unknown too, asked again from ``retry_min`` on.
    Any other string, and RPC error -22 (block decode failed), is a reject
    reason.

Statuses (``hashcoop.pool.core.events.BlockStatus``, emitted on each change)
    ``pending`` -- no node has taken it yet (retried with backoff from
    ``retry_min`` up to ``recheck_interval`` while no node is reachable, and
    at once when the node set sees a node answer again); ``submitted`` -- a
    node took it;
    ``rejected`` -- every node answered with a reject (final);
    ``confirmed`` -- ``getblockhash(height)`` is the block;
    ``orphaned`` -- another block holds that height; ``stale`` -- found on
    a job a new tip had replaced, recorded and never submitted (final,
    ``record_stale``). Confirmed and orphaned
    can still swap on a reorg; they become final (tracking stops) once the
    chain is ``final_depth`` blocks deep at that height (default 100, the
    coinbase maturity, after which a payout can rely on it).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
from twisted.application.service import Service
from twisted.internet import defer

from hashcoop.pool.core.events import BlockFound, BlockStatus, EventSink
from hashcoop.pool.node.nodes import NODE_NOT_READY_CODES, gather
from hashcoop.pool.rpc import RPCError, RPCTimeout, RPCTransportError

log = logging.getLogger("hashcoop.blocks")

RPC_DESERIALIZATION_ERROR = -22  # "Block decode failed"
RPC_INVALID_ADDRESS_OR_KEY = -5  # "Block not found"
RPC_INVALID_PARAMETER = -8  # "Block height out of range"

_REASON_RE = re.compile(r"[a-z0-9-]{1,40}")


def classify(verdict) -> str:
    """'accepted', 'rejected' or 'unknown' for one node's submitblock answer."""
    if verdict is None or verdict == "duplicate":
        return "accepted"
    if isinstance(verdict, RPCError):
        if isinstance(verdict, RPCTransportError) or verdict.code in NODE_NOT_READY_CODES:
            return "unknown"
        return "rejected" if verdict.code == RPC_DESERIALIZATION_ERROR else "unknown"
    if verdict in ("inconclusive", "duplicate-inconclusive"):
        return "unknown"
    return "rejected"


def verdict_text(verdict) -> str | None:
    """The verdict as recorded in BlockStatus.verdicts and the journal."""
    if verdict is None or isinstance(verdict, str):
        return verdict
    if isinstance(verdict, RPCTimeout):
        return "timeout"
    if isinstance(verdict, RPCTransportError):
        return "unreachable"
    if isinstance(verdict, RPCError):
        return f"rpc-error {verdict.code}: {verdict.message}"
    return repr(verdict)


def result_label(verdict) -> str:
    """A bounded ``result`` label for metrics.block_submissions."""
    if verdict is None:
        return "accepted"
    if isinstance(verdict, RPCTimeout):
        return "timeout"
    if isinstance(verdict, RPCTransportError):
        return "unreachable"
    if isinstance(verdict, RPCError):
        return "rejected" if classify(verdict) == "rejected" else "error"
    reason = str(verdict).split("(", 1)[0]  # bad-version(0x00000001) -> bad-version
    return reason if _REASON_RE.fullmatch(reason) else "rejected"


@dataclass
class TrackedBlock:
    found: BlockFound
    status: str = "new"  # new, pending, submitted, confirmed, orphaned, rejected, stale
    verdicts: dict[str, str | None] = field(default_factory=dict)
    outcome: dict[str, str] = field(default_factory=dict)  # node -> accepted/rejected/unknown
    reason: str | None = None
    final: bool = False
    delay: float = 0.0
    call: object = None  # the DelayedCall of the next round
    inflight: defer.Deferred | None = None
    in_round: bool = False  # a round runs (set before its first synchronous step, unlike inflight)
    awaits_parent: bool = False  # this round, a node lacked its parent, one of ours still in play

    @property
    def hash(self) -> str:
        return self.found.hash


class BlockSubmitter(Service):
    name = "blocks"

    def __init__(
        self,
        reactor,
        nodes,
        sink: EventSink,
        journal_path,
        *,
        recheck_interval: float = 10.0,
        retry_min: float = 0.5,
        final_depth: int = 100,
        metrics=None,
    ):
        self.reactor = reactor
        self.nodes = nodes
        self.sink = sink
        self.journal_path = Path(journal_path)
        self.recheck_interval = recheck_interval
        self.retry_min = retry_min
        self.final_depth = final_depth
        self.metrics = metrics
        self.blocks: dict[str, TrackedBlock] = {}
        self._journal = None
        self._listening = False  # registered for the node set's node-up events

    # -- public --------------------------------------------------------------

    def submit(self, found: BlockFound) -> defer.Deferred:
        """Journal ``found``, submit it to every node; fires with the
        BlockStatus after this first round ('submitted', 'rejected' or
        'pending'; never fails). Tracking carries on in the background."""
        if found.hash in self.blocks:
            return defer.succeed(self._status(self.blocks[found.hash]))
        self._append({"event": "found", "time": self.reactor.seconds(), "block": asdict(found)})
        t = TrackedBlock(found, delay=self.retry_min)
        self.blocks[found.hash] = t
        self._update_gauge()
        log.info("submitting block %d %s to %d node(s)", found.height, found.hash, len(self.nodes.names))
        return self._start_round(t)

    def record_stale(self, found: BlockFound, reason: str) -> None:
        """A block that cannot extend the chain: its share arrived after a
        new tip replaced its previous block. Journaled with the final status
        ``stale`` and the reason, never submitted, no event: kept so that
        the operator sees what was lost. Once per hash."""
        if found.hash in self.blocks:
            return
        now = self.reactor.seconds()
        self._append({"event": "found", "time": now, "block": asdict(found)})
        t = TrackedBlock(found, status="stale", reason=reason, final=True)
        self.blocks[found.hash] = t
        self._append({"event": "status", "time": now, "hash": t.hash, "status": "stale", "verdicts": {}, "outcome": {},
                      "reason": reason, "final": True})

    def status_of(self, blockhash: str) -> str | None:
        t = self.blocks.get(blockhash)
        return t.status if t else None

    # -- rounds ----------------------------------------------------------------

    def _start_round(self, t: TrackedBlock) -> defer.Deferred:
        t.call = None
        t.in_round = True
        d = defer.Deferred.fromCoroutine(self._round(t))
        t.inflight = d

        def done(result):
            t.inflight = None
            t.in_round = False
            return result

        d.addBoth(done)

        def failed(f):
            # The caller (the Stratum side) does not wait for this: answer
            # with where the block stands instead of an error nobody handles.
            if not f.check(defer.CancelledError):
                log.error("block %s: round failed: %s", t.hash, f.getTraceback())
                self._schedule(t, self.recheck_interval)
            return self._status(t)

        return d.addErrback(failed)

    async def _round(self, t: TrackedBlock) -> BlockStatus:
        # outage: every node we still wait for was unreachable this round
        t.awaits_parent = False
        if t.status == "new":
            answers = await self.nodes.submit_block(t.found.block_hex)
            for name, v in answers.items():
                self._record(t, name, v)
            waiting = [v for n, v in answers.items() if t.outcome[n] == "unknown"]
            outage = all(isinstance(v, RPCTransportError) for v in waiting)
        elif t.status == "pending":
            unknown = [n for n in self.nodes.names if t.outcome.get(n, "unknown") == "unknown"]
            answered = await gather([defer.Deferred.fromCoroutine(self._recheck_node(t, n)) for n in unknown])
            outage = not any(answered)
        else:
            outage = not await self._chain_round(t)
        self._evaluate(t)
        if not t.final:
            if t.status == "pending" and (outage or t.awaits_parent):
                delay, t.delay = t.delay, min(t.delay * 2, self.recheck_interval)
            else:
                t.delay = self.retry_min
                delay = self.recheck_interval
            self._schedule(t, delay)
        return self._status(t)

    async def _recheck_node(self, t: TrackedBlock, name: str) -> bool:
        """Ask one node that gave no verdict yet. True if it answered."""
        client = self.nodes.client(name)
        try:
            header = await client.call("getblockheader", t.hash, True)
        except RPCError as e:
            if e.code != RPC_INVALID_ADDRESS_OR_KEY:
                self._note_unknown(t, name, e)
                return not isinstance(e, RPCTransportError)
        else:
            if isinstance(header, dict) and isinstance(header.get("confirmations"), int) and header["confirmations"] >= 1:
                log.info("block %s is in %s's main chain", t.hash, name)
                t.outcome[name] = "accepted"
                if t.verdicts.get(name) not in (None, "duplicate"):
                    t.verdicts[name] = "duplicate"
                return True
        try:
            v = await client.call("submitblock", t.found.block_hex, timeout=self.nodes.submit_timeout)
        except RPCError as e:
            v = e
        self._record(t, name, v)
        return not isinstance(v, RPCTransportError)

    def _note_unknown(self, t: TrackedBlock, name: str, err: RPCError) -> None:
        t.outcome[name] = "unknown"
        if name not in t.verdicts:
            t.verdicts[name] = verdict_text(err)

    def _record(self, t: TrackedBlock, name: str, verdict) -> None:
        outcome = classify(verdict)
        if outcome == "rejected" and verdict == "prev-blk-not-found" and self._parent_in_play(t):
            # found on the pool's own block (WorkSource.own_block) before that
            # one reached this node (its answer still on the way, or the node
            # lagging): no verdict on this block yet, it goes again soon
            outcome = "unknown"
            t.awaits_parent = True
        t.outcome[name] = outcome
        t.verdicts[name] = verdict_text(verdict)
        label = result_label(verdict)
        if self.metrics is not None:
            self.metrics.block_submissions.labels(node=name, result=label).inc()
        if outcome == "rejected":
            log.error("block %s rejected by %s: %s", t.hash, name, verdict_text(verdict))
        elif outcome == "unknown":
            log.warning("block %s: no verdict from %s yet (%s)", t.hash, name, verdict_text(verdict))
        else:
            log.info("block %s accepted by %s%s", t.hash, name, " (duplicate)" if verdict == "duplicate" else "")

    async def _chain_round(self, t: TrackedBlock) -> bool:
        """Is the block at its height on the main chain? True if a node answered."""
        height = t.found.height
        try:
            count = await self.nodes.call_any("getblockcount")
            at_height = await self.nodes.call_any("getblockhash", height)
        except RPCError as e:
            if e.code == RPC_INVALID_PARAMETER:
                return True  # the chain is not that high (yet): look again later
            log.info("block %s: cannot check the chain: %s", t.hash, e)
            return False
        depth = int(count) - height + 1
        if at_height == t.hash:
            new, reason = "confirmed", None
        else:
            new, reason = "orphaned", f"block {at_height} holds height {height}"
        if depth >= self.final_depth:
            t.final = True
        self._set(t, new, reason)
        return True

    def _parent_in_play(self, t: TrackedBlock) -> bool:
        """The block's parent is one of the pool's own still on its way to
        the nodes (no node took or refused it yet): a node may get it still."""
        parent = self.blocks.get(t.found.prevhash)
        return parent is not None and parent.status in ("new", "pending")

    def _evaluate(self, t: TrackedBlock) -> None:
        if t.status not in ("new", "pending"):
            return
        outcomes = [t.outcome.get(n, "unknown") for n in self.nodes.names]
        if "accepted" in outcomes:
            self._set(t, "submitted", None)
        elif outcomes and all(o == "rejected" for o in outcomes):
            t.final = True
            reasons = sorted({t.verdicts[n] or "" for n in self.nodes.names})
            self._set(t, "rejected", ", ".join(reasons))
        else:
            self._set(t, "pending", None)

    def _set(self, t: TrackedBlock, status: str, reason: str | None) -> None:
        changed = status != t.status
        t.status = status
        t.reason = reason
        if changed or t.final:
            self._append({
                "event": "status", "time": self.reactor.seconds(), "hash": t.hash, "status": status,
                "verdicts": t.verdicts, "outcome": t.outcome, "reason": reason, "final": t.final,
            })
        if changed:
            ev = self._status(t)
            lvl = logging.ERROR if status in ("rejected", "orphaned") else logging.WARNING
            log.log(lvl, "block %d %s: %s%s", t.found.height, t.hash, status, f" ({reason})" if reason else "")
            try:
                self.sink.block_status(ev)
            except Exception:
                log.exception("block status sink failed")
        if t.final:
            log.info("block %s: final (%s), no longer tracked", t.hash, status)
            self._cancel(t)
        self._update_gauge()

    def _status(self, t: TrackedBlock) -> BlockStatus:
        return BlockStatus(
            time=self.reactor.seconds(), height=t.found.height, hash=t.hash,
            status="pending" if t.status == "new" else t.status,
            verdicts=dict(t.verdicts), reason=t.reason,
        )

    def _schedule(self, t: TrackedBlock, delay: float) -> None:
        if t.final:
            return
        if t.call is not None and t.call.active():
            t.call.cancel()
        t.call = self.reactor.callLater(delay, self._start_round, t)

    def _cancel(self, t: TrackedBlock) -> None:
        if t.call is not None and t.call.active():
            t.call.cancel()
        t.call = None

    def _update_gauge(self) -> None:
        if self.metrics is not None:
            n = sum(1 for t in self.blocks.values() if t.status in ("new", "pending"))
            self.metrics.blocks_pending_submission.set(n)

    # -- journal ---------------------------------------------------------------

    def _append(self, record: dict) -> None:
        """One JSON line, flushed and fsynced. A failing disk is logged but
        never stops a block from being submitted."""
        try:
            if self._journal is None:
                self._open_journal()
            self._journal.write(orjson.dumps(record) + b"\n")
            self._journal.flush()
            os.fsync(self._journal.fileno())
        except OSError as e:
            log.critical("cannot write block journal %s: %s; record was %s", self.journal_path, e, record)

    def _open_journal(self) -> None:
        created = not self.journal_path.exists()
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.journal_path, "ab")
        if not created and f.tell() > 0:
            with open(self.journal_path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write(b"\n")  # end a torn last line so it stays one bad line
        if created:
            fd = os.open(self.journal_path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)  # the new directory entry survives a crash too
            finally:
                os.close(fd)
        self._journal = f

    def load_journal(self) -> list[TrackedBlock]:
        """Read the journal; returns the blocks that are not final (already
        added to ``self.blocks``)."""
        if not self.journal_path.exists():
            return []
        loaded: dict[str, TrackedBlock] = {}
        with open(self.journal_path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = orjson.loads(line)
                    if rec["event"] == "found":
                        found = BlockFound(**rec["block"])
                        loaded.setdefault(found.hash, TrackedBlock(found, delay=self.retry_min))
                    elif rec["event"] == "status":
                        t = loaded.get(rec["hash"])
                        if t is None:
                            raise KeyError("status for an unknown block")
                        t.status = rec["status"]
                        t.verdicts = dict(rec.get("verdicts") or {})
                        t.outcome = dict(rec.get("outcome") or {})
                        t.reason = rec.get("reason")
                        t.final = bool(rec.get("final"))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    log.warning("%s:%d: skipping unreadable journal line (%s)", self.journal_path, lineno, e)
        resumed = []
        for h, t in loaded.items():
            if t.final or h in self.blocks:
                continue
            if t.status == "pending":
                # Verdicts from before the restart are stale: ask again.
                t.outcome = {n: o for n, o in t.outcome.items() if o != "unknown"}
            self.blocks[h] = t
            resumed.append(t)
        self._update_gauge()
        return resumed

    # -- service ---------------------------------------------------------------

    def _node_up(self, name: str) -> None:
        """A node answers again after an outage: blocks waiting for a node
        go out now, not when their backoff (up to ``recheck_interval``)
        runs out -- every second a found block waits, another block at its
        height is more likely to win."""
        if not self.running:
            return
        waiting = [t for t in self.blocks.values() if not t.final and t.status == "pending" and not t.in_round]
        if not waiting:
            return
        log.info("node %s answers again: submitting %d pending block(s) now", name, len(waiting))
        for t in waiting:
            self._cancel(t)
            t.delay = self.retry_min
            self._start_round(t)

    def startService(self):
        Service.startService(self)
        if not self._listening and hasattr(self.nodes, "on_node_up"):
            self.nodes.on_node_up(self._node_up)
            self._listening = True
        for t in self.load_journal():
            log.info("resuming block %d %s (%s) from the journal", t.found.height, t.hash, t.status)
        for t in list(self.blocks.values()):  # also those of an earlier start/stop
            if not t.final and t.call is None and t.inflight is None:
                self._start_round(t)

    def stopService(self):
        Service.stopService(self)
        if self._listening:
            self.nodes.remove_on_node_up(self._node_up)
            self._listening = False
        for t in self.blocks.values():
            self._cancel(t)
            if t.inflight is not None:
                t.inflight.cancel()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
