"""Known values from real mainnet blocks and the BIPs."""

import pytest

from hashcoop.pool.core.btc.address import NETWORKS, AddressError, address_to_script, script_to_address
from hashcoop.pool.core.btc.block import (
    build_header,
    coinbase_with_witness,
    parse_block,
    parse_tx,
    witness_commitment,
    witness_commitment_script,
)
from hashcoop.pool.core.btc.hashing import fold_branch, hash_to_hex, hex_to_hash, merkle_branch, merkle_root, sha256d
from hashcoop.pool.core.btc.serialize import bip34_height
from hashcoop.pool.core.btc.target import bits_difficulty, bits_to_target, difficulty_to_target, hash_difficulty, target_to_bits
from tests import vectors

# Mainnet block 100000: header fields and its four txids (from the block itself).
B100000_TXIDS = [
    "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87",
    "fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4",
    "6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4",
    "e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d",
]
B100000_COINBASE = (
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff08044c86041b020602ffffffff"
    "0100f2052a010000004341041b0e8c2567c12536aa13357b79a073dc4444acb83c4ec7a0e2f99dd7457516c5817242da796924ca4e"
    "99947d087fedf9ce467cb9f7c6287078f801df276fdf84ac00000000"
)


def test_block_100000_coinbase_branch_and_header():
    coinbase = bytes.fromhex(B100000_COINBASE)
    assert hash_to_hex(sha256d(coinbase)) == B100000_TXIDS[0]
    txids = [hex_to_hash(t) for t in B100000_TXIDS]
    root = merkle_root(txids)
    assert hash_to_hex(root) == "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766"
    branch = merkle_branch(txids[1:])
    assert fold_branch(sha256d(coinbase), branch) == root
    header = build_header(
        1,
        hex_to_hash("000000000002d01c1fccc21636b607dfd930d31d01c3a62104612a1719011250"),
        root,
        1293623863,
        0x1B04864C,
        274148111,
    )
    assert hash_to_hex(sha256d(header)) == "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506"


def test_genesis_block():
    coinbase = bytes.fromhex(
        "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000"
    )
    txid = sha256d(coinbase)
    assert hash_to_hex(txid) == "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    header = build_header(1, b"\0" * 32, merkle_root([txid]), 1231006505, 0x1D00FFFF, 2083236893)
    assert hash_to_hex(sha256d(header)) == "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"


@pytest.mark.parametrize("n", range(1, 18))
def test_merkle_branch_matches_root(n):
    leaves = [sha256d(bytes([i])) for i in range(n)]
    assert fold_branch(leaves[0], merkle_branch(leaves[1:])) == merkle_root(leaves)


def test_compact_bits():
    assert bits_to_target(0x1D00FFFF) == 0xFFFF << 208
    assert target_to_bits(bits_to_target(0x1B04864C)) == 0x1B04864C
    assert target_to_bits(bits_to_target(0x207FFFFF)) == 0x207FFFFF
    # Bitcoin Core's float for regtest difficulty; its JSON prints 16 significant digits
    assert f"{bits_difficulty(0x207FFFFF):.16g}" == "4.656542373906925e-10"
    assert bits_difficulty(0x1D00FFFF) == 1.0


def test_difficulty_targets_exact():
    assert difficulty_to_target(1) == 0xFFFF << 208
    assert difficulty_to_target(2) == (0xFFFF << 208) // 2
    assert difficulty_to_target(0.5) == (0xFFFF << 208) * 2
    assert hash_difficulty(0xFFFF << 208) == 1.0
    with pytest.raises(ValueError):
        difficulty_to_target(0)


def test_bip34_height_encoding():
    assert bip34_height(1) == b"\x51"
    assert bip34_height(16) == b"\x60"
    assert bip34_height(17) == b"\x01\x11"
    assert bip34_height(105) == b"\x01\x69"  # as in the ckpool vector coinbase
    assert bip34_height(128) == b"\x02\x80\x00"
    assert bip34_height(227836) == bytes.fromhex("03fc7903")  # mainnet BIP34 activation block


def test_addresses_every_type():
    main = NETWORKS["mainnet"]
    cases = {
        # BIP173 / BIP350 test vectors and well-known addresses
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4": "0014751e76e8199196d454941c45d1b3a323f1433bd6",
        "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3": "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0": "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa": "76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac",
        "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy": "a914b472a266d0bd89c13706a4132ccfb16f7c3b9fcb87",
    }
    for addr, spk in cases.items():
        script = address_to_script(addr, main)
        assert script.hex() == spk
        assert script_to_address(script, main) == addr


def test_regtest_p2tr_from_bitcoind_vector():
    v = vectors.core()["rpc"]["validateaddress_p2tr"]
    assert address_to_script(v["address"], NETWORKS["regtest"]).hex() == v["scriptPubKey"]


@pytest.mark.parametrize(
    "addr,net",
    [
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "regtest"),  # wrong network
        ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5", "testnet3"),  # bad checksum
        ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd", "mainnet"),  # v1 with bech32 checksum (BIP350)
        ("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb", "mainnet"),  # base58 checksum
        ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", "mainnet"),  # testnet address on mainnet
        ("", "mainnet"),
        ("bcrt1qb1ad", "regtest"),
    ],
)
def test_bad_addresses(addr, net):
    with pytest.raises(AddressError):
        address_to_script(addr, NETWORKS[net])


def test_witness_commitment_from_real_template():
    gbt = vectors.core()["rpc"]["getblocktemplate"]
    wtxids = [hex_to_hash(t["hash"]) for t in gbt["transactions"]]
    assert witness_commitment_script(witness_commitment(wtxids)).hex() == gbt["default_witness_commitment"]
    for t in gbt["transactions"]:
        tx, end = parse_tx(bytes.fromhex(t["data"]))
        assert end == len(t["data"]) // 2
        assert hash_to_hex(tx.txid) == t["txid"]
        assert hash_to_hex(tx.wtxid) == t["hash"]
        assert tx.weight == t["weight"]


def test_parse_accepted_block_from_ckpool_vector():
    v = vectors.ckpool()["accepted_block"]
    raw = bytes.fromhex(v["hex"])
    header, txs = parse_block(raw)
    assert hash_to_hex(sha256d(header)) == v["hash"]
    assert merkle_root([t.txid for t in txs]) == header[36:68]
    cb = txs[0]
    assert cb.is_coinbase() and cb.has_witness
    assert coinbase_with_witness(cb.stripped) == cb.raw
