"""The pure chain: mining, maturity, halving, reorganisations,
invalidate/reconsider, and every reject string with a crafted block."""
from __future__ import annotations

import pytest

from hashcoop.pool.core.btc.block import witness_commitment
from hashcoop.pool.core.btc.serialize import bip34_height
from hashcoop.pool.tools.devnode.chain import Chain, ChainError, TipChanged
from hashcoop.pool.tools.devnode.consensus import COIN, MAX_MONEY, REGTEST_GENESIS_HASH, Block, Coin, make_tx
from tests.devnode.util import MINER, NOW, Clock, coinbase, faucet_coinbase, funded_chain, make_block, spend

OTHER = bytes.fromhex("0014") + b"\x22" * 20


def cb_out(chain: Chain, height: int) -> tuple[bytes, int]:
    return (faucet_coinbase(chain, height).txid, 0)


def cb_value(chain: Chain, height: int) -> int:
    return faucet_coinbase(chain, height).outputs[0][0]


# ---------------------------------------------------------------------------
# mining, maturity, halving


def test_genesis_chain():
    chain = Chain(clock=Clock())
    assert chain.height == 0
    assert chain.tip.hash == REGTEST_GENESIS_HASH
    assert chain.tip.chainwork == 2
    assert chain.utxos == {}  # the genesis coinbase is unspendable


def test_generate_pays_the_script_and_counts_work():
    chain = Chain(clock=Clock())
    hashes = chain.generate(MINER, 5)
    assert len(hashes) == 5 and chain.height == 5
    assert [chain.at_height(h).hash for h in range(1, 6)] == hashes
    assert chain.tip.chainwork == 12
    cb = faucet_coinbase(chain, 3)
    assert cb.inputs[0][2].startswith(bip34_height(3))
    coin = chain.utxos[(cb.txid, 0)]
    assert coin == Coin(50 * COIN, MINER, 3, True)
    # the witness commitment output is not a coin
    assert (cb.txid, 1) not in chain.utxos
    assert cb.witnesses == [[b"\x00" * 32]]


def test_block_times_follow_the_clock_and_the_median():
    clock = Clock(NOW)
    chain = Chain(clock=clock)
    chain.generate(MINER, 20)  # a burst in one second pushes times past the clock, like Core
    times = [chain.at_height(h).time for h in range(1, 21)]
    assert times[0] == NOW
    assert all(chain.at_height(h).time > chain.at_height(h - 1).mtp for h in range(1, 21))
    assert times == sorted(times)


def test_coinbase_maturity_is_one_hundred_blocks():
    chain = funded_chain(100)
    # spending height 1's coinbase in block 101: depth 100, allowed
    tx = spend([cb_out(chain, 1)], [(cb_value(chain, 1) - 1000, OTHER)])
    block = make_block(chain, txs=[tx])
    assert chain.submit_block(block) is None
    # height 2's coinbase in block 102 is fine too, height 3's is not
    early = spend([cb_out(chain, 3)], [(cb_value(chain, 3) - 1000, OTHER)])
    assert chain.submit_block(make_block(chain, txs=[early])) == "bad-txns-premature-spend-of-coinbase"
    with pytest.raises(Exception) as e:
        chain.accept_to_mempool(early)
    assert e.value.reason == "bad-txns-premature-spend-of-coinbase"
    chain.generate(MINER, 1)
    chain.accept_to_mempool(early)  # spend height 103, depth 100
    assert early.txid in chain.mempool


def test_subsidy_halves_every_150_blocks():
    chain = funded_chain(149)
    assert cb_value(chain, 149) == 50 * COIN
    assert chain.submit_block(make_block(chain, value=50 * COIN)) == "bad-cb-amount"
    assert chain.submit_block(make_block(chain, value=25 * COIN, tag=b"ok")) is None
    assert chain.height == 150
    assert chain.subsidy(300) == 12.5 * COIN and chain.subsidy(150 * 64) == 0


def test_coinbase_may_claim_less():
    chain = funded_chain(1)
    assert chain.submit_block(make_block(chain, value=1)) is None


# ---------------------------------------------------------------------------
# reorganisations


def test_equal_work_sibling_is_stored_but_inconclusive():
    chain = funded_chain(3)
    a = make_block(chain, tag=b"a")
    b = make_block(chain, tag=b"b")
    assert chain.submit_block(a) is None
    assert chain.submit_block(b) == "inconclusive"
    assert chain.tip.hash == a.hash  # first seen wins ties
    assert chain.submit_block(b) == "duplicate"
    tips = {i.hash: status for i, _, status in chain.chain_tips()}
    assert tips[b.hash] == "valid-headers"


def test_heavier_side_chain_reorganises_and_returns_transactions():
    chain = funded_chain(110)
    fork = chain.tip
    tx = spend([cb_out(chain, 1)], [(cb_value(chain, 1) - 5000, OTHER)])
    chain.accept_to_mempool(tx)
    events = []
    chain.listeners.append(events.append)
    a1 = make_block(chain, txs=[tx], tag=b"a1")
    assert chain.submit_block(a1) is None
    assert tx.txid not in chain.mempool and (tx.txid, 0) in chain.utxos
    b1 = make_block(chain, prev=fork, tag=b"b1")
    assert chain.submit_block(b1) == "inconclusive"
    b2 = make_block(chain, prev=chain.lookup(b1.hash), tag=b"b2")
    assert chain.submit_block(b2) is None
    assert chain.tip.hash == b2.hash and chain.height == 112
    # a1 was disconnected: its transaction is back in the mempool, its coins are gone
    assert tx.txid in chain.mempool
    assert (tx.txid, 0) not in chain.utxos and cb_out(chain, 1) in chain.utxos
    assert (a1.txs[0].txid, 0) not in chain.utxos
    tips = {i.hash: status for i, _, status in chain.chain_tips()}
    assert tips == {b2.hash: "active", a1.hash: "valid-fork"}
    tip_events = [e for e in events if isinstance(e, TipChanged)]
    assert [e.tip.hash for e in tip_events] == [a1.hash, b2.hash]
    assert tip_events[-1].fork is fork and tip_events[-1].connected
    # and back: a2, a3 on a1 outweigh b2; a1 reconnects and takes the transaction again
    a2 = make_block(chain, prev=chain.lookup(a1.hash), tag=b"a2")
    assert chain.submit_block(a2) == "inconclusive"
    a3 = make_block(chain, prev=chain.lookup(a2.hash), tag=b"a3")
    assert chain.submit_block(a3) is None
    assert chain.tip.hash == a3.hash
    assert tx.txid not in chain.mempool and (tx.txid, 0) in chain.utxos


def test_reorg_onto_a_branch_that_fails_to_connect_falls_back():
    chain = funded_chain(5)
    fork = chain.tip
    a1 = make_block(chain, tag=b"a1")
    assert chain.submit_block(a1) is None
    b1 = make_block(chain, prev=fork, tag=b"b1")
    assert chain.submit_block(b1) == "inconclusive"
    b2 = make_block(chain, prev=chain.lookup(b1.hash), value=50 * COIN + 1, tag=b"b2")
    assert chain.submit_block(b2) == "bad-cb-amount"
    assert chain.tip.hash == a1.hash  # back on the first-seen branch
    b3 = make_block(chain, prev=chain.lookup(b2.hash), tag=b"b3")
    assert chain.submit_block(b3) == "bad-prevblk"
    assert chain.lookup(b2.hash).failed


def test_descendant_of_a_block_failing_on_connect_is_inconclusive():
    chain = funded_chain(5)
    fork = chain.tip
    a1 = make_block(chain, tag=b"a1")
    assert chain.submit_block(a1) is None
    a2 = make_block(chain, tag=b"a2")
    assert chain.submit_block(a2) is None
    # side branch: b1 (less work), b2 (overpays; equal work to a2, so only
    # stored), then b3 makes the branch the heaviest
    b1 = make_block(chain, prev=fork, tag=b"b1")
    b2 = make_block(chain, prev=_stored(chain, b1), value=50 * COIN + 1, tag=b"b2")
    assert chain.submit_block(b2) == "inconclusive"  # equal work to a2: not connected
    b3 = make_block(chain, prev=chain.lookup(b2.hash), tag=b"b3")
    # b3 makes the branch heaviest; b2 fails to connect; b3 is never checked
    assert chain.submit_block(b3) == "inconclusive"
    assert chain.tip.hash == a2.hash
    assert chain.lookup(b2.hash).failed and chain.lookup(b3.hash).failed
    tips = {i.hash: status for i, _, status in chain.chain_tips()}
    assert tips[b3.hash] == "invalid"


def _stored(chain: Chain, block: Block):
    chain.submit_block(block)
    return chain.lookup(block.hash)


def test_invalidate_and_reconsider():
    chain = funded_chain(110)
    tx = spend([cb_out(chain, 2)], [(cb_value(chain, 2) - 5000, OTHER)])
    chain.accept_to_mempool(tx)
    chain.generate(MINER, 2)
    confirmed_in = chain.at_height(111)
    assert tx.txid not in chain.mempool
    events = []
    chain.listeners.append(events.append)
    chain.invalidate_block(confirmed_in)
    assert chain.height == 110
    assert tx.txid in chain.mempool  # returned
    assert chain.lookup(confirmed_in.hash).failed
    tips = {i.hash: status for i, _, status in chain.chain_tips()}
    assert tips[chain.at_height(110).hash] == "active"
    assert list(tips.values()).count("invalid") == 1
    assert [e.connected for e in events if isinstance(e, TipChanged)] == [False]
    # a block on the invalid one is refused; the block itself is duplicate-invalid
    assert chain.submit_block(confirmed_in.block) == "duplicate-invalid"
    # mining goes on from 110 (to another address: the same template would
    # rebuild the very block just invalidated, as it would in Core)
    chain.generate(OTHER, 1)
    assert chain.height == 111 and chain.tip is not confirmed_in
    chain.reconsider_block(confirmed_in)
    assert chain.height == 112  # the reconsidered branch is longer
    assert chain.at_height(111) is confirmed_in
    assert tx.txid not in chain.mempool


def test_invalidate_switches_to_an_equal_work_sibling():
    chain = funded_chain(3)
    a = make_block(chain, tag=b"a")
    b = make_block(chain, tag=b"b")
    chain.submit_block(a)
    chain.submit_block(b)
    chain.invalidate_block(chain.lookup(a.hash))
    assert chain.tip.hash == b.hash


def test_genesis_cannot_be_invalidated():
    chain = Chain(clock=Clock())
    with pytest.raises(ChainError):
        chain.invalidate_block(chain.tip)


# ---------------------------------------------------------------------------
# every reject reason


def fresh() -> Chain:
    return funded_chain(110)


def mature_spend(chain: Chain, height: int = 1, fee: int = 1000, **kw):
    return spend([cb_out(chain, height)], [(cb_value(chain, height) - fee, OTHER)], **kw)


def reject(chain: Chain, block: Block) -> str | None:
    return chain.submit_block(block)


def test_check_block_rejects():
    chain = fresh()
    tip = chain.tip
    assert reject(chain, make_block(chain, valid_pow=False)) == "high-hash"
    assert reject(chain, make_block(chain, merkle=b"\x11" * 32)) == "bad-txnmrklroot"
    a, b = mature_spend(chain, 1), mature_spend(chain, 2)
    assert reject(chain, make_block(chain, txs=[a, b, b])) == "bad-txns-duplicate"
    big = [make_tx(2, [(b"\x01" * 32, i, b"", 0)], [(0, b"\x6a" + b"\x00" * 600_000)]) for i in range(2)]
    assert reject(chain, make_block(chain, txs=big)) == "bad-blk-length"
    cb2 = coinbase(111, 1, tag=b"second")
    assert reject(chain, make_block(chain, txs=[cb2])) == "bad-cb-multiple"
    assert reject(chain, make_block(chain, txs=[make_tx(2, [], [])])) == "bad-txns-vin-empty"
    assert reject(chain, make_block(chain, txs=[make_tx(2, [(a.txid, 0, b"", 0)], [])])) == "bad-txns-vout-empty"
    assert reject(chain, make_block(chain, txs=[spend([cb_out(chain, 1)], [(-1, OTHER)])])) == "bad-txns-vout-negative"
    assert reject(chain, make_block(chain, txs=[spend([cb_out(chain, 1)], [(MAX_MONEY + 1, OTHER)])])) == "bad-txns-vout-toolarge"
    assert reject(chain, make_block(chain, txs=[spend([cb_out(chain, 1)], [(MAX_MONEY, OTHER), (1, OTHER)])])) == "bad-txns-txouttotal-toolarge"
    assert reject(chain, make_block(chain, txs=[spend([cb_out(chain, 1), cb_out(chain, 1)], [(1, OTHER)])])) == "bad-txns-inputs-duplicate"
    assert reject(chain, make_block(chain, cb=coinbase(111, 50 * COIN, script_sig=b"\x01"))) == "bad-cb-length"
    null_in = spend([cb_out(chain, 1), (b"\x00" * 32, 0xFFFFFFFF)], [(1, OTHER)])
    assert reject(chain, make_block(chain, txs=[null_in])) == "bad-txns-prevout-null"
    sigops = make_tx(2, [(b"\x02" * 32, 0, b"", 0)], [(0, b"\xac" * 20_001)])
    assert reject(chain, make_block(chain, txs=[sigops])) == "bad-blk-sigops"
    # none of these was stored; the chain did not move
    assert chain.tip is tip and len(chain.index) == 111


def test_first_transaction_must_be_a_coinbase():
    chain = fresh()
    a = mature_spend(chain)
    block = make_block(chain, cb=a)
    checked = {}
    assert chain.process_new_block(block, checked) == (False, False)
    assert checked[block.hash].reason == "bad-cb-missing"


def test_header_rejects():
    chain = fresh()
    prev = chain.tip
    assert reject(chain, make_block(chain, bits=0x207FFFFE)) == "bad-diffbits"
    assert reject(chain, make_block(chain, time=prev.mtp)) == "time-too-old"
    assert reject(chain, make_block(chain, time=prev.mtp + 1, tag=b"mtp+1")) is None
    prev = chain.tip
    assert reject(chain, make_block(chain, time=NOW + 7201)) == "time-too-new"
    assert reject(chain, make_block(chain, version=3)) == "bad-version(0x00000003)"
    assert reject(chain, make_block(chain, version=-0x80000000)) == "bad-version(0x80000000)"
    assert reject(chain, make_block(chain, version=4, tag=b"v4")) is None
    orphan = make_block(chain)
    orphan = Block(orphan.header[:4] + b"\x33" * 32 + orphan.header[36:], orphan.txs)
    assert reject(chain, orphan) in ("prev-blk-not-found", "high-hash")
    assert reject(chain, make_block(chain, time=NOW + 7200, tag=b"2h")) is None


def test_time_too_new_follows_the_clock():
    clock = Clock(NOW)
    chain = funded_chain(3, clock=clock)
    block = make_block(chain, time=NOW + 8000)
    assert chain.submit_block(block) == "time-too-new"
    clock.t = NOW + 801
    assert chain.submit_block(block) is None  # not stored before, so judged afresh


def test_contextual_block_rejects():
    chain = fresh()
    h = chain.next_height
    late = mature_spend(chain, 1, locktime=h)
    assert reject(chain, make_block(chain, txs=[late])) == "bad-txns-nonfinal"
    ok = mature_spend(chain, 2, locktime=h - 1)
    final_anyway = mature_spend(chain, 3, locktime=h + 5, sequence=0xFFFFFFFF)
    by_time = mature_spend(chain, 4, locktime=chain.tip.mtp)
    assert reject(chain, make_block(chain, txs=[by_time])) == "bad-txns-nonfinal"
    wrong_height = coinbase(h + 1, 50 * COIN, commitment=witness_commitment([]))
    assert reject(chain, make_block(chain, cb=wrong_height)) == "bad-cb-height"
    short_nonce = coinbase(h, 50 * COIN, commitment=witness_commitment([]), witness=[b"\x00" * 31])
    assert reject(chain, make_block(chain, cb=short_nonce)) == "bad-witness-nonce-size"
    two_items = coinbase(h, 50 * COIN, commitment=witness_commitment([]), witness=[b"\x00" * 32, b""])
    assert reject(chain, make_block(chain, cb=two_items)) == "bad-witness-nonce-size"
    wrong_commit = coinbase(h, 50 * COIN + 1000, commitment=witness_commitment([b"\x44" * 32]))
    assert reject(chain, make_block(chain, txs=[mature_spend(chain, 5)], cb=wrong_commit)) == "bad-witness-merkle-match"
    assert reject(chain, make_block(chain, txs=[mature_spend(chain, 5)], segwit=False)) == "unexpected-witness"
    no_witness = mature_spend(chain, 5, witness=False)
    assert reject(chain, make_block(chain, txs=[no_witness], segwit=False, tag=b"legacy")) is None
    fat = make_tx(2, [(cb_out(chain, 6)[0], 0, b"", 0xFFFFFFFD)], [(cb_value(chain, 6) - 1000, OTHER)], [[b"\x00" * 4_000_000]])
    assert reject(chain, make_block(chain, txs=[fat])) == "bad-blk-weight"
    assert reject(chain, make_block(chain, txs=[ok, final_anyway], tag=b"final")) is None


def test_mutated_block_does_not_poison_its_header():
    chain = fresh()
    h = chain.next_height
    good = make_block(chain, tag=b"good")
    bad_cb = coinbase(h, 50 * COIN, commitment=witness_commitment([]), witness=[b"\x00" * 31], tag=b"good")
    assert bad_cb.txid == good.txs[0].txid  # same header: the witness is not in the txid
    mutated = Block(good.header, [bad_cb])
    assert chain.submit_block(mutated) == "bad-witness-nonce-size"
    assert chain.submit_block(mutated) == "bad-witness-nonce-size"
    assert chain.submit_block(good) is None


def test_a_malleated_copy_of_a_stored_block_is_checked_not_called_duplicate():
    """Core v31 runs CheckBlock before it looks the hash up: the accepted
    block [cb, a, b] and its CVE-2012-2459 twin [cb, a, b, b] share a
    header, and the twin is answered bad-txns-duplicate (found live by
    tests/realnode/test_standin_blocks.py)."""
    chain = fresh()
    a, b = mature_spend(chain, 1), mature_spend(chain, 2)
    good = make_block(chain, txs=[a, b])
    twin = Block(good.header, [*good.txs, b])
    assert twin.hash == good.hash
    assert chain.submit_block(good) is None
    assert chain.submit_block(twin) == "bad-txns-duplicate"
    assert chain.submit_block(good) == "duplicate"


def test_missing_witness_reserved_value_is_filled_in():
    chain = fresh()
    h = chain.next_height
    bare = coinbase(h, 50 * COIN, commitment=witness_commitment([]), witness=[])
    assert not bare.has_witness
    block = make_block(chain, cb=bare)
    assert chain.submit_block(block) is None
    assert chain.tip.block.txs[0].witnesses == [[b"\x00" * 32]]
    assert chain.tip.block.size == block.size + 36


def test_connect_rejects():
    chain = fresh()
    spent = mature_spend(chain, 1)
    assert reject(chain, make_block(chain, txs=[spent], tag=b"spend")) is None
    # the same transaction again: its outputs exist (BIP30 comes before the inputs check)
    assert reject(chain, make_block(chain, txs=[spent])) == "bad-txns-BIP30"
    assert reject(chain, make_block(chain, txs=[spend([(b"\x05" * 32, 0)], [(1, OTHER)])])) == "bad-txns-inputs-missingorspent"
    assert reject(chain, make_block(chain, txs=[spend([cb_out(chain, 1)], [(1, OTHER)])])) == "bad-txns-inputs-missingorspent"
    young = spend([cb_out(chain, 50)], [(cb_value(chain, 50) - 1000, OTHER)])
    assert reject(chain, make_block(chain, txs=[young])) == "bad-txns-premature-spend-of-coinbase"
    greedy = spend([cb_out(chain, 2)], [(cb_value(chain, 2) + 1, OTHER)])
    assert reject(chain, make_block(chain, txs=[greedy], value=50 * COIN)) == "bad-txns-in-belowout"
    relative = spend([cb_out(chain, 3)], [(cb_value(chain, 3) - 1000, OTHER)], sequence=200)
    assert reject(chain, make_block(chain, txs=[relative])) == "bad-txns-nonfinal"
    relative_v1 = spend([cb_out(chain, 3)], [(cb_value(chain, 3) - 1000, OTHER)], sequence=200, version=1)
    overpay = make_block(chain, txs=[relative_v1], value=50 * COIN + 1000 + 1)
    assert reject(chain, overpay) == "bad-cb-amount"
    assert reject(chain, overpay) == "duplicate-invalid"
    chain.utxos[(b"\x06" * 32, 0)] = Coin(MAX_MONEY + 1, OTHER, 1, False)
    assert reject(chain, make_block(chain, txs=[spend([(b"\x06" * 32, 0)], [(1, OTHER)])], value=50 * COIN)) == "bad-txns-inputvalues-outofrange"
    assert reject(chain, make_block(chain, txs=[relative_v1], tag=b"fine")) is None
    # the failed blocks are known invalid; a child of one is refused
    assert reject(chain, make_block(chain, prev=chain.lookup(overpay.hash))) == "bad-prevblk"


def test_relative_lock_satisfied_after_enough_blocks():
    chain = fresh()
    # coin from height 110 with a 3-block relative lock: spendable from height 113
    chain.generate(MINER, 100)
    coin_height = 110
    tx = spend([cb_out(chain, coin_height)], [(cb_value(chain, coin_height) - 1000, OTHER)], sequence=3)
    assert chain.height == 210
    assert reject(chain, make_block(chain, txs=[tx])) is None


def test_test_block_validity_and_nothing_stored():
    chain = fresh()
    block = make_block(chain, txs=[mature_spend(chain)])
    assert chain.test_block_validity(block, check_pow=True, check_merkle=True) is None
    assert chain.lookup(block.hash) is None
    other = make_block(chain, prev=chain.at_height(100))
    assert chain.test_block_validity(other, False, True).reason == "inconclusive-not-best-prevblk"
    over = make_block(chain, value=51 * COIN)
    assert str(chain.test_block_validity(over, False, True)) == f"bad-cb-amount, coinbase pays too much (actual={51 * COIN} vs limit={50 * COIN})"


def test_harder_bits_take_effect_after_the_initial_blocks():
    hard = 0x1F00FFFF
    chain = Chain(clock=Clock(), bits=hard, bits_from_height=4)
    chain.generate(MINER, 3)
    assert [chain.at_height(h).bits for h in (1, 2, 3)] == [0x207FFFFF] * 3
    assert reject(chain, make_block(chain, bits=0x207FFFFF)) == "bad-diffbits"
    assert chain.create_new_block().bits == hard
    chain.generate(MINER, 1, max_tries=10_000_000)
    assert chain.tip.bits == hard and chain.height == 4
