"""Shares a miner found on the tip a new tip had just replaced, before it
could read the new job (``stratum.stale_grace``), and the pool moving its
miners onto a block it found itself (``WorkSource.own_block``)."""
from __future__ import annotations

from hashcoop.pool.core.jobs import JobManager
from hashcoop.pool.core.shares import Reject
from tests.stratum.harness import ADDR, Harness, template
from tests.stratum.test_session import _expect_reject


def graced(seconds: float = 1.0) -> Harness:
    h = Harness(with_job=False)
    h.jobs.stale_grace = seconds
    h.server.on_template(template(), True)
    return h


def test_a_share_on_the_replaced_tip_is_credited_within_the_grace_and_stale_after():
    h = graced(1.0)
    c = h.connect().handshake()
    early, _ = c.solve()
    late, _ = c.solve(en2=1)
    h.reactor.advance(5)
    h.server.on_template(template(prev=b"\x11" * 32), True)
    h.reactor.advance(0.9)
    assert c.call("mining.submit", early)["result"] is True
    _expect_reject(c, early, Reject.DUPLICATE)  # duplicates still caught on the replaced tip's jobs
    assert h.metric("hashcoop_shares_late_total") == 1 and len(h.sink.accepted) == 1
    assert not h.sink.accepted[0].is_block
    h.reactor.advance(0.2)
    _expect_reject(c, late, Reject.STALE_JOB)


def test_only_the_tip_just_replaced_is_graced():
    h = graced(1.0)
    c = h.connect().handshake()
    old, _ = c.solve()
    h.server.on_template(template(prev=b"\x11" * 32), True)
    h.server.on_template(template(prev=b"\x22" * 32), True)  # two new tips within the grace
    _expect_reject(c, old, Reject.STALE_JOB)


def test_a_block_on_the_replaced_tip_is_recorded_lost_and_the_share_credited():
    h = graced(1.0)
    c = h.connect().handshake()
    share, _ = c.solve(block=True)
    h.server.on_template(template(prev=b"\x11" * 32), True)
    assert c.call("mining.submit", share)["result"] is True
    assert h.submitter.found == [] and len(h.submitter.stale) == 1, "recorded as a lost block, never submitted"
    assert h.metric("hashcoop_blocks_stale_total") == 1
    assert [s.is_block for s in h.sink.accepted] == [False] and h.sink.blocks == []


def test_no_grace_by_default_in_the_job_manager():
    assert JobManager(payout_script=b"", tag=b"", extranonce_size=8, now=lambda: 0.0).stale_grace == 0.0


class FakeWork:
    """The WorkSource side StratumServer calls when a block is found."""

    def __init__(self, log: list):
        self.log = log

    def own_block(self, found, template):
        self.log.append(("own_block", found.hash, template))

    def own_block_verdict(self, status):
        self.log.append(("verdict", status.hash, status.status))
        return status


def test_a_found_block_moves_the_work_source_onto_it_before_the_submission():
    h = Harness()
    order = []
    h.server.work = FakeWork(order)
    submit = h.submitter.submit
    h.submitter.submit = lambda found: (order.append(("submit", found.hash)), submit(found))[1]
    c = h.connect().handshake()
    share, _ = c.solve(block=True)
    job = h.jobs.current
    assert c.call("mining.submit", share)["result"] is True
    [found] = h.submitter.found
    assert order == [("own_block", found.hash, job.template), ("submit", found.hash), ("verdict", found.hash, "submitted")]
    assert found.address == ADDR
