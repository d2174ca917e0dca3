"""The payout flow on a real bitcoind (``BITCOIND=/path/to/bitcoind``;
skipped otherwise). The wallet session it shares with the stand-in is held
to Core's recording in tests/payouts/test_devnode_wallet.py (the stand-in)
and tests/realnode/test_wallet_vectors.py (a live Core)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from payouts import read
from payouts.db import make_engine, migrate
from payouts.ledger import Ledger

from .rig import OTHER, payouts
from .test_crash import credit_block

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("record_wallet_vectors", ROOT / "ops" / "record_wallet_vectors.py")
recorder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recorder)


@pytest.mark.bitcoind
def test_payout_flow_against_bitcoind(tmp_path):
    """Balances in the ledger are paid by `hashcoop payouts` through
    bitcoind's wallet, confirmed, and each address received what it was owed."""
    import random

    datadir = tmp_path / "bitcoind"
    datadir.mkdir()
    proc, url, cookie = recorder.start_bitcoind(os.environ["BITCOIND"], datadir)
    call = recorder.rpc_caller(url, cookie)
    try:
        call("createwallet", "pool")
        pool_address = call("getnewaddress")["result"]
        call("generatetoaddress", 5, pool_address)
        call("generatetoaddress", 101, OTHER)
        db_url = f"sqlite:///{tmp_path}/ledger.sqlite"
        cfg = tmp_path / "payouts.toml"
        cfg.write_text(f"""
[pool]
network = "regtest"
address = "{pool_address}"
data_dir = "{tmp_path / 'data'}"
[[nodes]]
url = "{url}"
cookie_file = "{cookie}"
[database]
url = "{db_url}"
[payouts]
fee_address = ""
min_payout_sat = 10000
max_outputs = 3
fee_rate_sat_vb = 2.0
payment_confirmations = 2
wallet = "pool"
""")
        engine = make_engine(db_url)
        migrate(engine)
        seeder = Ledger(engine)
        assert seeder.acquire_lease(30)
        credited: dict[str, int] = {}
        rng = random.Random(1)
        for n in range(1, 6):
            for a, v in credit_block(seeder, n, rng).items():
                credited[a] = credited.get(a, 0) + v
        seeder.release_lease()
        res = payouts(cfg, "run", "--once")
        assert res.returncode == 0, res.stderr[-3000:]
        call("generatetoaddress", 2, OTHER)
        res = payouts(cfg, "run", "--once")
        assert res.returncode == 0, res.stderr[-3000:]
        assert all(p["status"] == "confirmed" for p in read.payments(engine)) and read.payments(engine)
        got: dict[str, int] = {}
        for e in call("listtransactions", "*", 1000, wallet="pool")["result"]:
            if e["category"] == "send":
                got[e["address"]] = got.get(e["address"], 0) + round(-e["amount"] * 100_000_000)
        assert got == credited
        assert Ledger(engine).check_invariants() == []
    finally:
        call("stop")
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
