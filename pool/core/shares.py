"""Share validation. Pure: no I/O, no clock; it returns a result and the
caller decides what to do (reply, account, submit a block).

Reject reasons are domain values (the ``Reject`` constants); Stratum error
codes are assigned only at the edge, in ``stratum/errors.py``.
"""
from __future__ import annotations

import re
from hashlib import sha256
from struct import Struct
from typing import NamedTuple

from hashcoop.pool.core.btc.target import DIFF1_TARGET
from hashcoop.pool.core.jobs import Job

MAX_NTIME_FUTURE = 7000  # seconds past the job's ntime (Bitcoin Core allows 2 h past its clock)


class Reject:
    UNKNOWN_JOB = "unknown-job"
    STALE_JOB = "stale-job"
    BAD_EXTRANONCE2 = "bad-extranonce2"
    BAD_NTIME = "bad-ntime"
    BAD_NONCE = "bad-nonce"
    BAD_VERSION = "bad-version"
    DUPLICATE = "duplicate"
    HIGH_HASH = "high-hash"
    UNAUTHORIZED = "unauthorized"
    NOT_SUBSCRIBED = "not-subscribed"
    BAD_PARAMS = "bad-params"

    ALL = (
        UNKNOWN_JOB, STALE_JOB, BAD_EXTRANONCE2, BAD_NTIME, BAD_NONCE, BAD_VERSION,
        DUPLICATE, HIGH_HASH, UNAUTHORIZED, NOT_SUBSCRIBED, BAD_PARAMS,
    )


class ShareResult:
    """``ok`` with the credited difficulty, or a reject ``reason``."""

    __slots__ = ("ok", "reason", "hash_int", "credit", "is_block", "header", "coinbase")

    def __init__(self, ok, reason, hash_int=0, credit=0.0, is_block=False, header=b"", coinbase=b""):
        self.ok = ok
        self.reason = reason
        self.hash_int = hash_int
        self.credit = credit
        self.is_block = is_block
        self.header = header
        self.coinbase = coinbase

    @property
    def hash(self) -> bytes:
        """Header hash, internal byte order."""
        return self.hash_int.to_bytes(32, "little")

    @property
    def hash_hex(self) -> str:
        return self.hash_int.to_bytes(32, "big").hex()

    @property
    def share_difficulty(self) -> float:
        return DIFF1_TARGET / self.hash_int if self.hash_int else float("inf")

    def __repr__(self) -> str:
        return f"ShareResult(ok={self.ok}, reason={self.reason!r}, credit={self.credit}, is_block={self.is_block})"


_REJECTS = {r: ShareResult(False, r) for r in Reject.ALL}


class Step(NamedTuple):
    """A difficulty in force from a job (or job alias) on: what a share on
    that job, or on a later one sent before the next step, is checked
    against."""

    seq: int  # the job's sequence number
    alias: int  # 0 for the job as broadcast, else the alias it was re-sent under
    difficulty: float
    target: int


class Submit(NamedTuple):
    """One ``mining.submit`` as the share it claims to be: the miner's
    ``extranonce1`` and the version bits it may roll (``version_mask``), the
    job alias its job id names, and the fields it sent, as they came off the wire. ``validate_share`` checks
    those: exact sizes and plain hex only (no ``0x``, no spaces, no padding)."""

    extranonce1: bytes
    extranonce2: object
    ntime: object
    nonce: object
    version_bits: object = None  # None without version rolling
    version_mask: int = 0
    alias: int = 0  # the job-id alias the submit names (its own coinbase job tag); 0 for the job as broadcast


def rejected(reason: str) -> ShareResult:
    return _REJECTS[reason]


_join = b"".join
_is_hex8 = re.compile(r"[0-9a-fA-F]{8}").fullmatch
# NerdMiner sends the nonce as Arduino's String(nonce, HEX): no leading zeros.
_is_nonce = re.compile(r"[0-9a-fA-F]{1,8}").fullmatch
_pack_tail = Struct("<III").pack
_pack_version = Struct("<I").pack
_DUP_KEY_MASK = (1 << 64) - 1


def validate_share(job: Job, submit: Submit, step: Step, extranonce2_size: int, stale: bool = False) -> ShareResult:
    """Check one ``mining.submit`` against its job.

    ``step`` holds the difficulty (and target) the job was sent to this
    miner with. Duplicates are keyed on the header
    hash, so the same share in another encoding is still a duplicate, and two
    shares differing only in rolled version bits are distinct.

    A hash that meets the network target is a block even when it misses the
    share target (possible when the share difficulty exceeds the network's,
    as on regtest); it is then credited only the difficulty it achieved.

    A ``stale`` share (its job was replaced by a new tip) is checked all the
    same, without duplicate detection: it is rejected ``stale-job``, but one
    that meets the network target comes back with ``is_block``, the header
    and the coinbase, so the caller can submit it if its previous block is
    the tip again, or record the lost block.
    """
    extranonce1, extranonce2, ntime, nonce, version_bits, version_mask, alias = submit
    difficulty, share_target = step.difficulty, step.target
    if type(extranonce2) is not str or len(extranonce2) != 2 * extranonce2_size:
        return _REJECTS[Reject.BAD_EXTRANONCE2]
    try:
        en2 = bytes.fromhex(extranonce2)
    except ValueError:
        return _REJECTS[Reject.BAD_EXTRANONCE2]
    if len(en2) != extranonce2_size:  # fromhex skips whitespace: plain hex digits only
        return _REJECTS[Reject.BAD_EXTRANONCE2]
    if type(ntime) is not str or not _is_hex8(ntime):
        return _REJECTS[Reject.BAD_NTIME]
    t = int(ntime, 16)
    if t < job.mintime or t > job.ntime + MAX_NTIME_FUTURE:
        return _REJECTS[Reject.BAD_NTIME]
    if type(nonce) is not str or not _is_nonce(nonce):
        return _REJECTS[Reject.BAD_NONCE]
    version = job.version
    if version_bits is not None:
        if type(version_bits) is not str or not _is_hex8(version_bits):
            return _REJECTS[Reject.BAD_VERSION]
        vb = int(version_bits, 16)
        outside = vb & ~version_mask & 0xFFFFFFFF
        # BIP310 sends just the rolled bits; some firmware sends the whole
        # rolled version. Either way no bit outside the mask may differ
        # from the job's version.
        if outside and outside != (version & ~version_mask & 0xFFFFFFFF):
            return _REJECTS[Reject.BAD_VERSION]
        version = (version & ~version_mask) | (vb & version_mask)
    coinbase = _join((job.coinb1_for(alias) if alias else job.coinb1, extranonce1, en2, job.coinb2))
    h = sha256(sha256(coinbase).digest()).digest()
    for step in job.branch:
        h = sha256(sha256(h + step).digest()).digest()
    header = _join((_pack_version(version), job.prevhash, h, _pack_tail(t, job.bits, int(nonce, 16))))
    hash_int = int.from_bytes(sha256(sha256(header).digest()).digest(), "little")
    is_block = hash_int <= job.target
    if hash_int > share_target:
        if not is_block:
            return _REJECTS[Reject.STALE_JOB if stale else Reject.HIGH_HASH]
        difficulty = DIFF1_TARGET / hash_int
    if stale:
        if not is_block:
            return _REJECTS[Reject.STALE_JOB]
        return ShareResult(False, Reject.STALE_JOB, hash_int, difficulty, True, header, coinbase)
    seen = job.seen
    key = hash_int & _DUP_KEY_MASK
    if seen is not None and not seen.add(key):
        return _REJECTS[Reject.DUPLICATE]
    return ShareResult(True, None, hash_int, difficulty, is_block, header, coinbase)
