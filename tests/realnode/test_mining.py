"""Mining on real Bitcoin Core with real miners: two cpuminer processes,
each with its own address, mine through the pool (``hashcoop run`` with
Redis accounting) on regtest, where every share is a block, while a wallet
keeps sending transactions so the templates carry fees.

* Core accepts at least 20 blocks, all the pool's;
* each coinbase pays exactly the coinbasevalue of the block's template:
  Core's own ``getblockstats`` subsidy plus the fees of the transactions
  the block holds (the template the pool got, or for a block found on the
  pool's own block before Core's template came, the subsidy alone);
* Redis holds, per address, exactly the count of shares each minerd was
  told were accepted, and no reject, on either side."""
from __future__ import annotations

import json
import time

import pytest

from tests.procs import free_port, wait_for
from tests.realnode.core import IN_FLIGHT
from tests.realnode.rig import MINER_A, MINER_B, POOL_ADDR, pool_config

pytestmark = pytest.mark.bitcoind(needs=("MINERD",))
BLOCKS = 20
# ~1 s a share per minerd thread at 7 MH/s, and every share is a block.
# The pool moves miners onto its own block at once (work.mine_on_own_block);
# a share the other miner found in the milliseconds before it read that job
# is credited (stratum.stale_grace), so the miners see no reject.
DIFFICULTY = 0.0015


def test_two_cpuminers_mine_blocks_core_accepts_and_redis_counts_what_they_were_told(tmp_path, core, minerd, redis_server,
                                                                                     pool_process):
    node = core()
    node.rpc("createwallet", "spender")
    funds = node.rpc("getnewaddress", wallet="spender")
    node.rpc("generatetoaddress", 101, funds)  # one spendable coinbase, and out of initial block download
    start = node.rpc("getblockcount")
    port = free_port()
    pool_process(pool_config([node], port=port, data_dir=tmp_path / "pool", difficulty=DIFFICULTY,
                            redis_url=redis_server.url))
    miners = {MINER_A: minerd(port, f"{MINER_A}.cpu-a"), MINER_B: minerd(port, f"{MINER_B}.cpu-b")}
    sent = 0
    deadline = time.monotonic() + 240
    while node.rpc("getblockcount") < start + BLOCKS or not all(m.counts()[0] for m in miners.values()):
        assert time.monotonic() < deadline, f"{node.rpc('getblockcount') - start} blocks in 240 s"
        node.rpc("sendtoaddress", MINER_A, 0.001 * (1 + sent % 7), wallet="spender")  # fees for the templates
        sent += 1
        time.sleep(0.25)
    counts = {a: m.stop() for a, m in miners.items()}
    r = redis_server.client()
    seen = sum(c[0] for c in counts.values())
    wait_for(lambda: int(r.hget("hashcoop:pool", "acc") or 0) >= seen, timeout=20,
             what=f"Redis caught up with the miners' counts {counts}")
    time.sleep(1.0)  # a last accounting flush
    for a, (accepted, submitted) in counts.items():
        assert accepted == submitted, f"{a}: minerd saw rejects: {accepted}/{submitted}"
        # equal, but for a share sent as minerd stopped: credited, its reply unread (IN_FLIGHT)
        assert accepted <= int(r.hget(f"hashcoop:addr:{a}", "acc")) <= accepted + IN_FLIGHT, a
    pool_hash = r.hgetall("hashcoop:pool")
    assert not [k for k in pool_hash if k.startswith("rej")], pool_hash

    height = node.rpc("getblockcount")
    assert height - start >= BLOCKS
    found = {h: node.rpc("getblockhash", h) for h in range(start + 1, height + 1)}
    with_fees = 0
    for h, block_hash in found.items():
        block = node.rpc("getblock", block_hash, 2)
        cb = block["tx"][0]
        assert [o["scriptPubKey"].get("address") for o in cb["vout"] if o["value"] > 0] == [POOL_ADDR], h
        stats = node.rpc("getblockstats", block_hash, ["subsidy", "totalfee"])
        assert node.coinbase_value(block_hash) == stats["subsidy"] + stats["totalfee"], (h, stats)
        with_fees += stats["totalfee"] > 0
    assert with_fees, "some blocks carried the wallet's transactions and paid their fees"
    # the blocks are the ones the pool reported, and Redis counted each once
    blocks = set(r.zrange("hashcoop:blocks", 0, -1))
    assert set(found.values()) <= blocks
    figures = {"blocks": len(found), "with_fees": with_fees, "miners": counts, "transactions_sent": sent,
               "coinbase_sat": {h: node.coinbase_value(b) for h, b in list(found.items())[:3]}}
    print("realnode mining:", json.dumps(figures))
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=1))
