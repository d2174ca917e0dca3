import pytest

from hashcoop.pool.config import ConfigError, load_config

ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def base(**over):
    d = {"pool": {"network": "regtest", "address": ADDR}, "nodes": [{"url": "http://127.0.0.1:18443", "user": "u", "password": "p"}]}
    d.update(over)
    return d


def test_minimal_config_defaults():
    cfg = load_config(data=base(), env={})
    assert cfg.pool.extranonce2_size == 4
    assert cfg.stratum.ports[0].port == 3333
    assert cfg.network.gbt_rules == ("segwit",)
    assert cfg.node_name(0) == "node0"


def test_every_error_reported_with_its_key():
    data = {
        "pool": {"network": "regtest", "address": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "extranonce2_size": 6},
        "nodes": [{"url": "ftp://x"}, {"url": "http://a", "cookie_file": "/c", "user": "u", "password": "p"}],
        "stratum": {"ports": [{"port": 3333, "start_difficulty": 1, "min_difficulty": 2}], "bogus": 1},
    }
    with pytest.raises(ConfigError) as e:
        load_config(data=data, env={})
    keys = {k for k, _ in e.value.errors}
    assert {"pool.extranonce2_size", "nodes.0.url", "stratum.bogus"} <= keys
    # semantic errors are reported once the types are right
    data["pool"]["extranonce2_size"] = 8
    data["nodes"][0]["url"] = "http://x"
    del data["stratum"]["bogus"]
    with pytest.raises(ConfigError) as e:
        load_config(data=data, env={})
    keys = {k for k, _ in e.value.errors}
    assert keys == {"pool.address", "nodes.1.cookie_file", "stratum.ports.0.start_difficulty"}
    assert "stratum.ports.0.start_difficulty:" in str(e.value)


def test_signet_rules_and_networks():
    cfg = load_config(data=base(pool={"network": "signet", "address": "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"}), env={})
    assert cfg.network.gbt_rules == ("segwit", "signet")
    with pytest.raises(ConfigError):
        load_config(data=base(pool={"network": "litecoin", "address": ADDR}), env={})


def test_environment_overrides():
    env = {
        "HASHCOOP__POOL__COINBASE_TAG": "/env/",
        "HASHCOOP__NODES__0__PASSWORD": "secret",
        "HASHCOOP__STRATUM__PORTS__0__START_DIFFICULTY": "0.5",
        "HASHCOOP__STRATUM__PORTS__0__PORT": "4444",
        "HASHCOOP__WORK__POLL_INTERVAL": "0.25",
        "OTHER": "ignored",
    }
    cfg = load_config(data=base(stratum={"ports": [{"port": 3333}]}), env=env)
    assert cfg.pool.coinbase_tag == "/env/"
    assert cfg.nodes[0].password == "secret"
    assert cfg.stratum.ports[0].start_difficulty == 0.5 and cfg.stratum.ports[0].port == 4444
    assert cfg.work.poll_interval == 0.25
    with pytest.raises(ConfigError) as e:
        load_config(data=base(), env={"HASHCOOP__STRATUM__BACKLOG": "many"})
    assert e.value.errors[0][0] == "stratum.backlog"


def test_poll_interval_zero_means_off_negative_is_refused():
    assert load_config(data=base(work={"poll_interval": 0}), env={}).work.poll_interval == 0
    with pytest.raises(ConfigError) as e:
        load_config(data=base(work={"poll_interval": -1}), env={})
    assert e.value.errors[0][0] == "work.poll_interval"


def test_coinbase_tag_must_fit_scriptsig():
    with pytest.raises(ConfigError) as e:
        load_config(data=base(pool={"network": "regtest", "address": ADDR, "coinbase_tag": "x" * 90, "extranonce2_size": 8}), env={})
    assert e.value.errors[0][0] == "pool.coinbase_tag"


def test_toml_file_errors(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[pool\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert "not valid TOML" in str(e.value)
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.toml", env={})


def test_shipped_examples_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    examples = sorted((root / "pool" / "examples").glob("*.toml"))
    assert {p.name for p in examples} >= {"regtest.toml", "signet.toml"}
    for p in examples:
        load_config(p, env={})


def test_payout_fee_rates_core_would_refuse_are_config_errors():
    for ok in (0.0, 0.1, 1.0, 2.5, 12.345):
        assert load_config(data=base(payouts={"fee_rate_sat_vb": ok}), env={}).payouts.fee_rate_sat_vb == ok
    for bad, words in ((0.05, "below 0.1 sat/vB"), (2.0001, "more than 3 decimals")):
        with pytest.raises(ConfigError) as e:
            load_config(data=base(payouts={"fee_rate_sat_vb": bad}), env={})
        assert [k for k, _ in e.value.errors] == ["payouts.fee_rate_sat_vb"] and words in str(e.value)
