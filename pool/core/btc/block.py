"""Headers, transactions' witness form, witness commitments and blocks."""
from __future__ import annotations

import struct

from hashcoop.pool.core.btc.hashing import merkle_root, sha256d
from hashcoop.pool.core.btc.serialize import compact_size, read_compact_size

WITNESS_COMMITMENT_HEADER = b"\xaa\x21\xa9\xed"
WITNESS_RESERVED_VALUE = b"\x00" * 32


def build_header(version: int, prevhash: bytes, merkle: bytes, ntime: int, bits: int, nonce: int) -> bytes:
    """An 80-byte header. ``prevhash`` and ``merkle`` in internal byte order."""
    return (
        struct.pack("<I", version & 0xFFFFFFFF)
        + prevhash
        + merkle
        + struct.pack("<III", ntime, bits, nonce)
    )


def parse_header(header: bytes) -> dict:
    if len(header) != 80:
        raise ValueError("a header is 80 bytes")
    version, = struct.unpack_from("<I", header, 0)
    ntime, bits, nonce = struct.unpack_from("<III", header, 68)
    return {
        "version": version,
        "prevhash": header[4:36],
        "merkle_root": header[36:68],
        "time": ntime,
        "bits": bits,
        "nonce": nonce,
    }


def block_subsidy(height: int, halving_interval: int) -> int:
    """The new coins a block at ``height`` may claim, in satoshis (GetBlockSubsidy)."""
    halvings = height // halving_interval
    if halvings >= 64:
        return 0
    return (50 * 100_000_000) >> halvings


def witness_commitment(wtxids: list[bytes], reserved: bytes = WITNESS_RESERVED_VALUE) -> bytes:
    """The 32-byte BIP141 commitment. ``wtxids`` excludes the coinbase (whose
    wtxid is taken as 32 zero bytes)."""
    root = merkle_root([b"\x00" * 32, *wtxids])
    return sha256d(root + reserved)


def witness_commitment_script(commitment: bytes) -> bytes:
    return b"\x6a\x24" + WITNESS_COMMITMENT_HEADER + commitment


def coinbase_with_witness(coinbase: bytes, reserved: bytes = WITNESS_RESERVED_VALUE) -> bytes:
    """Turn a non-witness coinbase (what Stratum miners hash) into its
    witness serialization carrying the witness reserved value."""
    return coinbase[:4] + b"\x00\x01" + coinbase[4:-4] + b"\x01" + compact_size(len(reserved)) + reserved + coinbase[-4:]


def serialize_block(header: bytes, txs: list[bytes]) -> bytes:
    """A block from its header and raw transactions (coinbase first)."""
    return header + compact_size(len(txs)) + b"".join(txs)


class RawTx:
    """A raw transaction split just enough to know its ids and witness.

    Parses the full structure, so it also rejects malformed bytes.
    """

    __slots__ = ("raw", "stripped", "has_witness", "n_inputs", "outputs", "inputs", "version", "locktime", "witnesses")

    def __init__(self, raw: bytes, inputs, outputs, version, locktime, witnesses, stripped: bytes):
        self.raw = raw
        self.inputs = inputs  # list of (prev_txid bytes, prev_index, script_sig, sequence)
        self.outputs = outputs  # list of (value, script)
        self.version = version
        self.locktime = locktime
        self.witnesses = witnesses  # list per input of list of stack items, or None
        self.has_witness = witnesses is not None
        self.stripped = stripped
        self.n_inputs = len(inputs)

    @property
    def txid(self) -> bytes:
        return sha256d(self.stripped)

    @property
    def wtxid(self) -> bytes:
        return sha256d(self.raw)

    @property
    def weight(self) -> int:
        return len(self.stripped) * 3 + len(self.raw)

    def is_coinbase(self) -> bool:
        return self.n_inputs == 1 and self.inputs[0][0] == b"\x00" * 32 and self.inputs[0][1] == 0xFFFFFFFF


def parse_tx(buf: bytes, pos: int = 0) -> tuple[RawTx, int]:
    """Parse one transaction at ``pos``; return it and the position after it."""
    start = pos
    version, = struct.unpack_from("<i", buf, pos)
    pos += 4
    segwit = False
    if buf[pos] == 0 and pos + 1 < len(buf) and buf[pos + 1] == 1:
        segwit = True
        pos += 2
    body_start = pos
    n_in, pos = read_compact_size(buf, pos)
    inputs = []
    for _ in range(n_in):
        prev = buf[pos:pos + 32]
        idx, = struct.unpack_from("<I", buf, pos + 32)
        pos += 36
        slen, pos = read_compact_size(buf, pos)
        script = buf[pos:pos + slen]
        pos += slen
        seq, = struct.unpack_from("<I", buf, pos)
        pos += 4
        if len(prev) != 32 or len(script) != slen:
            raise ValueError("truncated transaction")
        inputs.append((prev, idx, script, seq))
    n_out, pos = read_compact_size(buf, pos)
    outputs = []
    for _ in range(n_out):
        value, = struct.unpack_from("<q", buf, pos)
        pos += 8
        slen, pos = read_compact_size(buf, pos)
        script = buf[pos:pos + slen]
        if len(script) != slen:
            raise ValueError("truncated transaction")
        pos += slen
        outputs.append((value, script))
    body_end = pos
    witnesses = None
    if segwit:
        witnesses = []
        for _ in range(n_in):
            n_items, pos = read_compact_size(buf, pos)
            items = []
            for _ in range(n_items):
                ilen, pos = read_compact_size(buf, pos)
                item = buf[pos:pos + ilen]
                if len(item) != ilen:
                    raise ValueError("truncated witness")
                pos += ilen
                items.append(item)
            witnesses.append(items)
    locktime, = struct.unpack_from("<I", buf, pos)
    pos += 4
    raw = buf[start:pos]
    if segwit:
        stripped = buf[start:start + 4] + buf[body_start:body_end] + buf[pos - 4:pos]
    else:
        stripped = raw
    return RawTx(bytes(raw), inputs, outputs, version, locktime, witnesses, bytes(stripped)), pos


def parse_block(buf: bytes) -> tuple[bytes, list[RawTx]]:
    """Split a serialized block into its header and transactions.

    Raises ValueError on malformed or trailing bytes.
    """
    if len(buf) < 81:
        raise ValueError("block too short")
    header = buf[:80]
    n, pos = read_compact_size(buf, 80)
    txs = []
    try:
        for _ in range(n):
            tx, pos = parse_tx(buf, pos)
            txs.append(tx)
    except (struct.error, IndexError) as e:
        raise ValueError(f"truncated block: {e}") from None
    if pos != len(buf):
        raise ValueError("trailing bytes after block")
    return header, txs
