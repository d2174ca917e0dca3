"""Mempool acceptance, package selection for templates, the synthetic
faucet, and the mempool's life across blocks and reorgs."""
from __future__ import annotations

import pytest

from hashcoop.pool.core.btc.block import witness_commitment, witness_commitment_script
from hashcoop.pool.tools.devnode.consensus import COIN, witness_program
from hashcoop.pool.tools.devnode.mempool import Faucet, Mempool, MempoolReject, virtual_size
from hashcoop.pool.tools.devnode.rpc import Rpc
from tests.devnode.util import FAUCET, MINER, faucet_coinbase, funded_chain, make_block, spend

OTHER = bytes.fromhex("0014") + b"\x22" * 20


def cb_out(chain, height):
    return (faucet_coinbase(chain, height).txid, 0)


def test_acceptance_rules():
    chain = funded_chain(110)
    value = faucet_coinbase(chain, 1).outputs[0][0]
    tx = spend([cb_out(chain, 1)], [(value - 1000, OTHER)])
    entry = chain.accept_to_mempool(tx)
    assert entry.fee == 1000 and entry.weight == tx.weight and entry.sigop_cost == 1  # P2WPKH spend
    for bad, reason in (
        (tx, "txn-already-in-mempool"),
        (spend([cb_out(chain, 1)], [(value - 2000, OTHER)]), "txn-mempool-conflict"),
        (spend([(b"\x09" * 32, 0)], [(1, OTHER)]), "bad-txns-inputs-missingorspent"),
        (spend([cb_out(chain, 20)], [(1, OTHER)]), "bad-txns-premature-spend-of-coinbase"),
        (spend([cb_out(chain, 2)], [(value + 1, OTHER)]), "bad-txns-in-belowout"),
        (spend([cb_out(chain, 3)], [(1, OTHER)], locktime=chain.height + 1), "non-final"),
        (spend([cb_out(chain, 4)], [(1, OTHER)], sequence=200), "non-BIP68-final"),
        (faucet_coinbase(chain, 5), "coinbase"),
    ):
        with pytest.raises(MempoolReject) as e:
            chain.accept_to_mempool(bad)
        assert e.value.reason == reason
    # a child of a mempool transaction
    child = spend([(tx.txid, 0)], [(value - 3000, OTHER)])
    e2 = chain.accept_to_mempool(child)
    assert e2.parents == {tx.txid} and chain.mempool.get(tx.txid).children == {child.txid}


def test_ancestor_limit():
    chain = funded_chain(110)
    mp = chain.mempool
    mp.ancestor_limit = 3
    value = faucet_coinbase(chain, 1).outputs[0][0]
    prev = cb_out(chain, 1)
    for i in range(3):
        value -= 1000
        tx = spend([prev], [(value, OTHER)])
        chain.accept_to_mempool(tx)
        prev = (tx.txid, 0)
    with pytest.raises(MempoolReject) as e:
        chain.accept_to_mempool(spend([prev], [(value - 1000, OTHER)]))
    assert e.value.reason == "too-long-mempool-chain"


def test_template_orders_by_package_feerate_and_keeps_parents_first():
    chain = funded_chain(110)
    v = faucet_coinbase(chain, 1).outputs[0][0]
    parent = spend([cb_out(chain, 1)], [(v - 200, OTHER)])  # ~1 sat/vB
    child = spend([(parent.txid, 0)], [(v - 200 - 30_000, OTHER)])  # pays for both
    middle = spend([cb_out(chain, 2)], [(v - 10_000, OTHER)])  # ~90 sat/vB
    low = spend([cb_out(chain, 3)], [(v - 500, OTHER)])
    for tx in (parent, middle, low, child):
        chain.accept_to_mempool(tx)
    tpl = chain.create_new_block()
    assert [e.txid for e in tpl.entries] == [parent.txid, child.txid, middle.txid, low.txid]
    assert tpl.coinbase_value == 50 * COIN + 200 + 30_000 + 10_000 + 500
    assert tpl.commitment_script == witness_commitment_script(witness_commitment([e.wtxid for e in tpl.entries]))
    gbt = Rpc(chain).execute("getblocktemplate", [{"rules": ["segwit"]}])
    assert [t["depends"] for t in gbt["transactions"]] == [[], [1], [], []]
    assert [t["fee"] for t in gbt["transactions"]] == [200, 30_000, 10_000, 500]
    # the template mines: every transaction goes into the block and leaves the mempool
    chain.generate(MINER, 1)
    assert len(chain.mempool) == 0
    assert [t.txid for t in chain.tip.block.txs[1:]] == [e.txid for e in tpl.entries]


def test_equal_feerates_are_ordered_by_txid():
    mp = Mempool()
    chain = funded_chain(110)
    txs = [spend([cb_out(chain, h)], [(faucet_coinbase(chain, h).outputs[0][0] - 1100, OTHER)]) for h in range(1, 6)]
    for tx in txs:
        chain.accept_to_mempool(tx)
    picked = [e.txid for e in chain.mempool.select(4_000_000, 80_000)]
    assert picked == sorted(t.txid for t in txs)
    assert len(mp) == 0


def test_template_respects_the_weight_limit():
    chain = funded_chain(110)
    txs = [spend([cb_out(chain, h)], [(faucet_coinbase(chain, h).outputs[0][0] - 1000 * h, OTHER)]) for h in range(1, 6)]
    for tx in txs:
        chain.accept_to_mempool(tx)
    one = chain.mempool.get(txs[0].txid)
    room = one.vsize * 4 * 2 + 1  # two transactions fit
    picked = chain.mempool.select(room, 80_000)
    assert len(picked) == 2
    assert [e.txid for e in picked] == [txs[4].txid, txs[3].txid]  # the highest fees


def test_block_removes_confirmed_and_conflicting_transactions():
    chain = funded_chain(110)
    v = faucet_coinbase(chain, 1).outputs[0][0]
    a = spend([cb_out(chain, 1)], [(v - 1000, OTHER)])
    a_child = spend([(a.txid, 0)], [(v - 2000, OTHER)])
    b = spend([cb_out(chain, 2)], [(v - 1000, OTHER)])
    for tx in (a, a_child, b):
        chain.accept_to_mempool(tx)
    double = spend([cb_out(chain, 1)], [(v - 5000, MINER)])  # conflicts with a
    assert chain.submit_block(make_block(chain, txs=[double, b])) is None
    assert len(chain.mempool) == 0  # b confirmed; a and its child conflicted


def test_reorg_returns_transactions_and_drops_what_became_invalid():
    chain = funded_chain(110)
    fork = chain.tip
    v = faucet_coinbase(chain, 1).outputs[0][0]
    a = spend([cb_out(chain, 1)], [(v - 1000, OTHER)])
    chain.accept_to_mempool(a)
    chain.generate(MINER, 1)
    block_a = chain.tip
    # spend the new block's coinbase... only possible 100 blocks later; instead
    # a child of `a` enters the mempool and must survive the reorg with its parent
    child = spend([(a.txid, 0)], [(v - 2000, OTHER)])
    chain.accept_to_mempool(child)
    b1 = make_block(chain, prev=fork, tag=b"b1")
    chain.submit_block(b1)
    b2 = make_block(chain, prev=chain.lookup(b1.hash), tag=b"b2")
    assert chain.submit_block(b2) is None
    assert list(chain.mempool.entries) == [a.txid, child.txid]
    assert chain.mempool.get(child.txid).parents == {a.txid}
    assert not chain.contains(block_a)


def test_faucet_makes_plausible_mixed_transactions_with_chains():
    chain = funded_chain(110)
    faucet = Faucet()
    kinds_in, kinds_out, with_parents = set(), set(), 0
    for _ in range(60):
        coins = faucet.spendable(chain.utxos, chain.mempool, chain.next_height)
        tx = faucet.make_tx(coins, locktime=chain.height)
        assert tx is not None
        entry = chain.accept_to_mempool(tx)
        assert entry.fee > 0
        assert 1 <= entry.fee / virtual_size(entry.weight, 0) <= 51
        with_parents += bool(entry.parents)
        for i, (_, _, script_sig, seq) in enumerate(tx.inputs):
            assert seq == 0xFFFFFFFD
            stack = tx.witnesses[i] if tx.witnesses else []
            if script_sig:
                kinds_in.add("p2pkh")
                assert 103 <= len(script_sig) <= 108  # push(DER sig, usually 71-73) + push(33-byte key)
            elif len(stack) == 1:
                kinds_in.add("p2tr")
                assert len(stack[0]) == 64
            else:
                kinds_in.add("p2wpkh")
                assert 68 <= len(stack[0]) <= 73 and len(stack[1]) == 33
        for _, script in tx.outputs:
            wp = witness_program(script)
            kinds_out.add("p2pkh" if wp is None else f"v{wp[0]}-{len(wp[1])}")
        if len(chain.mempool) >= 20:
            chain.generate(MINER, 1)  # confirm some so that coins keep coming
    assert kinds_in == {"p2pkh", "p2tr", "p2wpkh"}
    assert kinds_out == {"p2pkh", "v0-20", "v1-32"}
    assert with_parents > 0
    # immature coinbases are never picked
    assert all(not (c.coinbase and chain.next_height - c.height < 100) for op, c in chain.utxos.items() if op in {x[0] for x in faucet.spendable(chain.utxos, chain.mempool, chain.next_height)})


def test_faucet_without_mature_coins_makes_nothing():
    chain = funded_chain(50)
    assert FAUCET.spendable(chain.utxos, chain.mempool, chain.next_height) == []
    assert FAUCET.make_tx([], locktime=50) is None
