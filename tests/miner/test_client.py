"""The Stratum client and controller, driven with StringTransport and a
MemoryReactorClock; hashers are a recording fake."""
import json

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from hashcoop.pool.core.btc.hashing import hash_to_hex, sha256d
from hashcoop.pool.core.btc.target import DIFF1_TARGET
from hashcoop.pool.tools.miner import user_agent
from hashcoop.pool.tools.miner.client import Backoff, MinerController, MinerOptions, format_error
from hashcoop.pool.tools.miner.work import DEFAULT_VERSION_MASK, hash_value, share_target
from tests.miner.vectors import SOLVING_JOB, accepted_block, ckpool_session, lines, notify, recorded_submit, subscribe_result

USER = "bcrt1ql7tjprhhlrdzkj3tewzuttn9mt0u4d0564ntyj.rig1"
EASY = 1e-12  # share target capped at 2**256-1: any nonce is a share


class FakeHashers:
    def __init__(self, listener):
        self.listener = listener
        self.assigned: dict[int, object] = {}
        self.log: list[tuple] = []
        self.started = self.stopped = False

    def start(self):
        self.started = True

    def assign(self, index, unit):
        self.assigned[index] = unit
        self.log.append(("assign", index, unit.unit_id))

    def idle(self, index):
        self.assigned[index] = None
        self.log.append(("idle", index))

    def stop(self):
        self.stopped = True
        return defer.succeed(None)


class Harness:
    def __init__(self, **opts):
        self.reactor = MemoryReactorClock()
        self.said: list[str] = []
        opts.setdefault("user", USER)
        self.options = MinerOptions(host="pool.example", port=3333, **opts)
        self.c = MinerController(self.reactor, self.options, hashers=self._hashers, say=self.said.append)
        self.summaries = []
        self.c.done.addCallback(self.summaries.append)
        self.c.start()

    def _hashers(self, listener):
        self.h = FakeHashers(listener)
        return self.h

    def connect(self):
        _host, _port, factory, _timeout, _bind = self.reactor.tcpClients[-1]
        self.proto = factory.buildProtocol(None)
        self.tr = StringTransport()
        self.proto.makeConnection(self.tr)
        return self.proto

    def sent(self) -> list[dict]:
        out = [json.loads(line) for line in self.tr.value().splitlines()]
        self.tr.clear()
        return out

    def feed(self, *msgs):
        for m in msgs:
            self.proto.dataReceived((m if isinstance(m, str) else json.dumps(m)).encode() + b"\n")

    def lose(self):
        self.proto.connectionLost(Failure(ConnectionDone()))

    def unit(self, worker=0):
        return self.h.assigned[worker]

    def handshake(self, *, configure=None, difficulty=None, en1="5c79076b", en2_size=8, job=None):
        """Answer the client's opening requests like a pool would."""
        self.connect()
        for req in self.sent():
            rid, method = req["id"], req["method"]
            if method == "mining.configure":
                self.feed(configure(rid) if configure else {"id": rid, "result": {
                    "version-rolling": True, "version-rolling.mask": "1fffe000"}, "error": None})
            elif method == "mining.subscribe":
                self.feed({"id": rid, "result": [[["mining.notify", "ab"]], en1, en2_size], "error": None})
                if difficulty is not None:
                    self.feed(set_difficulty(difficulty))
                self.feed(job or notify())
            elif method == "mining.suggest_difficulty":
                self.feed({"id": rid, "result": True, "error": None})
            elif method == "mining.authorize":
                self.feed({"id": rid, "result": True, "error": None})


def set_difficulty(d, rid=None):
    return {"id": rid, "method": "mining.set_difficulty", "params": [d]}


def job_msg(job_id, clean, base=None):
    msg = json.loads(json.dumps(base or notify()))
    msg["params"][0] = job_id
    msg["params"][8] = clean
    return msg


def submits(sent):
    return [m for m in sent if m.get("method") == "mining.submit"]


# ---------------------------------------------------------------- opening


def test_opening_message_order_with_everything():
    h = Harness(suggest_difficulty=0.001, password="pw")
    assert h.reactor.tcpClients[0][:2] == ("pool.example", 3333)
    assert h.h.started
    h.connect()
    sent = h.sent()
    assert [m["method"] for m in sent] == [
        "mining.configure", "mining.subscribe", "mining.suggest_difficulty", "mining.authorize"]
    assert sent[0]["params"] == [["version-rolling"], {
        "version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}]
    assert sent[1]["params"] == [user_agent()] and user_agent().startswith("hashcoop-miner/")
    assert sent[2]["params"] == [0.001]
    assert sent[3]["params"] == [USER, "pw"]
    assert len({m["id"] for m in sent}) == 4


def test_opening_without_version_rolling_or_suggestion():
    h = Harness(version_rolling=False)
    h.connect()
    assert [(m["id"], m["method"]) for m in h.sent()] == [(1, "mining.subscribe"), (2, "mining.authorize")]


def test_custom_version_mask_is_requested():
    h = Harness(version_mask=0x00FF0000)
    h.connect()
    assert h.sent()[0]["params"][1]["version-rolling.mask"] == "00ff0000"


# ---------------------------------------------------------------- the ckpool recording


def test_recorded_ckpool_session_reproduces_cpuminers_block_share():
    """Feed the client ckpool's recorded lines; the work it hands a hasher for
    job 6b07795a0000001a, with cpuminer's nonce, is block 105, and the submit
    line carries cpuminer's exact params."""
    h = Harness(version_rolling=False)
    h.connect()
    ours = h.sent()
    theirs = [m for m in lines("c2s") if m["method"] != "mining.submit"]
    assert [(m["id"], m["method"]) for m in ours] == [(m["id"], m["method"]) for m in theirs]
    assert ours[1]["params"] == theirs[1]["params"]  # same user and password
    server_lines = [e["line"] for e in ckpool_session()["session"] if e["dir"] == "s2c"]
    upto = next(i for i, line in enumerate(server_lines) if SOLVING_JOB in line)
    h.feed(*server_lines[:upto + 1])
    assert h.sent() == []  # nothing to answer: all notifications

    unit = h.unit()
    assert unit.job.job_id == SOLVING_JOB
    assert unit.job.extranonce1.hex() == subscribe_result()[1] and unit.job.difficulty == 1
    assert unit.target == DIFF1_TARGET
    nonce = int(recorded_submit()["params"][4], 16)
    assert hash_to_hex(sha256d(unit.header(nonce))) == accepted_block()["hash"]
    assert unit.header(nonce).hex() == accepted_block()["hex"][:160]

    h.c.on_found(0, unit.unit_id, nonce)
    (submit,) = submits(h.sent())
    assert submit["params"] == recorded_submit()["params"]
    assert h.c.blocks == 1 and any("block candidate" in s for s in h.said)
    assert h.c.blocks_accepted == 0  # not until the pool says so
    h.feed({"result": True, "error": None, "id": submit["id"]})
    assert h.c.accepted == 1 and h.c.blocks_accepted == 1
    assert h.c.summary()["blocks_accepted"] == 1


# ---------------------------------------------------------------- server requests


@pytest.mark.parametrize("method, params, result", [
    ("client.get_version", [], user_agent()),
    ("client.show_message", ["block 105 found by rig1!"], True),
    ("mining.set_difficulty", [0.5], True),
    ("mining.set_extranonce", ["aabbccdd", 4], True),
    ("mining.set_version_mask", ["00006000"], True),
    ("mining.notify", notify()["params"], True),
])
def test_server_requests_with_an_id_get_result_and_error(method, params, result):
    h = Harness()
    h.handshake()
    h.sent()
    h.feed({"id": 77, "method": method, "params": params})
    assert h.sent() == [{"id": 77, "result": result, "error": None}]


def test_unknown_method_and_bad_params_get_an_error():
    h = Harness()
    h.handshake()
    h.sent()
    h.feed({"id": 5, "method": "mining.frobnicate", "params": []},
           {"id": 6, "method": "mining.set_difficulty", "params": [-1]},
           {"id": 7, "method": "mining.notify", "params": ["x"]},
           {"id": 8, "method": "client.reconnect", "params": ["pool.example", "notaport"]})
    replies = h.sent()
    assert [r["id"] for r in replies] == [5, 6, 7, 8]
    assert all(r["result"] is None and r["error"][0] == 20 for r in replies)
    assert h.c.source.job.difficulty == 1.0  # the bad difficulty was ignored


def test_notifications_are_not_answered_and_show_message_is_printed():
    h = Harness()
    h.handshake()
    h.sent()
    h.feed({"id": None, "method": "client.show_message", "params": ["Block 106 found!"]},
           {"id": None, "method": "mining.set_difficulty", "params": [2]})
    assert h.sent() == []
    assert "pool says: Block 106 found!" in h.said


def test_garbage_lines_are_ignored():
    h = Harness()
    h.handshake()
    h.sent()
    h.feed("not json", "[1,2]", json.dumps({"id": 999, "result": True, "error": None}))
    assert h.sent() == [] and not h.tr.disconnecting


# ---------------------------------------------------------------- jobs and difficulty


def test_every_notify_moves_all_workers_to_the_new_job():
    h = Harness(processes=3)
    h.handshake()
    first = {h.unit(i).unit_id for i in range(3)}
    assert len(first) == 3 and len({(h.unit(i).extranonce2, h.unit(i).version) for i in range(3)}) == 3
    h.feed(job_msg("next", False))
    assert all(h.unit(i).job.job_id == "next" for i in range(3))


def test_clean_job_abandons_old_work_and_its_shares():
    h = Harness()
    h.handshake(difficulty=EASY)
    old = h.unit()
    h.feed(job_msg("B", True))
    assert h.unit().job.job_id == "B"
    h.sent()
    h.c.on_found(0, old.unit_id, 1)  # the hasher was still on the old job
    assert submits(h.sent()) == [] and h.c.stale == 1
    b = h.unit()
    h.feed(job_msg("C", False))  # not clean: B shares are still good
    h.c.on_found(0, b.unit_id, 1)
    (s,) = submits(h.sent())
    assert s["params"][1] == "B"


def test_set_difficulty_applies_from_the_next_job():
    h = Harness()
    h.handshake(difficulty=2)
    assert h.unit().target == share_target(2) == DIFF1_TARGET // 2
    h.feed(set_difficulty(0.0001))
    assert h.unit().target == share_target(2)  # current job keeps its difficulty
    h.c.on_done(0, h.unit().unit_id)  # even new units of that job
    assert h.unit().target == share_target(2)
    h.feed(job_msg("next", False))
    assert h.unit().job.difficulty == 0.0001
    assert h.unit().target == share_target(0.0001) > DIFF1_TARGET * 9999


def test_set_extranonce_applies_from_the_next_job():
    h = Harness()
    h.handshake()
    h.feed({"id": None, "method": "mining.set_extranonce", "params": ["00112233", 4]})
    assert h.unit().job.extranonce1.hex() == "5c79076b"
    h.feed(job_msg("next", False))
    assert h.unit().job.extranonce1.hex() == "00112233" and len(h.unit().extranonce2) == 4


def test_exhausted_units_are_replaced_with_fresh_work():
    h = Harness(nonces_per_unit=1 << 31)
    h.handshake()
    seen = set()
    for _ in range(5):
        u = h.unit()
        seen.add((u.extranonce2, u.version, u.nonce_start))
        h.c.on_done(0, u.unit_id)
    assert len(seen) == 5
    stale_id = u.unit_id
    current = h.unit().unit_id
    h.c.on_done(0, stale_id)  # a late "done" for a replaced unit changes nothing
    assert h.unit().unit_id == current


def test_hw_error_when_the_nonce_misses_the_target():
    h = Harness()
    h.handshake(difficulty=1)
    h.sent()
    h.c.on_found(0, h.unit().unit_id, 12345)
    assert submits(h.sent()) == [] and h.c.hw_errors == 1


# ---------------------------------------------------------------- version rolling


def test_negotiated_version_rolling_submits_masked_version_bits():
    h = Harness(processes=2)
    h.handshake(difficulty=EASY, configure=lambda rid: {"id": rid, "error": None, "result": {
        "version-rolling": True, "version-rolling.mask": "ffffffff"}})
    assert h.c.version_mask == DEFAULT_VERSION_MASK  # never more than we asked for
    u = h.unit(1)
    assert u.version_bits and u.version_bits & ~DEFAULT_VERSION_MASK == 0
    h.sent()
    h.c.on_found(1, u.unit_id, 42)
    (s,) = submits(h.sent())
    assert len(s["params"]) == 6 and int(s["params"][5], 16) == u.version_bits
    h.feed({"id": None, "method": "mining.set_version_mask", "params": ["00006000"]})
    for i in range(2):
        assert h.unit(i).version_bits & ~0x6000 == 0
        assert h.unit(i).version & ~0x6000 == 0x20000000


@pytest.mark.parametrize("reply", [
    lambda rid: {"id": rid, "result": None, "error": [20, "Method 'mining.configure' not found", None]},
    lambda rid: {"id": rid, "result": {"version-rolling": False}, "error": None},
    None,  # never answered
])
def test_pool_that_rejects_or_ignores_configure(reply):
    h = Harness()
    if reply is None:
        h.connect()
        for req in h.sent():
            if req["method"] == "mining.subscribe":
                h.feed({"id": req["id"], "result": [[], "01020304", 4], "error": None},
                       set_difficulty(EASY), notify())
            elif req["method"] == "mining.authorize":
                h.feed({"id": req["id"], "result": True, "error": None})
    else:
        h.handshake(difficulty=EASY, configure=reply)
    assert h.c.version_mask is None
    u = h.unit()
    assert u.version_bits is None and u.version == 0x20000000
    h.sent()
    h.c.on_found(0, u.unit_id, 1)
    (s,) = submits(h.sent())
    assert len(s["params"]) == 5
    h.feed({"id": None, "method": "mining.set_version_mask", "params": ["00006000"]})
    assert h.unit().version_bits is None


# ---------------------------------------------------------------- shares


def test_share_answers_are_counted_by_error():
    h = Harness()
    h.handshake(difficulty=EASY)
    h.sent()
    for nonce in range(4):
        h.c.on_found(0, h.unit().unit_id, nonce)
    ids = [s["id"] for s in submits(h.sent())]
    h.feed({"id": ids[0], "result": True, "error": None},
           {"id": ids[1], "result": None, "error": [23, "Low difficulty share", None]},
           {"id": ids[2], "result": False, "error": {"code": 21, "message": "Job not found"}},
           {"id": ids[3], "result": None, "error": [23, "Low difficulty share", None]})
    s = h.c.summary()
    assert (s["accepted"], s["rejected"]) == (1, 3)
    assert s["rejected_by_error"] == {"23 Low difficulty share": 2, "21 Job not found": 1}


def test_shares_found_before_authorization_wait_for_it():
    h = Harness(version_rolling=False)
    h.connect()
    reqs = h.sent()
    h.feed({"id": reqs[0]["id"], "result": [[], "01020304", 4], "error": None}, set_difficulty(EASY), notify())
    h.c.on_found(0, h.unit().unit_id, 9)
    assert submits(h.sent()) == []
    h.feed({"id": reqs[1]["id"], "result": True, "error": None})
    (s,) = submits(h.sent())
    assert s["params"][4] == "00000009"


def test_format_error():
    assert format_error([23, "Low difficulty share", None]) == "23 Low difficulty share"
    assert format_error({"code": 21, "message": "Stale"}) == "21 Stale"
    assert format_error("boom") == "boom" and format_error(None) == "rejected"


# ---------------------------------------------------------------- connection lifecycle


def test_backoff_doubles_to_a_cap_and_resets():
    b = Backoff(1, 8)
    assert [b.next() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    b.reset()
    assert b.next() == 1


def test_reconnects_with_backoff_and_resets_after_authorize():
    h = Harness()
    factory = h.reactor.tcpClients[0][2]
    for expected in (1, 2, 4):
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        n = len(h.reactor.tcpClients)
        h.reactor.advance(expected - 0.01)
        assert len(h.reactor.tcpClients) == n
        h.reactor.advance(0.02)
        assert len(h.reactor.tcpClients) == n + 1
    h.handshake()
    assert h.unit() is not None
    h.lose()
    assert h.h.assigned[0] is None  # workers idle while disconnected
    h.reactor.advance(1.0)  # authorize succeeded: back to the first delay
    assert len(h.reactor.tcpClients) == 5


def test_jobs_from_a_previous_connection_are_not_submitted():
    h = Harness()
    h.handshake(difficulty=EASY)
    old = h.unit()
    h.lose()
    h.reactor.advance(1)
    h.handshake(difficulty=EASY)
    h.sent()
    h.c.on_found(0, old.unit_id, 1)
    assert submits(h.sent()) == [] and h.c.stale == 1


def test_client_reconnect_to_same_host_new_port_after_wait():
    h = Harness()
    h.handshake()
    h.sent()
    h.feed({"id": 50, "method": "client.reconnect", "params": ["pool.example", 3334, 5]})
    assert h.sent() == [{"id": 50, "result": True, "error": None}]
    assert not h.tr.disconnecting  # the reply goes out first
    h.reactor.advance(0)
    assert h.tr.disconnecting
    h.lose()
    h.reactor.advance(4.9)
    assert len(h.reactor.tcpClients) == 1
    h.reactor.advance(0.2)
    assert h.reactor.tcpClients[-1][:2] == ("pool.example", 3334)


def test_client_reconnect_to_another_host_is_refused():
    h = Harness()
    h.handshake()
    h.sent()
    h.feed({"id": 51, "method": "client.reconnect", "params": ["evil.example", 3333, 0]})
    (reply,) = h.sent()
    assert reply["result"] is None and reply["error"][0] == 20
    h.reactor.advance(1)
    assert not h.tr.disconnecting


def test_client_reconnect_without_params_reconnects_to_the_same_place():
    h = Harness()
    h.handshake()
    h.feed({"id": None, "method": "client.reconnect", "params": []})
    h.reactor.advance(0)
    assert h.tr.disconnecting
    h.lose()
    h.reactor.advance(0)
    assert h.reactor.tcpClients[-1][:2] == ("pool.example", 3333)


@pytest.mark.parametrize("reply", [
    lambda rid: {"id": rid, "result": False, "error": [24, "Unauthorized worker", None]},
    lambda rid: {"id": rid, "result": None, "error": None},
])
def test_failed_authorize_drops_and_retries(reply):
    h = Harness(version_rolling=False)
    h.connect()
    reqs = h.sent()
    h.feed({"id": reqs[0]["id"], "result": [[], "01020304", 4], "error": None}, reply(reqs[1]["id"]))
    assert h.tr.disconnecting
    h.lose()
    h.reactor.advance(1)
    assert len(h.reactor.tcpClients) == 2


def test_failed_subscribe_drops():
    h = Harness(version_rolling=False)
    h.connect()
    reqs = h.sent()
    h.feed({"id": reqs[0]["id"], "result": None, "error": [20, "nope", None]})
    assert h.tr.disconnecting


def test_no_subscribe_reply_and_a_silent_pool_are_dropped():
    h = Harness(setup_timeout=30, silence_timeout=300)
    h.connect()
    h.reactor.advance(30)
    assert h.tr.disconnecting
    h.lose()
    h.reactor.advance(1)
    h.handshake()
    h.reactor.advance(299)
    assert not h.tr.disconnecting
    h.feed(job_msg("keepalive", False))  # any line resets the silence timer
    h.reactor.advance(299)
    assert not h.tr.disconnecting
    h.reactor.advance(2)
    assert h.tr.disconnecting


# ---------------------------------------------------------------- exits and status


def test_max_shares_stops_after_answers_and_reports():
    h = Harness(max_shares=2)
    h.handshake(difficulty=EASY)
    h.sent()
    h.c.on_hashes(0, h.unit().unit_id, 1000)
    h.c.on_found(0, h.unit().unit_id, 1)
    h.c.on_found(0, h.unit().unit_id, 2)
    assert h.h.assigned[0] is None  # hashing paused at the limit
    h.c.on_found(0, 1, 3)  # late finds are not submitted
    ids = [s["id"] for s in submits(h.sent())]
    assert len(ids) == 2 and not h.summaries
    h.feed({"id": ids[0], "result": True, "error": None})
    assert not h.summaries
    h.feed({"id": ids[1], "result": None, "error": [23, "Low difficulty share", None]})
    (summary,) = h.summaries
    assert summary["accepted"] == 1 and summary["rejected_by_error"] == {"23 Low difficulty share": 1}
    assert summary["hashes"] == 1000 and summary["reason"] == "max-shares"
    assert h.h.stopped and h.tr.disconnecting
    h.lose()
    h.reactor.advance(60)
    assert len(h.reactor.tcpClients) == 1  # no reconnect once stopped


def test_max_shares_gives_up_waiting_for_answers():
    h = Harness(max_shares=1, answer_grace=10)
    h.handshake(difficulty=EASY)
    h.c.on_found(0, h.unit().unit_id, 1)
    h.reactor.advance(9.9)
    assert not h.summaries
    h.reactor.advance(0.2)
    assert h.summaries[0]["unanswered"] == 1 and h.summaries[0]["reason"] == "max-shares"


def test_duration_waits_for_the_answers_to_shares_in_flight():
    """A share the pool accepted is one the miner was told about: at the
    end of --duration hashing stops, the answers still come in."""
    h = Harness(duration=5, answer_grace=10)
    h.handshake(difficulty=EASY)
    h.sent()
    h.c.on_found(0, h.unit().unit_id, 1)
    (sub,) = submits(h.sent())
    h.reactor.advance(5)
    assert not h.summaries and not h.tr.disconnecting
    assert h.h.assigned[0] is None  # hashing stopped
    h.c.on_found(0, 1, 2)  # late finds are not submitted
    assert submits(h.sent()) == []
    h.feed({"id": sub["id"], "result": True, "error": None})
    (summary,) = h.summaries
    assert summary["reason"] == "duration" and summary["accepted"] == 1 and summary["unanswered"] == 0


def test_duration_gives_up_waiting_for_answers():
    h = Harness(duration=5, answer_grace=10)
    h.handshake(difficulty=EASY)
    h.c.on_found(0, h.unit().unit_id, 1)
    h.reactor.advance(5)
    h.reactor.advance(9.9)
    assert not h.summaries
    h.reactor.advance(0.2)
    assert h.summaries[0]["unanswered"] == 1 and h.summaries[0]["reason"] == "duration"


def test_duration_stops_even_while_disconnected():
    h = Harness(duration=5)
    h.reactor.tcpClients[0][2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    h.reactor.advance(5)
    (summary,) = h.summaries
    assert summary["reason"] == "duration" and summary["accepted"] == 0 and h.h.stopped
    assert h.c.stop() is h.c.stop()  # idempotent


def test_status_line_shows_hashrate_counts_and_difficulty():
    h = Harness(status_interval=10)
    h.handshake(difficulty=0.001)
    h.c.on_hashes(0, h.unit().unit_id, 5_000_000)
    h.reactor.advance(10)
    assert h.said[-1] == "500.00 kH/s | accepted 0 rejected 0 | diff 0.001"


def test_quiet_prints_no_status():
    h = Harness(status_interval=10, quiet=True)
    h.handshake()
    h.reactor.advance(30)
    assert not any("H/s" in s for s in h.said)


def test_fractional_difficulty_shares_verify_against_their_target():
    h = Harness()
    h.handshake(difficulty=0.0001)
    u = h.unit()
    assert u.target == share_target(0.0001)
    # find a real share the slow way, as a hasher would
    nonce = next(n for n in range(1 << 24) if hash_value(sha256d(u.header(n))) <= u.target)
    h.sent()
    h.c.on_found(0, u.unit_id, nonce)
    (s,) = submits(h.sent())
    assert int(s["params"][4], 16) == nonce
