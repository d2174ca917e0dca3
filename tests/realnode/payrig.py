"""Blocks for the payout tests on Bitcoin Core: real cpuminer processes
mine through ``hashcoop run`` (Redis accounting) on a regtest Core whose
wallet "pool" owns the pool's address; afterwards the payout commands run
as forked children (``tests.payouts.crash.ForkedCLI``) on the pool's own
config file, which carries the ``[payouts]`` and ``[database]`` sections."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hashcoop.pool.accounting.sharelog import ShareLogReader, Snapshot
from tests.procs import free_port, wait_for
from tests.realnode.core import CoreError, CoreNode
from tests.realnode.rig import pool_config

DIFFICULTY = 0.001  # a share every ~0.6 s per minerd thread; on regtest every share is also a block
WINDOW = 0.015  # the PPLNS window in share difficulty: the last 15 shares
PREFIX = "hashcoop:"
NO_PAY = {"HASHCOOP__PAYOUTS__MIN_PAYOUT_SAT": "2100000000000000"}  # a pass that credits but pays nobody
PAYOUTS = {"wallet": "pool", "fee_percent": 1.0, "fee_address": "", "min_payout_sat": 1000, "max_outputs": 2,
           "tx_fee_payer": "pool", "fee_rate_sat_vb": 2.0, "payment_confirmations": 1, "interval": 1.0}


@dataclass
class Mined:
    config: Path  # the pool's config file, [payouts] and [database] included
    db_url: str
    snaps: dict[str, Snapshot]  # every block the pool found -> its PPLNS window snapshot in Redis
    main: list[str]  # those in Core's main chain, lowest first
    joined: int  # Core's height when every miner had had a share accepted: later blocks' windows hold every miner
    sharelog: ShareLogReader


def core_with_pool_wallet(core) -> tuple[CoreNode, str]:
    """A regtest Core with the wallet "pool" and the pool's address from it."""
    node = core("core")
    node.rpc("createwallet", "pool")
    return node, node.rpc("getnewaddress", wallet="pool")


def in_main_chain(node: CoreNode, block_hash: str) -> bool:
    try:
        return node.rpc("getblockheader", block_hash)["confirmations"] > 0
    except CoreError:
        return False


def mine(node: CoreNode, tmp_path: Path, *, pool_process, minerd, redis_server, pool_address: str, miners: list[str], blocks: int,
         payouts: dict | None = None) -> Mined:
    """One minerd (one thread) per address in ``miners`` mines through the
    pool until, after every miner has had a share accepted, Core's chain
    holds ``blocks`` more blocks (all the pool's: nothing else mines
    meanwhile); then the miners and the pool stop (the
    pool flushes its accounting) and every block the pool found must have
    its window snapshot in Redis."""
    port = free_port()
    db_url = f"sqlite:///{tmp_path}/ledger.sqlite"
    cfg = pool_config([node], port=port, data_dir=tmp_path / "data", address=pool_address, difficulty=DIFFICULTY,
                      redis_url=redis_server.url,
                      extra={"accounting": {"window_difficulty": WINDOW}, "database": {"url": db_url},
                             "payouts": {**PAYOUTS, **(payouts or {})}})
    pool = pool_process(cfg)
    procs = [minerd(port, f"{a}.m{i}") for i, a in enumerate(miners)]
    wait_for(lambda: all(m.counts()[0] for m in procs), timeout=60, what="a share accepted from every miner")
    start = node.rpc("getblockcount")
    wait_for(lambda: node.rpc("getblockcount") >= start + blocks, timeout=120, what=f"{blocks} blocks from the miners")
    for m in procs:
        m.stop()
    pool.close()
    r = redis_server.client()
    sharelog = ShareLogReader(r, PREFIX)
    found = r.zrange(PREFIX + "blocks", 0, -1)
    snaps = {h: sharelog.snapshot(h) for h in found}
    assert None not in snaps.values(), "every block the pool found has its window snapshot"
    main = sorted((h for h in found if in_main_chain(node, h)), key=lambda h: snaps[h].height)
    assert len(main) >= blocks, (len(main), len(found))
    return Mined(pool.path, db_url, snaps, main, start, sharelog)

