"""Regtest consensus rules for the devnode, as Bitcoin Core v31 applies them.

Pure: no I/O. Everything here is a function of bytes and numbers:

* strict block/transaction decoding (what Core's ``DecodeHexBlk`` accepts),
  built on :func:`hashcoop.pool.core.btc.block.parse_tx`, plus re-serialization;
* the context-free checks (``CheckTransaction``, merkle mutation, sigop
  counting, ``IsFinalTx``, BIP68 sequence locks, subsidy, work);
* the regtest genesis block.

Reject reasons are Core's exact strings (``Invalid.reason``); they are what
``submitblock`` answers (BIP22).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from bitcoin.core import Hash160

from hashcoop.pool.core.btc.block import WITNESS_COMMITMENT_HEADER, RawTx, build_header, parse_tx
from hashcoop.pool.core.btc.hashing import merkle_root, sha256d
from hashcoop.pool.core.btc.serialize import compact_size, read_compact_size
from hashcoop.pool.core.btc.target import bits_to_target

COIN = 100_000_000
MAX_MONEY = 21_000_000 * COIN
MAX_BLOCK_WEIGHT = 4_000_000
MAX_BLOCK_SERIALIZED_SIZE = 4_000_000
MAX_BLOCK_SIGOPS_COST = 80_000
WITNESS_SCALE_FACTOR = 4
COINBASE_MATURITY = 100
MAX_FUTURE_BLOCK_TIME = 2 * 60 * 60
MEDIAN_TIME_SPAN = 11
LOCKTIME_THRESHOLD = 500_000_000
SEQUENCE_FINAL = 0xFFFFFFFF
SEQUENCE_LOCKTIME_DISABLE_FLAG = 1 << 31
SEQUENCE_LOCKTIME_TYPE_FLAG = 1 << 22
SEQUENCE_LOCKTIME_MASK = 0x0000FFFF
SEQUENCE_LOCKTIME_GRANULARITY = 9
MAX_SCRIPT_SIZE = 10_000
MAX_PUBKEYS_PER_MULTISIG = 20
MINIMUM_WITNESS_COMMITMENT = 38
MAX_SIZE = 0x02000000  # Core's limit on any serialized vector length

REGTEST_BITS = 0x207FFFFF
REGTEST_POW_LIMIT = 0x7FFFFF << 232  # uint256S("7fffff0000...")
REGTEST_HALVING_INTERVAL = 150

OP_0 = 0x00
OP_PUSHDATA1, OP_PUSHDATA2, OP_PUSHDATA4 = 0x4C, 0x4D, 0x4E
OP_1NEGATE = 0x4F
OP_1, OP_16 = 0x51, 0x60
OP_RETURN = 0x6A
OP_CHECKSIG, OP_CHECKSIGVERIFY = 0xAC, 0xAD
OP_CHECKMULTISIG, OP_CHECKMULTISIGVERIFY = 0xAE, 0xAF

NULL_HASH = b"\x00" * 32


class Invalid(Exception):
    """A block or transaction broke a consensus rule.

    ``reason`` is Core's reject reason (the BIP22 string), ``debug`` its
    debug message. ``mutated`` marks Core's BLOCK_MUTATED results: the data
    was corrupted rather than the header invalid, so the header must not be
    marked failed (another copy of the block may still be valid).
    ``header`` marks failures found before the header entered the index.
    """

    def __init__(self, reason: str, debug: str = "", *, mutated: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.debug = debug
        self.mutated = mutated

    def __str__(self) -> str:
        # BlockValidationState::ToString()
        return f"{self.reason}, {self.debug}" if self.debug else self.reason


class DecodeError(ValueError):
    """The bytes are not a block or transaction Core would deserialize."""


@dataclass(frozen=True, slots=True)
class Coin:
    """One unspent output: what Core's coins database stores per outpoint."""

    value: int
    script: bytes
    height: int
    coinbase: bool


def money_range(v: int) -> bool:
    return 0 <= v <= MAX_MONEY


# --------------------------------------------------------------------------
# Serialization


def serialize_tx(version: int, inputs, outputs, witnesses, locktime: int, with_witness: bool = True) -> bytes:
    """Serialize a transaction from its parts (``RawTx`` field layout)."""
    parts = [struct.pack("<i", version)]
    segwit = with_witness and witnesses is not None and any(witnesses)
    if segwit:
        parts.append(b"\x00\x01")
    parts.append(compact_size(len(inputs)))
    for prev, idx, script, seq in inputs:
        parts.append(prev + struct.pack("<I", idx) + compact_size(len(script)) + script + struct.pack("<I", seq))
    parts.append(compact_size(len(outputs)))
    for value, script in outputs:
        parts.append(struct.pack("<q", value) + compact_size(len(script)) + script)
    if segwit:
        for stack in witnesses:
            parts.append(compact_size(len(stack)))
            for item in stack:
                parts.append(compact_size(len(item)) + item)
    parts.append(struct.pack("<I", locktime & 0xFFFFFFFF))
    return b"".join(parts)


def make_tx(version: int, inputs, outputs, witnesses=None, locktime: int = 0) -> RawTx:
    """Build a :class:`RawTx` from parts. ``witnesses`` is one stack per
    input, or None for a transaction without witness."""
    if witnesses is not None and not any(witnesses):
        witnesses = None
    raw = serialize_tx(version, inputs, outputs, witnesses, locktime)
    tx, end = parse_tx(raw)
    assert end == len(raw)
    return tx


def tx_with_witness(tx: RawTx, witnesses) -> RawTx:
    return make_tx(tx.version, tx.inputs, tx.outputs, witnesses, tx.locktime)


def decode_tx(buf: bytes, pos: int = 0) -> tuple[RawTx, int]:
    """Decode one transaction as Core does, or raise DecodeError.

    Stricter than :func:`parse_tx`: Core refuses a witness flag with only
    empty witnesses ("Superfluous witness record"), unknown optional-data
    flags and non-canonical compact sizes.
    """
    try:
        tx, end = parse_tx(buf, pos)
    except (struct.error, IndexError, ValueError) as e:
        raise DecodeError(f"truncated or malformed transaction: {e}") from None
    if tx.has_witness and not any(tx.witnesses):
        raise DecodeError("Superfluous witness record")
    if not tx.has_witness and not tx.inputs and tx.outputs:
        # Core read the byte after an empty input vector as a flag byte.
        raise DecodeError("Unknown transaction optional data")
    if serialize_tx(tx.version, tx.inputs, tx.outputs, tx.witnesses, tx.locktime) != tx.raw:
        raise DecodeError("non-canonical ReadCompactSize()")
    return tx, end


class Block:
    """A decoded block: header fields, transactions and their ids."""

    __slots__ = ("header", "hash", "version", "prevhash", "merkle_root", "time", "bits", "nonce", "txs", "_txids", "_raw", "_stripped_size")

    def __init__(self, header: bytes, txs: list[RawTx]):
        self.header = header
        self.hash = sha256d(header)
        self.version, = struct.unpack_from("<i", header, 0)
        self.prevhash = header[4:36]
        self.merkle_root = header[36:68]
        self.time, self.bits, self.nonce = struct.unpack_from("<III", header, 68)
        self.txs = txs
        self._txids: list[bytes] | None = None
        self._raw: bytes | None = None
        self._stripped_size: int | None = None

    @property
    def txids(self) -> list[bytes]:
        if self._txids is None:
            self._txids = [tx.txid for tx in self.txs]
        return self._txids

    @property
    def raw(self) -> bytes:
        """Serialization with witnesses (what getblock verbosity 0 shows)."""
        if self._raw is None:
            self._raw = self.header + compact_size(len(self.txs)) + b"".join(tx.raw for tx in self.txs)
        return self._raw

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def stripped_size(self) -> int:
        if self._stripped_size is None:
            self._stripped_size = 80 + len(compact_size(len(self.txs))) + sum(len(tx.stripped) for tx in self.txs)
        return self._stripped_size

    @property
    def weight(self) -> int:
        return self.stripped_size * (WITNESS_SCALE_FACTOR - 1) + self.size

    def with_coinbase(self, coinbase: RawTx) -> "Block":
        return Block(self.header, [coinbase, *self.txs[1:]])


def decode_block(data: bytes) -> Block:
    """Deserialize a block like Core's ``DecodeHexBlk`` (bytes after the
    last transaction are ignored, as Core ignores them)."""
    if len(data) < 81:
        raise DecodeError("block too short")
    try:
        n, pos = read_compact_size(data, 80)
    except (struct.error, IndexError):
        raise DecodeError("truncated transaction count") from None
    if n > MAX_SIZE:
        raise DecodeError("ReadCompactSize(): size too large")
    if bytes(compact_size(n)) != data[80:pos]:
        raise DecodeError("non-canonical ReadCompactSize()")
    txs = []
    for _ in range(n):
        tx, pos = decode_tx(data, pos)
        txs.append(tx)
    return Block(bytes(data[:80]), txs)


_HEX = re.compile(r"[0-9a-fA-F]*")


def is_hex(s: str) -> bool:
    """Core's IsHex: non-empty, even length, hex digits only."""
    return bool(s) and len(s) % 2 == 0 and _HEX.fullmatch(s) is not None


def decode_block_hex(s: str) -> Block:
    if not is_hex(s):
        raise DecodeError("not hex")
    return decode_block(bytes.fromhex(s))


# --------------------------------------------------------------------------
# Merkle trees and witness commitments


def compute_merkle_root(hashes: Sequence[bytes]) -> tuple[bytes, bool]:
    """Merkle root and Core's CVE-2012-2459 mutation flag (two equal
    siblings at any level)."""
    if not hashes:
        return NULL_HASH, False
    level = list(hashes)
    mutated = False
    while len(level) > 1:
        for i in range(0, len(level) - 1, 2):
            if level[i] == level[i + 1]:
                mutated = True
        if len(level) & 1:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0], mutated


def witness_merkle_root(txs: Sequence[RawTx]) -> bytes:
    return merkle_root([NULL_HASH] + [tx.wtxid for tx in txs[1:]])


def witness_commitment_index(coinbase: RawTx) -> int | None:
    """GetWitnessCommitmentIndex: the last coinbase output that looks like a
    witness commitment, or None."""
    pos = None
    for i, (_, script) in enumerate(coinbase.outputs):
        if len(script) >= MINIMUM_WITNESS_COMMITMENT and script[0] == OP_RETURN and script[1] == 0x24 and script[2:6] == WITNESS_COMMITMENT_HEADER:
            pos = i
    return pos


def has_witness(tx: RawTx) -> bool:
    return tx.witnesses is not None and any(tx.witnesses)


# --------------------------------------------------------------------------
# Scripts: just enough to count signature operations


def script_ops(script: bytes) -> Iterator[tuple[int | None, bytes]]:
    """Core's CScript::GetOp over a script: yields (opcode, pushed data).
    A truncated push yields (None, b"") and stops, as GetOp fails there."""
    i, n = 0, len(script)
    while i < n:
        op = script[i]
        i += 1
        if op <= OP_PUSHDATA4:
            if op < OP_PUSHDATA1:
                size = op
            else:
                width = {OP_PUSHDATA1: 1, OP_PUSHDATA2: 2, OP_PUSHDATA4: 4}[op]
                if i + width > n:
                    yield None, b""
                    return
                size = int.from_bytes(script[i:i + width], "little")
                i += width
            if i + size > n:
                yield None, b""
                return
            yield op, script[i:i + size]
            i += size
        else:
            yield op, b""


def sigop_count(script: bytes, accurate: bool) -> int:
    """CScript::GetSigOpCount(fAccurate)."""
    n = 0
    last = None
    for op, _ in script_ops(script):
        if op is None:
            break
        if op in (OP_CHECKSIG, OP_CHECKSIGVERIFY):
            n += 1
        elif op in (OP_CHECKMULTISIG, OP_CHECKMULTISIGVERIFY):
            if accurate and last is not None and OP_1 <= last <= OP_16:
                n += last - OP_1 + 1
            else:
                n += MAX_PUBKEYS_PER_MULTISIG
        last = op
    return n


def is_push_only(script: bytes) -> bool:
    for op, _ in script_ops(script):
        if op is None or op > OP_16:
            return False
    return True


def is_p2sh(script: bytes) -> bool:
    return len(script) == 23 and script[0] == 0xA9 and script[1] == 0x14 and script[22] == 0x87


def witness_program(script: bytes) -> tuple[int, bytes] | None:
    """(version, program) when ``script`` is a witness program."""
    if not 4 <= len(script) <= 42:
        return None
    op = script[0]
    if op != OP_0 and not OP_1 <= op <= OP_16:
        return None
    if script[1] + 2 != len(script):
        return None
    return (0 if op == OP_0 else op - OP_1 + 1), script[2:]


def is_unspendable(script: bytes) -> bool:
    """Outputs Core never adds to the UTXO set."""
    return (len(script) > 0 and script[0] == OP_RETURN) or len(script) > MAX_SCRIPT_SIZE


def _last_push(script_sig: bytes) -> bytes | None:
    data = b""
    for op, d in script_ops(script_sig):
        if op is None:
            return None
        if op > OP_16:
            return None
        data = d
    return data


def legacy_sigops(tx: RawTx) -> int:
    """GetLegacySigOpCount: scriptSigs and scriptPubKeys, inaccurate."""
    n = 0
    for _, _, script_sig, _ in tx.inputs:
        n += sigop_count(script_sig, False)
    for _, script in tx.outputs:
        n += sigop_count(script, False)
    return n


def _witness_sigops(version: int, program: bytes, stack: list[bytes]) -> int:
    if version == 0:
        if len(program) == 20:
            return 1
        if len(program) == 32 and stack:
            return sigop_count(stack[-1], True)
    return 0


def tx_sigop_cost(tx: RawTx, prevout_scripts: Sequence[bytes]) -> int:
    """GetTransactionSigOpCost with P2SH and witness flags (always on in
    regtest): legacy x4 + P2SH x4 + witness sigops."""
    cost = legacy_sigops(tx) * WITNESS_SCALE_FACTOR
    if tx.is_coinbase():
        return cost
    for i, (_, _, script_sig, _) in enumerate(tx.inputs):
        spk = prevout_scripts[i]
        if is_p2sh(spk):
            last = _last_push(script_sig)
            if last is not None:
                cost += sigop_count(last, True) * WITNESS_SCALE_FACTOR
        stack = tx.witnesses[i] if tx.witnesses is not None else []
        wp = witness_program(spk)
        if wp is not None:
            cost += _witness_sigops(wp[0], wp[1], stack)
        elif is_p2sh(spk) and is_push_only(script_sig):
            last = _last_push(script_sig) or b""
            wp = witness_program(last)
            if wp is not None:
                cost += _witness_sigops(wp[0], wp[1], stack)
    return cost


# --------------------------------------------------------------------------
# Transaction rules


def check_transaction(tx: RawTx) -> None:
    """CheckTransaction: context-free checks; raises Invalid."""
    if not tx.inputs:
        raise Invalid("bad-txns-vin-empty")
    if not tx.outputs:
        raise Invalid("bad-txns-vout-empty")
    if len(tx.stripped) * WITNESS_SCALE_FACTOR > MAX_BLOCK_WEIGHT:
        raise Invalid("bad-txns-oversize")
    total = 0
    for value, _ in tx.outputs:
        if value < 0:
            raise Invalid("bad-txns-vout-negative")
        if value > MAX_MONEY:
            raise Invalid("bad-txns-vout-toolarge")
        total += value
        if not money_range(total):
            raise Invalid("bad-txns-txouttotal-toolarge")
    seen = set()
    for prev, idx, _, _ in tx.inputs:
        if (prev, idx) in seen:
            raise Invalid("bad-txns-inputs-duplicate")
        seen.add((prev, idx))
    if tx.is_coinbase():
        if not 2 <= len(tx.inputs[0][2]) <= 100:
            raise Invalid("bad-cb-length")
    else:
        for prev, idx, _, _ in tx.inputs:
            if prev == NULL_HASH and idx == 0xFFFFFFFF:
                raise Invalid("bad-txns-prevout-null")


def is_final_tx(tx: RawTx, height: int, block_time: int) -> bool:
    """IsFinalTx: locktime satisfied, or every input final."""
    if tx.locktime == 0:
        return True
    if tx.locktime < (height if tx.locktime < LOCKTIME_THRESHOLD else block_time):
        return True
    return all(seq == SEQUENCE_FINAL for _, _, _, seq in tx.inputs)


def sequence_locks_ok(tx: RawTx, prev_heights: Sequence[int], height: int, prev_mtp: int, mtp_at: Callable[[int], int]) -> bool:
    """BIP68 (CalculateSequenceLocks + EvaluateSequenceLocks) for a
    transaction in a block at ``height`` whose parent has median time past
    ``prev_mtp``; ``mtp_at(h)`` is the median time past of the block at
    height ``h`` on this chain."""
    if tx.version < 2:
        return True
    min_height, min_time = -1, -1
    for (_, _, _, seq), coin_height in zip(tx.inputs, prev_heights):
        if seq & SEQUENCE_LOCKTIME_DISABLE_FLAG:
            continue
        if seq & SEQUENCE_LOCKTIME_TYPE_FLAG:
            coin_time = mtp_at(max(coin_height - 1, 0))
            min_time = max(min_time, coin_time + ((seq & SEQUENCE_LOCKTIME_MASK) << SEQUENCE_LOCKTIME_GRANULARITY) - 1)
        else:
            min_height = max(min_height, coin_height + (seq & SEQUENCE_LOCKTIME_MASK) - 1)
    return not (min_height >= height or min_time >= prev_mtp)


def derive_target(bits: int, pow_limit: int = REGTEST_POW_LIMIT) -> int | None:
    """DeriveTarget: the target of compact ``bits``, or None when it is
    negative, zero, overflowing or above the chain's proof-of-work limit."""
    size = bits >> 24
    word = bits & 0x007FFFFF
    negative = word != 0 and (bits & 0x00800000) != 0
    overflow = word != 0 and (size > 34 or (word > 0xFF and size > 33) or (word > 0xFFFF and size > 32))
    if negative or overflow:
        return None
    target = bits_to_target(bits & ~0x00800000)
    if target == 0 or target > pow_limit:
        return None
    return target


def check_proof_of_work(block_hash: bytes, bits: int, pow_limit: int = REGTEST_POW_LIMIT) -> bool:
    target = derive_target(bits, pow_limit)
    return target is not None and int.from_bytes(block_hash, "little") <= target


def block_proof(bits: int) -> int:
    """GetBlockProof: expected hashes for a block at ``bits``."""
    size = bits >> 24
    word = bits & 0x007FFFFF
    if (word != 0 and bits & 0x00800000) or (word != 0 and (size > 34 or (word > 0xFF and size > 33) or (word > 0xFFFF and size > 32))):
        return 0
    target = bits_to_target(bits & ~0x00800000)
    if target == 0:
        return 0
    return (1 << 256) // (target + 1)


def hash160(data: bytes) -> bytes:
    return Hash160(data)


# --------------------------------------------------------------------------
# Genesis

GENESIS_COINBASE = bytes.fromhex(
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d"
    "65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062"
    "616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef"
    "38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000"
)
REGTEST_GENESIS_TIME = 1296688602
REGTEST_GENESIS_NONCE = 2
REGTEST_GENESIS_HASH = bytes.fromhex("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206")[::-1]


def regtest_genesis() -> Block:
    """The regtest genesis block (mainnet's coinbase, regtest's time, bits
    and nonce)."""
    coinbase, _ = parse_tx(GENESIS_COINBASE)
    header = build_header(1, NULL_HASH, coinbase.txid, REGTEST_GENESIS_TIME, REGTEST_BITS, REGTEST_GENESIS_NONCE)
    block = Block(header, [coinbase])
    assert block.hash == REGTEST_GENESIS_HASH
    return block
