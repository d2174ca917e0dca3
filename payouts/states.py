"""The ledger's status words, one meaning each across the pool and the
ledger. ``confirmed`` is "in the main chain" (the pool's found-block status,
a payment's transaction); a block whose reward went to the miners is
``credited``. Pure: the maturity decisions use them without SQLAlchemy; the
schema enforces them (``models.status_check``, migration 0002)."""
from __future__ import annotations

from enum import StrEnum


class BlockState(StrEnum):
    """``blocks.status``: where a found block stands in the ledger."""

    PENDING = "pending"  # not mature yet, or not yet known to be orphaned
    CREDITED = "credited"  # mature in the main chain, its reward credited to the miners (final)
    ORPHANED = "orphaned"  # not in the main chain; re-checked for a while


class PaymentState(StrEnum):
    """``payments.status``: the steps of a crash-safe payment."""

    INTENT = "intent"  # recorded, nothing signed
    SIGNED = "signed"  # the signed transaction and the debits stored
    SENT = "sent"  # the node took it
    CONFIRMED = "confirmed"  # in the main chain, deep enough
    FAILED = "failed"  # can never confirm: the debits were given back
    ABANDONED = "abandoned"  # an intent dropped before signing


# a payment in one of these holds miners' money that is neither owed nor paid for sure
UNRESOLVED = (PaymentState.SIGNED, PaymentState.SENT)
