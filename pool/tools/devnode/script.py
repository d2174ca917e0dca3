"""How Bitcoin Core shows scripts and addresses over RPC. Pure: no I/O.

* :func:`decode_destination` is Core's DecodeDestination with its error
  strings and, for mistyped bech32 strings, the error positions Core's
  bech32::LocateErrors finds (up to two substitutions, via syndromes over
  GF(1024));
* :func:`describe_address` is validateaddress's DescribeAddress;
* :func:`script_to_asm`, :func:`output_type`, :func:`infer_descriptor` and
  :func:`script_to_univ` give the ``scriptPubKey``/``scriptSig`` objects of
  ``getblock`` verbosity 2 (asm, desc with checksum, hex, address, type).
"""
from __future__ import annotations

from dataclasses import dataclass

from bitcoin.base58 import InvalidBase58Error
from bitcoin.base58 import decode as b58decode
from bitcoin.core.script import OPCODE_NAMES, CScriptOp

from hashcoop.pool.core.btc.address import Network, script_to_address
from hashcoop.pool.core.btc.bech32 import (
    BECH32_CONST,
    BECH32M_CONST,
    CHARSET,
    Bech32Error,
    bech32_decode,
    convertbits,
    hrp_expand,
    polymod,
)
from hashcoop.pool.core.btc.hashing import sha256d
from hashcoop.pool.tools.devnode.consensus import OP_RETURN, is_p2sh, is_push_only, script_ops, witness_program

# --------------------------------------------------------------------------
# bech32 error location (Core's bech32::LocateErrors)


def _gf_tables() -> tuple[list[int], list[int]]:
    """Exp/log tables of GF(1024) = GF(32)[e]/(e^2 + 9e + 23)."""
    gf32_exp = [1] * 31
    gf32_log = [-1] * 32
    gf32_log[1] = 0
    v = 1
    for i in range(1, 31):
        v <<= 1
        if v & 32:
            v ^= 41  # x^5 + x^3 + 1
        gf32_exp[i] = v
        gf32_log[v] = i

    def mul32(a: int, b: int) -> int:
        if a == 0 or b == 0:
            return 0
        return gf32_exp[(gf32_log[a] + gf32_log[b]) % 31]

    exp = [0] * 1023
    log = [-1] * 1024
    exp[0], log[1] = 1, 0
    v = 1
    for i in range(1, 1023):
        v0, v1 = v & 31, v >> 5
        v = ((mul32(v1, 9) ^ v0) << 5) | mul32(v1, 23)
        exp[i] = v
        log[v] = i
    return exp, log


_GF_EXP, _GF_LOG = _gf_tables()


def _syndrome_constants() -> list[int]:
    out = []
    for k in range(1, 6):
        for shift in range(5):
            b = _GF_LOG[1 << shift]
            c0 = _GF_EXP[(997 * k + b) % 1023]
            c1 = _GF_EXP[(998 * k + b) % 1023]
            c2 = _GF_EXP[(999 * k + b) % 1023]
            out.append(c2 << 20 | c1 << 10 | c0)
    return out


_SYNDROME_CONSTS = _syndrome_constants()


def _syndrome(residue: int) -> int:
    low = residue & 0x1F
    result = low ^ (low << 10) ^ (low << 20)
    for i in range(25):
        if (residue >> (5 + i)) & 1:
            result ^= _SYNDROME_CONSTS[i]
    return result


def _bad_characters(s: str) -> list[int]:
    """CheckCharacters: out-of-range characters and the later half of mixed case."""
    errors, lower, upper = [], False, False
    for i, ch in enumerate(s):
        c = ord(ch)
        if 97 <= c <= 122:
            if upper:
                errors.append(i)
            else:
                lower = True
        elif 65 <= c <= 90:
            if lower:
                errors.append(i)
            else:
                upper = True
        elif c < 33 or c > 126:
            errors.append(i)
    return errors


def locate_bech32_errors(s: str) -> tuple[str, list[int]]:
    """Why ``s`` is not valid bech32/bech32m, and where (Core's messages)."""
    if len(s) > 90:
        return "Bech32 string too long", list(range(90, len(s)))
    errors = _bad_characters(s)
    if errors:
        return "Invalid character or mixed case", errors
    pos = s.rfind("1")
    if pos == -1:
        return "Missing separator", []
    if pos == 0 or pos + 7 > len(s):
        return "Invalid separator position", [pos]
    hrp = s[:pos].lower()
    values = []
    for i in range(pos + 1, len(s)):
        v = CHARSET.find(s[i].lower()) if ord(s[i]) < 128 else -1
        if v == -1:
            return "Invalid Base 32 character", [i]
        values.append(v)
    length = len(values)
    error_locations: list[int] = []
    error_encoding = None
    for name, const in (("bech32", BECH32_CONST), ("bech32m", BECH32M_CONST)):
        possible: list[int] = []
        residue = polymod(hrp_expand(hrp) + values) ^ const
        if residue == 0:
            return "", []
        syn = _syndrome(residue)
        s0, s1, s2 = syn & 0x3FF, (syn >> 10) & 0x3FF, syn >> 20
        l_s0, l_s1, l_s2 = _GF_LOG[s0], _GF_LOG[s1], _GF_LOG[s2]
        if l_s0 != -1 and l_s1 != -1 and l_s2 != -1 and (2 * l_s1 - l_s2 - l_s0 + 2046) % 1023 == 0:
            p1 = (l_s1 - l_s0 + 1023) % 1023
            l_e1 = l_s0 + (1023 - 997) * p1
            if p1 < length and not l_e1 % 33:
                possible.append(len(s) - p1 - 1)
        else:
            for p1 in range(length):
                s2_s1p1 = s2 ^ (0 if s1 == 0 else _GF_EXP[(l_s1 + p1) % 1023])
                if s2_s1p1 == 0:
                    continue
                l_s2_s1p1 = _GF_LOG[s2_s1p1]
                s1_s0p1 = s1 ^ (0 if s0 == 0 else _GF_EXP[(l_s0 + p1) % 1023])
                if s1_s0p1 == 0:
                    continue
                l_s1_s0p1 = _GF_LOG[s1_s0p1]
                p2 = (l_s2_s1p1 - l_s1_s0p1 + 1023) % 1023
                if p2 >= length or p1 == p2:
                    continue
                s1_s0p2 = s1 ^ (0 if s0 == 0 else _GF_EXP[(l_s0 + p2) % 1023])
                if s1_s0p2 == 0:
                    continue
                l_s1_s0p2 = _GF_LOG[s1_s0p2]
                inv_p1_p2 = 1023 - _GF_LOG[_GF_EXP[p1] ^ _GF_EXP[p2]]
                l_e2 = l_s1_s0p1 + inv_p1_p2 + (1023 - 997) * p2
                if l_e2 % 33:
                    continue
                l_e1 = l_s1_s0p2 + inv_p1_p2 + (1023 - 997) * p1
                if l_e1 % 33:
                    continue
                if p1 > p2:
                    possible += [len(s) - p1 - 1, len(s) - p2 - 1]
                else:
                    possible += [len(s) - p2 - 1, len(s) - p1 - 1]
                break
        if not error_locations or (possible and len(possible) < len(error_locations)):
            error_locations = possible
            if error_locations:
                error_encoding = name
    message = {"bech32m": "Invalid Bech32m checksum", "bech32": "Invalid Bech32 checksum"}.get(error_encoding or "", "Invalid checksum")
    return message, error_locations


# --------------------------------------------------------------------------
# Destinations


@dataclass(frozen=True, slots=True)
class Destination:
    """A decoded address: ``kind`` is one of pkh, sh, wpkh, wsh, tr,
    anchor, witness_unknown; ``script`` its scriptPubKey."""

    kind: str
    script: bytes
    version: int | None = None
    program: bytes | None = None


class AddressInvalid(ValueError):
    def __init__(self, message: str, locations: list[int] | None = None):
        super().__init__(message)
        self.message = message
        self.locations = locations or []


def _b58_decode(s: str, max_len: int) -> bytes | None:
    s = s.strip(" \t\n\v\f\r")
    try:
        data = b58decode(s)
    except (InvalidBase58Error, ValueError):
        return None
    return data if len(data) <= max_len else None


ANCHOR_PROGRAM = b"\x4e\x73"


def decode_destination(s: str, network: Network) -> Destination:
    """Core's DecodeDestination; raises AddressInvalid with Core's message
    (and error locations for bech32 strings)."""
    hrp = network.hrp
    is_bech32 = s[: len(hrp)].lower() == hrp
    if not is_bech32:
        raw = _b58_decode(s, 21 + 4)
        if raw is not None and len(raw) >= 4 and sha256d(raw[:-4])[:4] == raw[-4:]:
            data = raw[:-4]
            if len(data) == 21 and data[0] == network.p2pkh_prefix:
                return Destination("pkh", b"\x76\xa9\x14" + data[1:] + b"\x88\xac")
            if len(data) == 21 and data[0] == network.p2sh_prefix:
                return Destination("sh", b"\xa9\x14" + data[1:] + b"\x87")
            if data and data[0] in (network.p2pkh_prefix, network.p2sh_prefix):
                raise AddressInvalid("Invalid length for Base58 address (P2PKH or P2SH)")
            raise AddressInvalid("Invalid or unsupported Base58-encoded address.")
        if _b58_decode(s, 100) is None:
            raise AddressInvalid("Invalid or unsupported Segwit (Bech32) or Base58 encoding.")
        raise AddressInvalid("Invalid checksum or length of Base58 address (P2PKH or P2SH)")
    try:
        got_hrp, data, const = bech32_decode(s)
    except Bech32Error:
        message, locations = locate_bech32_errors(s)
        raise AddressInvalid(message, locations) from None
    if not data:
        raise AddressInvalid("Empty Bech32 data section")
    if got_hrp != hrp:
        raise AddressInvalid(f"Invalid or unsupported prefix for Segwit (Bech32) address (expected {hrp}, got {got_hrp}).")
    version = data[0]
    if version == 0 and const != BECH32_CONST:
        raise AddressInvalid("Version 0 witness address must use Bech32 checksum")
    if version != 0 and const != BECH32M_CONST:
        raise AddressInvalid("Version 1+ witness address must use Bech32m checksum")
    try:
        program = bytes(convertbits(data[1:], 5, 8, False))
    except Bech32Error:
        raise AddressInvalid("Invalid padding in Bech32 data section") from None
    unit = "byte" if len(program) == 1 else "bytes"
    op = bytes([0 if version == 0 else 0x50 + version]) if version <= 16 else b""
    if version == 0:
        if len(program) == 20:
            return Destination("wpkh", b"\x00\x14" + program, 0, program)
        if len(program) == 32:
            return Destination("wsh", b"\x00\x20" + program, 0, program)
        raise AddressInvalid(f"Invalid Bech32 v0 address program size ({len(program)} {unit}), per BIP141")
    if version == 1 and len(program) == 32:
        return Destination("tr", b"\x51\x20" + program, 1, program)
    if version == 1 and program == ANCHOR_PROGRAM:
        return Destination("anchor", b"\x51\x02" + program, 1, program)
    if version > 16:
        raise AddressInvalid("Invalid Bech32 address witness version")
    if not 2 <= len(program) <= 40:
        raise AddressInvalid(f"Invalid Bech32 address program size ({len(program)} {unit})")
    return Destination("witness_unknown", op + bytes([len(program)]) + program, version, program)


def describe_address(dest: Destination) -> dict:
    """DescribeAddress: the type-specific fields of validateaddress."""
    if dest.kind == "pkh":
        return {"isscript": False, "iswitness": False}
    if dest.kind == "sh":
        return {"isscript": True, "iswitness": False}
    if dest.kind == "wpkh":
        return {"isscript": False, "iswitness": True, "witness_version": 0, "witness_program": dest.program.hex()}
    if dest.kind in ("wsh", "tr", "anchor"):
        return {"isscript": True, "iswitness": True, "witness_version": dest.version, "witness_program": dest.program.hex()}
    return {"iswitness": True, "witness_version": dest.version, "witness_program": dest.program.hex()}


# --------------------------------------------------------------------------
# Script display

_SIGHASH_NAMES = {
    0x01: "ALL",
    0x81: "ALL|ANYONECANPAY",
    0x02: "NONE",
    0x82: "NONE|ANYONECANPAY",
    0x03: "SINGLE",
    0x83: "SINGLE|ANYONECANPAY",
}
_OP_NAME_OVERRIDES = {0x4F: "-1", 0xB1: "OP_CHECKLOCKTIMEVERIFY", 0xB2: "OP_CHECKSEQUENCEVERIFY", 0xBA: "OP_CHECKSIGADD", 0xFF: "OP_INVALIDOPCODE"}


def op_name(op: int) -> str:
    """GetOpName for a non-push opcode."""
    if op in _OP_NAME_OVERRIDES:
        return _OP_NAME_OVERRIDES[op]
    if 0x51 <= op <= 0x60:
        return str(op - 0x50)
    if op > 0xBA:
        return "OP_UNKNOWN"
    return OPCODE_NAMES.get(CScriptOp(op), "OP_UNKNOWN")


def is_valid_signature_encoding(sig: bytes) -> bool:
    """BIP66 strict DER (with the trailing sighash byte)."""
    n = len(sig)
    if n < 9 or n > 73 or sig[0] != 0x30 or sig[1] != n - 3:
        return False
    len_r = sig[3]
    if 5 + len_r >= n:
        return False
    len_s = sig[5 + len_r]
    if len_r + len_s + 7 != n or sig[2] != 0x02 or len_r == 0 or sig[4] & 0x80:
        return False
    if len_r > 1 and sig[4] == 0 and not sig[5] & 0x80:
        return False
    if sig[len_r + 4] != 0x02 or len_s == 0 or sig[len_r + 6] & 0x80:
        return False
    if len_s > 1 and sig[len_r + 6] == 0 and not sig[len_r + 7] & 0x80:
        return False
    return True


def _script_num(data: bytes) -> int:
    if not data:
        return 0
    v = int.from_bytes(data, "little")
    if data[-1] & 0x80:
        return -(v & ~(0x80 << (8 * (len(data) - 1))))
    return v


def script_to_asm(script: bytes, attempt_sighash_decode: bool = False) -> str:
    """ScriptToAsmStr."""
    out: list[str] = []
    unspendable = len(script) > 0 and script[0] == OP_RETURN
    for op, data in script_ops(script):
        if op is None:
            out.append("[error]")
            break
        if op <= 0x4E:
            if len(data) <= 4:
                out.append(str(_script_num(data)))
            elif attempt_sighash_decode and not unspendable and is_valid_signature_encoding(data) and data[-1] in _SIGHASH_NAMES:
                out.append(data[:-1].hex() + "[" + _SIGHASH_NAMES[data[-1]] + "]")
            else:
                out.append(data.hex())
        else:
            out.append(op_name(op))
    return " ".join(out)


def _valid_pubkey_size(key: bytes) -> bool:
    if not key:
        return False
    if key[0] in (2, 3):
        return len(key) == 33
    if key[0] in (4, 6, 7):
        return len(key) == 65
    return False


def output_type(script: bytes) -> str:
    """Solver's TxoutType name, as getblock/decodescript show it."""
    if is_p2sh(script):
        return "scripthash"
    wp = witness_program(script)
    if wp is not None:
        version, program = wp
        if version == 0 and len(program) == 20:
            return "witness_v0_keyhash"
        if version == 0 and len(program) == 32:
            return "witness_v0_scripthash"
        if version == 1 and len(program) == 32:
            return "witness_v1_taproot"
        if version == 1 and program == ANCHOR_PROGRAM:
            return "anchor"
        if version != 0:
            return "witness_unknown"
        return "nonstandard"
    if script and script[0] == OP_RETURN and is_push_only(script[1:]):
        return "nulldata"
    if (len(script) == 35 and script[0] == 33 and script[-1] == 0xAC and _valid_pubkey_size(script[1:34])) or (
        len(script) == 67 and script[0] == 65 and script[-1] == 0xAC and _valid_pubkey_size(script[1:66])
    ):
        return "pubkey"
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return "pubkeyhash"
    if _multisig_keys(script) is not None:
        return "multisig"
    return "nonstandard"


def _multisig_keys(script: bytes) -> tuple[int, list[bytes]] | None:
    """MatchMultisig: OP_m <keys> OP_n OP_CHECKMULTISIG."""
    ops = list(script_ops(script))
    if len(ops) < 4 or ops[-1][0] != 0xAE or any(op is None for op, _ in ops):
        return None
    m_op, n_op = ops[0][0], ops[-2][0]
    if not (0x51 <= m_op <= 0x60 and 0x51 <= n_op <= 0x60):
        return None
    keys = [d for _, d in ops[1:-2]]
    if any(not (op is not None and op <= 0x4E and _valid_pubkey_size(d)) for op, d in ops[1:-2]):
        return None
    m, n = m_op - 0x50, n_op - 0x50
    if len(keys) != n or m < 1 or m > n:
        return None
    return m, keys


_DESC_INPUT = "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ "
_DESC_GEN = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)


def descriptor_checksum(desc: str) -> str:
    """The 8-character BIP380 descriptor checksum."""

    def polymod(c: int, val: int) -> int:
        c0 = c >> 35
        c = ((c & 0x7FFFFFFFF) << 5) ^ val
        for i in range(5):
            if (c0 >> i) & 1:
                c ^= _DESC_GEN[i]
        return c

    c, cls, count = 1, 0, 0
    for ch in desc:
        pos = _DESC_INPUT.find(ch)
        if pos == -1:
            raise ValueError(f"invalid descriptor character {ch!r}")
        c = polymod(c, pos & 31)
        cls = cls * 3 + (pos >> 5)
        count += 1
        if count == 3:
            c = polymod(c, cls)
            cls, count = 0, 0
    if count:
        c = polymod(c, cls)
    for _ in range(8):
        c = polymod(c, 0)
    c ^= 1
    return "".join(CHARSET[(c >> (5 * (7 - j))) & 31] for j in range(8))


_SECP_P = 2**256 - 2**32 - 977


def _xonly_on_curve(x: bytes) -> bool:
    v = int.from_bytes(x, "big")
    if v >= _SECP_P:
        return False
    return pow((v**3 + 7) % _SECP_P, (_SECP_P - 1) // 2, _SECP_P) in (0, 1)


def _valid_non_hybrid(key: bytes) -> bool:
    return _valid_pubkey_size(key) and key[0] in (2, 3, 4)


def infer_descriptor(script: bytes, network: Network) -> str:
    """InferDescriptor with no keys known: pk()/multi() for bare keys,
    rawtr() for taproot outputs on the curve, addr() for anything with an
    address, raw() otherwise; with checksum."""
    kind = output_type(script)
    desc = None
    if kind == "pubkey":
        key = script[1:-1]
        if _valid_non_hybrid(key):
            desc = f"pk({key.hex()})"
    elif kind == "multisig":
        m, keys = _multisig_keys(script)  # type: ignore[misc]
        if all(_valid_non_hybrid(k) for k in keys):
            desc = f"multi({m},{','.join(k.hex() for k in keys)})"
    elif kind == "witness_v1_taproot" and _xonly_on_curve(script[2:]):
        desc = f"rawtr({script[2:].hex()})"
    if desc is None:
        address = script_address(script, network)
        desc = f"addr({address})" if address is not None else f"raw({script.hex()})"
    return f"{desc}#{descriptor_checksum(desc)}"


def script_address(script: bytes, network: Network) -> str | None:
    """ExtractDestination + EncodeDestination, for the types that have an
    address (not bare keys, multisig, data or nonstandard scripts)."""
    kind = output_type(script)
    if kind in ("pubkeyhash", "scripthash", "witness_v0_keyhash", "witness_v0_scripthash", "witness_v1_taproot", "anchor", "witness_unknown"):
        return script_to_address(script, network)
    return None


def script_to_univ(script: bytes, network: Network) -> dict:
    """ScriptToUniv(include_hex, include_address): asm, desc, hex, address, type."""
    out = {"asm": script_to_asm(script), "desc": infer_descriptor(script, network), "hex": script.hex()}
    kind = output_type(script)
    address = script_address(script, network)
    if address is not None:
        out["address"] = address
    out["type"] = kind
    return out
