"""``HttpService``: the listeners of the HTTP side and the thread pool of its
blocking reads. Built by ``hashcoop.pool.app.service.build_pool`` when the config has an
``[http]`` section."""
from __future__ import annotations

import logging
from pathlib import Path

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.python.threadpool import ThreadPool

from hashcoop.pool.http.api import App, Root
from hashcoop.pool.http.bounds import BoundedSite, Bounds
from hashcoop.pool.http.data import PoolData
from hashcoop.pool.http.live import Live
from hashcoop.pool.http.reads import Reads
from hashcoop.pool.http.sinks import MetricsSink
from hashcoop.pool.http.watch import WithholdingWatch

log = logging.getLogger("hashcoop.http")

STATIC_DIR = Path(__file__).parent / "static"


class HttpService(Service):
    name = "http"

    def __init__(self, reactor, config, app: App, threadpool: ThreadPool, *, extra_services=()):
        self.reactor = reactor
        self.config = config
        self.app = app
        self.threadpool = threadpool
        self.extra = list(extra_services)
        self.ports: dict[str, object] = {}  # "public" / "operator" -> IListeningPort
        self.sites: dict[str, BoundedSite] = {}  # "public" / "operator" -> its Site (connections, bounds)

    def startService(self):
        super().startService()
        self.threadpool.start()
        for s in self.extra:
            s.startService()
        h = self.config.http
        ds = []
        for which, endpoint, operator in (("public", h.listen, False), ("operator", h.operator_listen, True)):
            if not endpoint:
                continue
            site = BoundedSite(Root(self.app, operator), Bounds(which, h, self.app.metrics, self.reactor))
            self.sites[which] = site
            d = serverFromString(self.reactor, endpoint).listen(site)
            d.addCallback(self._listening, which, endpoint)
            ds.append(d)
        if not h.operator_listen and not h.operator_token:
            log.warning("http: no operator_listen and no operator_token: /metrics and the operator API are not served")
        if self.app.data is None:
            log.warning("http: share accounting is off ([redis] not configured): the API answers 503 where it needs it")
        return defer.gatherResults(ds, consumeErrors=True)

    def _listening(self, port, which: str, endpoint: str):
        self.ports[which] = port
        host = port.getHost()
        log.info("http %s part on %s (port %s)", which, endpoint, getattr(host, "port", host))
        return port

    def port(self, which: str = "public") -> int:
        return self.ports[which].getHost().port

    def stopService(self):
        super().stopService()
        ds = [defer.maybeDeferred(p.stopListening) for p in self.ports.values()]
        self.ports = {}
        for s in reversed(self.extra):
            s.stopService()

        def stop_threads(_):
            self.threadpool.stop()
            data = self.app.data
            if data is not None:
                if data.payouts is not None:
                    data.payouts.close()
                data.reader.close()

        return defer.gatherResults(ds, consumeErrors=True).addBoth(stop_threads)


def build_http(config, reactor, metrics, *, work=None, stratum=None, submitter=None, nodes=None, accounting=None,
               reader=None, payouts=None) -> tuple[HttpService, MetricsSink]:
    """The HTTP service and the event sink that feeds its hashrate gauge and
    per-worker counters (the caller adds the sink to the pool's MultiSink).
    ``reader`` (the accounting store's read side) and ``payouts`` (the
    ledger's) come from the wiring point; without a reader the API serves
    only the live figures."""
    h = config.http
    threadpool = ThreadPool(minthreads=0, maxthreads=h.read_threads, name="hashcoop-http")
    reads = Reads(reactor, threadpool, ttl=h.cache_seconds, timeout=h.read_timeout, max_pending=h.max_pending_reads)
    data = PoolData(reader, payouts=payouts) if reader is not None else None
    live = Live(clock=reactor, config=config, work=work, stratum=stratum, submitter=submitter, nodes=nodes,
                accounting=accounting)
    app = App(config=config, reads=reads, data=data, live=live, metrics=metrics, static_dir=STATIC_DIR)
    sink = MetricsSink(metrics, reactor, per_worker=h.per_worker_metrics)
    extra = []
    if data is not None:
        a = config.accounting
        extra.append(WithholdingWatch(reads, data, metrics, alpha=a.withholding_alpha,
                                      interval=a.withholding_check_interval, clock=reactor))
    return HttpService(reactor, config, app, threadpool, extra_services=extra), sink
