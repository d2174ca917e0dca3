"""The coinbase transaction, split around the extranonce for Stratum.

Layout of the (non-witness) coinbase a miner hashes::

    coinb1 = version | 1 input | null prevout | scriptSig length
             | BIP34 height push | [coinbaseaux push] | push(4-byte job tag)
             | push-opcode(len(extranonce))
    extranonce1 | extranonce2                      (filled in per session / per share)
    coinb2 = [tag push] | sequence | outputs | locktime

The job tag makes every job id distinct work: miners restart their
extranonce2 search on each new job, so two job ids with byte-identical
coinbases (a template refresh with no new transactions, or a job re-sent
with a new difficulty) would hash to the same headers and be duplicates.

The extranonce sits inside one script push, so the scriptSig stays a
well-formed script that block explorers decode (height, extranonce, tag).
Outputs: the whole coinbase value to the pool's payout script, then the
template's witness commitment (when it has one), as Bitcoin Core orders them.
"""
from __future__ import annotations

from dataclasses import dataclass

from hashcoop.pool.core.btc.serialize import bip34_height, compact_size, push_data, u32, u64

EXTRANONCE1_SIZE = 4
MAX_SCRIPTSIG = 100
# Worst case BIP34 push: a 4-byte height (heights up to 2^31) plus its opcode.
_MAX_HEIGHT_PUSH = 5
COINBASE_VERSION = 1
COINBASE_SEQUENCE = 0xFFFFFFFF


JOB_TAG_SIZE = 4


def max_tag_length(extranonce2_size: int, extranonce1_size: int = EXTRANONCE1_SIZE) -> int:
    """How many tag bytes fit in the 100-byte scriptSig with the extranonce."""
    return MAX_SCRIPTSIG - _MAX_HEIGHT_PUSH - (1 + JOB_TAG_SIZE) - (1 + extranonce1_size + extranonce2_size) - 2


@dataclass(frozen=True, slots=True)
class CoinbaseParts:
    coinb1: bytes
    coinb2: bytes
    extranonce_size: int
    # where the 4-byte job tag sits in coinb1 (None for other pools' coinbases)
    tag_offset: int | None = None

    def with_job_tag(self, tag: int) -> bytes:
        """coinb1 carrying another job tag."""
        if self.tag_offset is None:
            raise ValueError("this coinbase has no job tag")
        o = self.tag_offset
        return self.coinb1[:o] + (tag & 0xFFFFFFFF).to_bytes(JOB_TAG_SIZE, "little") + self.coinb1[o + JOB_TAG_SIZE:]

    def assemble(self, extranonce1: bytes, extranonce2: bytes) -> bytes:
        return self.coinb1 + extranonce1 + extranonce2 + self.coinb2


def build_coinbase(
    *,
    height: int,
    value: int,
    payout_script: bytes,
    witness_commitment: bytes | None,
    tag: bytes,
    extranonce_size: int,
    aux: bytes = b"",
    job_tag: int = 0,
) -> CoinbaseParts:
    if not 1 <= extranonce_size <= 75:
        raise ValueError("extranonce size must fit one push opcode")
    if value < 0:
        raise ValueError("negative coinbase value")
    head = bip34_height(height) + (push_data(aux) if aux else b"")
    tag_at = len(head) + 1
    head += push_data((job_tag & 0xFFFFFFFF).to_bytes(JOB_TAG_SIZE, "little"))
    tail = push_data(tag) if tag else b""
    script_len = len(head) + 1 + extranonce_size + len(tail)
    if script_len > MAX_SCRIPTSIG:
        raise ValueError(f"coinbase scriptSig would be {script_len} bytes; the limit is {MAX_SCRIPTSIG}")
    outputs = [(value, payout_script)]
    if witness_commitment:
        outputs.append((0, witness_commitment))
    prefix = u32(COINBASE_VERSION) + b"\x01" + b"\x00" * 32 + b"\xff\xff\xff\xff" + compact_size(script_len)
    coinb1 = prefix + head + bytes((extranonce_size,))
    coinb2 = (
        tail
        + u32(COINBASE_SEQUENCE)
        + compact_size(len(outputs))
        + b"".join(u64(v) + compact_size(len(s)) + s for v, s in outputs)
        + u32(0)  # locktime
    )
    return CoinbaseParts(coinb1, coinb2, extranonce_size, len(prefix) + tag_at)
