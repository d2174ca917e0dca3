"""The payout ledger, read for the API and the dashboard through the payout
service's read API (``hashcoop.payouts.read``; blocking SQLAlchemy, run in the
HTTP thread pool like the Redis reads).

The ledger is the ``[database]`` the payout service (``hashcoop payouts``)
writes. The pool only reads it, and only once it exists: the default SQLite
file must be there and hold the ledger's tables (a pool whose payout
service has not run yet, or runs elsewhere on SQLite, shows ``payouts:
null`` instead of creating an empty database).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from hashcoop.payouts import read
from hashcoop.payouts.db import has_tables, make_engine
from hashcoop.pool.config import database_url

log = logging.getLogger("hashcoop.http")

ADDRESS_ROWS = 25  # credits and payments listed with an address
BLOCK_MARGIN = 50  # ledger rows read around a page of blocks


class PayoutReads:
    def __init__(self, url: str, *, fee_percent=None):
        self.url = url
        self.fee_percent = fee_percent
        self._engine = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config) -> "PayoutReads":
        return cls(database_url(config), fee_percent=config.payouts.fee_percent)

    # -- the engine, once the ledger exists ------------------------------------------------
    def engine(self):
        """The engine, or None while there is no ledger to read."""
        with self._lock:
            if self._engine is not None:
                return self._engine
            if self.url.startswith("sqlite:///") and not Path(self.url[len("sqlite:///"):]).expanduser().exists():
                return None

            engine = make_engine(self.url, writer=False, pool_size=2)
            if not has_tables(engine):
                engine.dispose()
                return None
            log.info("http: reading the payout ledger at %s", self.url.split("@")[-1])
            self._engine = engine
            return engine

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    # -- reads (blocking) ------------------------------------------------------------------
    def address(self, address: str) -> dict | None:
        """Balance, recent credits and payments of ``address``; None without a
        ledger. ``known`` is False when the ledger never heard of it."""
        engine = self.engine()
        if engine is None:
            return None

        s = read.address_summary(engine, address)
        known = s is not None
        s = s or {"owed": 0, "credited": 0, "paid": 0, "paid_confirmed": 0, "in_flight": 0, "hold_reason": None,
                  "hold_time": None, "updated": None, "blocks": 0, "pending_blocks": 0}
        credits = read.address_credits(engine, address, limit=ADDRESS_ROWS) if known else []
        payments = read.address_payments(engine, address, limit=ADDRESS_ROWS) if known else []
        return {
            "known": known,
            "owed": int(s["owed"]), "credited": int(s["credited"]), "paid": int(s["paid"]),
            "paid_confirmed": int(s["paid_confirmed"]), "in_flight": int(s["in_flight"]),
            "hold_reason": s["hold_reason"], "credited_blocks": int(s["blocks"]), "pending_blocks": int(s["pending_blocks"]),
            "credits": [{"block_hash": c["block_hash"], "height": int(c["height"]), "kind": c["kind"], "amount": int(c["amount"]),
                         "time": c["time"], "difficulty": c["difficulty"], "window_total": c["window_total"],
                         "reward": int(c["reward"]), "fee_sat": c["fee_sat"], "report_digest": c["report_digest"]}
                        for c in credits],
            "payments": [{"payment_id": int(p["payment_id"]), "txid": p["txid"], "vout": p["vout"], "amount": int(p["amount"]),
                          "owed": int(p["owed"]), "status": p["status"], "confirmations": p["confirmations"],
                          "block_hash": p["block_hash"], "created": p["created"], "sent_time": p["sent_time"],
                          "confirmed_time": p["confirmed_time"]} for p in payments],
        }

    def block_statuses(self, hashes: list[str], offset: int = 0) -> dict[str, dict] | None:
        """The ledger's view of each of ``hashes`` (blocks the pool found),
        as ``report_row``; hashes the ledger has not imported yet are left
        out. None without a ledger."""
        engine = self.engine()
        if engine is None:
            return None

        want = set(hashes)
        rows = read.blocks(engine, limit=len(hashes) + 2 * BLOCK_MARGIN, offset=max(0, offset - BLOCK_MARGIN))
        out = {r["hash"]: report_row(r) for r in rows if r["hash"] in want}
        for h in want - set(out):  # further away in the ledger's order (a late import): one by one
            r = read.block_report(engine, h)
            if r is not None:
                out[h] = report_row(r)
        return out

    def block(self, block_hash: str) -> dict | None:
        """One block's payout report: status, the credits by address and the
        stored report with its digest; for a pending block the estimate at
        the configured fee. None without a ledger or when not imported yet."""
        engine = self.engine()
        if engine is None:
            return None

        r = read.block_report(engine, block_hash, fee_percent=self.fee_percent)
        if r is None:
            return None
        out = report_row(r)
        out["credits"] = [{"address": c["address"], "kind": c["kind"], "amount": int(c["amount"])} for c in r["credits"]]
        out["report"] = r["report"]
        out["estimate"] = r["estimate"]
        return out


def report_row(r: dict) -> dict:
    """The fields of a ledger block the API shows."""
    return {
        "status": r["status"], "status_reason": r["status_reason"], "confirmations": r["confirmations"],
        "reward": int(r["reward"]) if r["reward"] is not None else None, "reward_source": r["reward_source"],
        "fee_sat": r["fee_sat"], "credited_time": r["credited_time"],
        "credited": int(r["credited"]) if "credited" in r else sum(int(c["amount"]) for c in r.get("credits", [])),
        "report_digest": r["report_digest"],
    }
