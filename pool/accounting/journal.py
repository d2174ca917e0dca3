"""The accounting journal: every batch is appended here (by the writer
thread) before it is written to Redis, and removed once Redis has it.

Record encoding is pure (``encode_batch``/``decode_batch``): one line per
batch, ``<crc32 as 8 hex digits> <JSON>\\n``. A torn last line (crash or
power loss mid-write) fails its CRC and is dropped on reading; nothing
after a bad line is trusted less, each line stands alone.

``Journal`` manages segment files ``journal-<n>.jnl`` in one directory:
appends go to the newest segment; a segment is deleted once every batch
in it is in Redis. The directory is locked (``fcntl.flock``) so two
processes never share a journal. The journal thread appends and the Redis
thread reads and marks batches applied; a lock keeps the bookkeeping
consistent.
"""
from __future__ import annotations

import fcntl
import logging
import math
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import orjson

from hashcoop.pool.accounting.model import Batch, RejectCount
from hashcoop.pool.core.events import BlockFound, BlockStatus, ShareAccepted

log = logging.getLogger("hashcoop.accounting")

VERSION = 1


class JournalError(ValueError):
    pass


def _f(x: float):
    return x if math.isfinite(x) else None


def _unf(x) -> float:
    return float("inf") if x is None else float(x)


def batch_to_dict(b: Batch) -> dict:
    return {
        "v": VERSION,
        "run": b.run,
        "n": b.counter,
        "t": b.created,
        "s": [[s.address, s.worker, s.difficulty, _f(s.share_difficulty), s.job_id, s.hash, s.time,
               s.network_difficulty, s.height, 1 if s.is_block else 0] for s in b.shares],
        "r": [[r.address, r.worker, r.reason, r.count, r.difficulty, r.last] for r in b.rejects],
        "b": [[f.hash, f.height, f.prevhash, f.address, f.worker, f.reward, _f(f.share_difficulty),
               f.network_difficulty, f.job_id, f.time] for f in b.blocks],
        "st": [[s.hash, s.height, s.status, s.reason, s.verdicts, s.time] for s in b.statuses],
    }


def batch_from_dict(d: dict) -> Batch:
    if d.get("v") != VERSION:
        raise JournalError(f"unknown journal record version {d.get('v')!r}")
    try:
        return Batch(
            run=str(d["run"]),
            counter=int(d["n"]),
            created=float(d["t"]),
            shares=[ShareAccepted(time=float(t), address=a, worker=w, difficulty=float(df), share_difficulty=_unf(sd),
                                  job_id=j, height=int(h), hash=hh, network_difficulty=float(nd), is_block=bool(blk))
                    for a, w, df, sd, j, hh, t, nd, h, blk in d["s"]],
            rejects=[RejectCount(a, w, reason, int(c), float(df), float(last)) for a, w, reason, c, df, last in d["r"]],
            blocks=[BlockFound(time=float(t), height=int(h), hash=hh, prevhash=prev, address=a, worker=w, reward=int(rw),
                               share_difficulty=_unf(sd), network_difficulty=float(nd), job_id=j, block_hex="")
                    for hh, h, prev, a, w, rw, sd, nd, j, t in d["b"]],
            statuses=[BlockStatus(time=float(t), height=int(h), hash=hh, status=st, verdicts=dict(v or {}), reason=r)
                      for hh, h, st, r, v, t in d["st"]],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise JournalError(f"malformed journal record: {e}") from None


def encode_batch(b: Batch) -> bytes:
    payload = orjson.dumps(batch_to_dict(b))
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode_batch(line: bytes) -> Batch:
    line = line.rstrip(b"\n")
    if len(line) < 10 or line[8:9] != b" ":
        raise JournalError("truncated journal record")
    payload = line[9:]
    try:
        crc = int(line[:8], 16)
    except ValueError:
        raise JournalError("bad journal record header") from None
    if zlib.crc32(payload) != crc:
        raise JournalError("journal record checksum mismatch (torn or corrupt)")
    try:
        d = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise JournalError(f"journal record is not JSON: {e}") from None
    return batch_from_dict(d)


@dataclass(slots=True)
class Ref:
    """Where a batch lives in the journal."""

    segment: int
    offset: int
    length: int


class Journal:
    def __init__(self, directory: str | os.PathLike, *, segment_bytes: int = 1 << 20, fsync: bool = False):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock = open(self.dir / "lock", "a+b")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"accounting journal {self.dir} is in use by another process (give each process its own data_dir)") from None
        self.sizes: dict[int, int] = {n: self.path(n).stat().st_size for n in self.segments()}
        self.current = max(self.sizes, default=0) + 1
        self._fh = None
        self.unapplied: dict[int, int] = {}  # segment -> batches in it not yet in Redis
        self._mutex = threading.Lock()

    def path(self, n: int) -> Path:
        return self.dir / f"journal-{n:08d}.jnl"

    def segments(self) -> list[int]:
        out = []
        for p in self.dir.glob("journal-*.jnl"):
            try:
                out.append(int(p.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return sorted(out)

    @property
    def bytes(self) -> int:
        with self._mutex:
            return sum(self.sizes.values())

    def recover(self) -> list[tuple[Batch, Ref]]:
        """Batches left by earlier runs, in order. Call once, before appending.
        Bad lines are logged and skipped (a torn last line is expected
        after a crash)."""
        out: list[tuple[Batch, Ref]] = []
        for n in sorted(self.sizes):
            if n >= self.current:
                continue
            data = self.path(n).read_bytes()
            pos = 0
            count = 0
            while pos < len(data):
                end = data.find(b"\n", pos)
                if end < 0:
                    log.warning("journal %s: dropping a torn last record (%d bytes)", self.path(n).name, len(data) - pos)
                    break
                line = data[pos:end + 1]
                try:
                    b = decode_batch(line)
                except JournalError as e:
                    log.error("journal %s at byte %d: %s; record skipped", self.path(n).name, pos, e)
                else:
                    out.append((b, Ref(n, pos, len(line))))
                    count += 1
                pos = end + 1
            if count:
                self.unapplied[n] = count
            else:
                self._unlink(n)
        return out

    def append(self, b: Batch) -> Ref:
        line = encode_batch(b)
        with self._mutex:
            return self._append(line)

    def _append(self, line: bytes) -> Ref:
        if self._fh is None:
            self._fh = open(self.path(self.current), "ab")
            self.sizes[self.current] = self._fh.tell()
        ref = Ref(self.current, self.sizes[self.current], len(line))
        self._fh.write(line)
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self.sizes[self.current] += len(line)
        self.unapplied[self.current] = self.unapplied.get(self.current, 0) + 1
        if self.sizes[self.current] >= self.segment_bytes:
            self._close_current()
        return ref

    def read(self, ref: Ref) -> Batch:
        with open(self.path(ref.segment), "rb") as f:
            f.seek(ref.offset)
            return decode_batch(f.read(ref.length))

    def applied(self, ref: Ref) -> None:
        """The batch at ``ref`` is in Redis. A segment with nothing left
        unapplied is deleted; the one being appended to only once it is
        worth rotating (64 KiB), so a restart replays little."""
        with self._mutex:
            self._applied(ref)

    def _applied(self, ref: Ref) -> None:
        left = self.unapplied.get(ref.segment, 0) - 1
        if left > 0:
            self.unapplied[ref.segment] = left
            return
        self.unapplied.pop(ref.segment, None)
        if ref.segment != self.current or self._fh is None:
            self._unlink(ref.segment)
        elif self.sizes.get(ref.segment, 0) >= min(self.segment_bytes, 64 << 10):
            self._close_current()
            self._unlink(ref.segment)

    def _close_current(self) -> None:
        self._fh.close()
        self._fh = None
        self.current += 1

    def _unlink(self, n: int) -> None:
        self.sizes.pop(n, None)
        try:
            self.path(n).unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Close; a segment with nothing unapplied is removed."""
        with self._mutex:
            self._close()

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for n in list(self.sizes):
            if n not in self.unapplied:
                self._unlink(n)
        self._lock.close()
