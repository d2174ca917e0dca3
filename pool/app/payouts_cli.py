"""``hashcoop payouts``: the payout process and its tools.

    hashcoop payouts -c hashcoop.toml                run the payout service (same as `run`)
    hashcoop payouts -c hashcoop.toml run [--once]   one pass with --once, then exit
    hashcoop payouts -c hashcoop.toml migrate        create or upgrade the ledger's tables
    hashcoop payouts -c hashcoop.toml verify BLOCKHASH [...] | --all
    hashcoop payouts -c hashcoop.toml report BLOCKHASH
    hashcoop payouts -c hashcoop.toml blocks [--status S] [--limit N]
    hashcoop payouts -c hashcoop.toml miner ADDRESS [--block BLOCKHASH]
    hashcoop payouts -c hashcoop.toml status
    hashcoop payouts -c hashcoop.toml release ADDRESS
    hashcoop payouts -c hashcoop.toml check

``run`` upgrades the ledger's schema at start (``migrate`` does only that).
Exit codes: 0 fine, 1 failure (verify: a mismatch), 2 bad configuration or
usage, 3 another payout process holds the lease (``run --once``).

Fault injection (crash tests): with ``HASHCOOP_PAYOUTS_KILL_AT=<step>`` the
process kills itself with SIGKILL right after that step of the payment
sequence (intent, signed, stored, broadcast, sent, confirmed). With
``HASHCOOP_PAYOUTS_STOP_AT=<step>`` it logs ``fault hook: stopped after
<step>`` and stops itself with SIGSTOP there, every time, until someone
sends SIGCONT (the ledger-stop tests take the database away meanwhile).
Both take comma-separated steps; they are for tests, never for production.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.endpoints import serverFromString
from twisted.web import resource, server

from hashcoop.payouts import read
from hashcoop.payouts.db import is_current, make_engine, migrate
from hashcoop.payouts.ledger import Ledger
from hashcoop.payouts.service import STEPS
from hashcoop.payouts.states import BlockState
from hashcoop.payouts.verify import verify_block
from hashcoop.pool.accounting.sharelog import ShareLogReader
from hashcoop.pool.accounting.writer import redis_client
from hashcoop.pool.app.payouts import build_payouts
from hashcoop.pool.app.service import load_or_exit, setup_logging
from hashcoop.pool.config import database_url

KILL_ENV = "HASHCOOP_PAYOUTS_KILL_AT"
STOP_ENV = "HASHCOOP_PAYOUTS_STOP_AT"


def _fault_steps(env, name: str) -> set[str]:
    steps = {s.strip() for s in env.get(name, "").split(",") if s.strip()}
    unknown = steps - set(STEPS)
    if unknown:
        raise SystemExit(f"{name}: unknown steps {sorted(unknown)} (steps: {', '.join(STEPS)})")
    return steps


def fault_hook_from_env(env=os.environ):
    """The crash-test hooks: SIGKILL at the steps named by
    HASHCOOP_PAYOUTS_KILL_AT, SIGSTOP at those named by HASHCOOP_PAYOUTS_STOP_AT."""
    kill, stop = _fault_steps(env, KILL_ENV), _fault_steps(env, STOP_ENV)
    if not kill and not stop:
        return None

    def hook(step: str) -> None:
        if step in kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if step in stop:
            logging.getLogger("hashcoop.payouts").warning("fault hook: stopped after %s", step)
            for h in logging.getLogger().handlers:
                h.flush()
            os.kill(os.getpid(), signal.SIGSTOP)

    return hook


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("payouts", help="the payout service (PPLNS ledger, maturity, payments, verify)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", required=True, help="TOML configuration file")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    sub = p.add_subparsers(dest="payouts_command", metavar="COMMAND")
    r = sub.add_parser("run", help="run the payout service (the default)")
    r.add_argument("--once", action="store_true", help="one pass, then exit (3 if another process holds the lease)")
    sub.add_parser("migrate", help="create or upgrade the ledger's tables")
    v = sub.add_parser("verify", help="recompute blocks' payouts from the share log and compare")
    v.add_argument("blocks", nargs="*", metavar="BLOCKHASH")
    v.add_argument("--all", action="store_true", help="every block in the ledger")
    rp = sub.add_parser("report", help="a block's payout report (JSON) and its digest")
    rp.add_argument("block", metavar="BLOCKHASH")
    b = sub.add_parser("blocks", help="blocks in the ledger")
    b.add_argument("--status", choices=list(BlockState))
    b.add_argument("--limit", type=int, default=20)
    m = sub.add_parser("miner", help="a miner's balance, credits and payments (with txids)")
    m.add_argument("address")
    m.add_argument("--block", metavar="BLOCKHASH", help="their shares and credit in this block's window")
    m.add_argument("--json", action="store_true")
    sub.add_parser("status", help="ledger totals and payments")
    rl = sub.add_parser("release", help="pay an address that was set aside again")
    rl.add_argument("address")
    sub.add_parser("check", help="check the ledger's invariants")
    p.set_defaults(func=main)
    return p


def _config(args):
    return load_or_exit(args.config)


def _engine(config, writer=False):
    return make_engine(database_url(config), writer=writer)


def _sharelog(config):
    if config.redis is None:
        return None

    rc = config.redis
    return ShareLogReader(redis_client(rc.url, socket_timeout=30, connect_timeout=rc.connect_timeout), rc.prefix)


def _print(obj) -> None:
    print(json.dumps(obj, indent=1, sort_keys=True, default=str))


def main(args: argparse.Namespace) -> int:
    cmd = args.payouts_command or "run"
    if cmd == "run":
        return run(args)
    config = _config(args)

    logging.basicConfig(level=args.log_level or "WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    if cmd == "migrate":
        e = _engine(config, writer=True)
        migrate(e)
        print(f"ledger schema is current ({e.url.render_as_string(hide_password=True)})")
        return 0
    engine = _engine(config, writer=cmd in ("release", "verify"))
    if not is_current(engine):
        print("the ledger's schema is missing or old: run `hashcoop payouts migrate` (or start the service)", file=sys.stderr)
        return 1
    if cmd == "verify":
        ledger = Ledger(engine)
        hashes = list(args.blocks)
        if args.all:
            hashes += [b["hash"] for b in read.blocks(engine, limit=10**9)]
        if not hashes:
            print("give BLOCKHASH(es) or --all", file=sys.stderr)
            return 2
        sharelog = _sharelog(config)
        bad = 0
        for h in hashes:
            v = verify_block(ledger, h, sharelog)
            print(v.text())
            bad += not v.ok
        if len(hashes) > 1:
            print(f"{len(hashes) - bad} of {len(hashes)} blocks verified" + (f", {bad} MISMATCH" if bad else ""))
        return 1 if bad else 0
    if cmd == "report":
        r = read.block_report(engine, args.block, fee_percent=config.payouts.fee_percent)
        if r is None:
            print(f"no block {args.block} in the ledger", file=sys.stderr)
            return 1
        _print(r)
        return 0
    if cmd == "blocks":
        for b in read.blocks(engine, limit=args.limit, status=args.status):
            print(f"{b['height']:>8} {b['hash']} {b['status']:<9} reward {b['reward']:>12} credited {b['credited']:>12} "
                  f"conf {b['confirmations'] if b['confirmations'] is not None else '-':>4} {b['addresses']} addresses")
        return 0
    if cmd == "miner":
        return miner(engine, args)
    if cmd == "status":
        _print(read.pool_summary(engine))
        return 0
    if cmd == "release":
        ledger = Ledger(engine)
        if not ledger.acquire_lease(30):
            print("another payout process holds the lease: stop it (or wait) to change the ledger", file=sys.stderr)
            return 3
        try:
            ok = ledger.release_hold(args.address)
        finally:
            ledger.release_lease()
        print(f"{args.address}: {'released; it is paid in the next pass' if ok else 'was not set aside'}")
        return 0
    if cmd == "check":
        problems = Ledger(engine).check_invariants()
        for p in problems:
            print(p)
        print("ledger consistent" if not problems else f"{len(problems)} problems")
        return 1 if problems else 0
    return 2


def miner(engine, args) -> int:
    summary = read.address_summary(engine, args.address)
    if summary is None:
        print(f"the ledger knows nothing of {args.address}", file=sys.stderr)
        return 1
    out = {"summary": summary, "credits": read.address_credits(engine, args.address, limit=1000),
           "payments": read.address_payments(engine, args.address, limit=1000)}
    if args.block:
        out["block"] = read.address_block(engine, args.address, args.block)
    if args.json:
        _print(out)
        return 0
    s = summary
    print(f"{args.address}: owed {s['owed']} sat, credited {s['credited']} sat, paid {s['paid']} sat "
          f"({s['paid_confirmed']} confirmed, {s['in_flight']} in flight), {s['pending_blocks']} pending blocks"
          + (f"\n  SET ASIDE: {s['hold_reason']}" if s["hold_reason"] else ""))
    print("credits:")
    for c in out["credits"]:
        print(f"  block {c['height']} {c['block_hash']} {c['kind']}: {c['amount']} sat "
              f"(difficulty {c['difficulty']!r} of {c['window_total']!r}; report {c['report_digest']})")
    print("payments:")
    for p in out["payments"]:
        print(f"  #{p['payment_id']} {p['status']:<9} {p['txid']}:{p['vout']} {p['amount']} sat (debited {p['owed']}) "
              f"confirmations {p['confirmations'] if p['confirmations'] is not None else '-'}")
    if args.block:
        b = out["block"]
        if b is None:
            print(f"no block {args.block} in the ledger")
        else:
            print(f"block {b['height']} {args.block} ({b['status']}): difficulty {b['difficulty']!r} of {b['window_total']!r} "
                  f"({b['fraction']:.6%}), credit {b['credit']}")
            for sh in b["shares"]:
                print(f"  share #{sh['seq']} {sh['worker']} difficulty {sh['difficulty']!r} credited {sh['credited']!r} {sh['hash']}")
    return 0


def run(args) -> int:
    config = _config(args)
    setup_logging(args.log_level or config.logging.level)
    from twisted.internet import reactor  # the global reactor, imported when the service runs, not when the CLI loads

    engine = _engine(config, writer=True)
    migrate(engine)
    once = bool(getattr(args, "once", False))
    code = [0]

    def done(c: int) -> None:
        code[0] = c
        if reactor.running:
            reactor.callLater(0, reactor.stop)

    p = build_payouts(config, reactor, engine=engine, fault=fault_hook_from_env(), once=once, on_done=done if once else None)
    if config.payouts.metrics_listen:
        class MetricsPage(resource.Resource):
            isLeaf = True

            def render_GET(self, request):
                request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
                return generate_latest(p.metrics.registry)

        serverFromString(reactor, config.payouts.metrics_listen).listen(server.Site(MetricsPage()))
    reactor.callWhenRunning(p.service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", p.service.stopService)

    logging.getLogger("hashcoop.payouts").info("payout service starting (pid %d, ledger %s)", os.getpid(),
                                               engine.url.render_as_string(hide_password=True))
    reactor.run()
    return code[0]
