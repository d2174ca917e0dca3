"""PPLNS window arithmetic, pure: property tests for trimming and
snapshots (no Redis)."""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hashcoop.pool.core.events import LoggedShare
from hashcoop.pool.core.window import (
    Entry,
    NdReference,
    WindowModel,
    add_share,
    align_down,
    build_entries,
    keep_target,
    recompute_snapshot,
    trim_count,
    walk,
    window_target,
)

ADDRS = ["bcrt1qa", "bcrt1qb", "bcrt1qc", "bcrt1qd"]

# Dyadic difficulties (k/64) and network difficulties (j/32): every sum is
# exact in binary floating point, so different summation orders agree
# exactly and the tests can demand equality.
dyadic_diff = st.integers(1, 4000).map(lambda k: k / 64)
any_diff = st.floats(1e-9, 1e4, allow_nan=False, allow_infinity=False)


def shares_strategy(diff, min_size=1, max_size=120):
    return st.lists(st.tuples(st.sampled_from(ADDRS), diff, st.booleans().map(lambda b: b) | st.just(False)),
                    min_size=min_size, max_size=max_size)


def logged(rows, start_seq=1, t0=1_700_000_000.0):
    """(address, difficulty, is_block) -> LoggedShare with consecutive seqs."""
    return [LoggedShare(start_seq + i, a, "w", d, d, "j", f"{start_seq + i:064x}", t0 + i, blk, "r:1")
            for i, (a, d, blk) in enumerate(rows)]


def ideal(shares, block_seq, need):
    """Share-by-share definition: walk back from the block share, the share
    straddling the start counted partially. Returns {seq: credit}."""
    credits = {}
    total = 0.0
    for s in reversed([s for s in shares if s.seq <= block_seq]):
        if total >= need:
            break
        c = min(s.difficulty, need - total)
        credits[s.seq] = c
        total += c
    return credits


def by_address(shares, credits):
    out = {}
    for s in shares:
        if s.seq in credits:
            out[s.address] = out.get(s.address, 0.0) + credits[s.seq]
    return out


@settings(max_examples=300, deadline=None)
@given(rows=shares_strategy(dyadic_diff), nd=st.integers(1, 20000).map(lambda j: j / 32),
       factor=st.sampled_from([0.5, 1.0, 2.0, 3.0]), m=st.integers(1, 9))
def test_snapshot_sums_to_n_includes_block_share_and_matches_share_by_share(rows, nd, factor, m):
    rows[-1] = (rows[-1][0], rows[-1][1], True)
    shares = logged(rows)
    for b in [s for s in shares if s.is_block]:
        need = window_target(nd, factor, 0.0)
        res = recompute_snapshot(shares, block_seq=b.seq, n_target=need, entry_shares=m)
        upto = sum(s.difficulty for s in shares if s.seq <= b.seq)
        # sums to N, or to everything if there is less
        assert res.total == min(need, upto)
        assert math.fsum(res.amounts.values()) == res.total
        assert res.complete == (upto >= need)
        # the block share is in its own window, nothing after it is
        credits = ideal(shares, b.seq, need)
        assert b.seq in credits and credits[b.seq] > 0
        assert res.first_seq == min(credits)
        assert all(seq <= b.seq for seq in credits)
        # each share counted once, at most its difficulty, contiguous range
        assert sorted(credits) == list(range(min(credits), b.seq + 1))
        assert all(0 < credits[s.seq] <= s.difficulty for s in shares if s.seq in credits)
        # entries change nothing but the summation order: exact here
        assert res.amounts == {a: v for a, v in by_address(shares, credits).items()}
        if res.partial is not None:
            first = shares[res.first_seq - 1]
            assert 0 < res.partial < first.difficulty


@settings(max_examples=200, deadline=None)
@given(rows=shares_strategy(dyadic_diff, min_size=2), nd=st.integers(1, 4000).map(lambda j: j / 32),
       factor=st.sampled_from([1.0, 2.0]), m=st.integers(1, 9))
def test_consecutive_windows_overlap_only_as_defined(rows, nd, factor, m):
    """Block b2's window, less the shares after block b1, is exactly block
    b1's window cut to what was left of N: the newest part of it, never a
    share twice and nothing from outside."""
    shares = logged(rows)
    blocks = [i for i, r in enumerate(rows) if r[2]]
    assume(len(blocks) >= 2)
    need = window_target(nd, factor, 0.0)
    for i1, i2 in zip(blocks, blocks[1:]):
        b1, b2 = shares[i1], shares[i2]
        w2 = recompute_snapshot(shares, block_seq=b2.seq, n_target=need, entry_shares=m)
        between = [s for s in shares if b1.seq < s.seq <= b2.seq]
        between_sum = sum(s.difficulty for s in between)
        if between_sum >= need:
            assert w2.first_seq > b1.seq  # b1's shares are not in b2's window at all
            continue
        rest = need - between_sum
        w1_cut = recompute_snapshot(shares, block_seq=b1.seq, n_target=rest, entry_shares=m)
        expect = dict(w1_cut.amounts)
        for s in between:
            expect[s.address] = expect.get(s.address, 0.0) + s.difficulty
        assert {a: v for a, v in w2.amounts.items()} == {a: v for a, v in expect.items()}


@settings(max_examples=200, deadline=None)
@given(rows=shares_strategy(any_diff), nd=st.floats(1e-6, 1e4), m=st.integers(1, 64))
def test_arbitrary_floats_agree_with_share_by_share_to_rounding(rows, nd, m):
    rows[-1] = (rows[-1][0], rows[-1][1], True)
    shares = logged(rows)
    b = shares[-1]
    need = 2.0 * nd
    res = recompute_snapshot(shares, block_seq=b.seq, n_target=need, entry_shares=m)
    upto = math.fsum(s.difficulty for s in shares)
    assert math.isclose(res.total, min(need, upto), rel_tol=1e-12)
    exp = by_address(shares, ideal(shares, b.seq, need))
    assert set(res.amounts) <= set(exp) | set(res.amounts)
    for a in set(exp) | set(res.amounts):
        assert math.isclose(res.amounts.get(a, 0.0), exp.get(a, 0.0), rel_tol=1e-9, abs_tol=1e-9 * need)


batches_strategy = st.lists(
    st.lists(st.tuples(st.sampled_from(ADDRS), any_diff | dyadic_diff, st.floats(0, 50), st.sampled_from([0.5, 1.0, 4.0, 40.0]),
                       st.booleans() | st.just(False)), max_size=25),
    min_size=1, max_size=25)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches_strategy, factor=st.sampled_from([1.0, 2.0]), fixed=st.sampled_from([0.0, 0.0, 30.0]),
       margin=st.sampled_from([0.0, 0.25, 1.0]), m=st.integers(1, 16), day_jump=st.booleans())
def test_incremental_store_equals_recomputation_and_trims_to_window_plus_margin(batches, factor, fixed, margin, m, day_jump):
    """The store as Redis keeps it (batches of any size, trimming after each)
    gives, at every block, exactly what recomputing from the log gives."""
    model = WindowModel(factor, fixed, margin, entry_shares=m)
    log = []
    t = 1_700_000_000.0
    seq = 0
    for bi, batch in enumerate(batches):
        rows = []
        for a, d, dt, nd, blk in batch:
            t += dt + (86400 * 2 if day_jump and bi == len(batches) // 2 else 0)
            seq += 1
            h = f"{seq:064x}"
            rows.append((a, d, t, nd, blk, h))
            log.append(LoggedShare(seq, a, "w", d, d, "j", h, t, blk, f"r:{bi}"))
        for snap in model.apply_batch(rows):
            res = recompute_snapshot(log, block_seq=snap.seq, n_target=snap.n_target, floor_seq=snap.floor_seq, entry_shares=m)
            assert res == snap.result
            assert snap.n_target == window_target(snap.network_difficulty, factor, fixed)
        # trimming keeps the window plus the margin, and no more than one entry beyond it
        assert math.isclose(model.total, math.fsum(e.total for e in model.entries), rel_tol=1e-9, abs_tol=1e-9)
        keep = keep_target(model.nd.value, factor, fixed, margin)
        if len(model.entries) > 1 and len(model.entries) < WindowModel.MAX_TRIM:
            assert model.total - model.entries[0].total < keep
        # entries are contiguous, in order, and never straddle a block share
        for e1, e2 in zip(model.entries, model.entries[1:]):
            assert e2.first == e1.last + 1
        for e in model.entries:
            assert e.last // m == e.first // m
            inside = [s for s in log if e.first <= s.seq < e.last]
            assert not any(s.is_block for s in inside)


@given(e=st.builds(Entry, first=st.integers(0, 2**50), last=st.integers(0, 2**50), total=any_diff, closed=st.booleans(),
                   time=st.floats(0, 2e9), amounts=st.dictionaries(st.sampled_from(ADDRS), any_diff)))
def test_entry_encoding_round_trips_exactly(e):
    assert Entry.decode(e.encode()) == e


def test_entries_align_and_split_at_block_shares():
    rows = [(s, "a", 1.0, 0.0, s == 5) for s in range(3, 12)]
    entries = build_entries(rows, entry_shares=4)
    assert [(e.first, e.last, e.closed) for e in entries] == [(3, 3, False), (4, 5, True), (6, 7, False), (8, 11, False)]
    with pytest.raises(ValueError):
        add_share(entries, 13, "a", 1.0, 0.0, False, 4)
    assert align_down(4097) == 4096


def test_straddling_share_is_counted_partially():
    shares = logged([("a", 3.0, False), ("b", 3.0, False), ("c", 3.0, True)])
    res = recompute_snapshot(shares, block_seq=3, n_target=7.0, entry_shares=1)
    assert res.amounts == {"a": 1.0, "b": 3.0, "c": 3.0}
    assert (res.first_seq, res.partial, res.total, res.complete) == (1, 1.0, 7.0, True)
    # fewer shares than N: everything, marked incomplete
    res = recompute_snapshot(shares, block_seq=3, n_target=100.0)
    assert (res.total, res.complete, res.first_seq, res.partial) == (9.0, False, 1, None)
    # floor: the store no longer held share 1
    res = recompute_snapshot(shares, block_seq=3, n_target=100.0, floor_seq=2)
    assert res.amounts == {"b": 3.0, "c": 3.0}


def test_recompute_refuses_gaps_and_short_logs():
    shares = logged([("a", 1.0, False)] * 3 + [("a", 1.0, True)])
    with pytest.raises(ValueError):
        recompute_snapshot(shares[:2] + shares[3:], block_seq=4, n_target=2.0)
    with pytest.raises(ValueError):
        recompute_snapshot(shares[:3], block_seq=4, n_target=2.0)


def test_window_target_and_nd_reference():
    assert window_target(1000.0, 2.0, 0.0) == 2000.0
    assert window_target(1000.0, 2.0, 500.0) == 500.0
    ref = NdReference()
    ref.see(10, 100.0)
    ref.see(10, 1.0)  # testnet's 20-minute rule: a min-difficulty template
    assert ref.value == 100.0
    ref.see(11, 1.0)
    assert ref.value == 100.0  # yesterday's still counts
    ref.see(12, 1.0)
    assert ref.value == 1.0
    ref.see(20, 50.0)  # days without shares: the old reference is gone
    assert (ref.prev, ref.value) == (0.0, 50.0)


def test_trim_count_never_drops_below_keep_or_the_last_entry():
    assert trim_count([5.0, 5.0, 5.0], 15.0, 9.0, 3) == (1, 10.0)
    assert trim_count([5.0, 5.0, 5.0], 15.0, 0.0, 3) == (2, 5.0)
    assert trim_count([5.0], 5.0, 0.0, 1) == (0, 5.0)


def test_walk_continues_past_a_whole_straddling_entry_left_short_by_rounding():
    # Summed forwards the newest entry exceeds N; share by share, newest
    # first, it falls short of N by rounding: the walk goes on into the
    # older entry for the remainder, exactly as the Lua does.
    ds = [0.2, 0.2, 0.2, 0.3]
    fwd = 0.0
    for d in ds:
        fwd += d
    need = 0.9
    assert fwd > need and ((0.3 + 0.2) + 0.2) + 0.2 < need
    e_new = Entry(3, 6, fwd, True, 0.0, {"a": fwd})
    e_old = Entry(1, 2, 2.0, False, 0.0, {"b": 2.0})
    rows = {3: [(3 + i, "a", d) for i, d in enumerate(ds)], 1: [(1, "b", 1.0), (2, "b", 1.0)]}
    res = walk([e_new, e_old], need, lambda e: rows[e.first])
    assert res.total == need and res.complete
    assert res.first_seq == 2 and 0 < res.partial < 1e-15
    assert set(res.amounts) == {"a", "b"}
