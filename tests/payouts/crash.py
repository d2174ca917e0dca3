"""The payout crash harness: `hashcoop payouts run --once` is killed
(SIGKILL from its fault hook, ``HASHCOOP_PAYOUTS_KILL_AT``) right after each
step of the payment sequence -- intent, signed, stored, broadcast, sent,
confirmed -- and restarted, with new credits arriving all along. Each
restart reconciles with the wallet and the mempool first. Afterwards the
ledger must match the wallet exactly: every address was sent exactly what
the ledger debited it, nothing twice, no balance lost.

One harness, any node with a wallet: the stand-in
(``tests/payouts/test_crash.py``) and Bitcoin Core
(``tests/realnode/test_payout_crash.py``), each described by a
:class:`WalletNode`. Where the node can also say what an address received
on chain (Core's ``getreceivedbyaddress``), that is checked too."""
from __future__ import annotations

import multiprocessing
import random
import subprocess
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa

from hashcoop.payouts import read
from hashcoop.payouts.db import make_engine, migrate
from hashcoop.payouts.ledger import BlockSnapshot, Ledger
from hashcoop.payouts.service import STEPS
from hashcoop.pool.app.payouts_cli import KILL_ENV
from tests.payouts import crashchild
from tests.payouts.helpers import h
from tests.payouts.rig import OTHER, sends_by_address, write_config

REJECTED = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"  # a mainnet address: a regtest node rejects it
PAYEES = ["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
          "bcrt1psjw83ferk5eyapl0f5fpd8u50s2t39hxp4pzuttnugf0acxfwy4qwwea25",
          "bcrt1qqqqsyqcyq5rqwzqfpg9scrgwpugpzysnard0ew",
          "mfcHP2WMCVLsVZA8yrovmhMgxNFW9r98xw"]
MIN_PAYOUT = 10_000


@dataclass
class WalletNode:
    """The node the harness pays through: its RPC URL and cookie (for the
    payout config), the pool's address (of its wallet "pool"), chain RPCs,
    the pool wallet's RPCs, and optionally what an address received in
    confirmed transactions, in satoshis, as the node itself counts it."""

    url: str
    cookie_path: str
    pool_address: str
    rpc: Callable[..., Any]
    wallet: Callable[..., Any]
    received: Callable[[str], int] | None = None


@pytest.fixture(scope="module")
def forkserver():
    """Payout runs as forked children of a server that has the modules imported (a restart takes a fraction of a second)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(crashchild.PRELOAD)
    return ctx


class ForkedCLI:
    """``hashcoop ARGS`` run as a forked child of ``forkserver``
    (``crashchild.cli``): a ``subprocess.CompletedProcess`` with its exit
    code (-9 when it was killed), stdout and stderr. Every run's stderr is
    also appended to ``log``."""

    def __init__(self, forkserver, log: Path):
        self.ctx = forkserver
        self.log = Path(log)
        self.runs = 0

    def __call__(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        self.runs += 1
        out = self.log.with_name(f"{self.log.name}.stdout")
        out.write_bytes(b"")
        start = self.log.stat().st_size if self.log.exists() else 0
        p = self.ctx.Process(target=crashchild.cli, args=(list(argv), str(out), str(self.log), dict(env or {})))
        p.start()
        p.join(timeout)
        if p.exitcode is None:
            p.kill()
            p.join()
            raise AssertionError(f"hashcoop {' '.join(argv)} hung (see {self.log})")
        with open(self.log, "rb") as f:
            f.seek(start)
            err = f.read().decode(errors="replace")
        return subprocess.CompletedProcess(list(argv), p.exitcode, out.read_text(), err)


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A fresh schema on ``base_url`` for one test, dropped afterwards;
    yields a URL whose connections use it (other processes included)."""
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(base_url)
    with admin.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def credit_block(ledger: Ledger, n: int, rng: random.Random, payees: list[str] = PAYEES) -> dict[str, int]:
    """A mature block crediting 2-4 of ``payees`` (what the maturity tracker does)."""
    chosen = rng.sample(payees, rng.randint(2, min(4, len(payees))))
    amounts = {a: float(rng.randint(1, 9)) for a in chosen}
    snap = BlockSnapshot(hash=h(f"block{n}"), height=n, seq=n, log_from=n, floor_seq=0, first_seq=n, first_credit=1.0, partial=False,
                         n_target=100.0, total=sum(amounts.values()), complete=False, network_difficulty=50.0, window_factor=2.0,
                         window_difficulty=0.0, entry_shares=1024, time=float(n), created=float(n), finder_address=chosen[0],
                         finder_worker="w", amounts=amounts)
    ledger.import_block(snap, [], reward=0, reward_source="pool")
    credits = {a: rng.randint(20_000, 3_000_000) for a in chosen}
    ledger.credit_block(snap.hash, reward=sum(credits.values()), confirmations=101, fee_percent="0", fee_sat=0, fee_address=None,
                        credits=[(a, "share", v) for a, v in credits.items()], report_json="{}", digest="0" * 64)
    return credits


def crash_run(tmp_path, forkserver, db_url: str, kills_per_step: int, fee_payer: str, node: WalletNode, *,
              funding_blocks: int = 20) -> dict:
    """Kill the payout process ``kills_per_step`` times after each step,
    then let it finish and check the ledger against ``node``'s wallet
    (funded by ``funding_blocks`` coinbases of 50 BTC).
    Returns the figures: kills (per step and in all), payout runs,
    payments, double payments and ledger-wallet mismatches (both 0, or the
    run fails before)."""
    node.rpc("generatetoaddress", funding_blocks, node.pool_address)
    node.rpc("generatetoaddress", 101, OTHER)
    cfg = write_config(tmp_path / "payouts.toml", node=node, pool_address=node.pool_address, data_dir=tmp_path / "data", db_url=db_url,
                       payouts={"fee_address": "", "min_payout_sat": MIN_PAYOUT, "max_outputs": 3, "payment_confirmations": 1,
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
    log = tmp_path / "payouts.log"
    cli = ForkedCLI(forkserver, log)

    def child(kill_at: str = "") -> int:
        return cli("payouts", "-c", str(cfg), "run", "--once", env={KILL_ENV: kill_at}, timeout=60).returncode

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
        engine.dispose()
    assert all(v >= kills_per_step for v in kills.values()), kills
    # check_ledger_matches_wallet passed: nothing paid twice, the ledger and the wallet agree
    return {"kills": sum(kills.values()), "kills_per_step": kills, "steps": list(STEPS), "runs": n + 4,
            "payments": payments, "addresses": len(credited), "double_payments": 0, "mismatches": 0}


def check_ledger_matches_wallet(engine, node: WalletNode, credited: dict[str, int], kills_per_step: int, fee_payer: str) -> None:
    ledger = Ledger(engine)
    assert ledger.check_invariants() == []
    pays = read.payments(engine, limit=100_000)
    assert not [p for p in pays if p["status"] in ("intent", "signed", "sent", "failed")], "everything settled"
    abandoned = [p for p in pays if p["status"] == "abandoned"]
    assert len(abandoned) >= 2 * kills_per_step, "every kill after intent and after signing left an intent to abandon"
    sent = sends_by_address(node.wallet)
    withheld = 0
    for a, v in credited.items():
        s = read.address_summary(engine, a)
        assert s["credited"] == v
        assert s["owed"] < MIN_PAYOUT, "everything payable was paid"
        assert s["paid"] == v - s["owed"]
        in_tx = sum(p["amount"] for p in read.address_payments(engine, a, limit=100_000) if p["status"] == "confirmed")
        assert sent.get(a, 0) == in_tx == s["paid_confirmed"], f"{a}: the ledger and the wallet agree, nothing twice"
        if node.received is not None:
            assert node.received(a) == in_tx, f"{a}: received on chain exactly what the ledger says it was paid"
        withheld += s["paid"] - in_tx
        if fee_payer == "pool":
            assert in_tx == s["paid"], f"{a}: paid exactly what it was owed"
    fees = sum(p["fee_sat"] for p in pays if p["status"] == "confirmed")
    assert withheld == (fees if fee_payer == "miners" else 0), "the payees bore exactly the transaction fees, or none"
    held = read.address_summary(engine, REJECTED)
    assert held["hold_reason"] and "rejects" in held["hold_reason"] and held["owed"] == 500_000 and REJECTED not in sent
    wallet_sends = {e["txid"] for e in node.wallet("listtransactions", "*", 100000) if e["category"] == "send"}
    ledger_txids = {p["txid"] for p in pays if p["status"] == "confirmed"}
    assert wallet_sends == ledger_txids, "the ledger has every transaction the wallet sent, and no other"
