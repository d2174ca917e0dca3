"""Real processes for the payout tests: Redis, `hashcoop devnode` with a
wallet, `hashcoop run` with Redis accounting, CPU miners, and
`hashcoop payouts` runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.procs import DevNode, write_toml

ROOT = Path(__file__).resolve().parents[2]
OTHER = "bcrt1qj4j7j704sq2yumjs0xq2hp2xhaukegh4emmvfn"  # the rest of the network
MINERS = ["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
          "bcrt1psjw83ferk5eyapl0f5fpd8u50s2t39hxp4pzuttnugf0acxfwy4qwwea25"]
FEE_ADDRESS = "bcrt1qqqqsyqcyq5rqwzqfpg9scrgwpugpzysnard0ew"


def wallet_node(datadir: Path) -> tuple[DevNode, str]:
    """A devnode (regtest's easy target, no synthetic mempool) with a
    wallet "pool"; returns it and the pool's address from getnewaddress."""
    node = DevNode(datadir, "--initial-blocks", "1", "--mempool-rate", "0")
    node.rpc("createwallet", "pool")
    return node, node.rpc("getnewaddress")


def write_config(path: Path, *, node, pool_address: str, data_dir: Path, db_url: str, redis_url: str | None = None,
                 stratum_port: int = 0, share_difficulty: float = 0.0001, window_difficulty: float = 0.0015,
                 payouts: dict | None = None) -> Path:
    """A pool and payout config on ``node`` (anything with ``url`` and ``cookie_path``)."""
    p = {"fee_percent": 1.0, "fee_address": FEE_ADDRESS, "min_payout_sat": 1000, "max_outputs": 2, "tx_fee_payer": "pool",
         "fee_rate_sat_vb": 2.0, "payment_confirmations": 2, "interval": 1.0, "wallet": "pool", "lease_ttl": 30.0}
    p.update(payouts or {})
    config = {
        "pool": {"network": "regtest", "address": pool_address, "data_dir": str(data_dir)},
        "nodes": [{"url": node.url, "cookie_file": str(node.cookie_path)}],
        "work": {"notify_listen": "", "poll_interval": 0.5},
        "stratum": {"ports": [{"port": stratum_port or 3333, "bind": "127.0.0.1", "start_difficulty": share_difficulty,
                               "min_difficulty": share_difficulty, "max_difficulty": share_difficulty, "vardiff": False}]},
        "database": {"url": db_url},
        "payouts": p,
    }
    if redis_url:
        config["redis"] = {"url": redis_url, "socket_timeout": 2.0}
        config["accounting"] = {"window_difficulty": window_difficulty}
    return write_toml(path, config)


def payouts(config: Path, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONUNBUFFERED="1")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "hashcoop.pool.app.cli", "payouts", "-c", str(config), *args], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)


def sends_by_address(wallet_rpc) -> dict[str, int]:
    """What the wallet sent, by address, from its own transaction list
    (sends confirmed or not); ``wallet_rpc(method, *params)`` calls the wallet."""
    out: dict[str, int] = {}
    for e in wallet_rpc("listtransactions", "*", 100000):
        if e["category"] == "send" and e["confirmations"] >= 0:
            out[e["address"]] = out.get(e["address"], 0) + round(-e["amount"] * 100_000_000)
    return out


def coinbase_to(node: DevNode, block_hash: str, address: str) -> int:
    blk = node.rpc("getblock", block_hash, 2)
    return sum(round(o["value"] * 100_000_000) for o in blk["tx"][0]["vout"] if o["scriptPubKey"].get("address") == address)
