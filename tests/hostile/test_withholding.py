"""Block withholding: a worker that never submits a block-solving share is
flagged once its expected blocks λ = Σ share difficulty / network
difficulty reach ln(1/α); honest workers are flagged at a check with
probability at most α (0.1 %)."""
from __future__ import annotations

import math
import random

import pytest

from hashcoop.pool.core.withholding import DEFAULT_ALPHA, Tally, is_flagged, lambda_threshold, log_poisson_cdf
from tests.hostile.conftest import full

pytestmark = pytest.mark.hostile

ALPHA = DEFAULT_ALPHA
NETWORK = (1000.0, 2500.0, 4000.0, 800.0)  # network difficulties the runs move between
SHARE = (1.0, 4.0, 16.0, 64.0)  # share difficulties (vardiff levels)


def blocks_in(rng: random.Random, n: int, p: float) -> int:
    """Blocks among ``n`` shares that are each a block with probability
    ``p``: exactly a Binomial(n, p) draw, by jumping from block to block
    (geometric gaps) instead of drawing every share."""
    if p >= 1.0:
        return n
    log_q = math.log1p(-p)
    k, i = 0, -1
    while True:
        i += 1 + int(math.log(1.0 - rng.random()) / log_q)
        if i >= n:
            return k
        k += 1


def honest_run(rng: random.Random, target: float) -> list[tuple[float, float, int, int]]:
    """One honest worker's run to expected blocks ``target``, in 1 to 4
    stretches at different network and share difficulties: [(d, nd, shares,
    blocks)]."""
    stretches = []
    pieces = rng.randint(1, 4)
    for j in range(pieces):
        d, nd = rng.choice(SHARE), rng.choice(NETWORK)
        n = max(1, round(target / pieces * nd / d))
        stretches.append((d, nd, n, blocks_in(rng, n, d / nd)))
    return stretches


def binomial_quantile(n: int, p: float, tail: float) -> int:
    """Smallest b with P(Bin(n, p) > b) < tail."""
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
            for i in range(0, min(n, 2000) + 1)]
    above = 0.0
    for b in range(len(logs) - 1, -1, -1):
        above += math.exp(logs[b])
        if above >= tail:
            return b
    return 0


def test_honest_workers_are_flagged_at_most_alpha_of_the_time_and_a_withholder_at_ln_one_over_alpha(figures):
    rng = random.Random(20261126)
    workers = 100_000 if full() else 10_000
    flagged = 0
    ever = 0
    expected_flags = 0.0
    lambdas = []
    for _ in range(workers):
        target = rng.uniform(10.0, 60.0)  # far past ln(1/alpha) = 6.9
        lam, k, was = 0.0, 0, False
        for d, nd, n, b in honest_run(rng, target):
            lam += n * d / nd  # per stretch = per share: d / nd is constant within one
            k += b
            was = was or is_flagged(k, lam, ALPHA)  # a check after each stretch too
        lambdas.append(lam)
        if is_flagged(k, lam, ALPHA):  # the check point: the end of the run
            flagged += 1
        ever += was or is_flagged(k, lam, ALPHA)
        # the chance this worker is flagged at that check, were its count exactly Poisson(lam)
        kmax = -1
        while is_flagged(kmax + 1, lam, ALPHA):
            kmax += 1
        expected_flags += math.exp(log_poisson_cdf(kmax, lam)) if kmax >= 0 else 0.0
    # Per check, P(flag) <= alpha for every honest worker (expected_flags is
    # that sum: below alpha x workers, discreteness makes it smaller still).
    # The count of flagged workers is then at most Binomial(workers, alpha);
    # the bound below is its 1 - 1e-6 quantile, so a correct detector fails
    # this with probability below one in a million whatever the seed.
    bound = binomial_quantile(workers, ALPHA, 1e-6)
    assert expected_flags <= ALPHA * workers
    assert flagged <= bound, (flagged, bound)
    # a withholder: the same kind of run, block shares never submitted, checked after every share
    t = Tally()
    threshold = lambda_threshold(ALPHA)
    flagged_at = None
    for j in range(200_000):
        d = SHARE[j // 500 % len(SHARE)]
        nd = NETWORK[j // 700 % len(NETWORK)]  # the network difficulty changes mid-run
        before = t.expected
        t.share(d, nd, False)
        if t.flagged(ALPHA):
            flagged_at = t.expected
            assert before < threshold <= t.expected  # flagged at the first share that took lambda past ln(1/alpha)
            break
        assert t.expected < threshold
    assert flagged_at is not None
    figures("block-withholding", alpha=ALPHA, honest_workers=workers,
            honest_lambda_min=round(min(lambdas), 2), honest_lambda_max=round(max(lambdas), 2),
            honest_flagged_at_check=flagged, honest_flagged_fraction=flagged / workers,
            honest_expected_flagged_if_poisson=round(expected_flags, 2), flagged_bound_1e6=bound,
            honest_ever_flagged_over_checks=ever, withholder_flagged_at_lambda=round(flagged_at, 4),
            withholder_shares=t.shares, ln_one_over_alpha=round(threshold, 4))


def test_network_difficulty_changes_are_accounted_share_by_share():
    """A worker's expected blocks follow the network difficulty of each
    share's job: summed at the end against one difficulty, a withholder
    would be flagged far too early or far too late."""
    t = Tally()
    for _ in range(3000):
        t.share(1.0, 1000.0, False)  # 3 expected blocks
    for _ in range(1500):
        t.share(1.0, 250.0, False)  # difficulty dropped fourfold: 6 more
    assert t.expected == pytest.approx(9.0)
    assert t.flagged(ALPHA)
    naive_last = t.shares * 1.0 / 250.0  # 18: as if every share had the last difficulty
    naive_first = t.shares * 1.0 / 1000.0  # 4.5: would not be flagged at all
    assert is_flagged(0, naive_last) and not is_flagged(0, naive_first)
    assert naive_first < t.expected < naive_last


def test_an_honest_worker_with_the_withholders_shares_is_not_flagged():
    """The withholder's exact share stream, mined honestly (blocks drawn at
    d / nd per share): over 500 seeds it is flagged at its end no more
    often than alpha allows."""
    flagged = 0
    for seed in range(500):
        rng = random.Random(seed)
        t = Tally()
        for j in range(4000):
            d, nd = SHARE[j // 500 % len(SHARE)], NETWORK[j // 700 % len(NETWORK)]
            t.share(d, nd, rng.random() < d / nd)
        flagged += t.flagged(ALPHA)
    assert flagged <= binomial_quantile(500, ALPHA, 1e-6)
