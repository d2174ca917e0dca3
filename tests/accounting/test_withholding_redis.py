"""Expected blocks and blocks found accumulate in Redis from real batches,
share by share at each share's network difficulty (hashcoop.pool.core.withholding)."""
from __future__ import annotations

import math

import pytest

from hashcoop.pool.accounting.model import Batch
from hashcoop.pool.accounting.read import AccountingReader
from hashcoop.pool.core.withholding import Tally, suspects
from tests.accounting.test_redis_apply import ADDRS, T0, Applier, share


def test_expected_blocks_and_blocks_accumulate_per_share_across_batches(redis_proc):
    r = redis_proc.client()
    apply = Applier(r)
    tallies: dict[tuple[str, str], Tally] = {}
    seq = 0
    # three batches; the network difficulty changes inside the second
    plan = [
        [(ADDRS[0], "rig", 0.5, 100.0, False)] * 40 + [(ADDRS[1], "hider", 2.0, 100.0, False)] * 30,
        [(ADDRS[0], "rig", 0.5, 100.0, True)] + [(ADDRS[1], "hider", 2.0, 25.0, False)] * 60
        + [(ADDRS[0], "rig", 0.5, 25.0, False)] * 10 + [(ADDRS[0], "big", 50.0, 25.0, True)] * 3,
        [(ADDRS[1], "hider", 4.0, 25.0, False)] * 20 + [(ADDRS[1], "other", 1e-8, 4.6e-10, True)],
    ]
    for n, rows in enumerate(plan, start=1):
        evs = []
        for a, w, d, nd, blk in rows:
            seq += 1
            evs.append(share(seq, a, d, T0 + seq, nd=nd, block=blk, worker=w))
            tallies.setdefault((a, w), Tally()).share(d, nd, blk)
        apply(Batch("run", n, T0 + seq, evs))
    reader = AccountingReader(r, "t:", clock=lambda: T0 + seq)
    workers, addresses = reader.expected_blocks(chunk=2)  # several round trips
    got = {(a, w): (e, b) for a, w, e, b in workers}
    assert set(got) == set(tallies)
    for key, t in tallies.items():
        assert got[key][0] == pytest.approx(t.expected, rel=1e-15), key
        assert got[key][1] == t.blocks, key
    # 30 x 0.02 + 60 x 0.08 + 20 x 0.16 = 8.6 expected, none found: flagged
    assert got[(ADDRS[1], "hider")] == (pytest.approx(8.6), 0)
    # a share harder than the network counts one expected block, as it is always a block
    assert got[(ADDRS[0], "big")] == (pytest.approx(3.0), 3)
    assert got[(ADDRS[1], "other")] == (pytest.approx(1.0), 1)
    by_addr = {a: (e, b) for a, _, e, b in addresses}
    assert by_addr[ADDRS[1]] == (pytest.approx(9.6), 1)
    assert by_addr[ADDRS[0]][1] == 4
    flagged = suspects(workers)
    assert [(v.address, v.worker) for v in flagged] == [(ADDRS[1], "hider")]
    assert flagged[0].p_value == pytest.approx(math.exp(-8.6))
    # the pool hash keeps the pool-wide figures too
    pool = {k.decode() if isinstance(k, bytes) else k: v for k, v in r.hgetall("t:pool").items()}
    assert int(pool["blocks"]) == 5
    assert float(pool["exp_blocks"]) == pytest.approx(sum(t.expected for t in tallies.values()))
