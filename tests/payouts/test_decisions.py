"""Pure decisions: block maturity and orphans, payment batching, the
funded-transaction check, and reconciliation of stored payments."""
from __future__ import annotations

import pytest

from hashcoop.payouts.maturity import NodeView, decide
from hashcoop.payouts.payments import Payee, TxView, check_funded, fee_shares, plan_batches, reconcile

H, OTHER = "aa" * 32, "bb" * 32


@pytest.mark.parametrize("status,view,action,conf", [
    ("pending", NodeView(300, H), "wait", 101),  # 101 confirmations, maturity_depth 102 here
    ("pending", NodeView(299, H), "wait", 100),
    ("pending", NodeView(300, OTHER), "orphan", 0),
    ("pending", NodeView(150, None), "orphan", 0),
    ("pending", NodeView(300, OTHER, known=False), "orphan", 0),
    ("orphaned", NodeView(300, H), "revive", 101),
    ("orphaned", NodeView(300, OTHER), "stay", 0),
    ("credited", NodeView(300, OTHER), "none", 0),
])
def test_maturity(status, view, action, conf):
    d = decide(status, H, 200, view, maturity_depth=102)
    assert (d.action, d.confirmations) == (action, conf)


def test_credit_at_depth_101_exactly():
    assert decide("pending", H, 200, NodeView(299, H)).action == "wait"  # 100 confirmations: coinbase not yet spendable by the wallet
    assert decide("pending", H, 200, NodeView(300, H)).action == "credit"  # 101
    with pytest.raises(ValueError):
        decide("pending", H, 200, NodeView(300, H), maturity_depth=100)


def test_batches_largest_first_without_small_ones():
    b = plan_batches([("a", 5), ("b", 50), ("c", 50), ("d", 9), ("e", 100)], min_payout=9, max_outputs=2)
    assert b == [[Payee("e", 100), Payee("b", 50)], [Payee("c", 50), Payee("d", 9)]]
    assert plan_batches([("a", 5)], 9, 2) == []


def test_fee_shares_like_core():
    assert fee_shares(301, 2) == [151, 150]
    assert sum(fee_shares(1000, 7)) == 1000


def test_check_funded():
    payees = [Payee("a", 1000), Payee("b", 2000)]
    scripts = [b"A", b"B"]
    assert check_funded(payees, scripts, [(1000, b"A"), (2000, b"B"), (500, b"change")], 200, "pool", 10_000) == []
    assert check_funded(payees, scripts, [(899, b"A"), (1900, b"B")], 201, "miners", 10_000) == []
    assert check_funded(payees, scripts, [(1001, b"A"), (2000, b"B")], 200, "pool", 10_000) == ["output 0 to a is 1001 sat, expected 1000"]
    assert check_funded(payees, scripts, [(2000, b"B"), (1000, b"A")], 200, "pool", 10_000)[0].startswith("output 0 pays")
    assert "above payouts.max_tx_fee_sat" in check_funded(payees, scripts, [(1000, b"A"), (2000, b"B")], 20_000, "pool", 10_000)[0]


@pytest.mark.parametrize("status,view,action", [
    ("signed", TxView(None, False), "broadcast"),        # crashed before broadcasting: the stored transaction goes out
    ("signed", TxView(0, True), "sent"),                  # crashed after broadcasting, before marking sent
    ("sent", TxView(1, False, "bh"), "sent"),
    ("sent", TxView(6, False, "bh"), "confirm"),
    ("sent", TxView(0, False), "broadcast"),              # dropped from the mempool: again, the same transaction
    ("sent", TxView(-2, False), "wait"),                  # conflicted, not deep yet
    ("sent", TxView(-6, False), "fail"),
])
def test_reconcile(status, view, action):
    assert reconcile(status, view, 6) == action


def test_a_ledger_that_cannot_be_reached_is_told_from_a_bug():
    """The payout pass logs an unreachable or locked database as one line
    (kind "ledger") and a wrong statement as a bug with its traceback."""
    import sqlite3

    from sqlalchemy import exc

    from hashcoop.payouts.service import ledger_unavailable

    locked = exc.OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))
    gone = exc.DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True)
    wrong = exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert ledger_unavailable(locked) and ledger_unavailable(gone)
    assert not ledger_unavailable(wrong) and not ledger_unavailable(ValueError("bug"))


def test_a_connection_cut_during_the_pre_ping_is_an_unavailable_ledger():
    """What CI met on PostgreSQL: the cut fails the pool's pre-ping with an
    OperationalError, then psycopg refuses to restore autocommit on the dead
    connection with a ProgrammingError, and SQLAlchemy raises that one. The
    chain is built here the way psycopg and SQLAlchemy build it."""
    import psycopg
    from sqlalchemy import exc

    from hashcoop.payouts.service import ledger_unavailable

    try:
        try:
            raise psycopg.OperationalError("connection socket closed")
        finally:
            raise psycopg.ProgrammingError("can't change 'autocommit' now: connection in transaction status UNKNOWN")
    except psycopg.ProgrammingError as e:
        driver = e
    assert isinstance(driver.__context__, psycopg.OperationalError)
    try:
        raise exc.ProgrammingError(None, None, driver) from driver
    except exc.ProgrammingError as e:
        cut = e
    assert ledger_unavailable(cut)
    timeout = exc.DBAPIError("SELECT 1", {}, psycopg.errors.ConnectionTimeout("connection timeout expired"))
    assert ledger_unavailable(timeout)
    # a wrong statement stays a bug, however it is wrapped
    try:
        raise exc.ProgrammingError("SELEC 1", {}, psycopg.errors.SyntaxError("syntax error at or near \"SELEC\""))
    except exc.ProgrammingError as e:
        assert not ledger_unavailable(e)
