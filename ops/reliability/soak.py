"""``python -m ops.reliability soak``: the pool at twice its configured
peak load for an hour (``--minutes``), watched every ``--sample-seconds``.

The peak is the operator's figure for the busiest hour they plan for
(``--peak-miners``, ``--peak-rate`` shares/s); the soak runs
``--load-factor`` (2) times it. The stack is the benchmark's
(``hashcoop.pool.tools.bench.stack``, ``hashcoop bench``): a real redis-server with AOF,
the stand-in node, the pool as its own process -- ``hashcoop run`` with
Redis accounting, through ``hashcoop.pool.tools.bench.poolproc``, which adds a
once-a-second dump of its counters -- and the load generators
(``hashcoop.pool.tools.bench.loadgen``), pool on one core and everything else on the
other.

What makes it a soak and not a benchmark:

* the chain moves: the stand-in node's blocks are easy enough
  (``--bits``, default one hash in 2^18) that it mines one of its own every
  ``--auto-mine`` seconds and the pool finds some too; every tip change is
  a clean job, and shares in flight become stale rejects;
* a known fraction of the shares are invalid: every ``--duplicate-every``-th
  share is the miner's previous share again (a duplicate, or stale when a
  new job came in between), so the reject rate has an expected level;
* with ``--redis-stall-every S`` Redis is stopped (SIGSTOP) for
  ``--redis-stall-seconds`` every S seconds after the warm-up: the
  accounting falls behind by that much, spills to its journal and catches
  up, and the memory verdict shows whether the backlog left memory behind;
* the load is open loop in ``--sample-seconds`` slices; after each slice
  the pool's RSS, open file descriptors and threads, the accepted and
  rejected counts and the reply latency (p50/p99/max, as the miners saw
  it) are sampled.

The pool also writes where its memory is every 30 s (``HASHCOOP_MEMDIAG``,
``hashcoop.pool.tools.bench.poolproc``); the report carries it as ``memory_breakdown``:
CPython's arenas, glibc's heap, the duplicate keys held, the backlog.

The verdict (``verdict()``, a pure function of the samples):

* memory: RSS at the end within 5% of RSS after the warm-up, both read
  off the least-squares line through the samples after
  ``--warmup-minutes`` (``memory_growth``);
* file descriptors: flat after the warm-up (max - min within
  ``max(10, 1%)``);
* rejects: the reject rate within 25% of the injected fraction;
* load: every slice sent at least 95% of the shares it was due;
* no lost shares: after a clean stop, Redis holds exactly the accepted
  shares the miners were told about (``Bench.accounting_check``);
* no miner dropped by the pool.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

# -- the verdict: pure ----------------------------------------------------------------------------

MEMORY_LIMIT = 0.05
REJECT_TOLERANCE = 0.25
LOAD_MIN = 0.95


def memory_growth(samples: list[dict], warmup_s: float) -> dict:
    """RSS growth after the warm-up: the least-squares line through every
    sample taken after ``warmup_s``, its value at the last sample against
    its value at the first.

    RSS saws by a few MB within every few minutes (a job's duplicate keys
    fill until the next block and are freed with it), so comparing a few
    samples at each end measured where the sawtooth stood in two 30-second
    windows as much as any growth. A line through all of them follows the
    trend: a steady leak is measured in full, a step up is counted about
    one and a half times (a step halfway through a run of height h moves
    the fitted line by 1.5 h), and the sawtooth averages out. The old
    measure (medians of the first and last three samples) is reported
    beside it as ``growth_endpoints``."""
    after = [s for s in samples if s["t"] >= warmup_s]
    if len(after) < 2:
        return {"growth": None, "samples_after_warmup": len(after)}
    from hashcoop.pool.tools.bench.stats import slope_per_minute

    points = [(s["t"], s["rss"]) for s in after]
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mr = sum(r for _, r in points) / n
    slope = slope_per_minute(points) / 60  # the least-squares line passes through (mt, mr)
    start = mr + slope * (points[0][0] - mt)
    end = mr + slope * (points[-1][0] - mt)
    k = min(3, n // 2)
    base3 = statistics.median(s["rss"] for s in after[:k])
    end3 = statistics.median(s["rss"] for s in after[-k:])
    return {"growth": (end - start) / start, "rss_mb_after_warmup": start / 2**20, "rss_mb_end": end / 2**20,
            "rss_mb_per_min": slope * 60 / 2**20, "growth_endpoints": (end3 - base3) / base3,
            "rss_mb_min": min(s["rss"] for s in after) / 2**20, "rss_mb_max": max(s["rss"] for s in after) / 2**20,
            "samples_after_warmup": n}


def fd_drift(samples: list[dict], warmup_s: float) -> dict:
    after = [s["fds"] for s in samples if s["t"] >= warmup_s]
    if not after:
        return {"flat": None}
    slack = max(10, math.ceil(0.01 * after[0]))
    spread = max(after) - min(after)
    return {"first": after[0], "last": after[-1], "min": min(after), "max": max(after), "spread": spread,
            "slack": slack, "flat": spread <= slack}


def reject_rate(samples: list[dict], expected: float, tolerance: float = REJECT_TOLERANCE) -> dict:
    acc = sum(s["accepted"] for s in samples)
    rej = sum(s["rejected"] for s in samples)
    codes: dict[str, int] = {}
    for s in samples:
        for c, n in s.get("codes", {}).items():
            codes[str(c)] = codes.get(str(c), 0) + n
    rate = rej / (acc + rej) if acc + rej else None
    ok = rate is not None and abs(rate - expected) <= tolerance * expected if expected > 0 else rate == 0
    return {"accepted": acc, "rejected": rej, "rate": rate, "expected": expected, "tolerance": tolerance,
            "codes": codes, "duplicates_sent": sum(s.get("duplicates_sent", 0) for s in samples), "ok": ok}


def verdict(samples: list[dict], *, warmup_s: float, expected_reject: float, target_rate: float,
            lost: int | None, dropped_miners: int = 0, memory_limit: float = MEMORY_LIMIT,
            reject_tolerance: float = REJECT_TOLERANCE, load_min: float = LOAD_MIN) -> dict:
    """Each sample: ``t`` (seconds since the load started), ``seconds`` (of
    its slice), ``rss``, ``fds``, ``sent``, ``accepted``, ``rejected``,
    ``codes``, ``duplicates_sent``. ``lost``: generator-accepted minus
    Redis-accepted shares (None: not checked)."""
    mem = memory_growth(samples, warmup_s)
    fds = fd_drift(samples, warmup_s)
    rej = reject_rate(samples, expected_reject, reject_tolerance)
    low = [s["t"] for s in samples if s["seconds"] > 0 and s["sent"] < load_min * target_rate * s["seconds"]]
    checks = {
        "memory_growth_under_5pct": mem["growth"] is not None and mem["growth"] < memory_limit,
        "fds_flat": bool(fds.get("flat")),
        "reject_rate_expected": bool(rej["ok"]),
        "load_held": bool(samples) and not low,
        "no_lost_shares": lost == 0,
        "no_miner_dropped": dropped_miners == 0,
    }
    return {"passed": all(checks.values()), "checks": checks, "memory": mem, "fds": fds, "rejects": rej,
            "slices_under_load": low[:20], "lost_shares": lost, "dropped_miners": dropped_miners}


def memory_breakdown(lines, t0: float) -> list[dict]:
    """The pool's own account of its memory (``HASHCOOP_MEMDIAG`` lines of
    ``hashcoop.pool.tools.bench.poolproc``, one every 30 s), in MB: resident and
    anonymous; CPython's small-object arenas (1 MiB each) and the bytes in
    and out of use in them; glibc's heap in use and free; the duplicate
    keys the jobs hold and the shares waiting for Redis."""
    out = []
    mb = 2**20
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue  # the line being written when the pool stopped
        sm, pm, gm = r.get("smaps", {}), r.get("pymalloc", {}), r.get("malloc", {})
        out.append({
            "t": round(r["t"] - t0, 1), "rss": round(sm.get("Rss", 0) / 1024, 1), "anon": round(sm.get("Anonymous", 0) / 1024, 1),
            "py_arenas": pm.get("arenas allocated current"), "py_used": round(pm.get("bytes in allocated blocks", 0) / mb, 1),
            "py_free": round(pm.get("bytes in available blocks", 0) / mb, 1),
            "malloc_used": round(gm.get("uordblks", 0) / mb, 1), "malloc_free": round(gm.get("fordblks", 0) / mb, 1),
            "dup_keys": r.get("seen"), "jobs": r.get("jobs"), "buffered": r.get("buffered"),
        })
    return out


def rejudge(run: dict) -> dict:
    """A soak section of a report, judged again by this ``verdict`` from the
    samples it recorded (RSS in MB there); the verdict it was written with
    is kept as ``verdict_at_run``."""
    st = run["settings"]
    samples = [{**s, "rss": s["rss"] * 2**20} for s in run["samples"]]
    old = run["verdict"]
    v = verdict(samples, warmup_s=st["warmup_minutes"] * 60,
                expected_reject=1 / st["duplicate_every"] if st["duplicate_every"] else 0.0,
                target_rate=st["rate"], lost=old["lost_shares"], dropped_miners=old["dropped_miners"])
    out = dict(run)
    out.setdefault("verdict_at_run", old)
    out["verdict"] = v
    return out


# -- the run ------------------------------------------------------------------------------------------

SOAK_BITS = "1e3fffff"  # one hash in 2^18 meets it: the node mines in about a second, the pool finds blocks now and then


class StallPlan:
    """When the soak stops Redis and lets it go again: the first stall at
    ``first`` seconds, one every ``every`` seconds after that, each lasting
    ``seconds`` (rounded up to the next sample), and none that would not
    be over two minutes before ``end`` (the accounting must have caught up
    when the run ends). ``step(t)`` is called before each sample slice."""

    def __init__(self, *, every: float | None, seconds: float, first: float, end: float):
        self.every = every
        self.seconds = seconds
        self.next = first if every else None
        self.end = end
        self.until: float | None = None
        self.stalls: list[dict] = []

    @property
    def stopped(self) -> bool:
        return self.until is not None

    def step(self, t: float) -> str | None:
        if self.until is not None:
            if t < self.until:
                return None
            self.until = None
            self.stalls[-1]["resumed"] = round(t, 2)
            return "resume"
        if self.next is not None and t >= self.next and t + self.seconds < self.end - 120:
            self.until = t + self.seconds
            self.next = t + self.every
            self.stalls.append({"stopped": round(t, 2)})
            return "stop"
        return None


def git_head() -> str | None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return r.stdout.strip() or None


def snapshot_head(dest: Path) -> tuple[str, str]:
    """``git archive HEAD`` into ``dest``: (directory, commit)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    commit = git_head()
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", commit], cwd=root, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return str(dest), commit


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def bench_args(**overrides):
    """The benchmark's own defaults (``hashcoop bench``), with overrides."""
    import argparse

    from hashcoop.pool.tools.bench.cli import add_parser

    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["bench"])
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


def run_soak(*, minutes: float = 60.0, peak_miners: int = 1000, peak_rate: float = 1000.0, load_factor: float = 2.0,
             sample_seconds: float = 10.0, warmup_minutes: float | None = None, duplicate_every: int = 100,
             bits: str = SOAK_BITS, auto_mine: float = 45.0, generators: int = 2, pool_cpus: str | None = "0",
             load_cpus: str | None = "1", redis_nice: int = 10, workdir: str | None = None, working_tree: bool = False,
             stall_every: float | None = None, stall_seconds: float = 60.0, log=print) -> dict:
    from hashcoop.pool.tools.bench import stats
    from hashcoop.pool.tools.bench.cli import TINY_DIFFICULTY, Bench, pool_config
    from hashcoop.pool.tools.bench.loadgen import hist_merge, hist_percentile
    from hashcoop.pool.tools.bench.stack import DevNode, PoolProcess, Redis, call_all
    from hashcoop.pool.tools.demo import free_port

    miners = int(round(peak_miners * load_factor))
    rate = peak_rate * load_factor
    if warmup_minutes is None:
        warmup_minutes = min(5.0, minutes / 5)
    no_pin = pool_cpus is None and load_cpus is None
    bench = Bench(bench_args(generators=generators, no_pin=no_pin, pool_cpus=pool_cpus, load_cpus=load_cpus))
    bench.log = lambda msg: log(f"[soak {time.strftime('%H:%M:%S')}] {msg}")
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="hashcoop-soak-"))
    base.mkdir(parents=True, exist_ok=True)
    settings = {"minutes": minutes, "peak_miners": peak_miners, "peak_rate": peak_rate, "load_factor": load_factor,
                "miners": miners, "rate": rate, "sample_seconds": sample_seconds, "warmup_minutes": warmup_minutes,
                "duplicate_every": duplicate_every, "bits": bits, "auto_mine": auto_mine, "generators": generators,
                "pool_cpus": pool_cpus, "load_cpus": load_cpus, "redis_nice": redis_nice,
                "stall_every": stall_every, "stall_seconds": stall_seconds}
    out: dict = {"settings": settings}
    samples: list[dict] = []
    redis = None
    try:
        # the pool from a snapshot of the last commit (others may be editing the tree), unless told otherwise
        src, commit = (None, None) if working_tree else snapshot_head(base / "src")
        settings["pool_commit"] = commit or f"working tree at {git_head()}"
        redis = bench._own(Redis(base / "redis", bench.redis_cpus))
        if redis_nice:
            os.setpriority(os.PRIO_PROCESS, redis.proc.pid, redis_nice)
        node = bench._own(DevNode(base / "node", bench.load_cpus, "--bits", bits, "--auto-mine", str(auto_mine)))
        port = free_port()
        d = base / "pool0"
        d.mkdir(parents=True, exist_ok=True)
        cfg = pool_config(d / "pool.toml", port=port, node=node, redis_url=redis.url, data_dir=d / "data",
                          difficulty=TINY_DIFFICULTY)
        # the pool writes where its memory is every 30 s (hashcoop.pool.tools.bench.poolproc)
        memdiag = d / "memdiag.jsonl"
        pool = bench._own(PoolProcess(cfg, d, bench.pool_cpus, port, src=src, env={"HASHCOOP_MEMDIAG": str(memdiag)}))
        pool.wait_ready()
        gens = bench.generators(generators)
        bench.log(f"{miners} miners ({load_factor:g} x peak {peak_miners}), {rate:,.0f} shares/s ({load_factor:g} x peak "
                  f"{peak_rate:,.0f}), 1 in {duplicate_every} a duplicate, for {minutes:g} min; pool pid {pool.pid}, "
                  f"node auto-mines every {auto_mine:g} s at bits {bits}")
        connect_s = bench.connect(gens, port, 0, miners)
        height0 = node.rpc("getblockcount")
        before = pool.stats()
        bench.log(f"connected in {connect_s:.1f} s; height {height0}; RSS {pool.rss() / 2**20:.1f} MB, {fd_count(pool.pid)} fds")
        load0 = bench.other_load()
        t_start = time.monotonic()
        t_start_wall = time.time()  # the pool's memory lines carry wall-clock times
        end = t_start + minutes * 60
        cpu0 = pool.cpu()
        prev_stats = before
        prevhashes = {before.get("prevhash")}
        tips = 0
        hist_all = None
        next_log = t_start
        plan = StallPlan(every=stall_every, seconds=stall_seconds, first=warmup_minutes * 60 + (stall_every or 0),
                         end=minutes * 60)
        while time.monotonic() < end:
            secs = min(sample_seconds, max(1.0, end - time.monotonic()))
            t0 = time.monotonic()
            # Redis stops answering (SIGSTOP): the accounting falls behind by
            # stall_seconds of shares, then catches up; memory must come back
            action = plan.step(t0 - t_start)
            if action == "resume":
                redis.proc.send_signal(signal.SIGCONT)
            elif action == "stop":
                redis.proc.send_signal(signal.SIGSTOP)
                bench.log(f"Redis stopped for {stall_seconds:g} s (t={t0 - t_start:.0f}s)")
            res = call_all(gens, 120 + secs, cmd="rate", rate=rate / generators, seconds=secs, warmup=0,
                           duplicate_every=duplicate_every)
            now = time.monotonic()
            st = pool.stats()
            hist = hist_merge(r["hist"] for r in res)
            hist_all = hist if hist_all is None else [a + b for a, b in zip(hist_all, hist)]
            codes: dict[str, int] = {}
            for r in res:
                for c, n in r["codes"].items():
                    codes[str(c)] = codes.get(str(c), 0) + n
            if st.get("prevhash") not in prevhashes:
                tips += 1
                prevhashes.add(st.get("prevhash"))
            s = {
                "t": round(t0 - t_start, 2), "seconds": secs, "wall": round(now - t0, 3),
                "rss": pool.rss(), "fds": fd_count(pool.pid), "threads": threads(pool.pid),
                "sent": sum(r["sent"] for r in res), "duplicates_sent": sum(r.get("duplicates_sent", 0) for r in res),
                "accepted": sum(r["accepted"] for r in res), "rejected": sum(r["rejected"] for r in res), "codes": codes,
                "p50_ms": _ms(hist_percentile(hist, 0.5)), "p99_ms": _ms(hist_percentile(hist, 0.99)),
                "max_ms": round(max(r["max"] for r in res) * 1000, 2),
                "miners": sum(r["miners"] for r in res), "failed": sum(r["failed"] for r in res),
                "pool_accepted": st.get("accepted", 0) - prev_stats.get("accepted", 0),
                "pool_rejected": st.get("rejected", 0) - prev_stats.get("rejected", 0),
                "buffered": st.get("buffered"), "height": st.get("height"), "sessions": st.get("sessions"),
                "pool_cpu_s": round(pool.cpu() - cpu0, 2), "redis_stopped": plan.stopped,
            }
            prev_stats = st
            samples.append(s)
            if now >= next_log:
                next_log = now + 60
                bench.log(f"t={s['t']:.0f}s RSS {s['rss'] / 2**20:.1f} MB, {s['fds']} fds, {s['threads']} threads; "
                          f"sent {s['sent']}, accepted {s['accepted']}, rejected {s['rejected']} {codes}; p99 {s['p99_ms']} ms; "
                          f"height {s['height']}, backlog {s['buffered']}, miners {s['miners']}")
        wall = time.monotonic() - t_start
        foreign = bench.foreign(load0, wall)
        pool_cpu = pool.cpu() - cpu0
        height1 = node.rpc("getblockcount")
        info = call_all(gens, cmd="info")
        dropped = sum(i["failed"] for i in info)
        # stop the pool cleanly (it writes every accepted share), then compare Redis with the miners
        acct = bench.accounting_check(redis, [pool], gens, [before])
        # blocks the pool found: its coinbase tag in the chain since the start
        pool_blocks = _pool_blocks(node, height0, height1)
        try:
            redis_blocks = redis.client().zcard("hashcoop:blocks")  # block shares the accounting recorded
        except Exception:  # a figure, not a check
            redis_blocks = None
        lost = acct["generator_accepted"] - acct["redis_accepted"]
        v = verdict(samples, warmup_s=warmup_minutes * 60, expected_reject=1 / duplicate_every if duplicate_every else 0.0,
                    target_rate=rate, lost=lost, dropped_miners=dropped)
        total_sent = sum(s["sent"] for s in samples)
        out.update({
            "machine": bench.results["machine"], "minutes_run": wall / 60, "connect_seconds": connect_s,
            "shares_sent": total_sent, "shares_per_s": total_sent / wall, "pool_cpu_util": pool_cpu / wall,
            "p50_ms": _ms(hist_percentile(hist_all, 0.5)) if hist_all else None,
            "p99_ms": _ms(hist_percentile(hist_all, 0.99)) if hist_all else None,
            "p999_ms": _ms(hist_percentile(hist_all, 0.999)) if hist_all else None,
            "max_ms": max((s["max_ms"] for s in samples), default=None),
            "p99_ms_worst_slice": max((s["p99_ms"] for s in samples if s["p99_ms"] is not None), default=None),
            "rss_mb_per_min_slope_after_warmup": stats.slope_per_minute(
                [(s["t"], s["rss"] / 2**20) for s in samples if s["t"] >= warmup_minutes * 60]),
            "blocks": {"height_start": height0, "height_end": height1, "found_by_pool": pool_blocks, "block_shares_in_redis": redis_blocks,
                       "tip_changes_seen_in_samples": tips},
            "accounting": acct, "other_programs_cpu_util": foreign, "redis_stalls": plan.stalls,
            "memory_breakdown": memory_breakdown(memdiag.read_text().splitlines() if memdiag.exists() else [],
                                                 t_start_wall),
            "verdict": v,
            "samples": [{k: (round(x / 2**20, 2) if k == "rss" else x) for k, x in s.items()} for s in samples],
        })
        return out
    finally:
        if redis is not None:
            try:
                redis.proc.send_signal(signal.SIGCONT)  # a stall cut short: let it stop cleanly
            except OSError:
                pass
        bench.teardown()
        if not workdir:
            shutil.rmtree(base, ignore_errors=True)


def _ms(seconds):
    if seconds is None:
        return None
    return round(seconds * 1000, 3) if math.isfinite(seconds) else seconds


def _pool_blocks(node, h0: int, h1: int) -> int | None:
    try:
        n = 0
        for h in range(h0 + 1, h1 + 1):
            block = node.rpc("getblock", node.rpc("getblockhash", h), 2)
            sig = block["tx"][0]["vin"][0].get("coinbase", "")
            if b"/hashcoop-bench/".hex() in sig:
                n += 1
        return n
    except Exception:  # a figure, not a check
        return None


def summary(s: dict) -> str:
    v = s["verdict"]
    st = s["settings"]
    m = v["memory"]
    f = v["fds"]
    r = v["rejects"]
    a = s["accounting"]
    checks = ", ".join(f"{k} {'ok' if ok else 'FAILED'}" for k, ok in v["checks"].items())
    growth = f"{m['growth']:+.2%}" if m.get("growth") is not None else "n/a"
    if m.get("growth_endpoints") is not None:
        growth += f", fitted line; {m['growth_endpoints']:+.2%} between the first and last three samples"
    rate = f"{r['rate']:.3%}" if r.get("rate") is not None else "n/a"
    return (f"soak: {s['minutes_run']:.1f} min at {st['load_factor']:g} x peak ({st['miners']} miners, {st['rate']:,.0f} shares/s; "
            f"achieved {s['shares_per_s']:,.0f}/s), {s['shares_sent']:,} shares\n"
            f"  memory {m.get('rss_mb_after_warmup', 0):.1f} -> {m.get('rss_mb_end', 0):.1f} MB after warm-up ({growth}); "
            f"fds {f.get('first')} -> {f.get('last')} (spread {f.get('spread')}); reject rate {rate} (expected {r['expected']:.2%}, "
            f"codes {r['codes']}); p99 {s['p99_ms']} ms (worst slice {s['p99_ms_worst_slice']} ms), max {s['max_ms']} ms\n"
            f"  Redis {a['redis_accepted']:,} accepted = miners told {a['generator_accepted']:,}: lost {v['lost_shares']}; "
            f"blocks {s['blocks']}; pool CPU {s['pool_cpu_util']:.0%}\n"
            f"  {checks} -> {'PASS' if v['passed'] else 'FAIL'}")
