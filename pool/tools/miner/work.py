"""The miner's pure core: Stratum job -> coinbase, merkle root, header; share
targets from (fractional) difficulty; version rolling; share construction and
checking. No I/O here.

Byte orders follow docs/ARCHITECTURE.md: the notify prevhash is the header's
32 bytes with each 4-byte word byte-swapped; version/nbits/ntime in notify and
ntime/nonce in submit are big-endian hex of the integer; extranonce2 is the
raw bytes that go into the coinbase, as hex.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Sequence

from hashcoop.pool.core.btc.block import build_header
from hashcoop.pool.core.btc.hashing import fold_branch, sha256d
from hashcoop.pool.core.btc.target import bits_to_target, difficulty_to_target

# The version bits BIP320 leaves free for rolling; what cgminer/ESP-Miner ask for.
DEFAULT_VERSION_MASK = 0x1FFFE000
NONCE_SPACE = 1 << 32


class NotifyError(ValueError):
    """A ``mining.notify`` whose params cannot be a job."""


def _hex_bytes(value, name: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise NotifyError(f"{name}: not a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise NotifyError(f"{name}: not hex") from None
    if size is not None and len(raw) != size:
        raise NotifyError(f"{name}: {len(raw)} bytes, expected {size}")
    return raw


def _hex_u32(value, name: str) -> int:
    return int.from_bytes(_hex_bytes(value, name, 4), "big")


def stratum_prevhash_to_header(prevhash_hex: str) -> bytes:
    """notify prevhash hex -> the 32 prevhash bytes of the header (internal
    order): undo the per-4-byte-word byte swap."""
    raw = _hex_bytes(prevhash_hex, "prevhash", 32)
    return b"".join(raw[i:i + 4][::-1] for i in range(0, 32, 4))


@dataclass(frozen=True, slots=True)
class Job:
    """One ``mining.notify``, plus what was in force on the connection when it
    arrived: share difficulty and extranonce1/extranonce2 size (both apply
    from the next job when the pool changes them)."""

    job_id: str
    prevhash: bytes  # header order
    coinb1: bytes
    coinb2: bytes
    merkle_branch: tuple[bytes, ...]
    version: int
    nbits: int
    ntime: int
    clean: bool
    difficulty: float
    extranonce1: bytes
    extranonce2_size: int
    received_at: float = 0.0

    @classmethod
    def from_notify(cls, params: Sequence, *, difficulty: float, extranonce1: bytes,
                    extranonce2_size: int, received_at: float = 0.0) -> "Job":
        """Build a job from notify params; NotifyError if they are malformed."""
        if not isinstance(params, (list, tuple)) or len(params) < 9:
            raise NotifyError("mining.notify needs 9 params")
        job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, clean = params[:9]
        if not isinstance(job_id, str) or not job_id:
            raise NotifyError("job_id: not a string")
        if not isinstance(branch, list):
            raise NotifyError("merkle_branch: not a list")
        return cls(
            job_id=job_id,
            prevhash=stratum_prevhash_to_header(prevhash),
            coinb1=_hex_bytes(coinb1, "coinb1"),
            coinb2=_hex_bytes(coinb2, "coinb2"),
            merkle_branch=tuple(_hex_bytes(b, "merkle_branch", 32) for b in branch),
            version=_hex_u32(version, "version"),
            nbits=_hex_u32(nbits, "nbits"),
            ntime=_hex_u32(ntime, "ntime"),
            clean=bool(clean),
            difficulty=difficulty,
            extranonce1=extranonce1,
            extranonce2_size=extranonce2_size,
            received_at=received_at,
        )

    @property
    def share_target(self) -> int:
        return share_target(self.difficulty)

    @property
    def network_target(self) -> int:
        return bits_to_target(self.nbits)

    def coinbase(self, extranonce2: bytes) -> bytes:
        """The non-witness coinbase the header commits to."""
        if len(extranonce2) != self.extranonce2_size:
            raise ValueError(f"extranonce2 must be {self.extranonce2_size} bytes")
        return self.coinb1 + self.extranonce1 + extranonce2 + self.coinb2

    def merkle_root(self, extranonce2: bytes) -> bytes:
        return fold_branch(sha256d(self.coinbase(extranonce2)), self.merkle_branch)

    def header(self, extranonce2: bytes, ntime: int, nonce: int, version: int | None = None) -> bytes:
        """The 80-byte header; ``version`` is the full (rolled) version,
        the job's own when None."""
        return build_header(self.version if version is None else version, self.prevhash,
                            self.merkle_root(extranonce2), ntime, self.nbits, nonce)


def share_target(difficulty: float) -> int:
    """Target a share of (possibly fractional) ``difficulty`` must meet."""
    if not isinstance(difficulty, (int, float)) or isinstance(difficulty, bool) or not math.isfinite(difficulty):
        raise ValueError("difficulty must be a finite number")
    return difficulty_to_target(float(difficulty))


def hash_value(header_hash: bytes) -> int:
    """A header hash (internal order) as the integer compared with targets."""
    return int.from_bytes(header_hash, "little")


def rolled_version(job_version: int, mask: int, version_bits: int) -> int:
    """BIP310: the header version for ``version_bits`` under ``mask``."""
    return (job_version & ~mask & 0xFFFFFFFF) | (version_bits & mask)


def spread_bits(counter: int, mask: int) -> int:
    """Deposit the low bits of ``counter`` into the set bits of ``mask``
    (lowest mask bit first), so counters 0..2**popcount(mask)-1 map one-to-one
    onto every value inside the mask and never set a bit outside it."""
    out = 0
    bit = 0
    m = mask & 0xFFFFFFFF
    while m and counter >> bit:
        low = m & -m
        if (counter >> bit) & 1:
            out |= low
        m ^= low
        bit += 1
    if counter >> bit:
        raise ValueError("counter does not fit in the mask")
    return out


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """One header template handed to a hasher: every field but the nonce is
    fixed, and the hasher scans nonces [nonce_start, nonce_end)."""

    unit_id: int
    job: Job
    extranonce2: bytes
    ntime: int
    version: int  # full header version, rolled
    version_bits: int | None  # the masked bits to submit; None without rolling
    header_prefix: bytes  # the first 76 header bytes (nonce excluded)
    target: int
    nonce_start: int = 0
    nonce_end: int = NONCE_SPACE

    def header(self, nonce: int) -> bytes:
        return self.header_prefix + struct.pack("<I", nonce)


@dataclass(frozen=True, slots=True)
class Share:
    job_id: str
    extranonce2: bytes
    ntime: int
    nonce: int
    version_bits: int | None
    header_hash: bytes
    difficulty: float  # the job's difficulty, what the pool credits
    is_block: bool

    def submit_params(self, user: str) -> list[str]:
        """``mining.submit`` params; the 6th only when version rolling was
        negotiated (``version_bits`` is not None)."""
        params = [user, self.job_id, self.extranonce2.hex(), f"{self.ntime:08x}", f"{self.nonce:08x}"]
        if self.version_bits is not None:
            params.append(f"{self.version_bits:08x}")
        return params


def check_share(unit: WorkUnit, nonce: int) -> Share | None:
    """Rebuild the header for ``nonce`` from the job (not from the hasher's
    copy) and return the Share if its hash meets the job's share target."""
    job = unit.job
    header = job.header(unit.extranonce2, unit.ntime, nonce, unit.version)
    h = sha256d(header)
    value = hash_value(h)
    if value > job.share_target:
        return None
    return Share(job.job_id, unit.extranonce2, unit.ntime, nonce, unit.version_bits, h,
                 job.difficulty, value <= job.network_target)


@dataclass(slots=True)
class WorkSource:
    """Hands out distinct work units for one job, so no header is ever hashed
    twice: the version bits inside the mask are rolled first, then
    extranonce2 (as a little-endian counter, like cpuminer). Rolled ntime is
    the job's ntime plus the seconds since the job arrived.

    ``version_mask`` is None when version rolling is not negotiated; it may
    change mid-job (``mining.set_version_mask``): the next unit then starts a
    fresh extranonce2, so earlier (extranonce2, version) pairs never recur.
    """

    job: Job
    version_mask: int | None = None
    nonces_per_unit: int = NONCE_SPACE
    _extranonce2: int = 0
    _version_counter: int = 0
    _nonce_start: int = 0

    def __post_init__(self):
        if not 1 <= self.nonces_per_unit <= NONCE_SPACE:
            raise ValueError("nonces_per_unit must be in 1..2**32")

    def set_version_mask(self, mask: int | None) -> None:
        if mask == self.version_mask:
            return
        self.version_mask = mask
        if self._version_counter or self._nonce_start:
            self._advance_extranonce2()

    def _advance_extranonce2(self) -> None:
        self._extranonce2 += 1
        self._version_counter = 0
        self._nonce_start = 0

    @property
    def exhausted(self) -> bool:
        return self._extranonce2 >= 256 ** self.job.extranonce2_size

    def next_unit(self, now: float, unit_id: int) -> WorkUnit | None:
        """The next unit, or None when the job's whole search space is used."""
        if self.exhausted:
            return None
        job = self.job
        mask = self.version_mask or 0
        version_bits = spread_bits(self._version_counter, mask)
        version = rolled_version(job.version, mask, version_bits)
        extranonce2 = self._extranonce2.to_bytes(job.extranonce2_size, "little")
        ntime = job.ntime + max(0, int(now - job.received_at))
        start = self._nonce_start
        end = min(NONCE_SPACE, start + self.nonces_per_unit)
        prefix = job.header(extranonce2, ntime, 0, version)[:76]
        unit = WorkUnit(unit_id, job, extranonce2, ntime & 0xFFFFFFFF, version,
                        None if self.version_mask is None else version_bits,
                        prefix, job.share_target, start, end)
        # advance: nonce range, then version bits, then extranonce2
        if end < NONCE_SPACE:
            self._nonce_start = end
        else:
            self._nonce_start = 0
            self._version_counter += 1
            if self._version_counter >> bin(mask).count("1"):
                self._advance_extranonce2()
        return unit
