"""``build_payload`` looks each address, worker and job id up once per batch
and formats repeated difficulties once: the payload must be what cleaning
and formatting every share on its own gives, including for names that need
cleaning, names that only collide once cleaned, and difficulties that
compare equal but print differently."""
from __future__ import annotations

import math

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcoop.pool.accounting.keys import SERIES, Keys
from hashcoop.pool.accounting.model import Batch, clean_token
from hashcoop.pool.accounting.ops import Settings, build_payload
from hashcoop.pool.core.events import ShareAccepted
from hashcoop.pool.core.window import fmt

T0 = 1_700_000_000.0
names = st.sampled_from(["bcrt1qa", "bcrt1qb", "w b", "w_b", "x:y", "x|y", "", "é", "a" * 200])
diffs = st.sampled_from([1e-12, 0.5, 1.0, 0.0, -0.0, 3.3e-8])
hashes = st.sampled_from(["ab" * 32, "cd" * 32, "h h", "", "ab:c", "z" * 200, "0f" * 32])


@st.composite
def shares(draw):
    return ShareAccepted(
        time=T0 + draw(st.floats(0, 900)), address=draw(names), worker=draw(names), difficulty=draw(diffs),
        share_difficulty=draw(st.sampled_from([0.0, 2.5, math.inf, 1e300])), job_id=draw(st.sampled_from(["0000000a", "j b", ""])),
        height=7, hash=draw(hashes), network_difficulty=draw(st.sampled_from([0.5, 2.0])), is_block=draw(st.booleans()))


def expected_lines_and_pool(batch):
    """Each share cleaned and formatted on its own, and the pool aggregate
    summed share by share, in batch order."""
    addrs, workers, lines = {}, {}, []
    diff, count, buckets = 0.0, 0, {}
    for s in batch.shares:
        a, w = clean_token(s.address), clean_token(s.worker, 64)
        ai = addrs.setdefault(a, len(addrs))
        workers.setdefault((ai, w), len(workers))
        sd = s.share_difficulty if math.isfinite(s.share_difficulty) else 1.7976931348623157e308
        lines.append(f"{ai} {w} {fmt(s.difficulty)} {fmt(sd)} {clean_token(s.job_id)} {clean_token(s.hash)} "
                     f"{s.time:.3f} {1 if s.is_block else 0}")
        diff += s.difficulty
        count += 1
        for res, (size, _keep) in SERIES.items():
            k = (res, int(s.time // size))
            buckets[k] = buckets.get(k, 0.0) + s.difficulty
    return list(addrs), [w for (_ai, w) in workers], lines, diff, count, buckets


@settings(max_examples=200, deadline=None)
@given(st.lists(shares(), max_size=25))
def test_payload_equals_share_by_share_cleaning(rows):
    batch = Batch("run", 1, T0 + 1000, rows, [], [], [])
    keys = Keys("t:")
    p = orjson.loads(build_payload(batch, keys, Settings()))
    addrs, workers, lines, diff, count, buckets = expected_lines_and_pool(batch)
    assert p["a"] == addrs and p["w"] == workers
    assert p["ls"] == "\n".join(lines)
    pool_ops = [op for op in p["ops"] if op[1] == keys.pool]
    if rows:
        assert ["hincr", keys.pool, "acc", count] in pool_ops
        addf = next(op for op in pool_ops if op[0] == "addf" and op[2] == "diff")
        assert addf[3] == diff or (math.isnan(diff) and addf[3] is None)
    ten = {int(op[2]): op[3] for op in p["ops"] if op[0] == "bucket" and op[1] == keys.series("10s", "pool")}
    assert ten == {idx: d for (res, idx), d in buckets.items() if res == "10s"}
    blocks = [s for s in rows if s.is_block]
    assert [b[0] for b in p["bk"]] == [clean_token(s.hash) for s in blocks]
    assert [b[4] for b in p["bk"]] == [clean_token(s.job_id) for s in blocks]


def test_zero_and_negative_zero_keep_their_own_text():
    rows = [ShareAccepted(time=T0, address="a", worker="w", difficulty=d, share_difficulty=1.0, job_id="j", height=1,
                          hash="ab" * 32, network_difficulty=1.0) for d in (0.0, -0.0, 0.0)]
    p = orjson.loads(build_payload(Batch("r", 1, T0, rows, [], [], []), Keys("t:"), Settings()))
    assert [line.split()[2] for line in p["ls"].split("\n")] == ["0.0", "-0.0", "0.0"]


def test_chunked_json_is_what_one_call_writes():
    from hashcoop.pool.accounting.ops import _CHUNK, _dumps_list

    for n in (0, 1, _CHUNK - 1, _CHUNK, _CHUNK + 1, 3 * _CHUNK + 7):
        items = [["op", f"k{i}", i, i / 7, math.inf if i % 5 == 0 else -0.0, None, [i, "x"]] for i in range(n)]
        assert orjson.dumps({"ops": _dumps_list(items)}) == orjson.dumps({"ops": items})


def test_payload_for_many_workers_is_unchanged_by_name_caching():
    keys = Keys("t:")
    rows = [ShareAccepted(time=T0 + i, address=f"bcrt1q{i % 3}", worker=f"w{i % 700}", difficulty=1.0, share_difficulty=2.0,
                          job_id="j", height=1, hash=f"{i:064x}", network_difficulty=1.0) for i in range(1400)]
    first = build_payload(Batch("r", 1, T0 + 2000, rows, [], [], []), keys, Settings())
    again = build_payload(Batch("r", 1, T0 + 2000, rows, [], [], []), keys, Settings())
    other = build_payload(Batch("r", 1, T0 + 2000, rows, [], [], []), Keys("u:"), Settings())
    assert first == again
    ops = orjson.loads(first)["ops"]
    w5 = [op for op in ops if op[1] == keys.worker("bcrt1q2", "w5")]
    assert [op[0] for op in w5] == ["hincr", "addf", "addf", "max", "setnx", "max", "exp"]  # diff, exp_blocks
    assert w5[2][2:] == ["exp_blocks", 1.0]  # its one share: difficulty 1 at network difficulty 1
    assert ["zgt", keys.workers, T0 + 5, "bcrt1q2:w5"] in ops and ["zgt", keys.addr_workers("bcrt1q2"), T0 + 5, "w5"] in ops
    assert b'"t:worker:' not in other and b'"u:worker:bcrt1q2:w5"' in other
