"""Hashrate math and time-series buckets, pure."""
from __future__ import annotations

import math
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from hashcoop.pool.accounting.hashrate import (
    WINDOWS,
    bucket_index,
    hashrate,
    resolution_for,
    series,
    unpack_days,
    window_hashrate,
)
from hashcoop.pool.accounting.keys import SERIES


def test_known_values():
    assert hashrate(1.0, 1.0) == 2**32
    assert hashrate(600.0, 600.0) == 2**32  # difficulty 1 per second: 4.29 GH/s
    assert hashrate(5.0, 0) == 0.0
    assert bucket_index(1_700_000_123.4, 300) == 1_700_000_123 // 300
    assert [resolution_for(w) for w in WINDOWS.values()] == ["10s", "10s", "10s", "5m"]


@settings(max_examples=200)
@given(rate=st.floats(1e-9, 1e6), start=st.floats(1.6e9, 1.8e9), name=st.sampled_from(list(WINDOWS)),
       period=st.floats(0.5, 20.0))
def test_steady_shares_give_their_rate_back(rate, start, name, period):
    """A worker sending difficulty ``rate*period`` every ``period`` seconds
    shows ``rate * 2^32`` H/s, within the granularity of buckets and shares."""
    window = WINDOWS[name]
    size = SERIES[resolution_for(window)][0]
    buckets: dict[int, float] = {}
    t = start
    end = start + window * 2 + 3 * size
    while t < end:
        k = bucket_index(t, size)
        buckets[k] = buckets.get(k, 0.0) + rate * period
        t += period
    hr = window_hashrate(buckets, size, end, window)
    expect = rate * 2**32
    slack = (period + size) / window  # one share and one bucket at either edge
    assert abs(hr - expect) <= expect * (2 * slack + 1e-9)


def test_old_buckets_do_not_count_and_a_stopped_worker_drops_to_zero():
    size = 10
    buckets = {100: 5.0, 200: 7.0}
    assert window_hashrate(buckets, size, 2005.0, 60) == hashrate(7.0, 2005.0 - 1950.0)
    assert window_hashrate(buckets, size, 3000.0, 60) == 0.0


def test_series_lists_complete_buckets_with_zeros():
    s = series({10: 3.0, 12: 6.0}, 300, since=3000, now=3900 + 10)
    assert s == [(3000, hashrate(3.0, 300)), (3300, 0.0), (3600, hashrate(6.0, 300))]
    assert all(math.isfinite(v) for _, v in s)


def test_packed_day_slots():
    day = 19700
    raw = bytearray(8 * 288)
    raw[8 * 5:8 * 6] = struct.pack("<d", 2.5)
    raw[8 * 287:] = struct.pack("<d", 1e-9)
    short = struct.pack("<d", 0.0) + struct.pack("<d", 3.0)  # a day written only up to slot 1
    assert unpack_days([(day, bytes(raw)), (day + 1, short), (day + 2, None)]) == {
        day * 288 + 5: 2.5, day * 288 + 287: 1e-9, (day + 1) * 288 + 1: 3.0}
