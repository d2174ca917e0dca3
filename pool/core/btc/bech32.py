"""Bech32 (BIP173) and bech32m (BIP350) segwit addresses.

python-bitcoinlib only decodes bech32 (witness v0); Taproot (v1) addresses
use bech32m. This module follows the BIP350 reference algorithm.
"""
from __future__ import annotations

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(CHARSET)}
BECH32_CONST = 1
BECH32M_CONST = 0x2BC830A3


class Bech32Error(ValueError):
    pass


def polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if ((top >> i) & 1) else 0
    return chk


def hrp_expand(hrp: str) -> list[int]:
    return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]


def _create_checksum(hrp: str, data: list[int], const: int) -> list[int]:
    values = hrp_expand(hrp) + data
    mod = polymod(values + [0] * 6) ^ const
    return [(mod >> 5 * (5 - i)) & 31 for i in range(6)]


def bech32_decode(bech: str) -> tuple[str, list[int], int]:
    """Return (hrp, data without checksum, checksum constant)."""
    if any(ord(x) < 33 or ord(x) > 126 for x in bech):
        raise Bech32Error("invalid character")
    if bech.lower() != bech and bech.upper() != bech:
        raise Bech32Error("mixed case")
    bech = bech.lower()
    pos = bech.rfind("1")
    if pos < 1 or pos + 7 > len(bech) or len(bech) > 90:
        raise Bech32Error("invalid separator position or length")
    hrp = bech[:pos]
    try:
        data = [_CHARSET_REV[x] for x in bech[pos + 1:]]
    except KeyError:
        raise Bech32Error("Invalid Base 32 character") from None
    const = polymod(hrp_expand(hrp) + data)
    if const not in (BECH32_CONST, BECH32M_CONST):
        raise Bech32Error("invalid checksum")
    return hrp, data[:-6], const


def bech32_encode(hrp: str, data: list[int], const: int) -> str:
    combined = data + _create_checksum(hrp, data, const)
    return hrp + "1" + "".join(CHARSET[d] for d in combined)


def convertbits(data, frombits: int, tobits: int, pad: bool = True) -> list[int]:
    acc = 0
    bits = 0
    ret: list[int] = []
    maxv = (1 << tobits) - 1
    max_acc = (1 << (frombits + tobits - 1)) - 1
    for value in data:
        if value < 0 or (value >> frombits):
            raise Bech32Error("invalid data value")
        acc = ((acc << frombits) | value) & max_acc
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            ret.append((acc >> bits) & maxv)
    if pad:
        if bits:
            ret.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise Bech32Error("invalid padding")
    return ret


def decode_segwit(hrp: str, addr: str) -> tuple[int, bytes]:
    """Decode a segwit address; return (witness version, witness program)."""
    hrpgot, data, const = bech32_decode(addr)
    if hrpgot != hrp:
        raise Bech32Error(f"wrong network prefix {hrpgot!r}, expected {hrp!r}")
    if not data:
        raise Bech32Error("empty data")
    version = data[0]
    if version > 16:
        raise Bech32Error("invalid witness version")
    prog = bytes(convertbits(data[1:], 5, 8, False))
    if len(prog) < 2 or len(prog) > 40:
        raise Bech32Error("invalid witness program length")
    if version == 0 and len(prog) not in (20, 32):
        raise Bech32Error("invalid witness v0 program length")
    if version == 0 and const != BECH32_CONST:
        raise Bech32Error("witness v0 address must use bech32")
    if version != 0 and const != BECH32M_CONST:
        raise Bech32Error("witness v1+ address must use bech32m")
    return version, prog


def encode_segwit(hrp: str, version: int, program: bytes) -> str:
    const = BECH32_CONST if version == 0 else BECH32M_CONST
    addr = bech32_encode(hrp, [version] + convertbits(program, 8, 5), const)
    decode_segwit(hrp, addr)
    return addr
