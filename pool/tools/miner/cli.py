"""``hashcoop miner``: command line of the CPU Stratum miner.

Human output (status lines, share results, pool messages) goes to stderr;
on exit the only line on stdout is a JSON summary (accepted, rejected and
rejected_by_error, stale, hashes, hashrate, ...), which tests parse.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from urllib.parse import urlsplit

from hashcoop.pool.tools.miner.client import MinerController, MinerOptions
from hashcoop.pool.tools.miner.work import DEFAULT_VERSION_MASK


def parse_url(url: str) -> tuple[str, int]:
    """``stratum+tcp://HOST:PORT`` (or ``HOST:PORT``) -> (host, port)."""
    if "://" not in url:
        url = "stratum+tcp://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("stratum+tcp", "stratum", "tcp"):
        raise ValueError(f"unsupported scheme {parts.scheme!r} (only stratum+tcp)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("bad port") from None
    if not parts.hostname or port is None:
        raise ValueError("expected stratum+tcp://HOST:PORT")
    return parts.hostname, port


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _hex_mask(text: str) -> int:
    value = int(text, 16)
    if not 0 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError("a 32-bit hex mask")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("miner", help="a CPU Stratum miner, for regtest/signet demos and tests",
                              description="CPU Stratum V1 miner (cpuminer-style options).")
    p.add_argument("-o", "--url", required=True, help="pool, stratum+tcp://HOST:PORT")
    p.add_argument("-u", "--user", required=True, help="ADDRESS[.WORKER]")
    p.add_argument("-p", "--password", default="x")
    p.add_argument("-t", "--threads", type=_positive_int, default=1, dest="processes",
                   help="hashing processes (default 1)")
    p.add_argument("--suggest-difficulty", type=_positive_float, metavar="D",
                   help="send mining.suggest_difficulty D before authorizing")
    p.add_argument("--no-version-rolling", action="store_true", help="do not send mining.configure")
    p.add_argument("--version-mask", type=_hex_mask, default=DEFAULT_VERSION_MASK, metavar="HEX",
                   help=f"version bits to ask for (default {DEFAULT_VERSION_MASK:08x})")
    p.add_argument("--duration", type=_positive_float, metavar="SECONDS", help="stop hashing after this long, then exit once the shares in flight are answered")
    p.add_argument("--max-shares", type=_positive_int, metavar="N",
                   help="exit once N shares are submitted and answered")
    p.add_argument("--status-interval", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between status lines (default 10; 0 = none)")
    p.add_argument("-q", "--quiet", action="store_true", help="no status lines or per-share lines")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from twisted.internet import error, reactor  # the global reactor, imported when the miner runs, not when the CLI loads

    try:
        host, port = parse_url(args.url)
    except ValueError as e:
        print(f"hashcoop miner: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def say(text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)

    options = MinerOptions(
        host=host, port=port, user=args.user, password=args.password, processes=args.processes,
        suggest_difficulty=args.suggest_difficulty, version_rolling=not args.no_version_rolling,
        version_mask=args.version_mask, duration=args.duration, max_shares=args.max_shares,
        status_interval=args.status_interval, quiet=args.quiet,
    )
    controller = MinerController(reactor, options, say=say)

    final: dict = {}

    def finished(summary):
        final.update(summary)
        try:
            reactor.stop()
        except error.ReactorNotRunning:
            pass  # already shutting down (a signal)
        return summary

    controller.done.addCallback(finished)
    # SIGINT/SIGTERM make Twisted stop the reactor; stop the workers first.
    reactor.addSystemEventTrigger("before", "shutdown", controller.stop, "signal")
    reactor.callWhenRunning(controller.start)
    reactor.run()
    print(json.dumps(final or controller.summary()), flush=True)
    return 0
