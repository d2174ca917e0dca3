"""The battery's server process (``tests.hostile.serve``) seen from a test."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.procs import free_port

ROOT = Path(__file__).resolve().parents[2]



def _line(proc: subprocess.Popen, timeout: float) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], 0.1)
        if r:
            line = proc.stdout.readline()
            if line:
                return json.loads(line)
            break
        if proc.poll() is not None:
            break
    raise RuntimeError(f"the stratum process gave no answer within {timeout}s (exit {proc.poll()})")


class StratumProc:
    """A real Stratum server process (see tests/hostile/serve.py)."""

    def __init__(self, log: Path, **opts):
        self.opts = opts
        self.log_path = Path(log)
        self.proc = None
        self.start()

    def start(self, port: int | None = None) -> None:
        """Start (again: on ``port``, the one it had before)."""
        opts = dict(self.opts)
        st = dict(opts.get("stratum", {}))
        ports = st.get("ports") or [{"port": 0, "bind": "127.0.0.1", "start_difficulty": 1e-12, "min_difficulty": 1e-12,
                                     "max_difficulty": 1e6, "vardiff": False}]
        st["ports"] = [{**ports[0], "port": port or ports[0]["port"] or free_port()}]
        opts["stratum"] = st
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.hostile.serve", json.dumps(opts)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        ready = _line(self.proc, 60)
        self.port = ready["port"]
        self.pid = ready["pid"]

    def call(self, cmd: str, timeout: float = 30, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}).encode() + b"\n")
        self.proc.stdin.flush()
        return _line(self.proc, timeout)

    def stats(self) -> dict:
        return self.call("stats")

    def fds(self) -> int:
        """Open descriptors, seen from outside (/proc)."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close_pipes()

    def stop(self) -> None:
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

    def _close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self._log.close()

    def errors(self) -> list[str]:
        """Tracebacks and unhandled errors the process logged."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines() if "Traceback" in line or "Unhandled" in line or " ERROR " in line]
