"""The empty template the pool mines on right after finding a block
(``hashcoop.pool.core.template.successor``) against Bitcoin Core: Core's own template for
the same tip, and Core's verdict on the block the pool would build from it
(``getblocktemplate`` proposal mode: every check but the proof of work),
across regtest's first halving and a version-bits period, with block times
bunched up as back-to-back mining makes them (the median-time-past bound)."""
from __future__ import annotations

import dataclasses

import pytest

from hashcoop.pool.core.btc.address import address_to_script, get_network
from hashcoop.pool.core.btc.block import build_header
from hashcoop.pool.core.btc.hashing import fold_branch, hex_to_hash, sha256d
from hashcoop.pool.core.jobs import JobManager
from hashcoop.pool.core.template import Template, successor
from tests.realnode.rig import OTHER, POOL_ADDR

pytestmark = pytest.mark.bitcoind
RULES = {"rules": ["segwit"]}
REGTEST = get_network("regtest")
VERSIONBITS_PERIOD = 144  # regtest's signalling period: Core's template version may change at its start


def proposal(node, tpl: Template, clock: float) -> str | None:
    """Core's verdict on the block the pool builds from ``tpl`` (null: valid but for the proof of work)."""
    jobs = JobManager(payout_script=address_to_script(POOL_ADDR, REGTEST), tag=b"/realnode/", extranonce_size=8,
                      now=lambda: clock)
    job, _ = jobs.new_job(tpl, True)
    coinbase = job.coinb1 + bytes(8) + job.coinb2
    header = build_header(job.version, job.prevhash, fold_branch(sha256d(coinbase), job.branch), job.ntime, job.bits, 0)
    return node.rpc("getblocktemplate", {"mode": "proposal", "data": job.build_block(coinbase, header).hex()})


def test_successor_matches_cores_template_and_core_accepts_its_block(core):
    node = core()
    node.rpc("generatetoaddress", 1, OTHER)  # out of initial block download
    for _ in range(160):
        before = Template.from_gbt(node.rpc("getblocktemplate", RULES))
        [block_hash] = node.rpc("generatetoaddress", 1, OTHER)
        header = node.rpc("getblockheader", block_hash)
        ours = successor(before, hex_to_hash(block_hash), header["time"], REGTEST)
        theirs = Template.from_gbt(node.rpc("getblocktemplate", RULES))
        h = theirs.height
        assert (ours.height, ours.prevhash, ours.bits, ours.target) == (h, theirs.prevhash, theirs.bits, theirs.target), h
        assert ours.version == theirs.version or h % VERSIONBITS_PERIOD == 0, h
        assert ours.coinbasevalue == theirs.coinbasevalue, h  # the mempool is empty: the subsidy alone
        assert ours.witness_commitment == theirs.witness_commitment and ours.transactions == theirs.transactions == ()
        assert ours.mintime >= theirs.mintime, h
        # the block the pool would mine, at the earliest time it allows, is valid for Core
        assert proposal(node, ours, clock=0) is None, h
    # and Core does judge these blocks: one satoshi too many is refused
    assert proposal(node, dataclasses.replace(ours, coinbasevalue=ours.coinbasevalue + 1), clock=0) == "bad-cb-amount"
    assert node.rpc("getblockcount") >= 160, "across the first halving (height 150) and a version-bits period (144)"
