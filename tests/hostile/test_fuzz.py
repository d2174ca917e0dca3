"""Fuzzing the line -> JSON -> dispatch path (tests/hostile/fuzzing.py), a
small budget of the harness ``python -m ops.reliability fuzz`` runs a
million times: no exception escapes to Twisted, every line is answered or
the connection closed, nothing of a closed connection stays behind, and
replaying the inputs leaves the memory the server's code holds flat."""
from __future__ import annotations

import gc
import os
import tracemalloc

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.hostile.fuzzing import SEED_OBJECTS, SEEDS, FuzzTarget, memory_in, streams

pytestmark = pytest.mark.hostile
BUDGET = int(os.environ.get("HASHCOOP_FUZZ_EXAMPLES", "3000"))


def test_seeds_are_the_real_traffic():
    # every client line of the recorded ckpool/cpuminer session and of the seven firmware fixtures
    assert len(SEEDS) >= 40 and len(SEED_OBJECTS) >= 40
    assert any(b"cpuminer/2.5.1" in s for s in SEEDS) and any(b"bitaxe/" in s for s in SEEDS)
    assert any(b"NiceHash/1.0.0" in s for s in SEEDS) and any(b'"xnsub"' in s for s in SEEDS)


def test_fuzz_stratum_lines():
    target = FuzzTarget()
    inputs = []

    @settings(max_examples=BUDGET, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate, Phase.shrink], derandomize=True)
    @given(streams())
    def run(stream):
        target.run(*stream)
        inputs.append(stream)

    try:
        run()
        assert target.leaks() == []
        # the same inputs again, three times, memory traced: the first pass
        # fills what is bounded (jobs, caches, the sink's recent events), the
        # others must leave it where it was
        tracemalloc.start()
        marks = []
        for _ in range(3):
            for stream in inputs:
                target.run(*stream)
            gc.collect()
            marks.append(memory_in())
        tracemalloc.stop()
    finally:
        target.close()
    assert target.leaks() == []
    assert target.n >= 4 * BUDGET
    assert marks[2] <= marks[1] * 1.05 + 16 * 1024, marks
    print(f"\nfuzz: {BUDGET} generated inputs, {target.n} connections in all, {target.replies} replies, {target.dropped} "
          f"closed by the server; memory held by pool/stratum code after each replay {[round(m / 1024) for m in marks]} KiB")
