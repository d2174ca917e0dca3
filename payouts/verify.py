"""``hashcoop payouts verify``: recompute a block's payout from the durable
share log and compare it with what the ledger stored. Blocking.

The window is recomputed with ``hashcoop.pool.core.window.recompute_snapshot``
from the shares ``log_from .. seq`` (the SQL archive; Redis when the block
is not archived yet) and compared, address by address, with the stored
window. For a credited block the payout report is rebuilt from that
recomputed window, the block's reward and its fee settings, and compared
with the stored report (whose SHA-256 digest is checked too) and with the
credits the balances received.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from hashcoop.payouts.ledger import Ledger
from hashcoop.payouts.pplns import build_report, canonical_json, diff_reports, report_digest, split_reward
from hashcoop.payouts.service import report_block
from hashcoop.payouts.states import BlockState
from hashcoop.pool.core.window import recompute_snapshot


@dataclass
class Verdict:
    block_hash: str
    ok: bool
    source: str = ""  # where the shares came from
    status: str = ""
    height: int | None = None
    digest: str | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        head = f"block {self.block_hash}"
        if self.height is not None:
            head += f" (height {self.height}, {self.status})"
        lines = [f"{head}: {'OK' if self.ok else 'MISMATCH'}"]
        lines += [f"  {n}" for n in self.notes]
        lines += [f"  DIFFERS {p}" for p in self.problems]
        return "\n".join(lines)


def verify_block(ledger: Ledger, block_hash: str, sharelog=None) -> Verdict:
    b = ledger.block(block_hash)
    if b is None:
        if sharelog is not None and sharelog.snapshot(block_hash) is not None:
            problems = sharelog.verify(block_hash)
            v = Verdict(block_hash, not problems, "redis", "not in the ledger yet", problems=problems)
            v.notes.append("not imported into the ledger yet: the Redis snapshot was checked against the Redis share log")
            return v
        return Verdict(block_hash, False, problems=["the ledger does not know this block (nor does Redis)"])
    v = Verdict(block_hash, True, status=b.status, height=b.height, digest=b.report_digest)
    try:
        shares = ledger.archived_shares(b.log_from, b.seq)
        v.source = "the SQL archive"
    except LookupError as e:
        if sharelog is None:
            v.ok = False
            v.problems.append(f"shares {b.log_from}..{b.seq}: {e}, and no Redis to read them from")
            return v
        try:
            shares = sharelog.shares(b.log_from, b.seq)
        except LookupError as e2:
            v.ok = False
            v.problems.append(f"shares {b.log_from}..{b.seq}: archive: {e}; Redis: {e2}")
            return v
        v.source = "the Redis share log"
    res = recompute_snapshot(shares, block_seq=b.seq, n_target=b.n_target, floor_seq=b.floor_seq, entry_shares=b.entry_shares)
    window = ledger.window(block_hash)
    for a in sorted(set(window) | set(res.amounts)):
        x, y = window.get(a), res.amounts.get(a)
        if x != y:
            v.problems.append(f"window[{a}]: stored {x!r}, recomputed {y!r}")
    if res.total != b.window_total:
        v.problems.append(f"window total: stored {b.window_total!r}, recomputed {res.total!r}")
    if res.first_seq != b.first_seq:
        v.problems.append(f"window start: stored share #{b.first_seq}, recomputed #{res.first_seq}")
    if (res.partial is not None) != bool(b.partial) or (res.partial is not None and res.partial != b.first_credit):
        v.problems.append(f"partial first share: stored {b.first_credit if b.partial else None!r}, recomputed {res.partial!r}")
    v.notes.append(f"window: {len(res.amounts)} addresses, total difficulty {res.total!r} of N {b.n_target!r}, "
                   f"shares #{res.first_seq}..#{b.seq} recomputed from {v.source}")
    if b.status == BlockState.CREDITED:
        stored_raw = b.report_json or ""
        try:
            stored = json.loads(stored_raw)
        except ValueError:
            stored = None
            v.problems.append("the stored report is not JSON")
        if stored is not None:
            if hashlib.sha256(stored_raw.encode()).hexdigest() != b.report_digest:
                v.problems.append(f"report digest: stored {b.report_digest}, the stored report hashes to {hashlib.sha256(stored_raw.encode()).hexdigest()}")
            if canonical_json(stored).decode() != stored_raw:
                v.problems.append("the stored report is not in canonical form")
            block = report_block(b)
            block["window_total"] = res.total
            block["first_seq"] = res.first_seq
            block["partial"] = res.partial
            split = split_reward(b.reward, res.amounts, b.fee_percent)
            again = build_report(block=block, window=res.amounts, split=split, fee_address=b.fee_address)
            v.problems += [f"report {p}" for p in diff_reports(stored, again)]
            credited = {(c.address, c.kind): c.amount for c in ledger.credits(block_hash)}
            expect = {(c["address"], c["kind"]): c["amount"] for c in again["credits"] if c["amount"]}
            for k in sorted(set(credited) | set(expect)):
                if credited.get(k) != expect.get(k):
                    v.problems.append(f"credit {k[0]} ({k[1]}): balances got {credited.get(k)}, recomputed {expect.get(k)}")
            v.notes.append(f"reward {b.reward} sat, fee {split.fee} sat ({b.fee_percent}%), {len(split.credits)} credits; "
                           f"report digest {report_digest(again)}")
    else:
        v.notes.append(f"not credited ({b.status}): the window was checked; the report is made when the block matures")
    v.ok = not v.problems
    return v
