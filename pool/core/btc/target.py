"""Targets, compact bits and share difficulty.

Difficulty 1 is the pool convention (bdiff): target 0x00000000FFFF0000...0000.
A share of difficulty D meets target floor(DIFF1_TARGET / D). Fractional
difficulty is exact: the float is converted to a fraction, never rounded.
"""
from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

DIFF1_TARGET = 0xFFFF << 208
MAX_TARGET = (1 << 256) - 1
# expected hashes per share of difficulty 1 (2^256 / DIFF1_TARGET, rounded as every pool does)
HASHES_PER_DIFFICULTY = 2.0 ** 32


def bits_to_target(bits: int) -> int:
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    if exponent <= 3:
        target = mantissa >> (8 * (3 - exponent))
    else:
        target = mantissa << (8 * (exponent - 3))
    if bits & 0x00800000 and mantissa:
        raise ValueError("negative compact target")
    return target


def target_to_bits(target: int) -> int:
    """GetCompact(): the compact form of a target (rounds down, like Core)."""
    size = (target.bit_length() + 7) // 8
    if size <= 3:
        compact = target << (8 * (3 - size))
    else:
        compact = target >> (8 * (size - 3))
    if compact & 0x00800000:
        compact >>= 8
        size += 1
    return (size << 24) | compact


@lru_cache(maxsize=4096)
def difficulty_to_target(difficulty: float) -> int:
    """Share target for a (possibly fractional) difficulty; cached."""
    if not difficulty > 0:
        raise ValueError("difficulty must be positive")
    frac = Fraction(difficulty)
    target = DIFF1_TARGET * frac.denominator // frac.numerator
    return min(target, MAX_TARGET)


def hash_difficulty(hash_int: int) -> float:
    """The difficulty a header hash achieved (what 'best share' shows)."""
    return DIFF1_TARGET / hash_int if hash_int else float("inf")


def bits_difficulty(bits: int) -> float:
    """Network difficulty of compact bits, computed exactly as Bitcoin Core's
    GetDifficulty() does, so the float matches getblockchaininfo bit for bit."""
    shift = (bits >> 24) & 0xFF
    diff = 0x0000FFFF / (bits & 0x00FFFFFF)
    while shift < 29:
        diff *= 256.0
        shift += 1
    while shift > 29:
        diff /= 256.0
        shift -= 1
    return diff
