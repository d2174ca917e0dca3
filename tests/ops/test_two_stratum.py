"""Scale-out as docs/runbook.md describes it: two stratum processes (their
own pool.instance_id and data_dir) on one Redis and one ledger database,
CPU miners on both. Every share the miners were told was accepted is in
Redis exactly once, under one global order; no two sessions of the two
processes hold the same extranonce1; the payout service imports every
block either process found into the one ledger, once, and its windows
recompute exactly from the shared share log."""
from __future__ import annotations

import subprocess
import sys

import pytest

from hashcoop.pool.core.btc.target import DIFF1_TARGET, target_to_bits
from tests.ops.stack import subscribe
from tests.procs import DevNode, Miner, PoolProcess, RedisProcess, free_port

MINERS = [  # (address, worker, instance it mines on)
    ("bcrt1qqqqsyqcyq5rqwzqfpg9scrgwpugpzysnard0ew", "a0", 0),
    ("bcrt1psjw83ferk5eyapl0f5fpd8u50s2t39hxp4pzuttnugf0acxfwy4qwwea25", "b0", 0),
    ("bcrt1qqqqsyqcyq5rqwzqfpg9scrgwpugpzysnard0ew", "a1", 1),
    ("mfcHP2WMCVLsVZA8yrovmhMgxNFW9r98xw", "c1", 1),
]
SHARE_DIFFICULTY = 0.00005
NETWORK_DIFFICULTY = 0.0005  # about one block per 10 shares
MINING_SECONDS = 25
PROBES = 20  # extra sessions per process, for the extranonce1 check


def config(instance: int, node: DevNode, redis: RedisProcess, tmp, ports: list[int], ledger: str, address: str) -> dict:
    stratum = {"ports": [{"port": port, "bind": "127.0.0.1", "start_difficulty": SHARE_DIFFICULTY,
                          "min_difficulty": SHARE_DIFFICULTY, "max_difficulty": SHARE_DIFFICULTY, "vardiff": False}
                         for port in ports]}
    stratum["reuse_port"] = True  # [stratum] reuse_port: SO_REUSEPORT on every port
    return {
        "pool": {"network": "regtest", "address": address, "instance_id": instance, "data_dir": str(tmp / f"pool-{instance}")},
        "nodes": [{"url": node.url, "cookie_file": node.cookie_path}],
        "work": {"notify_listen": "", "poll_interval": 0.5},
        "stratum": stratum,
        "redis": {"url": redis.url, "prefix": "hashcoop:"},
        "accounting": {"flush_interval": 0.25, "window_factor": 2.0},
        "database": {"url": ledger},
        "payouts": {"wallet": "pool", "fee_rate_sat_vb": 2.0, "interval": 1.0},
    }


@pytest.fixture
def stack(tmp_path):
    redis = RedisProcess(tmp_path / "redis", persistent=True, appendfsync="everysec").start()  # as docs/redis.md asks
    bits = target_to_bits(int(DIFF1_TARGET / NETWORK_DIFFICULTY))
    node = DevNode(tmp_path / "node", "--bits", f"{bits:08x}", "--mempool-rate", "0", "--initial-blocks", "1")
    ledger = "sqlite:///" + str(tmp_path / "ledger.sqlite")
    node.rpc("createwallet", "pool")
    address = node.rpc("getnewaddress")  # the pool's coinbase pays its wallet
    # Both processes listen on one shared port with SO_REUSEPORT, where the
    # kernel spreads the probe sessions; each also has a port of its own
    # (as behind a proxy) for the miners, so both processes get some.
    own = [free_port(), free_port()]
    shared = free_port()
    listen = [[own[i], shared] for i in (0, 1)]
    probe_ports = [shared, shared]
    pools = [PoolProcess.from_dict(tmp_path / f"run-{i}", config(i, node, redis, tmp_path, listen[i], ledger, address))
             for i in (0, 1)]
    try:
        for p, port in zip(pools, own):
            p.wait_listening(port)
        yield redis, node, pools, own, probe_ports
    finally:
        for p in pools:
            p.stop()
        node.close()
        redis.stop()


def test_two_stratum_processes_share_one_redis_without_doubles_losses_or_extranonce_collisions(stack, tmp_path):
    redis, node, pools, ports, probe_ports = stack
    # extranonce1: live sessions on both processes all differ, and each
    # carries its process's instance id in the first byte
    sessions = []
    seen: dict[str, int] = {}
    for instance, port in enumerate(probe_ports):
        for k in range(PROBES):
            s, en1 = subscribe(port, f"{MINERS[0][0]}.probe{instance}x{k}")
            sessions.append(s)
            seen.setdefault(en1, 0)
            seen[en1] += 1
    try:
        assert len(seen) == len(sessions) == 2 * PROBES, [e for e, n in seen.items() if n > 1]
        prefixes = {int(en1[:2], 16) for en1 in seen}
        assert prefixes == {0, 1}  # the kernel gave sessions to both processes on the shared port
    finally:
        for s in sessions:
            s.close()

    miners = [Miner(f"stratum+tcp://127.0.0.1:{ports[inst]}", f"{addr}.{worker}", "-p", "x", "-t", "1",
                    "--duration", str(MINING_SECONDS), log=tmp_path / f"miner-{worker}.log")
              for addr, worker, inst in MINERS]
    results = [m.result(timeout=MINING_SECONDS + 60) for m in miners]
    # a clean stop writes every accepted share to Redis before exiting
    for p in pools:
        assert p.stop() == 0, p.text()[-3000:]

    r = redis.client()
    told = sum(x["accepted"] for x in results)
    assert told > 20 and all(x["accepted"] > 0 for x in results), results
    # nothing lost, nothing counted twice: the pool total, each worker's
    # count, and the share log all agree with what the miners were told
    assert int(r.hget("hashcoop:pool", "acc")) == told
    for (addr, worker, _), x in zip(MINERS, results):
        assert int(r.hget(f"hashcoop:worker:{addr}:{worker}", "acc")) == x["accepted"], (addr, worker)
    assert int(r.get("hashcoop:seq")) == told
    log = []
    for _id, fields in r.xrange("hashcoop:sharelog"):
        first = int(_id.split("-")[0])
        lines = fields["s"].splitlines()
        assert int(fields["n"]) == len(lines)
        log.extend((first + i, line.split()[5]) for i, line in enumerate(lines))
    seqs = [s for s, _ in log]
    hashes = [h for _, h in log]
    assert seqs == list(range(1, told + 1))  # one global order, no gap
    assert len(set(hashes)) == told  # no share twice
    # the batches came from both processes (two runs in the batch ids)
    runs = {fields["batch"].split(":")[0] for _id, fields in r.xrange("hashcoop:sharelog")}
    assert len(runs) == 2
    # blocks found through either process are rounds in the one Redis (a
    # candidate the pool answered stale-job, its tip already gone, is not;
    # nor one the other process's block had just replaced, credited as a
    # late share within stratum.stale_grace and recorded as a lost block)
    blocks = sum(x["blocks_accepted"] for x in results)
    late = sum(p.text().count("(a late share: credited as a share)") for p in pools)
    assert r.zcard("hashcoop:blocks") == blocks - late, (blocks, late)
    # and neither process left a journal behind
    for i in (0, 1):
        assert not list((tmp_path / f"pool-{i}" / "accounting").glob("journal-*.jnl"))

    # the one payout service imports every block of both processes into the
    # one ledger, each once, and every imported window recomputes exactly
    # from the share log the two processes wrote
    assert blocks >= 1, results
    cfg = str(pools[0].path)

    def payouts(*args):
        return subprocess.run([sys.executable, "-m", "hashcoop.pool.app.cli", "payouts", "-c", cfg, *args], capture_output=True,
                              text=True, timeout=120)

    once = payouts("run", "--once")
    assert once.returncode == 0, once.stderr[-3000:]
    from hashcoop.payouts import read
    from hashcoop.payouts.db import make_engine

    engine = make_engine(pools[0].config["database"]["url"], writer=False)
    try:
        in_ledger = [b["hash"] for b in read.blocks(engine, limit=10_000)]
    finally:
        engine.dispose()
    assert sorted(in_ledger) == sorted(r.zrange("hashcoop:blocks", 0, -1))
    verify = payouts("verify", "--all")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-3000:]
