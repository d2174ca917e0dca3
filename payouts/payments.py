"""Payment planning and reconciliation decisions. Pure.

Batching: balances at or above the minimum that are not set aside, largest
first (ties by address), cut into batches of at most ``max_outputs``.

Fee bearer: with ``pool`` each payee receives exactly what it is owed and
the wallet pays the fee out of its change; with ``miners`` the wallet takes
the fee out of the payees' outputs (Bitcoin Core's ``subtractFeeFromOutputs``:
an equal share each, the first payee also bears the indivisible remainder).
A payee's debit is always the full amount owed.

Reconciliation of a stored transaction (statuses ``signed`` and ``sent``)
against the wallet and the node:

* confirmed at least ``confirmations`` deep -> ``confirm``;
* in a block or in the mempool -> ``sent`` (mark sent if it was only signed);
* conflicted (a transaction spending the same coins is in the chain,
  ``gettransaction`` confirmations < 0) at least ``confirmations`` deep ->
  ``fail`` (it can never confirm: the debits are given back);
* otherwise (nobody has it) -> ``broadcast`` the stored transaction again;
  never a new one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True, slots=True)
class Payee:
    address: str
    owed: int


def plan_batches(balances: Iterable[tuple[str, int]], min_payout: int, max_outputs: int) -> list[list[Payee]]:
    if max_outputs < 1:
        raise ValueError("max_outputs must be at least 1")
    payees = [Payee(a, v) for a, v in balances if v >= min_payout and v > 0]
    payees.sort(key=lambda p: (-p.owed, p.address.encode()))
    return [payees[i:i + max_outputs] for i in range(0, len(payees), max_outputs)]


def fee_shares(fee: int, n: int) -> list[int]:
    """Core's subtractFeeFromOutputs split of ``fee`` over ``n`` outputs."""
    if n < 1:
        raise ValueError("no outputs to take the fee from")
    each, rest = divmod(fee, n)
    return [each + (rest if i == 0 else 0) for i in range(n)]


def check_funded(payees: Sequence[Payee], scripts: Sequence[bytes], outputs: Sequence[tuple[int, bytes]], fee: int,
                 fee_payer: str, max_fee: int) -> list[str]:
    """Problems with a funded transaction's outputs (empty = as intended).

    ``outputs``: (value, script) of the transaction; the payees' outputs come
    first in payee order (the change goes last), ``scripts`` the payees'
    output scripts."""
    problems = []
    if fee < 0:
        problems.append(f"negative fee {fee}")
    if fee > max_fee:
        problems.append(f"fee {fee} sat is above payouts.max_tx_fee_sat ({max_fee})")
    if len(outputs) < len(payees) or len(outputs) > len(payees) + 1:
        problems.append(f"{len(outputs)} outputs for {len(payees)} payees")
        return problems
    expect = [p.owed for p in payees]
    if fee_payer == "miners":
        expect = [v - s for v, s in zip(expect, fee_shares(fee, len(payees)))]
    for i, (p, script, want) in enumerate(zip(payees, scripts, expect)):
        value, got_script = outputs[i]
        if got_script != script:
            problems.append(f"output {i} pays {got_script.hex()}, not {p.address}")
        if value != want:
            problems.append(f"output {i} to {p.address} is {value} sat, expected {want}")
    return problems


@dataclass(frozen=True, slots=True)
class TxView:
    """What the wallet and the node say about a stored transaction."""

    wallet_confirmations: int | None  # gettransaction; None = the wallet does not know it
    in_mempool: bool
    block_hash: str | None = None


def reconcile(status: str, view: TxView, confirmations: int) -> str:
    """``confirm``, ``sent``, ``fail``, ``broadcast`` or ``wait``."""
    if status not in ("signed", "sent"):
        raise ValueError(f"nothing to reconcile for a {status} payment")
    c = view.wallet_confirmations
    if c is not None and c >= confirmations:
        return "confirm"
    if (c is not None and c > 0) or view.in_mempool:
        return "sent"
    if c is not None and c <= -confirmations:
        return "fail"
    if c is not None and c < 0:
        return "wait"  # conflicted, but not deep enough to be sure
    return "broadcast"
