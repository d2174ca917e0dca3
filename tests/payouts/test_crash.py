"""Crash safety of the payment sequence: the payout process is killed
(SIGKILL, from its fault-injection hook) right after each step of the
sequence -- intent, signed, stored, broadcast, sent, confirmed -- at least
20 times each (100 in the hostile battery's full run,
HASHCOOP_HOSTILE_SCALE=full: case "payout-kill"), against the stand-in
node's wallet, with new credits coming in all the time. Each restart
reconciles with the wallet and the mempool first. Afterwards the ledger
matches the wallet exactly: every address was sent exactly what the ledger
debited it, nothing twice, no balance lost."""
from __future__ import annotations

import multiprocessing
import os
import random
import uuid

import pytest
import sqlalchemy as sa

from payouts import read
from payouts.db import make_engine, migrate
from payouts.ledger import BlockSnapshot, Ledger
from payouts.service import STEPS

from tests.hostile.conftest import figures, full  # noqa: F401 (figures is a fixture)

from . import crashchild
from .helpers import h
from .rig import OTHER, sends_by_address, wallet_node, write_config

pytestmark = [pytest.mark.slow, pytest.mark.hostile]
KILLS_PER_STEP = 100 if full() else 20
PG_KILLS_PER_STEP = 100 if full() else 3  # fewer in CI: the SQLite run is the long one
REJECTED = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"  # a mainnet address: the regtest node rejects it
PG_URL = os.environ.get("HASHCOOP_TEST_DATABASE_URL", "")
PAYEES = ["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
          "bcrt1psjw83ferk5eyapl0f5fpd8u50s2t39hxp4pzuttnugf0acxfwy4qwwea25",
          "bcrt1qqqqsyqcyq5rqwzqfpg9scrgwpugpzysnard0ew",
          "mfcHP2WMCVLsVZA8yrovmhMgxNFW9r98xw"]


@pytest.fixture(scope="module")
def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(crashchild.PRELOAD)
    return ctx


def credit_block(ledger: Ledger, n: int, rng: random.Random) -> dict[str, int]:
    """A mature block crediting 2-4 payees (what the maturity tracker does)."""
    payees = rng.sample(PAYEES, rng.randint(2, 4))
    amounts = {a: float(rng.randint(1, 9)) for a in payees}
    snap = BlockSnapshot(hash=h(f"block{n}"), height=n, seq=n, log_from=n, floor_seq=0, first_seq=n, first_credit=1.0, partial=False,
                         n_target=100.0, total=sum(amounts.values()), complete=False, network_difficulty=50.0, window_factor=2.0,
                         window_difficulty=0.0, entry_shares=1024, time=float(n), created=float(n), finder_address=payees[0],
                         finder_worker="w", amounts=amounts)
    ledger.import_block(snap, [], reward=0, reward_source="pool")
    credits = {a: rng.randint(20_000, 3_000_000) for a in payees}
    ledger.credit_block(snap.hash, reward=sum(credits.values()), confirmations=101, fee_percent="0", fee_sat=0, fee_address=None,
                        credits=[(a, "share", v) for a, v in credits.items()], report_json="{}", digest="0" * 64)
    return credits


def test_kill_at_every_step_of_the_payment_sequence(tmp_path, forkserver, figures):
    out = crash_run(tmp_path, forkserver, f"sqlite:///{tmp_path}/ledger.sqlite", KILLS_PER_STEP, "pool")
    figures("payout-kill", database="sqlite", **out)


@pytest.mark.skipif(not PG_URL, reason="HASHCOOP_TEST_DATABASE_URL not set")
def test_kill_at_every_step_on_postgresql(tmp_path, forkserver, figures):
    """The same on PostgreSQL (fewer kills in CI: the SQLite run is the
    long one), with the payees bearing the transaction fees."""
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_URL)
    with admin.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        out = crash_run(tmp_path, forkserver, f"{PG_URL}{sep}options=-csearch_path%3D{schema}", PG_KILLS_PER_STEP, "miners")
        figures("payout-kill", database="postgresql", **out)
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def crash_run(tmp_path, forkserver, db_url: str, kills_per_step: int, fee_payer: str) -> dict:
    """Returns the figures: kills (per step and in all), payout runs,
    payments, double payments and ledger-wallet mismatches (both 0, or
    the run fails before)."""
    node, pool_address = wallet_node(tmp_path / "node")
    node.rpc("generatetoaddress", 20, pool_address)
    node.rpc("generatetoaddress", 101, OTHER)
    cfg = write_config(tmp_path / "payouts.toml", node=node, pool_address=pool_address, data_dir=tmp_path / "data", db_url=db_url,
                       payouts={"fee_address": "", "min_payout_sat": 10_000, "max_outputs": 3, "payment_confirmations": 1,
                                "tx_fee_payer": fee_payer})
    engine = make_engine(db_url)
    migrate(engine)
    seeder = Ledger(engine)
    rng = random.Random(5)
    credited: dict[str, int] = {}
    # an address the node rejects (mainnet, on regtest) is owed too: set aside, the others paid
    assert seeder.acquire_lease(30)
    seeder.import_block(BlockSnapshot(hash=h("bad"), height=0, seq=0, log_from=0, floor_seq=0, first_seq=0, first_credit=1.0, partial=False,
                                      n_target=2.0, total=1.0, complete=False, network_difficulty=1.0, window_factor=2.0,
                                      window_difficulty=0.0, entry_shares=1024, time=0.0, created=0.0, finder_address=REJECTED,
                                      finder_worker="w", amounts={REJECTED: 1.0}), [], reward=0, reward_source="pool")
    seeder.credit_block(h("bad"), reward=500_000, confirmations=101, fee_percent="0", fee_sat=0, fee_address=None,
                        credits=[(REJECTED, "share", 500_000)], report_json="{}", digest="0" * 64)
    seeder.release_lease()
    kills = {s: 0 for s in STEPS}
    log = str(tmp_path / "payouts.log")

    def child(kill_at: str = "") -> int:
        p = forkserver.Process(target=crashchild.run_once, args=(str(cfg), kill_at, log))
        p.start()
        p.join(60)
        assert p.exitcode is not None, "the payout process hung"
        return p.exitcode

    n = 0
    try:
        for step in STEPS:
            attempts = 0
            while kills[step] < kills_per_step:
                attempts += 1
                assert attempts <= 3 * kills_per_step, f"step {step} is not reached: {kills}"
                n += 1
                assert seeder.acquire_lease(30)
                for a, v in credit_block(seeder, n, rng).items():
                    credited[a] = credited.get(a, 0) + v
                seeder.release_lease()
                rc = child(step)
                assert rc in (0, -9), f"payout process failed (exit {rc}); see {log}"
                kills[step] += rc == -9
                node.rpc("generatetoaddress", 1, OTHER)
        # recovery: restart without faults until everything is paid and confirmed
        for _ in range(3):
            assert child() == 0
            node.rpc("generatetoaddress", 1, OTHER)
        assert child() == 0
        check_ledger_matches_wallet(engine, node, credited, kills_per_step, fee_payer)
        payments = len(read.payments(engine, limit=100_000))
        # a live holder keeps the lease: a second payout process stands by (exit 3 with --once)
        assert seeder.acquire_lease(30)
        assert child() == 3
        seeder.release_lease()
    finally:
        node.close()
        engine.dispose()
    assert all(v >= kills_per_step for v in kills.values()), kills
    # check_ledger_matches_wallet passed: nothing paid twice, the ledger and the wallet agree
    return {"kills": sum(kills.values()), "kills_per_step": kills, "steps": list(STEPS), "runs": n + 4,
            "payments": payments, "addresses": len(credited), "double_payments": 0, "mismatches": 0}


def check_ledger_matches_wallet(engine, node, credited, kills_per_step, fee_payer):
    ledger = Ledger(engine)
    assert ledger.check_invariants() == []
    pays = read.payments(engine, limit=100_000)
    assert not [p for p in pays if p["status"] in ("intent", "signed", "sent", "failed")], "everything settled"
    abandoned = [p for p in pays if p["status"] == "abandoned"]
    assert len(abandoned) >= 2 * kills_per_step, "every kill after intent and after signing left an intent to abandon"
    sent = sends_by_address(node)
    withheld = 0
    for a, v in credited.items():
        s = read.address_summary(engine, a)
        assert s["credited"] == v
        assert s["owed"] < 10_000, "everything payable was paid"
        assert s["paid"] == v - s["owed"]
        in_tx = sum(p["amount"] for p in read.address_payments(engine, a, limit=100_000) if p["status"] == "confirmed")
        assert sent.get(a, 0) == in_tx == s["paid_confirmed"], f"{a}: the ledger and the wallet agree, nothing twice"
        withheld += s["paid"] - in_tx
        if fee_payer == "pool":
            assert in_tx == s["paid"], f"{a}: paid exactly what it was owed"
    fees = sum(p["fee_sat"] for p in pays if p["status"] == "confirmed")
    assert withheld == (fees if fee_payer == "miners" else 0), "the payees bore exactly the transaction fees, or none"
    held = read.address_summary(engine, REJECTED)
    assert held["hold_reason"] and "rejects" in held["hold_reason"] and held["owed"] == 500_000 and REJECTED not in sent
    wallet_sends = {e["txid"] for e in node.rpc("listtransactions", "*", 100000) if e["category"] == "send"}
    ledger_txids = {p["txid"] for p in pays if p["status"] == "confirmed"}
    assert wallet_sends == ledger_txids, "the ledger has every transaction the wallet sent, and no other"
