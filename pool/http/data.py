"""What the API and the dashboard show, read from the accounting store (and
the payout ledger when one is connected). Everything here is blocking and
runs in a thread of ``reads.Reads``; the live figures of the running
process (template, connections) are added on the reactor by ``api.py``.

Shapes are plain JSON values; docs/api/openapi.yaml describes them.
"""
from __future__ import annotations

from typing import Callable

from hashcoop.pool.core.withholding import lambda_threshold, suspects

# blocks whose window part an address page lists
ADDRESS_BLOCKS = 20
LUCK_BLOCKS = 10


def _clean(x):
    """Redis-side dicts -> JSON values (tuples to lists)."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def effort_summary(rounds: list[dict]) -> dict:
    """Average effort (sum of round difficulty / sum of network difficulty)
    over ``rounds``, and luck = its inverse (1.0 = as many blocks as expected,
    above = more)."""
    rd = sum(r["round_difficulty"] for r in rounds)
    nd = sum(r["network_difficulty"] for r in rounds)
    avg = rd / nd if nd > 0 and rounds else None
    return {"blocks": len(rounds), "average_effort": avg, "luck": (1.0 / avg) if avg else None}


def series_json(points) -> list[list[float]]:
    return [[int(t), float(h)] for t, h in points]


class PoolData:
    """Blocking reads composed for the API. ``reader`` is the accounting
    store's read side (``hashcoop.pool.accounting.read.AccountingReader``);
    ``payouts`` is the ledger's (``hashcoop.payouts.reads.PayoutReads``) or
    None. The wiring point builds both and hands them in."""

    def __init__(self, reader, payouts=None, clock: Callable[[], float] | None = None):
        self.reader = reader
        self.payouts = payouts
        self.clock = clock or reader.clock

    # -- pool ------------------------------------------------------------------------
    def summary(self) -> dict:
        r = self.reader
        s = r.pool_summary(blocks=LUCK_BLOCKS)
        found = r.blocks_found()
        blocks = s.pop("blocks")
        out = _clean(s)
        out["blocks_found"] = found
        out["last_block"] = blocks[0] if blocks else None
        out["recent_blocks"] = blocks
        out["luck"] = effort_summary(blocks)
        return out

    def hashrate(self, address: str | None, worker: str | None, resolution: str, since: float | None) -> list:
        return series_json(self.reader.hashrate_series(address, worker, resolution=resolution, since=since))

    # -- addresses and workers ---------------------------------------------------------
    def address(self, address: str) -> dict | None:
        stats = self.reader.address_stats(address)
        pay = self.payouts.address(address) if self.payouts is not None else None
        if stats is None and not (pay and pay["known"]):
            return None
        out = _clean(stats) if stats is not None else {
            "address": address, "accepted": 0, "difficulty": 0.0, "first_share": None, "last_share": None,
            "rejected": {}, "rejected_total": 0, "rejected_difficulty": 0.0, "last_reject": None, "best_share": None,
            "online": False, "hashrate": {"1m": 0.0, "5m": 0.0, "1h": 0.0, "24h": 0.0}, "workers": [], "workers_online": 0,
        }
        out["blocks"] = self.address_blocks(address, pay)
        out["payouts"] = pay
        return out

    def address_blocks(self, address: str, pay: dict | None = None, limit: int = ADDRESS_BLOCKS) -> list[dict]:
        """The address's part of each recent block's PPLNS window: credited
        difficulty, its fraction of the window, and the reward that fraction
        stands for (before the pool fee); with a ledger, ``payout``: the
        block's status there and what it credited this address (null until
        the block is credited)."""
        rd = self.reader
        rounds = rd.rounds(limit=limit)
        if not rounds:
            return []
        parts = rd.address_parts(address, [b["hash"] for b in rounds])
        statuses = None
        if pay is not None:
            statuses = self.payouts.block_statuses([b["hash"] for b in rounds]) or {}
            credited: dict[str, int] = {}
            for c in pay["credits"]:
                credited[c["block_hash"]] = credited.get(c["block_hash"], 0) + c["amount"]
        out = []
        for b, part in zip(rounds, parts):
            if part is None:
                continue
            mine, total = part
            frac = mine / total if total > 0 else 0.0
            out.append({
                "hash": b["hash"], "height": b["height"], "time": b["time"], "status": b["status"],
                "reward": b["reward"], "credited_difficulty": mine, "window_total": total, "fraction": frac,
                "reward_share": int(b["reward"] * frac) if b["reward"] is not None else None,
                "payout": None if statuses is None else {
                    "status": statuses[b["hash"]]["status"] if b["hash"] in statuses else None,
                    "credited": credited.get(b["hash"]),
                },
            })
        if pay is not None:
            out.extend(self._credited_blocks(pay, {b["hash"] for b in out}))
            out.sort(key=lambda b: (-b["height"], b["hash"]))
        return out

    def _credited_blocks(self, pay: dict, seen: set[str]) -> list[dict]:
        """Credited blocks older than the recent rounds (from the ledger's
        credits, with the pool's own block status from Redis)."""
        rd = self.reader
        rows: dict[str, dict] = {}
        for c in pay["credits"]:
            h = c["block_hash"]
            if h in seen or c["kind"] != "share":
                continue
            total = c["window_total"] or 0.0
            mine = c["difficulty"] or 0.0
            frac = mine / total if total > 0 else 0.0
            rows[h] = {"hash": h, "height": c["height"], "time": c["time"], "status": None, "reward": c["reward"],
                       "credited_difficulty": mine, "window_total": total, "fraction": frac,
                       "reward_share": int(c["reward"] * frac), "payout": {"status": "credited", "credited": c["amount"]}}
        if rows:
            for (t, st), row in zip(rd.block_times(list(rows)), rows.values()):
                if t is not None:
                    row["time"] = t
                row["status"] = st
        return list(rows.values())

    def worker(self, address: str, worker: str) -> dict | None:
        w = self.reader.worker_stats(address, worker)
        return _clean(w) if w is not None else None

    # -- block withholding ----------------------------------------------------------------
    def withholding_verdicts(self, alpha: float) -> tuple[int, int, list, list]:
        """(workers checked, addresses checked, flagged workers, flagged
        addresses), the flagged as ``hashcoop.pool.core.withholding.Verdict`` lists, most
        suspicious first."""
        workers, addresses = self.reader.expected_blocks()
        return len(workers), len(addresses), suspects(workers, alpha), suspects(addresses, alpha)

    def withholding(self, alpha: float, limit: int) -> dict:
        n_w, n_a, fw, fa = self.withholding_verdicts(alpha)
        return {
            "alpha": alpha, "lambda_threshold": lambda_threshold(alpha),
            "workers_checked": n_w, "addresses_checked": n_a,
            "flagged_workers": len(fw), "flagged_addresses": len(fa),
            "workers": [v.as_json() for v in fw[:limit]], "addresses": [v.as_json() for v in fa[:limit]],
        }

    # -- blocks and window ----------------------------------------------------------------
    def blocks(self, limit: int, offset: int) -> dict:
        rd = self.reader
        rounds = rd.rounds(limit=limit, offset=offset)
        total = rd.blocks_found()
        reports = self.payouts.block_statuses([b["hash"] for b in rounds], offset) if self.payouts is not None else None
        for b in rounds:
            b["payout"] = reports.get(b["hash"]) if reports is not None else None
        return {"total": total, "limit": limit, "offset": offset, "blocks": rounds}

    def block(self, block_hash: str) -> dict | None:
        rd = self.reader
        rank = rd.block_rank(block_hash)
        if rank is None:
            return None
        found = [b for b in rd.rounds(limit=1, offset=rank) if b["hash"] == block_hash]
        if not found:
            return None
        b = found[0]
        snap = rd.block_snapshot(block_hash)
        if snap is not None:
            amounts = sorted(snap.amounts.items(), key=lambda kv: -kv[1])
            b["window"] = {
                "n": snap.n_target, "total": snap.total, "complete": snap.complete, "first_seq": snap.first_seq,
                "last_seq": snap.seq, "network_difficulty": snap.network_difficulty, "archived": snap.archived,
                "by_address": [{"address": a, "difficulty": d, "fraction": d / snap.total if snap.total > 0 else 0.0}
                               for a, d in amounts],
            }
        else:
            b["window"] = None
        b["payout"] = self.payouts.block(block_hash) if self.payouts is not None else None
        return b

    def window(self) -> dict:
        w = self.reader.window()
        total = w["total"]
        return {
            "n": w["n"], "network_difficulty": w["network_difficulty"], "total": total, "complete": w["complete"],
            "first_seq": w["first_seq"],
            "by_address": [{"address": a, "difficulty": d, "fraction": d / total if total > 0 else 0.0}
                           for a, d in w["by_address"].items()],
        }
