"""RPC methods without HTTP: parameter checking like Core's RPCHelpMan,
result shapes, the template cache, proposals, generateblock, mempool RPCs
and Core's number formatting."""
from __future__ import annotations

import pytest

from hashcoop.pool.core.btc.address import NETWORKS, script_to_address
from hashcoop.pool.core.btc.block import witness_commitment
from hashcoop.pool.core.btc.hashing import hash_to_hex
from hashcoop.pool.tools.devnode.consensus import COIN, Block
from hashcoop.pool.tools.devnode.rpc import Amount, CoreFloat, Rpc, RpcError, dumps
from tests.devnode.util import FAUCET, MINER, NOW, Clock, coinbase, faucet_coinbase, funded_chain, make_block, spend

REGTEST = NETWORKS["regtest"]
MINER_ADDR = script_to_address(MINER, REGTEST)
OTHER = bytes.fromhex("0014") + b"\x22" * 20


def node(blocks: int = 110, clock: Clock | None = None):
    clock = clock or Clock()
    chain = funded_chain(blocks, clock=clock)
    return chain, Rpc(chain, clock=clock, started=NOW - 5)


def err(rpc: Rpc, method: str, params=None) -> tuple[int, str]:
    with pytest.raises(RpcError) as e:
        rpc.execute(method, params)
    return e.value.code, e.value.message


def test_parameter_checks_like_rpchelpman():
    chain, rpc = node(3)
    code, msg = err(rpc, "getblockhash", [])
    assert code == -1 and msg.startswith("getblockhash height\n")
    assert err(rpc, "getblockhash", [1, 2])[0] == -1
    assert err(rpc, "getblockhash", ["1"]) == (-3, 'Wrong type passed:\n{\n    "Position 1 (height)": "JSON value of type string is not of expected type number"\n}')
    assert err(rpc, "getblockhash", [1.5]) == (-1, "JSON integer out of range")
    assert err(rpc, "getblockhash", [True])[0] == -3
    assert err(rpc, "getblockhash", {"heigth": 1}) == (-8, "Unknown named parameter heigth")
    assert rpc.execute("getblockhash", {"height": 1}) == rpc.execute("getblockhash", [1])
    assert rpc.execute("getblockhash", [0]) == "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
    assert err(rpc, "getblockhash", [4]) == (-8, "Block height out of range")
    assert err(rpc, "getblockhash", [-1]) == (-8, "Block height out of range")
    assert err(rpc, "getblockheader", ["abc"]) == (-8, "blockhash must be of length 64 (not 3, for 'abc')")
    assert err(rpc, "getblockheader", ["z" * 64]) == (-8, f"blockhash must be hexadecimal string (not '{'z' * 64}')")
    assert err(rpc, "getblockheader", ["00" * 32]) == (-5, "Block not found")
    assert err(rpc, "nosuchmethod") == (-32601, "Method not found")
    two = err(rpc, "getblockheader", [1, "x"])
    assert two[0] == -3 and '"Position 1 (blockhash)"' in two[1] and '"Position 2 (verbose)"' in two[1]


def test_getblockheader_and_getblock_shapes():
    chain, rpc = node(110)
    tx = spend([(faucet_coinbase(chain, 1).txid, 0)], [(50 * COIN - 4000, OTHER)])
    chain.accept_to_mempool(tx)
    chain.generate(MINER, 2)
    h = chain.at_height(111).hash_hex
    header = rpc.execute("getblockheader", [h])
    assert header["confirmations"] == 2 and header["nextblockhash"] == chain.tip.hash_hex
    assert header["previousblockhash"] == chain.at_height(110).hash_hex
    assert header["chainwork"] == f"{224:064x}" and header["nTx"] == 2
    assert rpc.execute("getblockheader", [h, False]) == chain.at_height(111).header.hex()
    genesis = rpc.execute("getblockheader", [rpc.execute("getblockhash", [0])])
    assert "previousblockhash" not in genesis and genesis["nTx"] == 1
    v1 = rpc.execute("getblock", [h])
    assert v1["tx"] == [hash_to_hex(t) for t in chain.at_height(111).block.txids]
    assert v1["coinbase_tx"] == {"version": 2, "locktime": 110, "sequence": 0xFFFFFFFE, "coinbase": "016f00", "witness": "00" * 32}
    v2 = rpc.execute("getblock", [h, 2])
    cb, spender = v2["tx"]
    assert cb["vin"] == [{"coinbase": "016f00", "txinwitness": ["00" * 32], "sequence": 0xFFFFFFFE}]
    assert cb["vout"][0]["value"] == 50 + 4000 / COIN
    assert cb["vout"][0]["scriptPubKey"]["address"] == MINER_ADDR and cb["vout"][0]["scriptPubKey"]["type"] == "witness_v0_keyhash"
    assert cb["vout"][1]["scriptPubKey"]["type"] == "nulldata" and cb["vout"][1]["scriptPubKey"]["desc"].startswith("raw(6a24aa21a9ed")
    assert cb["vout"][1]["scriptPubKey"]["asm"].startswith("OP_RETURN aa21a9ed")
    assert "fee" not in cb
    assert spender["fee"] == 4000 / COIN and spender["vin"][0]["txid"] == hash_to_hex(faucet_coinbase(chain, 1).txid)
    assert spender["vin"][0]["scriptSig"] == {"asm": "", "hex": ""} and spender["vsize"] == (tx.weight + 3) // 4
    assert list(spender) == ["txid", "hash", "version", "size", "vsize", "weight", "locktime", "vin", "vout", "fee", "hex"]
    assert b'"fee":0.00004000' in dumps(spender)
    v3 = rpc.execute("getblock", [h, 3])
    prevout = v3["tx"][1]["vin"][0]["prevout"]
    assert prevout["generated"] is True and prevout["height"] == 1 and prevout["value"] == 50
    assert prevout["scriptPubKey"]["address"] == script_to_address(FAUCET.mining_script, REGTEST)
    assert rpc.execute("getblock", [h, 0]) == chain.at_height(111).block.raw.hex()


def test_getblock_without_data():
    chain, rpc = node(3)
    good = make_block(chain, tag=b"g")
    bad_cb = coinbase(4, 50 * COIN, commitment=witness_commitment([]), witness=[b"\x00"], tag=b"g")
    assert chain.submit_block(Block(good.header, [bad_cb])) == "bad-witness-nonce-size"
    assert err(rpc, "getblock", [good.hash[::-1].hex()]) == (-1, "Block not found on disk")
    assert rpc.execute("getblockheader", [good.hash[::-1].hex()])["confirmations"] == -1


def test_blockchain_and_mining_info():
    chain, rpc = node(110)
    info = rpc.execute("getblockchaininfo")
    assert info["blocks"] == info["headers"] == 110 and info["initialblockdownload"] is False
    assert info["chainwork"] == f"{222:064x}"
    mining = rpc.execute("getmininginfo")
    assert mining["next"]["height"] == 111 and mining["pooledtx"] == 0
    assert isinstance(mining["networkhashps"], float) and mining["networkhashps"] > 0
    assert rpc.execute("getdifficulty") == 4.656542373906925e-10
    assert rpc.execute("uptime") == 5
    net = rpc.execute("getnetworkinfo")
    assert net["version"] == 319900 and net["subversion"].startswith("/Satoshi:31.99.0")
    assert b'"relayfee":0.00000100' in dumps(net)


def test_fresh_chain_is_in_initial_block_download_until_a_recent_block():
    clock = Clock()
    chain, rpc = node(0, clock)
    assert rpc.execute("getblockchaininfo")["initialblockdownload"] is True
    chain.generate(MINER, 1)
    assert rpc.execute("getblockchaininfo")["initialblockdownload"] is False


def test_getchaintips():
    chain, rpc = node(5)
    side = make_block(chain, prev=chain.at_height(4), tag=b"side")
    assert rpc.execute("submitblock", [side.raw.hex()]) == "inconclusive"
    tips = rpc.execute("getchaintips")  # highest first; Core leaves equal heights in no particular order
    assert sorted(tips, key=lambda t: t["branchlen"]) == [
        {"height": 5, "hash": chain.tip.hash_hex, "branchlen": 0, "status": "active"},
        {"height": 5, "hash": side.hash[::-1].hex(), "branchlen": 1, "status": "valid-headers"},
    ]
    chain.generate(MINER, 1)
    assert [t["height"] for t in rpc.execute("getchaintips")] == [6, 5]


def test_submitblock_decoding():
    chain, rpc = node(3)
    block = make_block(chain)
    raw = block.raw.hex()
    assert err(rpc, "submitblock", ["zz"]) == (-22, "Block decode failed")
    assert err(rpc, "submitblock", [raw[:-1]]) == (-22, "Block decode failed")
    assert err(rpc, "submitblock", [raw[:-2]]) == (-22, "Block decode failed")
    assert err(rpc, "submitblock", [""]) == (-22, "Block decode failed")
    no_cb = make_block(chain, cb=spend([(b"\x01" * 32, 0)], [(1, OTHER)]))
    # no pre-check since bitcoin/bitcoin#31175: CheckBlock's own verdicts
    assert rpc.execute("submitblock", [no_cb.raw.hex()]) == "bad-cb-missing"
    assert rpc.execute("submitblock", [raw[:160] + "00"]) == "bad-txnmrklroot"
    # bytes after the last transaction are ignored, as Core ignores them
    assert rpc.execute("submitblock", [raw + "abcd"]) is None
    assert rpc.execute("submitblock", [raw]) == "duplicate"
    assert rpc.execute("submitblock", [raw, "ignored"]) == "duplicate"


def test_superfluous_witness_flag_does_not_decode():
    chain, rpc = node(3)
    block = make_block(chain, segwit=False)
    cb = block.txs[0].raw
    # version | 00 01 | body | (one empty witness stack) 00 | locktime
    bogus = cb[:4] + b"\x00\x01" + cb[4:-4] + b"\x00" + cb[-4:]
    raw = block.header + b"\x01" + bogus
    assert err(rpc, "submitblock", [raw.hex()]) == (-22, "Block decode failed")
    noncanonical = block.header + b"\xfd\x01\x00" + cb
    assert err(rpc, "submitblock", [noncanonical.hex()]) == (-22, "Block decode failed")


def test_template_cache_follows_core():
    clock = Clock()
    chain, rpc = node(110, clock)
    gbt = lambda: rpc.execute("getblocktemplate", [{"rules": ["segwit"]}])  # noqa: E731
    first = gbt()
    assert first["transactions"] == [] and first["longpollid"].startswith(chain.tip.hash_hex)
    tx = spend([(faucet_coinbase(chain, 1).txid, 0)], [(50 * COIN - 4000, OTHER)])
    chain.accept_to_mempool(tx)
    clock.t += 3
    same = gbt()
    assert same["transactions"] == [] and same["longpollid"] == first["longpollid"]
    assert same["curtime"] == first["curtime"] or same["curtime"] >= first["curtime"]
    clock.t += 3  # more than 5 seconds since it was built, and the mempool changed
    fresh = gbt()
    assert [t["txid"] for t in fresh["transactions"]] == [hash_to_hex(tx.txid)]
    assert fresh["longpollid"] != first["longpollid"] and fresh["coinbasevalue"] == 50 * COIN + 4000
    chain.generate(MINER, 1)
    after = gbt()  # a new tip: rebuilt at once
    assert after["height"] == 112 and after["previousblockhash"] == chain.tip.hash_hex
    assert after["mintime"] == chain.tip.mtp + 1 and after["curtime"] >= after["mintime"]


def test_getblocktemplate_errors_and_longpoll_request():
    chain, rpc = node(3)
    assert err(rpc, "getblocktemplate")[0] == -1
    assert err(rpc, "getblocktemplate", ["x"])[0] == -3
    assert err(rpc, "getblocktemplate", [{"mode": "bogus", "rules": ["segwit"]}]) == (-8, "Invalid mode")
    assert err(rpc, "getblocktemplate", [{"mode": 1}]) == (-8, "Invalid mode")
    assert rpc.longpoll_request([{"rules": ["segwit"]}]) is None
    lp = chain.tip.hash_hex + "42"
    assert rpc.longpoll_request([{"rules": ["segwit"], "longpollid": lp}]) == (chain.tip.hash, 42)
    assert rpc.longpoll_request([{"rules": ["segwit"], "longpollid": chain.tip.hash_hex + "x"}]) == (chain.tip.hash, 0)
    with pytest.raises(RpcError) as e:
        rpc.longpoll_request([{"rules": ["segwit"], "longpollid": "abc"}])
    assert e.value.message == "longpollid must be of length 64 (not 3, for 'abc')"


def test_proposals():
    chain, rpc = node(110)
    good = make_block(chain, valid_pow=False)  # proposals skip proof of work
    prop = lambda b: rpc.execute("getblocktemplate", [{"mode": "proposal", "data": b.raw.hex()}])  # noqa: E731
    assert prop(good) is None
    assert chain.lookup(good.hash) is None
    assert prop(make_block(chain, value=51 * COIN)) == "bad-cb-amount"
    assert prop(make_block(chain, merkle=b"\x01" * 32)) == "bad-txnmrklroot"
    assert prop(make_block(chain, prev=chain.at_height(100))) == "inconclusive-not-best-prevblk"
    assert prop(chain.tip.block) == "duplicate"
    assert err(rpc, "getblocktemplate", [{"mode": "proposal"}]) == (-3, "Missing data String key for proposal")
    assert err(rpc, "getblocktemplate", [{"mode": "proposal", "data": "00"}]) == (-22, "Block decode failed")


def test_generatetoaddress_and_generateblock():
    chain, rpc = node(110)
    hashes = rpc.execute("generatetoaddress", [2, MINER_ADDR])
    assert len(hashes) == 2 and rpc.execute("getbestblockhash") == hashes[-1]
    assert err(rpc, "generatetoaddress", [1, "bcrt1qnotanaddress"]) == (-5, "Error: Invalid address")
    tx = spend([(faucet_coinbase(chain, 1).txid, 0)], [(50 * COIN - 4000, OTHER)])
    chain.accept_to_mempool(tx)
    tx2 = spend([(faucet_coinbase(chain, 2).txid, 0)], [(50 * COIN - 4000, OTHER)])
    out = rpc.execute("generateblock", [MINER_ADDR, [hash_to_hex(tx.txid), tx2.raw.hex()]])
    assert set(out) == {"hash"} and rpc.execute("getbestblockhash") == out["hash"]
    assert [t.txid for t in chain.tip.block.txs[1:]] == [tx.txid, tx2.txid]
    assert chain.tip.block.txs[0].outputs[0][0] == 50 * COIN  # generateblock claims no fees, like Core
    assert len(chain.mempool) == 0
    unsubmitted = rpc.execute("generateblock", ["raw(" + OTHER.hex() + ")", [], False])
    assert set(out) == {"hash"} and set(unsubmitted) == {"hash", "hex"}
    assert rpc.execute("getbestblockhash") == out["hash"]
    assert rpc.execute("submitblock", [unsubmitted["hex"]]) is None
    assert err(rpc, "generateblock", [MINER_ADDR, ["00" * 32]]) == (-5, f"Transaction {'00' * 32} not in mempool.")
    assert err(rpc, "generateblock", [MINER_ADDR, ["0011"]]) == (-22, "Transaction decode failed for 0011. Make sure the tx has at least one input.")
    code, msg = err(rpc, "generateblock", [MINER_ADDR, [tx.raw.hex()]])
    assert code == -25 and msg.startswith("TestBlockValidity failed: bad-txns-BIP30")
    assert err(rpc, "generateblock", ["nope", []]) == (-5, "Error: Invalid address or descriptor")


def test_mempool_rpcs():
    chain, rpc = node(110)
    a = spend([(faucet_coinbase(chain, 1).txid, 0)], [(50 * COIN - 4000, OTHER)])
    assert rpc.execute("sendrawtransaction", [a.raw.hex()]) == hash_to_hex(a.txid)
    assert rpc.execute("sendrawtransaction", [a.raw.hex()]) == hash_to_hex(a.txid)
    child = spend([(a.txid, 0)], [(50 * COIN - 9000, OTHER)])
    rpc.execute("sendrawtransaction", [child.raw.hex()])
    assert rpc.execute("getrawmempool") == [hash_to_hex(a.txid), hash_to_hex(child.txid)]
    seq = rpc.execute("getrawmempool", [False, True])
    assert seq["txids"] == rpc.execute("getrawmempool") and isinstance(seq["mempool_sequence"], int)
    verbose = rpc.execute("getrawmempool", [True])
    e = verbose[hash_to_hex(child.txid)]
    assert e["depends"] == [hash_to_hex(a.txid)] and e["ancestorcount"] == 2 and e["fees"]["base"] == 5000 / COIN
    assert verbose[hash_to_hex(a.txid)]["spentby"] == [hash_to_hex(child.txid)]
    assert "bip125-replaceable" not in e  # gone in Core v31 (full RBF)
    # the child pays the higher feerate: one chunk of both (cluster mempool)
    assert e["fees"]["chunk"] == 9000 / COIN and e["chunkweight"] == a.weight + child.weight
    assert e["unbroadcast"] is True and rpc.execute("getmempoolinfo")["unbroadcastcount"] == 2
    assert err(rpc, "getrawmempool", [True, True])[0] == -8
    info = rpc.execute("getmempoolinfo")
    assert info["size"] == 2 and info["total_fee"] == 9000 / COIN
    assert err(rpc, "sendrawtransaction", ["00"]) == (-22, "TX decode failed. Make sure the tx has at least one input.")
    conflict = spend([(faucet_coinbase(chain, 1).txid, 0)], [(50 * COIN - 8000, OTHER)])
    assert err(rpc, "sendrawtransaction", [conflict.raw.hex()]) == (-26, "txn-mempool-conflict")
    assert err(rpc, "sendrawtransaction", [spend([(b"\x07" * 32, 0)], [(1, OTHER)]).raw.hex()]) == (-25, "bad-txns-inputs-missingorspent")
    free = spend([(faucet_coinbase(chain, 2).txid, 0)], [(50 * COIN, OTHER)])
    vsize = -(-free.weight // 4)
    assert err(rpc, "sendrawtransaction", [free.raw.hex()]) == (-26, f"min relay fee not met, 0 < {-(-vsize // 10)}")
    chain.generate(MINER, 1)
    assert err(rpc, "sendrawtransaction", [child.raw.hex()]) == (-27, "Transaction outputs already in utxo set")
    # a confirmed transaction whose outputs are all spent just looks like missing inputs, as in Core
    assert err(rpc, "sendrawtransaction", [a.raw.hex()]) == (-25, "bad-txns-inputs-missingorspent")


def test_stop_calls_back():
    chain = funded_chain(1)
    stopped = []
    rpc = Rpc(chain, on_stop=lambda: stopped.append(True))
    assert rpc.execute("stop") == "Bitcoin Core stopping"
    assert stopped == [True] and rpc.stopping


def test_core_number_formatting():
    assert dumps({"a": Amount(1), "b": Amount(5_000_008_860), "c": Amount(0), "d": Amount(-150_000_000)}) == b'{"a":0.00000001,"b":50.00008860,"c":0.00000000,"d":-1.50000000}'
    assert dumps([CoreFloat(4.656542373906925e-10), CoreFloat(1.0), CoreFloat(0.1 + 0.2), CoreFloat(4.088476458348129e-07)]) == b"[4.656542373906925e-10,1,0.3,4.088476458348129e-07]"
    assert CoreFloat(0.1 + 0.2) == 0.3 and Amount(1) == 1e-08
    assert dumps({"x": None, "y": True, "z": [1, "s"]}) == b'{"x":null,"y":true,"z":[1,"s"]}'


def test_help():
    chain, rpc = node(1)
    assert "getblocktemplate template_request" in rpc.execute("help")
    assert rpc.execute("help", ["getblockhash"]).startswith("getblockhash height")
    assert rpc.execute("help", ["nope"]) == "help: unknown command: nope"


def test_thousands_of_transactions_stay_fast():
    """A template and a submitted block with 2000 transactions take tens of
    milliseconds (generous bounds here, for slow machines); a cached
    template is cheaper still."""
    import time

    from hashcoop.pool.tools.devnode.mempool import p2wpkh_script

    chain, rpc = node(101)
    cb = faucet_coinbase(chain, 1)
    n = 2000
    each = (cb.outputs[0][0] - 1_000_000) // n
    outs = [(each, p2wpkh_script(i.to_bytes(20, "little"))) for i in range(n)]
    split = spend([(cb.txid, 0)], outs)
    chain.accept_to_mempool(split)
    chain.generate(MINER, 1)
    for i in range(n):
        chain.accept_to_mempool(spend([(split.txid, i)], [(each // 2 - 300, OTHER), (each // 2, MINER)]))
    started = time.perf_counter()
    gbt = rpc.execute("getblocktemplate", [{"rules": ["segwit"]}])
    built = time.perf_counter() - started
    assert len(gbt["transactions"]) == n
    started = time.perf_counter()
    rpc.execute("getblocktemplate", [{"rules": ["segwit"]}])
    cached = time.perf_counter() - started
    assert built < 1.0 and cached < built
    block = chain.grind(chain.assemble(chain.create_new_block(), MINER), 10**6)[0]
    started = time.perf_counter()
    assert rpc.execute("submitblock", [block.raw.hex()]) is None
    assert time.perf_counter() - started < 1.0
    assert len(chain.mempool) == 0 and chain.tip.n_tx == n + 1
