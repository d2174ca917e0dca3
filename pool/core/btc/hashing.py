"""Double SHA-256 and merkle trees, in Bitcoin's internal byte order.

Every hash here is ``bytes`` in internal order (the order in which it appears
in serialized headers and transactions). The hex that RPC and block explorers
show is the reverse: use :func:`hash_to_hex` / :func:`hex_to_hash`.
"""
from __future__ import annotations

from hashlib import sha256
from typing import Iterable, Sequence


def sha256d(data: bytes) -> bytes:
    return sha256(sha256(data).digest()).digest()


def hash_to_hex(h: bytes) -> str:
    """Internal byte order -> the display hex used by RPC and explorers."""
    return h[::-1].hex()


def hex_to_hash(s: str) -> bytes:
    """Display hex (RPC) -> internal byte order."""
    b = bytes.fromhex(s)
    if len(b) != 32:
        raise ValueError("a hash is 32 bytes")
    return b[::-1]


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """Merkle root of a list of txids (internal order), as in the block header.

    Odd levels duplicate their last element, as Bitcoin does.
    """
    if not hashes:
        raise ValueError("a merkle tree needs at least one leaf")
    level = list(hashes)
    while len(level) > 1:
        if len(level) & 1:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def merkle_branch(others: Sequence[bytes]) -> list[bytes]:
    """The Stratum merkle branch for leaf 0 (the coinbase).

    ``others`` are the txids of every transaction after the coinbase, in block
    order. Folding the coinbase txid with each element in turn,
    ``h = sha256d(h + step)``, gives the merkle root.
    """
    branch: list[bytes] = []
    # Level 0 is [coinbase placeholder] + others; we only track the siblings
    # on the path of index 0, so the placeholder never needs a value.
    level: list[bytes | None] = [None, *others]
    while len(level) > 1:
        if len(level) & 1:
            level.append(level[-1])
        branch.append(level[1])  # type: ignore[arg-type]
        nxt: list[bytes | None] = [None]
        for i in range(2, len(level), 2):
            nxt.append(sha256d(level[i] + level[i + 1]))  # type: ignore[operator]
        level = nxt
    return branch


def fold_branch(leaf: bytes, branch: Iterable[bytes]) -> bytes:
    """Merkle root from the coinbase txid and a Stratum merkle branch."""
    h = leaf
    for step in branch:
        h = sha256(sha256(h + step).digest()).digest()
    return h
