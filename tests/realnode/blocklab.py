"""Blocks built from a getblocktemplate answer, and ways to break them, for
submitting the same bytes to Bitcoin Core and to the stand-in.

A :class:`Draft` is every field of a block that a case may change: header
fields, the coinbase (height push, value, witness commitment and reserved
value, sequence, locktime, extra outputs), the transactions, the merkle
root, and whether the proof of work is met. :data:`MUTATIONS` are named,
seeded changes to a draft; ``fixed_cases`` are the reject cases recorded
in tests/vectors/bitcoind-regtest.json, rebuilt on a live chain.

Coins the cases spend pay to P2WSH(OP_TRUE), which anyone can spend with
the witness ``[OP_TRUE]``: Core checks scripts and the stand-in does not,
so every transaction here is valid by script and the verdicts differ only
where the rules the stand-in does check differ.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace
from typing import Callable

from hashcoop.pool.core.btc.block import build_header, witness_commitment, witness_commitment_script
from hashcoop.pool.core.btc.hashing import hex_to_hash, sha256d
from hashcoop.pool.core.btc.serialize import bip34_height, push_data
from hashcoop.pool.tools.devnode.consensus import Block, check_proof_of_work, compute_merkle_root, derive_target, make_tx

OP_TRUE = b"\x51"
ANYONE = b"\x00\x20" + hashlib.sha256(OP_TRUE).digest()  # P2WSH(OP_TRUE)
MINER = b"\x00\x14" + b"\x11" * 20
ZERO32 = b"\x00" * 32
MAX_FUTURE_BLOCK_TIME = 2 * 60 * 60


@dataclass(frozen=True)
class Coin:
    txid: bytes
    n: int
    value: int
    height: int  # 0 when only in the mempool


@dataclass
class Context:
    """What a getblocktemplate answer says about the next block."""

    prev: bytes
    height: int
    version: int
    bits: int
    curtime: int
    mintime: int  # median time past + 1
    coinbasevalue: int
    txs: list  # RawTx

    @classmethod
    def from_gbt(cls, gbt: dict) -> "Context":
        from hashcoop.pool.core.btc.block import parse_tx

        return cls(hex_to_hash(gbt["previousblockhash"]), gbt["height"], gbt["version"], int(gbt["bits"], 16),
                   gbt["curtime"], gbt["mintime"], gbt["coinbasevalue"],
                   [parse_tx(bytes.fromhex(t["data"]))[0] for t in gbt["transactions"]])

    @property
    def fees(self) -> int:
        return self.coinbasevalue - subsidy(self.height)


def subsidy(height: int) -> int:
    halvings = height // 150
    return 0 if halvings >= 64 else (50 * 100_000_000) >> halvings


def spend(coins: list[Coin], outputs: list[tuple[int, bytes]], *, version: int = 2, sequence: int = 0xFFFFFFFD,
          locktime: int = 0):
    """A transaction spending P2WSH(OP_TRUE) ``coins``."""
    return make_tx(version, [(c.txid, c.n, b"", sequence) for c in coins], outputs, [[OP_TRUE] for _ in coins], locktime)


@dataclass
class Draft:
    version: int
    prev: bytes
    time: int
    bits: int
    height: int
    value: int
    txs: list = field(default_factory=list)
    tag: bytes = b"/standin-vs-core/"
    script_sig: bytes | None = None  # None: BIP34 height push + tag
    cb_version: int = 2
    cb_sequence: int = 0xFFFFFFFF
    cb_locktime: int = 0
    extra_outputs: list = field(default_factory=list)
    commitment: str = "right"  # right | wrong | none | twice
    reserved: list | None = field(default_factory=lambda: [ZERO32])  # the coinbase witness; None: none
    coinbase_at: int = 0  # where the coinbase goes among the transactions
    second_coinbase: bool = False
    merkle: str = "right"  # right | flipped
    pow: str = "solve"  # solve | fail
    encoding: str = "right"  # right | trailing bytes | truncated | count too high | count too low | not hex

    @classmethod
    def from_context(cls, ctx: Context, now: int) -> "Draft":
        return cls(ctx.version, ctx.prev, max(ctx.mintime, min(ctx.curtime, now)), ctx.bits, ctx.height, ctx.coinbasevalue,
                   list(ctx.txs))

    def coinbase(self, tag: bytes | None = None):
        sig = self.script_sig if self.script_sig is not None else bip34_height(self.height) + push_data(tag or self.tag)
        outputs = [(self.value, MINER), *self.extra_outputs]
        right = witness_commitment([t.wtxid for t in self.txs])
        if self.commitment == "right":
            outputs.append((0, witness_commitment_script(right)))
        elif self.commitment == "wrong":
            outputs.append((0, witness_commitment_script(sha256d(right))))
        elif self.commitment == "twice":  # Core reads the last one
            outputs += [(0, witness_commitment_script(sha256d(right))), (0, witness_commitment_script(right))]
        witnesses = [self.reserved] if self.reserved is not None else None
        return make_tx(self.cb_version, [(ZERO32, 0xFFFFFFFF, sig, self.cb_sequence)], outputs, witnesses, self.cb_locktime)

    def build(self) -> Block:
        txs = list(self.txs)
        txs.insert(min(self.coinbase_at, len(txs)), self.coinbase())
        if self.second_coinbase:
            txs.append(self.coinbase(b"/second/"))
        root = compute_merkle_root([t.txid for t in txs])[0]
        if self.merkle == "flipped":
            root = bytes([root[0] ^ 1]) + root[1:]
        header = build_header(self.version, self.prev, root, self.time, self.bits, 0)
        return Block(solve(header, self.bits, self.pow == "solve"), txs)

    def hex(self) -> str:
        """What goes to ``submitblock``."""
        raw = self.build().raw
        if self.encoding == "trailing bytes":
            raw += b"\x00\x01"
        elif self.encoding == "truncated":
            raw = raw[:-3]
        elif self.encoding in ("count too high", "count too low"):
            raw = raw[:80] + bytes([raw[80] + (1 if self.encoding == "count too high" else -1)]) + raw[81:]
        elif self.encoding == "not hex":
            return raw.hex()[:-1] + "g"
        return raw.hex()


def solve(header: bytes, bits: int, valid: bool) -> bytes:
    """A nonce that meets (or misses) the target; a target nobody can meet
    quickly (or that is invalid) leaves the nonce at 0."""
    target = derive_target(bits)
    if valid and (target is None or target < 1 << 240):
        return header
    h = bytearray(header)
    for nonce in range(1 << 16):
        h[76:80] = nonce.to_bytes(4, "little")
        if check_proof_of_work(sha256d(bytes(h)), bits) == valid:
            return bytes(h)
    return header


# --------------------------------------------------------------------------
# mutations: (rng, draft, lab) -> what was done


class Lab:
    """What the mutations may draw on: the clock, coins, blocks seen."""

    def __init__(self, rng: random.Random, now: Callable[[], int], coin: Callable[[bool], Coin | None],
                 parent_of_tip: Callable[[], bytes]):
        self.rng = rng
        self.now = now
        self.coin = coin  # coin(mature) -> an unspent P2WSH(OP_TRUE) coin, or None
        self.parent_of_tip = parent_of_tip
        self.forks: list[tuple[bytes, int]] = []  # side-chain tips (blocks answered "inconclusive") and heights
        self.mintime = 0  # the template's: median time past + 1


def _version(rng, d, lab):
    d.version = rng.choice([1, 2, 3, 4, 0x20000000, 0x3FFFFFFF, 0x7FFFFFFF, -1, 0x20000001, 0x00000005])
    return f"version {d.version & 0xFFFFFFFF:#010x}"


def _prev(rng, d, lab):
    choice = rng.choice(["parent", "random", "fork"] if lab.forks else ["parent", "random"])
    if choice == "parent":
        d.prev = lab.parent_of_tip()
        d.height -= 1
        d.value = subsidy(d.height)
        d.txs = []
    elif choice == "random":
        d.prev = rng.randbytes(32)
    else:
        d.prev, height = rng.choice(lab.forks)
        d.height = height + 1
        d.txs = []
        d.value = subsidy(d.height)
    return f"prev {choice}"


def _time(rng, d, lab):
    now = lab.now()
    choice = rng.choice(["mtp", "mtp-1", "mintime", "future-ok", "future", "far-future", "zero"])
    base = {"mtp": 0, "mtp-1": -1, "mintime": 1}
    if choice in base:
        d.time = lab.mintime - 1 + base[choice]
    elif choice == "future-ok":
        d.time = now + MAX_FUTURE_BLOCK_TIME - 120
    elif choice == "future":
        d.time = now + MAX_FUTURE_BLOCK_TIME + 120
    elif choice == "far-future":
        d.time = 0xFFFFFFFF
    else:
        d.time = 0
    return f"time {choice}"


def _bits(rng, d, lab):
    d.bits = rng.choice([0x207FFFFE, 0x1D00FFFF, 0x2100FFFF, 0x20800000, 0x00000000, 0x207FFFFF, 0x1F0FFFFF])
    return f"bits {d.bits:08x}"


def _merkle(rng, d, lab):
    d.merkle = "flipped"
    return "merkle root flipped"


def _pow(rng, d, lab):
    d.pow = "fail"
    return "proof of work missed"


def _height(rng, d, lab):
    choice = rng.choice(["h-1", "h+1", "none", "non-minimal", "0"])
    h = d.height
    if choice == "h-1":
        d.script_sig = bip34_height(h - 1) + push_data(d.tag)
    elif choice == "h+1":
        d.script_sig = bip34_height(h + 1) + push_data(d.tag)
    elif choice == "none":
        d.script_sig = push_data(d.tag)
    elif choice == "non-minimal":
        d.script_sig = b"\x04" + h.to_bytes(4, "little") + push_data(d.tag)
    else:
        d.script_sig = b"\x00" + push_data(d.tag)
    return f"coinbase height {choice}"


def _script_sig_length(rng, d, lab):
    choice = rng.choice([1, 100, 101])
    full = bip34_height(d.height)
    d.script_sig = (full + b"\x00" * 100)[:choice] if choice > len(full) else full[:choice]
    return f"coinbase scriptSig of {choice} bytes"


def _value(rng, d, lab):
    choice = rng.choice(["+1", "-1", "0", "subsidy", "subsidy+1", "double"])
    fees = d.value - subsidy(d.height)
    d.value = {"+1": d.value + 1, "-1": d.value - 1, "0": 0, "subsidy": subsidy(d.height), "subsidy+1": subsidy(d.height) + 1,
               "double": 2 * d.value}[choice]
    return f"coinbase value {choice} (fees {fees})"


def _commitment(rng, d, lab):
    d.commitment = rng.choice(["wrong", "none", "twice"])
    return f"witness commitment {d.commitment}"


def _reserved(rng, d, lab):
    choice = rng.choice(["missing", "33 bytes", "two items", "non-zero"])
    d.reserved = {"missing": None, "33 bytes": [b"\x00" * 33], "two items": [ZERO32, ZERO32], "non-zero": [b"\x01" * 32]}[choice]
    return f"witness reserved value {choice}"


def _cb_final(rng, d, lab):
    choice = rng.choice(["locktime ahead, final sequence", "locktime ahead, sequence 0", "version 1"])
    if choice == "version 1":
        d.cb_version = 1
    else:
        d.cb_locktime = d.height + 5
        d.cb_sequence = 0xFFFFFFFF if choice.endswith("final sequence") else 0
    return f"coinbase {choice}"


def _cb_outputs(rng, d, lab):
    choice = rng.choice(["op_return", "anyone", "empty script"])
    d.extra_outputs.append((0, {"op_return": b"\x6a\x04test", "anyone": ANYONE, "empty script": b""}[choice]))
    return f"extra coinbase output {choice}"


def _coinbase_place(rng, d, lab):
    if d.txs and rng.random() < 0.5:
        d.coinbase_at = 1
        return "coinbase not first"
    d.second_coinbase = True
    return "second coinbase"


def _drop_txs(rng, d, lab):
    keep_value = rng.random() < 0.5
    d.txs = []
    if not keep_value:
        d.value = subsidy(d.height)
    return "no transactions" + (", fees still claimed" if keep_value else "")


def _dup_tx(rng, d, lab):
    if not d.txs:
        return _extra_tx(rng, d, lab)
    t = rng.choice(d.txs)
    if rng.random() < 0.5:
        d.txs.append(t)
        return "last transaction twice (merkle mutation)"
    d.txs.insert(0, t)
    return "a transaction twice"


def _reverse_txs(rng, d, lab):
    d.txs.reverse()
    return "transactions reversed"


def _extra_tx(rng, d, lab):
    """One more transaction of our own, right or wrong."""
    kind = rng.choice(["valid", "immature", "overspend", "missing input", "duplicate input", "nonfinal", "relative lock",
                       "negative output", "too large output", "double spend", "no witness commitment", "sigops"])
    coin = lab.coin(kind != "immature")
    if coin is None:
        return "no coin to spend"
    value = coin.value - 2_000
    tx = None
    if kind in ("valid", "immature", "no witness commitment"):
        tx = spend([coin], [(value, ANYONE)])
        if kind == "no witness commitment":
            d.commitment = "none"
    elif kind == "overspend":
        tx = spend([coin], [(coin.value + 1, ANYONE)])
    elif kind == "missing input":
        tx = spend([Coin(rng.randbytes(32), 0, coin.value, 1)], [(value, ANYONE)])
    elif kind == "duplicate input":
        tx = spend([coin, coin], [(value, ANYONE)])
    elif kind == "nonfinal":
        tx = spend([coin], [(value, ANYONE)], sequence=0, locktime=d.height + 10)
    elif kind == "relative lock":
        tx = spend([coin], [(value, ANYONE)], sequence=d.height + 50)
    elif kind == "negative output":
        tx = spend([coin], [(-1, ANYONE)])
    elif kind == "too large output":
        tx = spend([coin], [(21_000_001 * 100_000_000, ANYONE)])
    elif kind == "sigops":  # 20,001 OP_CHECKSIG in an output: 80,004 sigop cost, over the block's 80,000
        tx = spend([coin], [(value, b"\xac" * 20_001)])
    elif kind == "double spend":
        d.txs.append(spend([coin], [(value - 1, ANYONE)]))
        tx = spend([coin], [(value, ANYONE)])
    d.txs.append(tx)
    if kind in ("valid", "no witness commitment"):
        d.value += 2_000
    return f"extra transaction: {kind}"


def _encoding(rng, d, lab):
    d.encoding = rng.choice(["trailing bytes", "truncated", "count too high", "count too low", "not hex"])
    return f"encoding: {d.encoding}"


MUTATIONS: dict[str, Callable] = {
    "version": _version, "prev": _prev, "time": _time, "bits": _bits, "merkle": _merkle, "pow": _pow,
    "height": _height, "scriptsig length": _script_sig_length, "value": _value, "commitment": _commitment,
    "reserved": _reserved, "coinbase finality": _cb_final, "coinbase outputs": _cb_outputs,
    "coinbase place": _coinbase_place, "drop txs": _drop_txs, "dup tx": _dup_tx, "reverse txs": _reverse_txs,
    "extra tx": _extra_tx, "encoding": _encoding,
}


def mutate(draft: Draft, lab: Lab, n: int) -> tuple[Draft, list[str]]:
    d = replace(draft, txs=list(draft.txs), extra_outputs=list(draft.extra_outputs))
    names = lab.rng.sample(sorted(MUTATIONS), n)
    return d, [MUTATIONS[name](lab.rng, d, lab) for name in names]
