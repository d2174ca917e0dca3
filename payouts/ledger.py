"""The payout ledger: blocking SQLAlchemy operations, each one database
transaction. The service runs them on its own thread pool
(``hashcoop.payouts.service``), never on the reactor thread.

Every write first *fences* on the single-instance lease: it locks the lease
row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite writers hold the
database's write lock from ``BEGIN IMMEDIATE``) and checks that this process
still holds an unexpired lease, else it raises :class:`LeaseLost` and writes
nothing. So two payout processes can never both change the ledger, even if
one of them stalls past its lease and a standby takes over.

Balances: ``owed`` (credited and not yet in a payment), ``credited`` (all
credits), ``paid`` (debited into payments, net of refunds); always
``owed == credited - paid``. Every change of ``owed`` writes one audit row
(``ledger_entries``) with the new balance.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from hashcoop.payouts.models import Balance, Block, Credit, Lease, LedgerEntry, Payment, PaymentOutput, Share, WindowAmount
from hashcoop.payouts.payments import Payee
from hashcoop.payouts.states import UNRESOLVED, BlockState, PaymentState
from hashcoop.pool.core.events import LoggedShare

LEASE_NAME = "payouts"


class LeaseLost(Exception):
    """This process does not hold the payout lease (any more)."""


class LedgerError(Exception):
    """A ledger operation that would break an invariant."""


def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or ''."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def make_holder() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid)}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(holder: str) -> bool:
    """True when ``holder`` names a process on this host that no longer
    runs (its PID is gone, or now belongs to a process started later)."""
    try:
        host, pid_s, start, _ = holder.rsplit(":", 3)
        pid = int(pid_s)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return bool(start) and _proc_start(pid) != start


@dataclass(frozen=True, slots=True)
class BlockSnapshot:
    """What the ledger keeps of a found block and its window snapshot
    (``hashcoop.pool.accounting.sharelog.Snapshot`` has these fields)."""

    hash: str
    height: int
    seq: int
    log_from: int
    floor_seq: int
    first_seq: int | None
    first_credit: float | None
    partial: bool
    n_target: float
    total: float
    complete: bool
    network_difficulty: float
    window_factor: float
    window_difficulty: float
    entry_shares: int
    time: float
    created: float
    finder_address: str
    finder_worker: str
    amounts: dict

    @classmethod
    def from_snapshot(cls, s) -> "BlockSnapshot":
        return cls(s.block_hash, s.height, s.seq, s.log_from, s.floor_seq, s.first_seq, s.first_credit, s.partial,
                   s.n_target, s.total, s.complete, s.network_difficulty, s.window_factor, s.window_difficulty,
                   s.entry_shares, s.time, s.created, s.finder_address, s.finder_worker, dict(s.amounts))


# -- typed rows (what the ledger's reads return) -------------------------------------------
@dataclass(frozen=True, slots=True)
class LedgerBlock:
    """A ``blocks`` row (tests/payouts/test_ledger.py checks the fields
    against the table)."""

    hash: str
    height: int
    status: BlockState
    status_reason: str | None
    reward: int
    reward_source: str  # "node" or "pool" (the pool's claim, the node not asked yet)
    finder_address: str
    finder_worker: str
    found_time: float
    imported_time: float
    checked_time: float | None
    confirmations: int | None
    credited_time: float | None
    orphan_count: int
    seq: int
    log_from: int
    floor_seq: int
    first_seq: int | None
    first_credit: float | None
    partial: bool
    n_target: float
    window_total: float
    complete: bool
    network_difficulty: float
    window_factor: float
    window_difficulty: float
    entry_shares: int
    share_time: float
    snapshot_created: float
    fee_percent: str | None
    fee_sat: int | None
    fee_address: str | None
    report_json: str | None
    report_digest: str | None

    @classmethod
    def of(cls, r) -> "LedgerBlock":
        m = r._mapping
        return cls(**{**m, "status": BlockState(m["status"]), "partial": bool(m["partial"]), "complete": bool(m["complete"])})


@dataclass(frozen=True, slots=True)
class PaymentRow:
    """A ``payments`` row."""

    id: int
    status: PaymentState
    fee_payer: str
    created: float
    updated: float
    txid: str | None
    raw_tx: str | None
    fee_sat: int | None
    total_sat: int
    error: str | None
    signed_time: float | None
    sent_time: float | None
    confirmed_time: float | None
    block_hash: str | None
    confirmations: int | None
    broadcasts: int

    @classmethod
    def of(cls, r) -> "PaymentRow":
        m = r._mapping
        return cls(**{**m, "status": PaymentState(m["status"])})


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """The ``lease`` row: who holds the single-instance lease, until when."""

    name: str
    holder: str
    acquired: float
    expires: float


@dataclass(frozen=True, slots=True)
class CreditRow:
    """One credit of a block: ``kind`` is ``share`` or ``fee``."""

    address: str
    kind: str
    amount: int


class Ledger:
    def __init__(self, engine: Engine, *, holder: str | None = None, clock: Callable[[], float] = time.time):
        self.engine = engine
        self.holder = holder or make_holder()
        self.clock = clock

    # -- the lease --------------------------------------------------------------------
    def acquire_lease(self, ttl: float) -> bool:
        """Take (or renew) the lease for ``ttl`` seconds. It is free when
        nobody holds it, it expired, or its holder is a dead process on this
        host. False when another live process holds it."""
        now = self.clock()
        try:
            with self.engine.begin() as c:
                lease = c.execute(select(Lease.holder, Lease.expires).where(Lease.name == LEASE_NAME).with_for_update()).first()
                if lease is None:
                    c.execute(Lease.__table__.insert().values(name=LEASE_NAME, holder=self.holder, acquired=now, expires=now + ttl))
                    return True
                if lease.holder == self.holder:
                    c.execute(update(Lease).where(Lease.name == LEASE_NAME).values(expires=now + ttl))
                    return True
                if lease.expires < now or holder_is_dead(lease.holder):
                    c.execute(update(Lease).where(Lease.name == LEASE_NAME).values(holder=self.holder, acquired=now, expires=now + ttl))
                    return True
                return False
        except IntegrityError:  # another process inserted the row first
            return False

    def release_lease(self) -> None:
        with self.engine.begin() as c:
            c.execute(delete(Lease).where(and_(Lease.name == LEASE_NAME, Lease.holder == self.holder)))

    def lease(self) -> LeaseRow | None:
        with self.engine.connect() as c:
            r = c.execute(select(Lease.__table__).where(Lease.name == LEASE_NAME)).first()
            return LeaseRow(**r._mapping) if r else None

    def _fence(self, c: Connection) -> None:
        row = c.execute(select(Lease.holder, Lease.expires).where(Lease.name == LEASE_NAME).with_for_update()).first()
        if row is None or row.holder != self.holder:
            raise LeaseLost(f"the payout lease is held by {row.holder if row else 'nobody'}, not this process")
        if row.expires < self.clock():
            raise LeaseLost("the payout lease expired")

    @contextmanager
    def _write(self):
        """A write transaction, fenced on the lease."""
        with self.engine.begin() as c:
            self._fence(c)
            yield c

    # -- balances ---------------------------------------------------------------------------
    def _change(self, c: Connection, address: str, delta: int, kind: str, *, credited: int = 0, paid: int = 0,
                block_hash: str | None = None, payment_id: int | None = None, note: str | None = None) -> int:
        now = self.clock()
        row = c.execute(select(Balance.owed, Balance.credited, Balance.paid).where(Balance.address == address)).first()
        if row is None:
            owed, cr, pd = 0, 0, 0
            c.execute(Balance.__table__.insert().values(address=address, owed=0, credited=0, paid=0, updated=now))
        else:
            owed, cr, pd = row
        new = owed + delta
        if new < 0:
            raise LedgerError(f"{address}: balance {owed} cannot pay {-delta}")
        c.execute(update(Balance).where(Balance.address == address).values(owed=new, credited=cr + credited, paid=pd + paid, updated=now))
        c.execute(LedgerEntry.__table__.insert().values(time=now, address=address, kind=kind, delta=delta, balance_after=new,
                                                         block_hash=block_hash, payment_id=payment_id, note=note))
        return new

    # -- blocks -----------------------------------------------------------------------------------
    def known_blocks(self, hashes: Iterable[str]) -> set[str]:
        hashes = list(hashes)
        out: set[str] = set()
        with self.engine.connect() as c:
            for i in range(0, len(hashes), 500):
                out |= set(c.execute(select(Block.hash).where(Block.hash.in_(hashes[i:i + 500]))).scalars())
        return out

    def import_block(self, snap: BlockSnapshot, shares: Sequence[LoggedShare], *, reward: int, reward_source: str) -> bool:
        """Store a found block, its window snapshot and the shares that
        window is recomputed from (``log_from`` .. ``seq``). False if the
        block was already there (nothing changes)."""
        if shares and (shares[0].seq != snap.log_from or shares[-1].seq != snap.seq or len(shares) != snap.seq - snap.log_from + 1):
            raise LedgerError(f"block {snap.hash}: the shares given are not {snap.log_from}..{snap.seq}")
        now = self.clock()
        with self._write() as c:
            if c.execute(select(Block.hash).where(Block.hash == snap.hash)).first():
                return False
            c.execute(Block.__table__.insert().values(
                hash=snap.hash, height=snap.height, status=BlockState.PENDING, reward=reward, reward_source=reward_source,
                finder_address=snap.finder_address, finder_worker=snap.finder_worker, found_time=snap.time,
                imported_time=now, orphan_count=0, seq=snap.seq, log_from=snap.log_from, floor_seq=snap.floor_seq,
                first_seq=snap.first_seq, first_credit=snap.first_credit, partial=snap.partial, n_target=snap.n_target,
                window_total=snap.total, complete=snap.complete, network_difficulty=snap.network_difficulty,
                window_factor=snap.window_factor, window_difficulty=snap.window_difficulty,
                entry_shares=snap.entry_shares, share_time=snap.time, snapshot_created=snap.created))
            if snap.amounts:
                c.execute(WindowAmount.__table__.insert(), [
                    {"block_hash": snap.hash, "address": a, "difficulty": float(d)} for a, d in snap.amounts.items()])
            if shares:
                have = set(c.execute(select(Share.seq).where(Share.seq.between(snap.log_from, snap.seq))).scalars())
                rows = [{"seq": s.seq, "address": s.address, "worker": s.worker, "difficulty": s.difficulty,
                         "share_difficulty": s.share_difficulty, "job_id": s.job_id, "hash": s.hash, "time": s.time,
                         "is_block": s.is_block, "batch": s.batch} for s in shares if s.seq not in have]
                for i in range(0, len(rows), 2000):
                    c.execute(Share.__table__.insert(), rows[i:i + 2000])
            return True

    def block(self, block_hash: str) -> LedgerBlock | None:
        with self.engine.connect() as c:
            r = c.execute(select(Block.__table__).where(Block.hash == block_hash)).first()
            return LedgerBlock.of(r) if r else None

    def window(self, block_hash: str) -> dict[str, float]:
        with self.engine.connect() as c:
            return {a: d for a, d in c.execute(select(WindowAmount.address, WindowAmount.difficulty).where(WindowAmount.block_hash == block_hash))}

    def credits(self, block_hash: str) -> list[CreditRow]:
        with self.engine.connect() as c:
            return [CreditRow(*r) for r in c.execute(select(Credit.address, Credit.kind, Credit.amount).where(Credit.block_hash == block_hash).order_by(Credit.address, Credit.kind))]

    def archived_shares(self, first_seq: int, last_seq: int) -> list[LoggedShare]:
        """Archived shares first_seq..last_seq in order; LookupError if any is missing."""
        with self.engine.connect() as c:
            rows = c.execute(select(Share.__table__).where(Share.seq.between(first_seq, last_seq)).order_by(Share.seq)).all()
        out = [LoggedShare(r.seq, r.address, r.worker, r.difficulty, r.share_difficulty, r.job_id, r.hash, r.time, r.is_block, r.batch) for r in rows]
        if len(out) != last_seq - first_seq + 1:
            raise LookupError(f"the archive holds {len(out)} of shares {first_seq}..{last_seq}")
        return out

    def blocks_to_check(self, tip_height: int, recheck_depth: int) -> list[LedgerBlock]:
        """Pending blocks, and orphaned ones still worth re-checking."""
        with self.engine.connect() as c:
            q = select(Block.__table__).where(or_(
                Block.status == BlockState.PENDING,
                and_(Block.status == BlockState.ORPHANED, Block.height > tip_height - recheck_depth))).order_by(Block.height, Block.hash)
            return [LedgerBlock.of(r) for r in c.execute(q)]

    def record_check(self, block_hash: str, status: str, confirmations: int, reason: str | None = None, *,
                     reward: int | None = None) -> None:
        """Note what the node said; change status between pending and
        orphaned (never to or from credited: see ``credit_block``)."""
        if status not in (BlockState.PENDING, BlockState.ORPHANED):
            raise LedgerError(f"record_check cannot set status {status}")
        now = self.clock()
        with self._write() as c:
            row = c.execute(select(Block.status, Block.orphan_count).where(Block.hash == block_hash)).first()
            if row is None:
                raise LedgerError(f"unknown block {block_hash}")
            if row.status == BlockState.CREDITED:
                raise LedgerError(f"block {block_hash} is credited already")
            values = {"status": status, "confirmations": confirmations, "checked_time": now, "status_reason": reason}
            if status == BlockState.ORPHANED and row.status != BlockState.ORPHANED:
                values["orphan_count"] = row.orphan_count + 1
            if reward is not None:
                values["reward"], values["reward_source"] = reward, "node"
            c.execute(update(Block).where(Block.hash == block_hash).values(**values))

    def credit_block(self, block_hash: str, *, reward: int, confirmations: int, fee_percent: str, fee_sat: int,
                     fee_address: str | None, credits: Sequence[tuple[str, str, int]], report_json: str, digest: str) -> bool:
        """Credit a mature block: its status, its credits ((address, kind,
        satoshis)), the balances and the audit rows, in one transaction.
        False (and nothing changes) if it is not pending."""
        if sum(v for _, k, v in credits if k == "share") + (fee_sat if any(k == "fee" for _, k, _ in credits) else 0) > reward:
            raise LedgerError(f"block {block_hash}: credits exceed the reward")
        if any(v < 0 for _, _, v in credits):
            raise LedgerError(f"block {block_hash}: negative credit")
        now = self.clock()
        with self._write() as c:
            row = c.execute(select(Block.status).where(Block.hash == block_hash).with_for_update()).first()
            if row is None:
                raise LedgerError(f"unknown block {block_hash}")
            if row.status != BlockState.PENDING:
                return False
            for address, kind, amount in credits:
                if amount == 0:
                    continue
                c.execute(Credit.__table__.insert().values(block_hash=block_hash, address=address, kind=kind, amount=amount, time=now))
                self._change(c, address, amount, "credit", credited=amount, block_hash=block_hash,
                             note="pool fee" if kind == "fee" else None)
            c.execute(update(Block).where(Block.hash == block_hash).values(
                status=BlockState.CREDITED, status_reason=None, confirmations=confirmations, checked_time=now, credited_time=now,
                reward=reward, reward_source="node", fee_percent=fee_percent, fee_sat=fee_sat, fee_address=fee_address,
                report_json=report_json, report_digest=digest))
            return True

    # -- payments -----------------------------------------------------------------------------------
    def payable(self, min_payout: int) -> list[tuple[str, int]]:
        with self.engine.connect() as c:
            return [(a, v) for a, v in c.execute(select(Balance.address, Balance.owed).where(
                and_(Balance.owed >= min_payout, Balance.hold_reason.is_(None))).order_by(Balance.address))]

    def unresolved_payments(self) -> list[PaymentRow]:
        with self.engine.connect() as c:
            rows = c.execute(select(Payment.__table__).where(Payment.status.in_((PaymentState.INTENT, PaymentState.SIGNED, PaymentState.SENT))).order_by(Payment.id)).all()
            return [PaymentRow.of(r) for r in rows]

    def create_intent(self, payees: Sequence[Payee], fee_payer: str) -> int:
        """Step 1: record what is about to be paid. Refused while another
        payment is an intent or signed but not yet sent (so the wallet's
        coins of an unsent transaction are never spent twice)."""
        if not payees:
            raise LedgerError("a payment needs payees")
        now = self.clock()
        with self._write() as c:
            open_ = c.execute(select(Payment.id).where(Payment.status.in_((PaymentState.INTENT, PaymentState.SIGNED)))).first()
            if open_:
                raise LedgerError(f"payment {open_.id} is not resolved yet")
            for p in payees:
                b = c.execute(select(Balance.owed, Balance.hold_reason).where(Balance.address == p.address)).first()
                if b is None or b.owed < p.owed or b.hold_reason:
                    raise LedgerError(f"{p.address} is not owed {p.owed}")
            pid = c.execute(Payment.__table__.insert().values(status=PaymentState.INTENT, fee_payer=fee_payer, created=now, updated=now,
                                                              total_sat=sum(p.owed for p in payees), broadcasts=0)).inserted_primary_key[0]
            c.execute(PaymentOutput.__table__.insert(), [{"payment_id": pid, "address": p.address, "owed": p.owed} for p in payees])
            return int(pid)

    def abandon(self, payment_id: int, reason: str) -> None:
        """An intent that was never signed and stored: drop it (no money moved)."""
        with self._write() as c:
            r = c.execute(select(Payment.status).where(Payment.id == payment_id)).first()
            if r is None or r.status != PaymentState.INTENT:
                raise LedgerError(f"payment {payment_id} is not an intent")
            c.execute(update(Payment).where(Payment.id == payment_id).values(status=PaymentState.ABANDONED, error=reason, updated=self.clock()))

    def store_signed(self, payment_id: int, *, raw_tx: str, txid: str, fee_sat: int, outputs: Sequence[tuple[str, int, int]]) -> None:
        """Step 3: the signed transaction and the debits, in one transaction.
        ``outputs``: (address, amount in the transaction, vout)."""
        now = self.clock()
        with self._write() as c:
            r = c.execute(select(Payment.status).where(Payment.id == payment_id)).first()
            if r is None or r.status != PaymentState.INTENT:
                raise LedgerError(f"payment {payment_id} is not an intent")
            owed = {o.address: o.owed for o in c.execute(select(PaymentOutput.address, PaymentOutput.owed).where(PaymentOutput.payment_id == payment_id))}
            if set(owed) != {a for a, _, _ in outputs}:
                raise LedgerError(f"payment {payment_id}: the transaction's payees differ from the intent")
            for address, amount, vout in outputs:
                if amount > owed[address] or amount <= 0:
                    raise LedgerError(f"payment {payment_id}: {address} would get {amount}, owed {owed[address]}")
                self._change(c, address, -owed[address], "payment", paid=owed[address], payment_id=payment_id, note=txid)
                c.execute(update(PaymentOutput).where(and_(PaymentOutput.payment_id == payment_id, PaymentOutput.address == address))
                          .values(amount=amount, vout=vout))
            c.execute(update(Payment).where(Payment.id == payment_id).values(
                status=PaymentState.SIGNED, raw_tx=raw_tx, txid=txid, fee_sat=fee_sat, signed_time=now, updated=now))

    def note_broadcast(self, payment_id: int, error: str | None = None) -> None:
        with self._write() as c:
            c.execute(update(Payment).where(Payment.id == payment_id).values(broadcasts=Payment.broadcasts + 1, error=error, updated=self.clock()))

    def mark_sent(self, payment_id: int) -> None:
        now = self.clock()
        with self._write() as c:
            r = c.execute(select(Payment.status).where(Payment.id == payment_id)).first()
            if r is None or r.status not in UNRESOLVED:
                raise LedgerError(f"payment {payment_id} cannot be marked sent")
            if r.status == PaymentState.SIGNED:
                c.execute(update(Payment).where(Payment.id == payment_id).values(status=PaymentState.SENT, sent_time=now, error=None, updated=now))

    def mark_confirmed(self, payment_id: int, confirmations: int, block_hash: str | None) -> None:
        now = self.clock()
        with self._write() as c:
            r = c.execute(select(Payment.status, Payment.sent_time).where(Payment.id == payment_id)).first()
            if r is None or r.status not in UNRESOLVED:
                raise LedgerError(f"payment {payment_id} cannot be confirmed")
            c.execute(update(Payment).where(Payment.id == payment_id).values(
                status=PaymentState.CONFIRMED, confirmations=confirmations, block_hash=block_hash, confirmed_time=now,
                sent_time=r.sent_time or now, error=None, updated=now))

    def set_payment_confirmations(self, payment_id: int, confirmations: int, block_hash: str | None) -> None:
        with self._write() as c:
            c.execute(update(Payment).where(Payment.id == payment_id).values(confirmations=confirmations, block_hash=block_hash, updated=self.clock()))

    def mark_failed(self, payment_id: int, reason: str) -> None:
        """The stored transaction can never confirm: give every debit back."""
        now = self.clock()
        with self._write() as c:
            r = c.execute(select(Payment.status, Payment.txid).where(Payment.id == payment_id)).first()
            if r is None or r.status not in UNRESOLVED:
                raise LedgerError(f"payment {payment_id} cannot fail")
            for o in c.execute(select(PaymentOutput.address, PaymentOutput.owed).where(PaymentOutput.payment_id == payment_id)).all():
                self._change(c, o.address, o.owed, "refund", paid=-o.owed, payment_id=payment_id, note=reason)
            c.execute(update(Payment).where(Payment.id == payment_id).values(status=PaymentState.FAILED, error=reason, updated=now))

    def hold(self, address: str, reason: str) -> None:
        """Set an address aside (the wallet rejects it); its balance stays owed."""
        now = self.clock()
        with self._write() as c:
            if c.execute(select(Balance.address).where(Balance.address == address)).first() is None:
                raise LedgerError(f"no balance for {address}")
            c.execute(update(Balance).where(Balance.address == address).values(hold_reason=reason, hold_time=now, updated=now))

    def release_hold(self, address: str) -> bool:
        with self._write() as c:
            res = c.execute(update(Balance).where(and_(Balance.address == address, Balance.hold_reason.is_not(None)))
                            .values(hold_reason=None, hold_time=None, updated=self.clock()))
            return res.rowcount > 0

    # -- checks ----------------------------------------------------------------------------------------
    def check_invariants(self) -> list[str]:
        """Every balance agrees with its credits, payments and audit trail."""
        problems = []
        with self.engine.connect() as c:
            credited = dict(c.execute(select(Credit.address, func.sum(Credit.amount)).group_by(Credit.address)).all())
            paid = dict(c.execute(select(PaymentOutput.address, func.sum(PaymentOutput.owed)).join(Payment, Payment.id == PaymentOutput.payment_id)
                                  .where(Payment.status.in_((*UNRESOLVED, PaymentState.CONFIRMED))).group_by(PaymentOutput.address)).all())
            audit = dict(c.execute(select(LedgerEntry.address, func.sum(LedgerEntry.delta)).group_by(LedgerEntry.address)).all())
            balances = c.execute(select(Balance.address, Balance.owed, Balance.credited, Balance.paid)).all()
            for a, owed, cr, pd in balances:
                if owed != cr - pd:
                    problems.append(f"{a}: owed {owed} != credited {cr} - paid {pd}")
                if cr != int(credited.get(a) or 0):
                    problems.append(f"{a}: credited {cr}, credits add up to {credited.get(a)}")
                if pd != int(paid.get(a) or 0):
                    problems.append(f"{a}: paid {pd}, payments add up to {paid.get(a)}")
                if owed != int(audit.get(a) or 0):
                    problems.append(f"{a}: owed {owed}, audit trail adds up to {audit.get(a)}")
            for a in set(credited) - {b[0] for b in balances}:
                problems.append(f"{a}: credits but no balance")
            for bh, reward, fee in c.execute(select(Block.hash, Block.reward, Block.fee_sat).where(Block.status == BlockState.CREDITED)).all():
                s = c.execute(select(func.sum(Credit.amount)).where(and_(Credit.block_hash == bh, Credit.kind == "share"))).scalar() or 0
                if s + (fee or 0) != reward:
                    problems.append(f"block {bh}: credits {s} + fee {fee} != reward {reward}")
            for bh, in c.execute(select(Block.hash).where(Block.status != BlockState.CREDITED)).all():
                if c.execute(select(Credit.id).where(Credit.block_hash == bh)).first():
                    problems.append(f"block {bh} is not credited but has credits")
        return problems
