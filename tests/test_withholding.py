"""The block-withholding test alone: the Poisson tail, the flag, the tally."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcoop.pool.core.withholding import (
    FlagLog,
    Tally,
    is_flagged,
    judge,
    lambda_threshold,
    log_poisson_cdf,
    p_value,
    share_expectation,
    suspects,
)


def exact_cdf(k: int, lam: Fraction, terms: int = 400) -> float:
    """P(X <= k) with rationals: sum of lam^i / i!, times e^-lam."""
    s, t = Fraction(0), Fraction(1)
    for i in range(k + 1):
        if i:
            t = t * lam / i
        s += t
    return float(s) * math.exp(-float(lam))


@pytest.mark.parametrize("k,lam", [(0, 1e-9), (0, 0.5), (0, 6.9), (3, 10), (9, 20), (20, 20), (30, 20), (50, 120.5),
                                   (150, 120.5), (0, 700)])
def test_tail_equals_the_exact_sum(k, lam):
    exact = exact_cdf(k, Fraction(lam))
    assert p_value(k, lam) == pytest.approx(exact, rel=1e-12, abs=0)


@settings(max_examples=300, deadline=None)
@given(k=st.integers(0, 200), lam=st.floats(1e-6, 300))
def test_tail_property_against_direct_log_space_sum(k, lam):
    terms = [-lam + i * math.log(lam) - math.lgamma(i + 1) for i in range(k + 1)]
    m = max(terms)
    direct = m + math.log(sum(math.exp(t - m) for t in terms))
    assert log_poisson_cdf(k, lam) == pytest.approx(min(0.0, direct), rel=1e-10, abs=1e-12)


def test_far_tail_and_huge_lambda_do_not_underflow_or_hang():
    assert log_poisson_cdf(0, 1e6) == -1e6  # e^-1e6: p_value underflows, the log does not
    assert p_value(0, 1e6) == 0.0
    lp = log_poisson_cdf(10, 1e9)
    assert lp == pytest.approx(-1e9 + 10 * math.log(1e9) - math.lgamma(11), rel=1e-12)
    # near the mean of a huge lambda: about one half (normal limit), a bounded number of steps
    assert p_value(10**10, 1e10) == pytest.approx(0.5, abs=0.01)
    assert p_value(10**12, 1e10) == 1.0
    assert log_poisson_cdf(5, float("inf")) == -math.inf
    assert log_poisson_cdf(5, 0.0) == 0.0 and log_poisson_cdf(5, float("nan")) == 0.0
    assert log_poisson_cdf(-1, 5.0) == -math.inf


def test_no_blocks_flag_exactly_at_ln_one_over_alpha():
    for alpha in (0.001, 0.01, 1e-6):
        t = lambda_threshold(alpha)
        assert t == pytest.approx(math.log(1 / alpha))
        assert is_flagged(0, t, alpha)
        assert not is_flagged(0, math.nextafter(t, 0), alpha)
    assert lambda_threshold() == pytest.approx(6.907755)
    # with blocks found, more is needed: k = 1 at alpha 0.001 near lambda 9.23
    assert not is_flagged(1, 9.2) and is_flagged(1, 9.25)


def test_share_expectation():
    assert share_expectation(1.0, 4.0) == 0.25
    assert share_expectation(8.0, 4.0) == 1.0  # every such share is a block
    assert share_expectation(1.0, 0.0) == 0.0 and share_expectation(0.0, 4.0) == 0.0
    assert share_expectation(1.0, float("nan")) == 0.0 and share_expectation(1.0, float("inf")) == 0.0


def test_tally_accumulates_per_share_across_difficulty_changes():
    t = Tally()
    for _ in range(100):
        t.share(2.0, 1000.0, False)
    for _ in range(100):
        t.share(2.0, 100.0, False)  # the network got ten times easier mid-run
    assert t.expected == pytest.approx(0.2 + 2.0)
    assert t.blocks == 0 and t.shares == 200
    # summed at the end against the last network difficulty it would be 4.0 (or 0.4 against the first)


def test_suspects_sorted_and_judged():
    rows = [("a", "w1", 5.0, 0), ("a", "w2", 7.0, 0), ("b", "w1", 50.0, 0), ("c", None, 50.0, 45), ("d", "x", 0.0, 0)]
    got = suspects(rows)
    assert [(v.address, v.worker) for v in got] == [("b", "w1"), ("a", "w2")]
    assert got[0].log10_p == pytest.approx(-50 / math.log(10))
    v = judge("c", None, 50.0, 45)
    assert v.as_json() == {"address": "c", "expected_blocks": 50.0, "blocks": 45, "p_value": v.p_value,
                           "log10_p": v.log10_p}
    assert 0.2 < v.p_value < 0.3


def test_flag_log_reports_changes_only():
    fl = FlagLog()
    a, b = judge("a", "w", 10.0, 0), judge("b", "w", 10.0, 0)
    assert fl.update([a]) == ([a], [])
    assert fl.update([a, b]) == ([b], [])
    assert fl.update([b]) == ([], [("a", "w")])
