"""Networks and addresses: turn a miner's or the pool's address into an
output script, for every standard type (P2PKH, P2SH, P2WPKH, P2WSH, P2TR and
future witness versions), and back for display."""
from __future__ import annotations

from dataclasses import dataclass

from bitcoin.base58 import Base58ChecksumError, CBase58Data, InvalidBase58Error
from bitcoin.base58 import encode as b58encode

from hashcoop.pool.core.btc.bech32 import Bech32Error, decode_segwit, encode_segwit
from hashcoop.pool.core.btc.hashing import sha256d


class AddressError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    hrp: str
    p2pkh_prefix: int
    p2sh_prefix: int
    # getblocktemplate rules Bitcoin Core requires on this chain
    gbt_rules: tuple[str, ...]
    default_rpc_port: int
    # the name getblockchaininfo reports in "chain"
    core_chain: str
    # consensus parameters the pool needs to build a block on one it found
    # itself before the node's template arrives (hashcoop.pool.core.template.successor)
    halving_interval: int = 210_000
    retarget_interval: int = 2016  # 0: the difficulty never changes (regtest's fPowNoRetargeting)
    min_difficulty_blocks: bool = False  # the 20-minute rule (testnet3, testnet4): bits depend on the time


NETWORKS: dict[str, Network] = {
    "mainnet": Network("mainnet", "bc", 0x00, 0x05, ("segwit",), 8332, "main"),
    "testnet3": Network("testnet3", "tb", 0x6F, 0xC4, ("segwit",), 18332, "test", min_difficulty_blocks=True),
    "testnet4": Network("testnet4", "tb", 0x6F, 0xC4, ("segwit",), 48332, "testnet4", min_difficulty_blocks=True),
    "signet": Network("signet", "tb", 0x6F, 0xC4, ("segwit", "signet"), 38332, "signet"),
    "regtest": Network("regtest", "bcrt", 0x6F, 0xC4, ("segwit",), 18443, "regtest", halving_interval=150, retarget_interval=0),
}


def get_network(name: str) -> Network:
    try:
        return NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; one of {', '.join(NETWORKS)}") from None


def _witness_script(version: int, program: bytes) -> bytes:
    op = 0 if version == 0 else 0x50 + version
    return bytes((op, len(program))) + program


def address_to_script(address: str, network: Network) -> bytes:
    """The scriptPubKey paying ``address`` on ``network``; AddressError if it
    is not a valid address for that network."""
    if not isinstance(address, str) or not address or len(address) > 100:
        raise AddressError("not an address")
    if address[: len(network.hrp) + 1].lower() == network.hrp + "1":
        try:
            version, program = decode_segwit(network.hrp, address)
        except Bech32Error as e:
            raise AddressError(f"invalid segwit address: {e}") from None
        return _witness_script(version, program)
    try:
        data = CBase58Data(address)
    except (Base58ChecksumError, InvalidBase58Error, ValueError, IndexError) as e:
        raise AddressError(f"invalid address: {e}") from None
    if len(data) != 20:
        raise AddressError("invalid base58 address length")
    if data.nVersion == network.p2pkh_prefix:
        return b"\x76\xa9\x14" + bytes(data) + b"\x88\xac"
    if data.nVersion == network.p2sh_prefix:
        return b"\xa9\x14" + bytes(data) + b"\x87"
    raise AddressError(f"address is not for {network.name}")


def script_to_address(script: bytes, network: Network) -> str | None:
    """The address of a standard output script, or None."""
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return _b58check(network.p2pkh_prefix, script[3:23])
    if len(script) == 23 and script[:2] == b"\xa9\x14" and script[22] == 0x87:
        return _b58check(network.p2sh_prefix, script[2:22])
    if 4 <= len(script) <= 42 and script[1] == len(script) - 2:
        op = script[0]
        if op == 0 or 0x51 <= op <= 0x60:
            version = 0 if op == 0 else op - 0x50
            try:
                return encode_segwit(network.hrp, version, script[2:])
            except Bech32Error:
                return None
    return None


def _b58check(prefix: int, payload: bytes) -> str:
    raw = bytes((prefix,)) + payload
    return b58encode(raw + sha256d(raw)[:4])
