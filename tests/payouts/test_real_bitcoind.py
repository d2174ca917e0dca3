"""The wallet stand-in against Bitcoin Core, and the payout flow on a real
bitcoind (``BITCOIND=/path/to/bitcoind``; skipped otherwise).

``ops/record_wallet_vectors.py`` scripts one wallet session; here it runs on
the devnode (always) and on bitcoind (when available), and the two must give
the same fields, JSON types and error codes."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from payouts import read
from payouts.db import make_engine, migrate
from payouts.ledger import Ledger
from pool.devnode.chain import Chain
from pool.devnode.rpc import Rpc, RpcError
from pool.devnode.wallet import register_wallet_rpcs

from .rig import OTHER, payouts
from .test_crash import credit_block

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("record_wallet_vectors", ROOT / "ops" / "record_wallet_vectors.py")
recorder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recorder)

# Core's error codes for the session's error steps (RPC help and source)
EXPECTED_ERRORS = {
    "no wallet loaded": -18, "createwallet again": -35, "createrawtransaction invalid address": -5,
    "createrawtransaction duplicate address": -8, "fund without a fee rate (fallbackfee 0)": -4, "fund with both fee rates": -8,
    "fund below the minimum fee rate": -4, "fund changePosition out of bounds": -8, "fund insufficient funds": -4,
    "getmempoolentry after confirmation": -5, "getrawtransaction without index": -5, "send again (confirmed)": -27,
    "gettransaction unknown": -5, "two wallets, no path": -19, "unknown wallet path": -18, "loadwallet already loaded": -35,
}


def devnode_caller(tmp: Path):
    n = [1_795_651_986]

    def clock():
        n[0] += 1
        return n[0]

    chain = Chain(clock=clock)
    rpc = Rpc(chain, clock=chain.clock)
    register_wallet_rpcs(rpc, tmp / "wallets")

    def call(method, *params, wallet=None):
        try:
            return {"result": rpc.execute(method, list(params), uri_wallet=wallet)}
        except RpcError as e:
            return {"error": e.to_json()}

    return call


def shape(x):
    if isinstance(x, dict):
        return {k: shape(v) for k, v in x.items()}
    if isinstance(x, list):
        return [shape(x[0])] if x else []
    if isinstance(x, bool) or x is None:
        return type(x).__name__
    if isinstance(x, (int, float)):
        return "number"
    return "string"


def test_devnode_answers_the_recorded_session(tmp_path):
    steps = recorder.session(devnode_caller(tmp_path))
    errors = {s["name"]: s["error"]["code"] for s in steps if "error" in s}
    assert errors == EXPECTED_ERRORS
    by = {s["name"]: s for s in steps}
    assert by["balances at 100 confirmations"]["result"]["mine"]["immature"] == 50.0
    assert by["balances at 101 confirmations"]["result"]["mine"]["trusted"] == 50.0
    assert by["send again (already in the mempool)"]["result"] == by["send"]["result"]
    assert by["gettransaction confirmed"]["result"]["confirmations"] == 1


@pytest.mark.bitcoind
def test_core_and_devnode_agree_on_fields_types_and_errors(tmp_path):
    with tempfile.TemporaryDirectory() as d:
        proc, url, cookie = recorder.start_bitcoind(os.environ["BITCOIND"], Path(d))
        try:
            core = recorder.session(recorder.rpc_caller(url, cookie))
        finally:
            recorder.rpc_caller(url, cookie)("stop")
            proc.wait(60)
    stand_in = recorder.session(devnode_caller(tmp_path))
    assert [s["name"] for s in core] == [s["name"] for s in stand_in]
    for c, s in zip(core, stand_in):
        assert ("error" in c) == ("error" in s), c["name"]
        if "error" in c:
            assert c["error"]["code"] == s["error"]["code"], (c["name"], c["error"], s["error"])
        else:
            assert shape(c["result"]) == shape(s["result"]), c["name"]


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
