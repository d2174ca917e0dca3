"""``python -m ops.reliability battery``: the hostile-input and fault
tests at full scale (``HASHCOOP_HOSTILE_SCALE=full``), the payout crash
tests and the pool-hopping simulation, in one pytest run whose cases
record their figures through the ``figures`` fixture
(``HASHCOOP_HOSTILE_REPORT``). The report holds every test's outcome and
time (from pytest's JUnit XML) and every figure, by case."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# tests/realnode/test_payout_crash.py runs on Bitcoin Core ($BITCOIND; skipped without it)
DEFAULT_PATHS = ("tests/payouts/test_simulation.py", "tests/hostile", "tests/stratum/test_flood_policy.py", "tests/payouts/test_crash.py",
                 "tests/realnode/test_payout_crash.py")
# issue 14: the Stratum side's bounds on a clock (tests/hostile has them on real sockets), the HTTP side's
DEFAULT_PATHS += ("tests/stratum/test_backpressure.py", "tests/stratum/test_request_budget.py",
                  "tests/http/test_bounds.py", "tests/http/test_limits.py")

# The cases of issue 8 and the tests that check them (substrings of the
# JUnit test ids); the report lists each case's tests, outcomes, printed
# figures and recorded ``figures``, and the cases no test ran for.
CASES = {
    "fuzzing": ["test_fuzz.py::"],
    "10 MB line": ["test_ten_megabyte_line"],
    "odd JSON": ["test_odd_json.py::"],
    "slowloris": ["test_slowloris", "test_deadlines.py::"],
    "one IP, thousands of connections": ["test_one_address_with_thousands"],
    "reconnect storm": ["test_reconnect_storm"],
    "duplicates": ["test_replaying_an_accepted_share", "test_two_shares_differing_only_in_allowed_version_bits"],
    "ntime and version": ["test_ntime_is_accepted", "test_version_bits_outside"],
    "difficulty changes": ["test_shares_are_credited_at_the_difficulty"],
    "suggest_difficulty and d=": ["test_suggested_difficulty_stays", "test_password_difficulty_stays"],
    "block after a tip change": ["test_tip_change.py::"],
    "extranonce1": ["extranonce1"],
    "flooding": ["test_flood"],
    "node outage": ["test_node_outage", "test_a_block_found_during_an_outage", "test_a_stuck_node"],
    "submitblock answers": ["test_every_submitblock_answer"],
    "Redis killed": ["test_faults_redis", "redis_kill", "redis-kill"],
    "ledger stopped, payout killed": ["test_crash.py::", "test_payout_crash.py::", "test_faults_ledger.py::", "test_faults_payout"],
    "block withholding": ["test_withholding"],
    "pool hopping": ["test_simulation.py::"],
    # issue 14, the Stratum side
    "Stratum cost per byte": ["test_every_input_class_costs_little_per_byte", "test_with_the_default_budgets_every_class"],
    "Stratum peer that never reads": ["test_a_peer_that_never_reads", "tests/stratum/test_backpressure.py::",
                                      "test_backpressure.py::test_a_peer_that_does_not_read", "test_output_"],
    "Stratum graceful close": ["test_a_share_followed_by_garbage", "test_bad_input_after_a_share", "test_a_closed_connection"],
    "Stratum request budget": ["test_request_budget.py::"],
    "Stratum ten hostile peers": ["test_ten_hostile_peers"],
    # issue 14, the HTTP side
    "HTTP pipelined, never reads": ["test_pipelined_requests_from_a_client_that_never_reads", "test_cpu_per_megabyte_of_pipelined",
                                    "test_plain_twisted_answers_every", "test_pipelined_requests_wait", "test_small_pipelined",
                                    "test_every_pipelined_request"],
    "HTTP slow readers": ["test_a_reader_that_stops", "test_a_peer_that_stops_reading", "test_many_stalled_peers",
                          "test_a_slow_steady_reader", "test_a_response_still_being_written", "test_the_idle_clock_does_not_run"],
    "HTTP trickled requests and bodies": ["test_a_trickled_request", "test_a_request_trickled_in", "test_each_request_has_its_own",
                                         "test_pipelined_requests_waiting_for_a_slow_reader", "test_a_request_body_is_refused",
                                         "test_a_small_body"],
    "HTTP idle connections": ["test_idle_connections_are_capped", "test_idle_keep_alive_connections", "test_connections_beyond",
                              "test_refusals_get_one_log_line", "test_a_unix_socket_peer"],
}


def case_of(test_id: str) -> list[str]:
    return [c for c, pats in CASES.items() if any(p in test_id for p in pats)]


def parse_junit(path: Path) -> list[dict]:
    out = []
    try:
        root = ET.parse(path).getroot()
    except (FileNotFoundError, ET.ParseError):
        return out
    for tc in root.iter("testcase"):
        outcome = "passed"
        message = None
        printed = []
        for child in tc:
            if child.tag == "system-out" and child.text:
                printed += [x.strip() for x in child.text.splitlines() if x.strip() and not x.startswith("---")]
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "error"
                message = (child.get("message") or "")[:500]
            elif child.tag == "skipped":
                outcome = "skipped"
                message = (child.get("message") or "")[:300]
        cls = (tc.get("classname") or "").replace(".", "/")
        test = f"{cls}.py::{tc.get('name')}" if cls else (tc.get("name") or "?")
        out.append({"test": test, "seconds": round(float(tc.get("time") or 0), 3), "outcome": outcome,
                    **({"message": message} if message else {}), **({"printed": printed[-10:]} if printed else {})})
    return out


def read_figures(path: Path) -> list[dict]:
    out = []
    try:
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    except FileNotFoundError:
        pass
    return out


def collect(tests: list[dict], figures: list[dict], returncode: int, seconds: float, scale: str, paths) -> dict:
    """The battery section of the report (pure)."""
    by_case: dict[str, list] = {}
    for f in figures:
        by_case.setdefault(f.get("case", "?"), []).append({k: v for k, v in f.items() if k not in ("case",)})
    counts: dict[str, int] = {}
    for t in tests:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    bad = [t for t in tests if t["outcome"] in ("failed", "error")]
    cases = {}
    for case in CASES:
        mine = [t for t in tests if case in case_of(t["test"])]
        outcomes: dict[str, int] = {}
        for t in mine:
            outcomes[t["outcome"]] = outcomes.get(t["outcome"], 0) + 1
        cases[case] = {"tests": len(mine), "outcomes": outcomes, "seconds": round(sum(t["seconds"] for t in mine), 2),
                       "printed": [p for t in mine for p in t.get("printed", []) if not p.startswith("figures:")][:10],
                       "figures": [f for f in figures if case in case_of(f.get("test", ""))]}
    return {
        "scale": scale, "paths": list(paths), "seconds": seconds, "pytest_exit": returncode, "counts": counts,
        "failed": bad, "cases": cases, "cases_not_run": [c for c, v in cases.items() if not v["tests"]],
        "figures": by_case, "tests": tests,
        "passed": returncode == 0 and not bad and bool(tests),
    }


def run_battery(paths=DEFAULT_PATHS, scale: str = "full", extra: list[str] | None = None, max_minutes: float | None = None,
                log=print) -> dict:
    # paths that exist (a node id's file part); never none, which would make pytest run the whole suite
    paths = [p for p in paths if (ROOT / p.split("::", 1)[0]).exists()]
    if not paths:
        raise ValueError("battery: none of the paths exists")
    with tempfile.TemporaryDirectory(prefix="hashcoop-battery-") as tmp:
        fig = Path(tmp) / "figures.jsonl"
        junit = Path(tmp) / "junit.xml"
        env = dict(os.environ, HASHCOOP_HOSTILE_SCALE=scale, HASHCOOP_HOSTILE_REPORT=str(fig))
        # the ledger cases on PostgreSQL too, as CI does (.ci/run), when the machine has one
        env.setdefault("HASHCOOP_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
        argv = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", f"--junitxml={junit}",
                "-o", "junit_logging=system-out", "-o", "junit_log_passing_tests=true", "-o", "junit_family=xunit1",
                *paths, *(extra or [])]
        log(f"battery: {' '.join(argv[2:])} (HASHCOOP_HOSTILE_SCALE={scale})")
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env)
        interrupted = False
        try:
            rc = proc.wait(max_minutes * 60 if max_minutes else None)
        except subprocess.TimeoutExpired:
            # out of time: pytest stops at Ctrl-C like this and still writes what ran
            interrupted = True
            log(f"battery: stopping pytest after {max_minutes:g} min")
            proc.send_signal(signal.SIGINT)
            try:
                rc = proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        seconds = time.monotonic() - t0
        res = collect(parse_junit(junit), read_figures(fig), rc, seconds, scale, paths)
        res["interrupted_after_minutes"] = max_minutes if interrupted else None
        return res


def summary(b: dict) -> str:
    lines = [f"battery ({b['scale']}): {b['counts']} in {b['seconds']:.0f} s, pytest exit {b['pytest_exit']} -> "
             f"{'PASS' if b['passed'] else 'FAIL'}"]
    for t in b["failed"]:
        lines.append(f"  {t['outcome']}: {t['test']}: {t.get('message', '')[:200]}")
    for case, c in b["cases"].items():
        if not c["tests"]:
            continue
        lines.append(f"  {case}: {c['tests']} tests {c['outcomes']} in {c['seconds']:.1f} s")
        for p in c["printed"][:3]:
            lines.append(f"    {p[:300]}")
        for f in c["figures"][:5]:
            vals = {k: v for k, v in f.items() if k not in ("test", "scale", "time", "case")}
            lines.append(f"    figures {f.get('case')}: {json.dumps(vals, sort_keys=True, default=str)[:300]}")
    if b["cases_not_run"]:
        lines.append(f"  no test ran for: {', '.join(b['cases_not_run'])}")
    return "\n".join(lines)
