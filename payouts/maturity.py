"""Block maturity decisions. Pure: the tracker (``hashcoop.payouts.service``) asks the
node and applies what these functions decide.

A block is in the main chain when the node's ``getblockhash(height)`` is the
block's hash. Its coinbase is spendable by the wallet at depth 101 (Bitcoin
Core's wallet counts a coinbase as mature when ``COINBASE_MATURITY + 1 -
depth`` is 0, i.e. 100 confirmations after the one that found it), so a block
is credited when its confirmations reach ``maturity_depth`` (101 or more).

* pending, in the main chain, deep enough -> ``credit`` (status credited,
  balances credited, in one database transaction);
* pending, in the main chain, not deep enough -> ``wait``;
* pending, not in the main chain (another block at its height, the chain
  not that high any more, or the node never heard of it) -> ``orphan``;
* orphaned, back in the main chain (a reorg brought it back) -> ``revive``
  (pending again; credited later like any pending block);
* orphaned and still out -> ``stay`` (re-checked while the tip is less than
  ``orphan_recheck_depth`` blocks past it);
* credited -> nothing ever changes (credits are final; a reorg deeper than
  the maturity depth is beyond what a pool can undo, and the tracker does
  not ask about credited blocks again).
"""
from __future__ import annotations

from dataclasses import dataclass

from hashcoop.payouts.states import BlockState


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the node says about one block."""

    tip_height: int
    hash_at_height: str | None  # getblockhash(height), None when the chain is not that high
    known: bool = True  # the node has the block at all (getblockheader answered)

    def in_main_chain(self, block_hash: str) -> bool:
        return self.hash_at_height == block_hash


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # credit, wait, orphan, revive, stay, none
    confirmations: int  # 0 when not in the main chain
    reason: str = ""


def confirmations(height: int, tip_height: int) -> int:
    return max(0, tip_height - height + 1)


def decide(status: str, block_hash: str, height: int, view: NodeView, maturity_depth: int = 101) -> Decision:
    if maturity_depth < 101:
        raise ValueError("a coinbase is spendable at depth 101; maturity_depth must be at least that")
    main = view.in_main_chain(block_hash)
    conf = confirmations(height, view.tip_height) if main else 0
    if status == BlockState.CREDITED:
        return Decision("none", conf, "" if main else "credited block left the main chain")
    if status == BlockState.PENDING:
        if main:
            if conf >= maturity_depth:
                return Decision("credit", conf)
            return Decision("wait", conf)
        if not view.known:
            return Decision("orphan", 0, "the node does not know the block")
        if view.hash_at_height is None:
            return Decision("orphan", 0, f"the main chain ends at height {view.tip_height}, below the block")
        return Decision("orphan", 0, f"block {view.hash_at_height} is at height {height} in the main chain")
    if status == BlockState.ORPHANED:
        if main:
            return Decision("revive", conf, "back in the main chain")
        return Decision("stay", 0)
    raise ValueError(f"unknown block status {status!r}")

