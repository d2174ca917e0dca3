"""The flood policy and the ban list alone: no reactor, no sockets."""
from __future__ import annotations

import random

import pytest

from hashcoop.pool.config import ConfigError, load_config
from hashcoop.pool.core.shares import Reject
from hashcoop.stratum.flood import COUNTED, DISCONNECT, NEW_WORK, RATE, BanList, FloodPolicy


def run(policy, seq, *, rate=1.0, t0=0.0):
    """Feed (accepted | reason) events at ``rate`` a second, until the
    connection would be closed; returns [(index, action)]."""
    st = policy.new_state(t0)
    out = []
    for i, ev in enumerate(seq):
        now = t0 + i / rate
        if ev is True:
            st.n += 1
            continue
        a = policy.on_reject(st, ev, now)
        if a is not None:
            out.append((i, a))
            if a in (DISCONNECT, RATE):
                break
    return out


def test_stale_job_is_not_counted_and_every_other_reason_is():
    assert Reject.STALE_JOB not in COUNTED
    assert COUNTED == set(Reject.ALL) - {Reject.STALE_JOB}


def test_a_flooder_gets_new_work_then_a_disconnect():
    p = FloodPolicy(window=100, invalid_fraction=0.5)
    assert run(p, [Reject.HIGH_HASH] * 300) == [(99, NEW_WORK), (199, DISCONNECT)]


def test_mostly_invalid_is_enough_and_a_recovered_miner_starts_over():
    p = FloodPolicy(window=100, invalid_fraction=0.5)
    # 60 % invalid: new work at the first full window, disconnect at the second
    seq = ([Reject.DUPLICATE] * 3 + [True] * 2) * 80
    acts = run(p, seq)
    assert [a for _, a in acts] == [NEW_WORK, DISCONNECT]
    # after the new work it mines properly: no disconnect; later relapse gets new work again first
    seq = [Reject.BAD_NTIME] * 100 + ([True] * 19 + [Reject.BAD_NTIME]) * 10 + [Reject.BAD_VERSION] * 100
    assert [a for _, a in run(p, seq)] == [NEW_WORK, NEW_WORK]


def test_stale_rejects_never_escalate_however_many():
    p = FloodPolicy(window=100, invalid_fraction=0.5, max_rejects_per_second=50, reject_burst=500)
    # an honest miner after many tip changes: stale bursts of 5 between good shares
    seq = ([Reject.STALE_JOB] * 5 + [True] * 20) * 2000
    assert run(p, seq, rate=0.1) == []


@pytest.mark.parametrize("reject_rate", [0.01, 0.03, 0.10])
def test_honest_miners_with_occasional_rejects_are_never_escalated(reject_rate):
    """10 000 simulated miners x 2000 submits (a day and a half at one share
    every minute), rejects drawn at the given rate from the reasons an
    honest miner sees: not one action."""
    rng = random.Random(8)
    p = FloodPolicy()
    honest = [Reject.STALE_JOB, Reject.HIGH_HASH, Reject.DUPLICATE, Reject.UNKNOWN_JOB]
    acted = 0
    for _ in range(2000 if reject_rate == 0.10 else 500):
        seq = [rng.choice(honest) if rng.random() < reject_rate else True for _ in range(2000)]
        acted += bool(run(p, seq, rate=1 / 60))
    assert acted == 0


def test_reject_rate_cap_closes_at_once_when_the_burst_is_spent():
    p = FloodPolicy(max_rejects_per_second=50, reject_burst=500)
    # stale rejects only (not counted by the window) at 1000 a second
    acts = run(p, [Reject.STALE_JOB] * 2000, rate=1000)
    assert acts and acts[0][1] == RATE
    assert 520 <= acts[0][0] <= 530  # 500 burst + 50/s over ~0.52 s
    # at 40 a second, forever below the cap
    assert run(p, [Reject.STALE_JOB] * 20_000, rate=40) == []


def test_policy_rejects_nonsense_settings():
    for kw in ({"window": 0}, {"invalid_fraction": 0}, {"invalid_fraction": 1.5}, {"max_rejects_per_second": 0},
               {"reject_burst": 0}):
        with pytest.raises(ValueError):
            FloodPolicy(**kw)


def test_ban_after_k_strikes_within_the_period_and_it_expires():
    b = BanList(ban_after=3, ban_period=600, ban_seconds=900)
    assert b.strike("1.2.3.4", 0) == 1
    assert b.strike("1.2.3.4", 700) == 1  # the first one fell out of the period
    assert b.strike("1.2.3.4", 800) == 2
    assert b.banned("1.2.3.4", 800) is None
    assert b.strike("1.2.3.4", 900) == 3
    ban = b.banned("1.2.3.4", 900)
    assert ban is not None and ban.until == 1800
    assert b.banned("5.6.7.8", 900) is None
    assert b.count(1000) == 1
    assert b.count(1800) == 0  # expired, even before it is dropped
    assert b.banned("1.2.3.4", 1799.9) is not None
    assert b.expire(1800) == ["1.2.3.4"]
    assert b.banned("1.2.3.4", 1800) is None and not b.bans


def test_refusals_are_logged_once_then_once_a_minute():
    b = BanList(ban_after=1, ban_seconds=3600)
    b.strike("9.9.9.9", 0)
    ban = b.banned("9.9.9.9", 0)
    logged = [b.refused(ban, t / 10) for t in range(1300)]  # 130 s of ten refusals a second
    assert [n for n in logged if n] == [1, 600, 600]


def test_ban_tables_stay_bounded_and_expire_in_order():
    b = BanList(ban_after=2, ban_period=100, ban_seconds=50, max_tracked=1000)
    for i in range(50_000):
        b.strike(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", i / 1000)
    assert len(b.strikes) == 1000 and not b.bans
    for i in range(5000):
        ip = f"11.0.{i >> 8 & 255}.{i & 255}"
        b.strike(ip, 60 + i / 1000)
        b.strike(ip, 60 + i / 1000)
    assert len(b.bans) == 1000
    assert b.expire(1000) and not b.bans and not b.strikes


def test_never_ban_when_ban_after_is_zero():
    b = BanList(ban_after=0)
    for t in range(100):
        assert b.strike("1.1.1.1", t) == 0
    assert b.banned("1.1.1.1", 100) is None


def base(**flood):
    return {"pool": {"network": "regtest", "address": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"},
            "nodes": [{"url": "http://127.0.0.1:1/"}], "stratum": {"flood": flood}}


def test_flood_config_defaults_validation_and_env():
    cfg = load_config(data=base(), env={})
    f = cfg.stratum.flood
    assert (f.enabled, f.window, f.invalid_fraction, f.ban_after) == (True, 100, 0.5, 3)
    with pytest.raises(ConfigError) as e:
        load_config(data=base(window=1, invalid_fraction=2, ban_seconds=float("nan"), typo=1), env={})
    keys = {k for k, _ in e.value.errors}
    assert {"stratum.flood.window", "stratum.flood.invalid_fraction", "stratum.flood.ban_seconds",
            "stratum.flood.typo"} <= keys
    cfg = load_config(data=base(), env={"HASHCOOP__STRATUM__FLOOD__BAN_AFTER": "5",
                                        "HASHCOOP__STRATUM__FLOOD__ENABLED": "false"})
    assert cfg.stratum.flood.ban_after == 5 and not cfg.stratum.flood.enabled
