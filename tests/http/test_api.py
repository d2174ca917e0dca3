"""Every endpoint of the JSON API against a pool that mined on the stand-in
node with real Redis (tests/http/rig.py), checked against what the miners
were told and what Redis holds; bad input, CORS and the operator split."""
from __future__ import annotations

import math
import re
import time

import pytest

from hashcoop.pool.accounting.read import AccountingReader
from tests.http.rig import CORS_ORIGIN, OTHER, TOKEN, UNKNOWN, WINDOW_DIFF, A, B

pytestmark = pytest.mark.slow


def _reader(rig):
    return AccountingReader(rig.redis.client(), "hashcoop:", offline_after=6.0)


def test_pool_summary(rig):
    status, s = rig.json("/api/v1/pool")
    assert status == 200
    assert s["pool"]["name"] == "hashcoop" and s["pool"]["network"] == "regtest" and s["pool"]["payout_scheme"] == "PPLNS"
    net = s["network"]
    assert net["name"] == "regtest" and 0 < net["difficulty"] < 1e-9  # the stand-in's easy target
    assert net["height"] <= rig.node_height() and net["height"] >= 2  # the miners found blocks
    assert net["mining_height"] == net["height"] + 1 and net["block_reward"] > 0
    assert s["hashrate"]["1m"] > 0 and s["hashrate"]["5m"] > 0
    assert s["addresses_known"] == 2 and s["workers_known"] == 3  # rig1, rig2, solo (the probe has no accepted share)
    assert 1 <= s["workers_online"] <= 2 and s["addresses_online"] == 1  # rig1 still mines
    # the probe's three, and maybe a real miner's share that crossed a new block
    assert s["rejected"]["unknown-job"] == 3 and set(s["rejected"]) <= {"unknown-job", "stale-job"}
    assert s["blocks_found"] >= 2 and s["last_block"]["hash"] == s["recent_blocks"][0]["hash"]
    assert s["round"]["effort"] is not None and s["round"]["network_difficulty"] > 0
    luck = s["luck"]
    assert luck["blocks"] == len(s["recent_blocks"]) and luck["average_effort"] > 0
    assert math.isclose(luck["luck"], 1 / luck["average_effort"])
    assert s["stratum"]["connections"] >= 2  # rig1 and the probe
    # the accepted count is Redis's
    assert s["accepted"] <= int(rig.redis.client().hget("hashcoop:pool", "acc"))


def test_blocks_list_matches_redis_and_the_miners(rig):
    status, body = rig.json("/api/v1/blocks?limit=100")
    assert status == 200
    hashes = [b["hash"] for b in body["blocks"]]
    r = rig.redis.client()
    assert body["total"] >= len(hashes) >= 2
    assert set(hashes) <= set(r.zrange("hashcoop:blocks", 0, -1))
    candidates = {h: m.address for m in rig.miners for h in m.blocks()}
    for b in body["blocks"]:
        assert b["finder_address"] == candidates[b["hash"]]
        # (generatetoaddress racing rig1 leaves some pool blocks orphaned)
        assert b["status"] in ("found", "pending", "submitted", "confirmed", "orphaned")
        assert b["reward"] > 0 and b["effort"] > 0
        assert "payout" in b
    # newest first, and pages line up
    assert [b["height"] for b in body["blocks"]] == sorted((b["height"] for b in body["blocks"]), reverse=True)
    # a page is the run of the list at its offset. rig1 keeps finding
    # blocks, so compare a page with lists fetched just before and after it,
    # and try again when a block landed in between. Answers are cached per
    # query (http.cache_seconds): each try asks new limits, so all three are
    # read now.
    for i in range(20):
        _, first = rig.json(f"/api/v1/blocks?limit={80 - 2 * i}")
        _, page = rig.json(f"/api/v1/blocks?limit={3 + i}&offset=2")
        _, last = rig.json(f"/api/v1/blocks?limit={79 - 2 * i}")
        before = [b["hash"] for b in first["blocks"]]
        if before[:len(last["blocks"])] == [b["hash"] for b in last["blocks"]]:
            break
    else:
        pytest.fail("the blocks list never held still for three requests")
    assert page["limit"] == 3 + i and page["offset"] == 2
    assert [b["hash"] for b in page["blocks"]] == before[2:5 + i]


def test_one_block_with_its_window(rig):
    _, body = rig.json("/api/v1/blocks?limit=5")
    for b in body["blocks"]:
        status, d = rig.json(f"/api/v1/blocks/{b['hash']}")
        assert status == 200 and d["hash"] == b["hash"] and d["height"] == b["height"]
        w = d["window"]
        snap = _reader(rig).block_snapshot(b["hash"])
        assert math.isclose(w["total"], snap.total) and w["last_seq"] == snap.seq
        assert {x["address"]: x["difficulty"] for x in w["by_address"]} == pytest.approx(snap.amounts)
        assert math.isclose(sum(x["fraction"] for x in w["by_address"]), 1.0)
        assert "payout" in d
    # upper case is the same block
    h = body["blocks"][0]["hash"]
    assert rig.json(f"/api/v1/blocks/{h.upper()}")[0] == 200


def test_window_by_address(rig):
    status, w = rig.json("/api/v1/window")
    assert status == 200
    assert w["n"] == pytest.approx(WINDOW_DIFF)
    assert w["total"] <= w["n"] * (1 + 1e-9) and w["complete"]
    assert {x["address"] for x in w["by_address"]} <= {A, B}
    assert math.isclose(sum(x["fraction"] for x in w["by_address"]), 1.0)
    assert w["by_address"] == sorted(w["by_address"], key=lambda x: -x["difficulty"])


def test_address_workers_online_and_offline(rig):
    status, a = rig.json(f"/api/v1/addresses/{A}")
    assert status == 200 and a["address"] == A
    workers = {w["worker"]: w for w in a["workers"]}
    assert set(workers) == {"rig1", "rig2"}
    assert workers["rig1"]["online"] and not workers["rig2"]["online"]
    assert a["workers_online"] == 1 and a["online"]
    early = next(m for m in rig.miners if m.worker == "rig2")
    assert workers["rig2"]["accepted"] == len(early.accepted())
    assert workers["rig2"]["hashrate"]["1h"] > 0 and workers["rig1"]["hashrate"]["5m"] > 0
    assert a["best_share"]["difficulty"] >= max(w["best_share"]["difficulty"] for w in a["workers"]) > 0
    assert a["hashrate"]["5m"] > 0
    # its part of the recent blocks: fractions of the block windows, reward share
    assert a["blocks"]
    for part in a["blocks"]:
        snap = _reader(rig).block_snapshot(part["hash"])
        assert math.isclose(part["credited_difficulty"], snap.amounts[A])
        assert math.isclose(part["fraction"], snap.amounts[A] / snap.total)
        assert part["reward_share"] == int(part["reward"] * part["fraction"])
    assert "payouts" in a


def test_address_that_stopped(rig):
    status, b = rig.json(f"/api/v1/addresses/{B}")
    assert status == 200
    solo = next(m for m in rig.miners if m.worker == "solo")
    workers = {w["worker"]: w for w in b["workers"]}
    assert workers["solo"]["accepted"] == len(solo.accepted()) and not workers["solo"]["online"]
    assert workers["probe"]["accepted"] == 0 and workers["probe"]["rejected"] == {"unknown-job": 3}
    assert b["rejected"]["unknown-job"] == 3 and b["rejected_total"] >= 3


def test_worker_endpoint(rig):
    status, w = rig.json(f"/api/v1/addresses/{A}/workers/rig1")
    assert status == 200 and w["address"] == A and w["worker"] == "rig1" and w["online"]
    assert w["accepted"] > 0 and w["hashrate"]["1m"] >= 0


def test_hashrate_series(rig):
    now = time.time()
    for path in ("/api/v1/pool/hashrate", f"/api/v1/addresses/{A}/hashrate", f"/api/v1/addresses/{A}/workers/rig1/hashrate"):
        status, s = rig.json(path + "?resolution=10s")
        assert status == 200 and s["resolution"] == "10s" and s["interval"] == 10
        assert s["series"] and any(h > 0 for _, h in s["series"])
        assert all(t % 10 == 0 and t <= now for t, _ in s["series"])
        status, s = rig.json(path + f"?resolution=10s&since={int(now - 120)}")
        assert status == 200 and all(t >= now - 130 for t, _ in s["series"]) and len(s["series"]) <= 13
        status, s = rig.json(path)
        assert status == 200 and s["resolution"] == "5m" and s["interval"] == 300


@pytest.mark.parametrize("path,code", [
    ("/api/v1/addresses/bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "bad-address"),  # mainnet address on regtest
    ("/api/v1/addresses/notanaddress", "bad-address"),
    ("/api/v1/addresses/" + "x" * 101, "bad-address"),
    (f"/api/v1/addresses/{A}/workers/bad.name", "bad-worker"),
    (f"/api/v1/addresses/{A}/hashrate?resolution=1d", "bad-parameter"),
    ("/api/v1/pool/hashrate?since=-5", "bad-parameter"),
    ("/api/v1/pool/hashrate?since=soon", "bad-parameter"),
    ("/api/v1/blocks?limit=0", "bad-parameter"),
    ("/api/v1/blocks?limit=101", "bad-parameter"),
    ("/api/v1/blocks?limit=ten", "bad-parameter"),
    ("/api/v1/blocks?offset=-1", "bad-parameter"),
    ("/api/v1/blocks?limt=5", "bad-parameter"),
    ("/api/v1/blocks/xyz", "bad-hash"),
])
def test_bad_input_is_a_clear_400(rig, path, code):
    status, body = rig.json(path)
    assert status == 400, body
    assert body["error"]["code"] == code and body["error"]["status"] == 400 and body["error"]["message"]


def test_mainnet_address_error_names_the_network(rig):
    _, body = rig.json("/api/v1/addresses/bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")
    assert "regtest" in body["error"]["message"]


@pytest.mark.parametrize("path", [
    f"/api/v1/addresses/{UNKNOWN}",
    f"/api/v1/addresses/{A}/workers/nosuch",
    "/api/v1/blocks/" + "0" * 64,
    "/api/v1/nothing",
    "/api/v2/pool",
])
def test_unknown_things_are_404(rig, path):
    status, body = rig.json(path)
    assert status == 404 and body["error"]["code"] == "not-found"


def test_read_only(rig):
    status, headers, body = rig.get("/api/v1/pool", method="POST")
    assert status == 405 and b"method-not-allowed" in body and "GET" in headers["Allow"]
    status, headers, body = rig.get("/api/v1/pool", method="HEAD")
    assert status == 200 and body == b""


def test_cors(rig):
    status, headers, _ = rig.get("/api/v1/pool", headers={"Origin": CORS_ORIGIN})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == CORS_ORIGIN and "Origin" in headers["Vary"]
    status, headers, _ = rig.get("/api/v1/pool", headers={"Origin": "https://evil.example"})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    status, headers, _ = rig.get("/api/v1/blocks", method="OPTIONS",
                                 headers={"Origin": CORS_ORIGIN, "Access-Control-Request-Method": "GET"})
    assert status == 204 and headers["Access-Control-Allow-Origin"] == CORS_ORIGIN
    assert "GET" in headers["Access-Control-Allow-Methods"]
    # the operator part never answers cross-origin
    status, headers, _ = rig.get("/api/v1/operator/status", base=rig.operator, headers={"Origin": CORS_ORIGIN})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers


def test_operator_part_is_split(rig):
    # the operator listener serves it without a token
    status, headers, body = rig.get("/metrics", base=rig.operator)
    assert status == 200 and headers["Content-Type"].startswith("text/plain") and b"hashcoop_shares_accepted_total" in body
    # the public one only with the bearer token
    status, headers, body = rig.get("/metrics")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = rig.get("/metrics", headers={"Authorization": "Bearer wrong-token-wrong-token"})
    assert status == 401
    status, _, body = rig.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and b"hashcoop_shares_accepted_total" in body
    # and the public part is on both
    assert rig.get("/api/v1/pool", base=rig.operator)[0] == 200


def test_operator_status_and_sessions(rig):
    status, s = rig.json("/api/v1/operator/status", base=rig.operator)
    assert status == 200
    nodes = {n["name"]: n for n in s["nodes"]}
    assert nodes["node0"]["healthy"] and nodes["backup"]["answered_last_call"] is False
    assert s["network"]["height"] is not None and s["accounting"]["shares_written"] > 0
    assert s["stratum"]["connections"] >= 2
    # every verdict the backup gave is "unreachable" (a block just found may have none yet)
    backup = [b["verdicts"]["backup"] for b in s["blocks"] if "backup" in b["verdicts"]]
    assert backup and set(backup) == {"unreachable"}
    status, sess = rig.json("/api/v1/operator/sessions", base=rig.operator)
    assert status == 200 and sess["total"] >= 2
    probe = next(x for x in sess["sessions"] if x["user_agent"] == "http-test/1")
    assert probe["ip"] == "127.0.0.1" and probe["workers"] == [f"{B}.probe"] and probe["rejected"] == 3


def test_operator_withholding_on_regtest_flags_nobody(rig):
    """On the stand-in's regtest target every share is a block: each counts
    one expected block and is one, so no worker is short of blocks."""
    status, w = rig.json("/api/v1/operator/withholding", base=rig.operator)
    assert status == 200 and w["alpha"] == 0.001 and w["workers_checked"] >= 3 and w["addresses_checked"] >= 2
    assert w["flagged_workers"] == 0 and w["workers"] == [] and w["addresses"] == []
    assert rig.get("/api/v1/operator/withholding")[0] == 401  # the operator part


def test_security_headers(rig):
    status, headers, _ = rig.get("/")
    assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in headers["Content-Security-Policy"]


# -- the payout ledger (filled by `hashcoop payouts run` after the mining run) --------------------------
def _ledger(rig):
    from hashcoop.payouts.db import make_engine

    return make_engine(f"sqlite:///{rig.tmp / 'data' / 'payouts.sqlite'}", writer=False)


def _sent_by_wallet(rig) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in rig.node.rpc("listtransactions", "*", 100000):
        if e["category"] == "send":
            out.setdefault(e["address"], []).append(e["txid"])
    return out


def test_address_balance_credits_and_payments(rig):
    from hashcoop.payouts import read

    engine = _ledger(rig)
    sent = _sent_by_wallet(rig)
    for address in (A, B):
        status, a = rig.json(f"/api/v1/addresses/{address}")
        assert status == 200
        pay = a["payouts"]
        summary = read.address_summary(engine, address)
        assert pay["known"] and pay["credited"] == summary["credited"] > 0
        assert (pay["owed"], pay["paid"], pay["paid_confirmed"]) == (summary["owed"], summary["paid"], summary["paid_confirmed"])
        assert pay["paid_confirmed"] > 0 and pay["credited_blocks"] >= 1
        # every payment is a transaction the wallet sent to this address, confirmed
        assert pay["payments"] and {p["txid"] for p in pay["payments"]} <= set(sent[address])
        assert all(p["status"] == "confirmed" and p["confirmations"] >= 2 and re.fullmatch(r"[0-9a-f]{64}", p["txid"])
                   for p in pay["payments"])
        assert sum(p["amount"] for p in pay["payments"]) == pay["paid_confirmed"]
        # credits, newest block first, are the ledger's
        assert [(c["block_hash"], c["amount"]) for c in pay["credits"]] == [
            (c["block_hash"], c["amount"]) for c in read.address_credits(engine, address, limit=25)]
        # the address's part of each block: credited blocks show what they credited
        by_block = {}
        for c in pay["credits"]:
            by_block[c["block_hash"]] = by_block.get(c["block_hash"], 0) + c["amount"]
        parts = [b for b in a["blocks"] if b["payout"]["status"] == "credited"]
        for b in parts:
            assert b["payout"]["credited"] == by_block.get(b["hash"])
    engine.dispose()


def test_an_address_only_the_ledger_knows_is_not_404(rig):
    # the pool's own wallet address never mined, and the ledger never heard of it: 404
    status, body = rig.json(f"/api/v1/addresses/{OTHER}")
    assert status == 404


def test_blocks_carry_the_payout_report(rig):
    from hashcoop.payouts import read

    engine = _ledger(rig)
    _, body = rig.json("/api/v1/blocks?limit=100")
    ledger = {b["hash"]: b for b in read.blocks(engine, limit=1000)}
    reported = [b for b in body["blocks"] if b["payout"] is not None]
    assert reported, "the ledger imported the pool's blocks"
    for b in reported:
        assert b["payout"]["status"] == ledger[b["hash"]]["status"]
        assert b["payout"]["credited"] == ledger[b["hash"]]["credited"]
    credited = [b for b in reported if b["payout"]["status"] == "credited"]
    assert credited and all(b["payout"]["credited"] > 0 and b["payout"]["report_digest"] for b in credited)
    # one block: its credits by address and the stored report
    h = credited[0]["hash"]
    status, d = rig.json(f"/api/v1/blocks/{h}")
    assert status == 200
    rep = read.block_report(engine, h)
    assert d["payout"]["report_digest"] == rep["report_digest"] and d["payout"]["report"] == rep["report"]
    assert sorted((c["address"], c["kind"], c["amount"]) for c in d["payout"]["credits"]) == sorted(
        (c["address"], c["kind"], c["amount"]) for c in rep["credits"])
    assert sum(c["amount"] for c in d["payout"]["credits"]) == d["payout"]["credited"] + (d["payout"]["fee_sat"] or 0) - (
        d["payout"]["fee_sat"] or 0)
    engine.dispose()
