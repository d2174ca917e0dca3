"""The battery's server process (``tests.hostile.serve``) seen from a test."""
from __future__ import annotations

import os
from pathlib import Path

from tests.procs import ServeProcess, free_port


class StratumProc(ServeProcess):
    """A real Stratum server process (see tests/hostile/serve.py)."""

    def __init__(self, log: Path, **opts):
        super().__init__("tests.hostile.serve", log)
        self.opts = opts
        self.start()

    def start(self, port: int | None = None) -> None:
        """Start (again: on ``port``, the one it had before)."""
        opts = dict(self.opts)
        st = dict(opts.get("stratum", {}))
        ports = st.get("ports") or [{"port": 0, "bind": "127.0.0.1", "start_difficulty": 1e-12, "min_difficulty": 1e-12,
                                     "max_difficulty": 1e6, "vardiff": False}]
        st["ports"] = [{**ports[0], "port": port or ports[0]["port"] or free_port()}]
        opts["stratum"] = st
        ready = self.spawn(opts)
        self.port = ready["port"]
        self.pid = ready["pid"]

    def fds(self) -> int:
        """Open descriptors, seen from outside (/proc)."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))
