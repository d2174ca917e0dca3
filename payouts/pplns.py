"""The PPLNS split and the payout report. Pure: no I/O.

``split_reward(reward, window, fee_percent)`` divides a block's reward (its
coinbase value, subsidy plus fees, in satoshis) over the block's PPLNS window
snapshot (address -> credited difficulty) in proportion to difficulty.

Rules, all in integer satoshis:

* fee = floor(reward x fee_percent / 100), with ``fee_percent`` read as the
  exact decimal it is written as ("1.5" is exactly 3/200); rounding favours
  the miners;
* D = reward - fee is shared out; address i with difficulty w_i is owed
  exactly D x w_i / W (W = sum of w_i; each difficulty is the exact binary
  value of the stored double, so the arithmetic is exact rational);
* remainder rule ("largest remainder", v1): everybody first gets the floor of
  their exact amount; the r satoshis left (r < number of addresses) go one
  each to the r addresses with the largest fractional parts, ties broken by
  the larger difficulty, then by the address in ascending byte order.

So the credits add up to D exactly, none is negative, each is within one
satoshi of its exact proportion (below it by less than 1, or above by less
than 1), and the result depends only on the inputs (not on their order).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Mapping

REMAINDER_RULE = "largest-remainder-v1"
REPORT_VERSION = 1


def percent_fraction(fee_percent: str | float | int | Decimal) -> Fraction:
    """The fee percent as an exact fraction of 1, from its decimal text."""
    try:
        d = Decimal(str(fee_percent))
    except InvalidOperation:
        raise ValueError(f"fee percent {fee_percent!r} is not a number") from None
    if not d.is_finite() or d < 0 or d >= 100:
        raise ValueError(f"fee percent {fee_percent!r} must be at least 0 and below 100")
    return Fraction(d) / 100


def fee_text(fee_percent: str | float | int | Decimal) -> str:
    """Canonical decimal text of a fee percent (as stored in the report)."""
    percent_fraction(fee_percent)  # validates
    return format(Decimal(str(fee_percent)).normalize(), "f")


def pool_fee(reward: int, fee_percent: str | float | int | Decimal) -> int:
    if reward < 0:
        raise ValueError("negative reward")
    f = percent_fraction(fee_percent)
    return (reward * f.numerator) // f.denominator


@dataclass(frozen=True, slots=True)
class Split:
    reward: int
    fee: int
    fee_percent: str
    credits: dict[str, int] = field(default_factory=dict)  # address -> satoshis, sorted by address

    @property
    def distributed(self) -> int:
        return self.reward - self.fee


def _weights(window: Mapping[str, float]) -> dict[str, Fraction]:
    out: dict[str, Fraction] = {}
    for a, w in window.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
            raise ValueError(f"difficulty of {a} is not a finite non-negative number: {w!r}")
        if w > 0:
            out[a] = Fraction(w)
    return out


def proportional(amount: int, window: Mapping[str, float]) -> dict[str, int]:
    """``amount`` satoshis over ``window`` by the largest-remainder rule."""
    if amount < 0:
        raise ValueError("negative amount")
    weights = _weights(window)
    total = sum(weights.values(), Fraction(0))
    if total == 0:
        raise ValueError("the window has no difficulty")
    exact = {a: amount * w / total for a, w in weights.items()}
    out = {a: math.floor(x) for a, x in exact.items()}
    left = amount - sum(out.values())
    order = sorted(exact, key=lambda a: (-(exact[a] - out[a]), -weights[a], a.encode()))
    for a in order[:left]:
        out[a] += 1
    return {a: out[a] for a in sorted(out, key=str.encode)}


def split_reward(reward: int, window: Mapping[str, float], fee_percent: str | float | int | Decimal) -> Split:
    """A block's reward minus the pool fee over its window (see module doc)."""
    if not isinstance(reward, int) or reward < 0:
        raise ValueError(f"reward must be a non-negative integer of satoshis, not {reward!r}")
    fee = pool_fee(reward, fee_percent)
    return Split(reward, fee, fee_text(fee_percent), proportional(reward - fee, window))


# -- the report ----------------------------------------------------------------

def fmt_difficulty(x: float) -> str:
    """Difficulties go into the report as text: Python's shortest
    round-trip repr of the double, so nothing is lost and every language
    can read them back exactly."""
    return repr(float(x))


def build_report(*, block: Mapping, window: Mapping[str, float], split: Split, fee_address: str | None) -> dict:
    """The payout report of a block: what it paid and why.

    ``block``: hash, height, finder_address, finder_worker, time, and the
    snapshot's n_target, window_total, complete, first_seq, seq, partial
    (first_credit or None), network_difficulty, window_factor,
    window_difficulty, floor_seq, log_from.
    """
    credits = [{"address": a, "amount": v, "kind": "share"} for a, v in split.credits.items()]
    if fee_address and split.fee:
        credits.append({"address": fee_address, "amount": split.fee, "kind": "fee"})
    credits.sort(key=lambda c: (c["address"].encode(), c["kind"]))
    return {
        "version": REPORT_VERSION,
        "block": {
            "hash": block["hash"],
            "height": int(block["height"]),
            "finder_address": block["finder_address"],
            "finder_worker": block["finder_worker"],
            "time": fmt_difficulty(block["time"]),
        },
        "window": {
            "n": fmt_difficulty(block["n_target"]),
            "total_difficulty": fmt_difficulty(block["window_total"]),
            "complete": bool(block["complete"]),
            "first_seq": block["first_seq"],
            "last_seq": int(block["seq"]),
            "partial_credit": None if block.get("partial") is None else fmt_difficulty(block["partial"]),
            "network_difficulty": fmt_difficulty(block["network_difficulty"]),
            "window_factor": fmt_difficulty(block["window_factor"]),
            "window_difficulty": fmt_difficulty(block["window_difficulty"]),
            "floor_seq": int(block["floor_seq"]),
            "by_address": [{"address": a, "difficulty": fmt_difficulty(window[a])} for a in sorted(window, key=str.encode)],
        },
        "reward": split.reward,
        "fee": {"percent": split.fee_percent, "amount": split.fee, "address": fee_address or None},
        "distributed": split.distributed,
        "remainder_rule": REMAINDER_RULE,
        "credits": credits,
    }


def canonical_json(report: Mapping) -> bytes:
    """UTF-8 JSON, keys sorted, no whitespace; numbers are integers only
    (difficulties and times are strings, see ``fmt_difficulty``)."""
    return json.dumps(report, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def report_digest(report: Mapping) -> str:
    return hashlib.sha256(canonical_json(report)).hexdigest()


def diff_reports(stored: Mapping, recomputed: Mapping, path: str = "") -> list[str]:
    """Where two reports differ, as 'path: stored X, recomputed Y' lines."""
    out: list[str] = []
    if isinstance(stored, Mapping) and isinstance(recomputed, Mapping):
        for k in sorted(set(stored) | set(recomputed)):
            p = f"{path}.{k}" if path else str(k)
            if k not in stored:
                out.append(f"{p}: missing from the stored report, recomputed {recomputed[k]!r}")
            elif k not in recomputed:
                out.append(f"{p}: stored {stored[k]!r}, not in the recomputation")
            else:
                out += diff_reports(stored[k], recomputed[k], p)
        return out
    if isinstance(stored, list) and isinstance(recomputed, list):
        keyed = all(isinstance(x, Mapping) and "address" in x for x in stored + recomputed)
        if keyed:
            def key(x):
                return x["address"] + (f"/{x['kind']}" if "kind" in x else "")
            a = {key(x): x for x in stored}
            b = {key(x): x for x in recomputed}
            for k in sorted(set(a) | set(b)):
                p = f"{path}[{k}]"
                if k not in a:
                    out.append(f"{p}: missing from the stored report, recomputed {b[k]!r}")
                elif k not in b:
                    out.append(f"{p}: stored {a[k]!r}, not in the recomputation")
                else:
                    out += diff_reports(a[k], b[k], p)
            return out
        if len(stored) != len(recomputed):
            return [f"{path}: stored {len(stored)} items, recomputed {len(recomputed)}"]
        for i, (x, y) in enumerate(zip(stored, recomputed)):
            out += diff_reports(x, y, f"{path}[{i}]")
        return out
    if stored != recomputed or type(stored) is not type(recomputed):
        out.append(f"{path}: stored {stored!r}, recomputed {recomputed!r}")
    return out
