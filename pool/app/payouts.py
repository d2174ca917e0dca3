"""The one wiring point of the payout process (``hashcoop payouts``): the
ledger, the node and wallet clients, the share log in Redis and the
service that drives them."""
from __future__ import annotations

from typing import Callable

from twisted.python.threadpool import ThreadPool

from hashcoop.payouts.connector import LedgerConnector
from hashcoop.payouts.db import make_engine
from hashcoop.payouts.ledger import Ledger
from hashcoop.payouts.service import PayoutEngine, Payouts, PayoutService, Settings
from hashcoop.pool.accounting.keys import Keys
from hashcoop.pool.accounting.sharelog import ShareLogReader
from hashcoop.pool.accounting.writer import redis_client
from hashcoop.pool.config import database_url
from hashcoop.pool.metrics import Metrics
from hashcoop.pool.rpc import NodeClient


def node_clients(reactor, config, metrics=None) -> tuple[NodeClient, NodeClient]:
    """(chain client, wallet client) for the [[nodes]] entry payouts.node
    names (the first by default); the wallet one on /wallet/<name>."""
    idx = 0
    if config.payouts.node:
        idx = [config.node_name(i) for i in range(len(config.nodes))].index(config.payouts.node)
    n = config.nodes[idx]
    kw = dict(user=n.user, password=n.password, cookie_file=n.cookie_file, timeout=max(n.timeout, 30.0), metrics=metrics)
    node = NodeClient(reactor, n.url, name=config.node_name(idx), **kw)
    url = n.url
    if config.payouts.wallet:
        url = url.rstrip("/") + "/wallet/" + config.payouts.wallet
    wallet = NodeClient(reactor, url, name=config.node_name(idx) + "-wallet", **kw)
    return node, wallet


def build_payouts(config, reactor, *, engine=None, metrics=None, fault: Callable[[str], None] | None = None, once: bool = False,
                  on_done: Callable[[int], None] | None = None, threads: int = 2) -> Payouts:
    """The one wiring point of the payout process."""
    metrics = metrics or Metrics()
    metrics.enable_payouts()
    if engine is None:
        engine = make_engine(database_url(config))
    ledger = Ledger(engine)
    pool = ThreadPool(minthreads=1, maxthreads=threads, name="payouts")
    node, wallet = node_clients(reactor, config, metrics)
    sharelog = redis = keys = None
    if config.redis is not None:
        rc = config.redis
        redis = redis_client(rc.url, socket_timeout=max(rc.socket_timeout, 10.0), connect_timeout=rc.connect_timeout)
        sharelog = ShareLogReader(redis, rc.prefix)
        keys = Keys(rc.prefix)
    eng = PayoutEngine(reactor=reactor, ledger=LedgerConnector(ledger, reactor, pool), threads=pool, node=node, wallet=wallet, settings=Settings.from_config(config),
                       sharelog=sharelog, redis=redis, redis_keys=keys, metrics=metrics, fault=fault)
    svc = PayoutService(eng, clock=reactor, interval=config.payouts.interval, lease_ttl=config.payouts.lease_ttl, once=once, on_done=on_done)
    return Payouts(svc, eng, ledger, metrics, config)
