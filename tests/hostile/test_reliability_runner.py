"""The slow runner itself (``python -m ops.reliability``, RELIABILITY.md):
its fuzz loop finds a crash put there on purpose, and its verdicts (soak,
fuzz memory, battery) say what they should on made-up figures."""
from __future__ import annotations

import json
import os
import time

import pytest

from ops.reliability import battery, soak
from ops.reliability.fuzz import Mutator, memory_verdict, run_fuzz, traced_verdict

pytestmark = pytest.mark.hostile


# -- fuzz ----------------------------------------------------------------------------------------


def test_the_mutator_is_the_real_traffic_damaged_and_repeatable():
    a = [Mutator(7).stream() for _ in range(1)]
    m1, m2 = Mutator(7), Mutator(7)
    s1 = [m1.stream() for _ in range(300)]
    assert s1 == [m2.stream() for _ in range(300)] and s1[0] == a[0]
    data = b"\n".join(d for d, _ in s1)
    assert b"mining.submit" in data and b"mining.subscribe" in data and b"mining.authorize" in data
    assert b"NaN" in data or b"Infinity" in data
    assert any(cuts for _, cuts in s1)
    assert len({d for d, _ in s1}) > 250


def test_a_clean_run_reports_inputs_and_no_exception():
    res = run_fuzz(1500, workers=1, seed=3, sample=500, replay=500, log=lambda *_: None)
    assert res["inputs"] == 1500 and res["exceptions"] == 0 and res["leaks"] == []
    assert res["connections"] >= 1500 and res["replies"] > 0 and res["inputs_per_s"] > 0
    assert len(res["rss_mb_per_worker"][0]) >= 3 and len(res["traced_kib_after_replays"][0]) == 3


def test_the_fuzz_loop_finds_a_crash_in_dispatch_and_reports_its_input(monkeypatch):
    from hashcoop.stratum import session

    def crashing(self, mid, params):  # a handler with a bug: a suggestion given as a string raises
        if params and isinstance(params[0], str):
            raise ZeroDivisionError("injected")
        return real(self, mid, params)

    real = session._HANDLERS["mining.suggest_difficulty"]
    monkeypatch.setitem(session._HANDLERS, "mining.suggest_difficulty", crashing)
    res = run_fuzz(4000, workers=1, seed=5, sample=2000, replay=200, log=lambda *_: None)
    assert res["exceptions"] > 0 and not res["passed"]
    assert any(k.startswith("FuzzFailure: ZeroDivisionError escaped dataReceived") for k in res["failure_kinds"]), res["failure_kinds"]
    first = res["first_failures"][0]
    assert "suggest_difficulty" in first["input"] and "injected" in first["error"]
    assert res["inputs"] == 4000  # it went on after the failures, on fresh targets


def test_a_leak_is_reported(monkeypatch):
    from hashcoop.stratum.server import StratumServer

    real = StratumServer.close_session

    def leaky(self, session):  # forgets to release the per-IP count
        ip = session.ip
        n = self.admission.per_ip.get(ip, 0)
        real(self, session)
        if n:
            self.admission.per_ip[ip] = n
    monkeypatch.setattr(StratumServer, "close_session", leaky)
    res = run_fuzz(400, workers=1, seed=9, sample=200, replay=100, log=lambda *_: None)
    assert res["leaks"] and "per-IP counts" in res["leaks"][0]["held"][0]
    assert not res["passed"]


def test_fuzz_memory_verdicts():
    flat = [(i * 1000, i, 100_000_000 + (i % 3) * 100_000) for i in range(11)]
    assert memory_verdict(flat)["flat"]
    growing = [(i * 1000, i, 100_000_000 + i * 2_000_000) for i in range(11)]
    v = memory_verdict(growing)
    assert not v["flat"] and v["growth"] > 0.05
    assert traced_verdict([60_000, 61_000, 61_500]) and not traced_verdict([60_000, 61_000, 90_000])


# -- soak verdict ----------------------------------------------------------------------------------


def samples(n=40, every=10.0, rss0=100e6, growth=0.0, fds=2020, fd_step=0, rate=2000, reject=0.01, sent_factor=1.0):
    """An hour-like soak on paper: RSS growing linearly by ``growth`` after
    the warm-up (the first 10 samples), ``fd_step`` more fds each sample."""
    out = []
    for i in range(n):
        k = max(0, i - 10) / (n - 11)
        shares = int(rate * every)
        rej = round(shares * reject)
        out.append({"t": i * every, "seconds": every, "rss": rss0 * (1 + growth * k), "fds": fds + fd_step * i,
                    "sent": int(shares * sent_factor), "accepted": shares - rej, "rejected": rej, "codes": {"22": rej},
                    "duplicates_sent": rej})
    return out


def judge(s, **kw):
    args = {"warmup_s": 100.0, "expected_reject": 0.01, "target_rate": 2000, "lost": 0}
    args.update(kw)
    return soak.verdict(s, **args)


def test_soak_memory_growth_of_4_percent_passes_and_6_fails():
    ok = judge(samples(growth=0.04))
    assert ok["passed"] and abs(ok["memory"]["growth"] - 0.04) < 1e-9
    bad = judge(samples(growth=0.06))
    assert not bad["passed"] and not bad["checks"]["memory_growth_under_5pct"]
    assert bad["checks"]["fds_flat"] and bad["checks"]["reject_rate_expected"]


def test_soak_memory_sawtooth_without_trend_passes_wherever_the_run_ends():
    # RSS saws by 8% every 12 samples (duplicate keys filled until a block,
    # then freed); ending on a peak fooled the old endpoint medians
    for phase in range(12):
        s = samples(n=370)
        for i, x in enumerate(s):
            x["rss"] *= 1 + 0.08 * (((i + phase) % 12) / 11)
        v = judge(s)
        assert v["passed"] and abs(v["memory"]["growth"]) < 0.01, phase
    s = samples(n=370)
    for i, x in enumerate(s):
        x["rss"] *= 1 + 0.08 * ((i % 12) / 11)
    s[10]["rss"] = s[11]["rss"] = s[12]["rss"] = 100e6  # the first three after the warm-up in a trough,
    s[-3]["rss"] = s[-2]["rss"] = s[-1]["rss"] = 108e6  # the last three on a peak
    v = judge(s)
    assert v["passed"] and v["memory"]["growth_endpoints"] > 0.05


def test_soak_memory_step_is_counted_one_and_a_half_times():
    for step, passes in ((0.03, True), (0.04, False)):
        s = samples(n=370)
        for i, x in enumerate(s):
            if i >= 190:  # halfway through the samples after the warm-up
                x["rss"] *= 1 + step
        v = judge(s)
        assert abs(v["memory"]["growth"] - 1.5 * step) < 0.002
        assert v["checks"]["memory_growth_under_5pct"] is passes


def test_rejudge_a_recorded_soak(tmp_path):
    from ops.reliability import cli

    s = samples(n=370, growth=0.02)
    s[-3]["rss"] = s[-2]["rss"] = s[-1]["rss"] = 108e6  # the old endpoint measure: +8%, failed
    run = {"settings": {"warmup_minutes": 100 / 60, "duplicate_every": 100, "rate": 2000, "load_factor": 2, "miners": 2000},
           "samples": [{**x, "rss": round(x["rss"] / 2**20, 2)} for x in s],
           "verdict": {"passed": False, "lost_shares": 0, "dropped_miners": 0, "checks": {}},
           "minutes_run": 61.6, "shares_sent": 1, "shares_per_s": 2000, "p99_ms": 1, "p99_ms_worst_slice": 2, "max_ms": 3,
           "accounting": {"redis_accepted": 1, "generator_accepted": 1}, "blocks": {}, "pool_cpu_util": 0.3}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"runs": {"soak": run}}))
    assert cli.main(["--report", str(path), "rejudge"]) == 0
    got = json.loads(path.read_text())["runs"]["soak"]
    assert got["verdict_at_run"] == run["verdict"]
    m = got["verdict"]["memory"]
    assert got["verdict"]["passed"] and 0.015 < m["growth"] < 0.025 and m["growth_endpoints"] > 0.05
    assert 95 < m["rss_mb_after_warmup"] < 97  # MB in the report, MB in the verdict
    # judged twice: the verdict it was run with stays
    assert cli.main(["--report", str(path), "rejudge"]) == 0
    assert json.loads(path.read_text())["runs"]["soak"]["verdict_at_run"] == run["verdict"]
    run["samples"][-1]["fds"] += 500
    path.write_text(json.dumps({"runs": {"soak": run}}))
    assert cli.main(["--report", str(path), "rejudge"]) == 1


def test_soak_memory_before_the_warmup_does_not_count():
    s = samples()
    for x in s[:10]:
        x["rss"] *= 0.5  # the pool grew into its working size during the warm-up
    assert judge(s)["passed"]


def test_soak_fd_drift_fails():
    assert judge(samples(fd_step=0))["checks"]["fds_flat"]
    v = judge(samples(fd_step=2))  # 2 descriptors more every 10 s: 60 over the run
    assert not v["passed"] and not v["checks"]["fds_flat"] and v["fds"]["spread"] > v["fds"]["slack"]
    s = samples()
    s[25]["fds"] += 5  # a transient connection to the node: within the slack
    assert judge(s)["checks"]["fds_flat"]


def test_soak_reject_rate_off_fails():
    assert judge(samples(reject=0.011))["checks"]["reject_rate_expected"]
    for r in (0.0, 0.005, 0.02):
        v = judge(samples(reject=r))
        assert not v["passed"] and not v["checks"]["reject_rate_expected"], r
    assert judge(samples(reject=0.0), expected_reject=0.0)["checks"]["reject_rate_expected"]


def test_soak_lost_shares_dropped_miners_and_short_load_fail():
    assert not judge(samples(), lost=1)["checks"]["no_lost_shares"]
    assert not judge(samples(), lost=None)["checks"]["no_lost_shares"]
    assert not judge(samples(), dropped_miners=3)["passed"]
    v = judge(samples(sent_factor=0.9))
    assert not v["checks"]["load_held"] and v["slices_under_load"]


# -- battery ------------------------------------------------------------------------------------


def test_battery_report_groups_tests_and_figures_by_case(tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text("""<?xml version="1.0"?><testsuites><testsuite>
<testcase classname="tests.hostile.test_connections" name="test_reconnect_storm_after_kill_9" time="12.5">
<system-out>
reconnect storm: 3000 miners, kill -9, restart: 99% back and authorized 4.20s after the kill
</system-out></testcase>
<testcase classname="tests.hostile.test_faults_node" name="test_node_outage_keeps_miners_working" time="30"/>
<testcase classname="tests.payouts.test_crash" name="test_kill_at_every_step_on_postgresql" time="0.1">
<skipped message="no postgres"/></testcase>
<testcase classname="tests.hostile.test_fuzz" name="test_fuzz_stratum_lines" time="3"><failure message="boom"/></testcase>
</testsuite></testsuites>""")
    figs = tmp_path / "figures.jsonl"
    figs.write_text(json.dumps({"case": "node-outage", "test": "tests/hostile/test_faults_node.py::test_node_outage_keeps_miners_working",
                                "seconds_to_recover": 2.5}) + "\n")
    res = battery.collect(battery.parse_junit(xml), battery.read_figures(figs), 1, 50.0, "full", ["tests/hostile"])
    assert not res["passed"] and res["counts"] == {"passed": 2, "skipped": 1, "failed": 1}
    c = res["cases"]
    assert c["reconnect storm"]["outcomes"] == {"passed": 1} and "99% back" in c["reconnect storm"]["printed"][0]
    assert c["node outage"]["figures"][0]["seconds_to_recover"] == 2.5
    assert c["ledger stopped, payout killed"]["outcomes"] == {"skipped": 1}
    assert c["fuzzing"]["outcomes"] == {"failed": 1}
    assert "block withholding" in res["cases_not_run"] and "reconnect storm" not in res["cases_not_run"]
    assert "FAIL" in battery.summary(res)


# -- soak smoke ----------------------------------------------------------------------------------------


@pytest.mark.skipif(os.path.exists("/tmp/hashcoop-bench.running"), reason="a pinned benchmark is running")
def test_soak_smoke_run(tmp_path):
    """The whole soak for 12 s at a tiny load: the stack comes up, samples are
    taken, Redis matches the miners, and the verdict passes."""
    t0 = time.monotonic()
    res = soak.run_soak(minutes=0.2, peak_miners=10, peak_rate=25, sample_seconds=3, warmup_minutes=0.05,
                        duplicate_every=10, auto_mine=4, pool_cpus=None, load_cpus=None, working_tree=True,
                        log=lambda *_: None)
    v = res["verdict"]
    assert v["lost_shares"] == 0 and res["accounting"]["exact"]
    assert len(res["samples"]) >= 3 and all(s["fds"] > 0 and s["rss"] > 0 for s in res["samples"])
    assert v["rejects"]["codes"].get("22", 0) > 0 and v["checks"]["reject_rate_expected"], v["rejects"]
    assert res["blocks"]["height_end"] > res["blocks"]["height_start"]  # the node mined: tip changes
    # the pool's own account of its memory, from the start of the load
    mem = res["memory_breakdown"]
    assert mem and mem[0]["py_arenas"] > 0 and mem[0]["rss"] > 0 and mem[0]["t"] < 5
    assert v["passed"], v["checks"]
    assert time.monotonic() - t0 < 60


def test_battery_never_runs_the_whole_suite_for_paths_that_do_not_exist():
    with pytest.raises(ValueError, match="none of the paths"):
        battery.run_battery(paths=["tests/hostile/no_such_file.py::test_x"], log=lambda *_: None)


def test_soak_stall_plan_stops_and_resumes_redis_on_time_and_never_near_the_end():
    plan = soak.StallPlan(every=900, seconds=60, first=300 + 900, end=3600)
    actions = [(t, a) for t in range(0, 3600, 10) if (a := plan.step(t))]
    assert actions == [(1200, "stop"), (1260, "resume"), (2100, "stop"), (2160, "resume"), (3000, "stop"), (3060, "resume")]
    assert plan.stalls[0] == {"stopped": 1200, "resumed": 1260} and len(plan.stalls) == 3
    assert not plan.stopped
    short = soak.StallPlan(every=900, seconds=60, first=300 + 900, end=3150)
    assert [t for t in range(0, 3150, 10) if short.step(t) == "stop"] == [1200, 2100]  # 3000: over too near the end
    never = soak.StallPlan(every=None, seconds=60, first=300, end=3600)
    assert all(never.step(t) is None for t in range(0, 3600, 10))
    # a stall lasts until the first slice at or after its end
    odd = soak.StallPlan(every=100, seconds=25, first=0, end=3600)
    assert [odd.step(t) for t in (0, 10, 20, 30, 40)] == ["stop", None, None, "resume", None]
