"""Failover between two real Bitcoin Core nodes, with cpuminer mining
through the pool (issue 13, 3.6).

Two regtest nodes, peered; the pool has both (``[[nodes]]`` node-a, then
node-b). Node-a goes away mid-run in each way an outage looks like, and
every time the pool keeps serving work from node-b and the blocks found
meanwhile are in node-b's chain, paying the pool:

1. a clean shutdown (``bitcoin-cli stop``): calls to node-a are refused
   (since NodeClient connects to an IP address directly, at once instead
   of 0.3 s later), it is marked down and node-b serves;
2. node-a comes back on its own, behind (no peers: it cannot catch up) --
   it answers again, so it is healthy and first in line, but its templates
   are old: the pool must keep following node-b's tip (before the fix in
   ``NodeSet.get_template``'s ``min_height`` it mined on one old tip, every
   block it found an orphan, until node-a caught up);
3. node-a gets its peer back, catches up, and serves templates again;
4. node-a hangs (SIGSTOP: its RPC port accepts connections and never
   answers): the first template fetch waits out node-a's RPC timeout
   (``[[nodes]] timeout``, 2 s here), then node-b serves; after SIGCONT
   node-a answers again and serves again;
5. ``kill -9``.

Longpoll is off so that every template goes through the node set's
failover order and the log names the node that served it ("template from
node-b"); ZMQ ``hashblock`` from both nodes and the 1 s poll tell the pool
about new blocks. On regtest every share is a block (~0.6 s each per
minerd thread), so each phase waits for a few blocks, not for time.
"""
from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime

import pytest

from tests.hostile.faultrig import read_journal
from tests.procs import free_port, wait_for
from tests.realnode.core import COIN, CoreNode
from tests.realnode.rig import MINER_A, OTHER, POOL_ADDR, Probe, pool_config

pytestmark = pytest.mark.bitcoind(needs=("MINERD",))

SUBSIDY = 50 * COIN  # regtest, below height 150; the templates carry no transactions
TAG = b"/realnode/".hex()
BLOCKS_PER_PHASE = 3
A_TIMEOUT = 2.0  # node-a's RPC timeout: how long a hung node-a holds a template fetch


def connect(x: CoreNode, y: CoreNode) -> None:
    """``y`` connects to ``x`` once (no retries later: a stopped ``x`` stays apart)."""
    y.rpc("addnode", f"127.0.0.1:{x.p2pport}", "onetry")
    wait_for(lambda: x.rpc("getpeerinfo") and y.rpc("getpeerinfo"), 30, what=f"{x.datadir.name} and {y.datadir.name} peered")


def tips_from(text: str, node: str) -> int:
    """How many new tips in the pool's ``text`` came with a template from ``node``: a tip first seen by a
    source, or a block the pool found, mined on at once, whose template then came from ``node``."""
    return len(re.findall(rf"INFO hashcoop.work: (new tip \S+, height \d+, first seen by|own block \S+, height \d+, "
                          rf"reported by) \S+, template from {node}$", text, re.M))


def pool_block(node: CoreNode, height: int) -> dict:
    """What ``node``'s block at ``height`` pays, for the checks below."""
    block = node.rpc("getblock", node.rpc("getblockhash", height), 2)
    cb = block["tx"][0]
    return {"hash": block["hash"], "height": height, "tag": TAG in cb["vin"][0]["coinbase"],
            "addresses": {o["scriptPubKey"].get("address") for o in cb["vout"] if o["value"] > 0},
            "value": sum(round(o["value"] * COIN) for o in cb["vout"])}


class Phases:
    """Marks in the pool's log and node-b's chain where each phase began."""

    def __init__(self, pool, b: CoreNode):
        self.pool = pool
        self.b = b
        self.log_at = 0
        self.height = 0
        self.started = 0.0
        self.figures: dict[str, dict] = {}

    def begin(self) -> None:
        self.log_at = len(self.pool.text())
        self.started = time.monotonic()
        self.count_from_here()

    def count_from_here(self) -> None:
        """Count node-b's blocks from now (once the outage is complete)."""
        self.height = self.b.rpc("getblockcount")

    def log(self) -> str:
        return self.pool.text()[self.log_at:]

    def blocks_on_b(self, n: int = BLOCKS_PER_PHASE, timeout: float = 60) -> int:
        """Until node-b's chain has ``n`` more blocks than at the phase's start."""
        wait_for(lambda: self.b.rpc("getblockcount") >= self.height + n, timeout, step=0.1,
                 what=f"{n} blocks on node-b after height {self.height}")
        return self.b.rpc("getblockcount")

    def first_tip_delay(self) -> float | None:
        """Seconds from the phase's first block found to a node's template
        on it (the template fetch that had to get past node-a; miners work
        on the block at once meanwhile, on the pool's empty template)."""
        text = self.log()
        found = re.search(r"^(\S+ \S+) INFO hashcoop.shares: BLOCK FOUND height=\d+ hash=(\w+)", text, re.M)
        if not found:
            return None
        tip = re.search(rf"^(\S+ \S+) INFO hashcoop.work: (new tip|own block) {found[2]}.*template from", text, re.M)
        return None if tip is None else round((stamp(tip[1]) - stamp(found[1])), 3)

    def end(self, name: str, **more) -> None:
        self.figures[name] = {"blocks_on_b": self.b.rpc("getblockcount") - self.height,
                              "seconds": round(time.monotonic() - self.started, 1),
                              "first_new_tip_s": self.first_tip_delay(), **more}


def stamp(text: str) -> float:
    """A pool log line's time (``2026-12-07 17:02:39,503``) in seconds."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_pool_fails_over_to_the_second_node_and_back(core, minerd, pool_process, tmp_path):
    t0 = time.monotonic()
    a = core("node-a")
    b = core("node-b")
    connect(a, b)
    a.rpc("generatetoaddress", 1, OTHER)
    tip = a.rpc("getbestblockhash")
    wait_for(lambda: b.rpc("getbestblockhash") == tip, 30, what="node-b on node-a's tip")
    base = b.rpc("getblockcount")

    port = free_port()
    cfg = pool_config([a, b], port=port, data_dir=tmp_path / "data", longpoll=False)
    cfg["nodes"][0]["timeout"] = A_TIMEOUT
    pool = pool_process(cfg)
    probe = Probe(port, f"{MINER_A}.probe")
    miner = minerd(port, f"{MINER_A}.cpu")
    ph = Phases(pool, b)

    # -- both up: node-a, first in the list, serves the templates --------------
    ph.begin()
    wait_for(lambda: a.rpc("getblockcount") >= base + 2 and tips_from(pool.text(), "node-a"), 60,
             what="two pool blocks on node-a")
    assert f"first template: height {base + 1} on {tip} from node-a" in pool.text()
    ph.end("both up")

    # -- 1. node-a shuts down cleanly ------------------------------------------
    ph.begin()
    a.stop()
    ph.count_from_here()
    top = ph.blocks_on_b()
    text = ph.log()
    assert "node node-a marked down" in text, text[-3000:]
    assert tips_from(text, "node-b") and not tips_from(text.split("node node-a marked down")[1], "node-a")
    tip_b = b.rpc("getblockhash", top)
    wait_for(lambda: probe.clean_job_for(tip_b), 30, what="a clean job on node-b's tip")
    ph.end("node-a stopped")

    # -- 2. node-a restarts alone, behind: the pool keeps following node-b -----
    a.extra.append("-connect=0")  # no outbound peers: it cannot catch up by itself
    ph.begin()
    a.start()
    behind_at = a.rpc("getblockcount")
    wait_for(lambda: "node node-a is usable again" in ph.log(), 60, what="node-a usable again (behind)")
    ph.begin()
    ph.blocks_on_b()
    assert a.rpc("getblockcount") == behind_at, "node-a stayed behind"
    assert "node node-a serves a template at height" in ph.log()
    assert not tips_from(ph.log(), "node-a")
    ph.end("node-a back, behind", node_a_height=behind_at)

    # -- 3. node-a gets its peer back, catches up and serves again -------------
    ph.begin()
    connect(a, b)
    target = b.rpc("getblockcount")
    wait_for(lambda: a.rpc("getblockcount") >= target, 60, what="node-a caught up")
    wait_for(lambda: tips_from(ph.log(), "node-a"), 60, what="templates from node-a again")
    ph.blocks_on_b()
    ph.end("node-a caught up")

    # -- 4. node-a hangs (SIGSTOP: connections accepted, never answered) -----
    ph.begin()
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        # blocks the pool finds go on to node-b at once (each node is sent them on its own, and the pool mines
        # on its own blocks without waiting for a template); the first request to node-a that times out marks it
        # down, and node-b serves the templates
        wait_for(lambda: re.search(rf"node node-a marked down: node-a:\w+: no answer within {A_TIMEOUT:g} s", ph.log()),
                 30, what="node-a marked down after a request timed out")
        wait_for(lambda: tips_from(ph.log(), "node-b"), 30, what="templates from node-b while node-a hangs")
        ph.blocks_on_b()
        ph.end("node-a hangs")
        ph.begin()
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    wait_for(lambda: "node node-a is usable again" in ph.log(), 60, what="node-a usable again after the hang")
    wait_for(lambda: tips_from(ph.log(), "node-a"), 60, what="templates from node-a again")

    # -- 5. node-a is killed -9 -------------------------------------------------
    ph.begin()
    a.kill()
    ph.count_from_here()
    top = ph.blocks_on_b()
    assert "node node-a marked down" in ph.log()
    assert tips_from(ph.log(), "node-b")
    tip_b = b.rpc("getblockhash", top)
    wait_for(lambda: probe.clean_job_for(tip_b), 30, what="a clean job on node-b's tip")
    ph.end("node-a killed -9")

    shares_accepted, shares_sent = miner.stop()
    probe.close()

    # Every block above the setup block is the pool's: tagged, paying the
    # pool's address exactly the subsidy (the template's coinbasevalue).
    top = b.rpc("getblockcount")
    blocks = [pool_block(b, h) for h in range(base + 1, top + 1)]
    wrong = [x for x in blocks if not x["tag"] or x["addresses"] != {POOL_ADDR} or x["value"] != SUBSIDY]
    assert not wrong, wrong
    # The pool's journal: node-b took every block the pool found (a block
    # on a side branch too, on a recheck), and the blocks found while
    # node-a was stopped or dead (its verdict: unreachable) include at least
    # those the two outages waited for, in node-b's chain. (A hung node-a
    # answered its queued submitblocks after SIGCONT, within the 30 s
    # submit timeout: no verdict of its was lost.)
    path = tmp_path / "data" / "found-blocks.jsonl"

    def submitted() -> list:
        return [j for j in read_journal(path).values() if j.status != "stale"]

    wait_for(lambda: all(j.statuses and j.statuses[-1]["outcome"].get("node-b") == "accepted" for j in submitted()), 30,
             what="node-b took every block the pool found")
    in_chain = {x["hash"] for x in blocks}
    while_away = [j for j in submitted() if j.statuses[0]["verdicts"].get("node-a") == "unreachable"]
    assert sum(j.found["hash"] in in_chain for j in while_away) >= 2 * BLOCKS_PER_PHASE
    assert "Traceback" not in pool.text()
    print(f"\nfailover: {ph.figures}; blocks {len(blocks)} on node-b, {len(while_away)} found while node-a was down; "
          f"minerd accepted {shares_accepted}/{shares_sent}; {time.monotonic() - t0:.1f} s")
