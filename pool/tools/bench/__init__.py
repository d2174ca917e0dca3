"""``hashcoop bench``: a benchmark suite that drives simulated miners over
loopback against a real pool process, the stand-in node and Redis
(``hashcoop.pool.tools.bench.cli``). It is a command, not a timed test; its latest figures
live in BENCHMARKS.md."""
from __future__ import annotations


def add_parser(subparsers):
    # imported here: every `python -m hashcoop.pool.tools.bench.<module>` child
    # imports this package, and only `hashcoop bench` needs the CLI
    from hashcoop.pool.tools.bench.cli import add_parser as add

    return add(subparsers)
