"""One mining run shared by the HTTP tests: Redis, the stand-in node (plus a
second, unreachable node, as a backup that is down), `hashcoop run` with
[redis] and [http], CPU miners for two addresses (one worker stops early and
shows offline), and a raw Stratum client that stays connected and sends a
few bad shares (rejects). The node has a wallet the coinbases pay; after the
run the chain moves 101 blocks on and `hashcoop payouts run --once` credits
the mature blocks and pays the miners (the ledger the API reads), and the
payments confirm. Tests read the pool over HTTP."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.accounting.e2e import ADDRESSES, Miner
from tests.procs import DevNode, PoolProcess, RedisProcess, free_port, wait_for, write_toml

ROOT = Path(__file__).resolve().parents[2]

SHARE_DIFF = 0.0001  # a share every two or three seconds per CPU miner
WINDOW_DIFF = 0.001  # PPLNS window of ten shares
# The stand-in's easy regtest target (every share is a block): the payout
# service needs 101 blocks on top of the pool's to credit them, which only
# generatetoaddress at the easy target can make in a test's time.
TOKEN = "operator-token-for-tests-0123456789"
CORS_ORIGIN = "https://dashboard.example"
OFFLINE_AFTER = 30.0  # rig1 (a share every ~2.5 s) stays online even on a loaded machine
OTHER = "bcrt1qj4j7j704sq2yumjs0xq2hp2xhaukegh4emmvfn"  # the rest of the network
A, B = ADDRESSES[0], ADDRESSES[1]  # A: workers rig1 (keeps mining) and rig2 (stops early); B: one worker
UNKNOWN = "mfcHP2WMCVLsVZA8yrovmhMgxNFW9r98xw"  # a valid regtest address (base58 P2PKH) that never mined


@dataclass
class Rig:
    tmp: Path
    redis: RedisProcess
    node: DevNode
    pool: PoolProcess
    pool_address: str
    public: str
    operator: str
    stratum_port: int
    miners: list = field(default_factory=list)
    probe: socket.socket | None = None
    probe_replies: list = field(default_factory=list)

    def get(self, path: str, *, base: str | None = None, headers: dict | None = None, method: str = "GET",
            timeout: float = 10):
        """(status, headers, body bytes); never raises on an HTTP status."""
        req = urllib.request.Request((base or self.public) + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def json(self, path: str, **kw):
        status, headers, body = self.get(path, **kw)
        assert headers.get("Content-Type", "").startswith("application/json"), (path, status, headers)
        return status, json.loads(body)

    def node_height(self) -> int:
        return self.node.rpc("getblockcount")

    @property
    def config(self) -> Path:
        return self.tmp / "pool.toml"

    def payouts(self, *args: str) -> str:
        res = subprocess.run([sys.executable, "-m", "hashcoop.pool.app.cli", "payouts", "-c", str(self.config), *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout

    def close(self) -> None:
        if self.probe is not None:
            self.probe.close()
        for m in self.miners:
            m.close()
        self.pool.close()
        self.node.close()
        self.redis.stop()


def start(tmp: Path) -> Rig:
    redis = RedisProcess(tmp / "redis").start()
    node = DevNode(tmp / "node", "--initial-blocks", "1", "--mempool-rate", "0")
    node.rpc("createwallet", "pool")
    pool_address = node.rpc("getnewaddress")
    port, public, operator = free_port(), free_port(), free_port()
    dead = free_port()  # nothing listens here: a backup node that is down
    cfg = write_toml(tmp / "pool.toml", {
        "pool": {"network": "regtest", "address": pool_address, "data_dir": str(tmp / "data")},
        "nodes": [{"url": node.url, "cookie_file": str(node.cookie_path)},
                  {"name": "backup", "url": f"http://127.0.0.1:{dead}", "user": "u", "password": "p", "longpoll": False,
                   "timeout": 2}],
        "work": {"notify_listen": "", "poll_interval": 0.5},
        "stratum": {"ports": [{"port": port, "bind": "127.0.0.1", "start_difficulty": SHARE_DIFF, "min_difficulty": SHARE_DIFF,
                               "max_difficulty": SHARE_DIFF, "vardiff": False}]},
        "redis": {"url": redis.url, "socket_timeout": 2.0},
        "accounting": {"worker_offline_after": OFFLINE_AFTER, "window_difficulty": WINDOW_DIFF},
        "database": {"url": f"sqlite:///{tmp / 'data' / 'payouts.sqlite'}"},
        "payouts": {"fee_percent": 1.0, "min_payout_sat": 1000, "tx_fee_payer": "pool", "fee_rate_sat_vb": 2.0,
                    "payment_confirmations": 2, "wallet": "pool"},
        "http": {"listen": f"tcp:{public}:interface=127.0.0.1", "operator_listen": f"tcp:{operator}:interface=127.0.0.1",
                 "operator_token": TOKEN, "cors_origins": [CORS_ORIGIN], "per_worker_metrics": True, "cache_seconds": 1,
                 "refresh_seconds": 2},
    })
    pool = PoolProcess(cfg, tmp / "pool.log", port)
    rig = Rig(tmp, redis, node, pool, pool_address, f"http://127.0.0.1:{public}", f"http://127.0.0.1:{operator}", port)
    try:
        wait_for(lambda: _answers(rig.public), 30, what="the HTTP listener")
        log = lambda name: tmp / f"miner-{name}.log"  # noqa: E731
        early = Miner(port, A, "rig2", "--max-shares", "4", log=log("rig2"))
        rig.miners += [
            Miner(port, A, "rig1", "--duration", "900", log=log("rig1")),
            early,
            Miner(port, B, "solo", "--max-shares", "6", log=log("solo")),
        ]
        rig.probe = _probe(port, rig.probe_replies)
        wait_for(lambda: all(m.accepted() for m in rig.miners), 120, what="shares from every miner")
        early.result(90)
        rig.miners[2].result(90)
        # the blocks mature; the payout service credits them and pays; the payments confirm
        node.rpc("generatetoaddress", 101, OTHER)
        rig.payouts("run", "--once")
        node.rpc("generatetoaddress", 2, OTHER)
        rig.payouts("run", "--once")

        def confirmed() -> bool:
            blocks = rig.json("/api/v1/blocks?limit=100")[1]["blocks"]
            return any(b["payout"] is not None and b["payout"]["status"] == "credited" for b in blocks)

        # a block whose round reached Redis after a pass was imported by the
        # next one and is credited one pass later (seen once in five runs:
        # no block confirmed yet); more passes, until one is
        for _ in range(5):
            if confirmed():
                break
            time.sleep(1.5)  # past the API's cache_seconds
            rig.payouts("run", "--once")
        # rig2 has been quiet for longer than worker_offline_after
        wait_for(lambda: not _worker(rig, A, "rig2")["online"] and not _worker(rig, B, "solo")["online"],
                 OFFLINE_AFTER + 30, what="rig2 and solo to show offline")
        return rig
    except BaseException:
        rig.close()
        raise


def _answers(base: str) -> bool:
    try:
        urllib.request.urlopen(base + "/api/v1", timeout=2).read()
        return True
    except OSError:
        return False


def _worker(rig: Rig, address: str, worker: str) -> dict:
    status, body = rig.json(f"/api/v1/addresses/{address}/workers/{worker}")
    assert status == 200, body
    return body


def _probe(port: int, replies: list) -> socket.socket:
    """A raw Stratum client that stays connected: authorized as B.probe, and
    sends three shares the pool must reject (unknown job)."""
    s = socket.create_connection(("127.0.0.1", port), 5)
    f = s.makefile("rwb")
    lines = [
        {"id": 1, "method": "mining.subscribe", "params": ["http-test/1"]},
        {"id": 2, "method": "mining.authorize", "params": [f"{B}.probe", "x"]},
    ] + [{"id": 10 + i, "method": "mining.submit", "params": [f"{B}.probe", "nosuchjob", "00000000", "00000000", "00000000"]}
         for i in range(3)]
    for msg in lines:
        f.write(json.dumps(msg).encode() + b"\n")
    f.flush()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(1 for r in replies if r.get("id", 0) >= 10) < 3:
        line = f.readline()
        if not line:
            break
        msg = json.loads(line)
        if msg.get("id") is not None:
            replies.append(msg)
    return s
