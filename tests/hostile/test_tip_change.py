"""A block-solving share that arrives after the tip changed: submitted if it
still builds on the tip, recorded once either way; and a chain that comes
back to an old tip does not reopen old jobs to duplicates."""
from __future__ import annotations

import orjson
import pytest
from twisted.internet import task

from hashcoop.pool.core.btc.address import get_network
from hashcoop.pool.core.events import MemorySink
from hashcoop.pool.node.blocks import BlockSubmitter
from hashcoop.pool.node.nodes import NodeSet
from tests.node.helpers import FakeClient
from tests.stratum.harness import Harness, template

pytestmark = pytest.mark.hostile

A = template().prevhash
B = (0xB).to_bytes(32, "little")


def tip(h, prev):
    h.server.on_template(template(prev=prev) if prev != A else template(), True)


def test_a_block_after_the_tip_moved_is_recorded_once_and_not_submitted(h=None):
    h = Harness()
    c = h.connect().handshake()
    block, _ = c.solve(block=True)
    tip(h, B)
    for _ in range(3):  # the miner insists
        r = c.call("mining.submit", block)
        assert r["result"] is False and r["error"][0] in (21, 22)
    assert h.submitter.found == []  # it cannot extend the chain: not submitted
    assert len(h.submitter.stale) == 1, "recorded once"
    found, reason = h.submitter.stale[0]
    assert found.job_id == block[1] and "no longer the tip" in reason
    assert h.metric("hashcoop_blocks_stale_total") == 1
    assert h.sink.accepted_count == 0 and h.sink.blocks == []  # no credit for a stale share


def test_a_block_on_a_replaced_job_whose_previous_block_is_the_tip_again_is_submitted_once():
    h = Harness()
    c = h.connect().handshake()
    block, _ = c.solve(block=True)
    tip(h, B)
    tip(h, A)  # the chain came back (B invalidated, a reorg)
    r = c.call("mining.submit", block)
    assert r["result"] is True
    assert len(h.submitter.found) == 1 and h.submitter.stale == []
    assert h.sink.accepted[-1].is_block and len(h.sink.blocks) == 1
    for _ in range(2):
        assert c.call("mining.submit", block)["result"] is False
    assert len(h.submitter.found) == 1 and h.sink.accepted_count == 1


def test_a_block_found_before_the_tip_moved_is_not_recorded_again_when_replayed():
    h = Harness()
    c = h.connect().handshake()
    block, _ = c.solve(block=True)
    assert c.call("mining.submit", block)["result"] is True
    tip(h, B)
    assert c.call("mining.submit", block)["error"][0] == 22
    tip(h, A)
    assert c.call("mining.submit", block)["error"][0] == 22
    assert len(h.submitter.found) == 1 and h.submitter.stale == []


def test_a_refresh_on_the_same_tip_keeps_older_jobs_valid_for_blocks():
    h = Harness()
    c = h.connect().handshake()
    block, _ = c.solve(block=True)
    h.server.on_template(template(), False)  # new transactions, same previous block
    assert c.call("mining.submit", block)["result"] is True
    assert len(h.submitter.found) == 1


def test_old_jobs_stay_closed_to_duplicates_when_the_chain_comes_back():
    """Before: a job's duplicate keys were dropped at the tip change, and a
    return to its previous block made it current again with no duplicate
    check at all: one share, accepted any number of times."""
    h = Harness()
    c = h.connect().handshake()
    share, _ = c.solve()
    assert c.call("mining.submit", share)["result"] is True
    tip(h, B)
    tip(h, A)
    for _ in range(3):
        r = c.call("mining.submit", share)
        assert r["result"] is False, r
    fresh, _ = c.solve(en2=7)  # on the old job, not a duplicate
    assert c.call("mining.submit", fresh)["result"] is False  # the old job: stale for good
    assert h.sink.accepted_count == 1


def test_the_stale_block_survives_a_restart_in_the_block_journal(tmp_path):
    """With the real BlockSubmitter: journaled as found + stale (final),
    never submitted, not resumed after a restart."""
    clock = task.Clock()
    clients = [FakeClient("node0")]
    nodes = NodeSet(clock, clients, get_network("regtest"))
    path = tmp_path / "found-blocks.jsonl"
    sub = BlockSubmitter(clock, nodes, MemorySink(), path)
    sub.startService()
    h = Harness()
    h.server.block_submitter = sub
    c = h.connect().handshake()
    block, _ = c.solve(block=True)
    tip(h, B)
    c.call("mining.submit", block)
    c.call("mining.submit", block)
    sub.stopService()
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert [x["event"] for x in lines] == ["found", "status"]
    assert lines[1]["status"] == "stale" and lines[1]["final"] is True
    assert not [m for m, _p, _ in clients[0].calls if m == "submitblock"]
    again = BlockSubmitter(clock, nodes, MemorySink(), path)
    assert again.load_journal() == []  # final: nothing to resume
    assert again.status_of(lines[0]["block"]["hash"]) is None
