"""The durable share log and the block window snapshots, read back.

The share log is the Redis stream ``<prefix>sharelog``: one entry per
batch, id ``<first seq>-0``, fields

* ``v``      format version (1)
* ``batch``  ``<run>:<counter>``, the batch id
* ``n``      number of shares; they have sequence numbers first .. first+n-1
* ``t``      when the batch was made
* ``a``      the batch's addresses, space-separated (indexed from 0)
* ``s``      one line per share, in sequence order:
             ``<address index> <worker> <credited difficulty>
             <share difficulty> <job id> <share hash> <time> <is block 0/1>``

It is trimmed only below what the current window and every un-archived
block snapshot still need (``mark_archived`` releases a snapshot).

The payout service consumes ``Snapshot`` records (``read.block_snapshot``)
and can recompute any of them from the log (``ShareLogReader.recompute``),
which is what ``hashcoop payouts verify BLOCKHASH`` does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hashcoop.pool.accounting import lua
from hashcoop.pool.accounting.keys import Keys
from hashcoop.pool.core.events import LoggedShare
from hashcoop.pool.core.window import WindowResult, recompute_snapshot


def _s(x) -> str:
    return x.decode() if isinstance(x, (bytes, bytearray)) else str(x)


def parse_log_entry(entry_id, fields: dict) -> list[LoggedShare]:
    """One stream entry (one batch) -> its shares, in order."""
    f = {_s(k): _s(v) for k, v in fields.items()}
    if f.get("v") != "1":
        raise ValueError(f"share log entry {_s(entry_id)}: unknown version {f.get('v')!r}")
    first = int(_s(entry_id).split("-", 1)[0])
    addrs = f.get("a", "").split()
    batch = f.get("batch", "")
    out = []
    lines = f.get("s", "")
    for i, line in enumerate(lines.split("\n") if lines else ()):
        ai, worker, d, sd, job, h, t, blk = line.split(" ")
        out.append(LoggedShare(first + i, addrs[int(ai)], worker, float(d), float(sd), job, h, float(t), blk == "1", batch))
    n = int(f.get("n", len(out)))
    if n != len(out):
        raise ValueError(f"share log entry {_s(entry_id)}: {len(out)} shares, header says {n}")
    return out


@dataclass(slots=True)
class Snapshot:
    """An immutable per-block PPLNS window record (``<prefix>snapshot:<hash>``
    and its amounts ``<prefix>snapshot:<hash>:addr``)."""

    block_hash: str
    height: int
    seq: int  # sequence number of the block share (the window's last share)
    first_seq: int | None  # oldest share with credit
    first_share: str  # its share id (header hash)
    first_credit: float | None  # credit of that share (partial when ``partial``)
    partial: bool  # the first share straddles the window start
    last_share: str  # the block share's id (= block hash)
    n_target: float  # N
    total: float  # sum of amounts: N, or less when the pool has not seen N yet
    complete: bool
    floor_seq: int  # oldest share the window store held at the time
    log_from: int  # recompute from this sequence number (an entry boundary)
    network_difficulty: float
    window_factor: float
    window_difficulty: float  # fixed N, 0 when factor x network difficulty
    entry_shares: int
    time: float  # of the block share
    created: float
    finder_address: str
    finder_worker: str
    job_id: str
    amounts: dict[str, float] = field(default_factory=dict)  # address -> credited difficulty in the window
    archived: bool = False

    @classmethod
    def from_redis(cls, meta: dict, amounts: dict, archived: bool) -> "Snapshot":
        m = {_s(k): _s(v) for k, v in meta.items()}
        return cls(
            block_hash=m["hash"], height=int(m["height"]), seq=int(m["seq"]),
            first_seq=int(m["first_seq"]) if m["first_seq"] else None, first_share=m["first_share"],
            first_credit=float(m["first_credit"]) if m["first_credit"] else None, partial=m["partial"] == "1",
            last_share=m["last_share"], n_target=float(m["n"]), total=float(m["total"]), complete=m["complete"] == "1",
            floor_seq=int(m["floor_seq"]), log_from=int(m["log_from"]), network_difficulty=float(m["network_difficulty"]),
            window_factor=float(m["window_factor"]), window_difficulty=float(m["window_difficulty"]),
            entry_shares=int(m["entry_shares"]), time=float(m["time"]), created=float(m["created"]),
            finder_address=m["finder_address"], finder_worker=m["finder_worker"], job_id=m.get("job_id", ""),
            amounts={_s(k): float(v) for k, v in amounts.items()}, archived=archived,
        )


class ShareLogReader:
    """Blocking (redis-py); run it in a thread from Twisted code."""

    PAGE = 256  # stream entries (batches) per XRANGE

    def __init__(self, client, prefix: str = "hashcoop:"):
        self.r = client
        self.keys = Keys(prefix)
        self._archive = None  # registered at the first mark_archived (lua.register asks the server)

    def bounds(self) -> tuple[int, int]:
        """(first, last) sequence numbers the log still holds; (0, 0) if empty."""
        head = self.r.xrange(self.keys.sharelog, count=1)
        if not head:
            return 0, 0
        tail = self.r.xrevrange(self.keys.sharelog, count=1)
        last = parse_log_entry(*tail[0])
        return int(_s(head[0][0]).split("-")[0]), last[-1].seq if last else 0

    def shares(self, first_seq: int, last_seq: int) -> list[LoggedShare]:
        """The shares with first_seq <= seq <= last_seq, in order. Raises
        LookupError if the log no longer (or not yet) holds all of them."""
        if last_seq < first_seq:
            return []
        start = self.r.xrevrange(self.keys.sharelog, max=f"{first_seq}-0", count=1)
        cursor = _s(start[0][0]) if start else f"{first_seq}-0"
        out: list[LoggedShare] = []
        while True:
            page = self.r.xrange(self.keys.sharelog, min=cursor, max=f"{last_seq}-0", count=self.PAGE)
            for entry_id, fields in page:
                for s in parse_log_entry(entry_id, fields):
                    if first_seq <= s.seq <= last_seq:
                        out.append(s)
            if len(page) < self.PAGE:
                break
            cursor = "(" + _s(page[-1][0])
        if not out or out[0].seq != first_seq or out[-1].seq != last_seq or len(out) != last_seq - first_seq + 1:
            have = f"{out[0].seq}..{out[-1].seq} ({len(out)})" if out else "nothing"
            raise LookupError(f"share log holds {have} of {first_seq}..{last_seq}")
        return out

    def snapshot(self, block_hash: str) -> Snapshot | None:
        meta = self.r.hgetall(self.keys.snapshot(block_hash))
        if not meta:
            return None
        amounts = self.r.hgetall(self.keys.snapshot_amounts(block_hash))
        archived = self.r.zscore(self.keys.unarchived, block_hash) is None
        return Snapshot.from_redis(meta, amounts, archived)

    def window_shares(self, snap: Snapshot) -> list[LoggedShare]:
        """The shares needed to recompute ``snap``: from its entry boundary
        ``log_from`` to the block share."""
        return self.shares(snap.log_from, snap.seq)

    def recompute(self, block_hash: str) -> tuple[Snapshot, WindowResult]:
        snap = self.snapshot(block_hash)
        if snap is None:
            raise KeyError(f"no window snapshot for block {block_hash}")
        res = recompute_snapshot(self.window_shares(snap), block_seq=snap.seq, n_target=snap.n_target,
                                 floor_seq=snap.floor_seq, entry_shares=snap.entry_shares)
        return snap, res

    def verify(self, block_hash: str) -> list[str]:
        """Recompute a block's window from the share log and compare it with
        the stored snapshot; returns the differences (empty: they agree)."""
        snap, res = self.recompute(block_hash)
        problems = []
        if res.amounts != snap.amounts:
            for a in sorted(set(res.amounts) | set(snap.amounts)):
                x, y = snap.amounts.get(a), res.amounts.get(a)
                if x != y:
                    problems.append(f"{a}: snapshot {x!r}, share log {y!r}")
        if res.total != snap.total:
            problems.append(f"total: snapshot {snap.total!r}, share log {res.total!r}")
        if res.first_seq != snap.first_seq:
            problems.append(f"first share: snapshot #{snap.first_seq}, share log #{res.first_seq}")
        return problems

    def mark_archived(self, block_hash: str) -> bool:
        """The payout service has archived this block's snapshot (and the
        shares it covers): the share log may be trimmed past it. True if it
        was pending."""
        if self._archive is None:
            self._archive = lua.register(self.r, lua.ARCHIVE)
        return bool(self._archive(keys=[], args=[self.keys.prefix, block_hash]))
