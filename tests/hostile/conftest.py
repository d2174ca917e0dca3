"""The hostile battery (see RELIABILITY.md): fast, runs with the rest of the suite.

Two environment variables turn the fast battery into the full one that
``python -m ops.reliability`` runs:

``HASHCOOP_HOSTILE_SCALE``   ``fast`` (default, CI) or ``full`` (the budgets
                             RELIABILITY.md promises: 10^6 fuzz inputs, 100
                             kills a step, ...); read it with ``scale()``.
``HASHCOOP_HOSTILE_REPORT``  a file the ``figures`` fixture appends one JSON
                             line per call to, for the report.
"""
from __future__ import annotations

import json
import os
import time

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "hostile: the hostile-input and fault battery (tests/hostile, RELIABILITY.md)")


def scale() -> str:
    s = os.environ.get("HASHCOOP_HOSTILE_SCALE", "fast")
    if s not in ("fast", "full"):
        raise ValueError(f"HASHCOOP_HOSTILE_SCALE must be fast or full, not {s!r}")
    return s


def full() -> bool:
    return scale() == "full"


@pytest.fixture
def figures(request):
    """``figures(case, **values)``: record what a case measured (inputs
    tried, shares lost, seconds to recover, ...). Printed always; appended
    to $HASHCOOP_HOSTILE_REPORT as a JSON line when that is set."""
    path = os.environ.get("HASHCOOP_HOSTILE_REPORT")

    def record(case: str, **values):
        line = {"case": case, "test": request.node.nodeid, "scale": scale(), "time": time.time(), **values}
        print(f"\nfigures: {json.dumps(line, sort_keys=True, default=str)}")
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, sort_keys=True, default=str) + "\n")

    return record
