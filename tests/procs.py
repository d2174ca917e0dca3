"""Real processes for end-to-end tests: the stand-in node and CPU miners,
started as `hashcoop` subprocesses, plus a small synchronous JSON-RPC client."""
from __future__ import annotations

import base64
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pool.demo import free_port  # noqa: F401 (the tests' one free_port: import it from here)
from pool.demo import toml_dumps

ROOT = Path(__file__).resolve().parents[1]



def write_toml(path: Path, config: dict) -> Path:
    """``config``, a dict as ``load_config(data=...)`` takes it, written to
    ``path`` as TOML (the demo's writer): rigs build configs as data."""
    Path(path).write_text(toml_dumps(config))
    return Path(path)


def hashcoop(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.update(kw.pop("env", {}))
    return subprocess.Popen([sys.executable, "-m", "pool.cli", *args], cwd=kw.pop("cwd", ROOT), env=env, **kw)


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    fd = proc.stdout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            line = fd.readline()
            if line:
                return line.decode() if isinstance(line, bytes) else line
            break
        if proc.poll() is not None:
            break
    raise RuntimeError(f"process {proc.args} gave no line within {timeout}s (exit {proc.poll()})")


def json_rpc(url: str, auth: bytes, method: str, params=(), *, wallet: str | None = None, timeout: float = 30) -> dict:
    """One JSON-RPC 1.0 call as bitcoin-cli makes it, to a node's ``url``
    (``/wallet/NAME`` with ``wallet``) with Basic ``auth`` (``user:password``,
    a cookie's content); ``{"result": ...}`` or ``{"error": {...}}`` as the
    node answered, whatever the HTTP status."""
    body = json.dumps({"jsonrpc": "1.0", "id": 1, "method": method, "params": list(params)}).encode()
    path = f"wallet/{wallet}" if wallet is not None else ""
    req = urllib.request.Request(url.rstrip("/") + "/" + path, body, {"Content-Type": "application/json"})
    req.add_header("Authorization", "Basic " + base64.b64encode(auth.strip()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            reply = json.loads(r.read())
    except urllib.error.HTTPError as e:
        reply = json.loads(e.read())
    return {"error": reply["error"]} if reply.get("error") else {"result": reply["result"]}


class RPCError(Exception):
    def __init__(self, error):
        self.code = error.get("code")
        self.message = error.get("message")
        super().__init__(f"{self.code}: {self.message}")


class DevNode:
    """`hashcoop devnode` on a free port; `rpc(method, *params)` like bitcoin-cli."""

    def __init__(self, datadir: Path, *args: str, log: Path | None = None):
        self.datadir = Path(datadir)
        self.log_path = log or self.datadir.with_suffix(".log")
        self.log = open(self.log_path, "ab")
        self.args = args
        self.proc = None
        self.start()

    def start(self):
        self.proc = hashcoop("devnode", "--rpcport", str(getattr(self, "port", 0)), "--datadir", str(self.datadir),
                             "--print-ready", *self.args, stdout=subprocess.PIPE, stderr=self.log)
        ready = json.loads(_readline(self.proc, 120))
        self.url = ready["rpc_url"]
        self.port = ready["rpcport"]
        self.cookie_path = ready.get("cookie")
        self.ready = ready
        return ready

    def rpc(self, method: str, *params, timeout: float = 30):
        reply = json_rpc(self.url, Path(self.cookie_path).read_bytes(), method, params, timeout=timeout)
        if "error" in reply:
            raise RPCError(reply["error"])
        return reply["result"]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()

    def close(self):
        self.stop()
        self.log.close()


class Miner:
    """`hashcoop miner` against a pool; `result()` is its final JSON summary."""

    def __init__(self, url: str, user: str, *args: str, log: Path):
        self.log = open(log, "ab")
        self.proc = hashcoop("miner", "-o", url, "-u", user, "--status-interval", "0", *args,
                             stdout=subprocess.PIPE, stderr=self.log)

    def result(self, timeout: float = 120) -> dict:
        out, _ = self.proc.communicate(timeout=timeout)
        self.log.close()
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        return json.loads(lines[-1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.result(30)
        except Exception:
            self.proc.kill()
            raise


def wait_for(cond, timeout: float = 60.0, step: float = 0.1, what: str = "condition"):
    """Poll ``cond()`` every ``step`` seconds until it returns something
    true (returned) or ``timeout`` seconds pass (AssertionError)."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(step)
