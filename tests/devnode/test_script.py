"""Addresses and scripts as Core shows them: DecodeDestination messages,
bech32 error locations, asm, output types and inferred descriptors."""
from __future__ import annotations

import pytest

from hashcoop.pool.core.btc.address import NETWORKS
from hashcoop.pool.core.btc.bech32 import encode_segwit
from hashcoop.pool.tools.devnode.consensus import GENESIS_COINBASE
from hashcoop.pool.tools.devnode.script import (
    AddressInvalid,
    decode_destination,
    descriptor_checksum,
    infer_descriptor,
    locate_bech32_errors,
    output_type,
    script_to_asm,
    script_to_univ,
)

R = NETWORKS["regtest"]
P2TR = "bcrt1psjw83ferk5eyapl0f5fpd8u50s2t39hxp4pzuttnugf0acxfwy4qwwea25"


def invalid(address: str) -> tuple[str, list[int]]:
    with pytest.raises(AddressInvalid) as e:
        decode_destination(address, R)
    return e.value.message, e.value.locations


def test_descriptor_checksum_bip380_vector():
    assert descriptor_checksum("raw(deadbeef)") == "89f8spxm"


def test_decode_destination_kinds():
    assert decode_destination(P2TR, R).kind == "tr"
    wpkh = encode_segwit("bcrt", 0, b"\x01" * 20)
    assert decode_destination(wpkh, R).script == b"\x00\x14" + b"\x01" * 20
    assert decode_destination(wpkh.upper(), R).kind == "wpkh"
    assert decode_destination(encode_segwit("bcrt", 0, b"\x02" * 32), R).kind == "wsh"
    assert decode_destination(encode_segwit("bcrt", 1, bytes.fromhex("4e73")), R).kind == "anchor"
    future = decode_destination(encode_segwit("bcrt", 2, b"\x03" * 10), R)
    assert future.kind == "witness_unknown" and future.script == b"\x52\x0a" + b"\x03" * 10
    assert decode_destination("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", R).kind == "pkh"
    assert decode_destination("2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc", R).kind == "sh"


def test_decode_destination_errors():
    assert invalid(P2TR[:7] + "b" + P2TR[8:]) == ("Invalid Base 32 character", [7])
    one = P2TR[:-1] + ("q" if P2TR[-1] != "q" else "p")
    assert invalid(one) == ("Invalid Bech32m checksum", [len(P2TR) - 1])
    two = P2TR[:20] + ("q" if P2TR[20] != "q" else "p") + P2TR[21:-1] + ("q" if P2TR[-1] != "q" else "p")
    assert invalid(two) == ("Invalid Bech32m checksum", [20, len(P2TR) - 1])
    assert invalid(encode_segwit("tb", 1, b"\x01" * 32)) == ("Invalid or unsupported Segwit (Bech32) or Base58 encoding.", [])
    assert invalid(encode_segwit("bcrt", 0, b"\x01" * 20)[:-6] + "qqqqqq")[0] in ("Invalid Bech32 checksum", "Invalid checksum")
    assert invalid("bcrt1" + "q" * 100) == ("Bech32 string too long", list(range(90, 105)))
    assert invalid("bcrt1qAq" + "q" * 10)[0] == "Invalid character or mixed case"
    assert invalid("bcrt1qqqq") == ("Invalid separator position", [4])
    assert invalid("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2") == ("Invalid or unsupported Base58-encoded address.", [])
    assert invalid("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfo") == ("Invalid checksum or length of Base58 address (P2PKH or P2SH)", [])
    assert invalid("0OIl") == ("Invalid or unsupported Segwit (Bech32) or Base58 encoding.", [])
    # valid bech32 strings that are not valid addresses
    assert invalid(encode_segwit_any(0, b"\x01" * 20, bech32m=True)) == ("Version 0 witness address must use Bech32 checksum", [])
    assert invalid(encode_segwit_any(1, b"\x01" * 32, bech32m=False)) == ("Version 1+ witness address must use Bech32m checksum", [])
    assert invalid(encode_segwit_any(0, b"\x01" * 21, bech32m=False)) == ("Invalid Bech32 v0 address program size (21 bytes), per BIP141", [])
    assert invalid(encode_segwit_any(2, b"\x01", bech32m=True)) == ("Invalid Bech32 address program size (1 byte)", [])


def encode_segwit_any(version: int, program: bytes, bech32m: bool) -> str:
    """Encode without the validity checks of encode_segwit."""
    from hashcoop.pool.core.btc.bech32 import BECH32_CONST, BECH32M_CONST, bech32_encode, convertbits

    return bech32_encode("bcrt", [version] + convertbits(program, 8, 5), BECH32M_CONST if bech32m else BECH32_CONST)


def test_locate_errors_on_a_valid_string():
    assert locate_bech32_errors(P2TR) == ("", [])


def test_asm():
    sig = bytes.fromhex("3044022042c1ab0957f9288305dfdc49efc97ae562b2a82cc4477bbb591f99b7558de8dc02202e7133ed55fcd9b762b21900353fd8018482e40c9409b4fe1c0cfa60e67b786201")
    key = bytes.fromhex("02c67196c9af5b4754c99c9ff1ee1a166685ade1905e98167f57000fe714cc4a49")
    script_sig = bytes([len(sig)]) + sig + bytes([len(key)]) + key
    assert script_to_asm(script_sig, True) == sig[:-1].hex() + "[ALL] " + key.hex()
    assert script_to_asm(script_sig, False) == sig.hex() + " " + key.hex()
    p2pkh = bytes.fromhex("76a914d950d60418de9097d3d85e1171a30b2319e2c7d488ac")
    assert script_to_asm(p2pkh) == "OP_DUP OP_HASH160 d950d60418de9097d3d85e1171a30b2319e2c7d4 OP_EQUALVERIFY OP_CHECKSIG"
    assert script_to_asm(bytes.fromhex("0167")) == "103"
    assert script_to_asm(bytes.fromhex("00515f60b1b2ba4f")) == "0 1 15 16 OP_CHECKLOCKTIMEVERIFY OP_CHECKSEQUENCEVERIFY OP_CHECKSIGADD -1"
    assert script_to_asm(bytes.fromhex("02ff00")) == "255"
    assert script_to_asm(bytes.fromhex("0181")) == "-1"
    assert script_to_asm(bytes.fromhex("4c")) == "[error]"
    assert script_to_asm(bytes.fromhex("51" + "4d0100")) == "1 [error]"


def test_output_types_and_descriptors():
    genesis_out = GENESIS_COINBASE[-4 - 67:-4]  # <65-byte key> OP_CHECKSIG
    assert output_type(genesis_out) == "pubkey"
    desc = infer_descriptor(genesis_out, R)
    assert desc.startswith("pk(04678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5f)#")
    assert "address" not in script_to_univ(genesis_out, R)
    tr = decode_destination(P2TR, R).script
    univ = script_to_univ(tr, R)
    assert univ["type"] == "witness_v1_taproot" and univ["address"] == P2TR
    assert univ["desc"] == f"rawtr({tr[2:].hex()})#{descriptor_checksum('rawtr(' + tr[2:].hex() + ')')}"
    assert univ["asm"] == "1 " + tr[2:].hex()
    off_curve = b"\x51\x20" + b"\x00" * 32  # x = 0 is not on the curve
    assert infer_descriptor(off_curve, R).startswith("addr(bcrt1p")
    wpkh = b"\x00\x14" + b"\x01" * 20
    addr = encode_segwit("bcrt", 0, b"\x01" * 20)
    assert script_to_univ(wpkh, R) == {
        "asm": "0 " + "01" * 20,
        "desc": f"addr({addr})#{descriptor_checksum(f'addr({addr})')}",
        "hex": wpkh.hex(),
        "address": addr,
        "type": "witness_v0_keyhash",
    }
    assert output_type(b"\x6a\x04abcd") == "nulldata"
    assert output_type(b"\x6a\x61") == "nonstandard"  # OP_RETURN followed by a non-push
    key = b"\x02" + b"\x11" * 32
    multisig = b"\x51\x21" + key + b"\x21" + key + b"\x52\xae"
    assert output_type(multisig) == "multisig"
    assert infer_descriptor(multisig, R).startswith(f"multi(1,{key.hex()},{key.hex()})#")
    assert output_type(b"\x51") == "nonstandard" and infer_descriptor(b"\x51", R).startswith("raw(51)#")
    assert output_type(b"\x00\x03abc") == "nonstandard"  # v0 with a bad program length
