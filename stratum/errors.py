"""Reject reasons (domain values) to Stratum V1 error codes — only here, at
the edge. Codes follow the de-facto Stratum V1 table:
20 other, 21 job not found / stale, 22 duplicate, 23 low difficulty,
24 unauthorized worker, 25 not subscribed."""
from __future__ import annotations

import orjson

from hashcoop.pool.core.shares import Reject

ERRORS: dict[str, tuple[int, str]] = {
    Reject.UNKNOWN_JOB: (21, "Job not found"),
    Reject.STALE_JOB: (21, "Stale job"),
    Reject.DUPLICATE: (22, "Duplicate share"),
    Reject.HIGH_HASH: (23, "Low difficulty share"),
    Reject.UNAUTHORIZED: (24, "Unauthorized worker"),
    Reject.NOT_SUBSCRIBED: (25, "Not subscribed"),
    Reject.BAD_EXTRANONCE2: (20, "Invalid extranonce2"),
    Reject.BAD_NTIME: (20, "ntime out of range"),
    Reject.BAD_NONCE: (20, "Invalid nonce"),
    Reject.BAD_VERSION: (20, "Version bits outside the negotiated mask"),
    Reject.BAD_PARAMS: (20, "Invalid parameters"),
}

# The error member of a reply, pre-serialised: `[code,"message",null]`.
ERROR_JSON: dict[str, bytes] = {r: orjson.dumps([c, m, None]) for r, (c, m) in ERRORS.items()}

