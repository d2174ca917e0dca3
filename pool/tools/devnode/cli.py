"""``hashcoop devnode``: run the regtest node stand-in.

Core-like options: ``--rpcbind``, ``--rpcport`` (0 picks a free port),
``--datadir``, ``--rpcuser``/``--rpcpassword`` (without a password a cookie
``<datadir>/regtest/.cookie`` holding ``__cookie__:<64 hex>`` is written,
and deleted on shutdown), ``--zmqpubhashblock``, ``--blocknotify``.

Stand-in extensions (no Bitcoin Core equivalent):

``--bits HEX``          compact target of every block after the initial
                        blocks (default 207fffff, regtest's; no retargeting);
                        the initial blocks keep 207fffff so they mine fast
``--initial-blocks N``  at start, mine until the chain is N blocks high,
                        paying the dev faucet
                        (bcrt1qmveygeaexnmesd3jw6mcv6p909mw0h9tt39cjy; default
                        110: 11 mature coinbases for the synthetic mempool)
``--mempool-rate N``    synthetic transactions per minute (default 6; 0 off)
``--auto-mine SECONDS`` mine a block every SECONDS to a non-pool address
                        (bcrt1qj4j7j704sq2yumjs0xq2hp2xhaukegh4emmvfn), as
                        the rest of the network would (default off)
``--persist``           keep accepted blocks in the datadir and reload them
``--print-ready``       print one JSON line (rpc_url, rpcport, cookie, ...)
                        once listening
``--longpoll-mempool-wait SECONDS``  first mempool check of a
                        getblocktemplate longpoll (Core: 60; then every 10)

``--fallbackfee BTC/kvB`` is Core's option for the devnode's wallets (see
``wallet.py``: createwallet/getnewaddress, funding, dummy signing).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from decimal import Decimal, InvalidOperation

from twisted.internet.error import CannotListenError

from hashcoop.pool.tools.devnode.consensus import REGTEST_BITS, derive_target
from hashcoop.pool.tools.devnode.server import DevNode, DevNodeOptions

EPILOG = """stand-in extensions (not in Bitcoin Core): --bits, --initial-blocks,
--mempool-rate, --auto-mine, --persist, --print-ready, --longpoll-mempool-wait.
The devnode checks submitted blocks like Core v31 on regtest except for
scripts and signatures, which it does not verify."""


def _bits(value: str) -> int:
    try:
        bits = int(value, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hex: {value!r}") from None
    if not 0 < bits <= 0xFFFFFFFF or derive_target(bits) is None:
        raise argparse.ArgumentTypeError(f"{value} is not a valid regtest compact target (at most 207fffff)")
    return bits


def _btc_per_kvb(value: str) -> int:
    """A fee rate in BTC/kvB, as Core's -fallbackfee takes it -> sat/kvB."""

    try:
        sat = Decimal(value) * 100_000_000
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount: {value!r}") from None
    if sat < 0 or sat != sat.to_integral_value():
        raise argparse.ArgumentTypeError("a non-negative amount in BTC/kvB with at most 8 decimals")
    return int(sat)


def _non_negative(kind):
    def parse(value: str):
        v = kind(value)
        if v < 0:
            raise argparse.ArgumentTypeError("must not be negative")
        return v

    return parse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "devnode",
        help="run the regtest node stand-in (JSON-RPC like Bitcoin Core)",
        description="Run the regtest node stand-in: JSON-RPC like Bitcoin Core v31 on regtest, checking submitted blocks for real.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rpcbind", default="127.0.0.1", help="address to listen on for JSON-RPC (default 127.0.0.1)")
    p.add_argument("--rpcport", type=_non_negative(int), default=18443, help="JSON-RPC port (default 18443; 0 picks a free port)")
    p.add_argument("--datadir", default="./data/devnode", help="data directory (default ./data/devnode)")
    p.add_argument("--rpcuser", help="JSON-RPC user (with --rpcpassword; otherwise cookie auth)")
    p.add_argument("--rpcpassword", help="JSON-RPC password")
    p.add_argument("--zmqpubhashblock", metavar="ADDRESS", help="publish new tip hashes on this ZMQ endpoint, e.g. tcp://127.0.0.1:28332")
    p.add_argument("--blocknotify", metavar="CMD", help="run CMD on every new tip (%%s is replaced by its hash)")
    p.add_argument("--bits", type=_bits, default=REGTEST_BITS, metavar="HEX", help="[stand-in] compact target of blocks after the initial ones (default 207fffff)")
    p.add_argument("--initial-blocks", type=_non_negative(int), default=110, metavar="N", help="[stand-in] mine up to height N at start, to the faucet (default 110)")
    p.add_argument("--mempool-rate", type=_non_negative(float), default=6.0, metavar="N", help="[stand-in] synthetic transactions per minute (default 6; 0 disables)")
    p.add_argument("--auto-mine", type=_non_negative(float), default=0.0, metavar="SECONDS", help="[stand-in] mine a non-pool block every SECONDS (default off)")
    p.add_argument("--persist", action="store_true", help="[stand-in] store accepted blocks in the datadir and reload them at start")
    p.add_argument("--print-ready", action="store_true", help="[stand-in] print one JSON line once listening")
    p.add_argument(
        "--longpoll-mempool-wait", type=_non_negative(float), default=60.0, metavar="SECONDS",
        help="[stand-in] first mempool check of a getblocktemplate longpoll (default 60, like Core)",
    )
    p.add_argument("--fallbackfee", type=_btc_per_kvb, default=0, metavar="BTC/kvB",
                   help="fee rate wallets use when a call gives none (default 0: disabled, like Core)")
    p.add_argument("--rpcservertimeout", type=_non_negative(float), default=30.0, metavar="SECONDS",
                   help="close an RPC connection idle this long (default 30, like Core; 0 never)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.set_defaults(func=run)
    return p


def options_from_args(args: argparse.Namespace) -> DevNodeOptions:
    if (args.rpcuser is None) != (args.rpcpassword is None):
        raise SystemExit("hashcoop devnode: --rpcuser and --rpcpassword go together")
    return DevNodeOptions(
        rpcbind=args.rpcbind,
        rpcport=args.rpcport,
        datadir=args.datadir,
        rpcuser=args.rpcuser,
        rpcpassword=args.rpcpassword,
        zmqpubhashblock=args.zmqpubhashblock,
        blocknotify=args.blocknotify,
        bits=args.bits,
        initial_blocks=args.initial_blocks,
        mempool_rate=args.mempool_rate,
        auto_mine=args.auto_mine,
        persist=args.persist,
        longpoll_first_check=args.longpoll_mempool_wait,
        fallbackfee=args.fallbackfee,
        rpcservertimeout=args.rpcservertimeout,
    )


def run(args: argparse.Namespace) -> int:
    """Start the node on the global reactor and run until SIGINT/SIGTERM
    or the ``stop`` RPC."""
    from twisted.internet import reactor  # the global reactor, imported when the node runs, not when the CLI loads

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    options = options_from_args(args)
    node = DevNode(reactor, options, on_stop_request=reactor.stop)
    try:
        node.start()
    except CannotListenError as e:
        print(f"hashcoop devnode: cannot listen on {options.rpcbind}:{options.rpcport}: {e.socketError}", file=sys.stderr)
        node.stop()
        return 1
    except Exception as e:  # zmq bind errors and the like: report, clean up, exit
        print(f"hashcoop devnode: {e}", file=sys.stderr)
        node.stop()
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", node.stop)
    if args.print_ready:
        print(json.dumps(node.ready_info()), flush=True)
    reactor.run()
    return 0
