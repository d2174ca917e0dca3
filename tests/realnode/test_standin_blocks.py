"""The stand-in's block validation against Bitcoin Core's, live: the same
blocks go to a fresh ``bitcoind -regtest`` and to a stand-in chain (a
``Chain`` and its ``Rpc``, in this process) that replayed Core's blocks,
and ``submitblock`` must give the same answer (BIP22 string, null, or the
same RPC error) each time, with both nodes on the same tip afterwards.

First every reject case recorded in tests/vectors/bitcoind-regtest.json is
built again on the live chain (high-hash, bad-txnmrklroot, bad-cb-height,
bad-cb-amount, bad-witness-merkle-match, time-too-old, time-too-new,
bad-diffbits, prev-blk-not-found, bad-version, valid, duplicate,
inconclusive, a coinbase witness left for the node to fill in), and Core
must still give the recorded verdicts. Then ``ROUNDS`` blocks from Core's
current template with one or two seeded mutations of header, coinbase,
transactions or encoding (tests/realnode/blocklab.py), and now and then one
submitted before again (duplicate, duplicate-invalid, a malleated twin of a
stored block). The templates carry transactions (a parent and a child) that
the test puts into Core's mempool; every coin pays P2WSH(OP_TRUE), so
transactions are valid by script on Core, which the stand-in does not
check. At the end both nodes list the same chain tips.
"""
from __future__ import annotations

import random
import time

import pytest

from hashcoop.pool.core.btc.address import NETWORKS, script_to_address
from hashcoop.pool.core.btc.hashing import hash_to_hex, hex_to_hash
from hashcoop.pool.core.btc.serialize import bip34_height, push_data
from hashcoop.pool.tools.devnode.chain import Chain
from hashcoop.pool.tools.devnode.consensus import decode_block_hex
from hashcoop.pool.tools.devnode.rpc import Rpc, RpcError
from tests import vectors
from tests.realnode.blocklab import ANYONE, MAX_FUTURE_BLOCK_TIME, Coin, Context, Draft, Lab, mutate, spend, subsidy

SEED = 20261207
ROUNDS = 400
SETUP_BLOCKS = 120


class Pair:
    """Core and the stand-in, side by side."""

    def __init__(self, core):
        self.core = core
        self.chain = Chain(clock=time.time)
        self.rpc = Rpc(self.chain, clock=self.chain.clock)
        self.coins: list[Coin] = []
        self.submitted: list[tuple[str, str]] = []  # (what, block hex)

    def devnode(self, method: str, *params) -> dict:
        try:
            return {"result": self.rpc.execute(method, list(params))}
        except RpcError as e:
            return {"error": e.to_json()}

    def submit(self, hexblock: str) -> tuple[dict, dict]:
        return self.core.call("submitblock", hexblock), self.devnode("submitblock", hexblock)

    def tips(self) -> tuple[str, str]:
        return self.core.rpc("getbestblockhash"), self.rpc.execute("getbestblockhash")

    def context(self) -> Context:
        return Context.from_gbt(self.core.rpc("getblocktemplate", {"rules": ["segwit"]}))

    def parent_of_tip(self) -> bytes:
        return hex_to_hash(self.core.rpc("getblockheader", self.core.rpc("getbestblockhash"))["previousblockhash"])

    def coin(self, mature: bool, rng: random.Random) -> Coin | None:
        height = self.core.rpc("getblockcount")
        # spendable in the next block: 100 confirmations by then
        pool = [c for c in self.coins if (c.height <= height - 99) == mature]
        for c in rng.sample(pool, min(len(pool), 20)):
            if self.core.rpc("gettxout", hash_to_hex(c.txid), c.n, True) is not None:
                return c
        return None

    def feed_mempool(self, rng: random.Random) -> None:
        """A parent and its child into Core's mempool, for the templates."""
        if len(self.core.rpc("getrawmempool")) >= 2:
            return
        coin = self.coin(True, rng)
        if coin is None:
            return
        parent = spend([coin], [(coin.value - 3_000, ANYONE)])
        child = spend([Coin(parent.txid, 0, coin.value - 3_000, 0)], [(coin.value - 9_000, ANYONE)])
        for tx in (parent, child):
            self.core.rpc("sendrawtransaction", tx.raw.hex())


@pytest.fixture
def pair(core):
    p = Pair(core())
    address = script_to_address(ANYONE, NETWORKS["regtest"])
    hashes = p.core.rpc("generatetoaddress", SETUP_BLOCKS, address)
    for height, h in enumerate(hashes, start=1):
        hexblock = p.core.rpc("getblock", h, 0)
        assert p.devnode("submitblock", hexblock) == {"result": None}, height
        cb = decode_block_hex(hexblock).txs[0]
        p.coins.append(Coin(cb.txid, 0, cb.outputs[0][0], height))
    assert p.tips()[0] == p.tips()[1] == hashes[-1]
    return p


def fixed_cases(pair: Pair, rng: random.Random):
    """(name, draft or block hex) in the recorded order, each on the chain
    the previous ones left."""
    now = int(time.time())

    def draft() -> Draft:
        return Draft.from_context(pair.context(), now)

    def changed(**kw) -> Draft:
        """The template's block with fields set (a callable gets the draft
        and the template)."""
        ctx = pair.context()
        d = Draft.from_context(ctx, now)
        for k, v in kw.items():
            setattr(d, k, v(d, ctx) if callable(v) else v)
        return d

    yield "high-hash", changed(pow="fail")
    yield "bad-txnmrklroot", changed(merkle="flipped")
    yield "bad-cb-height", changed(script_sig=lambda d, ctx: bip34_height(d.height + 1) + push_data(d.tag))
    yield "bad-cb-amount", changed(value=lambda d, ctx: d.value + 1)
    yield "bad-witness-merkle-match", changed(commitment="wrong")
    yield "time-too-old", changed(time=lambda d, ctx: ctx.mintime - 1)  # the median time past
    yield "time-too-new", changed(time=now + MAX_FUTURE_BLOCK_TIME + 120)
    yield "bad-diffbits", changed(bits=0x207FFFFE)
    yield "prev-blk-not-found", changed(prev=rng.randbytes(32))
    yield "bad-version", changed(version=1)
    valid = draft()
    parent = valid.prev
    yield "valid", valid
    yield "duplicate", valid
    sibling = Draft(valid.version, parent, valid.time, valid.bits, valid.height, subsidy(valid.height), tag=b"/sibling/")
    yield "valid-but-not-best-chain", sibling
    yield "missing-coinbase-witness-nonce-is-filled-in", changed(reserved=None)


def verdict(reply: dict):
    return reply.get("error") or reply.get("result")


@pytest.mark.bitcoind
def test_core_and_the_standin_judge_the_same_blocks_alike(pair):
    rng = random.Random(SEED)
    recorded = {c["case"]: c["result"]["result"] for c in vectors.core()["submitblock"]}
    mismatches: list[str] = []
    outcomes: dict[str, int] = {}

    def judge(what: str, hexblock: str, expect=...) -> dict:
        core, dev = pair.submit(hexblock)
        pair.submitted.append((what, hexblock))
        key = str(verdict(core))
        outcomes[key] = outcomes.get(key, 0) + 1
        if expect is not ... and core.get("result", ...) != expect:
            mismatches.append(f"{what}: Core answered {core}, recorded {expect!r}")
        if core != dev:
            mismatches.append(f"{what}: Core {core}, stand-in {dev}")
        core_tip, dev_tip = pair.tips()
        assert core_tip == dev_tip, f"{what}: the tips differ (Core {core_tip}, stand-in {dev_tip}); so far: {mismatches}"
        return core

    pair.feed_mempool(rng)
    for name, case in fixed_cases(pair, rng):
        judge(name, case.hex(), recorded[name])
    assert {c["case"] for c in vectors.core()["submitblock"]} <= {w for w, _ in pair.submitted}

    lab = Lab(rng, lambda: int(time.time()), lambda mature: pair.coin(mature, rng), pair.parent_of_tip)
    for i in range(ROUNDS):
        if pair.submitted and rng.random() < 0.1:
            what, hexblock = rng.choice(pair.submitted)
            judge(f"#{i} again: {what}", hexblock)
            continue
        pair.feed_mempool(rng)
        ctx = pair.context()
        lab.mintime = ctx.mintime
        draft, done = mutate(Draft.from_context(ctx, lab.now()), lab, 1 if rng.random() < 0.7 else 2)
        block = draft.build()
        reply = judge(f"#{i} {'; '.join(done)}", draft.hex())
        if reply.get("result") == "inconclusive":
            lab.forks.append((block.hash, pair.rpc.execute("getblockheader", [hash_to_hex(block.hash)])["height"]))

    core_tips = sorted((t["hash"], t["height"], t["status"]) for t in pair.core.rpc("getchaintips"))
    dev_tips = sorted((t["hash"], t["height"], t["status"]) for t in pair.rpc.execute("getchaintips"))
    assert mismatches == [], f"{len(mismatches)} of {len(pair.submitted)} blocks judged differently; outcomes {outcomes}"
    assert dev_tips == core_tips
    # the run covered more than a handful of verdicts
    assert len(outcomes) >= 15, outcomes
