"""The devnode's block chain: block index, active chain, UTXO set, block
validation, reorganisations, block templates and mining. Pure: no I/O; the
clock is passed in.

Validation follows Bitcoin Core v31 step by step and answers with Core's
reject strings (what ``submitblock`` returns, BIP22):

1. ``submit_block``: fill in a missing coinbase witness reserved value
   (UpdateUncommittedBlockStructures), then ProcessNewBlock (a block
   already stored is answered "duplicate" after CheckBlock, one whose
   header failed "duplicate-invalid" from AcceptBlockHeader):
2. CheckBlock: ``high-hash`` (PoW against the header's own bits),
   ``bad-txnmrklroot``, ``bad-txns-duplicate``, ``bad-blk-length``,
   ``bad-cb-missing``, ``bad-cb-multiple``, CheckTransaction
   (``bad-txns-vin-empty``, ``bad-cb-length``, ...), ``bad-blk-sigops``;
3. AcceptBlockHeader: ``prev-blk-not-found``, ``bad-prevblk``, then
   ContextualCheckBlockHeader: ``bad-diffbits``, ``time-too-old`` (not after
   the median of the last 11 blocks), ``time-too-new`` (more than 2 hours
   ahead of the clock), ``bad-version(0x%08x)`` (below 4, since BIP34/65/66
   are active from height 1);
4. ContextualCheckBlock: ``bad-txns-nonfinal``, ``bad-cb-height`` (BIP34),
   ``bad-witness-nonce-size``, ``bad-witness-merkle-match``,
   ``unexpected-witness``, ``bad-blk-weight``; the block is then stored;
5. ActivateBestChain / ConnectBlock: ``bad-txns-BIP30``,
   ``bad-txns-inputs-missingorspent``, ``bad-txns-premature-spend-of-coinbase``,
   ``bad-txns-in-belowout``, BIP68 ``bad-txns-nonfinal``, ``bad-blk-sigops``,
   ``bad-cb-amount``.

A valid block that does not become the tip (say an equal-work sibling) is
stored but never connected, so submitblock says ``inconclusive`` as Core
does. The most-work valid chain wins (ties: first seen); a heavier side
chain triggers a reorganisation that disconnects and reconnects blocks
against the UTXO set, and returns disconnected transactions to the mempool.

Not checked: scripts and signatures (no interpreter). Regtest consensus:
subsidy 50 BTC halving every 150 blocks, coinbase maturity 100, BIP34,
CSV, segwit and taproot active from height 1, one fixed ``bits`` for every
block (no retargeting, no min-difficulty rule), max block weight 4,000,000.
"""
from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Callable, Iterable

from hashcoop.pool.core.btc.block import (
    RawTx,
    block_subsidy,
    build_header,
    parse_tx,
    witness_commitment,
    witness_commitment_script,
)
from hashcoop.pool.core.btc.hashing import hash_to_hex, hex_to_hash, sha256d
from hashcoop.pool.core.btc.serialize import bip34_height
from hashcoop.pool.tools.devnode.consensus import (
    COINBASE_MATURITY,
    MAX_BLOCK_SIGOPS_COST,
    MAX_BLOCK_WEIGHT,
    MAX_FUTURE_BLOCK_TIME,
    MEDIAN_TIME_SPAN,
    REGTEST_BITS,
    REGTEST_HALVING_INTERVAL,
    REGTEST_POW_LIMIT,
    WITNESS_SCALE_FACTOR,
    Block,
    Coin,
    Invalid,
    block_proof,
    check_proof_of_work,
    check_transaction,
    compute_merkle_root,
    has_witness,
    hash160,
    is_final_tx,
    is_unspendable,
    legacy_sigops,
    make_tx,
    money_range,
    regtest_genesis,
    script_ops,
    sequence_locks_ok,
    tx_sigop_cost,
    tx_with_witness,
    witness_commitment_index,
    witness_merkle_root,
)
from hashcoop.pool.tools.devnode.mempool import BLOCK_RESERVED_SIGOPS, BLOCK_RESERVED_WEIGHT, Mempool, MempoolEntry, MempoolReject

# BlockIndex.status bits (Core's BlockStatus, reduced)
HAVE_DATA = 1
VALID_TRANSACTIONS = 2  # passed CheckBlock + ContextualCheckBlock, stored
VALID_SCRIPTS = 4  # was connected to the active chain once
FAILED_VALID = 8
FAILED_CHILD = 16
FAILED_MASK = FAILED_VALID | FAILED_CHILD

TEMPLATE_VERSION = 0x20000000  # VERSIONBITS_TOP_BITS; no deployment signals
MAX_TIP_AGE = 24 * 60 * 60


def format_money(sat: int) -> str:
    """Core's FormatMoney: at least two decimals, trailing zeros trimmed."""
    sign = "-" if sat < 0 else ""
    q, r = divmod(abs(sat), 100_000_000)
    frac = f"{r:08d}".rstrip("0")
    return f"{sign}{q}.{frac.ljust(2, '0')}"


class ChainError(Exception):
    """An operation the chain cannot do (not a consensus verdict)."""


class BlockIndex:
    """One known header: Core's CBlockIndex. ``block`` holds the data when
    the node has it; ``undo`` the coins it spent while connected."""

    __slots__ = (
        "hash", "header", "prev", "prev_hash", "height", "version", "merkle_root", "time", "bits", "nonce",
        "chainwork", "recent_times", "mtp", "status", "seq", "n_tx", "block", "undo", "children", "linked",
    )

    def __init__(self, header: bytes, prev: "BlockIndex | None", height: int, chainwork: int, recent_times: tuple[int, ...]):
        self.header = header
        self.hash = sha256d(header)
        self.prev = prev
        self.prev_hash = header[4:36]
        self.height = height
        self.version = int.from_bytes(header[0:4], "little", signed=True)
        self.merkle_root = header[36:68]
        self.time = int.from_bytes(header[68:72], "little")
        self.bits = int.from_bytes(header[72:76], "little")
        self.nonce = int.from_bytes(header[76:80], "little")
        self.chainwork = chainwork
        self.recent_times = recent_times  # up to 11 block times ending with this one
        s = sorted(recent_times)
        self.mtp = s[len(s) // 2]  # GetMedianTimePast
        self.status = 0
        self.seq = 0
        self.n_tx = 0
        self.block: Block | None = None
        self.undo: list[list[Coin]] | None = None
        self.children: list[BlockIndex] = []
        self.linked = False  # this block and all its ancestors have data (HaveNumChainTxs)

    @property
    def failed(self) -> bool:
        return bool(self.status & FAILED_MASK)

    @property
    def hash_hex(self) -> str:
        return hash_to_hex(self.hash)

    def __repr__(self) -> str:
        return f"<BlockIndex {self.height} {self.hash_hex[:16]}>"


@dataclass(frozen=True, slots=True)
class TipChanged:
    """The active tip moved. ``connected`` is False when blocks were only
    disconnected (invalidateblock): Core then notifies -blocknotify but not
    ZMQ hashblock."""

    tip: BlockIndex
    fork: BlockIndex
    connected: bool


@dataclass(frozen=True, slots=True)
class BlockStored:
    """A block's data was stored (it passed everything but connection)."""

    block: Block


@dataclass(frozen=True, slots=True)
class BlockInvalidated:
    """invalidateblock marked this block (and its descendants) invalid."""

    hash: bytes


@dataclass(frozen=True, slots=True)
class BlockReconsidered:
    """reconsiderblock cleared the failure marks around this block."""

    hash: bytes


@dataclass(slots=True)
class BlockTemplate:
    """What Core's BlockAssembler produces: the next block's parent,
    transactions (by package feerate), their fees and sigop costs, the
    coinbase value and the default witness commitment."""

    prev: BlockIndex
    height: int
    version: int
    bits: int
    entries: list[MempoolEntry]
    coinbase_value: int
    commitment_script: bytes
    mintime: int
    transactions_updated: int  # mempool counter when built (longpollid)

    @property
    def weight(self) -> int:
        """currentblockweight: reserved coinbase weight plus the transactions."""
        return BLOCK_RESERVED_WEIGHT + sum(e.weight for e in self.entries)


@dataclass
class RecordedContext:
    """A chain state recorded from a real node, to start a :class:`Chain`
    from instead of genesis: the tip header and its position, the median
    time past, the coins the pending transactions spend, those
    transactions, and the wall clock of the recording."""

    header: bytes
    height: int
    chainwork: int
    n_tx: int
    mediantime: int
    now: int
    coins: dict[tuple[bytes, int], Coin] = field(default_factory=dict)
    mempool: list[RawTx] = field(default_factory=list)
    ancestor_times: tuple[int, ...] | None = None  # the 10 block times before the tip, oldest first

    def times(self) -> tuple[int, ...]:
        """Block times ending with the tip for median-time-past. Without
        recorded ancestor times, assume the 10 blocks before the tip were
        mined one second apart around the recorded median (what a burst of
        generatetoaddress produces); that reproduces Core's median time
        past for the tip and its successors."""
        tip_time = int.from_bytes(self.header[68:72], "little")
        if self.ancestor_times is not None:
            return (*self.ancestor_times[-(MEDIAN_TIME_SPAN - 1):], tip_time)
        m = self.mediantime
        if tip_time >= m + 4:
            return (*range(m - 5, m + 5), tip_time)
        return (*([m] * (MEDIAN_TIME_SPAN - 1)), tip_time)

    @classmethod
    def from_tip_and_template(cls, tip_header: dict, gbt: dict, now: int) -> "RecordedContext":
        """Build from Core's ``getblockheader`` of the tip and a
        ``getblocktemplate`` built on it: the template's transactions go to
        the mempool, and each coin they spend (outside the template) is
        reconstructed with value = outputs + recorded fee (for several
        inputs, the first carries the value) and a script inferred from
        how it is spent."""
        header = build_header(
            int(tip_header["version"]),
            hex_to_hash(tip_header["previousblockhash"]),
            hex_to_hash(tip_header["merkleroot"]),
            int(tip_header["time"]),
            int(tip_header["bits"], 16),
            int(tip_header["nonce"]),
        )
        if hash_to_hex(sha256d(header)) != tip_header["hash"]:
            raise ValueError("recorded tip header does not hash to its recorded hash")
        txs: list[RawTx] = []
        coins: dict[tuple[bytes, int], Coin] = {}
        in_template = set()
        for t in gbt["transactions"]:
            tx, _ = parse_tx(bytes.fromhex(t["data"]))
            txs.append(tx)
            in_template.add(tx.txid)
        for t, tx in zip(gbt["transactions"], txs):
            missing = [i for i, (prev, _, _, _) in enumerate(tx.inputs) if prev not in in_template]
            value_out = sum(v for v, _ in tx.outputs)
            known_in = 0
            for i, (prev, n, _, _) in enumerate(tx.inputs):
                if prev in in_template:
                    known_in += next(x for x in txs if x.txid == prev).outputs[n][0]
            remainder = value_out + int(t["fee"]) - known_in
            for k, i in enumerate(missing):
                prev, n, script_sig, _ = tx.inputs[i]
                stack = tx.witnesses[i] if tx.witnesses else []
                coins[(prev, n)] = Coin(remainder if k == 0 else 0, infer_prevout_script(script_sig, stack, prev + n.to_bytes(4, "little")), int(tip_header["height"]), False)
        return cls(
            header=header,
            height=int(tip_header["height"]),
            chainwork=int(tip_header["chainwork"], 16),
            n_tx=int(tip_header["nTx"]),
            mediantime=int(tip_header["mediantime"]),
            now=int(now),
            coins=coins,
            mempool=txs,
        )


def infer_prevout_script(script_sig: bytes, stack: list[bytes], salt: bytes) -> bytes:
    """The output script a spend of this shape most plausibly spent:
    P2WPKH, P2TR key path, P2WSH, P2SH(-wrapped) or P2PKH. For a taproot key
    path the output key cannot be known; a placeholder derived from
    ``salt`` stands in."""
    pushes = [d for op, d in script_ops(script_sig) if op is not None]
    if not script_sig and len(stack) == 2 and len(stack[1]) in (33, 65):
        return b"\x00\x14" + hash160(stack[1])
    if not script_sig and len(stack) == 1 and len(stack[0]) in (64, 65):
        return b"\x51\x20" + sha256d(b"devnode placeholder taproot key" + salt)
    if not script_sig and len(stack) >= 2:
        return b"\x00\x20" + sha256(stack[-1]).digest()
    if stack and len(pushes) == 1:
        return b"\xa9\x14" + hash160(pushes[0]) + b"\x87"
    if len(pushes) == 2 and len(pushes[1]) in (33, 65):
        return b"\x76\xa9\x14" + hash160(pushes[1]) + b"\x88\xac"
    if pushes:
        return b"\xa9\x14" + hash160(pushes[-1]) + b"\x87"
    return b"\x51"  # OP_TRUE: anyone can spend


class Chain:
    """Block index, active chain, UTXO set and mempool of a regtest node.

    ``clock`` returns the wall-clock time in seconds. ``bits`` is the
    compact target of every block from height ``bits_from_height`` on;
    blocks below it use regtest's own 207fffff (a stand-in extension, so a
    chain with a harder target can still mine its first, maturing blocks
    quickly). Listeners in
    ``self.listeners`` receive :class:`TipChanged`, :class:`BlockStored`,
    :class:`BlockInvalidated` and :class:`BlockReconsidered` events
    synchronously; they must not modify the chain.

    The UTXO set (``utxos``: outpoint -> :class:`Coin` with value, script,
    height and coinbase flag) is what a wallet will read later.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = _time.time,
        bits: int = REGTEST_BITS,
        bits_from_height: int = 1,
        halving_interval: int = REGTEST_HALVING_INTERVAL,
        context: RecordedContext | None = None,
    ):
        if not check_proof_of_work(b"\x00" * 32, bits):
            raise ValueError(f"bits {bits:08x} is not a valid regtest target")
        self.clock = clock
        self.bits = bits
        self.bits_from_height = bits_from_height
        self.halving_interval = halving_interval
        self.pow_limit = REGTEST_POW_LIMIT
        self.index: dict[bytes, BlockIndex] = {}
        self.active: list[BlockIndex] = []
        self.offset = 0  # height of active[0]
        self.utxos: dict[tuple[bytes, int], Coin] = {}
        self.mempool = Mempool()
        self.candidates: set[BlockIndex] = set()
        self.listeners: list[Callable[[object], None]] = []
        self.loading = False  # replaying stored blocks: no time-too-new check
        self.last_block_weight: int | None = None
        self.last_block_num_txs: int | None = None
        self._seq = 0
        self._ibd_done = False
        self.base: BlockIndex
        if context is None:
            self._init_genesis()
        else:
            self._init_context(context)

    # ------------------------------------------------------------------
    # construction

    def _init_genesis(self) -> None:
        genesis = regtest_genesis()
        idx = BlockIndex(genesis.header, None, 0, block_proof(genesis.bits), (genesis.time,))
        idx.block = genesis
        idx.n_tx = 1
        idx.status = HAVE_DATA | VALID_TRANSACTIONS | VALID_SCRIPTS
        idx.linked = True
        self.index[idx.hash] = idx
        self.active = [idx]
        self.offset = 0
        self.base = idx
        self.candidates.add(idx)

    def _init_context(self, ctx: RecordedContext) -> None:
        times = ctx.times()
        idx = BlockIndex(ctx.header, None, ctx.height, ctx.chainwork, times)
        if idx.mtp != ctx.mediantime:
            raise ValueError(f"ancestor times give median time past {idx.mtp}, recorded {ctx.mediantime}")
        idx.n_tx = ctx.n_tx
        idx.status = VALID_TRANSACTIONS | VALID_SCRIPTS  # connected, but its data is not here
        idx.linked = True
        self.index[idx.hash] = idx
        self.active = [idx]
        self.offset = ctx.height
        self.base = idx
        self.candidates.add(idx)
        self.utxos.update(ctx.coins)
        for tx in ctx.mempool:
            self.mempool.accept(tx, self, ctx.now)

    # ------------------------------------------------------------------
    # queries

    def now(self) -> int:
        return int(self.clock())

    @property
    def tip(self) -> BlockIndex:
        return self.active[-1]

    @property
    def height(self) -> int:
        return self.tip.height

    @property
    def next_height(self) -> int:
        return self.tip.height + 1

    @property
    def tip_mtp(self) -> int:
        return self.tip.mtp

    def coin(self, outpoint: tuple[bytes, int]) -> Coin | None:
        return self.utxos.get(outpoint)

    def at_height(self, height: int) -> BlockIndex | None:
        i = height - self.offset
        if 0 <= i < len(self.active):
            return self.active[i]
        return None

    def mtp_at(self, height: int) -> int:
        idx = self.at_height(height)
        return (idx or self.base).mtp

    def lookup(self, block_hash: bytes) -> BlockIndex | None:
        return self.index.get(block_hash)

    def contains(self, idx: BlockIndex) -> bool:
        return self.at_height(idx.height) is idx

    def next_in_chain(self, idx: BlockIndex) -> BlockIndex | None:
        return self.at_height(idx.height + 1) if self.contains(idx) else None

    def find_fork(self, idx: BlockIndex) -> BlockIndex:
        """The last block ``idx`` shares with the active chain."""
        p: BlockIndex | None = idx
        while p is not None and not self.contains(p):
            p = p.prev
        if p is None:
            raise ChainError("block does not connect to the active chain")
        return p

    def next_bits(self, prev: BlockIndex) -> int:
        return self.bits if prev.height + 1 >= self.bits_from_height else REGTEST_BITS

    def subsidy(self, height: int) -> int:
        return block_subsidy(height, self.halving_interval)

    def best_header(self) -> BlockIndex:
        """Most-work header not known invalid (Core's m_best_header)."""
        best = self.base
        for i in self.index.values():  # insertion order: the first seen wins ties
            if not i.failed and i.chainwork > best.chainwork:
                best = i
        return best

    def is_initial_block_download(self) -> bool:
        """Core's latch: true until the tip is less than a day old."""
        if self._ibd_done:
            return False
        if self.tip.time < self.now() - MAX_TIP_AGE:
            return True
        self._ibd_done = True
        return False

    def size_on_disk(self) -> int:
        return sum(i.block.size + 8 for i in self.index.values() if i.block is not None)

    def chain_tips(self) -> list[tuple[BlockIndex, int, str]]:
        """getchaintips: (block, branch length, status) for the active tip
        and every block outside the active chain without children."""
        tips = [i for i in self.index.values() if not self.contains(i) and not i.children]
        tips.append(self.tip)
        out = []
        for b in sorted(tips, key=lambda i: (-i.height, i.hash)):
            if self.contains(b):
                status = "active"
            elif b.failed:
                status = "invalid"
            elif not b.linked:
                status = "headers-only"
            elif b.status & VALID_SCRIPTS:
                status = "valid-fork"
            else:
                status = "valid-headers"
            out.append((b, b.height - self.find_fork(b).height, status))
        return out

    def _emit(self, event: object) -> None:
        for listener in list(self.listeners):
            listener(event)

    # ------------------------------------------------------------------
    # validation steps

    def check_block(self, block: Block, check_pow: bool = True, check_merkle: bool = True) -> None:
        """CheckBlock: context-free; raises Invalid."""
        if check_pow and not check_proof_of_work(block.hash, block.bits, self.pow_limit):
            raise Invalid("high-hash", "proof of work failed")
        if check_merkle:
            root, mutated = compute_merkle_root(block.txids)
            if root != block.merkle_root:
                raise Invalid("bad-txnmrklroot", "hashMerkleRoot mismatch", mutated=True)
            if mutated:
                raise Invalid("bad-txns-duplicate", "duplicate transaction", mutated=True)
        txs = block.txs
        if not txs or len(txs) * WITNESS_SCALE_FACTOR > MAX_BLOCK_WEIGHT or block.stripped_size * WITNESS_SCALE_FACTOR > MAX_BLOCK_WEIGHT:
            raise Invalid("bad-blk-length", "size limits failed")
        if not txs[0].is_coinbase():
            raise Invalid("bad-cb-missing", "first tx is not coinbase")
        for tx in txs[1:]:
            if tx.is_coinbase():
                raise Invalid("bad-cb-multiple", "more than one coinbase")
        for tx, txid in zip(txs, block.txids):
            try:
                check_transaction(tx)
            except Invalid as e:
                raise Invalid(e.reason, f"Transaction check failed (tx hash {hash_to_hex(txid)}) {e.debug}") from None
        if sum(legacy_sigops(tx) for tx in txs) * WITNESS_SCALE_FACTOR > MAX_BLOCK_SIGOPS_COST:
            raise Invalid("bad-blk-sigops", "out-of-bounds SigOpCount")

    def contextual_check_header(self, block: Block, prev: BlockIndex) -> None:
        """ContextualCheckBlockHeader; raises Invalid."""
        if block.bits != self.next_bits(prev):
            raise Invalid("bad-diffbits", "incorrect proof of work")
        if block.time <= prev.mtp:
            raise Invalid("time-too-old", "block's timestamp is too early")
        if not self.loading and block.time > self.now() + MAX_FUTURE_BLOCK_TIME:
            raise Invalid("time-too-new", "block timestamp too far in the future")
        # BIP34, BIP66 and BIP65 are buried at height 1 on regtest
        if block.version < 4:
            v = block.version & 0xFFFFFFFF
            raise Invalid(f"bad-version(0x{v:08x})", f"rejected nVersion=0x{v:08x} block")

    def contextual_check_block(self, block: Block, prev: BlockIndex) -> None:
        """ContextualCheckBlock; raises Invalid."""
        height = prev.height + 1
        cutoff = prev.mtp  # BIP113 (CSV active)
        for tx in block.txs:
            if not is_final_tx(tx, height, cutoff):
                raise Invalid("bad-txns-nonfinal", "non-final transaction")
        expect = bip34_height(height)
        if not block.txs[0].inputs[0][2].startswith(expect):
            raise Invalid("bad-cb-height", "block height mismatch in coinbase")
        coinbase = block.txs[0]
        pos = witness_commitment_index(coinbase)
        if pos is not None:
            stack = coinbase.witnesses[0] if coinbase.witnesses else []
            if len(stack) != 1 or len(stack[0]) != 32:
                raise Invalid("bad-witness-nonce-size", "CheckWitnessMalleation : invalid witness reserved value size", mutated=True)
            commitment = sha256d(witness_merkle_root(block.txs) + stack[0])
            if commitment != coinbase.outputs[pos][1][6:38]:
                raise Invalid("bad-witness-merkle-match", "CheckWitnessMalleation : witness merkle commitment mismatch", mutated=True)
        else:
            for tx in block.txs:
                if has_witness(tx):
                    raise Invalid("unexpected-witness", "CheckWitnessMalleation : unexpected witness data found", mutated=True)
        if block.weight > MAX_BLOCK_WEIGHT:
            raise Invalid("bad-blk-weight", "ContextualCheckBlock : weight limit failed")

    def connect_block(self, block: Block, prev: BlockIndex, commit: bool) -> list[list[Coin]]:
        """ConnectBlock against the UTXO set at ``prev`` (the active tip).
        With ``commit`` the coins are updated; returns the spent coins per
        non-coinbase transaction (undo data). Raises Invalid."""
        if prev is not self.tip:
            raise ChainError("connect_block needs the active tip as parent")
        height = prev.height + 1
        txs, txids = block.txs, block.txids
        utxos = self.utxos
        for tx, txid in zip(txs, txids):
            for n in range(len(tx.outputs)):
                if (txid, n) in utxos:
                    raise Invalid("bad-txns-BIP30", "tried to overwrite transaction")
        added: dict[tuple[bytes, int], Coin] = {}
        spent: dict[tuple[bytes, int], Coin] = {}
        undo: list[list[Coin]] = []
        fees = 0
        sigops = 0
        for i, (tx, txid) in enumerate(zip(txs, txids)):
            if i == 0:
                sigops += legacy_sigops(tx) * WITNESS_SCALE_FACTOR
            else:
                coins: list[Coin] = []
                for prev_hash, n, _, _ in tx.inputs:
                    op = (prev_hash, n)
                    c = added.get(op)
                    if c is None and op not in spent:
                        c = utxos.get(op)
                    if c is None:
                        raise Invalid("bad-txns-inputs-missingorspent", f"CheckTxInputs: inputs missing/spent in transaction {hash_to_hex(txid)}")
                    coins.append(c)
                value_in = 0
                for c in coins:
                    if c.coinbase and height - c.height < COINBASE_MATURITY:
                        raise Invalid(
                            "bad-txns-premature-spend-of-coinbase",
                            f"tried to spend coinbase at depth {height - c.height} in transaction {hash_to_hex(txid)}",
                        )
                    value_in += c.value
                    if not money_range(c.value) or not money_range(value_in):
                        raise Invalid("bad-txns-inputvalues-outofrange", f" in transaction {hash_to_hex(txid)}")
                value_out = sum(v for v, _ in tx.outputs)
                if value_in < value_out:
                    raise Invalid(
                        "bad-txns-in-belowout",
                        f"value in ({format_money(value_in)}) < value out ({format_money(value_out)}) in transaction {hash_to_hex(txid)}",
                    )
                fee = value_in - value_out
                if not money_range(fee):
                    raise Invalid("bad-txns-fee-outofrange", f" in transaction {hash_to_hex(txid)}")
                fees += fee
                if not money_range(fees):
                    raise Invalid("bad-txns-accumulated-fee-outofrange", "accumulated fee in the block out of range")
                if not sequence_locks_ok(tx, [c.height for c in coins], height, prev.mtp, self.mtp_at):
                    raise Invalid("bad-txns-nonfinal", f"contains a non-BIP68-final transaction {hash_to_hex(txid)}")
                sigops += tx_sigop_cost(tx, [c.script for c in coins])
            if sigops > MAX_BLOCK_SIGOPS_COST:
                raise Invalid("bad-blk-sigops", "too many sigops")
            if i > 0:
                for prev_hash, n, _, _ in tx.inputs:
                    op = (prev_hash, n)
                    if op in added:
                        del added[op]
                    else:
                        spent[op] = utxos[op]
                undo.append(coins)
            for n, (value, script) in enumerate(tx.outputs):
                if not is_unspendable(script):
                    added[(txid, n)] = Coin(value, script, height, i == 0)
        reward = fees + self.subsidy(height)
        paid = sum(v for v, _ in txs[0].outputs)
        if paid > reward:
            raise Invalid("bad-cb-amount", f"coinbase pays too much (actual={paid} vs limit={reward})")
        if commit:
            for op in spent:
                del utxos[op]
            utxos.update(added)
        return undo

    # ------------------------------------------------------------------
    # block processing

    def update_uncommitted_block_structures(self, block: Block, prev: BlockIndex) -> Block:
        """Give a coinbase that commits to witnesses but carries no witness
        the 32 zero bytes it must have (Core does this before validating)."""
        if not block.txs:
            return block
        coinbase = block.txs[0]
        if witness_commitment_index(coinbase) is not None and not has_witness(coinbase):
            stacks = [[b"\x00" * 32]] + [[] for _ in coinbase.inputs[1:]]
            return block.with_coinbase(tx_with_witness(coinbase, stacks))
        return block

    def submit_block(self, block: Block) -> str | None:
        """submitblock: Core's BIP22 answer for ``block`` (None = accepted).
        No shortcut for a hash already known: like Core v31, the block is
        checked first, so a malleated copy of a stored block (the same
        header, a transaction repeated: CVE-2012-2459) is answered
        ``bad-txns-duplicate``, not ``duplicate``."""
        prev = self.index.get(block.prevhash)
        if prev is not None:
            block = self.update_uncommitted_block_structures(block, prev)
        checked: dict[bytes, Invalid | None] = {}
        accepted, new_block = self.process_new_block(block, checked)
        if accepted and not new_block:
            return "duplicate"
        if block.hash not in checked:
            return "inconclusive"
        verdict = checked[block.hash]
        return None if verdict is None else verdict.reason

    def process_new_block(self, block: Block, checked: dict[bytes, Invalid | None] | None = None) -> tuple[bool, bool]:
        """ProcessNewBlock: (accepted, new block). Every block checked on
        the way (this one, and those connected during activation) lands in
        ``checked`` with its verdict (Core's BlockChecked signal)."""
        try:
            self.check_block(block)
            idx, new_block = self._accept_block(block)
        except Invalid as e:
            if checked is not None:
                checked[block.hash] = e
            return False, False
        self.activate_best_chain(checked)
        return True, new_block

    def _accept_header(self, block: Block) -> BlockIndex:
        idx = self.index.get(block.hash)
        if idx is not None:
            if idx.failed:
                raise Invalid("duplicate-invalid")
            return idx
        # CheckBlockHeader already ran inside CheckBlock
        prev = self.index.get(block.prevhash)
        if prev is None:
            raise Invalid("prev-blk-not-found")
        if prev.failed:
            raise Invalid("bad-prevblk")
        self.contextual_check_header(block, prev)
        idx = BlockIndex(block.header, prev, prev.height + 1, prev.chainwork + block_proof(block.bits), (*prev.recent_times, block.time)[-MEDIAN_TIME_SPAN:])
        self.index[idx.hash] = idx
        prev.children.append(idx)
        return idx

    def _accept_block(self, block: Block) -> tuple[BlockIndex, bool]:
        idx = self._accept_header(block)
        if idx.status & HAVE_DATA:
            return idx, False
        try:
            self.contextual_check_block(block, idx.prev)
        except Invalid as e:
            if not e.mutated:
                self._mark_failed(idx)
            raise
        self._seq += 1
        idx.seq = self._seq
        idx.block = block
        idx.n_tx = len(block.txs)
        idx.status |= HAVE_DATA | VALID_TRANSACTIONS
        self._link(idx)
        self._emit(BlockStored(block))
        return idx, True

    def _link(self, idx: BlockIndex) -> None:
        """Mark ``idx`` and any stored descendants as fully linked
        (ReceivedBlockTransactions), making them chain-tip candidates."""
        if not (idx.prev is not None and idx.prev.linked):
            return
        stack = [idx]
        while stack:
            b = stack.pop()
            if not b.status & HAVE_DATA:
                continue
            b.linked = True
            if not b.failed:
                self.candidates.add(b)
            stack.extend(b.children)

    def _descendants(self, idx: BlockIndex) -> list[BlockIndex]:
        out, stack = [], list(idx.children)
        while stack:
            b = stack.pop()
            out.append(b)
            stack.extend(b.children)
        return out

    def _mark_failed(self, idx: BlockIndex) -> None:
        idx.status |= FAILED_VALID
        self.candidates.discard(idx)
        for d in self._descendants(idx):
            d.status |= FAILED_CHILD
            self.candidates.discard(d)

    def _best_candidate(self) -> BlockIndex:
        return min(self.candidates, key=lambda i: (-i.chainwork, i.seq, i.hash))

    def _disconnect_tip(self) -> Block:
        idx = self.tip
        block = idx.block
        if block is None or idx.undo is None or len(self.active) < 2:
            raise ChainError(f"cannot disconnect block {idx.hash_hex}: its data is not here")
        utxos = self.utxos
        for i in range(len(block.txs) - 1, -1, -1):
            tx, txid = block.txs[i], block.txids[i]
            for n, (_, script) in enumerate(tx.outputs):
                if not is_unspendable(script):
                    utxos.pop((txid, n), None)
            if i > 0:
                for (prev_hash, n, _, _), coin in zip(tx.inputs, idx.undo[i - 1]):
                    utxos[(prev_hash, n)] = coin
        idx.undo = None
        self.active.pop()
        self.mempool.transactions_updated += 1
        return block

    def _connect_tip(self, idx: BlockIndex) -> None:
        idx.undo = self.connect_block(idx.block, idx.prev, commit=True)
        idx.status |= VALID_SCRIPTS
        self.active.append(idx)
        self.mempool.remove_for_block(idx.block.txs, idx.block.txids)
        self.mempool.transactions_updated += 1  # UpdateTip: "New best block"

    def activate_best_chain(self, checked: dict[bytes, Invalid | None] | None = None) -> None:
        """Make the most-work valid chain active, reorganising as needed."""
        start = self.tip
        disconnected: list[Block] = []
        connected = False
        while True:
            best = self._best_candidate()
            if best is self.tip:
                break
            fork = self.find_fork(best)
            while self.tip is not fork:
                disconnected.append(self._disconnect_tip())
            path = []
            p = best
            while p is not fork:
                path.append(p)
                p = p.prev
            for idx in reversed(path):
                try:
                    self._connect_tip(idx)
                except Invalid as e:
                    if checked is not None:
                        checked[idx.hash] = e
                    if not e.mutated:
                        self._mark_failed(idx)
                    else:  # cannot happen after ContextualCheckBlock, but never loop on it
                        self.candidates.discard(idx)
                    break
                connected = True
                if checked is not None:
                    checked[idx.hash] = None
        self._after_tip_change(start, disconnected, connected)

    def _after_tip_change(self, start: BlockIndex, disconnected: list[Block], connected: bool) -> None:
        if self.tip is start and not disconnected:
            return
        tip_work = self.tip.chainwork
        self.candidates = {c for c in self.candidates if c.chainwork >= tip_work}
        if disconnected:
            self._readd_to_mempool(disconnected)
        fork = self.find_fork(start)
        if self.tip is not fork or not connected:
            self._emit(TipChanged(self.tip, fork, connected and self.tip is not fork))

    def _readd_to_mempool(self, disconnected: list[Block]) -> None:
        """Disconnected blocks' transactions go back to the mempool ahead of
        what is there, and everything is re-checked against the new tip."""
        now = self.now()
        txs = [(tx, False) for block in reversed(disconnected) for tx in block.txs[1:]]
        txs += [(e.tx, e.unbroadcast) for e in self.mempool.clear()]
        for tx, unbroadcast in txs:
            try:
                self.mempool.accept(tx, self, now, bypass_limits=True, unbroadcast=unbroadcast)
            except MempoolReject:
                pass

    def _rebuild_candidates(self) -> None:
        tip_work = self.tip.chainwork
        self.candidates = {i for i in self.index.values() if i.linked and not i.failed and i.chainwork >= tip_work}
        self.candidates.add(self.tip)

    # ------------------------------------------------------------------
    # invalidateblock / reconsiderblock

    def invalidate_block(self, idx: BlockIndex) -> None:
        """invalidateblock: mark ``idx`` and its descendants invalid,
        disconnect them, then activate the best remaining chain."""
        if idx is self.base:
            raise ChainError("Genesis block can't be invalidated" if idx.height == 0 else "The base of a recorded context can't be invalidated")
        start = self.tip
        disconnected: list[Block] = []
        while self.contains(idx):
            disconnected.append(self._disconnect_tip())
        self._mark_failed(idx)
        self._rebuild_candidates()
        self._emit(BlockInvalidated(idx.hash))
        self._after_tip_change(start, disconnected, connected=False)
        self.activate_best_chain()

    def reconsider_block(self, idx: BlockIndex) -> None:
        """reconsiderblock: clear failure marks on ``idx``, its descendants
        and its ancestors, then activate the best chain."""
        for b in [idx, *self._descendants(idx)]:
            b.status &= ~FAILED_MASK
        p = idx.prev
        while p is not None:
            p.status &= ~FAILED_MASK
            p = p.prev
        self._rebuild_candidates()
        self._emit(BlockReconsidered(idx.hash))
        self.activate_best_chain()

    # ------------------------------------------------------------------
    # block proposals (getblocktemplate mode=proposal, generateblock)

    def test_block_validity(self, block: Block, check_pow: bool, check_merkle: bool) -> Invalid | None:
        """TestBlockValidity: would ``block`` connect on the current tip?
        Nothing is stored."""
        if block.prevhash != self.tip.hash:
            return Invalid("inconclusive-not-best-prevblk")
        try:
            self.check_block(block, check_pow, check_merkle)
            self.contextual_check_header(block, self.tip)
            self.contextual_check_block(block, self.tip)
            self.connect_block(block, self.tip, commit=False)
        except Invalid as e:
            return e
        return None

    # ------------------------------------------------------------------
    # mempool

    def accept_to_mempool(self, tx: RawTx, unbroadcast: bool = False) -> MempoolEntry:
        return self.mempool.accept(tx, self, self.now(), unbroadcast=unbroadcast)

    # ------------------------------------------------------------------
    # templates and mining

    def create_new_block(self, use_mempool: bool = True) -> BlockTemplate:
        """BlockAssembler::CreateNewBlock on the current tip."""
        prev = self.tip
        height = prev.height + 1
        entries = (
            self.mempool.select(MAX_BLOCK_WEIGHT - BLOCK_RESERVED_WEIGHT, MAX_BLOCK_SIGOPS_COST - BLOCK_RESERVED_SIGOPS)
            if use_mempool
            else []
        )
        value = self.subsidy(height) + sum(e.fee for e in entries)
        commitment = witness_commitment_script(witness_commitment([e.wtxid for e in entries]))
        tpl = BlockTemplate(
            prev=prev,
            height=height,
            version=TEMPLATE_VERSION,
            bits=self.next_bits(prev),
            entries=entries,
            coinbase_value=value,
            commitment_script=commitment,
            mintime=prev.mtp + 1,
            transactions_updated=self.mempool.transactions_updated,
        )
        self.last_block_weight = tpl.weight
        self.last_block_num_txs = len(entries)
        return tpl

    def block_time(self, prev: BlockIndex) -> int:
        """UpdateTime: now, but after the median time past."""
        return max(prev.mtp + 1, self.now())

    def make_coinbase(self, height: int, value: int, script: bytes, commitment_script: bytes | None) -> RawTx:
        """A coinbase like Core's miner: BIP34 height then OP_0, locked to
        the previous height, paying ``value`` to ``script``, with the witness
        commitment and its 32-byte reserved value."""
        script_sig = bip34_height(height) + b"\x00"
        outputs = [(value, script)]
        witnesses = None
        if commitment_script is not None:
            outputs.append((0, commitment_script))
            witnesses = [[b"\x00" * 32]]
        return make_tx(2, [(b"\x00" * 32, 0xFFFFFFFF, script_sig, 0xFFFFFFFE)], outputs, witnesses, height - 1)

    def assemble(self, tpl: BlockTemplate, script: bytes, txs: Iterable[RawTx] | None = None) -> Block:
        """A block (nonce 0) from a template paying ``script``; ``txs``
        replaces the template's transactions (generateblock)."""
        if txs is None:
            body = [e.tx for e in tpl.entries]
            commitment = tpl.commitment_script
            value = tpl.coinbase_value
        else:
            body = list(txs)
            commitment = witness_commitment_script(witness_commitment([t.wtxid for t in body]))
            value = self.subsidy(tpl.height)
        coinbase = self.make_coinbase(tpl.height, value, script, commitment)
        all_txs = [coinbase, *body]
        root, _ = compute_merkle_root([t.txid for t in all_txs])
        header = build_header(tpl.version, tpl.prev.hash, root, self.block_time(tpl.prev), tpl.bits, 0)
        return Block(header, all_txs)

    def grind(self, block: Block, max_tries: int) -> tuple[Block | None, int]:
        """Search nonces until the header meets its target; returns the
        solved block (or None) and the tries left."""
        header = bytearray(block.header)
        nonce = 0
        while max_tries > 0:
            header[76:80] = nonce.to_bytes(4, "little")
            if check_proof_of_work(sha256d(bytes(header)), block.bits, self.pow_limit):
                return Block(bytes(header), block.txs), max_tries
            max_tries -= 1
            nonce += 1
            if nonce > 0xFFFFFFFF:
                return None, max_tries
        return None, max_tries

    def generate(self, script: bytes, n: int, max_tries: int = 1_000_000) -> list[bytes]:
        """generatetoaddress: mine ``n`` blocks with mempool transactions,
        paying ``script``. Returns the new block hashes."""
        hashes = []
        while n > 0:
            tpl = self.create_new_block()
            solved, max_tries = self.grind(self.assemble(tpl, script), max_tries)
            if solved is None:
                break
            accepted, _ = self.process_new_block(solved)
            if not accepted:
                raise ChainError("ProcessNewBlock, block not accepted")
            hashes.append(solved.hash)
            n -= 1
        return hashes
