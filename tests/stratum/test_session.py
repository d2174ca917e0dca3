"""Protocol tests: every Stratum method and every reject reason, with
StringTransport and a memory reactor clock."""
import json
import logging

import orjson
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from hashcoop.pool.core.btc.block import parse_block
from hashcoop.pool.core.btc.hashing import merkle_root, sha256d
from hashcoop.pool.core.shares import Reject
from hashcoop.stratum.errors import ERRORS
from tests.stratum.harness import ADDR, ADDR2, SHARE_DIFF, Harness, config, template


@pytest.fixture
def h():
    return Harness()


def test_subscribe_reply_shape_and_unique_extranonce1(h):
    seen = set()
    for i in range(50):
        c = h.connect(port=1000 + i)
        r = c.call("mining.subscribe", ["cgminer/4.11.1"])
        assert r["error"] is None and r["id"] is not None
        subs, en1, en2_size = r["result"]
        assert subs == [["mining.set_difficulty", en1], ["mining.notify", en1]]
        assert len(en1) == 8 and en2_size == 4
        seen.add(en1)
    assert len(seen) == 50


def test_work_arrives_after_authorize_with_difficulty_first(h):
    c = h.connect()
    c.call("mining.subscribe", [])
    assert c.pushed == []
    r = c.call("mining.authorize", [ADDR + ".rig1", "x"])
    assert r == {"id": r["id"], "result": True, "error": None}
    assert [m["method"] for m in c.pushed] == ["mining.set_difficulty", "mining.notify"]
    assert c.pushed[0]["params"] == [SHARE_DIFF]
    notify = c.pushed[1]["params"]
    assert notify[8] is True and len(notify) == 9
    assert notify[5] == "20000000" and notify[7] == f"{h.jobs.current.ntime:08x}"


def test_authorize_before_subscribe_works(h):
    c = h.connect()
    assert c.call("mining.authorize", [ADDR, "x"])["result"] is True
    assert c.pushed == []
    c.call("mining.subscribe", [])
    assert [m["method"] for m in c.pushed] == ["mining.set_difficulty", "mining.notify"]


@pytest.mark.parametrize("user", ["notanaddress", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4.rig", "", ".rig"])
def test_authorize_rejects_bad_or_wrong_network_address(h, user):
    c = h.connect()
    c.call("mining.subscribe", [])
    r = c.call("mining.authorize", [user, "x"])
    assert r["result"] is False and r["error"][0] == 24


def test_accepted_share_is_credited_and_emitted(h):
    c = h.connect().handshake()
    share, hv = c.solve()
    r = c.call("mining.submit", share)
    assert r == {"id": r["id"], "result": True, "error": None}
    ev = h.sink.accepted[-1]
    assert (ev.address, ev.worker, ev.difficulty) == (ADDR, "rig1", SHARE_DIFF)
    assert ev.hash == hv.to_bytes(32, "big").hex()
    assert not ev.is_block
    assert h.metric("hashcoop_shares_accepted_total", port="3333") == 1


def test_share_validation_is_timed_one_share_in_sixteen(h):
    c = h.connect().handshake()
    shares = [c.solve(en2=i)[0] for i in range(32)]
    for share in shares:
        assert c.call("mining.submit", share)["result"] is True
    # rejected shares (here duplicates) are validated too, and timed the same way
    for share in shares[:16]:
        assert c.call("mining.submit", share)["error"][0] == 22
    assert h.metric("hashcoop_share_validation_seconds_count") == 3


def _expect_reject(c, params, reason):
    r = c.call("mining.submit", params)
    code, msg = ERRORS[reason]
    assert r["result"] is False and r["error"] == [code, msg, None], r
    assert c.h.sink.rejected[-1].reason == reason


def test_every_reject_reason(h):
    c = h.connect().handshake()
    good, _ = c.solve()
    # unknown job
    _expect_reject(c, [c.user, "deadbeef", *good[2:]], Reject.UNKNOWN_JOB)
    _expect_reject(c, [c.user, good[1] + ".x", *good[2:]], Reject.UNKNOWN_JOB)
    _expect_reject(c, [c.user, good[1] + "0001", *good[2:]], Reject.UNKNOWN_JOB)  # an alias never sent
    _expect_reject(c, [c.user, good[1] + "00g1", *good[2:]], Reject.UNKNOWN_JOB)
    # extranonce2: wrong size, non-hex, 0x, spaces
    for en2 in ["000000", "0000000000", "zzzzzzzz", "0x000000", " 0000000", "00 00000"]:
        _expect_reject(c, [*good[:2], en2, *good[3:]], Reject.BAD_EXTRANONCE2)
    # ntime: format and range
    for nt in ["6b07", "0x6b0779", "ggggg000"]:
        _expect_reject(c, [*good[:3], nt, good[4]], Reject.BAD_NTIME)
    # nonce format
    for nonce in ["", "123456789", "0x123456", "xyzxyzxy", "-1234567", "+1234567"]:
        _expect_reject(c, [*good[:4], nonce], Reject.BAD_NONCE)
    # version bits outside the negotiated mask (none negotiated yet)
    _expect_reject(c, [*good, "00002000"], Reject.BAD_VERSION)
    _expect_reject(c, [*good, "zz"], Reject.BAD_VERSION)
    # high hash
    _expect_reject(c, c.solve_miss(), Reject.HIGH_HASH)
    # unauthorized worker name
    _expect_reject(c, [ADDR2 + ".x", *good[1:]], Reject.UNAUTHORIZED)
    # bad params
    _expect_reject(c, good[:4], Reject.BAD_PARAMS)
    _expect_reject(c, [*good, "00000000", "extra"], Reject.BAD_PARAMS)
    _expect_reject(c, [1, 2, 3, 4, 5], Reject.BAD_PARAMS)
    # accepted, then duplicate in every other encoding
    assert c.call("mining.submit", good)["result"] is True
    _expect_reject(c, good, Reject.DUPLICATE)
    _expect_reject(c, [good[0], good[1], good[2].upper(), good[3].upper(), good[4].upper()], Reject.DUPLICATE)
    # stale: a new tip arrives
    h.server.on_template(template(prev=b"\x11" * 32), False)
    _expect_reject(c, good, Reject.STALE_JOB)
    assert h.metric("hashcoop_shares_rejected_total", reason="stale-job") == 1
    assert len(h.sink.accepted) == 1


def test_not_subscribed(h):
    c = h.connect()
    c.call("mining.authorize", [ADDR, "x"])
    _expect_reject(c, [ADDR, "1", "00000000", "00000000", "00000000"], Reject.NOT_SUBSCRIBED)


def test_nerdminer_unpadded_uppercase_nonce_is_the_same_share(h):
    c = h.connect().handshake()
    for start in range(0, 1 << 32, 1 << 24):
        share, _ = c.solve(start_nonce=start)
        if share[4].startswith("0"):
            break
    short = [*share[:4], share[4].lstrip("0").upper() or "0"]
    assert c.call("mining.submit", short)["result"] is True
    _expect_reject(c, share, Reject.DUPLICATE)


def test_null_id_requests_get_no_reply(h):
    c = h.connect()
    c.send_raw(b'{"id": null, "method": "mining.suggest_target", "params": ["00000000ffff"]}\n')
    c.send_raw(b'{"id": null, "method": "mining.extranonce.subscribe", "params": []}\n')
    assert c.lines() == [] and c.connected


def test_ntime_limits_exact(h):
    c = h.connect().handshake()
    job = h.jobs.current
    lo, hi = job.mintime, job.ntime + 7000
    for t, ok in [(lo - 1, False), (lo, True), (hi, True), (hi + 1, False)]:
        share, _ = c.solve(ntime=t)
        r = c.call("mining.submit", share)
        assert (r["result"] is True) == ok, (t, r)
        if not ok:
            assert r["error"][0] == 20


def test_version_rolling_negotiation_and_submit(h):
    c = h.connect()
    r = c.call("mining.configure", [["version-rolling", "minimum-difficulty", "subscribe-extranonce", "whatever"],
                                    {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2,
                                     "minimum-difficulty.value": 1e-9}])
    assert r["error"] is None
    assert r["result"] == {"version-rolling": True, "version-rolling.mask": "1fffe000", "minimum-difficulty": True,
                           "subscribe-extranonce": True, "whatever": False}
    c.handshake()
    a, _ = c.solve(version_bits=0x00002000)
    b, _ = c.solve(version_bits=0x00004000)
    # same nonce search space, differing only in rolled bits: both accepted
    assert c.call("mining.submit", a)["result"] is True
    assert c.call("mining.submit", b)["result"] is True
    # full rolled version (some firmware sends it) is the same share: duplicate
    full = [*a[:5], f"{0x20000000 | 0x2000:08x}"]
    _expect_reject(c, full, Reject.DUPLICATE)
    # a bit outside the mask
    _expect_reject(c, [*a[:5], "00001000"], Reject.BAD_VERSION)
    _expect_reject(c, [*a[:5], "40000000"], Reject.BAD_VERSION)


def test_configure_mask_intersection(h):
    c = h.connect()
    r = c.call("mining.configure", [["version-rolling"], {"version-rolling.mask": "00ffe000"}])
    assert r["result"]["version-rolling.mask"] == "00ffe000"
    c2 = h.connect(port=2)
    r = c2.call("mining.configure", [["version-rolling"], {"version-rolling.mask": "e0000000"}])
    assert r["result"] == {"version-rolling": False, "version-rolling.mask": "00000000"}


def test_suggest_difficulty_before_and_after_authorize_is_clamped():
    h = Harness(config(ports=[{"port": 3333, "start_difficulty": 1e-8, "min_difficulty": 1e-9, "max_difficulty": 1e-4}]))
    c = h.connect()
    c.call("mining.subscribe", [])
    assert c.call("mining.suggest_difficulty", [5e-8])["result"] is True
    c.handshake()
    assert c.difficulty == 5e-8
    c.call("mining.suggest_difficulty", [5e-8])  # repeated (NerdMiner keep-alive): no change sent
    assert c.pushed == []
    r = c.call("mining.suggest_difficulty", [1e300])
    assert r["result"] is True
    assert [m["method"] for m in c.pushed] == ["mining.set_difficulty", "mining.notify"]
    assert c.pushed[0]["params"] == [1e-4]
    for bad in [0, -1, "abc", None, [], float("1e400") if False else "nan", "inf"]:
        r = c.call("mining.suggest_difficulty", [bad])
        assert r["error"] is not None
    assert c.session.difficulty == 1e-4
    h.reactor.advance(h.cfg.stratum.difficulty_change_interval)  # at most one change per interval
    c.call("mining.suggest_difficulty", [1e-300])
    assert c.session.difficulty == 1e-9


def test_password_difficulty_is_fixed_and_clamped():
    h = Harness(config(ports=[{"port": 3333, "start_difficulty": 1e-8, "min_difficulty": 1e-9, "max_difficulty": 1e-4}]))
    c = h.connect().handshake(password="x,d=2e-9")
    assert c.difficulty == 2e-9 and c.session.vardiff is None
    c2 = h.connect(port=2).handshake(password="d=1000")
    assert c2.difficulty == 1e-4
    c3 = h.connect(port=3).handshake(password="d=nan")
    assert c3.difficulty == 1e-8 and c3.session.vardiff is not None


def test_extranonce_subscribe_and_unknown_method(h):
    c = h.connect()
    assert c.call("mining.extranonce.subscribe", []) == {"id": 1, "result": True, "error": None}
    r = c.call("mining.fly", [])
    assert r["result"] is None and r["error"][0] == 20
    r = c.call("mining.get_transactions", ["1"])
    assert r["error"][0] == 20
    assert c.connected


def test_params_null_and_wrong_types_get_errors(h):
    c = h.connect()
    c.send_raw(b'{"id": 7, "method": "mining.subscribe", "params": null}\n')
    assert c.lines()[0]["result"][2] == 4
    c.send_raw(b'{"id": 8, "method": "mining.authorize", "params": {"a": 1}}\n')
    assert c.lines()[0]["error"][0] == 20
    c.send_raw(b'{"id": 9, "method": 12, "params": []}\n')
    assert c.lines()[0]["error"][0] == 20
    c.send_raw(b'{"id": 10, "result": true, "error": null}\n')  # a reply from the miner: ignored
    assert c.lines() == [] and c.connected
    c.send_raw(b'\r\n\n')
    assert c.connected


@pytest.mark.parametrize("line", [b"not json\n", b"[1,2,3]\n", b'"str"\n', b'{"id":1,"method":"x"\n',
                                  b'{"id": 1e999999}\n', b'{"id": NaN}\n', b"[" * 2000 + b"]" * 2000 + b"\n"])
def test_bad_json_disconnects(h, line):
    c = h.connect()
    c.send_raw(line)
    assert not c.connected
    assert h.metric("hashcoop_disconnects_total", reason="bad-json") == 1


def test_huge_id_is_answered_not_crashed(h):
    c = h.connect()
    c.send_raw(b'{"id": 123456789012345678901234567890, "method": "mining.extranonce.subscribe", "params": []}\n')
    [r] = c.lines()
    assert r["result"] is True and r["error"] is None and r["id"] == 1.2345678901234568e29
    c.send_raw(b'{"id": "' + b"9" * 3000 + b'", "method": "mining.fly"}\n')
    [r] = c.lines()
    assert r["error"][0] == 20 and len(r["id"]) == 3000
    assert c.connected


def test_line_cap_disconnects_immediately(h):
    c = h.connect()
    chunk = b"a" * 1000
    for _ in range(4):
        c.send_raw(chunk)
    assert c.connected
    c.send_raw(chunk + b"b" * 200)
    assert not c.connected and c.transport.disconnecting
    assert h.metric("hashcoop_disconnects_total", reason="line-too-long") == 1
    c2 = h.connect(port=2)
    c2.send_raw(b'{"id":1,"method":"mining.subscribe","params":["' + b"x" * 5000 + b'"]}\n')
    assert not c2.connected


def test_handshake_deadlines(h):
    idle = h.connect(port=1)
    subscribed = h.connect(port=2)
    subscribed.call("mining.subscribe", [])
    h.reactor.advance(14.9)
    assert idle.connected
    h.reactor.advance(0.2)
    assert not idle.connected and subscribed.connected
    h.reactor.advance(44.8)
    assert subscribed.connected
    h.reactor.advance(0.2)
    assert not subscribed.connected
    assert h.metric("hashcoop_disconnects_total", reason="subscribe-timeout") == 1
    assert h.metric("hashcoop_disconnects_total", reason="authorize-timeout") == 1


def test_idle_authorized_miner_disconnected():
    h = Harness(config(idle_timeout=120))
    h.server._sweeper.clock = h.reactor
    h.server._sweeper.start(1.0, now=False)
    c = h.connect().handshake()
    for _ in range(100):
        h.reactor.advance(1)
    share, _ = c.solve()
    c.call("mining.submit", share)
    for _ in range(110):
        h.reactor.advance(1)
    assert c.connected
    for _ in range(12):
        h.reactor.advance(1)
    assert not c.connected
    h.server._sweeper.stop()


def test_per_ip_limit_and_release():
    h = Harness(config(max_connections_per_ip=3, connection_limit_exempt=["192.168.0.0/16"]))
    clients = [h.connect(ip="10.1.1.1", port=i) for i in range(3)]
    assert all(clients)
    assert h.connect(ip="10.1.1.1", port=9) is None
    assert h.connect(ip="10.2.2.2") is not None  # another address connects at once
    assert all(h.connect(ip="192.168.1.1", port=i) for i in range(10))  # exempt network
    clients[0].proto.connectionLost(None)
    assert h.connect(ip="10.1.1.1", port=10) is not None
    assert h.metric("hashcoop_connections_refused_total", reason="per-ip-limit") == 1


def test_credited_at_difficulty_job_was_sent_with_both_directions(h):
    c = h.connect().handshake()
    old_notify = c.last_notify()
    # up: retarget to 4x
    c.session._change_difficulty(4 * SHARE_DIFF)
    msgs = c.lines()
    assert [m["method"] for m in msgs] == ["mining.set_difficulty", "mining.notify"]
    assert msgs[0]["params"] == [4 * SHARE_DIFF]
    new_notify = msgs[1]["params"]
    assert new_notify[0] == old_notify[0] + "0001" and new_notify[8] is False
    share, _ = c.solve(notify=old_notify, difficulty=SHARE_DIFF, en2=1)
    assert c.call("mining.submit", share)["result"] is True
    assert h.sink.accepted[-1].difficulty == SHARE_DIFF
    share, _ = c.solve(notify=new_notify, difficulty=4 * SHARE_DIFF, en2=2)
    assert c.call("mining.submit", share)["result"] is True
    assert h.sink.accepted[-1].difficulty == 4 * SHARE_DIFF
    # a share meeting only the old, lower difficulty on the new job is low difficulty
    weak, hv = c.solve(notify=new_notify, difficulty=SHARE_DIFF, en2=3)
    if hv > __import__("hashcoop.pool.core.btc.target", fromlist=["x"]).difficulty_to_target(4 * SHARE_DIFF):
        _expect_reject(c, weak, Reject.HIGH_HASH)
    # down: to half; old jobs keep their own difficulty, and the new job is sent clean
    h.reactor.advance(h.cfg.stratum.difficulty_change_interval)  # one change per interval
    c.session._change_difficulty(SHARE_DIFF / 2)
    msgs = c.lines()
    down_notify = msgs[1]["params"]
    assert down_notify[0] == old_notify[0] + "0002" and down_notify[8] is True
    share, _ = c.solve(notify=new_notify, difficulty=4 * SHARE_DIFF, en2=4)
    assert c.call("mining.submit", share)["result"] is True
    assert h.sink.accepted[-1].difficulty == 4 * SHARE_DIFF
    share, _ = c.solve(notify=down_notify, difficulty=SHARE_DIFF / 2, en2=5)
    assert c.call("mining.submit", share)["result"] is True
    assert h.sink.accepted[-1].difficulty == SHARE_DIFF / 2
    # the next broadcast job carries the current difficulty
    h.server.on_template(template(), False)
    nxt = c.lines()[-1]["params"]
    share, _ = c.solve(notify=nxt, difficulty=SHARE_DIFF / 2, en2=6)
    assert c.call("mining.submit", share)["result"] is True
    assert h.sink.accepted[-1].difficulty == SHARE_DIFF / 2


def test_new_tip_sends_clean_job_to_everyone_and_refresh_is_not_clean(h):
    clients = [h.connect(port=i).handshake() for i in range(20)]
    for c in clients:
        c.lines()
    h.server.on_template(template(), False)
    for c in clients:
        [m] = c.lines()
        assert m["method"] == "mining.notify" and m["params"][8] is False
    h.server.on_template(template(prev=b"\x22" * 32), False)
    lines = set()
    for c in clients:
        [m] = c.lines()
        assert m["params"][8] is True
        assert m["params"][1] == bytes.fromhex("22" * 32).hex()
        lines.add(orjson.dumps(m))
    assert len(lines) == 1  # the same bytes for every miner


def test_block_found_is_built_submitted_and_announced(h):
    finder = h.connect(port=1).handshake()
    other = h.connect(port=2).handshake()
    other.lines()
    share, hv = finder.solve(block=True)
    assert finder.call("mining.submit", share)["result"] is True
    [found] = h.submitter.found
    assert h.sink.blocks == [found]
    assert found.address == ADDR and found.height == h.jobs.current.height
    assert found.reward == h.jobs.current.template.coinbasevalue
    header, txs = parse_block(bytes.fromhex(found.block_hex))
    assert int.from_bytes(sha256d(header), "little") == hv
    assert merkle_root([t.txid for t in txs]) == header[36:68]
    assert txs[0].has_witness and len(txs) == 1 + len(h.jobs.current.template.transactions)
    assert h.sink.accepted[-1].is_block
    [msg] = other.lines()
    assert msg["method"] == "client.show_message" and found.hash in msg["params"][0]
    # replaying the block share does not submit it again
    _expect_reject(finder, share, Reject.DUPLICATE)
    assert len(h.submitter.found) == 1


def test_multiple_workers_on_one_connection(h):
    c = h.connect().handshake()
    assert c.call("mining.authorize", [ADDR2 + ".second", "x"])["result"] is True
    share, _ = c.solve()
    share[0] = ADDR2 + ".second"
    assert c.call("mining.submit", share)["result"] is True
    assert h.sink.accepted[-1].address == ADDR2 and h.sink.accepted[-1].worker == "second"


def test_worker_names_are_sanitised(h):
    c = h.connect().handshake(user=ADDR + ".rig<script>/1")
    share, _ = c.solve()
    c.call("mining.submit", share)
    assert h.sink.accepted[-1].worker == "rig_script__1"


def test_no_template_yet_then_work_arrives():
    h = Harness(with_job=False)
    c = h.connect()
    c.call("mining.subscribe", [])
    c.call("mining.authorize", [ADDR, "x"])
    assert c.pushed == []
    h.server.on_template(template(), True)
    msgs = c.lines()
    assert [m["method"] for m in msgs] == ["mining.set_difficulty", "mining.notify"]


def test_connection_metrics(h):
    a = h.connect(port=1).handshake()
    h.connect(port=2)
    assert h.metric("hashcoop_connections", port="3333") == 2
    assert h.metric("hashcoop_workers_authorized", port="3333") == 1
    a.proto.connectionLost(None)
    assert h.metric("hashcoop_connections", port="3333") == 1
    assert h.metric("hashcoop_workers_authorized", port="3333") == 0


def test_every_job_id_is_distinct_work():
    """Miners restart their extranonce2 search on each new job id: a refresh
    of an unchanged template, or a job re-sent with a new difficulty, must not
    hand out the same coinbase again (it would only produce duplicates)."""
    h = Harness()
    c = h.connect().handshake()
    first = c.last_notify()
    h.server.on_template(template(), False)  # same template again
    refresh = c.lines()[-1]["params"]
    c.session._change_difficulty(2 * SHARE_DIFF)
    alias = c.lines()[-1]["params"]
    coinb1s = {first[2], refresh[2], alias[2]}
    assert len(coinb1s) == 3 and {first[3], refresh[3], alias[3]} == {first[3]}
    # the same extranonce2 and nonce search on each gives different shares, all accepted
    for notify, d in ((first, SHARE_DIFF), (refresh, SHARE_DIFF), (alias, 2 * SHARE_DIFF)):
        share, _ = c.solve(notify=notify, difficulty=d)
        r = c.call("mining.submit", share)
        assert r["result"] is True, r


def test_new_miners_refused_while_the_template_is_too_old(caplog):
    caplog.set_level(logging.INFO, logger="hashcoop.stratum")
    h = Harness(config(max_template_age=120))

    class Work:
        current_since = h.reactor.seconds()

    h.server.work = Work()
    c = h.connect(port=1).handshake()
    h.reactor.advance(119)
    assert h.connect(port=2) is not None
    h.reactor.advance(2)
    assert h.connect(port=3) is None
    assert c.connected  # miners already connected keep working
    assert h.metric("hashcoop_connections_refused_total", reason="stale-template") == 1
    assert h.connect(port=5) is None
    assert sum("new miners are refused" in r.getMessage() for r in caplog.records) == 1  # once per episode
    # the refused miner is told why before the connection closes
    proto = h.factory.buildProtocol(IPv4Address("TCP", "10.0.0.9", 6))
    tr = StringTransport()
    proto.makeConnection(tr)
    msg = json.loads(tr.value())
    assert msg["method"] == "client.show_message" and "backup pool" in msg["params"][0]
    assert tr.disconnecting
    Work.current_since = h.reactor.seconds()  # the node answers again
    assert h.connect(port=4) is not None
    assert sum("fresh again" in r.getMessage() for r in caplog.records) == 1


def test_new_miners_refused_when_no_template_came_since_the_start():
    """Started while every node is down: a miner let in would get no work
    at all; past max_template_age from the start it goes to a backup pool."""
    h = Harness(config(max_template_age=120))

    class Work:
        current_since = None

    h.server.work = Work()
    h.server.admission.start()  # as startService does
    assert h.connect(port=1) is not None  # a moment after the start: the first template is on its way
    h.reactor.advance(121)
    assert h.connect(port=2) is None
    assert h.metric("hashcoop_connections_refused_total", reason="stale-template") == 1
    Work.current_since = h.reactor.seconds()
    assert h.connect(port=3) is not None
