"""The pool process's memory diagnostics (``HASHCOOP_MEMDIAG``, pool/tools/bench/poolproc.py)."""
from __future__ import annotations

import json
import sys

from hashcoop.pool.core.keyset import KeySet
from hashcoop.pool.tools.bench import poolproc


class Job:
    def __init__(self, keys):
        self.seen = KeySet()
        for k in keys:
            self.seen.add(k)


class Pool:
    class jobs:
        jobs = {"a": Job([1, 2, 3]), "b": Job([4])}

    class accounting:
        @staticmethod
        def buffered():
            return 7

    # a retired job (seen None) counts no keys
    jobs.jobs["c"] = Job([])
    jobs.jobs["c"].seen = None


def test_memdiag_appends_one_json_line_per_call(tmp_path):
    path = tmp_path / "memdiag.jsonl"
    poolproc.memdiag(str(path), Pool)
    poolproc.memdiag(str(path), Pool)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[1])
    assert rec["jobs"] == 3 and rec["seen"] == 4 and rec["buffered"] == 7
    assert rec["smaps"]["Rss"] > 0 and rec["smaps"]["Anonymous"] > 0
    assert rec["blocks"] > 0 and rec["objects"] > 0 and rec["top"]
    pm = rec["pymalloc"]
    assert pm["arenas allocated current"] >= 1 and pm["bytes in allocated blocks"] > 0
    # glibc's figures where there is glibc (this machine); empty elsewhere
    if sys.platform == "linux" and rec["malloc"]:
        assert rec["malloc"]["uordblks"] > 0


def test_pymalloc_stats_leave_stderr_working(capfd):
    stats = poolproc._pymalloc()
    print("still here", file=sys.stderr)
    assert "still here" in capfd.readouterr().err
    assert stats["arenas allocated current"] >= 1


def test_the_soak_report_reads_the_lines_back_in_mb(tmp_path):
    from ops.reliability.soak import memory_breakdown

    path = tmp_path / "memdiag.jsonl"
    poolproc.memdiag(str(path), Pool)
    lines = path.read_text().splitlines() + ['{"t": 1, "smaps"']  # cut short by the stop
    rec = json.loads(lines[0])
    (got,) = memory_breakdown(lines, rec["t"] - 30)
    assert got["t"] == 30 and got["dup_keys"] == 4 and got["jobs"] == 3 and got["buffered"] == 7
    assert got["rss"] == round(rec["smaps"]["Rss"] / 1024, 1) and 0 < got["anon"] <= got["rss"]
    assert got["py_arenas"] == rec["pymalloc"]["arenas allocated current"]
    assert got["py_used"] == round(rec["pymalloc"]["bytes in allocated blocks"] / 2**20, 1)
