"""hashcoop's own CPU miner (``hashcoop miner``) through the pool on Bitcoin
Core: its blocks are accepted and pay the pool, and the block the pool
reported is, byte for byte, the one in Core's chain."""
from __future__ import annotations

import json

import pytest

from tests.procs import Miner, free_port, wait_for
from tests.realnode.rig import MINER_A, OTHER, POOL_ADDR, pool_config

pytestmark = pytest.mark.bitcoind


def test_hashcoop_miner_finds_blocks_core_accepts(tmp_path, core, pool_process):
    node = core()
    node.rpc("generatetoaddress", 1, OTHER)
    start = node.rpc("getblockcount")
    port = free_port()
    pool_process(pool_config([node], port=port, data_dir=tmp_path / "pool", difficulty=0.0001))
    miner = Miner(f"stratum+tcp://127.0.0.1:{port}", f"{MINER_A}.own", "--max-shares", "3", log=tmp_path / "miner.log")
    result = miner.result(timeout=120)
    assert result["accepted"] == 3 and result["rejected"] == 0 and result["unanswered"] == 0, result
    wait_for(lambda: node.rpc("getblockcount") >= start + 3, timeout=30, what="three blocks in Core's chain")
    journal = [json.loads(line) for line in (tmp_path / "pool" / "found-blocks.jsonl").read_text().splitlines()]
    reported = {e["block"]["hash"]: e["block"]["block_hex"] for e in journal if e["event"] == "found"}
    chain = [node.rpc("getblockhash", h) for h in range(start + 1, node.rpc("getblockcount") + 1)]
    assert set(chain) <= set(reported)
    for block_hash in chain:
        assert node.rpc("getblock", block_hash, 0) == reported[block_hash], "the block Core holds is the pool's"
        assert node.rpc("getblock", block_hash, 2)["tx"][0]["vout"][0]["scriptPubKey"]["address"] == POOL_ADDR
