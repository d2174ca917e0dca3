"""Jobs: what miners work on. Pure: no I/O, the clock is passed in.

A ``Job`` is built once per template (or refresh) and shared by every
session: coinbase halves, merkle branch and the ``mining.notify`` line are
computed once and the same bytes are written to every miner.

Job ids are 8 lowercase hex digits of a sequence number (even-length hex:
some firmware parses job ids as hex). A session that gets a new difficulty
is sent the current job under a 12-digit alias ``<id><n:04x>``, so the new
difficulty starts with a job id the miner has not seen (ESP-Miner ignores a
repeated id); the alias resolves to the same Job (``JobManager.resolve``).
Every job and alias carries its own coinbase job tag (``hashcoop.pool.core.coinbase``), so
it is new work, not the old work under a new name.
"""
from __future__ import annotations

import random
from collections import OrderedDict
from typing import Callable

import orjson

from hashcoop.pool.core.btc.block import coinbase_with_witness, parse_tx, serialize_block
from hashcoop.pool.core.btc.hashing import merkle_branch
from hashcoop.pool.core.btc.target import bits_difficulty, bits_to_target
from hashcoop.pool.core.coinbase import CoinbaseParts, build_coinbase
from hashcoop.pool.core.keyset import KeySet
from hashcoop.pool.core.template import Template, TemplateTx


def stratum_prevhash(prevhash: bytes) -> str:
    """Header prevhash bytes with each 4-byte word byte-swapped, as hex: the
    form every Stratum V1 miner expects in mining.notify."""
    return b"".join(prevhash[i:i + 4][::-1] for i in range(0, 32, 4)).hex()


class Job:
    __slots__ = (
        "seq", "id", "template", "prevhash", "coinbase", "coinb1", "coinb2", "branch", "version", "bits",
        "bits_le", "ntime", "mintime", "height", "target", "network_difficulty", "created", "seen",
        "notify_params", "_lines", "_alias_coinb1",
    )

    def __init__(self, seq: int, template: Template, coinbase: CoinbaseParts, ntime: int, created: float,
                 version: int | None = None):
        self.seq = seq
        self.id = f"{seq:08x}"
        self.template = template
        self.prevhash = template.prevhash
        self.coinbase = coinbase
        self.coinb1 = coinbase.coinb1
        self.coinb2 = coinbase.coinb2
        self.branch = tuple(merkle_branch([t.txid for t in template.transactions]))
        self.version = template.version if version is None else version
        self.bits = template.bits
        self.bits_le = template.bits.to_bytes(4, "little")
        self.ntime = ntime
        self.mintime = template.mintime
        self.height = template.height
        self.target = template.target
        self.network_difficulty = bits_difficulty(template.bits)
        self.created = created
        # Header-hash keys of accepted shares (duplicate detection); dropped
        # once the job is stale, since stale shares are rejected anyway.
        self.seen: KeySet | None = KeySet()
        # a per-alias coinb1, for jobs re-sent with a new difficulty
        self._alias_coinb1: dict[int, bytes] = {}
        self.notify_params = [
            self.id,
            stratum_prevhash(self.prevhash),
            self.coinb1.hex(),
            self.coinb2.hex(),
            [b.hex() for b in self.branch],
            f"{self.version:08x}",
            f"{self.bits:08x}",
            f"{self.ntime:08x}",
        ]
        self._lines: dict[bool, bytes] = {}

    @classmethod
    def from_notify(cls, params: list, transactions: list[bytes], extranonce_size: int, *, mintime: int = 0, created: float = 0.0) -> "Job":
        """Rebuild a job from another pool's ``mining.notify`` params and the
        block's transactions (after the coinbase). Used to check our job and
        share code against recorded sessions of other software."""

        job_id, prev_s, coinb1, coinb2, _branch, version, nbits, ntime = params[:8]
        prevhash = bytes.fromhex(stratum_prevhash(bytes.fromhex(prev_s)))  # the swap is its own inverse
        txs = []
        for raw in transactions:
            tx, _ = parse_tx(raw)
            txs.append(TemplateTx(raw, tx.txid, tx.wtxid, 0))
        cb2 = bytes.fromhex(coinb2)
        marker = b"\x6a\x24\xaa\x21\xa9\xed"
        i = cb2.find(marker)
        bits = int(nbits, 16)
        tpl = Template(
            height=0, prevhash=prevhash, version=int(version, 16), bits=bits, target=bits_to_target(bits),
            curtime=int(ntime, 16), mintime=mintime, coinbasevalue=0, transactions=tuple(txs),
            witness_commitment=cb2[i:i + 38] if i >= 0 else None, longpollid=None,
        )
        job = cls(0, tpl, CoinbaseParts(bytes.fromhex(coinb1), cb2, extranonce_size), int(ntime, 16), created)
        job.id = job_id
        job.notify_params[0] = job_id
        return job

    def notify_line(self, clean: bool) -> bytes:
        """The serialised mining.notify, shared by every session."""
        line = self._lines.get(clean)
        if line is None:
            line = self._lines[clean] = self.alias_notify_line(self.id, clean)
        return line

    def coinb1_for(self, alias: int) -> bytes:
        """coinb1 of the job or of one of its aliases (distinct job tags)."""
        if alias == 0:
            return self.coinb1
        c = self._alias_coinb1.get(alias)
        if c is None:
            if len(self._alias_coinb1) >= 4096:
                self._alias_coinb1.clear()
            c = self._alias_coinb1[alias] = self.coinbase.with_job_tag(self.seq & 0xFFFF | alias << 16)
        return c

    def alias_notify_line(self, job_id: str, clean: bool, alias: int = 0) -> bytes:
        params = list(self.notify_params)
        params[0] = job_id
        if alias:
            params[2] = self.coinb1_for(alias).hex()
        params.append(clean)
        return orjson.dumps({"id": None, "method": "mining.notify", "params": params}) + b"\n"

    def build_block(self, coinbase: bytes, header: bytes) -> bytes:
        """The full block for a solving share: header, the coinbase in witness
        form (with the witness reserved value) when the template commits to
        witnesses, then every template transaction."""
        cb = coinbase_with_witness(coinbase) if self.template.witness_commitment else coinbase
        return serialize_block(header, [cb, *(t.data for t in self.template.transactions)])


class JobManager:
    """Builds jobs from templates and remembers recent ones.

    ``max_jobs`` bounds memory: older jobs are forgotten (their shares are
    then 'unknown-job'). Jobs of an older previous block are kept for
    answering 'stale-job' until they age out.

    ``stale_grace``: for this many seconds after a new tip, the jobs of the
    tip it replaced keep their duplicate keys and :meth:`in_grace` says so,
    so that a share a miner found on them before it could read the new job
    (one network delay) is still checked in full and can be credited. 0:
    they are stale at once (ckpool's rule).

    ``max_seen`` bounds the other memory a job holds, the keys of its
    accepted shares (duplicate detection, 16 to 32 bytes each in a
    ``KeySet``): when the jobs replaced on the current tip hold more keys
    than this, the oldest of them are forgotten too. At ordinary share
    rates ``max_jobs`` comes first (a pool taking 250 shares/s keeps half an
    hour of jobs); a flood
    of low-difficulty shares shortens the history instead of growing the
    process. The current job and the one before it are always kept.
    """

    def __init__(
        self,
        *,
        payout_script: bytes,
        tag: bytes,
        extranonce_size: int,
        now: Callable[[], float],
        max_jobs: int = 64,
        max_seen: int = 500_000,
        first_seq: int | None = None,
        rolling_mask: int = 0x1FFFE000,
        stale_grace: float = 0.0,
    ):
        self.payout_script = payout_script
        self.tag = tag
        self.extranonce_size = extranonce_size
        self.now = now
        self.max_jobs = max_jobs
        self.max_seen = max_seen
        # BIP320 reserves these version bits for miners to roll; the job's own
        # version keeps them clear so every rolling convention (masked bits,
        # XOR with the job version, full version) rebuilds the same header.
        self.rolling_mask = rolling_mask
        # Start somewhere random so ids from before a restart don't match.
        self._seq = first_seq if first_seq is not None else random.randrange(1 << 28)
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.current: Job | None = None
        self.prevhash: bytes | None = None
        self.stale_grace = stale_grace
        self.replaced_prevhash: bytes | None = None  # the tip the last new tip replaced
        self.replaced_at = 0.0

    def new_job(self, template: Template, clean: bool = False) -> tuple[Job, bool]:
        """Register a job for ``template``. Returns it and whether miners must
        drop older work (a new previous block forces clean_jobs)."""
        if template.prevhash != self.prevhash:
            clean = True
            # retired: stale for good, even if the chain comes back to their
            # previous block (their duplicate keys are gone with this); the
            # jobs of the tip just replaced keep theirs through stale_grace
            graced = self.prevhash if self.stale_grace > 0 else None
            for old in self.jobs.values():
                if old.prevhash != graced:
                    old.seen = None
            self.replaced_prevhash = graced
            self.replaced_at = self.now()
            self.prevhash = template.prevhash
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        cb = build_coinbase(
            height=template.height,
            value=template.coinbasevalue,
            payout_script=self.payout_script,
            witness_commitment=template.witness_commitment,
            tag=self.tag,
            extranonce_size=self.extranonce_size,
            aux=template.coinbaseaux,
            job_tag=self._seq & 0xFFFF,
        )
        now = self.now()
        ntime = max(int(now), template.curtime, template.mintime)
        job = Job(self._seq, template, cb, ntime, now, version=template.version & ~self.rolling_mask)
        self.jobs[job.id] = job
        while len(self.jobs) > self.max_jobs:
            self.jobs.popitem(last=False)
        self._bound_seen()
        self.current = job
        return job, clean

    def _bound_seen(self) -> None:
        """Forget the oldest jobs once the replaced ones (newest first,
        past the current job and the one before it) hold more than
        ``max_seen`` share keys."""
        jobs = list(self.jobs.values())
        held = 0
        for i in range(len(jobs) - 3, -1, -1):
            seen = jobs[i].seen
            if seen:
                held += len(seen)
                if held > self.max_seen:
                    for _ in range(i + 1):
                        self.jobs.popitem(last=False)
                    return

    def resolve(self, job_id: str) -> tuple[Job | None, int]:
        """Find the job for a submitted id (plain, or a 12-digit alias);
        returns (job or None, alias number, 0 for the plain id)."""
        job = self.jobs.get(job_id)
        if job is not None:
            return job, 0
        if len(job_id) != 12:
            return None, 0
        try:
            alias = int(job_id[8:], 16)
        except ValueError:
            return None, 0
        if job_id[8:] != f"{alias:04x}":
            return None, 0
        return self.jobs.get(job_id[:8]), alias

    @staticmethod
    def alias_id(job: Job, alias: int) -> str:
        return f"{job.id}{alias & 0xFFFF:04x}"

    def in_grace(self, job: Job) -> bool:
        """A job of the tip the last new tip replaced, less than
        ``stale_grace`` seconds ago, whose duplicate keys are kept."""
        return (job.prevhash == self.replaced_prevhash and job.seen is not None
                and self.now() - self.replaced_at <= self.stale_grace)
