"""The ledger for code on the reactor. Every method returns a Deferred and
runs the blocking :class:`~hashcoop.payouts.ledger.Ledger` method on the
payout process's thread pool: the thread hop lives here, once, as in
buildbot's DB connector, not at every call site. The blocking ``Ledger``
stays for the command line and for tests, which have no reactor."""
from __future__ import annotations

from typing import Iterable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from hashcoop.payouts.ledger import BlockSnapshot, Ledger
from hashcoop.payouts.payments import Payee
from hashcoop.pool.core.events import LoggedShare


class LedgerConnector:
    def __init__(self, ledger: Ledger, reactor, threads):
        self.ledger = ledger
        self._reactor = reactor
        self._threads = threads

    @property
    def holder(self) -> str:
        return self.ledger.holder

    @property
    def engine(self):
        return self.ledger.engine

    def run(self, fn, *args, **kw) -> Deferred:
        """``fn(*args, **kw)`` on the ledger's thread pool (the read API's
        functions, which take the engine)."""
        return deferToThreadPool(self._reactor, self._threads, fn, *args, **kw)

    # -- the lease
    def acquire_lease(self, ttl: float) -> Deferred:  # -> bool
        return self.run(self.ledger.acquire_lease, ttl)

    def release_lease(self) -> Deferred:
        return self.run(self.ledger.release_lease)

    def lease(self) -> Deferred:  # -> LeaseRow | None
        return self.run(self.ledger.lease)

    # -- blocks
    def known_blocks(self, hashes: Iterable[str]) -> Deferred:  # -> set[str]
        return self.run(self.ledger.known_blocks, list(hashes))

    def import_block(self, snap: BlockSnapshot, shares: Sequence[LoggedShare], *, reward: int, reward_source: str) -> Deferred:
        return self.run(self.ledger.import_block, snap, shares, reward=reward, reward_source=reward_source)

    def block(self, block_hash: str) -> Deferred:  # -> LedgerBlock | None
        return self.run(self.ledger.block, block_hash)

    def window(self, block_hash: str) -> Deferred:  # -> dict[str, float]
        return self.run(self.ledger.window, block_hash)

    def blocks_to_check(self, tip_height: int, recheck_depth: int) -> Deferred:  # -> list[LedgerBlock]
        return self.run(self.ledger.blocks_to_check, tip_height, recheck_depth)

    def record_check(self, block_hash: str, status, confirmations: int, reason: str | None = None, *,
                     reward: int | None = None) -> Deferred:
        return self.run(self.ledger.record_check, block_hash, status, confirmations, reason, reward=reward)

    def credit_block(self, block_hash: str, *, reward: int, confirmations: int, fee_percent: str, fee_sat: int,
                     fee_address: str | None, credits: Sequence[tuple[str, str, int]], report_json: str,
                     digest: str) -> Deferred:  # -> bool
        return self.run(self.ledger.credit_block, block_hash, reward=reward, confirmations=confirmations,
                        fee_percent=fee_percent, fee_sat=fee_sat, fee_address=fee_address, credits=credits,
                        report_json=report_json, digest=digest)

    # -- payments
    def payable(self, min_payout: int) -> Deferred:  # -> list[tuple[str, int]]
        return self.run(self.ledger.payable, min_payout)

    def unresolved_payments(self) -> Deferred:  # -> list[PaymentRow]
        return self.run(self.ledger.unresolved_payments)

    def create_intent(self, payees: Sequence[Payee], fee_payer: str) -> Deferred:  # -> int
        return self.run(self.ledger.create_intent, payees, fee_payer)

    def abandon(self, payment_id: int, reason: str) -> Deferred:
        return self.run(self.ledger.abandon, payment_id, reason)

    def store_signed(self, payment_id: int, *, raw_tx: str, txid: str, fee_sat: int,
                     outputs: Sequence[tuple[str, int, int]]) -> Deferred:
        return self.run(self.ledger.store_signed, payment_id, raw_tx=raw_tx, txid=txid, fee_sat=fee_sat, outputs=outputs)

    def note_broadcast(self, payment_id: int, error: str | None = None) -> Deferred:
        return self.run(self.ledger.note_broadcast, payment_id, error)

    def mark_sent(self, payment_id: int) -> Deferred:
        return self.run(self.ledger.mark_sent, payment_id)

    def mark_confirmed(self, payment_id: int, confirmations: int, block_hash: str | None) -> Deferred:
        return self.run(self.ledger.mark_confirmed, payment_id, confirmations, block_hash)

    def set_payment_confirmations(self, payment_id: int, confirmations: int, block_hash: str | None) -> Deferred:
        return self.run(self.ledger.set_payment_confirmations, payment_id, confirmations, block_hash)

    def mark_failed(self, payment_id: int, reason: str) -> Deferred:
        return self.run(self.ledger.mark_failed, payment_id, reason)

    def hold(self, address: str, reason: str) -> Deferred:
        return self.run(self.ledger.hold, address, reason)
