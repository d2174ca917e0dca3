"""Bitcoin Core's wallet session (bitcoind-wallet.json, recorded by
ops/record_wallet_vectors.py) and how another run of the same session is
held to it.

A run agrees with the recording when, step by step, it has the same
outcome (result or error), the same error codes and messages, the same
fields with the same JSON types, and the same values, except at the
recording's ``volatile`` paths (what differed between two runs on Core:
keys, clocks, block hashes). There a string must stand in the same
relation to the rest of the session as on Core: each volatile string is
replaced by the first path it appeared at, so "the txid ``send`` returned"
must come back wherever Core gave that txid again, and a number, bool or
null must only have the same type.

    from tests.vectors.wallet import recording, differences
    assert differences(recording(), my_steps) == []
"""
from __future__ import annotations

import json
from typing import Any

from tests.vectors import DIR

FILE = DIR / "bitcoind-wallet.json"

# The paths whose values depend on the length of the one ECDSA signature
# broadcast in the session (``sign``): Core grinds for a low R, so it is
# 71 bytes with its sighash byte nearly always, and 70 about one run in 128.
SIGNATURE_SIZED = (
    "getmempoolentry/result/vsize", "getmempoolentry/result/weight", "getmempoolentry/result/descendantsize",
    "getmempoolentry/result/ancestorsize", "getmempoolentry/result/chunkweight",
    "getrawtransaction from the mempool/result/size", "getrawtransaction from the mempool/result/vsize",
    "getrawtransaction from the mempool/result/weight", "listunspent with own change unconfirmed/result/0/ancestorsize",
)


def recording() -> dict:
    """{"node", "steps", "volatile"} as recorded (a fresh copy)."""
    return json.loads(FILE.read_text())


def signature_length(steps: list[dict]) -> int:
    """Bytes of the ECDSA signature (with its sighash byte) in the broadcast payment."""
    step = next(s for s in steps if s["name"] == "getrawtransaction from the mempool")
    return len(step["result"]["vin"][0]["txinwitness"][0]) // 2


def _is_volatile(path: str, volatile: set[str]) -> bool:
    while True:
        if path in volatile:
            return True
        if "/" not in path:
            return False
        path = path.rsplit("/", 1)[0]


def canonical(steps: list[dict], volatile: set[str]) -> list[dict]:
    """``steps`` with every volatile value replaced (see the module help)."""
    first_seen: dict[str, str] = {}

    def walk(value: Any, path: str) -> Any:
        if path in volatile and isinstance(value, (dict, list)):
            return "<volatile>"
        if isinstance(value, dict):  # walked in key order, so tokens do not depend on field order
            done = {k: walk(value[k], f"{path}/{k}") for k in sorted(value)}
            return {k: done[k] for k in value}
        if isinstance(value, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(value)]
        if not _is_volatile(path, volatile):
            return value
        if isinstance(value, str):
            return "<" + first_seen.setdefault(value, path) + ">"
        return f"<{type(value).__name__}>"

    return [{"name": s["name"], **walk({k: v for k, v in s.items() if k != "name"}, s["name"])} for s in steps]


def differences(recorded: dict, steps: list[dict], extra_volatile: tuple[str, ...] = ()) -> list[str]:
    """Where ``steps`` (a run of ops/record_wallet_vectors.session) departs
    from ``recorded``; one line per difference, empty when they agree."""
    volatile = set(recorded["volatile"]) | set(extra_volatile)
    want = canonical(recorded["steps"], volatile)
    got = canonical(steps, volatile)
    out: list[str] = []
    if [s["name"] for s in want] != [s["name"] for s in got]:
        return [f"the steps differ: {[s['name'] for s in got]}"]

    def compare(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in a:
                if k not in b:
                    out.append(f"{path}/{k}: missing (Core: {_short(a[k])})")
                else:
                    compare(a[k], b[k], f"{path}/{k}")
            for k in b:
                if k not in a:
                    out.append(f"{path}/{k}: not in Core's answer ({_short(b[k])})")
            if [k for k in a if k in b] != [k for k in b if k in a]:
                out.append(f"{path}: keys in another order")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                compare(x, y, f"{path}/{i}")
        elif type(a) is not type(b) or a != b:
            out.append(f"{path}: Core {_short(a)}, got {_short(b)}")

    for a, b in zip(want, got):
        compare({k: v for k, v in a.items() if k != "name"}, {k: v for k, v in b.items() if k != "name"}, a["name"])
    return out


def _short(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 120 else text[:117] + "..."
