"""The recorded ckpool/cpuminer session (tests/vectors)."""
from __future__ import annotations

import json
from functools import lru_cache

from tests import vectors

SOLVING_JOB = "6b07795a0000001a"


@lru_cache(maxsize=None)
def ckpool_session() -> dict:
    return vectors.ckpool()


def lines(direction: str) -> list[dict]:
    return [json.loads(e["line"]) for e in ckpool_session()["session"] if e["dir"] == direction]


def subscribe_result() -> list:
    return next(m for m in lines("s2c") if m.get("id") == 1)["result"]


def notify(job_id: str = SOLVING_JOB) -> dict:
    return next(m for m in lines("s2c") if m.get("method") == "mining.notify" and m["params"][0] == job_id)


def recorded_submit() -> dict:
    return next(m for m in lines("c2s") if m.get("method") == "mining.submit")


def accepted_block() -> dict:
    return ckpool_session()["accepted_block"]
