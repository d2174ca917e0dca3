"""Backpressure, output bounds and graceful closes, on a clock: a
``PeerTransport`` runs Twisted's own output buffering and producer calls
over a peer that reads only when the test says so. The same on real
sockets: tests/hostile/test_backpressure.py."""
from __future__ import annotations

import orjson
import pytest

from hashcoop.stratum.protocol import DRAIN_LIMIT, FLUSH_EVERY
from tests.stratum.harness import Harness, config, template

PAUSE, LIMIT = 4096, 16384
SUBSCRIBE = b'{"id":%d,"method":"mining.subscribe","params":[]}\n'


def harness(**stratum):
    # a large request budget: these tests are about output, not about the budget
    opts = dict(output_pause_bytes=PAUSE, output_limit_bytes=LIMIT, request_rate=1e6, request_burst=1_000_000)
    opts.update(stratum)
    return Harness(config(**opts))


def replies(data: bytes) -> list[dict]:
    """The complete lines the peer read."""
    return [orjson.loads(x) for x in data[:data.rfind(b"\n") + 1].split(b"\n") if x]


def reading(h, c) -> bool:
    return c.transport in h.reactor.readers


def test_a_peer_that_does_not_read_stops_being_read_and_gets_every_reply_in_order_once_it_reads():
    h = harness()
    c = h.connect(peer=True)
    t = c.transport
    t.startReading()
    t.reading = False
    n = 2000
    c.send_raw(b"".join(SUBSCRIBE % i for i in range(n)))
    # paused once the unsent output passed the bound: the lines not handled yet are held
    assert c.proto.paused is not None and not reading(h, c)
    assert c.proto in h.server.blocked
    assert PAUSE < t.unsent() <= PAUSE + FLUSH_EVERY * 200, t.unsent()  # a subscribe reply is < 200 bytes
    assert t.received == b""
    assert c.proto._buf.count(b"\n") < n  # held, not answered
    assert h.metric("hashcoop_output_pauses_total") == 1
    assert h.metric("hashcoop_connections_output_blocked") == 1
    assert h.metric("hashcoop_output_held_bytes") == t.unsent()
    # the peer reads a little at a time: never more than the bound is held
    most = 0
    while len(replies(bytes(t.received))) < n:
        t.read(3000)
        most = max(most, t.unsent())
    assert most <= PAUSE + FLUSH_EVERY * 200
    got = replies(bytes(t.received))
    assert [r["id"] for r in got] == list(range(n))
    assert all(r["error"] is None for r in got)
    assert c.proto.paused is None and reading(h, c) and c.proto not in h.server.blocked
    assert c.connected


def test_output_left_undrained_for_the_stall_timeout_is_aborted(caplog):
    h = harness(output_stall_timeout=30)
    c = h.connect(peer=True)
    t = c.transport
    t.reading = False
    c.send_raw(b"".join(SUBSCRIBE % i for i in range(500)))
    assert c.proto.paused is not None
    h.reactor.advance(29)
    h.server._sweep()
    assert not t.aborted
    h.reactor.advance(2)
    h.server._sweep()
    assert t.aborted and c.proto.closing
    assert h.metric("hashcoop_disconnects_total", reason="output-stalled") == 1
    assert any("has not read its replies for 31s" in r.getMessage() for r in caplog.records)
    c.proto.connectionLost(None)
    assert h.server.blocked == {} and h.server.sessions == set()


def test_a_slow_reader_that_keeps_draining_is_not_closed():
    h = harness(output_stall_timeout=30, authorize_timeout=1e6)  # no handshake deadline in the way
    c = h.connect(peer=True)
    t = c.transport
    t.reading = False
    c.send_raw(b"".join(SUBSCRIBE % i for i in range(3000)))
    for _ in range(200):  # 2,000 bytes every 20 s: paused for minutes on end, never stuck
        h.reactor.advance(20)
        h.server._sweep()
        t.read(2000)
    assert not t.aborted and len(replies(bytes(t.received))) == 3000
    assert h.metric("hashcoop_output_pauses_total") > 10  # paused again and again


def test_output_past_the_hard_limit_is_aborted_at_once():
    h = harness()
    c = h.connect(peer=True).handshake()
    t = c.transport
    t.reading = False
    c.send_raw(b"".join(SUBSCRIBE % i for i in range(500)))  # paused
    assert c.proto.paused is not None and not t.aborted
    prev = None
    for i in range(100):  # new blocks: each a notify the peer does not read
        prev = (0xB10C0000 + i).to_bytes(32, "little")
        h.server.on_template(template(prev=prev), True)
        if t.aborted:
            break
    assert t.aborted and t.unsent() > LIMIT
    assert h.metric("hashcoop_disconnects_total", reason="output-limit") == 1


def test_bad_input_after_a_share_sends_the_share_reply_then_a_fin_not_a_reset():
    h = harness()
    c = h.connect(peer=True).handshake()
    t = c.transport
    share, _ = c.solve()
    start = len(t.received)
    c.send_raw(orjson.dumps({"id": 77, "method": "mining.submit", "params": share}) + b"\ngarbage\n")
    t.read()
    assert h.sink.accepted_count == 1
    assert replies(bytes(t.received[start:])) == [{"id": 77, "result": True, "error": None}]
    assert t.half_closed and not t.aborted  # the FIN went out after the reply
    assert h.metric("hashcoop_disconnects_total", reason="bad-json") == 1
    # the peer closes its side: nothing left pending
    c.proto.connectionLost(None)
    assert h.reactor.getDelayedCalls() == [] or all(not d.active() for d in h.reactor.getDelayedCalls()
                                                     if d.func == c.proto._close_timed_out)


def test_a_closed_connection_whose_peer_never_closes_is_aborted_after_close_timeout():
    h = harness(close_timeout=5)
    c = h.connect(peer=True)
    t = c.transport
    c.send_raw(b"not json\n")
    t.read()
    assert c.proto.closing and t.half_closed and not t.aborted
    c.send_raw(b"x" * 1000)  # read and dropped
    h.reactor.advance(4.9)
    assert not t.aborted
    h.reactor.advance(0.2)
    assert t.aborted


def test_a_closed_connection_is_read_for_at_most_the_drain_limit():
    h = harness(close_timeout=5)
    c = h.connect(peer=True)
    t = c.transport
    c.send_raw(b"x" * 5000)  # a line past the cap: closed
    assert c.proto.closing and not t.aborted
    c.send_raw(b"y" * (DRAIN_LIMIT // 2))
    assert not t.aborted
    c.send_raw(b"y" * DRAIN_LIMIT)
    assert t.aborted and not any(d.active() for d in h.reactor.getDelayedCalls() if d.func == c.proto._close_timed_out)


def test_a_close_while_paused_reads_again_to_see_the_peers_fin():
    h = harness(output_stall_timeout=30)
    c = h.connect(peer=True)
    t = c.transport
    t.startReading()
    t.reading = False
    c.send_raw(b"".join(SUBSCRIBE % i for i in range(500)))
    assert c.proto.paused is not None and not reading(h, c)
    c.proto.close("shutdown")
    assert reading(h, c) and c.proto not in h.server.blocked
    assert not t.half_closed  # the FIN waits for the queued replies
    t.read()
    assert t.half_closed and t.unsent() == 0


@pytest.mark.parametrize("key,value,msg", [
    ("output_limit_bytes", 65536, "must exceed stratum.output_pause_bytes"),
])
def test_the_output_limit_must_exceed_the_pause_bound(key, value, msg):
    from hashcoop.pool.config import ConfigError

    with pytest.raises(ConfigError) as e:
        config(**{key: value})
    assert f"stratum.{key}" in str(e.value) and msg in str(e.value)
