"""A real Stratum server process for the hostile battery's socket tests.

The pool's own ``StratumServer`` on the reactor ``hashcoop run`` installs
(epoll, lean transports), listening on a real port, fed the recorded
template (no node: the socket tests are about connections, not work). The
test drives it on stdin/stdout, one JSON object per line:

    {"cmd": "stats"}     sessions, ready, per-IP counts, open descriptors, RSS, CPU seconds, metrics
    {"cmd": "block"}     a new tip: a clean job for everyone
    {"cmd": "quit"}

Started with ``python -m tests.hostile.serve CONFIG_JSON`` from the
repository root; the first line it prints is ``{"port": P, "pid": N}``.
CONFIG_JSON holds ``stratum`` (keys of the [stratum] section), ``pool``
(keys of [pool]) and ``network_difficulty``.
"""
from __future__ import annotations

import json
import os
import sys


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _cpu() -> float:
    """CPU seconds this process has used (user + system)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str]) -> int:
    opts = json.loads(argv[0]) if argv else {}
    from hashcoop.pool.app.service import setup_logging
    from hashcoop.stratum.reactor import install

    setup_logging(opts.get("log_level", "WARNING"))  # Twisted's own errors (an exception out of a callback) included
    install()
    from twisted.internet import reactor

    from hashcoop.pool.config import load_config
    from hashcoop.pool.core.btc.address import address_to_script, get_network
    from hashcoop.pool.core.events import MemorySink
    from hashcoop.pool.core.jobs import JobManager
    from hashcoop.pool.metrics import Metrics
    from hashcoop.pool.transports import unsent_bytes as unsent
    from hashcoop.stratum.server import StratumServer
    from tests.procs import metric_samples, serve_control
    from tests.stratum.harness import ADDR, template

    stratum = {"ports": [{"port": 0, "bind": opts.get("bind", "127.0.0.1"), "start_difficulty": 1e-12,
                          "min_difficulty": 1e-12, "max_difficulty": 1e6, "vardiff": False}]}
    stratum.update(opts.get("stratum", {}))
    cfg = load_config(data={
        "pool": {"network": "regtest", "address": ADDR, "coinbase_tag": "/hostile/", **opts.get("pool", {})},
        "nodes": [{"url": "http://127.0.0.1:1/"}],
        "stratum": stratum,
    }, env={})
    metrics = Metrics()
    sink = MemorySink(keep=1000)

    class Blocks:
        found = 0

        def submit(self, found):
            Blocks.found += 1

        def record_stale(self, found, reason):
            Blocks.found += 1

    jobs = JobManager(payout_script=address_to_script(ADDR, get_network("regtest")), tag=b"/hostile/",
                      extranonce_size=4 + cfg.pool.extranonce2_size, now=reactor.seconds)
    server = StratumServer(reactor=reactor, config=cfg, jobs=jobs, sink=sink, metrics=metrics, block_submitter=Blocks())
    nd = float(opts.get("network_difficulty", 1.0))
    server.on_template(template(network_diff=nd), True)
    server.startService()
    tips = [0]

    def samples(name: str) -> dict:
        return metric_samples(metrics.registry, name)

    def stats() -> dict:
        return {
            "sessions": len(server.sessions), "ready": len(server.ready), "per_ip": dict(server.admission.per_ip),
            "extranonce_live": len(server.extranonce.live), "fds": _fds(), "rss": _rss(),
            "accepted": sink.accepted_count, "rejected": dict(sink.rejected_by_reason), "blocks": Blocks.found,
            "disconnects": samples("hashcoop_disconnects_total"), "refused": samples("hashcoop_connections_refused_total"),
            "protocol_errors": samples("hashcoop_protocol_errors_total"),
            "en1": sorted(s.en1.hex() for s in server.sessions if s.en1),
            "cpu": _cpu(), "blocked": len(server.blocked),
            "output_held": sum(unsent(p.transport) for p in server.blocked),
            "output_pauses": samples("hashcoop_output_pauses_total").get("_", 0),
            "requests_refused": samples("hashcoop_requests_refused_total").get("_", 0),
        }

    def block(cmd) -> dict:
        tips[0] += 1
        server.on_template(template(prev=(0xB10C0000 + tips[0]).to_bytes(32, "little"), network_diff=nd), True)
        return {"job": jobs.current.id}

    serve_control(reactor, {"stats": lambda cmd: stats(), "block": block})
    print(json.dumps({"port": server.listening_ports()[0], "pid": os.getpid()}), flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
