"""In-process figures for the hot path, without sockets or a reactor: CPU
microseconds per share through ``StratumProtocol.dataReceived`` (on
transports that only count writes), per share of an accounting payload,
and per miner of a job broadcast. Steadier than the end-to-end scenarios
on a shared machine (process CPU time, best of several rounds), so they
show what each change of the code does.

    python -m hashcoop.pool.tools.bench.hotpath            (or ``hashcoop bench --scenarios hotpath``)

It uses only interfaces the pool has had from the start, so
``hashcoop bench --pool-src OLD_TREE`` runs it against an earlier tree.
"""
from __future__ import annotations

import gc
import hashlib
import json
import random
import sys
import time

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from hashcoop.pool.accounting.keys import Keys
from hashcoop.pool.accounting.model import Batch, Collector
from hashcoop.pool.accounting.ops import Settings, build_payload
from hashcoop.pool.accounting.service import AccountingSink
from hashcoop.pool.config import load_config
from hashcoop.pool.core.btc.address import address_to_script, get_network
from hashcoop.pool.core.btc.target import bits_to_target
from hashcoop.pool.core.events import LoggingSink, MemorySink, MultiSink, ShareAccepted
from hashcoop.pool.core.jobs import JobManager
from hashcoop.pool.core.template import Template, TemplateTx
from hashcoop.pool.metrics import Metrics
from hashcoop.stratum.server import StratumFactory, StratumServer

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
ROUNDS = 5


class CountingTransport:
    """What the protocol needs of a transport; writes are only counted."""

    def __init__(self):
        self.writes = 0
        self.disconnecting = False

    def write(self, data):
        self.writes += 1

    def writeSequence(self, seq):
        self.writes += 1

    def setTcpNoDelay(self, enabled):
        pass

    def loseConnection(self):
        self.disconnecting = True

    def abortConnection(self):
        self.disconnecting = True

    def getPeer(self):
        return None


def template(txs: int = 7, prev: bytes = b"\x42" * 32, curtime: int = 1_795_651_986):
    rnd = random.Random(7)
    transactions = tuple(TemplateTx(rnd.randbytes(200), rnd.randbytes(32), rnd.randbytes(32), 1000) for _ in range(txs))
    bits = 0x1D00FFFF  # difficulty 1: a random share is a block once in 2^32
    return Template(height=200, prevhash=prev, version=0x20000000, bits=bits, target=bits_to_target(bits),
                    curtime=curtime, mintime=curtime - 600, coinbasevalue=50 * 10**8, transactions=transactions,
                    witness_commitment=b"\x6a\x24\xaa\x21\xa9\xed" + hashlib.sha256(b"wc").digest(), longpollid=None)


def server(difficulty: float, sink):
    cfg = load_config(data={
        "pool": {"network": "regtest", "address": ADDRESS},
        "nodes": [{"url": "http://127.0.0.1:1/"}],
        "stratum": {"ports": [{"port": 3333, "start_difficulty": difficulty, "min_difficulty": difficulty,
                               "max_difficulty": 1e6, "vardiff": False}], "max_connections_per_ip": 1_000_000},
    }, env={})

    clock = Clock()
    clock.advance(1_795_651_986)
    jobs = JobManager(payout_script=address_to_script(ADDRESS, get_network("regtest")), tag=b"/bench/",
                      extranonce_size=8, now=clock.seconds, first_seq=1000)

    s = StratumServer(reactor=clock, config=cfg, jobs=jobs, sink=sink, metrics=Metrics(), clock=clock)
    s.on_template(template(), True)
    return s, cfg


def connect(srv, cfg, n: int, addresses: int = 50):
    factory = StratumFactory(srv, cfg.stratum.ports[0])
    miners = []
    for i in range(n):
        proto = factory.buildProtocol(IPv4Address("TCP", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1000))
        proto.makeConnection(CountingTransport())
        user = f"{ADDRESS}.m{i}"
        proto.dataReceived(b'{"id":1,"method":"mining.subscribe","params":["hotpath/1"]}\n'
                           b'{"id":2,"method":"mining.authorize","params":["' + user.encode() + b'","x"]}\n')
        miners.append((proto, user.encode()))
    return miners


def submit_chunks(miners, job_id: str, ntime: int, per_read: int, rounds: int, seed: int):
    rnd = random.Random(seed)
    en2 = 0
    out = []
    for _ in range(rounds):
        for proto, user in miners:
            lines = []
            for _ in range(per_read):
                en2 += 1
                lines.append(b'{"id":%d,"method":"mining.submit","params":["%s","%s","%08x","%08x","%08x"]}\n'
                             % (en2, user, job_id.encode(), en2, ntime, rnd.getrandbits(32)))
            out.append((proto, b"".join(lines)))
    return out


def measure_submit(difficulty: float, per_read: int, miners_n: int = 500, rounds: int = 8) -> float:
    """CPU µs per share, best of ROUNDS, accounting sink included."""

    collector = Collector()
    srv, cfg = server(difficulty, MultiSink(LoggingSink(), AccountingSink(collector)))
    miners = connect(srv, cfg, miners_n)
    job = srv.jobs.current
    best = float("inf")
    for r in range(ROUNDS):
        chunks = submit_chunks(miners, job.id, job.ntime, per_read, rounds, seed=r)
        gc.collect()
        t = time.process_time()
        for proto, data in chunks:
            proto.dataReceived(data)
        best = min(best, (time.process_time() - t) / (len(chunks) * per_read))
        collector.take("r", r + 1, 0.0)
    return best * 1e6


def measure_payload(workers: int, shares: int) -> float:
    rnd = random.Random(3)
    t0 = 1_795_651_986.0
    evs = [ShareAccepted(time=t0 + i / 20_000, address=f"bcrt1qbench{i % 50:036d}", worker=f"m{i % workers}",
                         difficulty=1e-12, share_difficulty=2.0 + rnd.random(), job_id="000003e9", height=200,
                         hash=f"{rnd.getrandbits(256):064x}", network_difficulty=1.0) for i in range(shares)]
    batch = Batch("run", 1, t0 + 1, evs, [], [], [])
    keys, st = Keys("hashcoop:"), Settings()
    best = float("inf")
    for _ in range(ROUNDS):
        t = time.process_time()
        build_payload(batch, keys, st)
        best = min(best, time.process_time() - t)
    return best / shares * 1e6


def measure_broadcast(n: int) -> float:
    srv, cfg = server(1e-12, MemorySink())
    connect(srv, cfg, n)
    best = float("inf")
    for i in range(ROUNDS):
        t = time.process_time()
        srv.on_template(template(prev=bytes([i + 1]) * 32), True)
        best = min(best, time.process_time() - t)
    return best / n * 1e6


def main() -> int:
    out = {
        "submit_accept_us": {"1_per_read": measure_submit(1e-12, 1), "4_per_read": measure_submit(1e-12, 4)},
        "submit_reject_us": {"4_per_read": measure_submit(1.0, 4)},
        "payload_us_per_share": {"500_workers_5000_shares": measure_payload(500, 5000),
                                 "1250_workers_1250_shares": measure_payload(1250, 1250)},
        "broadcast_us_per_miner_10000": measure_broadcast(10_000),
    }
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
