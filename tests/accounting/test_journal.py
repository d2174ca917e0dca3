"""Journal record encoding (pure) and segment files."""
from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcoop.pool.accounting.journal import Journal, JournalError, decode_batch, encode_batch
from hashcoop.pool.accounting.model import Batch, Collector, RejectCount
from hashcoop.pool.core.events import BlockFound, BlockStatus, ShareAccepted, ShareRejected

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)

share = st.builds(
    ShareAccepted, time=finite, address=text, worker=text, difficulty=finite, share_difficulty=finite | st.just(float("inf")),
    job_id=text, height=st.integers(0, 2**31), hash=text, network_difficulty=finite, is_block=st.booleans())
reject = st.builds(RejectCount, address=st.none() | text, worker=st.none() | text, reason=text, count=st.integers(1, 10**6),
                   difficulty=finite, last=finite)
block = st.builds(BlockFound, time=finite, height=st.integers(0, 2**31), hash=text, prevhash=text, address=text, worker=text,
                  reward=st.integers(0, 21 * 10**14), share_difficulty=finite, network_difficulty=finite, job_id=text,
                  block_hex=st.just(""))
status = st.builds(BlockStatus, time=finite, height=st.integers(0, 2**31), hash=text, status=text,
                   verdicts=st.dictionaries(text, st.none() | text, max_size=3), reason=st.none() | text)
batches = st.builds(Batch, run=text, counter=st.integers(1, 2**53), created=finite, shares=st.lists(share, max_size=5),
                    rejects=st.lists(reject, max_size=3), blocks=st.lists(block, max_size=2), statuses=st.lists(status, max_size=2))


def strip_transport(s: ShareAccepted) -> ShareAccepted:
    from dataclasses import replace

    return replace(s, port=0, ip="")


@settings(max_examples=300)
@given(b=batches)
def test_batch_encoding_round_trips(b):
    line = encode_batch(b)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = decode_batch(line)
    assert back == Batch(b.run, b.counter, b.created, [strip_transport(s) for s in b.shares], b.rejects, b.blocks, b.statuses)


@given(b=batches, data=st.data())
def test_any_corruption_or_truncation_is_detected(b, data):
    line = encode_batch(b)
    cut = data.draw(st.integers(0, len(line) - 2))
    with pytest.raises(JournalError):
        decode_batch(line[:cut])
    pos = data.draw(st.integers(9, len(line) - 2))
    flipped = line[:pos] + bytes([line[pos] ^ 0x01]) + line[pos + 1:]
    with pytest.raises(JournalError):
        decode_batch(flipped)


def ev(i, **kw):
    d = dict(time=1000.0 + i, address="bcrt1qa", worker="w1", difficulty=0.5, share_difficulty=1.5, job_id="00000001",
             height=200, hash=f"{i:064x}", network_difficulty=1.0, port=3333, ip="10.0.0.1")
    d.update(kw)
    return ShareAccepted(**d)


def test_collector_aggregates_rejects_and_numbers_batches():
    c = Collector()
    assert c.empty()
    c.add_share(ev(1))
    for i in range(5):
        c.add_reject(ShareRejected(time=10.0 + i, reason="high-hash", address="a", worker="w", difficulty=2.0))
    c.add_reject(ShareRejected(time=3.0, reason="unauthorized"))
    b = c.take("run", 7, 99.0)
    assert c.empty() and len(b) == 1 and b.id == "run:7"
    assert sorted((r.reason, r.count, r.difficulty, r.last) for r in b.rejects) == [("high-hash", 5, 10.0, 14.0), ("unauthorized", 1, 0.0, 3.0)]


def batch(n, k=3):
    return Batch("r", n, 1000.0 + n, [ev(n * 10 + i) for i in range(k)])


def test_segments_are_deleted_once_applied_and_recovered_after_a_crash(tmp_path):
    j = Journal(tmp_path, segment_bytes=1000)  # about 3 batches
    refs = [j.append(batch(n)) for n in range(1, 9)]
    assert len(j.segments()) >= 3  # rotated by size
    assert j.read(refs[4]).counter == 5
    for r in refs[:5]:
        j.applied(r)
    remaining = {r.segment for r in refs[5:]}
    assert set(j.segments()) == remaining  # fully applied segments are gone
    with pytest.raises(RuntimeError, match="in use"):
        Journal(tmp_path)
    # crash: the process dies without closing; the lock goes with it
    j._fh.close()
    j._lock.close()
    j2 = Journal(tmp_path)
    got = j2.recover()
    # whole segments come back, applied batches in them included (Redis
    # skips those by batch id); the unapplied ones are all there
    assert [b.counter for b, _ in got] == [n for n, r in enumerate(refs, 1) if r.segment in remaining]
    assert {6, 7, 8} <= {b.counter for b, _ in got}
    for _, ref in got:
        j2.applied(ref)
    j2.close()
    assert j2.segments() == []


def test_recover_skips_a_torn_tail_and_a_corrupt_record(tmp_path, caplog):
    j = Journal(tmp_path)
    for n in (1, 2, 3):
        j.append(batch(n))
    j._fh.close()
    j._lock.close()
    path = j.path(j.current)
    data = bytearray(path.read_bytes())
    first_end = data.index(b"\n")
    data[first_end - 5] ^= 0x20  # corrupt record 1
    data += encode_batch(batch(4))[:40]  # torn record 4
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="hashcoop.accounting"):
        got = Journal(tmp_path).recover()
    assert [b.counter for b, _ in got] == [2, 3]
    assert "checksum" in caplog.text and "torn" in caplog.text


def test_close_keeps_segments_with_unapplied_batches(tmp_path):
    j = Journal(tmp_path)
    r1 = j.append(batch(1))
    j.append(batch(2))
    j.applied(r1)
    j.close()
    j = Journal(tmp_path)
    # the whole segment comes back: batch 1 is replayed too, and Redis
    # recognises it by its id (see test_redis_apply)
    assert [b.counter for b, _ in j.recover()] == [1, 2]
    j.close()
    j = Journal(tmp_path)
    got = j.recover()
    for _, ref in got:
        j.applied(ref)
    j.close()
    assert Journal(tmp_path).segments() == []


def test_spill_keeps_the_limit_but_never_the_next_two_batches():
    """Beyond max_buffered shares the newest batches wait in the journal
    only; the oldest two stay in memory whatever their size, so a busy
    pool's big batches are not read back from the file."""
    from hashcoop.pool.accounting.model import Batch
    from hashcoop.pool.accounting.writer import Item, spill

    def items(*sizes):
        out = []
        for n, k in enumerate(sizes):
            it = Item(Batch("r", n + 1, 0.0, shares=[object()] * k), ref=("seg", n))
            out.append(it)
        return out

    q = items(500, 500, 500, 500, 500)
    assert spill(q, 1_200) == 1_500  # 2,500 in memory: the three newest go
    assert [i.batch is not None for i in q] == [True, True, False, False, False]
    big = items(11_000, 11_000, 11_000)
    assert spill(big, 5_000) == 11_000  # only the third: the next two to write stay
    assert [i.batch is not None for i in big] == [True, True, False]
    assert spill(items(11_000, 11_000), 5_000) == 0
    under = items(100, 100)
    assert spill(under, 5_000) == 0
    journal_less = items(500, 500, 500)
    journal_less[2].ref = None  # not in the journal: nothing to read it back from
    assert spill(journal_less, 100) == 0 and journal_less[2].batch is not None
