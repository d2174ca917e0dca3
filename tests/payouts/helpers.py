"""Builders for ledger tests."""
from __future__ import annotations

import hashlib

from hashcoop.payouts.ledger import BlockSnapshot
from hashcoop.pool.core.events import LoggedShare


class FakeClock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def h(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def shares_for(rows, first_seq: int = 1) -> list[LoggedShare]:
    """rows: (address, difficulty) in order; the last is the block share."""
    out = []
    for i, (a, d) in enumerate(rows):
        seq = first_seq + i
        out.append(LoggedShare(seq, a, "w", float(d), float(d) * 2, "j1", h(f"share{seq}"), 1000.0 + seq,
                               i == len(rows) - 1, "run:1"))
    return out


def snapshot_for(block_hash: str, height: int, shares: list[LoggedShare], n: float | None = None) -> BlockSnapshot:
    """A snapshot over all of ``shares`` (the window takes them all)."""
    amounts: dict[str, float] = {}
    for s in shares:
        amounts[s.address] = amounts.get(s.address, 0.0) + s.difficulty
    total = 0.0
    for s in shares:
        total += s.difficulty
    first = shares[0].seq
    last = shares[-1]
    return BlockSnapshot(hash=block_hash, height=height, seq=last.seq, log_from=first - first % 1024 if first % 1024 == 0 else first,
                         floor_seq=0, first_seq=first, first_credit=shares[0].difficulty, partial=False,
                         n_target=n if n is not None else total * 2, total=total, complete=False,
                         network_difficulty=(n or total * 2) / 2, window_factor=2.0, window_difficulty=0.0, entry_shares=1024,
                         time=last.time, created=last.time + 0.1, finder_address=last.address, finder_worker="w", amounts=amounts)
