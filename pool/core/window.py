"""The PPLNS window: entries, trimming and snapshot arithmetic. Pure.

The window is counted in credited share difficulty and never reset at a
block. Its length for a block is ``N = factor x network difficulty`` of the
block share (or a fixed difficulty total). Shares are ordered by their
global sequence number.

Entries. Shares are aggregated into *entries*: consecutive shares whose
sequence numbers fall in the same aligned run of ``ENTRY_SHARES`` and that
are not separated by a block share (a block share ends its entry). An entry
holds its sequence range, its total and a per-address sum, all summed in
sequence order. Entry boundaries depend only on the sequence numbers and
the block shares, never on batching or on which process wrote what, so the
entries can be rebuilt from the share log alone.

Snapshot (the canonical definition; the Lua script ``scripts/apply.lua``
does exactly this and the tests hold them equal bit for bit): walk the entries
from the one ending at the block share back in time. An entry that fits in
what is left of ``N`` is counted whole; the first one that does not is
walked share by share, newest first, and the share straddling the window
start is counted partially, so the total is exactly ``N`` (or everything
there is, if the window holds less). The result differs from a share by
share walk only by floating-point rounding order.

``WindowModel`` is the executable specification of the Redis window: the
Lua script keeps the same state and the tests compare the two.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

ENTRY_SHARES = 1024  # a constant: changing it would change past windows' arithmetic


def fmt(x: float) -> str:
    """Exact, round-trippable text for a float (what Lua writes as %.17g)."""
    return repr(float(x))


@dataclass(slots=True)
class Entry:
    first: int
    last: int
    total: float = 0.0
    closed: bool = False  # ended by a block share
    time: float = 0.0  # time of the newest share
    amounts: dict[str, float] = field(default_factory=dict)

    def encode(self) -> str:
        parts = [str(self.first), str(self.last), fmt(self.total), "1" if self.closed else "0", fmt(self.time)]
        for a, d in self.amounts.items():
            parts.append(a)
            parts.append(fmt(d))
        return " ".join(parts)

    @classmethod
    def decode(cls, s: str | bytes) -> "Entry":
        if isinstance(s, bytes):
            s = s.decode()
        f = s.split(" ")
        amounts = {f[i]: float(f[i + 1]) for i in range(5, len(f) - 1, 2)}
        return cls(int(f[0]), int(f[1]), float(f[2]), f[3] == "1", float(f[4]), amounts)


def add_share(entries: list[Entry], seq: int, address: str, difficulty: float, time: float, is_block: bool,
              entry_shares: int = ENTRY_SHARES) -> Entry:
    """Append one share (in sequence order) to a list of entries, oldest
    first; returns the entry it went into."""
    tail = entries[-1] if entries else None
    if tail is not None and seq != tail.last + 1:
        raise ValueError(f"share {seq} does not follow {tail.last}")
    if tail is None or tail.closed or tail.first // entry_shares != seq // entry_shares:
        tail = Entry(seq, seq, 0.0, False, time, {})
        entries.append(tail)
    tail.amounts[address] = tail.amounts.get(address, 0.0) + difficulty
    tail.total = tail.total + difficulty
    tail.last = seq
    if time > tail.time:
        tail.time = time
    if is_block:
        tail.closed = True
    return tail


@dataclass(slots=True)
class WindowResult:
    need: float
    total: float
    amounts: dict[str, float]
    first_seq: int | None  # oldest share with credit
    partial: float | None  # credit of the oldest share when it straddles the window start, else None

    @property
    def complete(self) -> bool:
        return self.total >= self.need


Row = tuple[int, str, float]  # (seq, address, credited difficulty)


def walk(entries_newest_first: Iterable[Entry], need: float, rows_of: Callable[[Entry], Sequence[Row]]) -> WindowResult:
    """The snapshot walk. ``rows_of(entry)`` gives the entry's shares in
    sequence order; it is called only for the entry straddling the start."""
    total = 0.0
    amounts: dict[str, float] = {}
    first_seq = None
    partial = None
    for e in entries_newest_first:
        if total >= need:
            break
        if total + e.total <= need:
            for a, d in e.amounts.items():
                amounts[a] = amounts.get(a, 0.0) + d
            total = total + e.total
            first_seq = e.first
            continue
        rows = rows_of(e)
        for seq, a, d in reversed(rows):
            if total >= need:
                break
            if total + d <= need:
                amounts[a] = amounts.get(a, 0.0) + d
                total = total + d
                first_seq = seq
            else:
                part = need - total
                amounts[a] = amounts.get(a, 0.0) + part
                total = need
                first_seq = seq
                partial = part
                break
        # rounding can leave a little room after a whole straddling entry:
        # then the walk goes on into the next entry, exactly as the Lua does
    return WindowResult(need, total, amounts, first_seq, partial)


def window_target(network_difficulty: float, factor: float, fixed: float) -> float:
    """N for a block: the fixed total if configured, else factor x network difficulty."""
    return fixed if fixed > 0 else factor * network_difficulty


def align_down(seq: int, entry_shares: int = ENTRY_SHARES) -> int:
    return seq - seq % entry_shares


def build_entries(rows: Iterable[tuple[int, str, float, float, bool]], entry_shares: int = ENTRY_SHARES) -> list[Entry]:
    """Entries from (seq, address, difficulty, time, is_block) in sequence order."""
    entries: list[Entry] = []
    for seq, a, d, t, blk in rows:
        add_share(entries, seq, a, d, t, blk, entry_shares)
    return entries


def recompute_snapshot(shares: Iterable, *, block_seq: int, n_target: float, floor_seq: int = 0,
                       entry_shares: int = ENTRY_SHARES) -> WindowResult:
    """Recompute a block's window from the share log.

    ``shares``: ``LoggedShare`` objects in sequence order, without gaps,
    starting at an entry boundary at or before the window's first share
    (``ShareLogReader.window_shares`` fetches exactly that) and reaching
    ``block_seq``. ``floor_seq``: the oldest share the window store still
    held when the snapshot was taken (from the snapshot record); older
    shares are ignored, as the pool could not count them either.
    """
    rows = [(s.seq, s.address, s.difficulty, s.time, s.is_block) for s in shares if floor_seq <= s.seq <= block_seq]
    if rows and rows[-1][0] != block_seq:
        raise ValueError(f"the shares end at {rows[-1][0]}, not at the block share {block_seq}")
    for (a, *_), (b, *_) in zip(rows, rows[1:]):
        if b != a + 1:
            raise ValueError(f"gap in the share sequence after {a}")
    entries = build_entries(rows, entry_shares)
    by_entry: dict[int, list[Row]] = {}
    i = 0
    for e in entries:
        n = e.last - e.first + 1
        by_entry[e.first] = [(r[0], r[1], r[2]) for r in rows[i:i + n]]
        i += n
    return walk(reversed(entries), n_target, lambda e: by_entry[e.first])


class NdReference:
    """The network difficulty the window is trimmed for: the highest seen
    today or yesterday (UTC days of share time), so a brief low-difficulty
    template (testnet's 20-minute rule) never trims the window short."""

    __slots__ = ("day", "cur", "prev")

    def __init__(self, day: int = 0, cur: float = 0.0, prev: float = 0.0):
        self.day, self.cur, self.prev = day, cur, prev

    def see(self, day: int, nd: float) -> None:
        if day > self.day:
            self.prev = self.cur if day == self.day + 1 else 0.0
            self.cur = nd
            self.day = day
        elif nd > self.cur:
            self.cur = nd

    @property
    def value(self) -> float:
        return max(self.cur, self.prev)


def day_of(t: float) -> int:
    return int(t // 86400)


def keep_target(nd_ref: float, factor: float, fixed: float, margin: float) -> float:
    """How much difficulty the window store keeps: N for the reference
    difficulty plus the margin."""
    return window_target(nd_ref, factor, fixed) * (1.0 + margin)


def trim_count(entry_totals: Iterable[float], total: float, keep: float, length: int) -> tuple[int, float]:
    """How many head entries to drop (oldest first) so that what remains is
    still at least ``keep``; never the newest entry. Returns (count, new total)."""
    n = 0
    for t in entry_totals:
        if length - n <= 1 or total - t < keep:
            break
        total = total - t
        n += 1
    return n, total


@dataclass(slots=True)
class ModelSnapshot:
    block_hash: str
    seq: int
    n_target: float
    network_difficulty: float
    floor_seq: int
    result: WindowResult


class WindowModel:
    """The Redis window store without Redis: entries, running total,
    difficulty reference, trimming after each batch, snapshots at block
    shares. Keeps every share it saw (for boundary lookups)."""

    MAX_TRIM = 10_000  # per batch, as in the Lua

    def __init__(self, factor: float = 2.0, fixed: float = 0.0, margin: float = 0.5, entry_shares: int = ENTRY_SHARES):
        self.factor, self.fixed, self.margin, self.entry_shares = factor, fixed, margin, entry_shares
        self.entries: list[Entry] = []
        self.total = 0.0
        self.nd = NdReference()
        self.seq = 0
        self.rows: dict[int, Row] = {}

    def apply_batch(self, shares: Sequence[tuple[str, float, float, float, bool, str]]) -> list[ModelSnapshot]:
        """``shares``: (address, difficulty, time, network_difficulty, is_block, hash) in order."""
        snaps = []
        first = self.seq + 1
        self.seq += len(shares)
        for i, (a, d, t, nd, blk, h) in enumerate(shares):
            seq = first + i
            self.rows[seq] = (seq, a, d)
            add_share(self.entries, seq, a, d, t, blk, self.entry_shares)
            self.total = self.total + d
            if blk:
                need = window_target(nd, self.factor, self.fixed)
                res = walk(reversed(self.entries), need, self._rows_of)
                snaps.append(ModelSnapshot(h, seq, need, nd, self.entries[0].first, res))
        by_day: dict[int, float] = {}
        for a, d, t, nd, blk, h in shares:
            k = day_of(t)
            by_day[k] = max(by_day.get(k, 0.0), nd)
        for k in sorted(by_day):
            self.nd.see(k, by_day[k])
        if shares:
            keep = keep_target(self.nd.value, self.factor, self.fixed, self.margin)
            n, self.total = trim_count((e.total for e in self.entries[:self.MAX_TRIM]), self.total, keep, len(self.entries))
            del self.entries[:n]
        return snaps

    def _rows_of(self, e: Entry) -> list[Row]:
        return [self.rows[s] for s in range(e.first, e.last + 1)]
