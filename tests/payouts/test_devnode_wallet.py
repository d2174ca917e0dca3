"""The devnode's wallet RPCs, pure (a Chain and its Rpc, no sockets): the
flow the payout service uses, balances through maturity, Core's errors,
conflicts after a double spend, and wallet routing by URI path."""
from __future__ import annotations

import pytest

from pool.btc.block import parse_tx
from pool.devnode.chain import Chain
from pool.devnode.consensus import COIN
from pool.devnode.rpc import Rpc, RpcError
from pool.devnode.wallet import register_wallet_rpcs

OTHER = "bcrt1qj4j7j704sq2yumjs0xq2hp2xhaukegh4emmvfn"
PAYEES = ["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
          "bcrt1psjw83ferk5eyapl0f5fpd8u50s2t39hxp4pzuttnugf0acxfwy4qwwea25"]


class Clock:
    def __init__(self):
        self.t = 1_795_651_986

    def __call__(self):
        self.t += 1
        return self.t


@pytest.fixture
def node(tmp_path):
    chain = Chain(clock=Clock())
    rpc = Rpc(chain, clock=chain.clock)
    register_wallet_rpcs(rpc, tmp_path / "wallets")
    return rpc


def call(rpc, method, *params, wallet=None):
    return rpc.execute(method, list(params), uri_wallet=wallet)


def test_coinbase_matures_at_depth_101_and_pays_out(node):
    assert call(node, "createwallet", "pool") == {"name": "pool"}
    addr = call(node, "getnewaddress")
    info = call(node, "getaddressinfo", addr)
    assert info["ismine"] and info["solvable"] and info["desc"].startswith("wpkh(") and not info["ischange"]
    call(node, "generatetoaddress", 1, addr)
    call(node, "generatetoaddress", 99, OTHER)
    b = call(node, "getbalances")["mine"]
    assert (b["trusted"], b["immature"]) == (0, 50.0), "100 confirmations: still immature for the wallet"
    assert call(node, "listunspent") == []
    call(node, "generatetoaddress", 1, OTHER)
    b = call(node, "getbalances")["mine"]
    assert (b["trusted"], b["immature"]) == (50.0, 0)
    [coin] = call(node, "listunspent")
    assert coin["confirmations"] == 101 and coin["amount"] == 50.0 and coin["address"] == addr
    raw = call(node, "createrawtransaction", [], [{PAYEES[0]: 1.5}, {PAYEES[1]: "0.25"}])
    funded = call(node, "fundrawtransaction", raw, {"fee_rate": 2, "changePosition": 2})
    assert funded["changepos"] == 2 and 0 < funded["fee"] < 0.0001
    tx, _ = parse_tx(bytes.fromhex(funded["hex"]))
    assert [v for v, _ in tx.outputs[:2]] == [150_000_000, 25_000_000]
    assert sum(v for v, _ in tx.outputs) + round(funded["fee"] * COIN) == 50 * COIN
    signed = call(node, "signrawtransactionwithwallet", funded["hex"])
    assert signed["complete"]
    txid = call(node, "sendrawtransaction", signed["hex"])
    gt = call(node, "gettransaction", txid)
    assert gt["confirmations"] == 0 and gt["amount"] == -1.75 and gt["fee"] == -funded["fee"] and gt["trusted"]
    assert {(d["address"], d["category"], d["amount"]) for d in gt["details"]} == {(PAYEES[0], "send", -1.5), (PAYEES[1], "send", -0.25)}
    assert call(node, "getmempoolentry", txid)["vsize"] > 0
    b = call(node, "getbalances")["mine"]
    assert b["trusted"] == round(50 - 1.75 - funded["fee"], 8), "own unconfirmed change is trusted"
    call(node, "generatetoaddress", 1, OTHER)
    assert call(node, "gettransaction", txid)["confirmations"] == 1
    assert call(node, "gettxout", txid, 0)["value"] == 1.5
    sends = [e for e in call(node, "listtransactions") if e["category"] == "send"]
    assert {e["txid"] for e in sends} == {txid}
    with pytest.raises(RpcError) as e:
        call(node, "getmempoolentry", txid)
    assert e.value.code == -5


def test_miners_bear_the_fee_core_style(node):
    call(node, "createwallet", "pool")
    addr = call(node, "getnewaddress")
    call(node, "generatetoaddress", 1, addr)
    call(node, "generatetoaddress", 100, OTHER)
    raw = call(node, "createrawtransaction", [], [{PAYEES[0]: 1}, {PAYEES[1]: 1}])
    funded = call(node, "fundrawtransaction", raw, {"fee_rate": 3, "changePosition": 2, "subtractFeeFromOutputs": [0, 1]})
    fee = round(funded["fee"] * COIN)
    tx, _ = parse_tx(bytes.fromhex(funded["hex"]))
    assert tx.outputs[0][0] == COIN - fee // 2 - fee % 2 and tx.outputs[1][0] == COIN - fee // 2
    assert tx.outputs[2][0] == 48 * COIN


def test_core_errors(node):
    with pytest.raises(RpcError) as e:
        call(node, "getbalances")
    assert e.value.code == -18
    call(node, "createwallet", "a")
    call(node, "createwallet", "b")
    with pytest.raises(RpcError) as e:
        call(node, "getbalances")
    assert e.value.code == -19
    with pytest.raises(RpcError) as e:
        call(node, "getbalances", wallet="nope")
    assert e.value.code == -18
    with pytest.raises(RpcError) as e:
        call(node, "createwallet", "a")
    assert e.value.code == -35
    with pytest.raises(RpcError) as e:
        call(node, "createrawtransaction", [], [{"bcrt1qnotanaddress": 1}])
    assert (e.value.code, e.value.message) == (-5, "Invalid Bitcoin address: bcrt1qnotanaddress")
    raw = call(node, "createrawtransaction", [], [{PAYEES[0]: 1}])
    with pytest.raises(RpcError) as e:
        call(node, "fundrawtransaction", raw, {"fee_rate": 2}, wallet="a")
    assert (e.value.code, e.value.message) == (-4, "Insufficient funds")
    with pytest.raises(RpcError) as e:
        call(node, "fundrawtransaction", raw, wallet="a")
    assert e.value.code == -4 and "Fallbackfee is disabled" in e.value.message
    with pytest.raises(RpcError) as e:
        call(node, "fundrawtransaction", raw, {"fee_rate": 2, "feeRate": 0.0001}, wallet="a")
    assert e.value.code == -8
    with pytest.raises(RpcError) as e:
        call(node, "gettransaction", "00" * 32, wallet="a")
    assert (e.value.code, e.value.message) == (-5, "Invalid or non-wallet transaction id")
    assert call(node, "listwallets") == ["a", "b"]
    call(node, "unloadwallet", "b")
    assert call(node, "loadwallet", "b") == {"name": "b"}


def test_conflicted_payment_shows_negative_confirmations(node):
    call(node, "createwallet", "pool")
    addr = call(node, "getnewaddress")
    call(node, "generatetoaddress", 1, addr)
    call(node, "generatetoaddress", 100, OTHER)
    raw = call(node, "createrawtransaction", [], [{PAYEES[0]: 1}])
    first = call(node, "signrawtransactionwithwallet", call(node, "fundrawtransaction", raw, {"fee_rate": 2})["hex"])["hex"]
    raw2 = call(node, "createrawtransaction", [], [{PAYEES[1]: 2}])
    second = call(node, "signrawtransactionwithwallet", call(node, "fundrawtransaction", raw2, {"fee_rate": 5})["hex"])["hex"]
    t2 = call(node, "sendrawtransaction", second)  # spends the same coin: first is never broadcast
    call(node, "generatetoaddress", 3, OTHER)
    t1 = parse_tx(bytes.fromhex(first))[0].txid[::-1].hex()
    with pytest.raises(RpcError) as e:
        call(node, "sendrawtransaction", first)
    assert e.value.code == -25
    with pytest.raises(RpcError):
        call(node, "gettransaction", t1)  # never seen by the wallet
    assert call(node, "gettransaction", t2)["confirmations"] == 3


def test_wallet_reloads_its_keys_and_history(node, tmp_path):
    call(node, "createwallet", "pool")
    addr = call(node, "getnewaddress")
    call(node, "generatetoaddress", 1, addr)
    call(node, "generatetoaddress", 100, OTHER)
    call(node, "unloadwallet", "pool")
    call(node, "loadwallet", "pool")
    assert call(node, "getbalances")["mine"]["trusted"] == 50.0
    assert call(node, "getaddressinfo", addr)["ismine"]
