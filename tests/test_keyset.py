"""KeySet: the duplicate-key set of a job (pool/core/keyset.py)."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcoop.pool.core import keyset
from hashcoop.pool.core.keyset import KeySet

U64 = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=300)
@given(st.lists(U64, max_size=300))
def test_behaves_like_a_set(keys):
    ks, ref = KeySet(), set()
    for k in keys:
        assert ks.add(k) == (k not in ref)
        ref.add(k)
        assert len(ks) == len(ref)
    for k in keys:
        assert k in ks
    for k in ref:
        assert not ks.add(k)
    assert len(ks) == len(ref)


def test_key_zero_and_max():
    ks = KeySet()
    assert 0 not in ks and ks.add(0) and 0 in ks and not ks.add(0)
    top = 2**64 - 1
    assert top not in ks and ks.add(top) and top in ks and not ks.add(top)
    assert len(ks) == 2
    for bad in (2**64, -1):
        with pytest.raises(ValueError):
            ks.add(bad)
    assert len(ks) == 2 and 2**64 not in ks


def test_keys_sharing_low_bits_probe_past_each_other():
    # every key lands on the same first slot of every table
    ks = KeySet()
    keys = [(n << 40) | 5 for n in range(1, 200)]
    for k in keys:
        assert ks.add(k)
    assert all(k in ks for k in keys)
    assert (3 << 40 | 6) not in ks and (500 << 40 | 5) not in ks
    assert not ks.add(keys[100])


def test_tables_grow_at_half_full_and_stop_doubling(monkeypatch):
    monkeypatch.setattr(keyset, "FIRST_SLOTS", 8)
    monkeypatch.setattr(keyset, "MAX_SLOTS", 32)
    ks = KeySet()
    rng = random.Random(1)
    keys = set()
    while len(keys) < 200:
        keys.add(rng.getrandbits(64) | 1)
    for k in keys:
        ks.add(k)
        # no table is ever more than half full, so every probe ends
        for t, _ in ks._tables:
            assert sum(1 for v in t if v) * 2 <= len(t)
    sizes = [len(t) for t, _ in ks._tables]
    assert sizes[:3] == [8, 16, 32] and set(sizes[3:]) == {32}
    assert ks.nbytes() == 8 * sum(sizes)
    assert len(ks) == 200 and all(k in ks for k in keys)


def test_a_hundred_thousand_keys_cost_under_40_bytes_each():
    rng = random.Random(2)
    ks = KeySet()
    for _ in range(100_000):
        ks.add(rng.getrandbits(64))
    assert len(ks) == 100_000
    assert ks.nbytes() / len(ks) < 40
