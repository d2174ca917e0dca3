"""Bitcoin wire serialization helpers: compact sizes, script pushes, BIP34."""
from __future__ import annotations

import struct


def compact_size(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative size")
    if n < 0xFD:
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def read_compact_size(buf: bytes, pos: int) -> tuple[int, int]:
    """Return (value, new position)."""
    first = buf[pos]
    if first < 0xFD:
        return first, pos + 1
    if first == 0xFD:
        return struct.unpack_from("<H", buf, pos + 1)[0], pos + 3
    if first == 0xFE:
        return struct.unpack_from("<I", buf, pos + 1)[0], pos + 5
    return struct.unpack_from("<Q", buf, pos + 1)[0], pos + 9


def push_data(data: bytes) -> bytes:
    """A minimal script push of ``data`` (OP_PUSHBYTES_n / OP_PUSHDATA1/2)."""
    n = len(data)
    if n < 0x4C:
        return bytes((n,)) + data
    if n <= 0xFF:
        return b"\x4c" + bytes((n,)) + data
    if n <= 0xFFFF:
        return b"\x4d" + struct.pack("<H", n) + data
    return b"\x4e" + struct.pack("<I", n) + data


def script_num(n: int) -> bytes:
    """CScriptNum serialization (minimal, little-endian, sign bit)."""
    if n == 0:
        return b""
    neg = n < 0
    v = -n if neg else n
    out = bytearray()
    while v:
        out.append(v & 0xFF)
        v >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if neg else 0x00)
    elif neg:
        out[-1] |= 0x80
    return bytes(out)


def bip34_height(height: int) -> bytes:
    """The BIP34 height push that must start a coinbase scriptSig.

    Bitcoin Core's CScript() << nHeight: OP_0 for 0, OP_1..OP_16 for 1..16,
    otherwise a minimal CScriptNum push.
    """
    if height < 0:
        raise ValueError("negative height")
    if height == 0:
        return b"\x00"
    if height <= 16:
        return bytes((0x50 + height,))
    return push_data(script_num(height))


def u32(n: int) -> bytes:
    return struct.pack("<I", n & 0xFFFFFFFF)


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)
