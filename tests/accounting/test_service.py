"""The reactor side: the sink returns at once, batches go out every flush
interval, one writer call at a time; Redis going away and coming back;
replay after a crash; metrics and log lines. Driven by task.Clock, with the
writer called synchronously (the stand-in for the writer thread) against a
real redis-server."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from functools import partial

from twisted.internet import defer
from twisted.internet.task import Clock

from hashcoop.pool.accounting.keys import Keys
from hashcoop.pool.accounting.ops import Settings
from hashcoop.pool.accounting.service import AccountingService
from hashcoop.pool.accounting.writer import RedisWriter, redis_client
from hashcoop.pool.core.events import BlockFound, ShareAccepted, ShareRejected
from hashcoop.pool.metrics import Metrics

ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def sync_thread(which, fn, *args, **kw):
    return defer.maybeDeferred(fn, *args, **kw)


class Deferring:
    """Holds thread calls until released: busy journal and Redis threads."""

    def __init__(self):
        self.calls = {"journal": [], "redis": []}

    def __call__(self, which, fn, *args, **kw):
        d = defer.Deferred()
        self.calls[which].append((fn, args, kw, d))
        return d

    def release(self, which):
        calls, self.calls[which] = self.calls[which], []
        for fn, args, kw, d in calls:
            d.callback(fn(*args, **kw))
        return len(calls)


def make(tmp_path, url, *, clock=None, run_in_thread=sync_thread, max_buffered=100_000, metrics=None, run_id="run1"):
    clock = clock or Clock()
    clock.advance(1_700_000_000)
    w = RedisWriter(partial(redis_client, url, socket_timeout=0.5, connect_timeout=0.3), Keys("t:"), Settings(),
                    max_buffered=max_buffered, clock=clock.seconds)
    svc = AccountingService(clock, w, tmp_path / "journal", flush_interval=0.25, max_buffered=max_buffered,
                            metrics=metrics or Metrics(), clock=clock, run_in_thread=run_in_thread, run_id=run_id)
    return svc, clock


def share(i, t, d=1.0, block=False, worker="w1", addr=ADDR):
    return ShareAccepted(time=t, address=addr, worker=worker, difficulty=d, share_difficulty=d * 2, job_id="00000001",
                         height=300, hash=f"{i:064x}", network_difficulty=5.0, is_block=block, port=3333, ip="10.0.0.1")


def value(metrics, name, labels=None):
    return metrics.registry.get_sample_value(name, labels or {})


def test_sink_batches_every_flush_interval(tmp_path, redis_proc):
    svc, clock = make(tmp_path, redis_proc.url)
    m = svc.metrics
    svc.startService()
    r = redis_proc.client()
    for i in range(100):
        svc.sink.share_accepted(share(i, clock.seconds()))
    svc.sink.share_rejected(ShareRejected(time=clock.seconds(), reason="stale-job", address=ADDR, worker="w1", difficulty=1.0))
    assert r.get("t:seq") is None  # nothing written from inside the sink
    assert len(svc.collector) == 100
    clock.advance(0.25)
    assert r.get("t:seq") == "100" and r.hget(f"t:worker:{ADDR}:w1", "rej:stale-job") == "1"
    assert (svc.batches_written, svc.shares_written) == (1, 100)
    assert value(m, "hashcoop_redis_batch_shares_count") == 1 and value(m, "hashcoop_redis_batch_shares_sum") == 100
    assert value(m, "hashcoop_redis_up") == 1 and value(m, "hashcoop_shares_buffered") == 0
    clock.advance(1.0)  # nothing to write, no empty batches
    assert svc.batches_written == 1
    svc.sink.share_accepted(share(200, clock.seconds()))
    d = svc.stopService()
    assert d.called  # stop writes what is left
    assert r.get("t:seq") == "101"
    assert os.listdir(tmp_path / "journal") == ["lock"]  # everything applied: no journal left


def test_one_call_per_thread_at_a_time_and_batches_grow_meanwhile(tmp_path, redis_proc):
    th = Deferring()
    svc, clock = make(tmp_path, redis_proc.url, run_in_thread=th)
    svc.startService()
    assert th.release("journal") == 1  # open the journal
    svc.sink.share_accepted(share(1, clock.seconds()))
    clock.advance(0.25)
    assert len(th.calls["journal"]) == 1
    for i in range(2, 50):
        svc.sink.share_accepted(share(i, clock.seconds()))
        clock.advance(0.25)
    assert len(th.calls["journal"]) == 1  # still busy: the next batch grows instead
    assert value(svc.metrics, "hashcoop_shares_buffered") == 49
    th.release("journal")  # batch 1 journaled: goes to the Redis thread
    assert len(th.calls["redis"]) == 1
    clock.advance(0.25)  # batch 2 (48 shares) journaled while Redis is busy
    th.release("journal")
    assert len(th.calls["redis"]) == 1
    th.release("redis")  # batch 1 in Redis; batch 2 handed over at once
    assert len(th.calls["redis"]) == 1
    th.release("redis")
    r = redis_proc.client()
    assert r.get("t:seq") == "49" and svc.batches_written == 2
    from hashcoop.pool.accounting.sharelog import ShareLogReader

    assert [s.seq for s in ShareLogReader(r, "t:").shares(1, 49)] == list(range(1, 50))


def test_redis_outage_buffers_spills_and_flushes_in_order_exactly_once(tmp_path, redis_proc, caplog):
    svc, clock = make(tmp_path, redis_proc.url, max_buffered=100)
    m = svc.metrics
    svc.startService()
    r = redis_proc.client()
    n = 0

    def send(k):
        nonlocal n
        for _ in range(k):
            n += 1
            svc.sink.share_accepted(share(n, clock.seconds(), block=(n == 250)))
            if n == 250:
                svc.sink.block_found(BlockFound(time=clock.seconds(), height=300, hash=f"{n:064x}", prevhash="00" * 32,
                                                address=ADDR, worker="w1", reward=5_000_000_000, share_difficulty=2.0,
                                                network_difficulty=5.0, job_id="00000001", block_hex="00"))
        clock.advance(0.25)

    send(10)
    assert r.get("t:seq") == "10"
    redis_proc.pause()  # unreachable: calls time out
    with caplog.at_level(logging.INFO, logger="hashcoop.accounting"):
        send(10)
        assert value(m, "hashcoop_redis_up") == 0
        assert "Redis unreachable" in caplog.text
        for _ in range(30):  # 300 more shares while Redis is away
            send(10)
        clock.advance(31)
        send(0)
        assert "still unreachable" in caplog.text
        # spilling is logged when it starts (and at most every 30 s), not at every flush
        assert 1 <= caplog.text.count("share buffer full") <= 2
    assert value(m, "hashcoop_shares_buffered") == 310
    assert value(m, "hashcoop_shares_spilled_total") >= 200  # beyond 100 in memory: journal only
    assert svc.writer.mem_shares <= 100
    redis_proc.resume()
    with caplog.at_level(logging.INFO, logger="hashcoop.accounting"):
        for _ in range(40):
            clock.advance(6)  # past the retry backoff
            if value(m, "hashcoop_shares_buffered") == 0:
                break
        assert "reachable again" in caplog.text
        assert "held in the journal file only are all in Redis now" in caplog.text
    assert value(m, "hashcoop_shares_buffered") == 0 and value(m, "hashcoop_redis_up") == 1
    assert r.get("t:seq") == "320" and r.hget("t:pool", "acc") == "320"
    # in order: the share log holds the shares in the order they came
    from hashcoop.pool.accounting.sharelog import ShareLogReader

    log = ShareLogReader(r, "t:").shares(1, 320)
    assert [s.hash for s in log] == [f"{i:064x}" for i in range(1, 321)]
    assert r.hget(f"t:block:{250:064x}", "reward") == "5000000000"
    assert ShareLogReader(r, "t:").verify(f"{250:064x}") == []
    svc.stopService()


CRASHER = textwrap.dedent("""
    import os, signal, sys
    from functools import partial
    sys.path.insert(0, {root!r})
    from hashcoop.pool.accounting.keys import Keys
    from hashcoop.pool.accounting.model import Collector
    from hashcoop.pool.accounting.ops import Settings
    from hashcoop.pool.accounting.journal import Journal
    from hashcoop.pool.accounting.writer import RedisWriter, append, redis_client
    from hashcoop.pool.core.events import ShareAccepted
    w = RedisWriter(partial(redis_client, {url!r}, socket_timeout=0.3, connect_timeout=0.3), Keys("t:"), Settings())
    w.journal = Journal({jdir!r})
    c = Collector()
    for b in range(1, 21):
        for i in range(5):
            n = (b - 1) * 5 + i + 1
            c.add_share(ShareAccepted(time=1.7e9 + n, address={addr!r}, worker="w", difficulty=1.0, share_difficulty=2.0,
                                      job_id="01", height=1, hash="%064x" % n, network_difficulty=5.0))
        w.process([append(w.journal, c.take("crashrun", b, 1.7e9 + b))])
        if b == 10:
            print("half", flush=True)
            sys.stdin.readline()
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_replay_after_kill_9_applies_every_batch_exactly_once(tmp_path, redis_proc):
    """A writer killed -9 with batches written to Redis and batches only in
    the journal (Redis away); the next start replays the journal: every
    share once."""
    jdir = str(tmp_path / "journal")
    code = CRASHER.format(root=os.getcwd(), url=redis_proc.url, jdir=jdir, addr=ADDR)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "half"  # batches 1-10 are in Redis
    r = redis_proc.client()
    assert r.get("t:seq") == "50"
    redis_proc.pause()
    p.stdin.write("\n")
    p.stdin.flush()
    assert p.wait(30) == -signal.SIGKILL
    redis_proc.resume()
    # the batch whose call timed out may still run once Redis wakes up: the
    # writer could not know, so the replay must recognise it
    assert r.get("t:seq") in ("50", "55")
    svc, clock = make(tmp_path, redis_proc.url, run_id="run2")
    svc.startService()  # open(): replays the journal
    for _ in range(10):
        clock.advance(0.25)
    assert r.get("t:seq") == "100" and r.hget("t:pool", "acc") == "100"
    assert value(svc.metrics, "hashcoop_journal_replayed_batches_total") >= 10
    from hashcoop.pool.accounting.sharelog import ShareLogReader

    assert [s.hash for s in ShareLogReader(r, "t:").shares(1, 100)] == [f"{i:064x}" for i in range(1, 101)]
    svc.stopService()
    # a second restart replays nothing more
    svc, clock = make(tmp_path, redis_proc.url, run_id="run3")
    svc.startService()
    clock.advance(1)
    assert r.get("t:seq") == "100"
    svc.stopService()


def test_build_pool_adds_accounting_only_when_redis_is_configured(tmp_path):
    from twisted.internet.testing import MemoryReactorClock

    from hashcoop.pool.app.service import build_pool
    from hashcoop.pool.config import load_config

    data = {"pool": {"network": "regtest", "address": ADDR, "data_dir": str(tmp_path)},
            "nodes": [{"url": "http://127.0.0.1:1/", "user": "u", "password": "p"}]}
    p = build_pool(load_config(data=data, env={}), MemoryReactorClock())
    assert p.accounting is None
    p = build_pool(load_config(data={**data, "redis": {"url": "redis://127.0.0.1:1/0"}}, env={}), MemoryReactorClock())
    assert p.accounting is not None and p.accounting.sink in p.sink.sinks
    order = list(p.service)
    assert order.index(p.accounting) < order.index(p.stratum)  # starts before miners connect, stops after them
    assert p.accounting.journal_dir == tmp_path / "accounting"


def test_redis_that_lost_its_last_writes_gets_them_again(tmp_path):
    """Redis dies and comes back without its last acknowledged writes (the
    AOF lost its tail: power loss with appendfsync everysec). The writer
    sees a new run_id and re-sends its recent batches: those Redis kept are
    skipped by batch id, the lost ones applied again."""
    from tests.procs import RedisProcess

    rp = RedisProcess(tmp_path / "redis", persistent=True).start()
    try:
        svc, clock = make(tmp_path, rp.url)
        svc.startService()
        for i in range(1, 21):
            svc.sink.share_accepted(share(i, clock.seconds()))
            clock.advance(0.25)
        r = rp.client()
        assert r.get("t:seq") == "20"
        rp.proc.kill()
        rp.proc.wait()
        # drop the last three transactions (one per batch) from the AOF
        incr = rp.aof_tail()
        data = incr.read_bytes()
        cut = len(data)
        for _ in range(3):
            cut = data.rindex(b"*1\r\n$5\r\nMULTI\r\n", 0, cut)
        incr.write_bytes(data[:cut])
        rp.start()
        r = rp.client()
        assert r.get("t:seq") == "17"
        for i in range(21, 26):
            svc.sink.share_accepted(share(i, clock.seconds()))
            clock.advance(0.25)
        for _ in range(20):
            clock.advance(1)
        assert r.get("t:seq") == "25" and r.hget("t:pool", "acc") == "25"
        from hashcoop.pool.accounting.sharelog import ShareLogReader

        assert [s.hash for s in ShareLogReader(r, "t:").shares(1, 25)] == [f"{i:064x}" for i in range(1, 26)]
        assert value(svc.metrics, "hashcoop_redis_batches_duplicate_total") == 17
        svc.stopService()
    finally:
        rp.stop()


def test_a_second_process_on_the_same_data_dir_refuses_to_start(tmp_path, redis_proc):
    import pytest

    svc, clock = make(tmp_path, redis_proc.url)
    svc.startService()
    other, _ = make(tmp_path, redis_proc.url, run_id="run2")
    with pytest.raises(RuntimeError, match="in use"):
        other.startService()
    svc.stopService()


def test_a_restarted_pool_and_redis_show_the_same_state(tmp_path):
    """Stop the pool, restart Redis from its AOF, start a new pool: workers,
    rounds, window and snapshots read back the same, and accounting goes on
    from where it was (one sequence, the open round continues)."""
    from hashcoop.pool.accounting.read import AccountingReader
    from tests.procs import RedisProcess

    rp = RedisProcess(tmp_path / "redis", persistent=True).start()
    try:
        svc, clock = make(tmp_path, rp.url)
        svc.startService()
        for i in range(1, 200):
            svc.sink.share_accepted(share(i, clock.seconds(), d=0.5, block=(i == 120), worker=f"w{i % 3}"))
            clock.advance(0.25)
        svc.stopService()
        now = clock.seconds()

        def state():
            rd = AccountingReader(rp.client(), "t:", window_factor=2.0, clock=lambda: now)
            return (rd.pool_summary(), rd.address_stats(ADDR), rd.rounds(), rd.window(),
                    rd.block_snapshot(f"{120:064x}"), rd.hashrate_series(ADDR, "w1", now=now))

        before = state()
        rp.stop()
        rp.start()
        assert state() == before
        svc2, _ = make(tmp_path, rp.url, clock=clock, run_id="run2")
        svc2.startService()
        svc2.sink.share_accepted(share(500, clock.seconds(), d=0.5))
        clock.advance(0.25)
        r = rp.client()
        assert r.get("t:seq") == "200"
        rd = AccountingReader(r, "t:", clock=lambda: clock.seconds())
        assert rd.current_round()["shares"] == 200 - 120
        svc2.stopService()
    finally:
        rp.stop()
