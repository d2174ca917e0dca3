"""``hashcoop bench``: the pool measured as an operator feels it.

Every scenario starts its own stack: a real redis-server (AOF, everysec),
the stand-in node (``hashcoop devnode``), the pool as a separate process
(``hashcoop run`` with Redis accounting on, pinned to ``--pool-cpus``) and
the load generators (``hashcoop.pool.tools.bench.loadgen``, pinned to ``--load-cpus``),
all over loopback. Nothing in the pool knows it is being measured: the
bench only chooses a configuration (a port with a tiny fixed difficulty).

Scenarios:

``hotpath``     in-process CPU per share (accepted, rejected), per payload
                share and per broadcast miner (hashcoop.pool.tools.bench.hotpath; with
                --pool-src, of an earlier tree)
``ablation``    levers built in from the start, each measured the pool's way
                and the naive way (hashcoop.pool.tools.bench.ablation)
``throughput``  accepted shares/s at saturation (miners keep submits in
                flight), server CPU per share, Redis batch sizes and flush
                latency, and Redis totals checked against what the
                generator saw accepted
``reject``      validated-and-rejected shares/s: random nonces at
                difficulty 1 (high-hash)
``latency``     submit-to-reply p50/p99 at a fixed load (5,000 miners,
                5,000 shares/s in all) and the pool's RSS over the run
``fanout``      tip change to the last of N idle miners holding the clean
                job (N = 1,000, 5,000, 10,000), and RSS per idle miner
``scaleout``    two pool processes on one port (SO_REUSEPORT) and one
                Redis: combined shares/s, extranonce1 never shared,
                accounting exact
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import twisted

from hashcoop.pool.core.btc.address import get_network, script_to_address
from hashcoop.pool.tools.bench import stats
from hashcoop.pool.tools.bench.loadgen import hist_merge, hist_percentile
from hashcoop.pool.tools.bench.stack import (
    DevNode,
    LoadGen,
    PoolProcess,
    Redis,
    call_all,
    cpu_seconds,
    machine_busy,
    pinned,
    source_site,
)
from hashcoop.pool.tools.demo import free_port

POOL_ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
OTHER_MINER = "bcrt1qj4j7j704sq2yumjs0xq2hp2xhaukegh4emmvfn"  # the devnode's "rest of the network"
HARD_BITS = "1d00ffff"  # network difficulty 1: a random share is a block once in 2^32
REGTEST_BITS = "207fffff"
TINY_DIFFICULTY = 1e-12  # share target = the largest target: every random nonce meets it
ADDRESSES = 50
SCENARIOS = ("hotpath", "ablation", "throughput", "reject", "latency", "fanout", "scaleout")


def bench_addresses(n: int = ADDRESSES) -> list[str]:
    """``n`` distinct regtest P2WPKH addresses (a small pool's payees)."""

    net = get_network("regtest")
    return [script_to_address(b"\x00\x14" + hashlib.sha256(b"hashcoop-bench-%d" % i).digest()[:20], net) for i in range(n)]


def bench_users(first: int, n: int, addresses: list[str]) -> list[str]:
    """One worker per miner, spread over the addresses."""
    return [f"{addresses[i % len(addresses)]}.m{i}" for i in range(first, first + n)]


def pool_config(path: Path, *, port: int, node: DevNode, redis_url: str, data_dir: Path, difficulty: float,
                instance_id: int = 0, reuse_port: bool = False, accounting: bool = True, vardiff: bool = False,
                flood: bool = True) -> Path:
    lines = [
        "[pool]",
        'network = "regtest"',
        f'address = "{POOL_ADDRESS}"',
        'coinbase_tag = "/hashcoop-bench/"',
        f"instance_id = {instance_id}",
        f'data_dir = "{data_dir}"',
        "",
        "[[nodes]]",
        f'url = "{node.url}"',
        f'cookie_file = "{node.cookie_path}"',
        "",
        "[work]",
        'notify_listen = ""',
        "",
        "[stratum]",
        "max_connections_per_ip = 1000000",
        "backlog = 4096",
    ]
    if reuse_port:
        lines.append("reuse_port = true")
    if not flood:
        # the reject scenario floods on purpose (nearly every share high-hash,
        # all from 127.0.0.1): flood protection would close and ban its miners
        lines += ["", "[stratum.flood]", "enabled = false"]
    lines += [
        "",
        "[[stratum.ports]]",
        f"port = {port}",
        'bind = "127.0.0.1"',
        f"start_difficulty = {difficulty!r}",
        f"min_difficulty = {difficulty!r}",
        f"max_difficulty = {max(difficulty, 1e6)!r}",
        f"vardiff = {'true' if vardiff else 'false'}",
        "",
        *(["[redis]", f'url = "{redis_url}"', ""] if accounting else []),
        "[logging]",
        'level = "WARNING"',
        "",
    ]
    path.write_text("\n".join(lines))
    return path


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.pool_cpus = None if args.no_pin else args.pool_cpus
        self.load_cpus = None if args.no_pin else args.load_cpus
        self.redis_cpus = None if args.no_pin or args.redis_cpus == "any" else (args.redis_cpus or args.load_cpus)
        self.addresses = bench_addresses()
        self.results: dict = {"machine": machine(), "command": " ".join(["hashcoop", "bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else None}
        self._procs: list = []

    def log(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # -- stack ----------------------------------------------------------------------------
    def stack(self, work: Path, *, bits: str, difficulty: float, pools: int = 1, reuse_port: bool = False,
              pool_cpus: list[str | None] | None = None, vardiff: bool = False, redis_nice: int | None = None,
              flood: bool = True):
        redis = self._own(Redis(work / "redis", self.redis_cpus))
        nice = self.args.redis_nice if redis_nice is None else redis_nice
        if nice:
            os.setpriority(os.PRIO_PROCESS, redis.proc.pid, nice)
        node = self._own(DevNode(work / "node", self.load_cpus, "--bits", bits))
        port = free_port()
        procs = []
        for i in range(pools):
            d = work / f"pool{i}"
            d.mkdir(parents=True, exist_ok=True)
            cfg = pool_config(d / "pool.toml", port=port, node=node, redis_url=redis.url, data_dir=d / "data",
                              difficulty=difficulty, instance_id=i + 1 if pools > 1 else 0, reuse_port=reuse_port,
                              accounting=not self.args.no_accounting, vardiff=vardiff, flood=flood)
            cpus = pool_cpus[i] if pool_cpus is not None else self.pool_cpus
            procs.append(self._own(PoolProcess(cfg, d, cpus, port, src=self.args.pool_src)))
        for p in procs:
            p.wait_ready()
        return redis, node, procs, port

    def generators(self, n: int) -> list[LoadGen]:
        return [self._own(LoadGen(self.load_cpus, i)) for i in range(n)]

    def _ours(self) -> float:
        """CPU seconds of every process the bench started."""
        total = 0.0
        for p in self._procs:
            proc = getattr(p, "proc", None)
            if proc is not None and proc.poll() is None:
                try:
                    total += cpu_seconds(proc.pid)
                except OSError:
                    pass
        return total

    def other_load(self) -> tuple[float, float]:
        """(busy CPU seconds of the machine, of the bench's processes): the
        difference over a window is load from other programs."""
        return machine_busy(), self._ours()

    def foreign(self, before: tuple[float, float], seconds: float) -> float:
        """CPU share (of one core) other programs used since ``before``; a
        figure measured while this is large is not this machine's best."""
        busy, ours = self.other_load()
        util = max(0.0, (busy - before[0]) - (ours - before[1])) / seconds
        if util > 0.05:
            self.log(f"warning: other programs used {util:.0%} of a core during the measurement")
        return util

    def _own(self, proc):
        self._procs.append(proc)
        return proc

    def teardown(self) -> None:
        for p in reversed(self._procs):
            try:
                p.stop()
            except Exception as e:  # keep tearing down
                self.log(f"stopping {type(p).__name__}: {e}")
        self._procs = []

    def connect(self, gens: list[LoadGen], port: int, first: int, n: int) -> float:
        """Connect ``n`` more miners, spread over the generators; returns seconds."""
        t0 = time.monotonic()
        per = [n // len(gens) + (1 if i < n % len(gens) else 0) for i in range(len(gens))]
        start = first
        for g, k in zip(gens, per):
            g.send(cmd="connect", host="127.0.0.1", port=port, users=bench_users(start, k, self.addresses), wave=500)
            start += k
        for g in gens:
            r = g.recv(600)
            if r.get("failed"):
                raise RuntimeError(f"miners failed to connect: {r}")
        return time.monotonic() - t0

    # -- measurement helpers -------------------------------------------------------------
    def saturate(self, gens, pools, *, depth: int, warmup: float, seconds: int) -> dict:
        """Closed loop; measures over whole seconds after the warm-up."""
        t_start = time.monotonic()
        for g in gens:
            g.send(cmd="saturate", depth=depth, seconds=warmup + seconds + 1)
        a = math.ceil(t_start + warmup)
        time.sleep(max(0.0, a - time.monotonic()))
        cpu0 = [p.cpu() for p in pools]
        gcpu0 = [g.cpu() for g in gens]
        load0 = self.other_load()
        st0 = [p.stats() for p in pools]
        backlog0 = sum(x.get("buffered", 0) for x in st0)
        b = a + seconds
        time.sleep(max(0.0, b - time.monotonic()))
        cpu1 = [p.cpu() for p in pools]
        gcpu1 = [g.cpu() for g in gens]
        foreign = self.foreign(load0, seconds)
        st1 = [p.stats() for p in pools]
        backlog1 = sum(x.get("buffered", 0) for x in st1)
        # shares the pools wrote to Redis per second, by their own once-a-second stats
        written = sum((y.get("shares_written", 0) - x.get("shares_written", 0)) / max(1e-9, y.get("t", 0) - x.get("t", 0))
                      for x, y in zip(st0, st1) if y.get("t") and x.get("t"))
        res = [g.recv(120) for g in gens]
        acc = stats.window_sum(stats.merge_counts(r["per_second"] for r in res), a, b)
        rej = stats.window_sum(stats.merge_counts(r["rej_per_second"] for r in res), a, b)
        codes: dict = {}
        for r in res:
            for c, k in r["codes"].items():
                codes[c] = codes.get(c, 0) + k
        pool_cpu = sum(c1 - c0 for c0, c1 in zip(cpu0, cpu1))
        return {
            "seconds": seconds, "accepted": acc, "rejected": rej, "accepted_per_s": acc / seconds,
            "rejected_per_s": rej / seconds, "reject_codes": codes,
            "pool_cpu_s": pool_cpu, "pool_cpu_util": pool_cpu / seconds,
            "pool_cpu_per_share_us": 1e6 * pool_cpu / (acc + rej) if acc + rej else None,
            "generator_cpu_util": [(c1 - c0) / seconds for c0, c1 in zip(gcpu0, gcpu1)],
            "generators": len(gens), "depth": depth, "other_programs_cpu_util": foreign,
            # accepted shares not yet in Redis (from the pool's once-a-second
            # stats): a backlog that grows over the window is not sustainable
            "accounting_backlog": [backlog0, backlog1],
            "written_to_redis_per_s": written,
        }

    def wait_drained(self, pools, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(1.1)
            if sum(p.stats().get("buffered", 0) for p in pools) < 1000:
                return
        self.log("warning: the accounting backlog did not drain")

    def ladder(self, gens, pools, ceiling: float) -> dict:
        """Open-loop rates from ``--ladder-start`` up in ``--ladder-step``
        steps (to the closed-loop ceiling), each miner writing ``--depth``
        shares at a time as in the closed loop: a rate is sustained when
        the pool answers it and Redis accounting keeps up (the backlog at
        the end of the step is under one second of shares)."""
        a = self.args
        steps = []
        best = 0.0
        rate = a.ladder_start
        while rate <= ceiling * 1.02:
            self.wait_drained(pools)
            c0 = [p.cpu() for p in pools]
            t0 = time.monotonic()
            res = call_all(gens, 120 + a.ladder_seconds, cmd="rate", rate=rate / len(gens), seconds=a.ladder_seconds, warmup=0,
                           burst=a.depth)
            wall = time.monotonic() - t0
            cpu = sum(p.cpu() for p in pools) - sum(c0)
            time.sleep(1.1)
            backlog = sum(p.stats().get("buffered", 0) for p in pools)
            acc = sum(r["accepted"] for r in res)
            hist = hist_merge(r["hist"] for r in res)
            step = {"rate": rate, "accepted_per_s": acc / a.ladder_seconds, "backlog_after": backlog,
                    "p99_ms": _ms(hist_percentile(hist, 0.99)), "pool_cpu_util": cpu / wall,
                    "generator_cpu_util": [r["cpu"] / r["wall"] for r in res]}
            step["sustained"] = step["accepted_per_s"] >= 0.97 * rate and backlog < rate
            steps.append(step)
            self.log(f"  ladder {rate:,.0f}/s: accepted {step['accepted_per_s']:,.0f}/s, backlog after {backlog:,}, "
                     f"p99 {step['p99_ms']} ms, pool CPU {step['pool_cpu_util']:.0%} -> "
                     f"{'sustained' if step['sustained'] else 'not sustained'}")
            if not step["sustained"]:
                break
            best = rate
            rate += a.ladder_step
        return {"rate_per_s": best, "steps": steps}

    def accounting_check(self, redis: Redis, pools: list[PoolProcess], gens: list[LoadGen], before: list[dict]) -> dict:
        """Stop the pools (they write every accepted share on a clean stop)
        and compare Redis with what the generators were told."""
        infos = call_all(gens, cmd="info")
        gen_acc = sum(i["accepted"] for i in infos)
        gen_rej = sum(i["rejected"] for i in infos)
        for p in pools:
            p.stop()
        c = redis.client()
        pool_hash = c.hgetall("hashcoop:pool")
        redis_acc = int(pool_hash.get("acc", 0))
        redis_rej = sum(int(v) for k, v in pool_hash.items() if k.startswith("rej:"))
        sizes = []
        for _id, fields in c.xrange("hashcoop:sharelog", "-", "+"):
            sizes.append(int(fields["n"]))
        cmdstats = c.info("commandstats")
        evalsha = cmdstats.get("cmdstat_evalsha") or cmdstats.get("cmdstat_eval") or {}
        after = [p.stats() for p in pools]
        flush = [stats.histogram_delta(a.get("flush_seconds", {}), b.get("flush_seconds", {})) for a, b in zip(after, before)]
        return {
            "generator_accepted": gen_acc, "redis_accepted": redis_acc, "exact": gen_acc == redis_acc,
            "generator_rejected": gen_rej, "redis_rejected": redis_rej,
            "batches": len(sizes), "batch_mean": (sum(sizes) / len(sizes)) if sizes else None,
            "batch_p50": stats.percentile(sizes, 0.5), "batch_max": max(sizes, default=None),
            "flush_mean_ms": _ms(stats.histogram_mean(flush[0])) if flush else None,
            "flush_p99_ms_bucket": _ms(stats.histogram_quantile(flush[0], 0.99)) if flush else None,
            "flush_count": flush[0].get("count") if flush else None,
            "redis_script_us_per_call": evalsha.get("usec_per_call"),
            "redis_script_calls": evalsha.get("calls"),
        }

    # -- scenarios ---------------------------------------------------------------------------
    def _in_process(self, module: str, pool_src: str | None) -> dict:
        """Run ``hashcoop.pool.tools.bench.<module>`` in its own process (against the pool
        in ``pool_src`` when given), pinned like the pool; its last output
        line is the JSON result."""
        if pool_src:
            argv = [sys.executable, "-c", "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')",
                    str(Path(__file__).with_name(f"{module}.py"))]
            env, cwd = dict(os.environ, PYTHONPATH=source_site(pool_src)), str(Path(pool_src).resolve())
        else:
            argv, env, cwd = [sys.executable, "-m", f"hashcoop.pool.tools.bench.{module}"], None, None

        out = subprocess.run(pinned(self.pool_cpus, argv), capture_output=True, text=True, env=env, cwd=cwd, timeout=1800)
        if out.returncode:
            raise RuntimeError(f"{module} failed: {out.stderr[-2000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        self.log(f"{module}: {res}")
        return res

    def run_hotpath(self, work: Path) -> dict:
        """``hashcoop.pool.tools.bench.hotpath``, from --pool-src if given."""
        self.log("hotpath: in-process CPU per share, per payload share, per broadcast miner")
        return self._in_process("hotpath", self.args.pool_src)

    def run_ablation(self, work: Path) -> dict:
        """``hashcoop.pool.tools.bench.ablation``: levers built in from the start, each the
        pool's way and the naive way (always this tree)."""
        self.log("ablation: merkle branch, JSON codec, shared notify, share target, each before/after")
        return self._in_process("ablation", None)

    def run_throughput(self, work: Path) -> dict:
        a = self.args
        self.log(f"throughput: {a.miners} miners, {a.depth} submits in flight each, difficulty {TINY_DIFFICULTY:g}")
        redis, node, pools, port = self.stack(work, bits=HARD_BITS, difficulty=TINY_DIFFICULTY)
        gens = self.generators(a.generators)
        self.connect(gens, port, 0, a.miners)
        before = [p.stats() for p in pools]
        res = self.saturate(gens, pools, depth=a.depth, warmup=a.warmup, seconds=a.seconds)
        res["miners"] = a.miners
        res["rss_mb"] = pools[0].rss() / 2**20
        if a.ladder_seconds:
            res["sustained"] = self.ladder(gens, pools, res["accepted_per_s"])
        time.sleep(1.0)
        res["accounting"] = self.accounting_check(redis, pools, gens, before)
        self.log(f"throughput: {res['accepted_per_s']:,.0f} accepted/s, {res['pool_cpu_per_share_us']:.1f} µs CPU/share, "
                 f"pool CPU {res['pool_cpu_util']:.0%}, generator CPU {', '.join(f'{u:.0%}' for u in res['generator_cpu_util'])}; "
                 f"accounting backlog {res['accounting_backlog']}, written to Redis {res['written_to_redis_per_s']:,.0f}/s; "
                 f"Redis exact: {res['accounting']['exact']}")
        return res

    def run_reject(self, work: Path) -> dict:
        a = self.args
        self.log(f"reject: {a.miners} miners, {a.depth} in flight, random nonces at difficulty 1")
        # flood protection off, in a pool that has it (--pool-src may be older)
        src = self.args.pool_src
        has_flood = not src or (Path(src) / "stratum" / "flood.py").exists()
        redis, node, pools, port = self.stack(work, bits=HARD_BITS, difficulty=1.0, flood=not has_flood)
        gens = self.generators(a.generators)
        self.connect(gens, port, 0, a.miners)
        res = self.saturate(gens, pools, depth=a.depth, warmup=a.warmup, seconds=a.seconds)
        res["miners"] = a.miners
        self.log(f"reject: {res['rejected_per_s']:,.0f} rejected/s ({res['reject_codes']}), "
                 f"{res['pool_cpu_per_share_us']:.1f} µs CPU/share, pool CPU {res['pool_cpu_util']:.0%}, "
                 f"generator CPU {', '.join(f'{u:.0%}' for u in res['generator_cpu_util'])}")
        return res

    def run_latency(self, work: Path) -> dict:
        a = self.args
        self.log(f"latency: {a.latency_miners} miners, {a.latency_rate} shares/s in all, {a.latency_seconds} s")
        # redis-server shares the load core with the generators: niced, its
        # Lua bursts (tens of ms for a batch from thousands of workers) do
        # not delay the generators' reads, which would count as pool latency
        redis, node, pools, port = self.stack(work, bits=HARD_BITS, difficulty=TINY_DIFFICULTY,
                                              redis_nice=a.latency_redis_nice)
        pool = pools[0]
        gens = self.generators(a.generators)
        self.connect(gens, port, 0, a.latency_miners)
        before = [p.stats() for p in pools]
        warmup = a.warmup
        per_gen = a.latency_rate / len(gens)
        t0 = time.monotonic()
        for g in gens:
            g.send(cmd="rate", rate=per_gen, seconds=a.latency_seconds, warmup=warmup)
        time.sleep(warmup)
        cpu0, gcpu0, w0 = pool.cpu(), [g.cpu() for g in gens], time.monotonic()
        load0 = self.other_load()
        rss = []
        end = t0 + warmup + a.latency_seconds
        while time.monotonic() < end:
            rss.append((time.monotonic() - w0, pool.rss()))
            time.sleep(min(a.rss_interval, max(0.0, end - time.monotonic())))
        cpu1, gcpu1, w1 = pool.cpu(), [g.cpu() for g in gens], time.monotonic()
        foreign = self.foreign(load0, w1 - w0)
        rss.append((w1 - w0, pool.rss()))
        res = [g.recv(120) for g in gens]
        hist = hist_merge(r["hist"] for r in res)
        n = sum(hist)
        secs = w1 - w0
        out = {
            "miners": a.latency_miners, "rate": a.latency_rate, "seconds": a.latency_seconds, "samples": n,
            "p50_ms": _ms(hist_percentile(hist, 0.5)), "p90_ms": _ms(hist_percentile(hist, 0.9)),
            "p99_ms": _ms(hist_percentile(hist, 0.99)), "p999_ms": _ms(hist_percentile(hist, 0.999)),
            "max_ms": _ms(max(r["max"] for r in res)),
            "accepted": sum(r["accepted"] for r in res), "rejected": sum(r["rejected"] for r in res),
            "pool_cpu_util": (cpu1 - cpu0) / secs, "generator_cpu_util": [(c1 - c0) / secs for c0, c1 in zip(gcpu0, gcpu1)],
            "rss_mb_first": rss[0][1] / 2**20, "rss_mb_last": rss[-1][1] / 2**20,
            "rss_mb_max": max(v for _, v in rss) / 2**20,
            "rss_mb_per_min_slope": stats.slope_per_minute([(t, v / 2**20) for t, v in rss]),
            # after the warm-up (the first third: duplicate keys fill up to
            # JobManager.max_seen, buffers and caches to their sizes)
            "rss_mb_per_min_after_warmup": stats.slope_per_minute(
                [(t, v / 2**20) for t, v in rss if t >= rss[0][0] + a.latency_seconds / 3]),
            "rss_samples_mb": [[round(t), round(v / 2**20, 1)] for t, v in rss],
            "other_programs_cpu_util": foreign,
        }
        out["accounting"] = self.accounting_check(redis, pools, gens, before)
        self.log(f"latency: p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms, max {out['max_ms']:.1f} ms; "
                 f"RSS {out['rss_mb_first']:.1f} -> {out['rss_mb_last']:.1f} MB; pool CPU {out['pool_cpu_util']:.0%}")
        return out

    def run_fanout(self, work: Path) -> dict:
        a = self.args
        steps = [int(x) for x in a.fanout_miners.split(",")]
        self.log(f"fanout: {steps} miners, {a.trials} tip changes each")
        # Regtest bits: the stand-in mines the "other" block at once. No
        # shares are submitted here, so the easy network target is harmless.
        # vardiff on, as on an operator's port (idle miners: no retarget)
        redis, node, pools, port = self.stack(work, bits=REGTEST_BITS, difficulty=TINY_DIFFICULTY, vardiff=True)
        pool = pools[0]
        gens = self.generators(a.generators)
        node.connect()
        time.sleep(1.0)
        rss0 = pool.rss()
        out: dict = {"rss_mb_before": rss0 / 2**20, "steps": []}
        have = 0
        for n in steps:
            secs = self.connect(gens, port, have, n - have)
            have = n
            time.sleep(2.0)
            rss = pool.rss()
            step = {"miners": n, "connect_seconds": secs, "rss_mb": rss / 2**20,
                    "rss_bytes_per_miner": (rss - rss0) / n, "trials_ms": [], "submitblock_ms": [], "generator_cpu_s": []}
            for _ in range(a.trials):
                call_all(gens, cmd="arm")
                block = node.rpc("generateblock", OTHER_MINER, [], False)["hex"]
                time.sleep(0.2)
                t0 = time.monotonic()
                node.rpc("submitblock", block)
                t_sub = time.monotonic()
                res = call_all(gens, 60, cmd="collect", wait=20)
                got = sum(r["got"] for r in res)
                if got < n:
                    raise RuntimeError(f"only {got} of {n} miners got the clean job")
                last = max(r["last"] for r in res)
                step["trials_ms"].append((last - t0) * 1000)
                step["submitblock_ms"].append((t_sub - t0) * 1000)
                step["generator_cpu_s"].append(sum(r["cpu"] for r in res))
                time.sleep(a.trial_gap)
                seen = [e for e in pool.stats().get("templates", []) if e[0] >= t0 and e[4]]
                if seen:
                    t_in, build, write, miners, _clean = seen[0]
                    step.setdefault("breakdown_ms", []).append({
                        "node_to_pool": round((t_in - t0) * 1000, 2), "build_job": round(build * 1000, 2),
                        "write_all": round(write * 1000, 2), "last_write_to_last_read": round((last - t_in - build - write) * 1000, 2),
                        "miners": miners})
            step["median_ms"] = stats.percentile(step["trials_ms"], 0.5)
            step["max_ms"] = max(step["trials_ms"])
            out["steps"].append(step)
            for b in step.get("breakdown_ms", []):
                self.log(f"  {b}")
            self.log(f"fanout {n}: median {step['median_ms']:.1f} ms, max {step['max_ms']:.1f} ms "
                     f"(submitblock {stats.percentile(step['submitblock_ms'], 0.5):.1f} ms); "
                     f"RSS {step['rss_mb']:.1f} MB, {step['rss_bytes_per_miner']:.0f} B/miner")
        out["tip_to_notify_pool"] = pool.stats().get("tip_to_notify")
        return out

    def run_scaleout(self, work: Path) -> dict:
        a = self.args
        cpus = None if a.no_pin else a.scaleout_cpus.split("/")
        self.log(f"scaleout: 2 pool processes on one port (SO_REUSEPORT), CPUs {cpus}, {a.miners} miners")
        redis, node, pools, port = self.stack(work, bits=HARD_BITS, difficulty=TINY_DIFFICULTY, pools=2, reuse_port=True,
                                              pool_cpus=cpus)
        gens = self.generators(a.generators)
        self.connect(gens, port, 0, a.miners)
        before = [p.stats() for p in pools]
        res = self.saturate(gens, pools, depth=a.depth, warmup=a.warmup, seconds=a.seconds)
        infos = call_all(gens, cmd="info")
        en1 = [e for i in infos for e in i["extranonce1"]]
        prefixes = sorted({e[:2] for e in en1})
        split = {p: sum(1 for e in en1 if e.startswith(p)) for p in prefixes}  # instance id -> miners
        res["miners_per_process"] = split
        res["extranonce1_total"] = len(en1)
        res["extranonce1_distinct"] = len(set(en1))
        res["extranonce1_prefixes"] = prefixes
        res["accounting"] = self.accounting_check(redis, pools, gens, before)
        self.log(f"scaleout: {res['accepted_per_s']:,.0f} accepted/s together, accounting backlog {res['accounting_backlog']}; "
                 f"miners per process {split}; "
                 f"extranonce1 {res['extranonce1_distinct']}/{res['extranonce1_total']} distinct, prefixes {prefixes}; "
                 f"Redis exact: {res['accounting']['exact']}")
        return res

    def run(self) -> dict:
        a = self.args
        chosen = SCENARIOS if a.scenarios == "all" else tuple(s.strip() for s in a.scenarios.split(","))
        for s in chosen:
            if s not in SCENARIOS:
                raise SystemExit(f"hashcoop bench: unknown scenario {s!r} (choose from {', '.join(SCENARIOS)})")
        base = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="hashcoop-bench-"))
        base.mkdir(parents=True, exist_ok=True)
        self.results["settings"] = {k: v for k, v in vars(a).items() if k != "func"}
        try:
            for s in chosen:
                work = base / s
                if work.exists():
                    shutil.rmtree(work)
                work.mkdir(parents=True)
                try:
                    self.results[s] = getattr(self, f"run_{s}")(work)
                finally:
                    self.teardown()
        finally:
            self.teardown()
            if not a.keep and not a.workdir:
                shutil.rmtree(base, ignore_errors=True)
        return self.results


def _ms(seconds):
    if seconds is None:
        return None
    return seconds * 1000 if math.isfinite(seconds) else seconds


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    try:
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    except (OSError, IndexError):
        redis_version = None
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "twisted": twisted.__version__, "redis": redis_version}


def summary(r: dict) -> str:
    out = []
    m = r.get("machine", {})
    out.append(f"machine: {m.get('cpu')} x{m.get('cores')}, Linux {m.get('kernel')}, Python {m.get('python')}, "
               f"Twisted {m.get('twisted')}, Redis {m.get('redis')}")
    if "hotpath" in r:
        h = r["hotpath"]
        out.append(f"hot path (in process, CPU µs): submit accepted {h['submit_accept_us']['4_per_read']:.1f}/share, "
                   f"rejected {h['submit_reject_us']['4_per_read']:.1f}/share; payload {h['payload_us_per_share']['500_workers_5000_shares']:.1f}"
                   f"/share (500 workers), {h['payload_us_per_share']['1250_workers_1250_shares']:.1f}/share (1250 workers); "
                   f"broadcast {h['broadcast_us_per_miner_10000']:.2f}/miner")
    if "ablation" in r:
        out.append("levers built in (CPU µs before -> after): " + "; ".join(
            f"{k} {v['before_us']:.2f} -> {v['after_us']:.2f}" for k, v in r["ablation"].items()))
    if "throughput" in r:
        t = r["throughput"]
        acc = t["accounting"]
        out.append(f"accepted shares/s (1 process, closed loop): {t['accepted_per_s']:,.0f}   CPU/share {t['pool_cpu_per_share_us']:.1f} µs   "
                   f"generator CPU {max(t['generator_cpu_util']):.0%}   written to Redis {t.get('written_to_redis_per_s', 0):,.0f}/s")
        if t.get("sustained"):
            out.append(f"sustained with Redis accounting keeping up: {t['sustained']['rate_per_s']:,.0f} shares/s")
        out.append(f"Redis: batches {acc['batches']}, mean {acc['batch_mean'] or 0:,.0f} shares, max {acc['batch_max']}; "
                   f"flush mean {acc['flush_mean_ms'] or 0:.1f} ms, p99 <= {acc['flush_p99_ms_bucket']} ms; "
                   f"script {acc['redis_script_us_per_call']} µs/call; exact: {acc['exact']} "
                   f"({acc['redis_accepted']} = {acc['generator_accepted']})")
    if "reject" in r:
        t = r["reject"]
        out.append(f"validated-and-rejected shares/s: {t['rejected_per_s']:,.0f}   CPU/share {t['pool_cpu_per_share_us']:.1f} µs   "
                   f"codes {t['reject_codes']}")
    if "latency" in r:
        t = r["latency"]
        out.append(f"submit-to-reply at {t['rate']}/s from {t['miners']} miners: p50 {t['p50_ms']:.2f} ms, "
                   f"p99 {t['p99_ms']:.2f} ms, max {t['max_ms']:.1f} ms; RSS {t['rss_mb_first']:.1f} -> {t['rss_mb_last']:.1f} MB "
                   f"(max {t['rss_mb_max']:.1f}, {t['rss_mb_per_min_slope']:+.2f} MB/min; after the first third "
                   f"{t.get('rss_mb_per_min_after_warmup', 0):+.2f} MB/min) over {t['seconds']} s")
    if "fanout" in r:
        for s in r["fanout"]["steps"]:
            out.append(f"fan-out {s['miners']:>6} miners: median {s['median_ms']:.1f} ms, max {s['max_ms']:.1f} ms; "
                       f"RSS {s['rss_bytes_per_miner']:,.0f} B/idle miner")
    if "scaleout" in r:
        t = r["scaleout"]
        out.append(f"2 processes, one port: {t['accepted_per_s']:,.0f} accepted/s; extranonce1 distinct "
                   f"{t['extranonce1_distinct']}/{t['extranonce1_total']} {t['extranonce1_prefixes']}; "
                   f"exact: {t['accounting']['exact']}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.seconds = min(args.seconds, 10)
        args.ladder_seconds = min(args.ladder_seconds, 8)
        args.latency_seconds = min(args.latency_seconds, 30)
        args.trials = min(args.trials, 3)
    bench = Bench(args)
    results = bench.run()
    text = json.dumps(results, indent=1, default=str)
    if args.json:
        Path(args.json).write_text(text)
    print(summary(results))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="benchmark the pool with simulated miners",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scenarios", default="all", help=f"comma-separated: {', '.join(SCENARIOS)} (default all)")
    p.add_argument("--pool-cpus", default="0", help="taskset CPU list for the pool process (default 0)")
    p.add_argument("--load-cpus", default="1", help="taskset CPU list for generators, Redis and the node (default 1)")
    p.add_argument("--redis-cpus", default=None, help="taskset CPU list for redis-server (default: --load-cpus; 'any': unpinned)")
    p.add_argument("--redis-nice", type=int, default=0, help="niceness of redis-server (default 0)")
    p.add_argument("--latency-redis-nice", type=int, default=10, help="niceness of redis-server in the latency run (default 10)")
    p.add_argument("--scaleout-cpus", default="0/1", help="CPU lists of the two scale-out pool processes (default 0/1)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes with taskset")
    p.add_argument("--generators", type=int, default=2, help="load generator processes (default 2)")
    p.add_argument("--miners", type=int, default=500, help="miners for throughput, reject and scaleout (default 500)")
    p.add_argument("--depth", type=int, default=4, help="submits each miner keeps in flight at saturation (default 4)")
    p.add_argument("--seconds", type=int, default=20, help="measured seconds at saturation (default 20)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default 5)")
    p.add_argument("--ladder-start", type=float, default=10000.0, help="first open-loop rate of the sustained-rate ladder")
    p.add_argument("--ladder-step", type=float, default=5000.0)
    p.add_argument("--ladder-seconds", type=int, default=15, help="seconds per ladder step (0: no ladder)")
    p.add_argument("--latency-miners", type=int, default=5000)
    p.add_argument("--latency-rate", type=float, default=5000.0, help="shares/s in all for the latency run (default 5000)")
    p.add_argument("--latency-seconds", type=int, default=600, help="measured seconds of the latency/RSS run (default 600)")
    p.add_argument("--rss-interval", type=float, default=10.0)
    p.add_argument("--fanout-miners", default="1000,5000,10000")
    p.add_argument("--trials", type=int, default=5, help="tip changes per fan-out step (default 5)")
    p.add_argument("--trial-gap", type=float, default=1.5)
    p.add_argument("--no-accounting", action="store_true", help="run the pool without [redis] (for comparison only)")
    p.add_argument("--pool-src", metavar="DIR", help="run the pool process from another source tree, e.g. an earlier commit "
                   "(git archive ... | tar -x -C DIR; one with the hashcoop.* package layout), for before/after figures")
    p.add_argument("--quick", action="store_true", help="short runs (10 s saturation, 30 s latency, 3 tip changes)")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    p.add_argument("--workdir", help="keep the stacks' files here (default: a temporary directory, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.set_defaults(func=run)
    return p
