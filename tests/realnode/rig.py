"""The pool around real Bitcoin Core: its configuration as data (run by
``tests.procs.PoolProcess``), and a bare Stratum client that stamps every
``mining.notify`` with the time it arrived."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

from hashcoop.pool.core.btc.hashing import hash_to_hex
from hashcoop.pool.core.jobs import stratum_prevhash
from tests.realnode.core import CoreNode

# regtest addresses nobody holds a key for (BIP173 vectors and friends)
POOL_ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
MINER_A = "bcrt1qqqqsyqcyq5rqwzqfpg9scrgwpugpzysnard0ew"
MINER_B = "bcrt1psjw83ferk5eyapl0f5fpd8u50s2t39hxp4pzuttnugf0acxfwy4qwwea25"
OTHER = "bcrt1qj4j7j704sq2yumjs0xq2hp2xhaukegh4emmvfn"  # the rest of the network
SIGNET_OTHER = "tb1qj4j7j704sq2yumjs0xq2hp2xhaukegh4mjzp76"  # OTHER's program on signet


def pool_config(nodes: list[CoreNode], *, port: int, data_dir: Path, address: str = POOL_ADDR, network: str = "regtest",
                difficulty: float = 0.001, redis_url: str | None = None, zmq: bool = True, longpoll: bool = True,
                notify_listen: str = "", poll_interval: float = 1.0, refresh_interval: float = 30.0,
                extra: dict | None = None) -> dict:
    """A pool on ``nodes`` (in order of preference) with one Stratum port at a fixed ``difficulty``."""
    cfg: dict = {
        "pool": {"network": network, "address": address, "data_dir": str(data_dir), "coinbase_tag": "/realnode/"},
        "nodes": [{"name": n.datadir.name, "url": n.url, "cookie_file": str(n.cookie), "longpoll": longpoll,
                   **({"zmq_hashblock": n.zmq} if zmq else {})} for n in nodes],
        "work": {"notify_listen": notify_listen, "poll_interval": poll_interval, "refresh_interval": refresh_interval,
                 "block_recheck_interval": 1.0},
        "stratum": {"ports": [{"port": port, "bind": "127.0.0.1", "start_difficulty": difficulty, "min_difficulty": difficulty,
                               "max_difficulty": difficulty, "vardiff": False}]},
        "logging": {"level": "INFO"},
    }
    if redis_url:
        cfg["redis"] = {"url": redis_url, "socket_timeout": 2.0}
        cfg["accounting"] = {"flush_interval": 0.1}
    for section, values in (extra or {}).items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


class Probe:
    """A Stratum client that subscribes, authorizes and records each
    ``mining.notify`` as (monotonic time, params); it never submits."""

    def __init__(self, port: int, user: str, *, agent: str = "realnode-probe/1"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.settimeout(None)
        self.notifies: list[tuple[float, list]] = []
        self.lines: list[dict] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.sock.sendall(json.dumps({"id": 1, "method": "mining.subscribe", "params": [agent]}).encode() + b"\n"
                          + json.dumps({"id": 2, "method": "mining.authorize", "params": [user, "x"]}).encode() + b"\n")

    def _read(self) -> None:
        buf = b""
        while not self._stop:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            now = time.monotonic()
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                self.lines.append(msg)
                if msg.get("method") == "mining.notify":
                    self.notifies.append((now, msg["params"]))

    def authorized(self) -> bool:
        return any(m.get("id") == 2 and m.get("result") is True for m in list(self.lines))

    def clean_job_for(self, block_hash: str) -> float | None:
        """When the first clean job building on ``block_hash`` (display hex) arrived, or None."""
        for t, params in list(self.notifies):
            if params[8] and stratum_prev_to_hash(params[1]) == block_hash:
                return t
        return None

    def close(self) -> None:
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)


def stratum_prev_to_hash(prev: str) -> str:
    """mining.notify's prevhash -> the block hash as RPC shows it."""
    return hash_to_hex(bytes.fromhex(stratum_prevhash(bytes.fromhex(prev))))


__all__ = ["MINER_A", "MINER_B", "OTHER", "POOL_ADDR", "Probe", "pool_config", "stratum_prev_to_hash"]
