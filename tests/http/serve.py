"""A real HTTP side in its own process for the socket tests of its bounds
(tests/http/test_bounds.py).

The pool's own ``HttpService`` as ``build_http`` wires it (no Redis: the
pages that need it answer 503; the static files and /api/v1 do not), on
the reactor ``hashcoop run`` installs, the public part on a real port, plus
one test-only route, ``/big``, a page of ``big_bytes`` bytes. With
``"plain": true`` a second listener serves the same site through stock
twisted.web (``Site``, ``HTTPChannel``), for comparison. The test drives it
on stdin/stdout, one JSON object per line:

    {"cmd": "stats"}     connections, output held per connection, RSS, CPU seconds, descriptors, metrics
    {"cmd": "quit"}

Started with ``python -m tests.http.serve CONFIG_JSON`` from the repository
root; CONFIG_JSON holds ``http`` (keys of the [http] section), ``big_bytes``,
``plain`` and ``sndbuf`` (SO_SNDBUF of the public listener's connections). The first line it prints is ``{"port": P, "plain_port": Q,
"pid": N}``.
"""
from __future__ import annotations

import json
import os
import re
import sys


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str]) -> int:
    opts = json.loads(argv[0]) if argv else {}
    from hashcoop.pool.app.service import setup_logging
    from hashcoop.stratum.reactor import install

    setup_logging(opts.get("log_level", "INFO"))
    install()
    from twisted.internet import reactor
    from twisted.web.server import Site

    from hashcoop.pool.config import load_config
    from hashcoop.pool.http.api import Reply, Root
    from hashcoop.pool.http.bounds import acked_bytes
    from hashcoop.pool.http.service import build_http
    from hashcoop.pool.metrics import Metrics
    from hashcoop.pool.transports import unsent_bytes
    from tests.procs import metric_samples, serve_control
    from tests.stratum.harness import ADDR

    http = {"listen": "tcp:0:interface=127.0.0.1", "operator_listen": "", **opts.get("http", {})}
    cfg = load_config(data={"pool": {"network": "regtest", "address": ADDR}, "nodes": [{"url": "http://127.0.0.1:1/"}],
                            "http": http}, env={})
    metrics = Metrics()
    service, _ = build_http(cfg, reactor, metrics)
    app = service.app
    big = b"b" * int(opts.get("big_bytes", 1 << 20))
    app.routes.append((re.compile(r"/big"), lambda request: Reply(big, b"application/octet-stream"), False, False))
    plain = []
    plain_transports = []

    def listening(_):
        site = service.sites["public"]
        sndbuf = opts.get("sndbuf")
        if sndbuf:
            # the kernel's send buffer pinned small, as on a slow link, so a page
            # backs up into the process at once instead of into a loopback
            # connection's megabytes of kernel buffer
            import socket

            from hashcoop.pool.http.bounds import BoundedChannel

            class SmallSendBuffer(BoundedChannel):
                def connectionMade(self):
                    self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(sndbuf))
                    super().connectionMade()

            site.protocol = SmallSendBuffer
        out = {"port": service.port("public"), "pid": os.getpid(), "plain_port": None}
        if opts.get("plain"):
            stock = Site(Root(app, False), reactor=reactor)
            build = stock.buildProtocol

            def build_and_keep(addr):
                p = build(addr)
                plain_transports.append(p)
                return p

            stock.buildProtocol = build_and_keep
            plain.append(reactor.listenTCP(0, stock, interface="127.0.0.1"))
            out["plain_port"] = plain[0].getHost().port
        print(json.dumps(out), flush=True)
        return site

    def samples(name: str) -> dict:
        return metric_samples(metrics.registry, name)

    def stats() -> dict:
        b = service.sites["public"].bounds
        held = [unsent_bytes(c.transport) for c in b.channels if c.transport is not None]
        plain_held = [unsent_bytes(p._channel.transport) for p in plain_transports
                      if getattr(p._channel, "transport", None) is not None and p._channel.transport.connected]
        times = os.times()
        return {
            "connections": len(b.channels), "open": b.admission.open, "per_ip": dict(b.admission.per_ip),
            "held_max": max(held, default=0), "held_sum": sum(held), "plain_held_max": max(plain_held, default=0),
            "acked": [acked_bytes(c.transport) for c in b.channels if c.transport is not None],
            "rss": _rss(), "cpu": times.user + times.system, "fds": _fds(),
            "refused": samples("hashcoop_http_connections_refused_total"),
            "disconnects": samples("hashcoop_http_disconnects_total"),
            "gauge": samples("hashcoop_http_connections"),
        }

    d = service.startService()
    d.addCallback(listening)
    serve_control(reactor, {"stats": lambda cmd: stats()})
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
