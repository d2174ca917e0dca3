import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashcoop.pool.core.vardiff import Vardiff, nice_difficulty


def make(now=0.0, low=0.0001, high=1e12):
    return Vardiff(target_interval=10, retarget_interval=60, variance=0.3, min_shares=4, low=low, high=high, now=now)


def simulate(hashrate_diff_per_s, start_diff, seconds, seed=1):
    """A miner whose work rate is `hashrate_diff_per_s` difficulty-1 units per
    second; shares arrive as a Poisson process at rate work/diff."""
    rng = random.Random(seed)
    v = make()
    diff = start_diff
    t = 0.0
    history = []
    while t < seconds:
        rate = hashrate_diff_per_s / diff
        dt = rng.expovariate(rate)
        # idle ticks every second while waiting
        while dt > 1 and t < seconds:
            t += 1
            dt -= 1
            new = v.on_tick(diff, t)
            if new:
                diff = new
                history.append((t, diff))
                dt = rng.expovariate(hashrate_diff_per_s / diff)
        t += dt
        new = v.on_share(diff, diff, t)
        if new:
            diff = new
            history.append((t, diff))
    return diff, history


@pytest.mark.parametrize("work,start", [(1000.0, 1.0), (1000.0, 1e6), (0.002, 1.0), (5e6, 512)])
def test_converges_to_target_interval(work, start):
    diff, _ = simulate(work, start, 3600)
    ideal = work * 10
    assert ideal / 2.5 <= diff <= ideal * 2.5


def test_ramp_up_is_fast_when_far_too_easy():
    _, history = simulate(1e5, 1.0, 120)
    assert history and history[0][0] < 5  # first retarget within seconds, not a minute


def test_clamped_to_limits():
    v = make(low=1, high=64)
    new = None
    for i in range(1, 100):
        new = v.on_share(1, 1, i * 0.001) or new
    assert new == 64
    v = make(low=1, high=64)
    diff, t = 64.0, 0.0
    for _ in range(20):
        t += 61
        diff = v.on_tick(diff, t) or diff
    assert diff == 1  # lowered step by step, never below the port minimum
    assert v.on_tick(diff, t + 61) is None


def test_no_shares_lowers_difficulty():
    v = make()
    assert v.on_tick(100, 30) is None
    new = v.on_tick(100, 61)
    assert new is not None and new <= 50


@given(st.floats(min_value=1e-12, max_value=1e15, allow_nan=False, allow_infinity=False))
def test_nice_difficulty_two_significant_digits(d):
    n = nice_difficulty(d)
    assert n > 0
    if d >= 1:
        assert n == int(n) and abs(n - d) <= max(0.051 * d, 0.5)
    else:
        assert abs(n - d) / d <= 0.051
