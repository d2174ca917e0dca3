"""The budget of requests other than submits (``hashcoop.stratum.flood.RequestBudget``)
and the coalescing of difficulty changes, on a clock."""
from __future__ import annotations

import logging

import pytest

from hashcoop.stratum.flood import ALLOWED, OVERDRAWN, REFUSED, RequestBudget
from tests.stratum.harness import ADDR, Harness, config


# -- the pure budget ------------------------------------------------------------------
def test_budget_allows_a_burst_then_the_rate_then_closes_a_sustained_excess():
    b = RequestBudget(rate=2.0, burst=10)
    tat, t = 0.0, 1000.0
    verdicts = []
    for _ in range(30):  # all at once
        tat, v = b.charge(tat, t)
        verdicts.append(v)
    assert verdicts == [ALLOWED] * 10 + [REFUSED] * 10 + [OVERDRAWN] * 10


def test_budget_refills_at_the_rate_and_a_client_at_the_rate_is_never_refused():
    b = RequestBudget(rate=2.0, burst=10)
    tat, t = 0.0, 0.0
    for _ in range(10):
        tat, v = b.charge(tat, t)
        assert v == ALLOWED
    tat, v = b.charge(tat, t)
    assert v == REFUSED
    # 0.5 s later one more is allowed (rate 2/s), not two
    t += 0.5 + 0.5  # the refused one moved the state too
    tat, v = b.charge(tat, t)
    assert v == ALLOWED
    tat, v = b.charge(tat, t)
    assert v == REFUSED
    # at exactly the rate, for an hour: never refused
    tat, t = 0.0, 0.0
    for _ in range(7200):
        tat, v = b.charge(tat, t)
        assert v == ALLOWED
        t += 0.5


def test_budget_slightly_over_the_rate_is_refused_now_and_then_and_closed_only_when_it_goes_on():
    b = RequestBudget(rate=1.0, burst=100)
    tat, t, seen = 0.0, 0.0, []
    while True:  # 1.1 a second
        tat, v = b.charge(tat, t)
        seen.append(v)
        if v == OVERDRAWN:
            break
        t += 1 / 1.1
    assert seen.count(ALLOWED) > 1000 and seen.count(REFUSED) > 100
    assert 1900 < t < 2300  # (2 x burst) / 0.1 excess a second


def test_first_refusal_marks_the_first_of_a_run():
    b = RequestBudget(rate=1.0, burst=3)
    tat, firsts = 0.0, []
    for _ in range(5):
        before = tat
        tat, v = b.charge(tat, 0.0)
        firsts.append(v == REFUSED and b.first_refusal(before, 0.0))
    assert firsts == [False, False, False, True, False]


@pytest.mark.parametrize("rate,burst", [(0, 10), (-1, 10), (1, 0)])
def test_budget_rejects_nonsense(rate, burst):
    with pytest.raises(ValueError):
        RequestBudget(rate=rate, burst=burst)


# -- on a session -----------------------------------------------------------------------
def harness(**stratum):
    return Harness(config(request_rate=1.0, request_burst=20, **stratum))


def test_requests_past_the_budget_get_an_error_and_a_sustained_excess_closes_and_strikes(caplog):
    caplog.set_level(logging.INFO, logger="hashcoop.stratum")
    h = harness()
    c = h.connect(ip="10.5.0.1").handshake()  # subscribe + authorize: 2 of the 20
    answers = [c.call("mining.extranonce.subscribe", []) for _ in range(18)]
    assert all(a["result"] is True for a in answers)
    refused = c.call("mining.extranonce.subscribe", [])
    assert refused["error"] == [20, "Too many requests: slow down", None]
    assert h.metric("hashcoop_requests_refused_total") == 1
    assert sum("refusing requests from 10.5.0.1" in r.getMessage() for r in caplog.records) == 1
    # shares are not counted against the budget
    share, _ = c.solve(en2=1)
    assert c.call("mining.submit", share)["result"] is True
    for _ in range(19):
        c.send("mining.suggest_difficulty", [1])
    assert c.connected
    assert sum("refusing requests from 10.5.0.1" in r.getMessage() for r in caplog.records) == 1  # one line a run
    c.send("mining.suggest_difficulty", [1])  # 2 x burst past what was earned: closed
    assert not c.connected
    assert h.metric("hashcoop_disconnects_total", reason="request-rate") == 1
    assert h.metric("hashcoop_flood_actions_total", action="disconnect") == 1
    assert h.server.bans.strikes["10.5.0.1"]  # counted towards a ban like any flood
    assert any("requests other than submits went on far past 1 a second" in r.getMessage() for r in caplog.records)


def test_a_proxy_authorizing_its_workers_and_a_keepalive_suggestion_every_30_s_are_never_refused():
    h = Harness(config())  # the defaults: 1 a second, burst 100
    c = h.connect().handshake()
    for i in range(63):  # 64 workers on one connection, at once
        assert c.call("mining.authorize", [f"{ADDR}.w{i}", "x"])["result"] is True
    for _ in range(24 * 120):  # NerdMiner's keep-alive for a day
        h.reactor.advance(30)
        assert c.call("mining.suggest_difficulty", [1e-8])["error"] is None
    assert h.metric("hashcoop_requests_refused_total") == 0 and c.connected


def test_blank_lines_get_no_answer_and_a_stream_of_them_is_closed():
    h = harness()
    c = h.connect()
    c.send_raw(b"\n\r\n  \t \n" * 6)  # 18 blank lines: within the budget
    assert c.transport.value() == b"" and c.connected
    assert h.metric("hashcoop_protocol_errors_total", kind="blank-line") == 18
    c.send_raw(b"\n" * 40)
    assert not c.connected
    assert h.metric("hashcoop_disconnects_total", reason="request-rate") == 1


def test_replies_and_unknown_methods_count_against_the_budget():
    h = harness()
    c = h.connect()
    for i in range(20):
        c.send_raw(b'{"id":%d,"result":"v2.4.0","error":null}\n' % i)
    r = c.call("mining.nope", [])
    assert r["error"][1] == "Too many requests: slow down"


def test_alternating_suggestions_send_at_most_one_change_per_interval_and_the_last_one_wins():
    h = Harness(config(request_rate=1000, request_burst=100_000, difficulty_change_interval=2.0))
    c = h.connect().handshake()
    c.lines()
    for i in range(1000):  # 1,000 alternating suggestions in no time
        c.send("mining.suggest_difficulty", [1e-7 if i % 2 else 2e-7])
    sent = [m for m in c.lines() if "method" in m]
    assert [m["method"] for m in sent] == ["mining.set_difficulty", "mining.notify"]  # the first change only
    # every other suggestion held back; the others went back to the difficulty in force
    assert h.metric("hashcoop_difficulty_changes_coalesced_total") == 500
    h.reactor.advance(1.0)
    c.session.tick(h.reactor.seconds())
    assert [m for m in c.lines() if "method" in m] == []  # not before the interval is over
    h.reactor.advance(1.0)
    c.session.tick(h.reactor.seconds())
    sent = [m for m in c.lines() if "method" in m]
    assert [m["method"] for m in sent] == ["mining.set_difficulty", "mining.notify"]
    assert sent[0]["params"] == [1e-7]  # the last suggestion
    assert c.session.difficulty == 1e-7 and c.session.pending is None
    # shares on the job sent with it are credited at it
    share, _ = c.solve(notify=sent[1]["params"], difficulty=1e-7, en2=9)
    assert c.call("mining.submit", share)["result"] is True
    assert h.sink.accepted[-1].difficulty == 1e-7


def test_a_held_change_back_to_the_difficulty_in_force_sends_nothing():
    h = Harness(config(difficulty_change_interval=2.0))
    c = h.connect().handshake()
    d0 = c.session.difficulty
    c.call("mining.suggest_difficulty", [d0 * 4])
    c.lines()
    c.call("mining.suggest_difficulty", [d0 * 8])  # held
    c.call("mining.suggest_difficulty", [d0 * 4])  # back: nothing left to send
    h.reactor.advance(5)
    c.session.tick(h.reactor.seconds())
    assert [m for m in c.lines() if "method" in m] == []
    assert c.session.difficulty == d0 * 4
