"""``python -m ops.reliability {fuzz,soak,battery,all}`` (see __init__.py).

Each run merges its section into ``reports/reliability-YYYYMMDD.json``
(``--report`` to choose the file) and prints a summary; the exit status is
1 when a check failed, 3 when the run itself broke.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_report() -> Path:
    return ROOT / "reports" / f"reliability-{time.strftime('%Y%m%d', time.gmtime())}.json"


def machine() -> dict:
    from hashcoop.pool.tools.bench.cli import machine as bench_machine

    m = bench_machine()
    m["hostname"] = os.uname().nodename
    return m


def write_section(path: Path, name: str, section: dict) -> dict:
    """Merge one section into the report file (other sections kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        report = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        report = {}
    report["machine"] = machine()
    report.setdefault("runs", {})[name] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **section}
    write_report(path, report)
    return report


def write_report(path: Path, report: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def cmd_fuzz(args) -> int:
    from .fuzz import run_fuzz, summary

    res = run_fuzz(args.inputs, workers=args.workers, seed=args.seed, sample=args.sample, minutes=args.max_minutes, log=log)
    res["command"] = _command(args)
    write_section(args.report, "fuzz", res)
    print(summary(res))
    return 0 if res["passed"] else 1


def cmd_soak(args) -> int:
    from .soak import run_soak, summary

    pool_cpus, load_cpus = (None, None) if args.no_pin else (args.pool_cpus, args.load_cpus)
    res = run_soak(minutes=args.minutes, peak_miners=args.peak_miners, peak_rate=args.peak_rate, load_factor=args.load_factor,
                   sample_seconds=args.sample_seconds, warmup_minutes=args.warmup_minutes,
                   duplicate_every=args.duplicate_every, bits=args.bits, auto_mine=args.auto_mine, generators=args.generators,
                   pool_cpus=pool_cpus, load_cpus=load_cpus, workdir=args.workdir, working_tree=args.working_tree,
                   stall_every=args.redis_stall_every, stall_seconds=args.redis_stall_seconds, log=log)
    res["command"] = _command(args)
    write_section(args.report, "soak", res)
    print(summary(res))
    return 0 if res["verdict"]["passed"] else 1


def cmd_rejudge(args) -> int:
    """Judge a recorded soak again with this tree's verdict (the samples
    are in the report; nothing is run)."""
    from .soak import rejudge, summary

    report = json.loads(args.report.read_text())
    run = rejudge(report["runs"][args.section])
    report["runs"][args.section] = run
    write_report(args.report, report)
    print(summary(run))
    return 0 if run["verdict"]["passed"] else 1


def cmd_battery(args) -> int:
    from .battery import run_battery, summary

    res = run_battery(paths=args.paths, scale=args.scale, extra=args.pytest_args, max_minutes=args.max_minutes_battery, log=log)
    res["command"] = _command(args)
    write_section(args.report, args.section, res)
    print(summary(res))
    return 0 if res["passed"] else 1


def cmd_all(args) -> int:
    rc = 0
    for step in (cmd_fuzz, cmd_soak, cmd_battery):
        rc |= step(args)
    return rc


def _command(args) -> str:
    return "python -m ops.reliability " + " ".join(sys.argv[1:])


def build_parser() -> argparse.ArgumentParser:
    from . import __doc__ as doc
    from .battery import DEFAULT_PATHS
    from .soak import SOAK_BITS

    p = argparse.ArgumentParser(prog="python -m ops.reliability", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", type=Path, default=None, help="report file (default reports/reliability-YYYYMMDD.json)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def fuzz_args(q):
        q.add_argument("--inputs", type=int, default=1_000_000, help="inputs to try in all (default 10^6)")
        q.add_argument("--workers", type=int, default=None, help="worker processes (default: one per CPU)")
        q.add_argument("--seed", type=int, default=None, help="first worker's seed (default: the time)")
        q.add_argument("--sample", type=int, default=20_000, help="inputs between leak checks and RSS samples")
        q.add_argument("--max-minutes", type=float, default=None, help="stop early after this long")

    def soak_args(q):
        q.add_argument("--minutes", type=float, default=60.0, help="length of the soak (default 60)")
        q.add_argument("--peak-miners", type=int, default=1000, help="the configured peak: miners connected (default 1000)")
        q.add_argument("--peak-rate", type=float, default=1000.0, help="the configured peak: shares/s (default 1000)")
        q.add_argument("--load-factor", type=float, default=2.0, help="the soak runs this times the peak (default 2)")
        q.add_argument("--sample-seconds", type=float, default=10.0)
        q.add_argument("--warmup-minutes", type=float, default=None, help="default: 5, or a fifth of a shorter soak")
        q.add_argument("--duplicate-every", type=int, default=100, help="every Nth share is a duplicate (default 100: 1%%)")
        q.add_argument("--bits", default=SOAK_BITS, help=f"the stand-in node's block target (default {SOAK_BITS})")
        q.add_argument("--auto-mine", type=float, default=45.0, help="seconds between the node's own blocks (default 45)")
        q.add_argument("--generators", type=int, default=2)
        q.add_argument("--pool-cpus", default="0")
        q.add_argument("--load-cpus", default="1", help="generators, Redis and the node")
        q.add_argument("--no-pin", action="store_true")
        q.add_argument("--redis-stall-every", type=float, default=None, metavar="SECONDS",
                       help="stop Redis (SIGSTOP) every SECONDS after the warm-up, so the accounting falls behind and "
                            "catches up; memory must come back each time (default: never)")
        q.add_argument("--redis-stall-seconds", type=float, default=60.0, help="how long each Redis stall lasts (default 60)")
        q.add_argument("--workdir", default=None, help="keep the stack's files here")
        q.add_argument("--working-tree", action="store_true",
                       help="run the pool from the working tree (default: a snapshot of HEAD, git archive)")

    def battery_args(q):
        q.add_argument("--scale", default="full", choices=("fast", "full"))
        q.add_argument("--paths", nargs="*", default=list(DEFAULT_PATHS))
        q.add_argument("--section", default="battery", help="the report section to write (default battery), for a battery "
                       "run in parts")
        q.add_argument("--max-minutes-battery", type=float, default=None,
                       help="interrupt pytest after this long (what ran is reported)")
        q.add_argument("--pytest-args", nargs=argparse.REMAINDER, default=[], help="passed to pytest")

    q = sub.add_parser("fuzz", help="fuzz the Stratum line/JSON/dispatch path (10^6 inputs)")
    fuzz_args(q)
    q.set_defaults(func=cmd_fuzz)
    q = sub.add_parser("soak", help="an hour at twice the configured peak load")
    soak_args(q)
    q.set_defaults(func=cmd_soak)
    q = sub.add_parser("rejudge", help="judge the soak recorded in --report again, with this tree's verdict")
    q.add_argument("--section", default="soak", help="the report section (default soak)")
    q.set_defaults(func=cmd_rejudge)
    q = sub.add_parser("battery", help="the hostile, crash and simulation tests at full scale")
    battery_args(q)
    q.set_defaults(func=cmd_battery)
    q = sub.add_parser("all", help="fuzz, soak and battery")
    fuzz_args(q)
    soak_args(q)
    battery_args(q)
    q.set_defaults(func=cmd_all)
    return p


def main(argv: list[str] | None = None) -> int:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    args = build_parser().parse_args(argv)
    if not getattr(args, "func", None):
        build_parser().print_help()
        return 2
    args.report = args.report or default_report()
    try:
        return int(args.func(args) or 0)
    except Exception:  # the run itself broke (not a failed check): exit 3
        import traceback

        traceback.print_exc()
        return 3
