"""The pool against a real Bitcoin Core on regtest (``BITCOIND=/path/to/bitcoind``).

The same checks as the stand-in end-to-end test, and the stand-in's verdicts
compared with Core's for blocks the pool builds."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from pool.config import load_config
from pool.events import MemorySink
from pool.service import build_pool
from tests.procs import Miner, free_port

pytestmark = pytest.mark.bitcoind
POOL_ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
MINER_ADDR = "bcrt1qqqqsyqcyq5rqwzqfpg9scrgwpugpzysnard0ew"


class Bitcoind:
    def __init__(self, datadir: Path):
        self.datadir = datadir
        datadir.mkdir(parents=True)
        self.rpcport = free_port()
        self.zmq = f"tcp://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [os.environ["BITCOIND"], "-regtest", f"-datadir={datadir}", f"-rpcport={self.rpcport}", "-listen=0",
             "-server=1", f"-zmqpubhashblock={self.zmq}", "-fallbackfee=0.0001", "-printtoconsole=0"])
        self.url = f"http://127.0.0.1:{self.rpcport}/"
        self.cookie = datadir / "regtest" / ".cookie"
        deadline = time.monotonic() + 60
        while True:
            try:
                self.rpc("getblockchaininfo")
                return
            except (OSError, urllib.error.URLError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def rpc(self, method, *params):
        if not self.cookie.exists():
            raise RuntimeError("no cookie yet")
        req = urllib.request.Request(self.url, json.dumps({"id": 1, "method": method, "params": list(params)}).encode())
        req.add_header("Authorization", "Basic " + base64.b64encode(self.cookie.read_bytes().strip()).decode())
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                reply = json.loads(r.read())
        except urllib.error.HTTPError as e:
            reply = json.loads(e.read())
        if reply.get("error"):
            raise RuntimeError(reply["error"])
        return reply["result"]

    def stop(self):
        try:
            self.rpc("stop")
            self.proc.wait(30)
        except Exception:
            self.proc.kill()
            self.proc.wait()


class RealBitcoindTest(unittest.TestCase):
    timeout = 300

    def setUp(self):
        tmp = Path(self.mktemp())
        self.node = Bitcoind(tmp / "bitcoind")
        self.addCleanup(self.node.stop)
        self.node.rpc("generatetoaddress", 101, MINER_ADDR)
        self.port = free_port()
        cfg = load_config(data={
            "pool": {"network": "regtest", "address": POOL_ADDR, "data_dir": str(tmp / "pool")},
            "nodes": [{"url": self.node.url, "cookie_file": str(self.node.cookie), "zmq_hashblock": self.node.zmq}],
            "work": {"notify_listen": ""},
            "stratum": {"ports": [{"port": self.port, "bind": "127.0.0.1", "start_difficulty": 0.0001,
                                   "min_difficulty": 0.00001, "max_difficulty": 1}]},
        }, env={})
        self.sink = MemorySink()
        self.pool = build_pool(cfg, reactor, sinks=[self.sink])
        self.pool.service.startService()
        self.addCleanup(self.pool.service.stopService)
        self.tmp = tmp

    @defer.inlineCallbacks
    def test_cpu_miner_finds_a_block_core_accepts(self):
        start = self.node.rpc("getblockcount")
        miner = Miner(f"stratum+tcp://127.0.0.1:{self.port}", f"{MINER_ADDR}.real", "--duration", "120",
                      log=self.tmp / "miner.log")
        self.addCleanup(lambda: miner.proc.poll() is None and miner.proc.kill())
        deadline = time.monotonic() + 120
        while not any(s.status in ("submitted", "confirmed") for s in self.sink.statuses):
            assert time.monotonic() < deadline, "no block accepted by bitcoind"
            yield task.deferLater(reactor, 0.2, lambda: None)
        miner.stop()
        found = next(b for b in self.sink.blocks if any(s.hash == b.hash and s.status in ("submitted", "confirmed")
                                                          for s in self.sink.statuses))
        assert self.node.rpc("getblockcount") > start
        block = self.node.rpc("getblock", found.hash, 2)
        assert block["tx"][0]["vout"][0]["scriptPubKey"]["address"] == POOL_ADDR
        assert round(block["tx"][0]["vout"][0]["value"] * 1e8) == found.reward
        # the stand-in judges the same block the same way: duplicate for Core
        # now, and its own verdict on a fresh node is covered by tests/devnode
        assert self.node.rpc("submitblock", found.block_hex) == "duplicate"
