"""A set of 64-bit keys held in flat tables, with no Python object per key.

A job remembers the key of every share it accepted (duplicate detection)
until the tip changes: at 2,000 shares/s that is 100,000 keys or more,
added one by one and dropped all at once. As a ``set`` of ``int`` each key
is a 48-byte object in CPython's small-object heap plus a slot in the
set's table; the objects end up spread over memory arenas that other,
long-lived objects allocated meanwhile keep alive, so every long gap
between blocks raised the process's resident size for good (the soak in
RELIABILITY.md saw it). Here the keys live in a few flat tables of
unsigned 64-bit integers (open addressing, linear probing, at most half
full): about 16 to 32 bytes a key, one allocation per table, all of it
returned when the job is dropped.

Each table is its own anonymous memory map (``mmap``), not a block of the
C heap: a table freed in the middle of glibc's heap left a hole that
stayed resident (the soak saw the heap grow from 14 to 18.6 MB, 7 MB of it
free, the first time a table was freed below a newer allocation), while a
map is handed back to the kernel whole when the job goes, and its pages
count only once a key has landed on them.

Tables are never resized (a rehash would stall the reactor): when the
newest one is half full a new one, twice as large up to ``MAX_SLOTS``, is
started, and a lookup probes each table. Keys are expected to be uniformly
distributed (they are bits of a header hash): the probe starts at the
key's low bits.
"""
from __future__ import annotations

import mmap

FIRST_SLOTS = 1 << 12  # 32 KiB
MAX_SLOTS = 1 << 20  # 8 MiB, 524,288 keys


class KeySet:
    __slots__ = ("_tables", "_fill", "_room", "_len", "_zero")

    def __init__(self) -> None:
        self._tables: list[tuple[memoryview, int]] = []  # (table, its size - 1), oldest first
        self._fill = 0  # keys in the newest table
        self._room = 0  # keys the newest table takes before the next one is started
        self._len = 0
        self._zero = False  # 0 marks an empty slot, so key 0 is kept aside

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: int) -> bool:
        if not key:
            return self._zero
        for t, m in self._tables:
            i = key & m
            v = t[i]
            while v:
                if v == key:
                    return True
                i = (i + 1) & m
                v = t[i]
        return False

    def add(self, key: int) -> bool:
        """Add ``key`` (0 <= key < 2**64). Returns False if it was already
        there, True if it was added."""
        if not key:
            if self._zero:
                return False
            self._zero = True
            self._len += 1
            return True
        # the probe of __contains__, inlined: this runs for every accepted
        # share, and a shared helper cost 0.2 us a key (about 10%)
        t = None
        i = m = 0
        for t, m in self._tables:
            i = key & m
            v = t[i]
            while v:
                if v == key:
                    return False
                i = (i + 1) & m
                v = t[i]
        # t, i: the newest table and the empty slot the probe ended on
        if t is None:
            m = FIRST_SLOTS - 1
            t = self._start(FIRST_SLOTS)
            i = key & m
        t[i] = key  # ValueError for a key outside 0 .. 2**64 - 1, before anything is counted
        self._len += 1
        self._fill += 1
        if self._fill >= self._room:
            self._start(min(2 * (m + 1), MAX_SLOTS))
        return True

    def _start(self, slots: int) -> memoryview:
        # zero-filled by the kernel; unmapped when the view and the map are dropped
        t = memoryview(mmap.mmap(-1, 8 * slots)).cast("Q")
        self._tables.append((t, slots - 1))
        self._fill = 0
        self._room = slots // 2
        return t

    def nbytes(self) -> int:
        """Memory held by the tables."""
        return sum(8 * len(t) for t, _ in self._tables)
