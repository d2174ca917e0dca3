"""A parsed getblocktemplate answer. Pure: no I/O."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hashcoop.pool.core.btc.address import Network
from hashcoop.pool.core.btc.block import block_subsidy, witness_commitment, witness_commitment_script
from hashcoop.pool.core.btc.hashing import hex_to_hash
from hashcoop.pool.core.btc.target import bits_to_target

# the BIP141 commitment of a block holding only its coinbase, as Core's
# getblocktemplate gives it (default_witness_commitment) for an empty mempool
EMPTY_BLOCK_WITNESS_COMMITMENT = witness_commitment_script(witness_commitment([]))


class TemplateError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TemplateTx:
    data: bytes  # raw transaction, witness serialization when it has one
    txid: bytes  # internal byte order
    wtxid: bytes
    fee: int


@dataclass(frozen=True, slots=True)
class Template:
    height: int
    prevhash: bytes  # internal byte order, as in the header
    version: int
    bits: int
    target: int
    curtime: int
    mintime: int
    coinbasevalue: int  # satoshis: subsidy plus fees
    transactions: tuple[TemplateTx, ...]
    witness_commitment: bytes | None  # the output script, from default_witness_commitment
    longpollid: str | None
    coinbaseaux: bytes = b""
    node: str = ""  # the node that served it
    signet_challenge: bytes | None = None  # the script a signet block's solution must satisfy (signet only)

    @property
    def prevhash_hex(self) -> str:
        return self.prevhash[::-1].hex()

    @property
    def fees(self) -> int:
        return sum(t.fee for t in self.transactions)

    @classmethod
    def from_gbt(cls, gbt: dict, node: str = "") -> "Template":
        """Validate and parse Bitcoin Core's getblocktemplate result."""
        try:
            txs = []
            for t in gbt["transactions"]:
                txs.append(
                    TemplateTx(
                        data=bytes.fromhex(t["data"]),
                        txid=hex_to_hash(t["txid"]),
                        wtxid=hex_to_hash(t.get("hash", t["txid"])),
                        fee=int(t.get("fee", 0)),
                    )
                )
            wc = gbt.get("default_witness_commitment")
            aux = gbt.get("coinbaseaux") or {}
            aux_bytes = b"".join(bytes.fromhex(v) for v in aux.values() if isinstance(v, str))
            challenge = gbt.get("signet_challenge")
            bits = int(gbt["bits"], 16)
            tpl = cls(
                height=int(gbt["height"]),
                prevhash=hex_to_hash(gbt["previousblockhash"]),
                version=int(gbt["version"]),
                bits=bits,
                target=int(gbt["target"], 16) if "target" in gbt else bits_to_target(bits),
                curtime=int(gbt["curtime"]),
                mintime=int(gbt.get("mintime", 0)),
                coinbasevalue=int(gbt["coinbasevalue"]),
                transactions=tuple(txs),
                witness_commitment=bytes.fromhex(wc) if wc else None,
                longpollid=gbt.get("longpollid"),
                coinbaseaux=aux_bytes,
                node=node,
                signet_challenge=bytes.fromhex(challenge) if challenge is not None else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise TemplateError(f"malformed getblocktemplate result: {e!r}") from None
        if tpl.height < 1 or tpl.coinbasevalue < 0:
            raise TemplateError("malformed getblocktemplate result: height or coinbasevalue out of range")
        return tpl


def successor(parent: Template, block_hash: bytes, block_time: int, network: Network) -> Template | None:
    """The template of an empty block on ``block_hash``, a block the pool
    has just found on ``parent`` (with header time ``block_time``), so
    that miners stop working on the replaced tip at once instead of when
    the node's own template arrives. Pure. None where the next block's
    difficulty depends on more than the parent: at a retarget height, and
    on chains with minimum-difficulty blocks (testnet3, testnet4).

    * height, previous block, version and bits follow from the parent (no
      retarget, and a version the parent's template allowed is valid), and
      so do the serving node and a signet's challenge;
    * the value is the subsidy alone: no transaction is included;
    * ``mintime`` is ``block_time + 1``. That is never below what the node
      would give (median time past + 1): ``block_time`` exceeded the median
      of the eleven blocks ending at the old tip, so at most five of the
      ten blocks kept in the new window are later than ``block_time``, and
      the median of the new window is at most ``block_time``.
    """
    height = parent.height + 1
    if network.min_difficulty_blocks or (network.retarget_interval and height % network.retarget_interval == 0):
        return None
    return dataclasses.replace(
        parent,
        height=height,
        prevhash=block_hash,
        curtime=block_time + 1,
        mintime=block_time + 1,
        coinbasevalue=block_subsidy(height, network.halving_interval),
        transactions=(),
        witness_commitment=EMPTY_BLOCK_WITNESS_COMMITMENT,
        longpollid=None,
        coinbaseaux=b"",
    )


# OP_TRUE (OP_1) to OP_16: a signet challenge of one of these alone is met by
# an empty solution (bitcoind -signet -signetchallenge=51).
_TRUE_OPCODES = frozenset(range(0x51, 0x61))


def signet_needs_solution(challenge: bytes) -> bool:
    """Whether a signet block must carry a solution (a signature in its
    coinbase's signet commitment) to meet ``challenge``. hashcoop adds none,
    so on such a signet Bitcoin Core rejects every block the pool finds
    (``bad-signet-blksig``). Only a challenge that is a single OP_TRUE..OP_16
    is taken as met without one; anything else (the default signet's 1-of-2
    multisig, any key or script) is taken as needing it."""
    return not (len(challenge) == 1 and challenge[0] in _TRUE_OPCODES)
