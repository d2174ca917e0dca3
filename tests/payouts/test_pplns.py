"""The PPLNS split, the remainder rule and the report digest (pure)."""
from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcoop.payouts.pplns import (
    build_report,
    canonical_json,
    diff_reports,
    pool_fee,
    proportional,
    report_digest,
    split_reward,
)

addresses = st.text(alphabet="abcdefghjkmnpqrstuvwxyz023456789", min_size=4, max_size=12).map(lambda s: "bcrt1q" + s)
difficulty = st.floats(min_value=1e-12, max_value=1e12, allow_nan=False, allow_infinity=False)
windows = st.dictionaries(addresses, difficulty, min_size=1, max_size=40)
rewards = st.integers(min_value=0, max_value=21_000_000 * 100_000_000)
fees = st.sampled_from(["0", "0.5", "1", "1.5", "2", "3.33", "10", "99.99"])


@settings(max_examples=300, deadline=None)
@given(rewards, windows, fees)
def test_split_adds_up_is_non_negative_and_within_one_satoshi(reward, window, fee):
    s = split_reward(reward, window, fee)
    assert s.fee == pool_fee(reward, fee) and 0 <= s.fee <= reward
    assert sum(s.credits.values()) == reward - s.fee
    assert all(v >= 0 for v in s.credits.values())
    total = sum(Fraction(w) for w in window.values())
    for a, v in s.credits.items():
        exact = (reward - s.fee) * Fraction(window[a]) / total
        assert abs(v - exact) < 1
    assert set(s.credits) == set(window)


@settings(max_examples=100, deadline=None)
@given(rewards, windows, fees, st.randoms())
def test_split_is_deterministic_whatever_the_order(reward, window, fee, rnd):
    items = list(window.items())
    rnd.shuffle(items)
    assert split_reward(reward, dict(items), fee) == split_reward(reward, window, fee)


def test_remainder_rule_largest_fraction_then_difficulty_then_address():
    # 10 over three equal windows: 3.333 each, one satoshi left: the first address
    assert proportional(10, {"b": 1.0, "a": 1.0, "c": 1.0}) == {"a": 4, "b": 3, "c": 3}
    # fractions 0.5, 0.5, 0.0 over 2 satoshis... 5 over (1, 1, 0.5): 2, 2, 1 exactly
    assert proportional(5, {"x": 1.0, "y": 1.0, "z": 0.5}) == {"x": 2, "y": 2, "z": 1}
    # 7 over (2, 1): 4.667 and 2.333: the larger fraction takes the leftover
    assert proportional(7, {"big": 2.0, "small": 1.0}) == {"big": 5, "small": 2}


def test_fee_is_exact_decimal_rounded_down():
    assert pool_fee(5_000_000_000, "1") == 50_000_000
    assert pool_fee(5_000_000_001, "1.5") == 75_000_000  # 75,000,000.015 -> down
    assert pool_fee(3, "33.33") == 0
    assert pool_fee(312_500_000, 0.1) == 312_500  # 0.1 read as the decimal 0.1, not the double
    with pytest.raises(ValueError):
        pool_fee(1, "100")
    with pytest.raises(ValueError):
        split_reward(10, {"a": float("nan")}, "1")
    with pytest.raises(ValueError):
        split_reward(10, {}, "1")


def _block():
    return {"hash": "ab" * 32, "height": 300, "finder_address": "bcrt1qa", "finder_worker": "w", "time": 1.5,
            "n_target": 0.002, "window_total": 0.002, "complete": True, "first_seq": 10, "seq": 40, "partial": 0.0001,
            "network_difficulty": 0.001, "window_factor": 2.0, "window_difficulty": 0.0, "floor_seq": 0}


def test_report_digest_is_canonical_and_diff_says_where():
    window = {"bcrt1qa": 0.0015, "bcrt1qb": 0.0005}
    s = split_reward(5_000_000_000, window, "1")
    rep = build_report(block=_block(), window=window, split=s, fee_address="bcrt1qfee")
    again = build_report(block=_block(), window=dict(reversed(window.items())), split=s, fee_address="bcrt1qfee")
    assert canonical_json(rep) == canonical_json(again) and report_digest(rep) == report_digest(again)
    assert b" " not in canonical_json(rep)
    assert [c["kind"] for c in rep["credits"]] == ["share", "share", "fee"]
    tampered = build_report(block=_block(), window=window, split=s, fee_address="bcrt1qfee")
    tampered["credits"][0]["amount"] += 1
    assert report_digest(tampered) != report_digest(rep)
    assert diff_reports(tampered, rep) == [f"credits[bcrt1qa/share].amount: stored {rep['credits'][0]['amount'] + 1}, recomputed {rep['credits'][0]['amount']}"]
