"""Prometheus metrics. One ``Metrics`` object per process, built at the
wiring point on its own CollectorRegistry and passed to whoever records.
Never the prometheus_client global registry.

Names follow Prometheus conventions: units in names, ``_total`` counters,
bounded labels (port, reason, node, method, result; no per-worker labels).
"""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
VALIDATION_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 50000)


HASHRATE_WINDOWS = ("1m", "5m", "1h", "24h")


class SampledTimer:
    """Times one call in every ``every`` into a histogram: cheap enough for
    the share hot path (the other calls cost a decrement and a compare).

    ``wrap(fn)`` returns ``fn`` timed this way, same arguments and result::

        validate = metrics.share_validation.wrap(validate_share)
    """

    __slots__ = ("histogram", "every", "left", "clock")

    def __init__(self, histogram: Histogram, every: int = 16, clock=time.perf_counter):
        if every < 1:
            raise ValueError("every must be >= 1")
        self.histogram = histogram
        self.every = every
        self.left = every
        self.clock = clock

    def wrap(self, fn):
        histogram, clock = self.histogram, self.clock

        def timed(*args, **kwargs):
            self.left -= 1
            if self.left:
                return fn(*args, **kwargs)
            self.left = self.every
            t = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                histogram.observe(clock() - t)

        timed.__wrapped__ = fn
        return timed


class _NullMetric:
    """Every metric of ``NullMetrics``: takes every call and keeps nothing."""

    __slots__ = ()

    def labels(self, *args, **kwargs) -> "_NullMetric":
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, value: float) -> None:
        pass

    def set_function(self, fn) -> None:
        pass

    def wrap(self, fn):
        return fn


_NULL_METRIC = _NullMetric()


class NullMetrics:
    """Stands for ``Metrics`` where there are none (tools, tests): every
    attribute is a metric that records nothing, so callers need no
    ``if metrics`` guard. It is false in a boolean test, for the few that
    skip work only metrics would use."""

    def __getattr__(self, name: str) -> _NullMetric:
        if name.startswith("__"):
            raise AttributeError(name)
        return _NULL_METRIC

    def __bool__(self) -> bool:
        return False


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, validation_sample_every: int = 16):
        self.registry = r = registry if registry is not None else CollectorRegistry()
        # Stratum
        self.connections = Gauge("hashcoop_connections", "Open Stratum connections", ["port"], registry=r)
        self.workers_authorized = Gauge("hashcoop_workers_authorized", "Authorized workers", ["port"], registry=r)
        self.connections_refused = Counter(
            "hashcoop_connections_refused_total", "Connections refused before a session started", ["reason"], registry=r
        )
        self.disconnects = Counter("hashcoop_disconnects_total", "Connections the pool closed, by reason", ["reason"], registry=r)
        self.protocol_errors = Counter(
            "hashcoop_protocol_errors_total", "Malformed or unexpected Stratum messages", ["kind"], registry=r
        )
        self.shares_accepted = Counter("hashcoop_shares_accepted_total", "Accepted shares", ["port"], registry=r)
        self.shares_rejected = Counter("hashcoop_shares_rejected_total", "Rejected shares by reason", ["reason"], registry=r)
        self.shares_late = Counter("hashcoop_shares_late_total", "Shares on the tip a new tip had just replaced, credited "
                                   "within stratum.stale_grace", registry=r)
        self.share_difficulty_accepted = Counter(
            "hashcoop_share_difficulty_accepted_total", "Sum of credited difficulty of accepted shares", ["port"], registry=r
        )
        self.share_validation_seconds = Histogram(
            "hashcoop_share_validation_seconds", "Time to validate one share (one share in every few is timed)",
            buckets=VALIDATION_BUCKETS, registry=r,
        )
        # the hook Stratum wraps validate_share with (see SampledTimer)
        self.share_validation = SampledTimer(self.share_validation_seconds, validation_sample_every)
        self.hashrate = Gauge(
            "hashcoop_hashrate_hashes_per_second",
            "Hashrate of the shares this process accepted (credited difficulty x 2^32 / seconds), by window",
            ["window"], registry=r,
        )
        self.jobs_broadcast = Counter("hashcoop_jobs_broadcast_total", "Jobs sent to all miners", ["clean"], registry=r)
        self.tip_to_notify_seconds = Histogram(
            "hashcoop_tip_to_notify_seconds",
            "From learning of a new tip to the last miner's clean job being written",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.flood_actions = Counter(
            "hashcoop_flood_actions_total",
            "Steps taken against connections sending mostly invalid shares: new_work, disconnect (mostly invalid after "
            "new work, or the reject rate exceeded), ban (an IP's new connections refused for a while)",
            ["action"], registry=r,
        )
        self.banned_peers = Gauge("hashcoop_banned_peers", "Peer IPs whose new connections are refused for flooding", registry=r)
        self.requests_refused = Counter(
            "hashcoop_requests_refused_total",
            "Requests other than submits refused for coming faster than stratum.request_rate (past request_burst)",
            registry=r)
        self.difficulty_coalesced = Counter(
            "hashcoop_difficulty_changes_coalesced_total",
            "Difficulty changes held back by stratum.difficulty_change_interval (later ones replace them)", registry=r)
        self.output_pauses = Counter(
            "hashcoop_output_pauses_total",
            "Times the pool stopped reading from a connection whose unsent replies passed stratum.output_pause_bytes",
            registry=r)
        self.output_blocked = Gauge(
            "hashcoop_connections_output_blocked", "Connections not read now because their replies are unsent", registry=r)
        self.output_held = Gauge(
            "hashcoop_output_held_bytes", "Unsent bytes the pool holds for the connections it is not reading", registry=r)
        self.vardiff_retargets = Counter("hashcoop_vardiff_retargets_total", "Difficulty changes sent", ["direction"], registry=r)
        # Work and blocks
        self.templates_fetched = Counter("hashcoop_templates_fetched_total", "getblocktemplate answers", ["node"], registry=r)
        self.template_age_seconds = Gauge("hashcoop_template_age_seconds", "Age of the current template", registry=r)
        self.template_height = Gauge("hashcoop_template_height", "Height of the block being mined", registry=r)
        self.network_difficulty = Gauge("hashcoop_network_difficulty", "Network difficulty of the current template", registry=r)
        self.new_tips = Counter("hashcoop_new_tips_total", "New best blocks detected, by the source that saw it first", ["source"], registry=r)
        self.tip_reports = Counter("hashcoop_tip_reports_total", "Reports from the new-block sources (zmq, notify, poll "
                                   "hints; longpoll answers), first or not: a source at 0 is not working", ["source"], registry=r)
        self.blocks_found = Counter("hashcoop_blocks_found_total", "Shares that met the network target", registry=r)
        self.blocks_stale = Counter(
            "hashcoop_blocks_stale_total",
            "Shares that met the network target on a job a new tip had replaced (recorded, not submitted)", registry=r,
        )
        self.block_submissions = Counter(
            "hashcoop_block_submissions_total", "submitblock answers by node and result", ["node", "result"], registry=r
        )
        self.blocks_pending_submission = Gauge(
            "hashcoop_blocks_pending_submission", "Found blocks no node has taken yet", registry=r
        )
        # Node RPC
        self.rpc_seconds = Histogram(
            "hashcoop_rpc_request_seconds", "Node RPC latency", ["node", "method"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.rpc_errors = Counter("hashcoop_rpc_errors_total", "Node RPC failures", ["node", "method", "kind"], registry=r)
        self.node_up = Gauge("hashcoop_node_up", "1 when the node answered its last call", ["node"], registry=r)
        # Share accounting (Redis)
        self.redis_flush_seconds = Histogram(
            "hashcoop_redis_flush_seconds", "Time to write one batch of shares to Redis", buckets=LATENCY_BUCKETS, registry=r
        )
        self.redis_batch_shares = Histogram(
            "hashcoop_redis_batch_shares", "Accepted shares per batch written to Redis", buckets=BATCH_BUCKETS, registry=r
        )
        self.redis_up = Gauge("hashcoop_redis_up", "1 when the last write to Redis succeeded", registry=r)
        self.redis_errors = Counter("hashcoop_redis_errors_total", "Failed batch writes to Redis, by kind", ["kind"], registry=r)
        self.redis_batches_duplicate = Counter(
            "hashcoop_redis_batches_duplicate_total", "Replayed batches Redis had already applied (skipped)", registry=r
        )
        self.shares_buffered = Gauge(
            "hashcoop_shares_buffered", "Accepted shares not yet written to Redis (in memory or in the journal)", registry=r
        )
        self.shares_spilled = Counter(
            "hashcoop_shares_spilled_total", "Accepted shares moved out of the full memory buffer, waiting in the journal file only", registry=r
        )
        self.withholding_suspects = Gauge(
            "hashcoop_withholding_suspects",
            "Workers (level=worker) and addresses (level=address) that found improbably few blocks for their shares "
            "(possible block withholding, accounting.withholding_alpha; docs/withholding.md)",
            ["level"], registry=r,
        )
        self.journal_bytes = Gauge("hashcoop_journal_bytes", "Size of the accounting journal on disk", registry=r)
        self.journal_replayed_batches = Counter(
            "hashcoop_journal_replayed_batches_total", "Batches found in the journal at start and replayed", registry=r
        )
        # HTTP side: connections and their bounds (pool/http/bounds.py)
        self.http_connections = Gauge("hashcoop_http_connections", "Open HTTP connections, by listener (public, operator)",
                                      ["listener"], registry=r)
        self.http_connections_refused = Counter(
            "hashcoop_http_connections_refused_total",
            "HTTP connections refused at once (503), by reason: max-connections (http.max_connections open on the "
            "listener), per-ip-limit (http.max_connections_per_ip open from the peer's IP)", ["reason"], registry=r,
        )
        self.http_disconnects = Counter(
            "hashcoop_http_disconnects_total",
            "HTTP connections the pool closed, by reason: idle-timeout (no request for http.idle_timeout), write-stalled "
            "(backed-up output the peer took none of for http.write_timeout: aborted), request-timeout (a request still "
            "arriving after http.request_timeout), body-too-large (a request body over 64 KiB or chunked: 413, unread)",
            ["reason"], registry=r,
        )
        self.per_worker = False  # enable_per_worker() adds the worker_* counters

    # -- opt-in, unbounded labels --------------------------------------------------
    def enable_per_worker(self) -> None:
        """Per-worker counters labelled by address and worker: one series per
        worker, so only for small pools ([http] per_worker_metrics)."""
        if self.per_worker:
            return
        self.per_worker = True
        r = self.registry
        self.worker_shares_accepted = Counter(
            "hashcoop_worker_shares_accepted_total", "Accepted shares by worker", ["address", "worker"], registry=r
        )
        self.worker_share_difficulty_accepted = Counter(
            "hashcoop_worker_share_difficulty_accepted_total", "Sum of credited difficulty by worker", ["address", "worker"],
            registry=r,
        )
        self.worker_shares_rejected = Counter(
            "hashcoop_worker_shares_rejected_total", "Rejected shares by worker and reason", ["address", "worker", "reason"],
            registry=r,
        )
        self.worker_last_share = Gauge(
            "hashcoop_worker_last_share_timestamp_seconds", "Time of the worker's last accepted share", ["address", "worker"],
            registry=r,
        )

    # -- the payout process (payouts/service.py) --------------------------------------
    def enable_payouts(self) -> None:
        """Payout metrics: blocks by ledger status, satoshis owed and in
        flight, payments sent, confirmed and failed, pass timing, the lease."""
        if getattr(self, "payouts", False):
            return
        self.payouts = True
        r = self.registry
        self.payout_blocks = Gauge("hashcoop_payout_blocks", "Blocks in the payout ledger by status", ["status"], registry=r)
        self.payout_owed_sat = Gauge("hashcoop_payout_owed_satoshis", "Balances owed to miners, not yet in a payment", registry=r)
        self.payout_in_flight_sat = Gauge("hashcoop_payout_in_flight_satoshis", "Debited into payments not yet confirmed", registry=r)
        self.payout_pending_reward_sat = Gauge("hashcoop_payout_pending_reward_satoshis", "Rewards of blocks not yet mature", registry=r)
        self.payout_addresses_held = Gauge("hashcoop_payout_addresses_held", "Addresses set aside because the wallet rejects them", registry=r)
        self.payments_sent = Counter("hashcoop_payments_sent_total", "Payment transactions the node accepted", registry=r)
        self.payments_confirmed = Counter("hashcoop_payments_confirmed_total", "Payment transactions confirmed", registry=r)
        self.payments_failed = Counter("hashcoop_payments_failed_total", "Payments that could never confirm (debits given back)", registry=r)
        self.payment_errors = Counter("hashcoop_payment_errors_total", "Payment attempts that stopped, by kind", ["kind"], registry=r)
        self.payout_pass_seconds = Histogram("hashcoop_payout_pass_seconds", "Time of one payout pass", buckets=LATENCY_BUCKETS, registry=r)
        self.payout_lease_held = Gauge("hashcoop_payout_lease_held", "1 while this process holds the payout lease", registry=r)
        self.payout_pass_failures = Counter(
            "hashcoop_payout_pass_failures_total", "Payout passes that stopped early, by kind (ledger, node, lease, error)",
            ["kind"], registry=r,
        )
