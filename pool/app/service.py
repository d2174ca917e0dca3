"""The one wiring point: builds the pool's service tree from a Config, and
the ``hashcoop run`` command.

Nothing else in the code base constructs adapters or reaches for globals;
tests build the same tree with a fake or memory reactor and their own sinks.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from twisted.application.service import MultiService
from twisted.logger import STDLibLogObserver, globalLogBeginner

from hashcoop.payouts.reads import PayoutReads
from hashcoop.pool.accounting.read import AccountingReader
from hashcoop.pool.accounting.service import build_accounting
from hashcoop.pool.config import Config, ConfigError, load_config
from hashcoop.pool.core.btc.address import address_to_script
from hashcoop.pool.core.events import EventSink, LoggingSink, MultiSink
from hashcoop.pool.core.jobs import JobManager
from hashcoop.pool.http.service import build_http
from hashcoop.pool.metrics import Metrics
from hashcoop.pool.node.blocks import BlockSubmitter
from hashcoop.pool.node.nodes import NodeSet, clients_from_config
from hashcoop.pool.node.work import WorkSource
from hashcoop.stratum.extranonce import SIZE as EXTRANONCE1_SIZE
from hashcoop.stratum.reactor import install, tune_gc
from hashcoop.stratum.server import StratumServer

log = logging.getLogger("hashcoop")


@dataclass
class Pool:
    """Handles on the running parts, for tests and the CLI."""

    service: MultiService
    config: Config
    metrics: Metrics
    sink: MultiSink
    jobs: JobManager
    nodes: object
    work: object
    stratum: object
    submitter: object
    accounting: object = None  # hashcoop.pool.accounting.service.AccountingService when [redis] is configured
    http: object = None  # hashcoop.pool.http.service.HttpService when [http] is configured


def build_pool(config: Config, reactor, *, sinks: list[EventSink] = (), metrics: Metrics | None = None) -> Pool:
    metrics = metrics or Metrics()
    network = config.network
    data_dir = Path(config.pool.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    sink = MultiSink(LoggingSink(), *sinks)
    accounting = None
    if config.redis is not None:
        accounting = build_accounting(config, reactor, metrics)
        sink.add(accounting.sink)
    nodes = NodeSet(reactor, clients_from_config(reactor, config, metrics=metrics), network, metrics=metrics)
    jobs = JobManager(
        payout_script=address_to_script(config.pool.address, network),
        tag=config.pool.coinbase_tag.encode(),
        extranonce_size=EXTRANONCE1_SIZE + config.pool.extranonce2_size,
        now=reactor.seconds,
        stale_grace=config.stratum.stale_grace,
    )
    submitter = BlockSubmitter(reactor, nodes, sink, data_dir / "found-blocks.jsonl",
                               recheck_interval=config.work.block_recheck_interval, metrics=metrics)
    stratum = StratumServer(reactor=reactor, config=config, jobs=jobs, sink=sink, metrics=metrics,
                            block_submitter=submitter)
    work = WorkSource(
        reactor, nodes, stratum.on_template,
        refresh_interval=config.work.refresh_interval,
        poll_interval=config.work.poll_interval,
        longpoll=[config.node_name(i) for i, n in enumerate(config.nodes) if n.longpoll],
        zmq_endpoints=[n.zmq_hashblock for n in config.nodes if n.zmq_hashblock],
        notify_endpoint=config.work.notify_listen or None,
        metrics=metrics,
        network=network if config.work.mine_on_own_block else None,
    )
    stratum.work = work
    http = None
    if config.http is not None:
        reader = payout_reads = None
        if config.redis is not None:
            reader = AccountingReader.from_config(config)
            payout_reads = PayoutReads.from_config(config)
        http, metrics_sink = build_http(config, reactor, metrics, work=work, stratum=stratum, submitter=submitter,
                                        nodes=nodes, accounting=accounting, reader=reader, payouts=payout_reads)
        sink.add(metrics_sink)
    top = MultiService()
    # Order matters: the submitter reloads its journal before anything can
    # find a block; work starts before miners connect. Services stop in
    # reverse order, so node connections close last.
    nodes.setServiceParent(top)
    if accounting is not None:
        # before stratum: starts (replaying its journal) before miners
        # connect, stops after them, so every accepted share is written out
        accounting.setServiceParent(top)
    submitter.setServiceParent(top)
    work.setServiceParent(top)
    stratum.setServiceParent(top)
    if http is not None:
        # last: starts once there is something to show, stops first
        http.setServiceParent(top)
    return Pool(top, config, metrics, sink, jobs, nodes, work, stratum, submitter, accounting, http)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
    # Twisted's own INFO lines (factory start/stop per connection) are noise
    logging.getLogger("twisted").setLevel(max(logging.WARNING, getattr(logging, level)))


def load_or_exit(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        raise SystemExit(2) from None


def run(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    setup_logging(args.log_level or config.logging.level)

    install()  # epoll with a lighter dispatch (stratum/reactor.py)
    from twisted.internet import reactor  # the global reactor, imported only once install() has chosen it

    pool = build_pool(config, reactor)
    pool.service.startService()
    reactor.callLater(1.0, tune_gc)  # once startup's objects exist (the first template, the journal replayed)
    reactor.addSystemEventTrigger("before", "shutdown", pool.service.stopService)
    log.info("hashcoop %s on %s: paying %s, pid %d", config.pool.name, config.network.name, config.pool.address, os.getpid())
    reactor.run()
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="start the pool")
    p.add_argument("-c", "--config", required=True, help="TOML configuration file")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    p.set_defaults(func=run)
