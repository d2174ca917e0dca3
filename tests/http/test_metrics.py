"""/metrics after a mining run: every metric the issue lists has moved, and
promtool accepts the exposition. Payout-side figures are the payout
process's own /metrics ([payouts] metrics_listen), not this one."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.http.rig import A, B

pytestmark = pytest.mark.slow

PROMTOOL = shutil.which("promtool")


def scrape(rig) -> dict[tuple[str, tuple], float]:
    status, _, body = rig.get("/metrics", base=rig.operator)
    assert status == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def present(samples, name: str) -> bool:
    return any(n == name for n, _ in samples)


def test_a_mining_run_moves_every_metric(rig):
    m = scrape(rig)
    port = str(rig.stratum_port)
    moved = {
        # Stratum: connections and authorized workers by port (rig1 and the probe are connected)
        "connections": total(m, "hashcoop_connections", port=port) >= 2,
        "workers authorized": total(m, "hashcoop_workers_authorized", port=port) >= 2,
        "shares accepted": total(m, "hashcoop_shares_accepted_total", port=port) > 0,
        "shares rejected by reason": total(m, "hashcoop_shares_rejected_total", reason="unknown-job") == 3,
        "accepted share difficulty": total(m, "hashcoop_share_difficulty_accepted_total", port=port) > 0,
        "pool hashrate": total(m, "hashcoop_hashrate_hashes_per_second", window="5m") > 0,
        # blocks: found, and submitted by node and result
        "blocks found": total(m, "hashcoop_blocks_found_total") >= 2,
        "blocks submitted (accepted)": total(m, "hashcoop_block_submissions_total", node="node0", result="accepted") >= 2,
        "blocks submitted (node down)": total(m, "hashcoop_block_submissions_total", node="backup", result="unreachable") >= 2,
        # work
        "templates fetched": total(m, "hashcoop_templates_fetched_total", node="node0") >= 2,
        "template age": present(m, "hashcoop_template_age_seconds") and total(m, "hashcoop_template_age_seconds") >= 0,
        "tip to last clean job": total(m, "hashcoop_tip_to_notify_seconds_count") >= 2,
        # node RPC latency and errors by method and node
        "rpc latency": total(m, "hashcoop_rpc_request_seconds_count", node="node0", method="getblocktemplate") > 0,
        "rpc errors": total(m, "hashcoop_rpc_errors_total", node="backup", method="submitblock", kind="transport") >= 2,
        # Redis
        "redis flush latency": total(m, "hashcoop_redis_flush_seconds_count") > 0,
        "redis batch size": total(m, "hashcoop_redis_batch_shares_count") > 0 and total(m, "hashcoop_redis_batch_shares_sum") > 0,
        "redis up": total(m, "hashcoop_redis_up") == 1,
        "shares buffered": present(m, "hashcoop_shares_buffered"),
        "shares spilled": present(m, "hashcoop_shares_spilled_total"),
        # HTTP side: the scrape's own connection is open on the operator listener
        "http connections": total(m, "hashcoop_http_connections", listener="operator") >= 1,
        # per-worker labels (enabled in this rig's config)
        "per-worker accepted": total(m, "hashcoop_worker_shares_accepted_total", address=A, worker="rig1") > 0,
        "per-worker rejected": total(m, "hashcoop_worker_shares_rejected_total", address=B, worker="probe",
                                     reason="unknown-job") == 3,
    }
    assert [k for k, ok in moved.items() if not ok] == []
    # the share counters agree with the miners
    told = sum(len(mi.accepted()) for mi in rig.miners)
    assert total(m, "hashcoop_shares_accepted_total") >= told


def test_share_validation_time_is_observed(rig):
    m = scrape(rig)
    assert total(m, "hashcoop_share_validation_seconds_count") > 0


def test_promtool_accepts_the_exposition(rig, tmp_path):
    if PROMTOOL is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'; .ci/run installs it)")
    status, _, body = rig.get("/metrics", base=rig.operator)
    assert status == 200
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert res.returncode == 0, (res.stdout + res.stderr).decode()


def test_per_worker_labels_are_off_by_default():
    from prometheus_client import generate_latest
    from twisted.internet.task import Clock

    from hashcoop.pool.config import load_config
    from hashcoop.pool.http.sinks import MetricsSink
    from hashcoop.pool.metrics import Metrics

    cfg = load_config(data={"pool": {"address": A}, "nodes": [{"url": "http://x"}], "http": {}}, env={})
    assert cfg.http.per_worker_metrics is False
    metrics = Metrics()
    MetricsSink(metrics, Clock(), per_worker=cfg.http.per_worker_metrics)
    assert b"hashcoop_worker_" not in generate_latest(metrics.registry)
