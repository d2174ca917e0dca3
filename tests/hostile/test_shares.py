"""Shares that try to cheat: replays in every encoding, version bits,
ntime at its limits, retargets in both directions, hostile difficulty
suggestions, extranonce1 over a million connect/disconnect cycles."""
from __future__ import annotations

import math
import random
import time

import pytest

from hashcoop.pool.core.btc.target import difficulty_to_target
from hashcoop.pool.core.shares import MAX_NTIME_FUTURE, Reject
from hashcoop.stratum.errors import ERRORS
from hashcoop.stratum.extranonce import Extranonce1Allocator
from tests.stratum.harness import ADDR, SHARE_DIFF, Harness, config, template

pytestmark = pytest.mark.hostile
MASK = 0x1FFFE000


@pytest.fixture
def h():
    return Harness()


def submit(c, params):
    r = c.call("mining.submit", params)
    return r["result"] is True, r


def encodings(share: list[str]) -> list[tuple[str, list]]:
    """The same share written every other way a client could write it."""
    user, job, en2, ntime, nonce = share[:5]
    vb = share[5] if len(share) == 6 else None
    out = []

    def variant(name, i, value):
        p = list(share)
        p[i] = value
        out.append((name, p))

    for i, field, v in ((2, "extranonce2", en2), (3, "ntime", ntime), (4, "nonce", nonce)):
        variant(f"{field}-upper", i, v.upper())
        variant(f"{field}-0x", i, "0x" + v)
        variant(f"{field}-0X", i, "0X" + v)
        variant(f"{field}-leading-zero", i, "0" + v)
        variant(f"{field}-two-leading-zeros", i, "00" + v)
        variant(f"{field}-space-before", i, " " + v)
        variant(f"{field}-space-after", i, v + " ")
        variant(f"{field}-space-inside", i, v[:4] + " " + v[4:])
        variant(f"{field}-newline", i, v + "\n")
        variant(f"{field}-nul", i, v + "\x00")
        variant(f"{field}-plus", i, "+" + v)
        variant(f"{field}-non-hex", i, v[:-1] + "g")
        variant(f"{field}-fullwidth", i, v.translate(str.maketrans("0123456789abcdef", "０１２３４５６７８９ａｂｃｄｅｆ")))
        variant(f"{field}-as-number", i, int(v, 16))
        variant(f"{field}-as-list", i, [v])
        variant(f"{field}-underscore", i, v[:4] + "_" + v[4:])
    variant("nonce-unpadded", 4, format(int(nonce, 16), "x"))
    variant("nonce-unpadded-upper", 4, format(int(nonce, 16), "X"))
    variant("nonce-nine-digits", 4, "0" + nonce)
    variant("ntime-decimal", 3, str(int(ntime, 16)))
    variant("extranonce2-short", 2, en2[:-2])
    variant("extranonce2-long", 2, en2 + "00")
    out.append(("with-version-zero", [*share[:5], "00000000"]))
    out.append(("with-full-version", [*share[:5], f"{0x20000000:08x}"]))
    out.append(("with-full-version-upper", [*share[:5], f"{0x20000000:08X}"]))
    out.append(("job-id-upper", [user, job.upper(), *share[2:]]))
    out.append(("job-id-alias-0000", [user, job + "0000", *share[2:]]))
    out.append(("job-id-alias-0001", [user, job + "0001", *share[2:]]))
    out.append(("user-upper", [user.upper(), *share[1:]]))
    out.append(("user-space", [user + " ", *share[1:]]))
    out.append(("seventh-param", [*share, "00000000", "x"]))
    assert vb is None
    return out


def test_replaying_an_accepted_share_in_any_encoding_is_never_accepted(h):
    c = h.connect().handshake()
    # a second worker on the same connection: the share is the same work whoever claims it
    assert c.call("mining.authorize", [ADDR + ".rig2", "x"])["result"] is True
    c.call("mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff"}])
    share, _ = c.solve()
    assert submit(c, share)[0]
    tried = 0
    for name, params in encodings(share) + [("same-again", share), ("other-worker", [ADDR + ".rig2", *share[1:]])]:
        ok, r = submit(c, params)
        tried += 1
        assert not ok, f"{name}: {params} was accepted"
        assert r["error"][0] in (20, 21, 22, 24), (name, r)
    # with a string id, a null id, and pipelined twenty times in one read
    assert not c.call("mining.submit", share)["result"]
    c.send("mining.submit", share, mid="dup")
    c.send_raw(b"".join(__import__("orjson").dumps({"id": 100 + i, "method": "mining.submit", "params": share}) + b"\n"
                        for i in range(20)))
    assert all(m["result"] is False for m in c.lines())
    assert h.sink.accepted_count == 1
    assert h.metric("hashcoop_shares_accepted_total", port="3333") == 1
    assert h.sink.rejected_by_reason[Reject.DUPLICATE] >= 24
    print(f"\nduplicates: {tried + 22} replays of one accepted share, none accepted "
          f"({dict(h.sink.rejected_by_reason)})")


def test_two_shares_differing_only_in_allowed_version_bits_are_both_accepted(h):
    c = h.connect()
    c.call("mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff"}])
    c.handshake()
    bits = [1 << i for i in range(32) if MASK >> i & 1]
    assert len(bits) == 16
    for b in bits:
        share, _ = c.solve(version_bits=b)
        assert submit(c, share)[0], hex(b)
    assert h.sink.accepted_count == 16
    # each again, as rolled bits or as the whole rolled version: duplicates
    for b in bits[:4]:
        share, _ = c.solve(version_bits=b)
        assert not submit(c, share)[0]
        assert not submit(c, [*share[:5], f"{0x20000000 | b:08x}"])[0]
    assert h.sink.accepted_count == 16


def test_version_bits_outside_the_negotiated_mask_are_rejected(h):
    c = h.connect()
    c.call("mining.configure", [["version-rolling"], {"version-rolling.mask": "00006000"}])
    c.handshake()
    share, _ = c.solve(version_bits=0x2000)
    assert submit(c, share)[0]
    for i in range(32):
        b = 1 << i
        if b in (0x2000, 0x4000):
            continue
        ok, r = submit(c, [*share[:5], f"{b | 0x2000:08x}"])
        assert not ok and r["error"] == [20, ERRORS[Reject.BAD_VERSION][1], None] or b == 0x20000000, (hex(b), r)
    # without mining.configure nothing may roll (but 00000000 and the job's own version are fine)
    d = h.connect(ip="10.0.0.2").handshake()
    share, _ = d.solve()
    ok, _ = submit(d, [*share, "00002000"])
    assert not ok
    assert submit(d, [*share, "00000000"])[0]
    assert not submit(d, [*share, "20000000"])[0]  # the same header again: duplicate


def test_ntime_is_accepted_exactly_up_to_its_limits(h):
    c = h.connect().handshake()
    job = h.jobs.current
    lo, hi = job.mintime, job.ntime + MAX_NTIME_FUTURE
    for t, ok in [(0, False), (lo - 1, False), (lo, True), (job.ntime, True), (hi, True), (hi + 1, False),
                  (0xFFFFFFFF, False)]:
        share, _ = c.solve(ntime=t, en2=t & 0xFFFF)
        got, r = submit(c, share)
        assert got == ok, (t, r)
        if not ok:
            assert r["error"] == [20, ERRORS[Reject.BAD_NTIME][1], None]


def test_shares_are_credited_at_the_difficulty_their_job_was_sent_with(h):
    """Retargets in both directions, by vardiff and by the miner's own
    suggestion: every job keeps the difficulty it was sent with."""
    c = h.connect().handshake()
    jobs = [(c.last_notify(), SHARE_DIFF)]
    for d in (4 * SHARE_DIFF, SHARE_DIFF / 2, 8 * SHARE_DIFF, SHARE_DIFF / 4):
        h.reactor.advance(h.cfg.stratum.difficulty_change_interval)  # at most one change per interval
        c.session._change_difficulty(d)  # what vardiff does
        msgs = c.lines()
        assert msgs[0] == {"id": None, "method": "mining.set_difficulty", "params": [d]}
        jobs.append((msgs[1]["params"], d))
    h.reactor.advance(h.cfg.stratum.difficulty_change_interval)
    c.call("mining.suggest_difficulty", [3 * SHARE_DIFF])  # the miner's own
    jobs.append(([m for m in c.pushed if m["method"] == "mining.notify"][-1]["params"], 3 * SHARE_DIFF))
    h.server.on_template(template(), False)  # a refresh carries the current difficulty
    jobs.append((c.lines()[-1]["params"], 3 * SHARE_DIFF))
    for en2, (notify, d) in enumerate(reversed(jobs), start=1):  # newest first: old jobs after the newer ones
        share, hv = c.solve(notify=notify, difficulty=d, en2=en2)
        assert submit(c, share)[0], (notify[0], d)
        assert h.sink.accepted[-1].difficulty == d
        assert h.sink.accepted[-1].job_id == notify[0][:8]
        # the same job, a share meeting only a lower difficulty: low difficulty, not credited lower
        weak, hv = c.solve(notify=notify, difficulty=d / 16, en2=100 + en2)
        if hv > difficulty_to_target(d):
            ok, r = submit(c, weak)
            assert not ok and r["error"][0] == 23
    assert h.sink.accepted_count == len(jobs)


HOSTILE_DIFFICULTIES = [0, -1, -0.0, 1e-300, 5e-324, 1e300, 1.7976931348623157e308, "NaN", "nan", "inf", "-inf", "Infinity",
                        "1e300", "1e-300", "-5", "abc", "", "0x10", "1_000", True, False, None, [], {}, [1], 2 ** 64 - 1,
                        -(2 ** 63), 0.5, 1, 7.5, 999.9]
LO, HI = 0.001, 1000.0


def _port_harness():
    return Harness(config(ports=[{"port": 3333, "start_difficulty": 1, "min_difficulty": LO, "max_difficulty": HI}]))


def _sent_difficulties(c) -> list[float]:
    return [m["params"][0] for m in c.pushed if m.get("method") == "mining.set_difficulty"]


@pytest.mark.parametrize("value", HOSTILE_DIFFICULTIES, ids=[repr(v) for v in HOSTILE_DIFFICULTIES])
def test_suggested_difficulty_stays_within_the_port_limits(value):
    h = _port_harness()
    for order in ("before", "after"):
        c = h.connect(ip=f"10.1.0.{1 if order == 'before' else 2}")
        if order == "before":
            c.call("mining.subscribe", [])
            c.call("mining.suggest_difficulty", [value])
            c.call("mining.authorize", [ADDR + ".w", "x"])
        else:
            c.handshake()
        sent = _sent_difficulties(c)
        c.call("mining.suggest_difficulty", [value])
        sent += _sent_difficulties(c)
        c.call("mining.configure", [["minimum-difficulty"], {"minimum-difficulty.value": value}])
        sent += _sent_difficulties(c)
        for d in sent + [c.session.difficulty, c.session.floor]:
            assert type(d) in (int, float) and math.isfinite(d) and LO <= d <= HI, (value, d)
        assert c.connected


@pytest.mark.parametrize("password", ["d=0", "d=-1", "d=-0", "d=1e-300", "d=5e-324", "d=1e300", "d=1e999", "d=nan", "d=NaN",
                                      "d=inf", "d=-inf", "d=abc", "d=", "d=0x10", "d=1_000", "x,d=64", "d=64;d=0", "D=1e300",
                                      "d=" + "9" * 400, "d=0.0000001", "d=1e-300,d=5"])
def test_password_difficulty_stays_within_the_port_limits(password):
    h = _port_harness()
    c = h.connect()
    c.handshake(password=password)
    sent = _sent_difficulties(c)
    assert sent and all(type(d) in (int, float) and math.isfinite(d) and LO <= d <= HI for d in sent), (password, sent)
    assert LO <= c.session.difficulty <= HI


def test_extranonce1_unique_among_live_sessions_over_a_million_cycles():
    """The allocator driven directly, two processes' worth (instance ids 1
    and 2), 10,000 to 30,000 live sessions each, a million connects and as
    many disconnects; both counters start near the wrap."""
    rng = random.Random(11)
    allocs = [Extranonce1Allocator(1, start=(1 << 24) - 5000), Extranonce1Allocator(2, start=(1 << 24) - 100)]
    live: list[list[bytes]] = [[], []]
    held: set[bytes] = set()
    cycles = 0
    t0 = time.monotonic()
    while cycles < 1_000_000:
        i = cycles & 1
        pool = live[i]
        if len(pool) < 10_000 or (len(pool) < 30_000 and rng.random() < 0.5):
            en1 = allocs[i].allocate()
            assert en1 not in held, f"extranonce1 {en1.hex()} given to two live sessions"
            assert en1[0] == i + 1
            held.add(en1)
            pool.append(en1)
            cycles += 1
        else:
            j = rng.randrange(len(pool))
            pool[j], pool[-1] = pool[-1], pool[j]
            en1 = pool.pop()
            held.discard(en1)
            allocs[i].release(en1)
    assert len(held) == len(live[0]) + len(live[1]) == len(allocs[0].live) + len(allocs[1].live)
    print(f"\nextranonce1: {cycles} connect/disconnect cycles on two allocators in {time.monotonic() - t0:.1f}s, "
          f"{len(held)} live at the end, no collision")


def test_extranonce1_wrap_skips_values_still_in_use():
    a = Extranonce1Allocator(7, start=(1 << 24) - 3)
    first = [a.allocate() for _ in range(6)]  # wraps through 0
    a.release(first[1])
    a.counter = (1 << 24) - 3  # the counter comes round again
    again = [a.allocate() for _ in range(3)]
    assert first[1] in again and not set(again) & (set(first) - {first[1]})
