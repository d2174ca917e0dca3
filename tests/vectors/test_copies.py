"""The recorded vectors in the repository are the recordings, byte for byte."""
import hashlib
from pathlib import Path

import pytest

from tests.vectors import DIR

DIGESTS = {
    "bitcoind-regtest.json": "d88854e97e7715e3379e60168fedcff101d79bb4ea74fe0d68393c25bc5379e1",
    "ckpool-cpuminer-regtest.json": "1e83699099017390791f51cfd8ff75cd8d0a94cc17eed27985863f2924538c20",
}
SHARED = DIR.parents[2] / "shared" / "vectors"


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_copy_is_the_recording(name):
    assert hashlib.sha256((DIR / name).read_bytes()).hexdigest() == DIGESTS[name]


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_copy_matches_the_shared_recording_when_present(name):
    shared = SHARED / name
    if not shared.exists():
        pytest.skip(f"{shared} is not on this machine (a fresh clone elsewhere): the digest above still holds")
    assert (DIR / name).read_bytes() == Path(shared).read_bytes()
