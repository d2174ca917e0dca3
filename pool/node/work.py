"""``WorkSource``: keeps the template the pool mines on, refreshes it, and
turns new-tip hints into new templates as fast as possible.

``listener(template, clean)`` is called with ``clean=True`` as soon as a
template on a new previous block is known, and with ``clean=False`` for a
periodic refresh (new transactions and fees, later time) or a longpoll
answer on the same tip.

Hints from every source (longpoll, ZMQ, ``hashcoop notify``, the
getbestblockhash poll) go through :meth:`WorkSource.hint`:

* a hint for the block we already build on, or for a tip we have already
  moved past, is ignored;
* otherwise a template fetch starts at once; hints that arrive while one is
  in flight coalesce into it, plus a single follow-up fetch if any of them
  names a block the fetched template does not build on;
* a fetch asks the node set for a template above the current height when a
  hint named a new block, and at least at the current height otherwise: a
  node below that (not caught up yet, or behind after a restart) is passed
  over for the next one, so a lagging first node cannot hold the pool on an
  old tip.

Which template wins when answers disagree (several nodes, answers crossing
each other):

* a higher template height always wins (a new tip);
* a different tip at the same or a lower height is taken only from the node
  the current template came from (a reorg there) or when that node is down
  (failover); otherwise it is a lagging or competing node and is ignored;
* an answer to a request sent before the current template was installed
  never moves the tip back (two answers crossing).

A block the pool finds itself (:meth:`WorkSource.own_block`) becomes the
tip at once: miners get an empty-block job on it (``template.successor``)
in the same moment, instead of working on the replaced tip until a node's
template arrives (tens of milliseconds on regtest, up to a few hundred on
mainnet, each a window for stale shares). The node's template for that tip
then replaces it as soon as any source reports the block, with
``clean=True`` so that miners move to the transactions and their fees at
once; the empty job's shares stay valid (same previous block). Unless a
node took the block in the submitter's first round, a template is fetched
at once: where no node has it, the tip moves back.

When every node is down the last template stays current and fetches are
retried with backoff; the state change is logged once, not per attempt.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable, Iterable

from twisted.application.service import Service
from twisted.internet import defer

from hashcoop.pool.core.btc.block import parse_header
from hashcoop.pool.core.btc.hashing import hex_to_hash
from hashcoop.pool.core.btc.target import bits_difficulty
from hashcoop.pool.core.template import Template, signet_needs_solution, successor
from hashcoop.pool.node.tipwatch import BestHashPoller, LongPoller, NotifyListener, ZMQHashblock

log = logging.getLogger("hashcoop.work")

# Sources whose template on the same tip is passed on with clean=False.
_REFRESH_SOURCES = frozenset({"refresh", "longpoll", "retry"})
_REMEMBER = 64  # tips and hint times kept for de-duplication


class WorkSource(Service):
    name = "work"

    def __init__(
        self,
        reactor,
        nodes,
        listener: Callable[[Template, bool], None],
        *,
        refresh_interval: float = 30.0,
        poll_interval: float | None = 1.0,
        longpoll: bool | Iterable[str] = True,
        zmq_endpoints: Iterable[str] = (),
        notify_endpoint: str | None = None,
        metrics=None,
        clock=None,
        longpoll_timeout: float = 300.0,
        retry_min: float = 0.5,
        retry_max: float = 5.0,
        network=None,
    ):
        """``longpoll``: True for every node, False for none, or the names
        of the nodes to longpoll. ``poll_interval`` None or 0 disables the
        getbestblockhash poll. ``clock`` (default: ``reactor``) runs every
        timer. ``network`` (a ``hashcoop.pool.core.btc.address.Network``) turns on mining
        at once on blocks the pool finds (:meth:`own_block`); None leaves
        that to the nodes' templates."""
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.nodes = nodes
        self.listener = listener
        self.refresh_interval = refresh_interval
        self.metrics = metrics
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.network = network
        self.speculative: str | None = None  # the own block (display hex) the current empty template builds on

        self.current: Template | None = None
        self.current_since: float | None = None
        self.tip_seen_at: float | None = None

        self._fetching: defer.Deferred | None = None
        self._hints_during_fetch: set[str | None] = set()
        self._refresh_due = False
        self._refresh_call = None
        self._retry_call = None
        self._retry_delay = retry_min
        self._down = False
        self._ready: list[defer.Deferred] = []
        self._past_tips: OrderedDict[str, None] = OrderedDict()
        self._first_hint: OrderedDict[str, tuple[float, str]] = OrderedDict()

        self.sources: list = []
        if longpoll is True:
            lp_nodes = list(nodes.names)
        elif longpoll is False:
            lp_nodes = []
        else:
            lp_nodes = list(longpoll)
        for name in lp_nodes:
            self.sources.append(LongPoller(nodes, name, self.offer_template, clock=self.clock, timeout=longpoll_timeout))
        for ep in zmq_endpoints:
            self.sources.append(ZMQHashblock(reactor, ep, self.hint))
        if notify_endpoint:
            self.sources.append(NotifyListener(reactor, notify_endpoint, self.hint))
        if poll_interval:
            self.sources.append(BestHashPoller(nodes, self.hint, clock=self.clock, interval=poll_interval))

        if metrics is not None:
            metrics.template_age_seconds.set_function(self.template_age)

    # -- public --------------------------------------------------------------

    def template_age(self) -> float:
        """Seconds since the current template was installed (0 without one)."""
        if self.current_since is None:
            return 0.0
        return max(0.0, self.clock.seconds() - self.current_since)

    def ready(self) -> defer.Deferred:
        """Fires with the first template (at once if there is one)."""
        if self.current is not None:
            return defer.succeed(self.current)
        d = defer.Deferred()
        self._ready.append(d)
        return d

    def hint(self, blockhash: str | None, source: str) -> None:
        """A source believes there is a new best block (display hex, or None
        when it does not know which)."""
        if not self.running:
            return
        if self.metrics is not None:
            self.metrics.tip_reports.labels(source=source).inc()
        if blockhash is not None:
            blockhash = blockhash.lower()
            if blockhash == self.speculative:
                pass  # a node has our own block now: fetch its template to replace the empty one
            elif self.current is not None and blockhash == self.current.prevhash_hex:
                return
            elif blockhash in self._past_tips:
                return
            if blockhash not in self._first_hint:
                self._first_hint[blockhash] = (self.clock.seconds(), source)
                while len(self._first_hint) > _REMEMBER:
                    self._first_hint.popitem(last=False)
        if self._fetching is not None:
            self._hints_during_fetch.add(blockhash)
            return
        # a node reporting our own block has the tip we build on already (not a newer one)
        self._fetch("hint", newer=blockhash is not None and blockhash != self.speculative)

    def own_block(self, found, template: Template) -> None:
        """The pool found block ``found`` (a ``BlockFound``) on ``template``:
        when that is still the tip, mine on the block at once, on an empty
        template (``template.successor``), until a node's template for it
        arrives."""
        if not self.running or self.network is None:
            return
        cur = self.current
        if cur is None or cur.prevhash != template.prevhash:
            return  # the pool has moved on already (a share arriving late, a reorg)
        header = parse_header(bytes.fromhex(found.block_hex[:160]))
        tpl = successor(template, hex_to_hash(found.hash), header["time"], self.network)
        if tpl is not None:
            self._install(tpl, True, "found")

    def own_block_verdict(self, status):
        """The submitter's first round for an own block (a ``BlockStatus``):
        unless a node took the block the pool mines on, fetch a template at
        once. If every node rejected it, or none has it, that moves the tip
        back; a node that has it after all answers with a template on it.
        Returns ``status``."""
        if status.status != "submitted" and self.speculative == status.hash:
            (log.error if status.status == "rejected" else log.warning)(
                "own block %s is %s (%s): asking the nodes for their tip", status.hash, status.status, status.verdicts)
            self.hint(None, "own-block-" + status.status)
        return status

    def offer_template(self, template: Template, source: str) -> None:
        """A template that arrived on its own (longpoll)."""
        if not self.running:
            return
        if self.metrics is not None:
            self.metrics.tip_reports.labels(source=source).inc()
        self._count_fetched(template)
        self._offer(template, source, requested_at=None)

    # -- fetching ------------------------------------------------------------

    def _fetch(self, reason: str, newer: bool = False) -> None:
        """``newer``: a hint named a block we do not build on, so a node
        whose template is not above the current height has not got it yet
        and the next node is asked (NodeSet.get_template's min_height);
        otherwise only a node behind the current template is passed over."""
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        self._hints_during_fetch = set()
        requested_at = self.clock.seconds()
        min_height = 0 if self.current is None else self.current.height + (1 if newer else 0)
        d = self.nodes.get_template(min_height=min_height)
        self._fetching = d
        d.addCallbacks(self._fetched, self._fetch_failed, callbackArgs=(reason, requested_at), errbackArgs=(reason,))
        d.addErrback(lambda f: log.error("template fetch: %s", f.getTraceback()))

    def _fetched(self, tpl: Template, reason: str, requested_at: float) -> None:
        self._fetching = None
        self._retry_delay = self.retry_min
        if self._down:
            log.info("templates again, from %s (height %d)", tpl.node, tpl.height)
            self._down = False
        if self._refresh_due:
            self._refresh_due = False
            if reason == "hint":
                reason = "refresh"
        self._count_fetched(tpl)
        self._offer(tpl, reason, requested_at)
        self._schedule_refresh()
        if self.running and self.current is not None:
            tip = self.current.prevhash_hex
            unseen = [h for h in self._hints_during_fetch if h is None or (h != tip and h not in self._past_tips)]
            if unseen:
                self._fetch("hint", newer=any(h is not None for h in unseen))

    def _fetch_failed(self, f, reason: str) -> None:
        self._fetching = None
        if f.check(defer.CancelledError) and not self.running:
            return
        if not self._down:
            self._down = True
            if self.current is None:
                log.error("no node serves a template yet, retrying: %s", f.value)
            else:
                log.error("no node serves templates; keeping the last one (height %d), retrying: %s", self.current.height, f.value)
        if self.running:
            delay, self._retry_delay = self._retry_delay, min(self._retry_delay * 2, self.retry_max)
            self._retry_call = self.clock.callLater(delay, self._fetch, "retry")

    def _refresh(self) -> None:
        self._refresh_call = None
        if self._fetching is not None:
            self._refresh_due = True
        elif self._retry_call is None:
            self._fetch("refresh")

    def _schedule_refresh(self) -> None:
        if self._refresh_call is not None and self._refresh_call.active():
            self._refresh_call.cancel()
        self._refresh_call = self.clock.callLater(self.refresh_interval, self._refresh) if self.running else None

    def _count_fetched(self, tpl: Template) -> None:
        if self.metrics is not None:
            self.metrics.templates_fetched.labels(node=tpl.node).inc()

    # -- choosing the template -------------------------------------------------

    def _offer(self, tpl: Template, source: str, requested_at: float | None) -> None:
        cur = self.current
        if cur is None:
            self._install(tpl, True, source)
        elif tpl.prevhash == cur.prevhash:
            if self.speculative is not None:
                self._install(tpl, True, source)  # the node's template for our own block: miners take it at once
            elif source in _REFRESH_SOURCES:
                self._install(tpl, False, source)
        elif tpl.height > cur.height:
            self._install(tpl, True, source)
        elif requested_at is not None and self.current_since is not None and requested_at < self.current_since:
            log.debug("ignoring an answer from %s requested before the current template", tpl.node)
        elif requested_at is None and self.speculative is not None:
            log.debug("ignoring a longpoll answer from %s on a tip before the pool's own block", tpl.node)
        elif tpl.node == cur.node or not self._node_healthy(cur.node):
            log.warning("tip moved back to %s at height %d (node %s)", tpl.prevhash_hex, tpl.height, tpl.node)
            self._install(tpl, True, source)
        else:
            log.info("node %s builds on %s at height %d, behind or beside %s at %d; ignored",
                     tpl.node, tpl.prevhash_hex, tpl.height, cur.prevhash_hex, cur.height)

    def _node_healthy(self, name: str) -> bool:
        try:
            return self.nodes.is_healthy(name)
        except KeyError:
            return False

    def _install(self, tpl: Template, clean: bool, source: str) -> None:
        now = self.clock.seconds()
        previous = self.current
        self.current = tpl
        self.current_since = now
        replacing, self.speculative = self.speculative, tpl.prevhash_hex if source == "found" else None
        if previous is None or tpl.prevhash != previous.prevhash:
            tip = tpl.prevhash_hex
            self._past_tips[tip] = None
            self._past_tips.move_to_end(tip)
            while len(self._past_tips) > _REMEMBER:
                self._past_tips.popitem(last=False)
            first = self._first_hint.pop(tip, None)
            self.tip_seen_at = first[0] if first else now
            seen_by = first[1] if first else source
            if previous is not None:
                if source == "found":
                    log.info("new tip %s, height %d: the pool's own block, mining on it (an empty block until a "
                             "node's template)", tip, tpl.height)
                else:
                    log.info("new tip %s, height %d, first seen by %s, template from %s", tip, tpl.height, seen_by,
                             tpl.node)
                if self.metrics is not None:
                    self.metrics.new_tips.labels(source=seen_by).inc()
            else:
                log.info("first template: height %d on %s from %s", tpl.height, tip, tpl.node)
        elif replacing == tpl.prevhash_hex:  # the node's template for our own block
            log.info("own block %s, height %d, reported by %s, template from %s", tpl.prevhash_hex, tpl.height, source,
                     tpl.node)
        challenge = tpl.signet_challenge
        new_challenge = previous is None or previous.signet_challenge != challenge
        if challenge is not None and new_challenge and signet_needs_solution(challenge):
            log.error("this signet's challenge %s needs a signature in every block, which hashcoop cannot make: "
                      "Bitcoin Core will reject each block the pool finds (bad-signet-blksig). Shares are counted "
                      "as usual; to find blocks, mine a signet anyone can sign (bitcoind -signet -signetchallenge=51)",
                      challenge.hex())
        if self.metrics is not None:
            self.metrics.template_height.set(tpl.height)
            self.metrics.network_difficulty.set(bits_difficulty(tpl.bits))
        self._schedule_refresh()
        waiters, self._ready = self._ready, []
        for d in waiters:
            d.callback(tpl)
        try:
            self.listener(tpl, clean)
        except Exception:
            log.exception("template listener failed")

    # -- service ---------------------------------------------------------------

    def startService(self):
        Service.startService(self)
        log.info("new-block sources: %s", "; ".join(s.describe() for s in self.sources)
                 or f"none (only the template refresh every {self.refresh_interval:g} s)")
        self._fetch("startup")
        for s in self.sources:
            try:
                started = s.start()
            except Exception as e:
                log.error("tip source %s failed to start: %s", type(s).__name__, e)
                continue
            if isinstance(started, defer.Deferred):
                started.addErrback(lambda f, s=s: log.error("tip source %s failed to start: %s", type(s).__name__, f.value))

    def stopService(self):
        Service.stopService(self)
        for call in (self._refresh_call, self._retry_call):
            if call is not None and call.active():
                call.cancel()
        self._refresh_call = self._retry_call = None
        if self._fetching is not None:
            self._fetching.cancel()
        stops = []
        for s in self.sources:
            try:
                r = s.stop()
            except Exception:
                log.exception("stopping %s", type(s).__name__)
                continue
            if isinstance(r, defer.Deferred):
                stops.append(r)
        return defer.gatherResults(stops, consumeErrors=True).addCallback(lambda _: None)
