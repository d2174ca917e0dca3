"""Odd JSON, one case at a time: each gets an error reply or a disconnect,
with a metric and (for disconnects) a log line; never an exception."""
from __future__ import annotations

import logging

import orjson
import pytest

from tests.stratum.harness import ADDR, Harness

pytestmark = pytest.mark.hostile


@pytest.fixture
def h():
    return Harness()


def play(h, line: bytes, *, handshake: bool = True):
    c = h.connect(ip="10.9.0.1")
    if handshake:
        c.handshake()
        c.lines()
    c.send_raw(line)  # an exception here is the failure this file looks for
    return c


def reply(c):
    msgs = [m for m in c.lines() if "method" not in m]
    assert len(msgs) == 1, msgs
    return msgs[0]


# (name, line, expected error code) -- answered with an error, connection kept
ANSWERED = [
    ("params-null-submit", b'{"id":5,"method":"mining.submit","params":null}', 20),
    ("params-object", b'{"id":5,"method":"mining.submit","params":{"a":1}}', 20),
    ("params-string", b'{"id":5,"method":"mining.authorize","params":"x"}', 20),
    ("params-number", b'{"id":5,"method":"mining.configure","params":7}', 20),
    ("unknown-method", b'{"id":5,"method":"mining.shutdown","params":[]}', 20),
    ("method-number", b'{"id":5,"method":42,"params":[]}', 20),
    ("method-array", b'{"id":5,"method":["mining.submit"],"params":[]}', 20),
    ("method-empty", b'{"id":5,"method":"","params":[]}', 20),
    ("submit-wrong-types", b'{"id":5,"method":"mining.submit","params":[1,2,3,4,5]}', 20),
    ("submit-nested", b'{"id":5,"method":"mining.submit","params":[' + b"[" * 900 + b"]" * 900 + b',"a","b","c","d"]}', 20),
    ("submit-seven-params", b'{"id":5,"method":"mining.submit","params":["a","b","c","d","e","f","g"]}', 20),
    ("authorize-nested", b'{"id":5,"method":"mining.authorize","params":[' + b"{\"a\":" * 500 + b"1" + b"}" * 500 + b"]}", 20),
    ("authorize-number", b'{"id":5,"method":"mining.authorize","params":[1e308, 5]}', 20),
    ("authorize-long", b'{"id":5,"method":"mining.authorize","params":["' + b"a" * 3000 + b'"]}', 20),
    ("suggest-string", b'{"id":5,"method":"mining.suggest_difficulty","params":["abc"]}', 20),
    ("suggest-nested", b'{"id":5,"method":"mining.suggest_difficulty","params":[[[[1]]]]}', 20),
    ("suggest-bool", b'{"id":5,"method":"mining.suggest_difficulty","params":[true]}', 20),
    ("suggest-zero", b'{"id":5,"method":"mining.suggest_difficulty","params":[0]}', 20),
    ("suggest-negative", b'{"id":5,"method":"mining.suggest_difficulty","params":[-1]}', 20),
    ("suggest-40-digits", b'{"id":5,"method":"mining.suggest_difficulty","params":[' + b"9" * 40 + b"]}", None),
    ("suggest-tiny", b'{"id":5,"method":"mining.suggest_difficulty","params":[1e-300]}', None),
    ("configure-not-list", b'{"id":5,"method":"mining.configure","params":["version-rolling"]}', 20),
    ("get-transactions", b'{"id":5,"method":"mining.get_transactions","params":["00"]}', 20),
]


@pytest.mark.parametrize("name,line,code", ANSWERED, ids=[a[0] for a in ANSWERED])
def test_answered_with_an_error(h, name, line, code):
    c = play(h, line + b"\n")
    r = reply(c)
    if code is None:  # a valid request after all (clamped to the port's limits)
        assert r == {"id": 5, "result": True, "error": None}
        return
    assert r["id"] == 5 and r["error"][0] == code and isinstance(r["error"][1], str) and r["error"][2] is None
    assert c.connected
    counted = (h.metric("hashcoop_protocol_errors_total", kind="unknown-method") + h.metric("hashcoop_protocol_errors_total", kind="bad-params")
               + sum(h.metric("hashcoop_shares_rejected_total", reason=r) for r in ("bad-params", "unauthorized", "unknown-job")))
    assert counted >= 1 or name.startswith(("authorize", "suggest", "configure", "get-transactions"))


IDS = [
    ("uint64-max", b"18446744073709551615", 18446744073709551615),
    ("int64-min", b"-9223372036854775808", -9223372036854775808),
    ("thirty-digits", b"123456789012345678901234567890", 1.2345678901234568e29),
    ("float-max", b"1.7976931348623157e308", 1.7976931348623157e308),
    ("long-string", b'"' + b"i" * 3000 + b'"', "i" * 3000),
    ("zero", b"0", 0),
    ("negative-zero", b"-0.0", -0.0),
    ("true", b"true", True),
]


@pytest.mark.parametrize("name,raw,value", IDS, ids=[i[0] for i in IDS])
def test_odd_ids_are_echoed(h, name, raw, value):
    c = play(h, b'{"id":' + raw + b',"method":"mining.extranonce.subscribe","params":[]}\n')
    r = reply(c)
    assert r["id"] == value and r["result"] is True


# (name, line, disconnect reason) -- the connection is closed (what was queued is sent first)
CLOSED = [
    ("nan", b'{"id":5,"method":"mining.suggest_difficulty","params":[NaN]}', "bad-json"),
    ("infinity", b'{"id":5,"method":"mining.suggest_difficulty","params":[Infinity]}', "bad-json"),
    ("400-digit-number", b'{"id":5,"method":"mining.suggest_difficulty","params":[' + b"9" * 400 + b"]}", "bad-json"),
    ("overflowing-float", b'{"id":1e999,"method":"mining.subscribe","params":[]}', "bad-json"),
    ("nesting-beyond-the-parser", b'{"id":5,"method":"mining.submit","params":' + b"[" * 1100 + b"]" * 1100 + b"}", "bad-json"),
    ("top-level-array", b'[{"id":5,"method":"mining.subscribe","params":[]}]', "bad-json"),
    ("top-level-string", b'"mining.subscribe"', "bad-json"),
    ("top-level-number", b"5", "bad-json"),
    ("invalid-utf8", b'{"id":5,"method":"mining.subscribe","params":["\xff\xfe"]}', "bad-json"),
    ("lone-surrogate", b'{"id":5,"method":"mining.subscribe","params":["\xed\xa0\x80"]}', "bad-json"),
    ("bom", b'\xef\xbb\xbf{"id":5,"method":"mining.subscribe","params":[]}', "bad-json"),
    ("trailing-garbage", b'{"id":5,"method":"mining.subscribe","params":[]} x', "bad-json"),
    ("id-array", b'{"id":[5],"method":"mining.subscribe","params":[]}', "bad-id"),
    ("id-object", b'{"id":{"a":5},"method":"mining.subscribe","params":[]}', "bad-id"),
    # deeper than orjson writes (255): the reply echoing it could not be written
    ("id-nested-300", b'{"id":' + b"[" * 300 + b"]" * 300 + b',"method":"mining.subscribe","params":[]}', "bad-id"),
    ("id-nested-1000", b'{"id":' + b"[" * 1000 + b"]" * 1000 + b',"method":"nope"}', "bad-id"),
]


@pytest.mark.parametrize("name,line,reason", CLOSED, ids=[c[0] for c in CLOSED])
def test_closed_with_a_reason(h, name, line, reason, caplog):
    caplog.set_level(logging.INFO, logger="hashcoop.stratum")
    for handshake in (False, True):
        c = play(h, line + b"\n", handshake=handshake)
        assert not c.connected and c.transport.disconnecting  # closed, not aborted: queued replies go out
        assert [m for m in c.lines() if "method" not in m] == []
    assert h.metric("hashcoop_disconnects_total", reason=reason) == 2
    assert any(f"disconnect 10.9.0.1: {reason}" in r.getMessage() for r in caplog.records)


def test_a_reply_shaped_line_is_ignored_without_answer(h):
    # what ESP-Miner sends back to client.get_version; a null method is a reply too
    for line in (b'{"id":7,"result":"v2.4.0","error":null}', b'{"id":7,"method":null}'):
        c = play(h, line + b"\n")
        assert c.lines() == [] and c.connected


def test_every_case_in_one_read_never_raises(h):
    """All the answered cases pipelined in one read on one connection:
    one reply each, in order."""
    c = h.connect(ip="10.9.0.2").handshake()
    c.lines()
    c.send_raw(b"\n".join(line.replace(b'"id":5', b'"id":%d' % i) for i, (_, line, _) in enumerate(ANSWERED)) + b"\n")
    ids = [m["id"] for m in c.lines() if "method" not in m]
    assert ids == list(range(len(ANSWERED)))
    assert c.connected
    assert orjson.loads(orjson.dumps(ADDR))  # the harness address stays the same string
