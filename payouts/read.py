"""The payout ledger's read API, for the HTTP API, the dashboard and the
``hashcoop payouts`` commands. Blocking SQLAlchemy, never writes: callers in
Twisted code run these on a thread pool. Pass an engine from
``hashcoop.payouts.db.make_engine(url, writer=False)`` (the URL is
``hashcoop.pool.config.database_url(config)``).

Amounts are integer satoshis; difficulties are floats; times Unix seconds.
Lists are newest first unless they say otherwise.
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Engine

from hashcoop.payouts.models import Balance, Block, Credit, LedgerEntry, Payment, PaymentOutput, Share, WindowAmount
from hashcoop.payouts.pplns import split_reward
from hashcoop.payouts.states import UNRESOLVED, BlockState, PaymentState

_BLOCK_COLS = (Block.hash, Block.height, Block.status, Block.status_reason, Block.reward, Block.reward_source,
               Block.finder_address, Block.finder_worker, Block.found_time, Block.confirmations, Block.credited_time,
               Block.fee_sat, Block.fee_percent, Block.report_digest, Block.window_total, Block.n_target, Block.complete,
               Block.network_difficulty, Block.orphan_count)


def _d(r) -> dict:
    return dict(r._mapping)


def pool_summary(engine: Engine) -> dict:
    """Counts and totals: blocks by status, satoshis owed, paid and pending,
    payments by status, addresses set aside."""
    with engine.connect() as c:
        by_status = dict(c.execute(select(Block.status, func.count()).group_by(Block.status)).all())
        pay_status = dict(c.execute(select(Payment.status, func.count()).group_by(Payment.status)).all())
        owed, credited, paid = c.execute(select(func.coalesce(func.sum(Balance.owed), 0), func.coalesce(func.sum(Balance.credited), 0),
                                                func.coalesce(func.sum(Balance.paid), 0))).one()
        confirmed_paid = c.execute(select(func.coalesce(func.sum(PaymentOutput.amount), 0)).join(Payment, Payment.id == PaymentOutput.payment_id)
                                   .where(Payment.status == PaymentState.CONFIRMED)).scalar()
        in_flight = c.execute(select(func.coalesce(func.sum(Payment.total_sat), 0)).where(Payment.status.in_(UNRESOLVED))).scalar()
        held = c.execute(select(func.count()).select_from(Balance).where(Balance.hold_reason.is_not(None))).scalar()
        pending_reward = c.execute(select(func.coalesce(func.sum(Block.reward), 0)).where(Block.status == BlockState.PENDING)).scalar()
        last = c.execute(select(Block.hash, Block.height, Block.status).order_by(Block.height.desc(), Block.hash).limit(1)).first()
    return {
        "blocks": {s: int(by_status.get(s, 0)) for s in BlockState},
        "pending_reward": int(pending_reward),
        "owed": int(owed),
        "credited": int(credited),
        "paid": int(paid),
        "paid_confirmed": int(confirmed_paid),
        "in_flight": int(in_flight),
        "payments": {s: int(pay_status.get(s, 0)) for s in PaymentState},
        "addresses_held": int(held),
        "last_block": _d(last) if last else None,
    }


def blocks(engine: Engine, *, limit: int = 50, offset: int = 0, status: str | None = None) -> list[dict]:
    """Blocks, highest first: hash, height, status, status_reason, reward,
    finder, found_time, confirmations, credited_time, fee_sat, report_digest,
    window_total, n_target, complete, network_difficulty, addresses (in the
    window), credited (satoshis credited; 0 until mature)."""
    q = select(*_BLOCK_COLS).order_by(Block.height.desc(), Block.hash).limit(limit).offset(offset)
    if status:
        q = q.where(Block.status == status)
    with engine.connect() as c:
        rows = [_d(r) for r in c.execute(q)]
        if rows:
            hs = [r["hash"] for r in rows]
            n = dict(c.execute(select(WindowAmount.block_hash, func.count()).where(WindowAmount.block_hash.in_(hs)).group_by(WindowAmount.block_hash)).all())
            cr = dict(c.execute(select(Credit.block_hash, func.sum(Credit.amount)).where(Credit.block_hash.in_(hs)).group_by(Credit.block_hash)).all())
            for r in rows:
                r["addresses"] = int(n.get(r["hash"], 0))
                r["credited"] = int(cr.get(r["hash"]) or 0)
    return rows


def block_report(engine: Engine, block_hash: str, *, fee_percent: str | float | None = None) -> dict | None:
    """One block: its row (as in ``blocks``), its window by address
    (``window``: [{address, difficulty}], by difficulty), its credits
    (``credits``: [{address, kind, amount}]) and, once credited, the payout
    report (``report``, the exact stored JSON parsed) with its SHA-256
    ``report_digest``. For a pending block and a given ``fee_percent``,
    ``estimate`` is what it would credit (by address) at that fee."""
    with engine.connect() as c:
        r = c.execute(select(*_BLOCK_COLS, Block.report_json, Block.seq, Block.first_seq, Block.first_credit, Block.partial,
                             Block.log_from, Block.floor_seq).where(Block.hash == block_hash)).first()
        if r is None:
            return None
        out = _d(r)
        raw = out.pop("report_json")
        out["report"] = json.loads(raw) if raw else None
        window = [_d(w) for w in c.execute(select(WindowAmount.address, WindowAmount.difficulty).where(WindowAmount.block_hash == block_hash))]
        window.sort(key=lambda w: (-w["difficulty"], w["address"]))
        out["window"] = window
        out["credits"] = [_d(x) for x in c.execute(select(Credit.address, Credit.kind, Credit.amount).where(Credit.block_hash == block_hash)
                                                 .order_by(Credit.address, Credit.kind))]
    out["estimate"] = None
    if fee_percent is not None and out["status"] == BlockState.PENDING and window:
        s = split_reward(out["reward"], {w["address"]: w["difficulty"] for w in window}, fee_percent)
        out["estimate"] = {"fee": s.fee, "credits": s.credits}
    return out


def address_summary(engine: Engine, address: str) -> dict | None:
    """A miner's balance: owed (not yet paid), credited (all time), paid
    (debited into payments), paid_confirmed, in_flight (in payments not yet
    confirmed), hold_reason (set aside: the wallet rejects the address),
    blocks (confirmed blocks that credited it), pending_blocks (pending
    blocks whose window holds it). None if the ledger never heard of it."""
    with engine.connect() as c:
        b = c.execute(select(Balance.owed, Balance.credited, Balance.paid, Balance.hold_reason, Balance.hold_time, Balance.updated)
                      .where(Balance.address == address)).first()
        pending = c.execute(select(func.count()).select_from(WindowAmount).join(Block, Block.hash == WindowAmount.block_hash)
                            .where(and_(WindowAmount.address == address, Block.status == BlockState.PENDING))).scalar()
        if b is None and not pending:
            return None
        credited_blocks = c.execute(select(func.count(func.distinct(Credit.block_hash))).where(Credit.address == address)).scalar()
        conf = c.execute(select(func.coalesce(func.sum(PaymentOutput.amount), 0)).join(Payment, Payment.id == PaymentOutput.payment_id)
                         .where(and_(PaymentOutput.address == address, Payment.status == PaymentState.CONFIRMED))).scalar()
        flight = c.execute(select(func.coalesce(func.sum(PaymentOutput.owed), 0)).join(Payment, Payment.id == PaymentOutput.payment_id)
                           .where(and_(PaymentOutput.address == address, Payment.status.in_(UNRESOLVED)))).scalar()
    out = {"address": address, "owed": 0, "credited": 0, "paid": 0, "hold_reason": None, "hold_time": None, "updated": None}
    if b is not None:
        out.update(_d(b))
    out.update(paid_confirmed=int(conf), in_flight=int(flight), blocks=int(credited_blocks), pending_blocks=int(pending))
    return out


def address_credits(engine: Engine, address: str, *, limit: int = 50, offset: int = 0) -> list[dict]:
    """The miner's credits, newest block first: block_hash, height, kind
    (share or fee), amount, time, difficulty (theirs in the window),
    window_total, reward, fee_sat, report_digest."""
    q = (select(Credit.block_hash, Block.height, Credit.kind, Credit.amount, Credit.time, WindowAmount.difficulty,
                Block.window_total, Block.reward, Block.fee_sat, Block.report_digest)
         .join(Block, Block.hash == Credit.block_hash)
         .outerjoin(WindowAmount, and_(WindowAmount.block_hash == Credit.block_hash, WindowAmount.address == Credit.address))
         .where(Credit.address == address).order_by(Block.height.desc(), Credit.block_hash, Credit.kind).limit(limit).offset(offset))
    with engine.connect() as c:
        return [_d(r) for r in c.execute(q)]


def address_payments(engine: Engine, address: str, *, limit: int = 50, offset: int = 0) -> list[dict]:
    """Payments to the miner, newest first: payment_id, txid, vout, amount
    (what the transaction pays it), owed (what was debited; more than amount
    when the miners bear the fee), status (signed, sent, confirmed, failed),
    confirmations, block_hash, created, sent_time, confirmed_time. Intents
    that were never signed are not listed."""
    q = (select(Payment.id.label("payment_id"), Payment.txid, PaymentOutput.vout, PaymentOutput.amount, PaymentOutput.owed,
                Payment.status, Payment.confirmations, Payment.block_hash, Payment.created, Payment.sent_time, Payment.confirmed_time)
         .join(Payment, Payment.id == PaymentOutput.payment_id)
         .where(and_(PaymentOutput.address == address, Payment.status.in_((*UNRESOLVED, PaymentState.CONFIRMED, PaymentState.FAILED))))
         .order_by(Payment.id.desc()).limit(limit).offset(offset))
    with engine.connect() as c:
        return [_d(r) for r in c.execute(q)]


def address_history(engine: Engine, address: str, *, limit: int = 100, offset: int = 0) -> list[dict]:
    """The audit trail of the miner's balance, newest first: time, kind
    (credit, payment, refund), delta, balance_after, block_hash, payment_id, note."""
    q = (select(LedgerEntry.time, LedgerEntry.kind, LedgerEntry.delta, LedgerEntry.balance_after, LedgerEntry.block_hash,
                LedgerEntry.payment_id, LedgerEntry.note).where(LedgerEntry.address == address)
         .order_by(LedgerEntry.id.desc()).limit(limit).offset(offset))
    with engine.connect() as c:
        return [_d(r) for r in c.execute(q)]


def address_block(engine: Engine, address: str, block_hash: str, *, shares: bool = True) -> dict | None:
    """A miner's view of one block: their difficulty in the window, the
    window total, their fraction, their credit (None until credited), and
    (``shares``) their shares in the window from the archived share log:
    [{seq, worker, difficulty, credited, share_difficulty, hash, time,
    is_block}], ``credited`` being the part inside the window (less than
    the difficulty only for the one share straddling the window start)."""
    with engine.connect() as c:
        b = c.execute(select(Block.hash, Block.height, Block.status, Block.window_total, Block.reward, Block.fee_sat,
                             Block.first_seq, Block.first_credit, Block.partial, Block.seq, Block.floor_seq, Block.report_digest)
                      .where(Block.hash == block_hash)).first()
        if b is None:
            return None
        mine = c.execute(select(WindowAmount.difficulty).where(and_(WindowAmount.block_hash == block_hash, WindowAmount.address == address))).scalar()
        credit = c.execute(select(func.sum(Credit.amount)).where(and_(Credit.block_hash == block_hash, Credit.address == address,
                                                                       Credit.kind == "share"))).scalar()
        out = {"address": address, "block_hash": block_hash, "height": b.height, "status": b.status, "difficulty": mine or 0.0,
               "window_total": b.window_total, "fraction": (mine or 0.0) / b.window_total if b.window_total else 0.0,
               "credit": int(credit) if credit is not None else None, "reward": b.reward, "fee_sat": b.fee_sat,
               "report_digest": b.report_digest}
        if shares:
            lo = max(b.first_seq if b.first_seq is not None else b.seq, b.floor_seq)
            rows = c.execute(select(Share.seq, Share.worker, Share.difficulty, Share.share_difficulty, Share.hash, Share.time, Share.is_block)
                             .where(and_(Share.address == address, Share.seq.between(lo, b.seq))).order_by(Share.seq)).all()
            out["shares"] = []
            for r in rows:
                d = _d(r)
                d["credited"] = b.first_credit if (b.partial and r.seq == b.first_seq and b.first_credit is not None) else r.difficulty
                out["shares"].append(d)
    return out


def payments(engine: Engine, *, limit: int = 50, offset: int = 0, status: str | None = None) -> list[dict]:
    """Payments, newest first: id, status, txid, fee_sat, fee_payer,
    total_sat (debited), outputs (count), created, signed_time, sent_time,
    confirmed_time, confirmations, block_hash, error."""
    q = (select(Payment.id, Payment.status, Payment.txid, Payment.fee_sat, Payment.fee_payer, Payment.total_sat, Payment.created,
                Payment.signed_time, Payment.sent_time, Payment.confirmed_time, Payment.confirmations, Payment.block_hash, Payment.error)
         .order_by(Payment.id.desc()).limit(limit).offset(offset))
    if status:
        q = q.where(Payment.status == status)
    with engine.connect() as c:
        rows = [_d(r) for r in c.execute(q)]
        if rows:
            n = dict(c.execute(select(PaymentOutput.payment_id, func.count()).where(PaymentOutput.payment_id.in_([r["id"] for r in rows]))
                               .group_by(PaymentOutput.payment_id)).all())
            for r in rows:
                r["outputs"] = int(n.get(r["id"], 0))
    return rows


def payment(engine: Engine, payment_id: int) -> dict | None:
    """One payment (as in ``payments``) with its outputs: [{address, owed, amount, vout}]."""
    with engine.connect() as c:
        r = c.execute(select(Payment.id, Payment.status, Payment.txid, Payment.fee_sat, Payment.fee_payer, Payment.total_sat,
                             Payment.created, Payment.signed_time, Payment.sent_time, Payment.confirmed_time, Payment.confirmations,
                             Payment.block_hash, Payment.error, Payment.broadcasts).where(Payment.id == payment_id)).first()
        if r is None:
            return None
        out: dict[str, Any] = _d(r)
        out["outputs"] = [_d(o) for o in c.execute(select(PaymentOutput.address, PaymentOutput.owed, PaymentOutput.amount, PaymentOutput.vout)
                                                   .where(PaymentOutput.payment_id == payment_id).order_by(PaymentOutput.vout, PaymentOutput.id))]
    return out


def held_addresses(engine: Engine) -> list[dict]:
    """Addresses set aside (the wallet rejects them): address, owed, hold_reason, hold_time."""
    with engine.connect() as c:
        return [_d(r) for r in c.execute(select(Balance.address, Balance.owed, Balance.hold_reason, Balance.hold_time)
                                          .where(Balance.hold_reason.is_not(None)).order_by(Balance.address))]
