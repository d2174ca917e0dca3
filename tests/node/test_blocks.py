"""BlockSubmitter on a task.Clock with a real NodeSet over in-memory
clients: journal first, Core's verdicts (the recorded ones), re-checks and
resubmission, outage backoff, confirmation and orphaning, journal reload
after a crash."""
from __future__ import annotations

import dataclasses

import orjson
import pytest
from twisted.internet import task

from hashcoop.pool.core.btc.address import get_network
from hashcoop.pool.core.events import BlockFound, MemorySink
from hashcoop.pool.metrics import Metrics
from hashcoop.pool.node.blocks import BlockSubmitter, classify, result_label, verdict_text
from hashcoop.pool.node.nodes import NodeSet
from hashcoop.pool.rpc import RPCError, RPCTimeout
from tests.node.helpers import CORE, FakeClient, down, tip

VALID = next(c for c in CORE["submitblock"] if c["case"] == "valid")
HEIGHT = CORE["context"]["tip_header"]["height"] + 1


def found(case=VALID, height=HEIGHT) -> BlockFound:
    return BlockFound(
        time=1.0, height=height, hash=case["hash"], prevhash=CORE["context"]["tip_header"]["hash"],
        address="bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", worker="w1", reward=5000008860,
        share_difficulty=1.0, network_difficulty=4.6e-10, job_id="1", block_hex=case["block"],
    )


_RIGS: list["Rig"] = []


@pytest.fixture(autouse=True)
def _close_journals():
    """Stop every submitter a test made, which closes its journal file."""
    yield
    while _RIGS:
        r = _RIGS.pop()
        if r.sub is not None:
            r.sub.stopService()


class Rig:
    def __init__(self, tmp_path, n=2, **kw):
        _RIGS.append(self)
        self.clock = task.Clock()
        self.clients = [FakeClient(f"node{i}") for i in range(n)]
        self.nodes = NodeSet(self.clock, self.clients, get_network("regtest"))
        self.sink = MemorySink()
        self.metrics = Metrics()
        self.path = tmp_path / "data" / "found-blocks.jsonl"
        kw.setdefault("recheck_interval", 10)
        self.kw = kw
        self.sub = BlockSubmitter(self.clock, self.nodes, self.sink, self.path, metrics=self.metrics, **kw)

    def restart(self):
        """A new process on the same journal (the old one just vanished)."""
        self.sink = MemorySink()
        self.sub = BlockSubmitter(self.clock, self.nodes, self.sink, self.path, metrics=self.metrics, **self.kw)
        self.sub.startService()
        return self.sub

    def answers(self, method, *values):
        for c, v in zip(self.clients, values):
            c.answers[method] = v

    def statuses(self):
        return [s.status for s in self.sink.statuses]

    def journal(self):
        return [orjson.loads(line) for line in self.path.read_bytes().splitlines() if line.strip()]

    def metric(self, name, **labels):
        return self.metrics.registry.get_sample_value(name, labels)

    def calls(self, i, method):
        return [p for m, p, _ in self.clients[i].calls if m == method]

    def active_timers(self):
        return [c for c in self.clock.getDelayedCalls() if c.active()]


def fired(d):
    out = []
    d.addBoth(out.append)
    assert out, "not fired"
    return out[0]


@pytest.mark.parametrize("case", CORE["submitblock"], ids=lambda c: c["case"])
def test_recorded_core_verdicts_are_classified(case):
    v = case["result"]["result"]
    expected = {"valid": "accepted", "missing-coinbase-witness-nonce-is-filled-in": "accepted", "duplicate": "accepted",
                "valid-but-not-best-chain": "unknown"}.get(case["case"], "rejected")
    assert classify(v) == expected
    if expected == "rejected":
        assert result_label(v) == case["case"]  # bad-version(0x00000001) -> bad-version


def test_error_verdicts():
    assert classify(RPCTimeout("x")) == "unknown" and verdict_text(RPCTimeout("x")) == "timeout"
    assert classify(down()) == "unknown" and result_label(down()) == "unreachable"
    assert classify(RPCError(-28, "Loading")) == "unknown" and result_label(RPCError(-28, "Loading")) == "error"
    assert classify(RPCError(-22, "Block decode failed")) == "rejected"
    assert verdict_text(RPCError(-22, "Block decode failed")) == "rpc-error -22: Block decode failed"
    assert result_label("weird reason with spaces!") == "rejected"


def test_journal_first_then_submitted(tmp_path):
    r = Rig(tmp_path)
    r.clients[0].answers["submitblock"] = lambda block: (_ for _ in ()).throw(AssertionError("journal first")) if not r.path.exists() else None
    r.clients[1].answers["submitblock"] = "inconclusive"
    st = fired(r.sub.submit(found()))
    assert st.status == "submitted" and st.verdicts == {"node0": None, "node1": "inconclusive"}
    assert r.statuses() == ["submitted"]
    j = r.journal()
    assert j[0]["event"] == "found" and j[0]["block"]["block_hex"] == VALID["block"]
    assert j[1]["event"] == "status" and j[1]["status"] == "submitted" and not j[1]["final"]
    assert r.calls(0, "submitblock") == [(VALID["block"],)]
    assert r.metric("hashcoop_block_submissions_total", node="node0", result="accepted") == 1
    assert r.metric("hashcoop_block_submissions_total", node="node1", result="inconclusive") == 1
    assert r.metric("hashcoop_blocks_pending_submission") == 0
    # Same block again (e.g. a second report): nothing new.
    assert fired(r.sub.submit(found())).status == "submitted"
    assert len(r.journal()) == 2


def test_every_node_rejects(tmp_path):
    r = Rig(tmp_path)
    bad = next(c for c in CORE["submitblock"] if c["case"] == "bad-version")
    r.answers("submitblock", "bad-version(0x00000001)", "bad-version(0x00000001)")
    st = fired(r.sub.submit(found(bad)))
    assert st.status == "rejected" and st.reason == "bad-version(0x00000001)"
    assert r.metric("hashcoop_block_submissions_total", node="node1", result="bad-version") == 1
    assert r.journal()[-1]["final"] is True
    assert r.active_timers() == []


def test_decode_failure_is_a_reject(tmp_path):
    r = Rig(tmp_path, n=1)
    r.answers("submitblock", RPCError(-22, "Block decode failed"))
    assert fired(r.sub.submit(found())).status == "rejected"


def test_one_rejects_one_down_then_the_down_node_takes_it(tmp_path):
    r = Rig(tmp_path)
    r.answers("submitblock", "high-hash", down("node1"))
    st = fired(r.sub.submit(found()))
    assert st.status == "pending" and st.verdicts == {"node0": "high-hash", "node1": "unreachable"}
    assert r.metric("hashcoop_blocks_pending_submission") == 1
    # node1 returns: it does not know the block, so it gets it again.
    r.clients[1].answers["getblockheader"] = RPCError(-5, "Block not found")
    r.clients[1].answers["submitblock"] = None
    r.clock.advance(0.5)
    assert r.calls(1, "getblockheader") == [(VALID["hash"], True)]
    assert len(r.calls(1, "submitblock")) == 2
    assert r.calls(0, "getblockheader") == []  # node0 already gave its verdict
    assert r.statuses() == ["pending", "submitted"]
    assert r.sub.blocks[VALID["hash"]].verdicts == {"node0": "high-hash", "node1": None}
    assert r.metric("hashcoop_blocks_pending_submission") == 0


def test_outage_backoff_then_submitted_as_soon_as_a_node_answers(tmp_path):
    r = Rig(tmp_path, recheck_interval=10, retry_min=0.5)
    r.answers("submitblock", down("node0"), down("node1"))
    r.answers("getblockheader", down("node0"), down("node1"))
    assert fired(r.sub.submit(found())).status == "pending"
    gaps = []
    for _ in range(7):
        n = len(r.calls(0, "getblockheader"))
        waited = 0.0
        while len(r.calls(0, "getblockheader")) == n:
            r.clock.advance(0.25)
            waited += 0.25
        gaps.append(waited)
    assert gaps == [0.5, 1, 2, 4, 8, 10, 10]
    assert r.statuses() == ["pending"]
    r.clients[0].answers["getblockheader"] = RPCError(-5, "Block not found")
    r.clients[0].answers["submitblock"] = None
    r.clock.advance(10)
    assert r.statuses() == ["pending", "submitted"]


def test_a_pending_block_goes_out_the_moment_a_node_answers_again(tmp_path):
    """Not when its backoff (grown to recheck_interval) runs out: the node
    set seeing the node answer (the tip poll, a template) starts the round."""
    r = Rig(tmp_path, n=1, recheck_interval=10, retry_min=0.5)
    r.sub.startService()
    r.answers("submitblock", down("node0"))
    r.answers("getblockheader", down("node0"))
    assert fired(r.sub.submit(found())).status == "pending"
    assert not r.nodes.is_healthy("node0")
    r.clock.advance(30)  # the backoff is at recheck_interval now
    r.answers("getblockheader", RPCError(-5, "Block not found"))
    r.answers("submitblock", None)
    r.answers("getbestblockhash", "00" * 32)
    calls = len(r.calls(0, "submitblock"))
    fired(r.nodes.call_any("getbestblockhash"))  # e.g. the tip poll: the node answers
    assert r.statuses() == ["pending", "submitted"]  # without the clock moving
    assert len(r.calls(0, "submitblock")) == calls + 1
    # one round at a time: a block already on its way is not sent twice
    r2 = Rig(tmp_path / "b", n=1)
    r2.sub.startService()
    r2.answers("submitblock", down("node0"))
    fired(r2.sub.submit(found()))
    r2.clients[0].answers.pop("getblockheader", None)  # the recheck waits on the node
    r2.clock.advance(0.5)
    assert r2.sub.blocks[VALID["hash"]].inflight is not None
    r2.answers("getbestblockhash", "00" * 32)
    fired(r2.nodes.call_any("getbestblockhash"))
    assert len([m for m, _p, _ in r2.clients[0].calls if m == "getblockheader"]) == 1


def test_timeout_then_the_block_is_found_in_the_main_chain(tmp_path):
    r = Rig(tmp_path, n=1)
    r.answers("submitblock", RPCTimeout("no answer", node="node0"))
    assert fired(r.sub.submit(found())).status == "pending"
    r.answers("getblockheader", {"hash": VALID["hash"], "confirmations": 1, "height": HEIGHT})
    r.clock.advance(0.5)
    assert r.statuses() == ["pending", "submitted"]
    assert len(r.calls(0, "submitblock")) == 1  # no resubmission needed
    assert r.sub.blocks[VALID["hash"]].verdicts == {"node0": "duplicate"}


def test_confirmation_reorg_and_final_depth(tmp_path):
    r = Rig(tmp_path, n=1, final_depth=3)
    r.answers("submitblock", None)
    fired(r.sub.submit(found()))
    chain = {"count": HEIGHT, "at": VALID["hash"]}
    r.answers("getblockcount", lambda: chain["count"])
    r.answers("getblockhash", lambda h: chain["at"] if h == HEIGHT else tip(h))
    r.clock.advance(10)
    assert r.statuses() == ["submitted", "confirmed"]
    assert r.calls(0, "getblockhash") == [(HEIGHT,)]
    r.clock.advance(10)
    assert r.statuses() == ["submitted", "confirmed"]  # no repeat
    chain.update(count=HEIGHT + 1, at=tip(1))  # reorg: another block at our height
    r.clock.advance(10)
    assert r.statuses()[-1] == "orphaned" and r.sink.statuses[-1].reason == f"block {tip(1)} holds height {HEIGHT}"
    chain.update(count=HEIGHT + 1, at=VALID["hash"])  # and back
    r.clock.advance(10)
    assert r.statuses()[-1] == "confirmed"
    chain.update(count=HEIGHT + 2)
    r.clock.advance(10)
    assert r.sub.blocks[VALID["hash"]].final and r.active_timers() == []
    assert r.journal()[-1]["final"] is True and r.journal()[-1]["status"] == "confirmed"


def test_chain_not_that_high_yet_and_nodes_down_during_checks(tmp_path):
    r = Rig(tmp_path, n=1)
    r.answers("submitblock", None)
    fired(r.sub.submit(found()))
    r.answers("getblockcount", HEIGHT - 1)
    r.answers("getblockhash", RPCError(-8, "Block height out of range"))
    r.clock.advance(10)
    r.answers("getblockcount", down())
    r.clock.advance(10)
    assert r.statuses() == ["submitted"] and len(r.active_timers()) == 1


def test_inconclusive_side_branch_ends_orphaned(tmp_path):
    r = Rig(tmp_path, n=1)
    side = next(c for c in CORE["submitblock"] if c["case"] == "valid-but-not-best-chain")
    r.answers("submitblock", "inconclusive")
    assert fired(r.sub.submit(found(side))).status == "pending"
    # Core stored it off the main chain; resubmitting answers "duplicate".
    r.answers("getblockheader", {"hash": side["hash"], "confirmations": -1})
    r.answers("submitblock", "duplicate")
    r.clock.advance(10)
    assert r.statuses() == ["pending", "submitted"]
    r.answers("getblockcount", HEIGHT)
    r.answers("getblockhash", VALID["hash"])
    r.clock.advance(10)
    assert r.statuses() == ["pending", "submitted", "orphaned"]


def test_journal_reload_after_a_crash(tmp_path):
    r = Rig(tmp_path)
    r.answers("submitblock", down("node0"), down("node1"))
    r.answers("getblockheader", down("node0"), down("node1"))
    other = dict(VALID, hash=tip(5), block="00")
    r.sub.startService()
    fired(r.sub.submit(found()))
    r.answers("submitblock", "bad-prevblk", "bad-prevblk")
    fired(r.sub.submit(found(other, height=HEIGHT + 1)))  # rejected: final
    # The process dies mid-write of a third record.
    with open(r.path, "ab") as f:
        f.write(b'{"event":"status","hash":"')
    for c in r.active_timers():  # and its timers, open files and node-set listener with it
        c.cancel()
    r.sub._journal.close()
    r.nodes.remove_on_node_up(r.sub._node_up)
    r.sub = None
    r.answers("submitblock", None, down("node1"))
    r.answers("getblockheader", RPCError(-5, "Block not found"), down("node1"))
    sub = r.restart()
    assert set(sub.blocks) == {VALID["hash"]}
    assert r.statuses() == ["submitted"]
    assert len(r.calls(0, "submitblock")) == 3  # 1st try, the other block, resumed round
    # The torn line stays one bad line; later records are intact.
    lines = r.path.read_bytes().splitlines()
    assert lines[-2] == b'{"event":"status","hash":"'
    assert orjson.loads(lines[-1])["status"] == "submitted"
    sub.stopService()
    assert r.active_timers() == []


def test_found_but_never_submitted_is_submitted_on_start(tmp_path):
    r = Rig(tmp_path)
    r.path.parent.mkdir(parents=True)
    r.path.write_bytes(orjson.dumps({"event": "found", "time": 1, "block": dataclasses.asdict(found())}) + b"\n")
    r.answers("submitblock", None, "duplicate")
    sub = r.restart()
    assert r.statuses() == ["submitted"] and sub.status_of(VALID["hash"]) == "submitted"


def test_stop_cancels_rounds_in_flight(tmp_path):
    r = Rig(tmp_path)
    r.sub.startService()
    d = r.sub.submit(found())
    assert not d.called  # both nodes still thinking
    r.sub.stopService()
    assert fired(d).status == "pending"  # where it stands; no error for a caller that does not wait
    assert r.active_timers() == []
    # The block is still in the journal for the next start.
    r.answers("submitblock", None, None)
    r.restart()
    assert r.statuses() == ["submitted"]


def test_unwritable_journal_does_not_stop_the_submission(tmp_path, caplog):
    r = Rig(tmp_path, n=1)
    r.path.mkdir(parents=True)  # a directory where the file should be
    r.answers("submitblock", None)
    assert fired(r.sub.submit(found())).status == "submitted"
    assert any("cannot write block journal" in m for m in caplog.messages)


def test_restart_of_the_same_service_resumes_its_blocks(tmp_path):
    r = Rig(tmp_path, n=1)
    r.sub.startService()
    d = r.sub.submit(found())
    r.sub.stopService()
    assert fired(d).status == "pending" and r.sub.status_of(VALID["hash"]) == "new"
    r.answers("submitblock", None)
    r.sub.startService()
    assert r.statuses() == ["submitted"]
    assert len(r.journal()) == 2  # found once, then the status


def test_a_bug_in_a_round_is_logged_and_retried(tmp_path, caplog):
    r = Rig(tmp_path, n=1)
    r.clients[0].answers["submitblock"] = lambda block: {}["boom"]  # KeyError inside the client
    st = fired(r.sub.submit(found()))
    assert st.status == "pending" and any("round failed" in m for m in caplog.messages)
    r.clients[0].answers["submitblock"] = None
    r.clock.advance(10)
    assert r.statuses() == ["submitted"]
