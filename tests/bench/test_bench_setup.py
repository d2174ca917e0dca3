"""The bench's configuration and arithmetic: the pool configs it writes are
valid and mean what the scenarios need; the figures are computed right."""
from __future__ import annotations

import math

import pytest

from hashcoop.pool.config import load_config
from hashcoop.pool.core.btc.address import address_to_script, get_network
from hashcoop.pool.core.btc.target import MAX_TARGET, difficulty_to_target
from hashcoop.pool.tools.bench import stats
from hashcoop.pool.tools.bench.cli import TINY_DIFFICULTY, bench_addresses, bench_users, pool_config


class Node:
    url = "http://127.0.0.1:18443"
    cookie_path = "/tmp/cookie"


def test_pool_config_is_valid_and_fixed_difficulty(tmp_path):
    cfg = load_config(pool_config(tmp_path / "a.toml", port=4000, node=Node(), redis_url="redis://127.0.0.1:7000/0",
                                  data_dir=tmp_path / "d", difficulty=TINY_DIFFICULTY), env={})
    (port,) = cfg.stratum.ports
    assert port.start_difficulty == port.min_difficulty == TINY_DIFFICULTY and not port.vardiff
    assert cfg.redis is not None and cfg.redis.url == "redis://127.0.0.1:7000/0"
    assert not cfg.stratum.reuse_port and cfg.pool.instance_id == 0
    assert cfg.stratum.max_connections_per_ip >= 10_000
    # a random nonce meets the share target: the bench's premise
    assert difficulty_to_target(TINY_DIFFICULTY) == MAX_TARGET


def test_scaleout_and_comparison_configs(tmp_path):
    cfg = load_config(pool_config(tmp_path / "b.toml", port=4000, node=Node(), redis_url="redis://x:1/0", data_dir=tmp_path,
                                  difficulty=1.0, instance_id=2, reuse_port=True, accounting=False), env={})
    assert cfg.stratum.reuse_port and cfg.pool.instance_id == 2 and cfg.redis is None
    assert cfg.stratum.ports[0].min_difficulty == 1.0
    # flood protection stays on (the pool as operators run it), except where
    # the reject scenario floods on purpose, from one IP
    assert cfg.stratum.flood.enabled
    off = load_config(pool_config(tmp_path / "c.toml", port=4000, node=Node(), redis_url="redis://x:1/0", data_dir=tmp_path,
                                  difficulty=1.0, flood=False), env={})
    assert not off.stratum.flood.enabled


def test_users_are_valid_workers_spread_over_addresses():
    addrs = bench_addresses()
    net = get_network("regtest")
    assert len(set(addrs)) == len(addrs) == 50
    for a in addrs:
        address_to_script(a, net)
    users = bench_users(10, 120, addrs)
    assert len(set(users)) == 120
    assert {u.split(".")[0] for u in users} == set(addrs)
    assert users[0].endswith(".m10")


def test_window_and_histogram_arithmetic():
    per_second = {"99": 5, 100: 7, "101": 11, 102: 13}
    assert stats.window_sum(per_second, 100, 102) == 18
    assert stats.merge_counts([{"1": 2}, {1: 3, "2": 4}]) == {1: 5, 2: 4}
    h = {"buckets": [[0.001, 10.0], [0.01, 90.0], [0.1, 100.0], [math.inf, 100.0]], "sum": 0.5, "count": 100.0}
    assert stats.histogram_mean(h) == 0.005
    assert stats.histogram_quantile(h, 0.5) == 0.01
    assert stats.histogram_quantile(h, 0.99) == 0.1
    assert stats.histogram_quantile({"buckets": [], "sum": 0, "count": 0}, 0.5) is None
    before = {"buckets": [[0.001, 4.0], [0.01, 40.0], [0.1, 50.0], [math.inf, 50.0]], "sum": 0.2, "count": 50.0}
    d = stats.histogram_delta(h, before)
    assert d["count"] == 50.0 and d["buckets"][0] == [0.001, 6.0] and d["sum"] == pytest.approx(0.3)
    assert stats.percentile([5, 1, 3, 2, 4], 0.5) == 3 and stats.percentile([], 0.5) is None
    assert stats.slope_per_minute([(0, 10.0), (60, 12.0), (120, 14.0)]) == pytest.approx(2.0)
    assert stats.slope_per_minute([(0, 10.0)]) == 0.0


@pytest.mark.parametrize("difficulty,accepted", [(TINY_DIFFICULTY, True), (1.0, False)])
def test_hotpath_measures_the_accept_and_the_reject_paths(difficulty, accepted):
    from hashcoop.pool.core.events import MemorySink
    from hashcoop.pool.tools.bench import hotpath

    sink = MemorySink()
    srv, cfg = hotpath.server(difficulty, sink)
    miners = hotpath.connect(srv, cfg, 3)
    job = srv.jobs.current
    assert len(job.branch) == 3  # seven transactions: three hashes a share for the merkle branch
    for proto, data in hotpath.submit_chunks(miners, job.id, job.ntime, per_read=4, rounds=2, seed=1):
        proto.dataReceived(data)
    if accepted:
        assert sink.accepted_count == 24 and not sink.rejected
        assert len({e.hash for e in sink.accepted}) == 24
    else:
        assert sink.accepted_count == 0 and sink.rejected_by_reason == {"high-hash": 24}
    # the handshake (replies, difficulty and job) is one write, then one write a read of four submits
    assert all(p.transport.writes == 1 + 2 for p, _ in miners)


def test_ablation_measures_both_sides_of_each_lever():
    from hashcoop.pool.tools.bench import ablation

    for name, fn, n in (("merkle_branch", ablation.merkle_branch, 200), ("json", ablation.json_codec, 200),
                        ("notify", ablation.notify, 200), ("share_target", ablation.share_target, 200)):
        r = fn(n)
        assert r["before_us"] > 0 and r["after_us"] > 0, name
        assert r["speedup"] == r["before_us"] / r["after_us"]
