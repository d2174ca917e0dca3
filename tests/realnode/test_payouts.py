"""Payouts through Bitcoin Core's own wallet, for blocks that three real
cpuminers found through the pool (Redis accounting). The miners' addresses
(bech32, bech32m, p2sh-segwit) and the pool-fee address (legacy) come from
a second Core wallet, "payees", so Core itself says what each received
(``getreceivedbyaddress``). Payments go out in batches of two
(``max_outputs``), funded and signed by the wallet "pool".

1. The first half of the blocks matures (101 confirmations); the pool pays
   the transaction fees (``tx_fee_payer = "pool"``); ``min_payout_sat`` is
   exactly the second-smallest balance: three payees are paid (one at the
   minimum) in two transactions, the smallest balance (below it, usually
   the fee address's) is not.
2. The rest matures; the payees pay the fees (``"miners"``), minimum 1000
   sat: all four are paid in two transactions, each output short of its
   debit by its share of its transaction's fee (Core's
   ``subtractFeeFromOutputs``: equal shares, the first payee the remainder).

Each address receives on chain exactly what the ledger says it was paid, and
was credited exactly its PPLNS share of Core's coinbases; the pool wallet
keeps its float less the fees it paid; ``payouts verify --all`` and
``payouts check`` pass."""
from __future__ import annotations

import pytest

from hashcoop.payouts import read
from hashcoop.payouts.db import make_engine
from hashcoop.payouts.payments import fee_shares
from hashcoop.payouts.pplns import split_reward
from tests.payouts.crash import ForkedCLI, forkserver  # noqa: F401 (forkserver is a fixture)
from tests.realnode.core import COIN
from tests.realnode.payrig import core_with_pool_wallet, mine
from tests.realnode.rig import OTHER

pytestmark = pytest.mark.bitcoind(needs=("MINERD",))
FLOAT = 50 * COIN  # the operator's float: the block leaving initial block download pays the pool's wallet


def test_minimum_batches_and_both_fee_payers_through_cores_wallet(tmp_path, core, minerd, redis_server, pool_process, forkserver):
    node, pool_address = core_with_pool_wallet(core)
    node.rpc("createwallet", "payees")
    miners = [node.rpc("getnewaddress", "", kind, wallet="payees") for kind in ("bech32", "bech32m", "p2sh-segwit")]
    fee_address = node.rpc("getnewaddress", "", "legacy", wallet="payees")
    node.rpc("generatetoaddress", 1, pool_address)  # out of initial block download; with the pool fee paid out, this float pays the pool's tx fees
    mined = mine(node, tmp_path, pool_process=pool_process, minerd=minerd, redis_server=redis_server, pool_address=pool_address,
                 miners=miners, blocks=6, payouts={"fee_address": fee_address})
    cli = ForkedCLI(forkserver, tmp_path / "payouts.log")
    engine = make_engine(mined.db_url, writer=False)
    main, snaps = mined.main, mined.snaps
    joined = [h for h in main if snaps[h].height > mined.joined]  # their windows hold every miner
    split = snaps[joined[len(joined) // 2 - 1]].height
    first, rest = [h for h in main if snaps[h].height <= split], [h for h in main if snaps[h].height > split]

    def payouts(*args: str, env: dict | None = None):
        res = cli("payouts", "-c", str(mined.config), *args, env=env)
        assert res.returncode == 0, res.stdout + res.stderr[-3000:]
        return res

    def expected(blocks: list[str]) -> dict[str, int]:
        """PPLNS over Redis's snapshots of Core's coinbases, the pool fee to the fee address."""
        out: dict[str, int] = {}
        for h in blocks:
            s = split_reward(node.coinbase_value(h), snaps[h].amounts, "1")
            for a, v in [*s.credits.items(), (fee_address, s.fee)]:
                out[a] = out.get(a, 0) + v
        return out

    def received(a: str) -> int:
        return round(node.rpc("getreceivedbyaddress", a, 1, wallet="payees") * COIN)

    def outputs(payment_id: int) -> list[dict]:
        return read.payment(engine, payment_id)["outputs"]

    # -- 1. the first half matures; the pool pays the fees; the minimum is the smallest miner's balance
    node.rpc("generatetoaddress", snaps[first[-1]].height + 100 - node.rpc("getblockcount"), OTHER)
    want1 = expected(first)
    assert set(want1) == {*miners, fee_address}
    below, at = sorted(want1, key=want1.get)[:2]
    assert want1[below] < want1[at]
    payouts("run", "--once", env={"HASHCOOP__PAYOUTS__MIN_PAYOUT_SAT": str(want1[at])})
    assert [b["hash"] for b in read.blocks(engine, status="credited", limit=100)][::-1] == first
    pays1 = read.payments(engine)[::-1]
    assert [p["status"] for p in pays1] == ["sent", "sent"], pays1
    assert [len(outputs(p["id"])) for p in pays1] == [2, 1], "three payees, two at most a transaction"
    paid1 = {o["address"]: o for p in pays1 for o in outputs(p["id"])}
    assert set(paid1) == set(want1) - {below}, "at or above the minimum: paid; below it: not"
    assert all(o["amount"] == o["owed"] == want1[a] for a, o in paid1.items()), "the pool pays the fees: each gets all it is owed"
    assert read.address_summary(engine, below)["owed"] == want1[below]

    # -- 2. the rest matures; the payees pay the fees; everyone above 1000 sat
    node.rpc("generatetoaddress", 101, OTHER)
    payouts("run", "--once", env={"HASHCOOP__PAYOUTS__TX_FEE_PAYER": "miners"})
    pays = read.payments(engine)[::-1]
    assert [p["status"] for p in pays] == ["confirmed", "confirmed", "sent", "sent"], pays
    assert {a: received(a) for a in want1} == {**want1, below: 0}, "phase 1 on chain"
    want2 = expected(rest)
    assert set(want2) == {*miners, fee_address}
    pays2 = pays[2:]
    assert [len(outputs(p["id"])) for p in pays2] == [2, 2]
    for p in pays2:
        outs = outputs(p["id"])
        assert [o["owed"] - o["amount"] for o in outs] == fee_shares(p["fee_sat"], len(outs)), "each bears its share of the fee"
        assert p["fee_payer"] == "miners"
    node.rpc("generatetoaddress", 1, OTHER)
    payouts("run", "--once")
    assert all(p["status"] == "confirmed" for p in read.payments(engine))

    # -- the ledger, the chain and Core's wallets agree
    want = {a: want1.get(a, 0) + want2.get(a, 0) for a in {*want1, *want2}}
    for a, v in want.items():
        s = read.address_summary(engine, a)
        in_tx = sum(p["amount"] for p in read.address_payments(engine, a))
        assert (s["credited"], s["paid"], s["owed"]) == (v, v, 0), (a, s)
        assert received(a) == in_tx == s["paid_confirmed"], f"{a} received on chain what the ledger says it was paid"
    pool_fees = sum(p["fee_sat"] for p in pays1)
    assert round(node.rpc("getbalances", wallet="pool")["mine"]["trusted"] * COIN) == FLOAT - pool_fees
    assert sum(received(a) for a in want) == sum(want.values()) - sum(p["fee_sat"] for p in pays2)
    res = payouts("verify", "--all")
    assert res.stdout.count(": OK") == len(snaps), res.stdout
    assert "ledger consistent" in payouts("check").stdout
    engine.dispose()
