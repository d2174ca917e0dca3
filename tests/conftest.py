"""Test-wide settings.

Tests marked ``bitcoind`` run on real Bitcoin software: ``$BITCOIND`` (and
``$BITCOIN_CLI``, ``$MINERD`` where the marker's ``needs`` names them) must
name the binaries. Without them the tests are skipped with the reason, and
the summary counts them. When any of the three variables is set (``.ci/run``
sets them from ``../shared/bitcoin/bin``), a skipped ``bitcoind`` test
fails the run: the real-node suite cannot go missing silently.

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


REAL_TOOLS = ("BITCOIND", "BITCOIN_CLI", "MINERD")


def _usable(var: str) -> bool:
    path = os.environ.get(var)
    return bool(path) and (shutil.which(path) is not None or os.access(path, os.X_OK))


def _required() -> bool:
    return any(os.environ.get(v) for v in REAL_TOOLS)


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = item.get_closest_marker("bitcoind")
        if marker is None:
            continue
        missing = [v for v in ("BITCOIND", *marker.kwargs.get("needs", ())) if not _usable(v)]
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"real Bitcoin software: set {' and '.join(missing)} "
                                                    "to the binaries (see README, Tests)"))


_real = {"passed": 0, "failed": 0, "skipped": []}


def pytest_runtest_logreport(report):
    if "bitcoind" not in report.keywords:
        return
    if report.skipped:
        _real["skipped"].append(report.nodeid)
    elif report.when == "call":
        _real["passed" if report.passed else "failed"] += 1
    elif report.failed:
        _real["failed"] += 1


def pytest_sessionfinish(session, exitstatus):
    if _required() and _real["skipped"] and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    n = _real["passed"] + _real["failed"] + len(_real["skipped"])
    if not n:
        return
    tr = terminalreporter
    tr.write_sep("-", "real Bitcoin Core / cpuminer tests (marker bitcoind)")
    tr.write_line(f"{_real['passed']} passed, {_real['failed']} failed, {len(_real['skipped'])} skipped")
    if _real["skipped"] and _required():
        tr.write_line("FAILED: " + ", ".join(f"{v}={os.environ.get(v, '')!r}" for v in REAL_TOOLS)
                      + " is set, so no bitcoind test may be skipped. Skipped:", red=True)
        for nodeid in _real["skipped"]:
            tr.write_line(f"  {nodeid}", red=True)
    elif _real["skipped"]:
        tr.write_line("skipped: set BITCOIND, BITCOIN_CLI and MINERD to run them (README, Tests)")
