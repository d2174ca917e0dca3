"""``--persist``: the devnode's chain on disk, as an append-only journal.

One line per event, in the order they happened::

    block <hex of the block as stored>
    invalidate <block hash>
    reconsider <block hash>

Replaying the journal through a fresh :class:`~.chain.Chain` rebuilds the
same block tree, active chain and UTXO set (validation is deterministic;
only time-too-new is skipped while loading). A torn last line (a crash
mid-write) is ignored. The mempool is not kept: the synthetic source
refills it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from hashcoop.pool.core.btc.hashing import hash_to_hex, hex_to_hash
from hashcoop.pool.tools.devnode.chain import BlockInvalidated, BlockReconsidered, BlockStored, Chain, ChainError
from hashcoop.pool.tools.devnode.consensus import DecodeError, decode_block_hex

log = logging.getLogger("hashcoop.devnode.store")

JOURNAL_NAME = "devnode-chain.journal"


class ChainJournal:
    """Appends chain events to ``path``; :meth:`replay` reads them back."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fh = None

    def replay(self, chain: Chain) -> int:
        """Feed every journalled event to ``chain``; returns how many."""
        if not self.path.exists():
            return 0
        count = 0
        chain.loading = True
        try:
            with self.path.open("r", encoding="ascii") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.endswith("\n"):
                        log.warning("%s:%d: ignoring a torn last line", self.path, lineno)
                        break
                    kind, _, arg = line.strip().partition(" ")
                    try:
                        self._apply(chain, kind, arg)
                    except (DecodeError, ValueError, ChainError) as e:
                        log.warning("%s:%d: skipping %s record: %s", self.path, lineno, kind, e)
                        continue
                    count += 1
        finally:
            chain.loading = False
        return count

    @staticmethod
    def _apply(chain: Chain, kind: str, arg: str) -> None:
        if kind == "block":
            block = decode_block_hex(arg)
            accepted, _ = chain.process_new_block(block)
            if not accepted and chain.lookup(block.hash) is None:
                raise ValueError(f"block {hash_to_hex(block.hash)} no longer accepted")
        elif kind in ("invalidate", "reconsider"):
            idx = chain.lookup(hex_to_hash(arg))
            if idx is None:
                raise ValueError(f"unknown block {arg}")
            if kind == "invalidate":
                chain.invalidate_block(idx)
            else:
                chain.reconsider_block(idx)
        else:
            raise ValueError(f"unknown record {kind!r}")

    def attach(self, chain: Chain) -> None:
        """Journal ``chain``'s events from now on."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="ascii")
        chain.listeners.append(self._on_event)

    def _on_event(self, event: object) -> None:
        if self._fh is None:
            return
        if isinstance(event, BlockStored):
            self._fh.write(f"block {event.block.raw.hex()}\n")
        elif isinstance(event, BlockInvalidated):
            self._fh.write(f"invalidate {hash_to_hex(event.hash)}\n")
        elif isinstance(event, BlockReconsidered):
            self._fh.write(f"reconsider {hash_to_hex(event.hash)}\n")
        else:
            return
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
