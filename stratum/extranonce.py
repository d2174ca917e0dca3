"""Extranonce1 allocation: unique per live session.

extranonce1 is 4 bytes: the process's instance id (config
``pool.instance_id``, one per stratum process sharing a Redis) in the first
byte, then a 24-bit counter. A counter value still held by a live session is
skipped when the counter wraps, so live sessions never collide within a
process, and the prefix keeps processes apart.
"""
from __future__ import annotations

import random

SIZE = 4
_COUNTER_BITS = 24
_COUNTER_MASK = (1 << _COUNTER_BITS) - 1


class ExtranonceExhausted(RuntimeError):
    pass


class Extranonce1Allocator:
    def __init__(self, instance_id: int, *, start: int | None = None):
        if not 0 <= instance_id <= 0xFF:
            raise ValueError("instance_id must fit one byte")
        self.prefix = instance_id << _COUNTER_BITS
        self.counter = random.randrange(_COUNTER_MASK + 1) if start is None else start & _COUNTER_MASK
        self.live: set[int] = set()

    def allocate(self) -> bytes:
        if len(self.live) > _COUNTER_MASK:
            raise ExtranonceExhausted("every extranonce1 of this instance is in use")
        while True:
            self.counter = (self.counter + 1) & _COUNTER_MASK
            value = self.prefix | self.counter
            if value not in self.live:
                self.live.add(value)
                return value.to_bytes(SIZE, "big")

    def release(self, en1: bytes) -> None:
        self.live.discard(int.from_bytes(en1, "big"))
