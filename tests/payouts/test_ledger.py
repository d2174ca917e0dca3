"""The ledger on SQLite (and PostgreSQL when configured): the lease and its
fencing, block import, crediting once, payments and refunds, the audit
trail, and the read API over the same data."""
from __future__ import annotations

import json
import multiprocessing
from dataclasses import asdict, fields

import pytest

from hashcoop.payouts import read
from hashcoop.payouts.ledger import LeaseLost, LeaseRow, Ledger, LedgerBlock, LedgerError, PaymentRow, make_holder
from hashcoop.payouts.models import Block, Lease, Payment
from hashcoop.payouts.payments import Payee
from hashcoop.payouts.pplns import build_report, canonical_json, report_digest, split_reward
from hashcoop.payouts.states import BlockState, PaymentState
from tests.payouts.helpers import FakeClock, h, shares_for, snapshot_for

A, B, C = "bcrt1qaaaa", "bcrt1qbbbb", "bcrt1qcccc"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def ledger(db, clock):
    led = Ledger(db.main, clock=clock)
    assert led.acquire_lease(60)
    return led


def credit(ledger, block_hash, reward=5_000_000_000, fee="1"):
    window = ledger.window(block_hash)
    split = split_reward(reward, window, fee)
    b = ledger.block(block_hash)
    rep = build_report(block={**asdict(b), "hash": block_hash, "time": b.found_time, "partial": None}, window=window, split=split, fee_address=None)
    return ledger.credit_block(block_hash, reward=reward, confirmations=101, fee_percent=split.fee_percent, fee_sat=split.fee,
                               fee_address=None, credits=[(a, "share", v) for a, v in split.credits.items()],
                               report_json=canonical_json(rep).decode(), digest=report_digest(rep)), split


def import_one(ledger, name="b1", height=200, rows=((A, 1), (B, 3), (A, 2)), first_seq=1):
    sh = shares_for(list(rows), first_seq)
    snap = snapshot_for(h(name), height, sh)
    assert ledger.import_block(snap, sh, reward=5_000_000_000, reward_source="pool")
    return snap


def test_lease_is_exclusive_and_fences_every_write(db, clock):
    one = Ledger(db.main, clock=clock)
    two = Ledger(db.engine(), clock=clock, holder="otherhost:1:1:x")
    assert one.acquire_lease(30)
    assert not two.acquire_lease(30), "a live holder keeps the lease"
    assert one.acquire_lease(30), "renewal"
    with pytest.raises(LeaseLost):
        two.hold(A, "x")
    clock.t += 31  # the holder stalls past its lease
    assert two.acquire_lease(30), "an expired lease is taken over"
    with pytest.raises(LeaseLost):
        import_one(one)  # the stalled process's writes are refused
    assert one.block(h("b1")) is None
    import_one(two)
    assert two.block(h("b1")).status == "pending"


def _child_holder(q):
    q.put(make_holder())


def test_lease_of_a_dead_process_on_this_host_is_taken_at_once(db, clock):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_holder, args=(q,))
    p.start()
    dead = q.get(timeout=10)
    p.join()
    Ledger(db.main, clock=clock, holder=dead).acquire_lease(3600)
    assert Ledger(db.engine(), clock=clock).acquire_lease(60), "dead holder: taken without waiting"
    alive = Ledger(db.engine(), clock=clock)
    assert not alive.acquire_lease(60), "but not from the live process that took it"


def test_import_is_idempotent_and_archives_the_window_shares(ledger):
    snap = import_one(ledger)
    sh = shares_for([(A, 1), (B, 3), (A, 2)])
    assert not ledger.import_block(snap, sh, reward=1, reward_source="pool")
    assert ledger.window(snap.hash) == {A: 3.0, B: 3.0}
    assert [s.seq for s in ledger.archived_shares(1, 3)] == [1, 2, 3]
    assert ledger.archived_shares(1, 3)[2].is_block
    with pytest.raises(LookupError):
        ledger.archived_shares(1, 4)
    # a later block whose window overlaps stores the new shares only
    sh2 = shares_for([(A, 1), (B, 3), (A, 2), (C, 5)])
    snap2 = snapshot_for(h("b2"), 201, sh2)
    assert ledger.import_block(snap2, sh2, reward=1, reward_source="pool")
    assert [s.address for s in ledger.archived_shares(1, 4)] == [A, B, A, C]


def test_credit_once_with_audit_and_invariants(ledger):
    snap = import_one(ledger)
    ok, split = credit(ledger, snap.hash)
    assert ok
    again, _ = credit(ledger, snap.hash)
    assert not again, "a block is credited once"
    s = read.address_summary(ledger.engine, A)
    assert s["owed"] == s["credited"] == split.credits[A] and s["paid"] == 0
    assert sum(c.amount for c in ledger.credits(snap.hash)) + split.fee == 5_000_000_000
    assert ledger.check_invariants() == []
    hist = read.address_history(ledger.engine, A)
    assert [(e["kind"], e["delta"], e["balance_after"]) for e in hist] == [("credit", split.credits[A], split.credits[A])]
    rep = read.block_report(ledger.engine, snap.hash)
    assert rep["status"] == "credited" and rep["report"]["credits"][0]["address"] == A
    assert report_digest(rep["report"]) == rep["report_digest"]


def test_orphan_and_revive_never_credit(ledger):
    snap = import_one(ledger)
    ledger.record_check(snap.hash, "orphaned", 0, "another block at 200")
    assert ledger.blocks_to_check(tip_height=300, recheck_depth=1000)[0].status == "orphaned"
    assert ledger.blocks_to_check(tip_height=1300, recheck_depth=1000) == []
    assert read.address_summary(ledger.engine, A) is None, "an orphan credits nobody"
    ledger.record_check(snap.hash, "pending", 5)
    b = ledger.block(snap.hash)
    assert b.status == "pending" and b.orphan_count == 1
    assert credit(ledger, snap.hash)[0]
    with pytest.raises(LedgerError):
        ledger.record_check(snap.hash, "orphaned", 0)


def test_payment_lifecycle_and_refund(ledger, clock):
    snap = import_one(ledger)
    _, split = credit(ledger, snap.hash)
    payees = [Payee(A, split.credits[A]), Payee(B, split.credits[B])]
    pid = ledger.create_intent(payees, "pool")
    with pytest.raises(LedgerError):
        ledger.create_intent(payees, "pool")  # one unresolved at a time
    ledger.abandon(pid, "wallet: insufficient funds")
    pid = ledger.create_intent(payees, "pool")
    ledger.store_signed(pid, raw_tx="00", txid=h("tx1"), fee_sat=300, outputs=[(A, split.credits[A], 0), (B, split.credits[B], 1)])
    assert read.address_summary(ledger.engine, A)["owed"] == 0
    assert read.address_summary(ledger.engine, A)["in_flight"] == split.credits[A]
    ledger.mark_sent(pid)
    ledger.mark_failed(pid, "conflicted")
    assert read.address_summary(ledger.engine, A)["owed"] == split.credits[A], "a failed payment gives the debit back"
    assert ledger.check_invariants() == []
    pid = ledger.create_intent(payees, "miners")
    ledger.store_signed(pid, raw_tx="01", txid=h("tx2"), fee_sat=301, outputs=[(A, split.credits[A] - 151, 0), (B, split.credits[B] - 150, 1)])
    ledger.mark_sent(pid)
    ledger.mark_confirmed(pid, 6, h("blk"))
    assert ledger.check_invariants() == []
    pays = read.address_payments(ledger.engine, A)
    assert [(p["status"], p["txid"]) for p in pays] == [("confirmed", h("tx2")), ("failed", h("tx1"))]
    assert pays[0]["amount"] == split.credits[A] - 151 and pays[0]["owed"] == split.credits[A]
    summ = read.pool_summary(ledger.engine)
    assert summ["owed"] == split.credits[C] if C in split.credits else summ["owed"] == 0
    assert summ["payments"]["confirmed"] == 1 and summ["payments"]["failed"] == 1 and summ["payments"]["abandoned"] == 1
    assert read.payment(ledger.engine, pid)["outputs"][0]["vout"] == 0


def test_store_signed_cannot_overpay(ledger):
    snap = import_one(ledger)
    _, split = credit(ledger, snap.hash)
    pid = ledger.create_intent([Payee(A, split.credits[A])], "pool")
    with pytest.raises(LedgerError):
        ledger.store_signed(pid, raw_tx="00", txid=h("t"), fee_sat=1, outputs=[(A, split.credits[A] + 1, 0)])
    with pytest.raises(LedgerError):
        ledger.store_signed(pid, raw_tx="00", txid=h("t"), fee_sat=1, outputs=[(B, 5, 0)])
    with pytest.raises(LedgerError):
        ledger.create_intent([Payee(B, 10**15)], "pool")
    assert ledger.check_invariants() == []


def test_hold_sets_an_address_aside(ledger):
    snap = import_one(ledger)
    credit(ledger, snap.hash)
    ledger.hold(B, "Invalid Bitcoin address: bcrt1qbbbb (code -5)")
    assert [a for a, _ in ledger.payable(1)] == [A]
    assert read.held_addresses(ledger.engine)[0]["hold_reason"].startswith("Invalid")
    assert ledger.release_hold(B)
    assert [a for a, _ in ledger.payable(1)] == [A, B]


def test_read_api_block_lists_and_miner_view(db, ledger):
    snap = import_one(ledger, rows=((A, 1), (B, 3), (A, 2)))
    snap2 = import_one(ledger, "b2", 201, rows=((A, 1), (B, 3), (A, 2), (C, 4)))
    reader = db.engine(writer=False)
    bl = read.blocks(reader)
    assert [b["hash"] for b in bl] == [snap2.hash, snap.hash] and bl[0]["addresses"] == 3 and bl[0]["credited"] == 0
    est = read.block_report(reader, snap.hash, fee_percent="1")["estimate"]
    assert sum(est["credits"].values()) + est["fee"] == 5_000_000_000
    credit(ledger, snap.hash)
    view = read.address_block(reader, A, snap.hash)
    assert view["difficulty"] == 3.0 and view["fraction"] == 0.5 and view["credit"] > 0
    assert [s["seq"] for s in view["shares"]] == [1, 3] and sum(s["credited"] for s in view["shares"]) == 3.0
    assert read.address_credits(reader, A)[0]["block_hash"] == snap.hash
    assert read.address_summary(reader, C)["pending_blocks"] == 1
    assert read.address_summary(reader, "bcrt1qnobody") is None
    assert read.block_report(reader, h("none")) is None
    assert json.loads(json.dumps(read.pool_summary(reader)))["blocks"] == {"pending": 1, "credited": 1, "orphaned": 0}


def test_the_typed_rows_hold_every_column_of_their_table(ledger):
    """LedgerBlock and PaymentRow carry every column of blocks and payments,
    statuses as their StrEnums; LeaseRow the lease's; CreditRow a credit."""
    for row, table in ((LedgerBlock, Block), (PaymentRow, Payment), (LeaseRow, Lease)):
        assert [f.name for f in fields(row)] == [c.name for c in table.__table__.columns]
    snap = import_one(ledger)
    b = ledger.block(snap.hash)
    assert type(b.status) is BlockState and b.status is BlockState.PENDING and b.partial is False and b.height == 200
    assert [type(x) for x in ledger.blocks_to_check(300, 1000)] == [LedgerBlock]
    assert ledger.lease().holder == ledger.holder
    _, split = credit(ledger, snap.hash)
    assert ledger.block(snap.hash).status is BlockState.CREDITED
    assert {(c.address, c.kind, c.amount) for c in ledger.credits(snap.hash)} == {(a, "share", v) for a, v in split.credits.items()}
    pid = ledger.create_intent([Payee(A, split.credits[A])], "pool")
    (p,) = ledger.unresolved_payments()
    assert (p.id, p.status, p.total_sat, p.txid) == (pid, PaymentState.INTENT, split.credits[A], None)
