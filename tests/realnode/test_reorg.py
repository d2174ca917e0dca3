"""Reorgs on Bitcoin Core, with blocks that two real cpuminers found
through the pool (Redis accounting), followed by the payout process
(`hashcoop payouts run --once`, which checks each pending block with
``getblockhash(height)``):

* before: the pool's last block is pending, with its reward from Core's
  coinbase and the estimate of what it would credit;
* ``invalidateblock`` takes it out, a competing branch of two blocks is
  mined, and ``reconsiderblock`` makes it valid again: Core keeps the
  competing branch (more work) and lists the block as a ``valid-fork``
  tip. The ledger marks it orphaned (the reason names the block now at its
  height) and takes back what it promised: no estimate, no credit, no audit
  row, the pool's pending reward without it; its window stays as Redis
  snapshotted it;
* the pool's branch overtakes again (two blocks on top of it): the block
  is pending again, and at 101 confirmations it is credited once, with the
  others, each address exactly its PPLNS share of Core's coinbases;
  ``payouts verify --all`` and ``payouts check`` pass;
* a reorg deeper than the maturity depth: credits are final
  (docs/payouts.md, "confirmed | anything | never changes"), so the
  credited blocks stay confirmed and every balance stays as it was.
"""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from hashcoop.payouts import read
from hashcoop.payouts.db import make_engine
from hashcoop.payouts.pplns import split_reward
from tests.payouts.crash import ForkedCLI, forkserver  # noqa: F401 (forkserver is a fixture)
from tests.realnode.payrig import NO_PAY, core_with_pool_wallet, in_main_chain, mine
from tests.realnode.rig import MINER_A, MINER_B, OTHER

pytestmark = pytest.mark.bitcoind(needs=("MINERD",))


def audit_rows(engine, block_hash: str) -> dict[str, int]:
    with engine.connect() as c:
        return dict(c.execute(sa.text("select address, count(*) from ledger_entries where block_hash = :h group by address"),
                              {"h": block_hash}).all())


def side_branches(node) -> list[str]:
    """The first block of every valid branch Core knows beside its main chain."""
    out = []
    for tip in node.rpc("getchaintips"):
        if tip["status"] in ("valid-fork", "valid-headers"):
            h = tip["hash"]
            for _ in range(tip["branchlen"] - 1):
                h = node.rpc("getblockheader", h)["previousblockhash"]
            out.append(h)
    return out


def test_reorg_orphans_a_pool_block_and_a_heavier_branch_brings_it_back(tmp_path, core, minerd, redis_server, pool_process, forkserver):
    node, pool_address = core_with_pool_wallet(core)
    node.rpc("generatetoaddress", 1, OTHER)  # out of initial block download: Core serves templates
    mined = mine(node, tmp_path, pool_process=pool_process, minerd=minerd, redis_server=redis_server, pool_address=pool_address,
                 miners=[MINER_A, MINER_B], blocks=5)
    cli = ForkedCLI(forkserver, tmp_path / "payouts.log")
    cfg = str(mined.config)

    def payouts(*args: str, env: dict | None = None, code: int = 0):
        res = cli("payouts", "-c", cfg, *args, env=env)
        assert res.returncode == code, res.stdout + res.stderr[-3000:]
        return res

    engine = make_engine(mined.db_url, writer=False)
    snaps, main = mined.snaps, mined.main
    last = main[-1]
    height = snaps[last].height
    assert node.rpc("getbestblockhash") == last
    rewards = {h: node.coinbase_value(h) for h in main}
    assert set(rewards.values()) == {50 * 100_000_000}, "the pool's coinbases pay the whole subsidy (no fees on this chain)"

    # -- before: pending, with what it would credit
    payouts("run", "--once", env=NO_PAY)
    b = read.block_report(engine, last, fee_percent=1.0)
    assert b["status"] == "pending" and b["reward"] == rewards[last] and b["estimate"]["credits"], b
    pending_before = read.pool_summary(engine)["pending_reward"]
    assert pending_before == sum(rewards.values())

    # -- the reorg: a competing branch with more work. Blocks the miners raced
    # for a height (the losers are side branches) are set aside until the end,
    # so that Core chooses between the branches this test makes.
    raced = side_branches(node)
    for h in raced:
        node.rpc("invalidateblock", h)
    node.rpc("invalidateblock", last)
    alt = node.rpc("generatetoaddress", 2, OTHER)
    node.rpc("reconsiderblock", last)
    assert node.rpc("getblockhash", height) == alt[0], "Core keeps the branch with more work"
    assert {t["hash"]: t["status"] for t in node.rpc("getchaintips")}[last] == "valid-fork"
    payouts("run", "--once", env=NO_PAY)
    b = read.block_report(engine, last, fee_percent=1.0)
    assert b["status"] == "orphaned" and alt[0] in b["status_reason"], b
    assert b["credits"] == [] and b["estimate"] is None and b["report"] is None
    assert {w["address"]: w["difficulty"] for w in b["window"]} == snaps[last].amounts, "the window is untouched"
    summary = read.pool_summary(engine)
    assert summary["pending_reward"] == pending_before - rewards[last] and summary["credited"] == 0
    assert audit_rows(engine, last) == {}

    # -- the pool's branch overtakes: two blocks on top of the orphan beat the competing two
    node.rpc("invalidateblock", alt[0])
    node.rpc("generatetoaddress", 2, OTHER)
    node.rpc("reconsiderblock", alt[0])
    assert node.rpc("getblockhash", height) == last
    assert {t["hash"]: t["status"] for t in node.rpc("getchaintips")}[alt[-1]] == "valid-fork"
    payouts("run", "--once", env=NO_PAY)
    b = read.block_report(engine, last)
    assert b["status"] == "pending" and b["confirmations"] == 3 and b["credits"] == [], b

    # -- maturity: the last block reaches 101 confirmations, the others are deeper
    node.rpc("generatetoaddress", 98, OTHER)
    payouts("run", "--once", env=NO_PAY)
    for h in main:
        assert read.block_report(engine, h)["status"] == "credited", h
    for h in set(snaps) - set(main):  # found, but a sibling won the height: never credited
        rep = read.block_report(engine, h)
        assert rep["status"] == "orphaned" and rep["credits"] == [], rep
    rows = audit_rows(engine, last)
    assert rows and set(rows.values()) == {1}, "credited once"
    expect: dict[str, int] = {}
    for h in main:
        for a, v in split_reward(rewards[h], snaps[h].amounts, "1").credits.items():
            expect[a] = expect.get(a, 0) + v
    balances = {a: read.address_summary(engine, a) for a in expect}
    assert {a: s["credited"] for a, s in balances.items()} == expect, "each address its PPLNS share of Core's coinbases"
    res = payouts("verify", "--all")
    assert res.stdout.count(": OK") == len(snaps) == len(read.blocks(engine, limit=1000)), res.stdout
    payouts("check")

    # -- a reorg deeper than the maturity depth: credits are final
    first = main[0]
    tip = node.rpc("getblockcount")
    node.rpc("invalidateblock", first)
    node.rpc("generatetoaddress", tip - snaps[first].height + 2, OTHER)
    node.rpc("reconsiderblock", first)
    assert node.rpc("getblockhash", snaps[first].height) != first
    payouts("run", "--once", env=NO_PAY)
    assert all(read.block_report(engine, h)["status"] == "credited" for h in main)
    assert {a: read.address_summary(engine, a) for a in expect} == balances
    payouts("check")
    for h in raced:
        node.rpc("reconsiderblock", h)
        assert not in_main_chain(node, h)
    engine.dispose()
