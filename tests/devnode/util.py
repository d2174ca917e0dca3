"""Helpers for the devnode tests: recorded vectors, block and transaction
builders that can break any rule on purpose."""
from __future__ import annotations

from functools import lru_cache

from hashcoop.pool.core.btc.block import build_header, witness_commitment, witness_commitment_script
from hashcoop.pool.core.btc.hashing import sha256d
from hashcoop.pool.core.btc.serialize import bip34_height, push_data
from hashcoop.pool.tools.devnode.chain import BlockIndex, Chain, RecordedContext
from hashcoop.pool.tools.devnode.consensus import Block, check_proof_of_work, compute_merkle_root, make_tx
from hashcoop.pool.tools.devnode.mempool import Faucet, p2wpkh_script
from hashcoop.pool.tools.devnode.rpc import Rpc
from tests import vectors

NOW = 1795651986  # the recorded wall clock; every test chain runs on it unless it says otherwise
FAUCET = Faucet()
MINER = p2wpkh_script(b"\x11" * 20)
DUMMY_SIG = bytes.fromhex("3044022042c1ab0957f9288305dfdc49efc97ae562b2a82cc4477bbb591f99b7558de8dc02202e7133ed55fcd9b762b21900353fd8018482e40c9409b4fe1c0cfa60e67b786201")


@lru_cache(maxsize=None)
def core_vectors() -> dict:
    return vectors.core()


@lru_cache(maxsize=None)
def ckpool_vectors() -> dict:
    return vectors.ckpool()


def recorded_chain() -> tuple[Chain, Rpc]:
    """A chain at the recorded context (height 102, the template's three
    transactions in the mempool), on the recorded wall clock."""
    v = core_vectors()
    ctx = RecordedContext.from_tip_and_template(v["context"]["tip_header"], v["rpc"]["getblocktemplate"], v["context"]["now"])
    chain = Chain(clock=lambda: ctx.now, context=ctx)
    return chain, Rpc(chain, clock=chain.clock, started=ctx.now)


class Clock:
    """A settable wall clock for chains."""

    def __init__(self, t: float = NOW):
        self.t = t

    def __call__(self) -> float:
        return self.t


def funded_chain(blocks: int = 110, clock: Clock | None = None, **kw) -> Chain:
    """A chain from genesis with ``blocks`` blocks paying the faucet."""
    chain = Chain(clock=clock or Clock(), **kw)
    chain.generate(FAUCET.mining_script, blocks)
    return chain


def coinbase(height: int, value: int, script: bytes = MINER, *, commitment: bytes | None = None, tag: bytes = b"", script_sig: bytes | None = None, witness: list | None = None, version: int = 2, locktime: int = 0, sequence: int = 0xFFFFFFFF, extra_outputs=()):
    """A coinbase paying ``value``; with ``commitment`` (a 32-byte
    witness commitment) it carries the commitment output and, unless
    ``witness`` says otherwise, the 32-byte reserved value."""
    sig = script_sig if script_sig is not None else bip34_height(height) + push_data(b"/devnode-test/" + tag)
    outputs = [(value, script), *extra_outputs]
    witnesses = None
    if commitment is not None:
        outputs.append((0, witness_commitment_script(commitment)))
        witnesses = [[b"\x00" * 32]] if witness is None else [witness]
    elif witness is not None:
        witnesses = [witness]
    return make_tx(version, [(b"\x00" * 32, 0xFFFFFFFF, sig, sequence)], outputs, witnesses, locktime)


def solve(header: bytes, bits: int, *, want_valid: bool = True) -> bytes:
    """Grind the nonce until the header meets (or, with ``want_valid``
    False, fails) its target."""
    h = bytearray(header)
    for nonce in range(1 << 20):
        h[76:80] = nonce.to_bytes(4, "little")
        if check_proof_of_work(sha256d(bytes(h)), bits) == want_valid:
            return bytes(h)
    raise AssertionError("no nonce found")


def make_block(
    chain: Chain,
    prev: BlockIndex | None = None,
    txs=(),
    *,
    cb=None,
    value: int | None = None,
    script: bytes = MINER,
    time: int | None = None,
    version: int = 0x20000000,
    bits: int | None = None,
    segwit: bool = True,
    tag: bytes = b"",
    merkle: bytes | None = None,
    valid_pow: bool = True,
) -> Block:
    """A solved block on ``prev`` (default: the tip) with ``txs``; every
    field can be overridden to break a rule. The coinbase claims subsidy
    plus the fees of ``txs`` known to the chain's UTXO set or mempool."""
    prev = prev or chain.tip
    height = prev.height + 1
    txs = list(txs)
    if cb is None:
        if value is None:
            value = chain.subsidy(height) + sum(fee_of(chain, t) for t in txs)
        commitment = witness_commitment([t.wtxid for t in txs]) if segwit else None
        cb = coinbase(height, value, script, commitment=commitment, tag=tag)
    all_txs = [cb, *txs]
    root = merkle if merkle is not None else compute_merkle_root([t.txid for t in all_txs])[0]
    bits = chain.bits if bits is None else bits
    t = time if time is not None else max(prev.mtp + 1, chain.now())
    header = solve(build_header(version, prev.hash, root, t, bits, 0), bits, want_valid=valid_pow)
    return Block(header, all_txs)


def fee_of(chain: Chain, tx) -> int:
    """Inputs (from the UTXO set, the mempool or earlier test outputs) minus outputs; 0 if unknown."""
    total = 0
    for prev, n, _, _ in tx.inputs:
        coin = chain.utxos.get((prev, n))
        if coin is not None:
            total += coin.value
            continue
        out = chain.mempool.output((prev, n))
        if out is None:
            return 0
        total += out[0]
    return max(0, total - sum(v for v, _ in tx.outputs))


def spend(outpoints, outputs, *, version: int = 2, locktime: int = 0, sequence: int = 0xFFFFFFFD, witness: bool = True):
    """A transaction spending P2WPKH-looking ``outpoints`` ((txid, n)) to ``outputs`` ((value, script))."""
    inputs = [(txid, n, b"", sequence) for txid, n in outpoints]
    witnesses = [[DUMMY_SIG, FAUCET.pubkey] for _ in inputs] if witness else None
    return make_tx(version, inputs, list(outputs), witnesses, locktime)


def faucet_coinbase(chain: Chain, height: int):
    """The coinbase transaction of the active block at ``height``."""
    return chain.at_height(height).block.txs[0]
