"""Block-withholding detection. Pure: numbers in, verdicts out.

A worker that hashes honestly finds a block with each accepted share with
probability ``p = difficulty / network difficulty`` (the share's credited
difficulty and the network difficulty of the job it was sent, capped at 1).
Its **expected blocks** are ``λ = Σ p`` over its accepted shares, summed
share by share because the network difficulty changes under it. The blocks
it actually found, ``k``, are then (very nearly) Poisson distributed with
mean ``λ``. A worker that keeps its block-solving shares to itself (block
withholding: it is paid for shares, it harms the pool) finds none, however
large ``λ`` grows.

The test: flag the worker when ``P(X ≤ k | λ) ≤ α``. For ``k = 0`` this is
``e^-λ ≤ α``, i.e. ``λ ≥ ln(1/α)`` (6.91 for the default α = 0.001). For
an honest worker, the chance to be flagged at any one check is at most α
(less, because the count is discrete and because a sum of Bernoulli trials
is less spread than a Poisson count of the same mean); checked repeatedly as
its shares come in, the chance that it is *ever* flagged is larger, so treat
a flag as a reason to look, not as proof.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_ALPHA = 0.001
_REL = 1e-17  # terms below this fraction of the sum so far are dropped


def share_expectation(difficulty: float, network_difficulty: float) -> float:
    """Expected blocks of one accepted share: ``min(1, d / nd)``; 0 when
    either is unknown (not positive or not finite)."""
    if not (difficulty > 0 and network_difficulty > 0) or not math.isfinite(network_difficulty):
        return 0.0
    if difficulty >= network_difficulty:
        return 1.0
    return difficulty / network_difficulty


def log_poisson_cdf(k: int, lam: float) -> float:
    """``log P(X ≤ k)`` for ``X ~ Poisson(lam)``, accurate far into the tail
    (no underflow: the result is a log) and for huge ``lam``.

    Summed from the largest term outwards in ratios of neighbouring terms:
    below the mean (the tail that matters here) from ``k`` down, above it
    through the complement. The cost is ~9·sqrt(lam) steps at worst, when
    ``k`` is near ``lam``; far out in the tail a few steps."""
    if k < 0:
        return -math.inf
    if not lam > 0:  # 0, negative, NaN: no evidence at all
        return 0.0
    if math.isinf(lam):
        return -math.inf
    k = int(k)
    log_lam = math.log(lam)
    if k < lam:
        # terms t_i for i = k, k-1, ..., 0 decrease: t_{i-1} / t_i = i / lam
        log_top = -lam + k * log_lam - math.lgamma(k + 1)
        total = rel = 1.0
        for i in range(k, 0, -1):
            rel *= i / lam
            total += rel
            if rel < _REL * total:
                break
        return min(0.0, log_top + math.log(total))
    # k >= lam: P(X <= k) = 1 - P(X >= k + 1); terms above the mean decrease
    log_top = -lam + (k + 1) * log_lam - math.lgamma(k + 2)
    total = rel = 1.0
    i = k + 1
    while True:
        i += 1
        rel *= lam / i
        total += rel
        if rel < _REL * total:
            break
    upper = math.exp(log_top + math.log(total))
    return math.log1p(-upper) if upper < 1.0 else -math.inf


def p_value(k: int, lam: float) -> float:
    """``P(X ≤ k | lam)``: how likely an honest worker with these expected
    blocks finds this few. May underflow to 0.0; ``log_poisson_cdf`` does not."""
    return math.exp(log_poisson_cdf(k, lam))


def is_flagged(k: int, lam: float, alpha: float = DEFAULT_ALPHA) -> bool:
    """True when an honest worker would find at most ``k`` blocks with
    probability ``alpha`` or less (compared in logs: exact at the boundary)."""
    return log_poisson_cdf(k, lam) <= math.log(alpha)


def lambda_threshold(alpha: float = DEFAULT_ALPHA) -> float:
    """Expected blocks at which a worker that found none is flagged: ln(1/α)."""
    return -math.log(alpha)


@dataclass(frozen=True, slots=True)
class Verdict:
    address: str
    worker: str | None  # None: the address as a whole
    expected_blocks: float
    blocks: int
    p_value: float
    log10_p: float  # p_value can underflow; this does not

    def as_json(self) -> dict:
        out = {"address": self.address}
        if self.worker is not None:
            out["worker"] = self.worker
        out.update(expected_blocks=self.expected_blocks, blocks=self.blocks, p_value=self.p_value,
                   log10_p=self.log10_p)
        return out


def judge(address: str, worker: str | None, expected: float, blocks: int) -> Verdict:
    lp = log_poisson_cdf(blocks, expected)
    return Verdict(address, worker, expected, blocks, math.exp(lp), lp / math.log(10) if lp > -math.inf else -math.inf)


def suspects(rows, alpha: float = DEFAULT_ALPHA) -> list[Verdict]:
    """The flagged among ``rows`` of ``(address, worker or None, expected
    blocks, blocks found)``, most suspicious (lowest p) first."""
    log_alpha = math.log(alpha)
    out = []
    for address, worker, expected, blocks in rows:
        if expected > 0 and log_poisson_cdf(blocks, expected) <= log_alpha:
            out.append(judge(address, worker, expected, blocks))
    out.sort(key=lambda v: (v.log10_p, v.address, v.worker or ""))
    return out


class Tally:
    """One worker's running figures, share by share (what the accounting
    keeps in Redis as ``exp_blocks`` and ``blocks``)."""

    __slots__ = ("expected", "blocks", "shares")

    def __init__(self):
        self.expected = 0.0
        self.blocks = 0
        self.shares = 0

    def share(self, difficulty: float, network_difficulty: float, is_block: bool) -> None:
        self.expected += share_expectation(difficulty, network_difficulty)
        self.blocks += bool(is_block)
        self.shares += 1

    def flagged(self, alpha: float = DEFAULT_ALPHA) -> bool:
        return is_flagged(self.blocks, self.expected, alpha)


class FlagLog:
    """Which entities were flagged at the last check, to log only the newly
    flagged (and those no longer flagged). Bounded by what is flagged."""

    def __init__(self):
        self.flagged: set[tuple[str, str | None]] = set()

    def update(self, verdicts: list[Verdict]) -> tuple[list[Verdict], list[tuple[str, str | None]]]:
        """Returns (newly flagged verdicts, keys no longer flagged)."""
        now = {(v.address, v.worker): v for v in verdicts}
        new = [v for k, v in now.items() if k not in self.flagged]
        cleared = sorted(self.flagged - now.keys(), key=lambda k: (k[0], k[1] or ""))
        self.flagged = set(now)
        return new, cleared
