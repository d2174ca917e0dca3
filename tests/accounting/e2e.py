"""Real processes for the accounting end-to-end tests: `hashcoop devnode`,
`hashcoop run` with Redis configured (both run by tests.procs), `hashcoop
miner`. Miner output is read by a thread that stamps every line with the
time it arrived, so a test can tell which shares were accepted before a
given moment."""
from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from hashcoop.pool.accounting.sharelog import ShareLogReader
from hashcoop.pool.core.btc.target import difficulty_to_target, target_to_bits
from tests import procs
from tests.procs import hashcoop, write_toml

ADDRESSES = [
    "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
    "bcrt1psjw83ferk5eyapl0f5fpd8u50s2t39hxp4pzuttnugf0acxfwy4qwwea25",
    "bcrt1qqqqsyqcyq5rqwzqfpg9scrgwpugpzysnard0ew",
]

_ACCEPTED = re.compile(r"share accepted \(\d+/\d+\) job (\S+) diff (\S+)")
_BLOCK = re.compile(r"block candidate! hash ([0-9a-f]{64})")


def bits_for(difficulty: float) -> str:
    return f"{target_to_bits(difficulty_to_target(difficulty)):08x}"


class DevNode(procs.DevNode):
    """The stand-in at ``network_difficulty``: one block, no synthetic mempool."""

    def __init__(self, datadir: Path, network_difficulty: float):
        super().__init__(datadir, "--mempool-rate", "0", "--initial-blocks", "1", "--bits", bits_for(network_difficulty))

    @property
    def cookie(self) -> str:
        return self.cookie_path


def pool_config(path: Path, *, node: DevNode, redis_url: str, data_dir: Path, stratum_port: int, share_difficulty: float,
                flush_interval: float = 0.25, window_factor: float = 2.0, max_buffered_shares: int = 100_000,
                metrics_port: int | None = None) -> Path:
    config = {
        "pool": {"network": "regtest", "address": ADDRESSES[0], "data_dir": str(data_dir)},
        "nodes": [{"url": node.url, "cookie_file": str(node.cookie)}],
        "work": {"notify_listen": "", "poll_interval": 0.5},
        "stratum": {"ports": [{"port": stratum_port, "bind": "127.0.0.1", "start_difficulty": share_difficulty,
                               "min_difficulty": share_difficulty, "max_difficulty": share_difficulty, "vardiff": False}]},
        "redis": {"url": redis_url, "prefix": "hashcoop:", "socket_timeout": 1.0, "connect_timeout": 0.5},
        "accounting": {"flush_interval": flush_interval, "window_factor": window_factor,
                       "max_buffered_shares": max_buffered_shares},
    }
    if metrics_port is not None:
        config["http"] = {"listen": "tcp:0:interface=127.0.0.1", "operator_listen": f"tcp:{metrics_port}:interface=127.0.0.1"}
    return write_toml(path, config)


class Miner:
    def __init__(self, port: int, address: str, worker: str, *args: str, log: Path):
        self.address, self.worker = address, worker
        self.lines: list[tuple[float, str]] = []
        self.log = open(log, "a")
        self.proc = hashcoop("miner", "-o", f"stratum+tcp://127.0.0.1:{port}", "-u", f"{address}.{worker}",
                             "--status-interval", "0", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
            self.log.write(line)
            self.log.flush()

    def accepted(self, before: float | None = None) -> list[tuple[str, str]]:
        """(job id, difficulty as printed) of each accepted share."""
        return [m.groups() for t, line in list(self.lines) if (before is None or t <= before)
                for m in [_ACCEPTED.search(line)] if m]

    def blocks(self) -> set[str]:
        return {m.group(1) for _, line in list(self.lines) for m in [_BLOCK.search(line)] if m}

    def result(self, timeout: float = 180) -> dict:
        out = self.proc.stdout.read() if self.proc.wait(timeout) is not None else ""
        self._reader.join(10)
        self.log.close()
        return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])

    def close(self) -> None:
        procs.stop(self.proc, 15)


# -- what Redis holds against what the miners were told ----------------------------


def accounted(r) -> int:
    return int(r.hget("hashcoop:pool", "acc") or 0)


def logged_by_address(r):
    """Every share in the log: {address: Counter((job, difficulty printed as %g))}, plus all hashes."""
    reader = ShareLogReader(r, "hashcoop:")
    first, last = reader.bounds()
    shares = reader.shares(first, last) if last else []
    by = {}
    for s in shares:
        by.setdefault(s.address, Counter())[(s.job_id, f"{s.difficulty:g}")] += 1
    return by, shares


def check_credited(r, miners):
    """Redis credited each address exactly the shares its miner was told
    were accepted: count, and each share's job and difficulty."""
    by, shares = logged_by_address(r)
    assert shares[0].seq == 1, "the whole run is in the share log"
    assert len({s.hash for s in shares}) == len(shares), "no share twice"
    for m in miners:
        got = m.accepted()
        assert by.get(m.address, Counter()) == Counter(got), m.address
        assert int(r.hget(f"hashcoop:addr:{m.address}", "acc")) == len(got)
        assert int(r.hget(f"hashcoop:worker:{m.address}:{m.worker}", "acc")) == len(got)
        told = sum(float(d) for _, d in got)  # the summed difficulty the miner was told was accepted
        assert math.isclose(float(r.hget(f"hashcoop:worker:{m.address}:{m.worker}", "diff")), told, rel_tol=1e-9), m.worker
    assert sum(len(m.accepted()) for m in miners) == accounted(r) == len(shares)
    return shares
