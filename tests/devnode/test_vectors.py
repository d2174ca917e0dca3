"""The devnode against answers recorded from Bitcoin Core v31.99 on regtest
(tests/vectors/bitcoind-regtest.json) and the block ckpool and
cpuminer solved on it (ckpool-cpuminer-regtest.json).

The chain starts from the recorded context: the tip at height 102 with its
recorded hash, time, median time past, bits and chainwork, the coins the
recorded template's transactions spend (value = outputs + recorded fee),
those transactions in the mempool, and the recorded wall clock.
"""
from __future__ import annotations

import copy

import pytest

from hashcoop.pool.core.btc.hashing import hash_to_hex, hex_to_hash
from hashcoop.pool.tools.devnode.chain import infer_prevout_script
from hashcoop.pool.tools.devnode.consensus import Coin, decode_block_hex
from hashcoop.pool.tools.devnode.rpc import RpcError, dumps
from tests.devnode.util import ckpool_vectors, core_vectors, recorded_chain

V = core_vectors()
CASES = V["submitblock"]


def replay(rpc, upto: str | None = None) -> None:
    for case in CASES:
        if case["case"] == upto:
            return
        rpc.execute("submitblock", [case["block"]])


def test_context_tip_is_the_recorded_header():
    chain, rpc = recorded_chain()
    tip = V["context"]["tip_header"]
    got = rpc.execute("getblockheader", [tip["hash"]])
    assert got == tip
    assert list(got) == list(tip)
    assert rpc.execute("getbestblockhash") == V["rpc"]["getbestblockhash"]
    assert rpc.execute("getblockcount") == V["rpc"]["getblockcount"]
    assert rpc.execute("getblockheader", [tip["hash"], False])[8:72] == hex_to_hash(tip["previousblockhash"]).hex()


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c["case"] for c in CASES])
def test_submitblock_replay_gives_the_recorded_verdicts(i):
    chain, rpc = recorded_chain()
    for case in CASES[:i]:
        rpc.execute("submitblock", [case["block"]])
    case = CASES[i]
    assert decode_block_hex(case["block"]).hash == hex_to_hash(case["hash"])
    assert rpc.execute("submitblock", [case["block"]]) == case["result"]["result"]


def test_replay_in_order_and_the_resulting_chain():
    chain, rpc = recorded_chain()
    got = [rpc.execute("submitblock", [c["block"]]) for c in CASES]
    assert got == [c["result"]["result"] for c in CASES]
    assert chain.height == 104
    assert rpc.execute("getbestblockhash") == CASES[-1]["hash"]
    # the three mempool transactions were confirmed by the valid block
    assert rpc.execute("getrawmempool") == []
    assert chain.tip.block.txs[0].witnesses == [[b"\x00" * 32]]  # the filled-in reserved value is stored
    statuses = {t["hash"]: t["status"] for t in rpc.execute("getchaintips")}
    by_case = {c["case"]: c["hash"] for c in CASES}
    assert statuses[CASES[-1]["hash"]] == "active"
    assert statuses[by_case["valid-but-not-best-chain"]] == "valid-headers"
    assert statuses[by_case["bad-cb-amount"]] == "invalid"
    assert statuses[by_case["bad-cb-height"]] == "invalid"
    assert statuses[by_case["bad-witness-merkle-match"]] == "headers-only"
    # failures before the header was stored leave no trace
    for name in ("high-hash", "bad-txnmrklroot", "time-too-old", "time-too-new", "bad-diffbits", "prev-blk-not-found", "bad-version"):
        assert by_case[name] not in statuses


def test_resubmitting_after_the_replay():
    chain, rpc = recorded_chain()
    replay(rpc)
    by_case = {c["case"]: c["block"] for c in CASES}
    assert rpc.execute("submitblock", [by_case["bad-cb-height"]]) == "duplicate-invalid"
    assert rpc.execute("submitblock", [by_case["bad-cb-amount"]]) == "duplicate-invalid"
    assert rpc.execute("submitblock", [by_case["valid-but-not-best-chain"]]) == "duplicate"
    assert rpc.execute("submitblock", [by_case["missing-coinbase-witness-nonce-is-filled-in"]]) == "duplicate"
    # a mutated block never marks its header failed: the same error again
    assert rpc.execute("submitblock", [by_case["bad-witness-merkle-match"]]) == "bad-witness-merkle-match"
    assert rpc.execute("submitblock", [by_case["high-hash"]]) == "high-hash"


def test_getblock_and_getblockheader_after_the_replay():
    chain, rpc = recorded_chain()
    replay(rpc)
    want = V["rpc"]["getblock_v1_after"]
    got = rpc.execute("getblock", [want["hash"], 1])
    assert got == want
    assert list(got) == list(want)
    header = rpc.execute("getblockheader", [want["hash"]])
    assert header == V["rpc"]["getblockheader_after"]
    assert list(header) == list(V["rpc"]["getblockheader_after"])
    # verbosity 0 is the block as submitted
    valid = next(c for c in CASES if c["case"] == "valid")
    assert rpc.execute("getblock", [want["hash"], 0]) == valid["block"]
    assert rpc.execute("getblock", [want["hash"], False]) == valid["block"]


def _assert_same_template(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for key in want:
        assert type(got[key]) is type(want[key]), key
        if key == "longpollid":
            # <tip hash><counter>: the counter counts this node's mempool updates
            assert got[key][:64] == want[key][:64]
            assert got[key][64:].isdigit()
        else:
            assert got[key] == want[key], key


def test_getblocktemplate_matches_the_recorded_one():
    chain, rpc = recorded_chain()
    _assert_same_template(rpc.execute("getblocktemplate", [{"rules": ["segwit"]}]), V["rpc"]["getblocktemplate"])


def test_getblocktemplate_after_the_valid_block_matches_the_recorded_next():
    chain, rpc = recorded_chain()
    replay(rpc, upto="missing-coinbase-witness-nonce-is-filled-in")
    _assert_same_template(rpc.execute("getblocktemplate", [{"rules": ["segwit"]}]), V["rpc"]["getblocktemplate_next"])


def test_getmininginfo_after_a_template():
    chain, rpc = recorded_chain()
    rpc.execute("getblocktemplate", [{"rules": ["segwit"]}])
    want = V["rpc"]["getmininginfo"]
    got = rpc.execute("getmininginfo")
    assert list(got) == list(want)
    for key in want:
        if key == "networkhashps":
            # Core's estimate walks back to genesis; a recorded context has
            # no block before its tip, so there is nothing to estimate from
            assert got[key] == 0
        elif key == "warnings":
            assert isinstance(got[key], list)
        else:
            assert got[key] == want[key], key
    assert b'"blockmintxfee":0.00000001' in dumps(got)


def test_getblockchaininfo_fields_the_context_determines():
    chain, rpc = recorded_chain()
    want = V["rpc"]["getblockchaininfo"]
    got = rpc.execute("getblockchaininfo")
    assert list(got) == list(want)
    for key in want:
        if key in ("size_on_disk", "warnings"):
            assert type(got[key]) is type(want[key])
        else:
            assert got[key] == want[key], key
    assert b'"difficulty":4.656542373906925e-10' in dumps(got)
    assert b'"verificationprogress":1,' in dumps(got)


def test_recorded_error_objects():
    chain, rpc = recorded_chain()
    for name, method, params in (
        ("getblockhash_out_of_range", "getblockhash", [1000]),
        ("unknown_method", "getblockchaininfos", []),
        ("getblocktemplate_no_segwit_rule", "getblocktemplate", [{}]),
    ):
        with pytest.raises(RpcError) as e:
            rpc.execute(method, params)
        assert {"result": None, "error": e.value.to_json(), "id": 1} == V["rpc"][name]
    with pytest.raises(RpcError) as e:
        rpc.execute("getblocktemplate", [{"rules": ["csv"]}])
    assert e.value.to_json() == V["rpc"]["getblocktemplate_no_segwit_rule"]["error"]


def test_validateaddress_recorded_answers():
    chain, rpc = recorded_chain()
    p2tr = V["rpc"]["validateaddress_p2tr"]
    got = rpc.execute("validateaddress", [p2tr["address"]])
    assert got == p2tr and list(got) == list(p2tr)
    # the recorded bad address is not in the vectors; this one has an
    # invalid bech32 character ('b') at index 7, which is what Core reported
    bad = p2tr["address"][:7] + "b" + p2tr["address"][8:]
    got = rpc.execute("validateaddress", [bad])
    assert got == V["rpc"]["validateaddress_bad"]
    assert list(got) == list(V["rpc"]["validateaddress_bad"])


def test_the_ckpool_block_connects_on_the_replayed_chain():
    """Block 105, mined by cpuminer through ckpool on the same node, builds
    on the last replayed block. One coin it spends (an output Core's wallet
    had) is not in the vectors: it is reconstructed with the value that
    makes the recorded coinbase claim exactly subsidy + fees."""
    chain, rpc = recorded_chain()
    replay(rpc)
    acc = ckpool_vectors()["accepted_block"]
    block = decode_block_hex(acc["hex"])
    assert hash_to_hex(block.prevhash) == chain.tip.hash_hex
    fees_claimed = sum(v for v, _ in block.txs[0].outputs) - chain.subsidy(acc["height"])
    known_fees = 0
    unknown = None
    for tx in block.txs[1:]:
        coins = [chain.utxos.get((p, n)) for p, n, _, _ in tx.inputs]
        if None in coins:
            assert unknown is None
            unknown = tx
            continue
        known_fees += sum(c.value for c in coins) - sum(v for v, _ in tx.outputs)
    assert unknown is not None and len(unknown.inputs) == 1
    prev, n, script_sig, _ = unknown.inputs[0]
    value = sum(v for v, _ in unknown.outputs) + fees_claimed - known_fees
    chain.utxos[(prev, n)] = Coin(value, infer_prevout_script(script_sig, unknown.witnesses[0], b""), 102, False)
    chain.clock = lambda: block.time
    assert rpc.execute("submitblock", [acc["hex"]]) is None
    assert rpc.execute("getbestblockhash") == acc["hash"]
    assert rpc.execute("getblock", [acc["hash"], 0]) == acc["hex"]
    assert rpc.execute("getblockcount") == acc["height"]
    # one satoshi less in that coin and the same block pays too much
    chain2, rpc2 = recorded_chain()
    replay(rpc2)
    chain2.utxos[(prev, n)] = Coin(value - 1, infer_prevout_script(script_sig, unknown.witnesses[0], b""), 102, False)
    chain2.clock = lambda: block.time
    assert rpc2.execute("submitblock", [acc["hex"]]) == "bad-cb-amount"


def test_replay_does_not_depend_on_vector_objects_being_mutable():
    # the vectors are read once per process; make sure nothing above mutated them
    assert copy.deepcopy(core_vectors()) == V
