"""``hashcoop bench``: a benchmark suite that drives simulated miners over
loopback against a real pool process, the stand-in node and Redis
(``pool.bench.cli``). It is a command, not a timed test; its latest figures
live in BENCHMARKS.md."""
from __future__ import annotations


def add_parser(subparsers):
    from .cli import add_parser as add

    return add(subparsers)
