"""The ``hashcoop`` command. Each subcommand lives in its own module, which
provides ``add_parser(subparsers)``; the module is imported only when its
subcommand runs, so ``hashcoop notify`` stays light."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, help)
SUBCOMMANDS = {
    "run": ("hashcoop.pool.app.service", "start the pool (Stratum server, work from bitcoind)"),
    "devnode": ("hashcoop.pool.tools.devnode.cli", "run the regtest node stand-in (JSON-RPC like Bitcoin Core)"),
    "miner": ("hashcoop.pool.tools.miner.cli", "a CPU Stratum miner, for regtest/signet demos and tests"),
    "notify": ("hashcoop.pool.node.notify", "tell a running pool about a new block (for bitcoind -blocknotify)"),
    "demo": ("hashcoop.pool.tools.demo", "run a stand-in node, the pool and a CPU miner on this machine"),
    "payouts": ("hashcoop.pool.app.payouts_cli", "the payout service (PPLNS ledger, maturity, payments, verify)"),
    "status": ("hashcoop.pool.app.status", "print the pool summary in the terminal"),
    "bench": ("hashcoop.pool.tools.bench", "benchmark a running pool with simulated miners"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hashcoop", description="hashcoop mining pool")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and not argv[0].startswith("-") else None
    for name, (module, help_) in SUBCOMMANDS.items():
        if name == wanted:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
