import pytest

from hashcoop.pool.config import ConfigError, load_config

ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def base(**over):
    d = {"pool": {"network": "regtest", "address": ADDR}, "nodes": [{"url": "http://127.0.0.1:18443"}]}
    d.update(over)
    return d


def test_redis_is_optional_and_accounting_has_defaults():
    cfg = load_config(data=base(), env={})
    assert cfg.redis is None
    assert (cfg.accounting.flush_interval, cfg.accounting.window_factor, cfg.accounting.window_difficulty) == (0.25, 2.0, 0.0)
    cfg = load_config(data=base(redis={}), env={"HASHCOOP__ACCOUNTING__WINDOW_FACTOR": "3"})
    assert cfg.redis.url == "redis://127.0.0.1:6379/0" and cfg.redis.prefix == "hashcoop:"
    assert cfg.accounting.window_factor == 3.0


def test_bad_values_are_reported_with_their_keys():
    with pytest.raises(ConfigError) as e:
        load_config(data=base(redis={"url": "http://x", "prefix": "a b", "bogus": 1},
                              accounting={"flush_interval": 0, "window_factor": -1, "idle_expiry": 3600,
                                          "window_margin": float("inf")}), env={})
    keys = {k for k, _ in e.value.errors}
    assert keys == {"redis.url", "redis.prefix", "redis.bogus", "accounting.flush_interval", "accounting.window_factor",
                    "accounting.idle_expiry", "accounting.window_margin"}


def test_examples_still_load():
    from pathlib import Path

    import hashcoop.pool

    for p in (Path(hashcoop.pool.__file__).parent / "examples").glob("*.toml"):
        load_config(p, env={})
