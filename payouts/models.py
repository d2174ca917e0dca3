"""The payout ledger's tables (SQLAlchemy 2.x). Integer satoshis everywhere;
difficulties are IEEE doubles exactly as the Redis accounting stored them;
times are Unix seconds. The schema is created and upgraded by the Alembic
migrations in ``payouts/migrations`` (``hashcoop payouts migrate``), never
by ``create_all`` in production code.

Statuses are ``StrEnum`` values (``states.BlockState``,
``states.PaymentState``), and a CHECK constraint holds each column to them
(migration 0002). Each word means one thing across the pool and the ledger:
``confirmed`` is "in the main chain" (the pool's found-block status, a
payment's transaction); a block whose reward went to the miners is
``credited``.

* ``blocks.status``: ``pending`` (found, not yet mature or not yet known to
  be orphaned), ``credited`` (mature in the main chain; credited, once),
  ``orphaned`` (not in the main chain; credits nothing; re-checked for a
  while, a reorg can bring it back to ``pending``).
* ``payments.status``: ``intent`` (recorded, nothing signed), ``signed``
  (signed transaction and the debits stored), ``sent`` (the node took it),
  ``confirmed`` (in the main chain, deep enough), ``failed`` (can never confirm: the debits
  were given back), ``abandoned`` (an intent dropped before signing).
"""
from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hashcoop.payouts.states import BlockState, PaymentState

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


def status_check(states: type[StrEnum]) -> CheckConstraint:
    """The schema's own rule: ``status`` holds one of ``states``."""
    return CheckConstraint("status IN (" + ", ".join(f"'{v}'" for v in states) + ")", name="status")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


Sat = BigInteger  # satoshis


class Block(Base):
    __tablename__ = "blocks"
    __table_args__ = (status_check(BlockState),)

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    height: Mapped[int] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=BlockState.PENDING)
    status_reason: Mapped[str | None] = mapped_column(Text)
    reward: Mapped[int] = mapped_column(Sat)  # coinbase value paying the pool (node's, once it was seen)
    reward_source: Mapped[str] = mapped_column(String(8))  # "node" or "pool" (the pool's claim, node not asked yet)
    finder_address: Mapped[str] = mapped_column(String(128))
    finder_worker: Mapped[str] = mapped_column(String(128))
    found_time: Mapped[float] = mapped_column(Double)
    imported_time: Mapped[float] = mapped_column(Double)
    checked_time: Mapped[float | None] = mapped_column(Double)
    confirmations: Mapped[int | None] = mapped_column(Integer)
    credited_time: Mapped[float | None] = mapped_column(Double)
    orphan_count: Mapped[int] = mapped_column(Integer, default=0)
    # the PPLNS window snapshot (docs/redis.md, "Snapshot record")
    seq: Mapped[int] = mapped_column(BigInteger)
    log_from: Mapped[int] = mapped_column(BigInteger)
    floor_seq: Mapped[int] = mapped_column(BigInteger)
    first_seq: Mapped[int | None] = mapped_column(BigInteger)
    first_credit: Mapped[float | None] = mapped_column(Double)
    partial: Mapped[bool] = mapped_column(Boolean)
    n_target: Mapped[float] = mapped_column(Double)
    window_total: Mapped[float] = mapped_column(Double)
    complete: Mapped[bool] = mapped_column(Boolean)
    network_difficulty: Mapped[float] = mapped_column(Double)
    window_factor: Mapped[float] = mapped_column(Double)
    window_difficulty: Mapped[float] = mapped_column(Double)
    entry_shares: Mapped[int] = mapped_column(Integer)
    share_time: Mapped[float] = mapped_column(Double)
    snapshot_created: Mapped[float] = mapped_column(Double)
    # the payout report, fixed when the block is credited
    fee_percent: Mapped[str | None] = mapped_column(String(32))
    fee_sat: Mapped[int | None] = mapped_column(Sat)
    fee_address: Mapped[str | None] = mapped_column(String(128))
    report_json: Mapped[str | None] = mapped_column(Text)
    report_digest: Mapped[str | None] = mapped_column(String(64))


class WindowAmount(Base):
    """A block's PPLNS window aggregated per address (the snapshot's amounts)."""

    __tablename__ = "block_window"

    block_hash: Mapped[str] = mapped_column(ForeignKey("blocks.hash"), primary_key=True)
    address: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)
    difficulty: Mapped[float] = mapped_column(Double)


class Share(Base):
    """The durable share log, archived from Redis: every share some block's
    window needs to be recomputed (``hashcoop payouts verify``)."""

    __tablename__ = "shares"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    address: Mapped[str] = mapped_column(String(128))
    worker: Mapped[str] = mapped_column(String(128))
    difficulty: Mapped[float] = mapped_column(Double)
    share_difficulty: Mapped[float] = mapped_column(Double)
    job_id: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    time: Mapped[float] = mapped_column(Double)
    is_block: Mapped[bool] = mapped_column(Boolean)
    batch: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_shares_address_seq", "address", "seq"),)


class Credit(Base):
    __tablename__ = "credits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    block_hash: Mapped[str] = mapped_column(ForeignKey("blocks.hash"), index=True)
    address: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # "share" or "fee"
    amount: Mapped[int] = mapped_column(Sat)
    time: Mapped[float] = mapped_column(Double)

    __table_args__ = (UniqueConstraint("block_hash", "address", "kind"),)


class Balance(Base):
    __tablename__ = "balances"

    address: Mapped[str] = mapped_column(String(128), primary_key=True)
    owed: Mapped[int] = mapped_column(Sat, default=0)  # credited, not yet in a payment
    credited: Mapped[int] = mapped_column(Sat, default=0)  # all credits ever
    paid: Mapped[int] = mapped_column(Sat, default=0)  # debited into payments (net of refunds)
    hold_reason: Mapped[str | None] = mapped_column(Text)  # set aside: the wallet rejects the address
    hold_time: Mapped[float | None] = mapped_column(Double)
    updated: Mapped[float] = mapped_column(Double)


class Payment(Base):
    __tablename__ = "payments"

    __table_args__ = (status_check(PaymentState),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    fee_payer: Mapped[str] = mapped_column(String(8))
    created: Mapped[float] = mapped_column(Double)
    updated: Mapped[float] = mapped_column(Double)
    txid: Mapped[str | None] = mapped_column(String(64), unique=True)
    raw_tx: Mapped[str | None] = mapped_column(Text)
    fee_sat: Mapped[int | None] = mapped_column(Sat)
    total_sat: Mapped[int] = mapped_column(Sat)  # sum of the debits
    error: Mapped[str | None] = mapped_column(Text)
    signed_time: Mapped[float | None] = mapped_column(Double)
    sent_time: Mapped[float | None] = mapped_column(Double)
    confirmed_time: Mapped[float | None] = mapped_column(Double)
    block_hash: Mapped[str | None] = mapped_column(String(64))
    confirmations: Mapped[int | None] = mapped_column(Integer)
    broadcasts: Mapped[int] = mapped_column(Integer, default=0)


class PaymentOutput(Base):
    __tablename__ = "payment_outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    address: Mapped[str] = mapped_column(String(128), index=True)
    owed: Mapped[int] = mapped_column(Sat)  # debited from the balance
    amount: Mapped[int | None] = mapped_column(Sat)  # what the transaction pays (owed minus a fee share)
    vout: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (UniqueConstraint("payment_id", "address"),)


class LedgerEntry(Base):
    """The audit trail: one row per balance change, never updated."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[float] = mapped_column(Double)
    address: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # credit, payment, refund
    delta: Mapped[int] = mapped_column(Sat)
    balance_after: Mapped[int] = mapped_column(Sat)
    block_hash: Mapped[str | None] = mapped_column(String(64))
    payment_id: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)


class Lease(Base):
    """Single-instance lease: the payout process that holds the row acts."""

    __tablename__ = "lease"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired: Mapped[float] = mapped_column(Double)
    expires: Mapped[float] = mapped_column(Double)
