"""Test-wide settings.

Tests marked ``bitcoind`` need a real Bitcoin Core: they run only when the
``BITCOIND`` environment variable names a bitcoind binary, and are skipped
otherwise (no bitcoind can be installed on the project's machines; the
stand-in node covers the same ground there).

Hypothesis runs without its per-example deadline: the property tests check
results, not speed (benchmarks do that), and on a shared machine a busy
moment made an example take 269 ms against the 200 ms default and failed a
correct test. pytest-timeout still stops a test that hangs.
"""
import os
import shutil

import pytest
from hypothesis import settings

settings.register_profile("hashcoop", deadline=None)
settings.load_profile("hashcoop")


def pytest_configure(config):
    # also used outside tests/hostile (tests/payouts/test_crash.py is case payout-kill)
    config.addinivalue_line("markers", "hostile: the hostile-input and fault battery (tests/hostile, RELIABILITY.md)")


def pytest_collection_modifyitems(config, items):
    binary = os.environ.get("BITCOIND")
    if binary and (shutil.which(binary) or os.access(binary, os.X_OK)):
        return
    skip = pytest.mark.skip(reason="set BITCOIND to a bitcoind binary to run tests against a real node")
    for item in items:
        if "bitcoind" in item.keywords:
            item.add_marker(skip)
