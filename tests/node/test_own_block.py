"""Mining at once on a block the pool found itself: the empty successor
template (pure), WorkSource moving onto it and then onto the node's own
template for it, back when the nodes do not take it, and the submitter
retrying a block that reached a node before its parent, one of ours."""
from __future__ import annotations

import dataclasses
import logging

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer

from hashcoop.pool.core.btc.address import get_network
from hashcoop.pool.core.btc.block import build_header
from hashcoop.pool.core.btc.hashing import hex_to_hash
from hashcoop.pool.core.events import BlockFound, BlockStatus
from hashcoop.pool.core.template import EMPTY_BLOCK_WITNESS_COMMITMENT, successor
from hashcoop.pool.rpc import RPCError
from tests.node.helpers import template, tip
from tests.node.test_blocks import Rig as SubmitRig
from tests.node.test_blocks import fired
from tests.node.test_work import Rig as WorkRig

REGTEST = get_network("regtest")


def own_block(tpl, n: int, ntime: int = 1_700_000_000) -> BlockFound:
    """A block the pool found on ``tpl``: its hash is tip(n) (a test
    stand-in), its header carries ``ntime``."""
    header = build_header(tpl.version, tpl.prevhash, b"\x11" * 32, ntime, tpl.bits, 7)
    return BlockFound(time=1.0, height=tpl.height, hash=tip(n), prevhash=tpl.prevhash_hex, address="a", worker="w",
                      reward=tpl.coinbasevalue, share_difficulty=1.0, network_difficulty=1.0, job_id="j",
                      block_hex=header.hex() + "01" + "00" * 60)


# -- the successor template (pure) ---------------------------------------------


def test_successor_on_regtest_is_an_empty_block_on_the_found_one():
    parent = template(149, prev=tip(148))
    nxt = successor(parent, hex_to_hash(tip(149)), 1_700_000_000, REGTEST)
    assert (nxt.height, nxt.prevhash_hex, nxt.version, nxt.bits, nxt.target) == (150, tip(149), parent.version, parent.bits,
                                                                                 parent.target)
    assert nxt.transactions == () and nxt.fees == 0
    assert nxt.coinbasevalue == 25 * 100_000_000, "height 150: regtest's first halving"
    assert successor(parent, b"\x00" * 32, 0, REGTEST).height == 150
    assert successor(template(10), b"\x00" * 32, 0, REGTEST).coinbasevalue == 50 * 100_000_000
    assert nxt.mintime == nxt.curtime == 1_700_000_001
    assert nxt.witness_commitment == EMPTY_BLOCK_WITNESS_COMMITMENT
    # the commitment every coinbase-only segwit block carries
    assert EMPTY_BLOCK_WITNESS_COMMITMENT.hex() == ("6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd83697"
                                                    "4e8cf9")
    assert nxt.node == parent.node
    signet = dataclasses.replace(parent, signet_challenge=b"\x51")
    assert successor(signet, b"\x00" * 32, 0, get_network("signet")).signet_challenge == b"\x51"


def test_no_successor_where_the_difficulty_may_change():
    for name in ("mainnet", "signet"):
        net = get_network(name)
        assert successor(template(2014), b"\x00" * 32, 0, net) is not None
        assert successor(template(2015), b"\x00" * 32, 0, net) is None, f"{name}: height 2016 retargets"
        assert successor(template(4032), b"\x00" * 32, 0, net).coinbasevalue == 50 * 100_000_000
    assert successor(template(209_999), b"\x00" * 32, 0, get_network("mainnet")).coinbasevalue == 25 * 100_000_000
    for name in ("testnet3", "testnet4"):
        assert successor(template(100), b"\x00" * 32, 0, get_network(name)) is None, f"{name}: the 20-minute rule"
    assert successor(template(2015), b"\x00" * 32, 0, REGTEST) is not None, "regtest never retargets"


def core_median(times: list[int]) -> int:
    """GetMedianTimePast over the last (up to) eleven block times."""
    window = sorted(times[-11:])
    return window[len(window) // 2]


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=30), st.integers(1, 10_000))
def test_successor_mintime_is_never_below_the_nodes(times, step):
    """A valid block's time exceeds the median time past of its parent; then
    the median time past after it is at most that time (the docstring's
    argument), so block_time + 1 is always an acceptable time."""
    block_time = core_median(times) + step
    assert core_median([*times, block_time]) <= block_time
    assert core_median([*times, block_time]) < block_time + 1


# -- WorkSource --------------------------------------------------------------------


def started(**kw) -> WorkRig:
    r = WorkRig(network=REGTEST, **kw)
    r.start(template(103, prev=tip(102)))
    return r


def test_own_block_becomes_the_tip_at_once_then_the_nodes_template_replaces_it(caplog):
    caplog.set_level(logging.INFO, logger="hashcoop.work")
    r = started()
    parent = r.ws.current
    r.clock.advance(1)
    r.ws.own_block(own_block(parent, 103), parent)
    empty, clean = r.got[-1]
    assert clean and empty.prevhash_hex == tip(103) and empty.height == 104 and empty.transactions == ()
    assert r.ws.speculative == tip(103) and r.fetches == 1, "no fetch yet: the node may not have the block"
    assert r.metric("hashcoop_new_tips_total", source="found") == 1
    # a node reports the block (ZMQ, notify, poll): its template replaces the empty one (clean: miners take
    # the transactions at once), and it is not another new tip
    r.ws.hint(tip(103), "zmq")
    assert r.fetches == 2
    full = template(104, prev=tip(103))
    r.answer(full)
    assert r.got[-1] == (full, True) and r.ws.current is full and r.ws.speculative is None
    assert f"own block {tip(103)}, height 104, reported by hint, template from node0" in caplog.text
    assert r.metric("hashcoop_new_tips_total", source="found") == 1 and r.metric("hashcoop_new_tips_total", source="zmq") is None
    r.ws.hint(tip(103), "poll")
    assert r.fetches == 2, "the tip is known now"


def test_a_longpoll_answer_on_the_block_replaces_the_empty_template_and_a_stale_one_is_ignored():
    r = started()
    parent = r.ws.current
    r.ws.own_block(own_block(parent, 103), parent)
    r.ws.offer_template(template(103, prev=tip(102), lp="old"), "longpoll")  # answered before the node had our block
    assert r.ws.current.prevhash_hex == tip(103) and r.ws.speculative == tip(103)
    full = template(104, prev=tip(103))
    r.ws.offer_template(full, "longpoll")
    assert r.got[-1] == (full, True)
    refreshed = template(104, prev=tip(103), lp="lp3")
    r.ws.offer_template(refreshed, "longpoll")
    assert r.got[-1] == (refreshed, False), "later templates on the tip are refreshes again"


def test_a_rejected_own_block_moves_the_tip_back_at_once():
    r = started()
    parent = r.ws.current
    r.ws.own_block(own_block(parent, 103), parent)
    assert r.ws.speculative == tip(103)
    r.clock.advance(0.2)
    status = BlockStatus(time=1.0, height=103, hash=tip(103), status="rejected", verdicts={"node0": "bad-cb-amount"})
    assert r.ws.own_block_verdict(status) is status
    assert r.fetches == 2
    again = template(103, prev=tip(102), lp="lp2")
    r.answer(again)
    assert r.got[-1] == (again, True) and r.ws.speculative is None


def test_a_submitted_verdict_changes_nothing():
    r = started()
    parent = r.ws.current
    r.ws.own_block(own_block(parent, 103), parent)
    r.ws.own_block_verdict(BlockStatus(time=1.0, height=103, hash=tip(103), status="submitted", verdicts={"node0": None}))
    assert r.fetches == 1 and r.ws.speculative == tip(103)


def test_nothing_happens_when_off_late_or_at_a_retarget():
    r = WorkRig()  # network=None: off
    r.start(template(103, prev=tip(102)))
    r.ws.own_block(own_block(r.ws.current, 103), r.ws.current)
    assert len(r.got) == 1
    r = started()
    old = template(102, prev=tip(101))
    r.ws.own_block(own_block(old, 102), old)  # found on a tip the pool has left
    assert len(r.got) == 1
    r = WorkRig(network=get_network("mainnet"))
    r.start(template(2015, prev=tip(2014)))
    r.ws.own_block(own_block(r.ws.current, 2015), r.ws.current)
    assert len(r.got) == 1, "height 2016 retargets: wait for the node"


def test_found_on_the_empty_template_chains_on():
    r = started()
    parent = r.ws.current
    r.ws.own_block(own_block(parent, 103), parent)
    first = r.ws.current
    r.ws.own_block(own_block(first, 104), first)
    assert r.ws.current.height == 105 and r.ws.current.prevhash_hex == tip(104) and r.got[-1][1]


# -- BlockSubmitter: a block found on one of ours the node has not got yet -----------


def chain_pair():
    parent = BlockFound(time=1.0, height=104, hash=tip(104), prevhash=tip(103), address="a", worker="w", reward=1,
                        share_difficulty=1.0, network_difficulty=1.0, job_id="j", block_hex="aa")
    return parent, dataclasses.replace(parent, height=105, hash=tip(105), prevhash=tip(104), block_hex="bb")


def test_a_child_that_reaches_the_node_before_its_parent_goes_again_soon(tmp_path):
    """A block goes to the nodes at once, without waiting for its parent's
    answer (a node that hangs on the parent holds nothing up); if it
    arrives first, the node answers prev-blk-not-found for a parent that is
    one of the pool's own: no verdict yet, asked again from retry_min on."""
    r = SubmitRig(tmp_path, n=1, retry_min=0.5)
    slow = defer.Deferred()
    r.clients[0].answers["submitblock"] = lambda block: slow if block == "aa" else "prev-blk-not-found"
    r.clients[0].answers["getblockheader"] = RPCError(-5, "Block not found")
    parent, child = chain_pair()
    first = r.sub.submit(parent)
    second = r.sub.submit(child)
    assert r.calls(0, "submitblock") == [("aa",), ("bb",)], "sent without waiting for the parent"
    assert fired(second).status == "pending" and r.sub.blocks[tip(105)].verdicts == {"node0": "prev-blk-not-found"}
    slow.callback(None)  # the node takes the parent
    assert fired(first).status == "submitted"
    r.clients[0].answers["submitblock"] = None
    r.clock.advance(0.5)
    assert r.calls(0, "submitblock")[-1] == ("bb",) and r.sub.status_of(tip(105)) == "submitted"


def test_prev_blk_not_found_is_final_when_the_parent_is_not_ours_or_settled(tmp_path):
    r = SubmitRig(tmp_path, n=1)
    r.clients[0].answers["submitblock"] = lambda block: "bad-version(0x00000001)" if block == "aa" else "prev-blk-not-found"
    parent, child = chain_pair()
    assert fired(r.sub.submit(parent)).status == "rejected"
    assert fired(r.sub.submit(child)).status == "rejected", "its parent was rejected: it never can be taken"
    orphan = dataclasses.replace(child, hash=tip(205), prevhash=tip(204), block_hex="cc")
    assert fired(r.sub.submit(orphan)).status == "rejected", "a parent the pool does not know of"
    r.clients[0].answers["submitblock"] = lambda block: "duplicate" if block == "dd" else "prev-blk-not-found"
    taken = dataclasses.replace(parent, hash=tip(304), block_hex="dd")
    assert fired(r.sub.submit(taken)).status == "submitted"
    late = dataclasses.replace(child, hash=tip(305), prevhash=tip(304), block_hex="ee")
    assert fired(r.sub.submit(late)).status == "rejected", "the node said it had the parent: no waiting for it"
