"""Ground truth recorded from real software, kept in the repository so that
a fresh clone's tests read nothing outside it (README.md in this folder
says where each file came from).

    from tests.vectors import core, ckpool, DIR
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

DIR = Path(__file__).resolve().parent


@cache
def _load(name: str) -> str:
    return (DIR / name).read_text()


def core() -> dict:
    """bitcoind-regtest.json: Bitcoin Core v31.99's RPC answers and submitblock verdicts (a fresh copy)."""
    return json.loads(_load("bitcoind-regtest.json"))


def ckpool() -> dict:
    """ckpool-cpuminer-regtest.json: one ckpool 0.9.9 / cpuminer 2.5.1 Stratum session up to a block (a fresh copy)."""
    return json.loads(_load("ckpool-cpuminer-regtest.json"))
