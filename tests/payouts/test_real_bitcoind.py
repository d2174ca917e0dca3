"""The wallet stand-in against Bitcoin Core (``BITCOIND=/path/to/bitcoind``;
skipped otherwise). The payout flow on Core's wallet is in
``tests/realnode/test_payouts.py``.

``ops/record_wallet_vectors.py`` scripts one wallet session; here it runs on
the devnode (always) and on bitcoind (when available), and the two must give
the same fields, JSON types and error codes."""
from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

from pool.devnode.chain import Chain
from pool.devnode.rpc import Rpc, RpcError
from pool.devnode.wallet import register_wallet_rpcs


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
