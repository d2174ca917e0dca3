"""The devnode's mempool and its synthetic transaction source. Pure: no I/O.

:class:`Mempool` keeps unconfirmed transactions with their fee, weight,
sigop cost and in-mempool parents, accepts new ones against a chain view
(inputs present, no double spend, mature coinbase, final, fee not
negative, the minimum relay fee met) and selects them for a block by
ancestor-package feerate, the way Bitcoin Core's BlockAssembler does. No
replacement (RBF), no script or signature checks.

:class:`Faucet` makes plausible transactions from the dev faucet's coins:
mixed P2WPKH, P2TR and P2PKH inputs and outputs, dummy signatures of the
real sizes, real fees, and chains of unconfirmed parents. Its keys are not
real keys and nothing is signed; the devnode does not verify scripts.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Iterable, Protocol

from hashcoop.pool.core.btc.block import RawTx
from hashcoop.pool.tools.devnode.consensus import (
    COIN,
    COINBASE_MATURITY,
    WITNESS_SCALE_FACTOR,
    Coin,
    Invalid,
    check_transaction,
    hash160,
    is_final_tx,
    make_tx,
    money_range,
    sequence_locks_ok,
    tx_sigop_cost,
)

MAX_STANDARD_TX_WEIGHT = 400_000
DEFAULT_ANCESTOR_LIMIT = 25
BYTES_PER_SIGOP = 20  # -bytespersigop: sigop-adjusted virtual size
BLOCK_RESERVED_WEIGHT = 8_000  # -blockreservedweight: header, tx count and coinbase
BLOCK_RESERVED_SIGOPS = 400  # coinbase sigops the assembler keeps free
MEMPOOL_HEIGHT = 0x7FFFFFFF  # the height Core gives coins that exist only in the mempool
MIN_RELAY_FEE = 100  # sat/kvB (-minrelaytxfee, 0.1 sat/vB in Core v31)
MIN_FAUCET_COIN = 100_000  # smaller faucet outputs are left alone (they would not cover a fee and change)


class MempoolReject(Exception):
    """A transaction the mempool refuses; ``reason`` is Core's reject reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ChainView(Protocol):
    """What the mempool needs from the chain."""

    def coin(self, outpoint: tuple[bytes, int]) -> Coin | None: ...

    @property
    def next_height(self) -> int: ...

    @property
    def tip_mtp(self) -> int: ...

    def mtp_at(self, height: int) -> int: ...


def virtual_size(weight: int, sigop_cost: int) -> int:
    """GetVirtualTransactionSize: weight or sigops x 20, in vbytes, rounded up."""
    return (max(weight, sigop_cost * BYTES_PER_SIGOP) + WITNESS_SCALE_FACTOR - 1) // WITNESS_SCALE_FACTOR


@dataclass(eq=False, slots=True)
class MempoolEntry:
    tx: RawTx
    txid: bytes
    wtxid: bytes
    fee: int
    weight: int
    sigop_cost: int
    time: int
    height: int  # chain height when it entered
    parents: set[bytes] = field(default_factory=set)
    children: set[bytes] = field(default_factory=set)
    unbroadcast: bool = False  # submitted over RPC; no peer asked for it (the devnode has none)

    @property
    def vsize(self) -> int:
        return virtual_size(self.weight, self.sigop_cost)


class Mempool:
    """Unconfirmed transactions in arrival order (which is also a valid
    topological order: a parent always arrives before its children)."""

    def __init__(self, ancestor_limit: int = DEFAULT_ANCESTOR_LIMIT):
        self.entries: dict[bytes, MempoolEntry] = {}
        self.spent_by: dict[tuple[bytes, int], bytes] = {}
        self.ancestor_limit = ancestor_limit
        # Core's nTransactionsUpdated: bumped on every add and removal, and
        # by the chain on every new tip; part of getblocktemplate's longpollid.
        self.transactions_updated = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, txid: bytes) -> bool:
        return txid in self.entries

    def get(self, txid: bytes) -> MempoolEntry | None:
        return self.entries.get(txid)

    def output(self, outpoint: tuple[bytes, int]) -> tuple[int, bytes] | None:
        e = self.entries.get(outpoint[0])
        if e is None or outpoint[1] >= len(e.tx.outputs):
            return None
        return e.tx.outputs[outpoint[1]]

    # ------------------------------------------------------------------

    def accept(self, tx: RawTx, view: ChainView, now: int, *, bypass_limits: bool = False, unbroadcast: bool = False) -> MempoolEntry:
        """AcceptToMemoryPool, minus policy Core applies to relayed
        transactions (standardness, RBF). ``bypass_limits`` skips the
        minimum relay fee, as for transactions of disconnected blocks;
        ``unbroadcast`` marks a transaction submitted over RPC (no peer has
        asked for it yet). Raises MempoolReject."""
        if tx.is_coinbase():
            raise MempoolReject("coinbase")
        try:
            check_transaction(tx)
        except Invalid as e:
            raise MempoolReject(e.reason) from None
        if tx.weight > MAX_STANDARD_TX_WEIGHT:
            raise MempoolReject("tx-size")
        txid = tx.txid
        if txid in self.entries:
            raise MempoolReject("txn-already-in-mempool")
        height = view.next_height
        if not is_final_tx(tx, height, view.tip_mtp):
            raise MempoolReject("non-final")
        for prev, n, _, _ in tx.inputs:
            if (prev, n) in self.spent_by:
                raise MempoolReject("txn-mempool-conflict")
        coins: list[Coin] = []
        parents: set[bytes] = set()
        for prev, n, _, _ in tx.inputs:
            out = self.output((prev, n))
            if out is not None:
                coins.append(Coin(out[0], out[1], MEMPOOL_HEIGHT, False))
                parents.add(prev)
                continue
            coin = view.coin((prev, n))
            if coin is None:
                raise MempoolReject("bad-txns-inputs-missingorspent")
            coins.append(coin)
        value_in = 0
        for coin in coins:
            if coin.coinbase and height - coin.height < COINBASE_MATURITY:
                raise MempoolReject("bad-txns-premature-spend-of-coinbase")
            value_in += coin.value
            if not money_range(coin.value) or not money_range(value_in):
                raise MempoolReject("bad-txns-inputvalues-outofrange")
        value_out = sum(v for v, _ in tx.outputs)
        if value_in < value_out:
            raise MempoolReject("bad-txns-in-belowout")
        sigop_cost = tx_sigop_cost(tx, [c.script for c in coins])
        fee = value_in - value_out
        if not bypass_limits:
            min_fee = -(-MIN_RELAY_FEE * virtual_size(tx.weight, sigop_cost) // 1000)
            if fee < min_fee:
                raise MempoolReject(f"min relay fee not met, {fee} < {min_fee}")
        heights = [height if c.height == MEMPOOL_HEIGHT else c.height for c in coins]
        if not sequence_locks_ok(tx, heights, height, view.tip_mtp, view.mtp_at):
            raise MempoolReject("non-BIP68-final")
        if len(self.ancestors(parents)) + 1 > self.ancestor_limit:
            raise MempoolReject("too-long-mempool-chain")
        entry = MempoolEntry(
            tx=tx,
            txid=txid,
            wtxid=tx.wtxid,
            fee=fee,
            weight=tx.weight,
            sigop_cost=sigop_cost,
            time=now,
            height=height - 1,
            parents=parents,
            unbroadcast=unbroadcast,
        )
        self.entries[txid] = entry
        for p in parents:
            self.entries[p].children.add(txid)
        for prev, n, _, _ in tx.inputs:
            self.spent_by[(prev, n)] = txid
        self.transactions_updated += 1
        return entry

    def cluster(self, txid: bytes) -> list[bytes]:
        """The transactions connected to ``txid`` through parents and
        children, in arrival (topological) order."""
        seen = {txid}
        stack = [txid]
        while stack:
            e = self.entries[stack.pop()]
            for t in (*e.parents, *e.children):
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return [t for t in self.entries if t in seen]

    def chunk(self, txid: bytes) -> list[bytes]:
        """The chunk of ``txid`` in its cluster's linearization (Core v31's
        cluster mempool): linearize by repeatedly taking the best
        ancestor-set feerate, then merge each chunk into the one before it
        while it pays a higher feerate."""
        left = self.cluster(txid)
        order: list[bytes] = []
        while left:
            best = None
            for t in left:
                group = [a for a in left if a == t or a in self.ancestors(self.entries[t].parents)]
                fee = sum(self.entries[a].fee for a in group)
                size = sum(self.entries[a].vsize for a in group)
                if best is None or fee * best[2] > best[1] * size:
                    best = (group, fee, size)
            order += best[0]
            left = [t for t in left if t not in best[0]]
        chunks: list[tuple[list[bytes], int, int]] = []
        for t in order:
            e = self.entries[t]
            chunk = ([t], e.fee, e.vsize)
            while chunks and chunk[1] * chunks[-1][2] > chunks[-1][1] * chunk[2]:
                prev = chunks.pop()
                chunk = (prev[0] + chunk[0], prev[1] + chunk[1], prev[2] + chunk[2])
            chunks.append(chunk)
        return next(c[0] for c in chunks if txid in c[0])

    def ancestors(self, parents: Iterable[bytes]) -> set[bytes]:
        seen: set[bytes] = set()
        stack = list(parents)
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            stack.extend(self.entries[t].parents)
        return seen

    def descendants(self, txid: bytes) -> set[bytes]:
        seen: set[bytes] = set()
        stack = [txid]
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            stack.extend(self.entries[t].children)
        return seen

    def _remove_one(self, txid: bytes) -> MempoolEntry:
        e = self.entries.pop(txid)
        for prev, n, _, _ in e.tx.inputs:
            if self.spent_by.get((prev, n)) == txid:
                del self.spent_by[(prev, n)]
        for p in e.parents:
            pe = self.entries.get(p)
            if pe is not None:
                pe.children.discard(txid)
        for c in e.children:
            ce = self.entries.get(c)
            if ce is not None:
                ce.parents.discard(txid)
        self.transactions_updated += 1
        return e

    def remove_recursive(self, txid: bytes) -> list[MempoolEntry]:
        if txid not in self.entries:
            return []
        doomed = self.descendants(txid)
        return [self._remove_one(t) for t in list(self.entries) if t in doomed]

    def remove_for_block(self, txs: list[RawTx], txids: list[bytes]) -> None:
        """A block confirmed ``txs``: drop them and whatever conflicts with
        them (with its descendants)."""
        for tx, txid in zip(txs[1:], txids[1:]):
            if txid in self.entries:
                self._remove_one(txid)
        for tx, txid in zip(txs[1:], txids[1:]):
            for prev, n, _, _ in tx.inputs:
                other = self.spent_by.get((prev, n))
                if other is not None and other != txid:
                    self.remove_recursive(other)

    def clear(self) -> list[MempoolEntry]:
        old = list(self.entries.values())
        self.entries.clear()
        self.spent_by.clear()
        self.transactions_updated += len(old)
        return old

    # ------------------------------------------------------------------

    def select(self, max_weight: int, max_sigops: int) -> list[MempoolEntry]:
        """Pick transactions for a block by ancestor-package feerate (CPFP),
        like Core's BlockAssembler: the best package (a transaction and
        its not yet chosen ancestors) first; equal feerates by txid.
        ``max_weight`` and ``max_sigops`` are the room left after the
        reserved coinbase allowance. Parents always precede children."""
        chosen: set[bytes] = set()
        order: list[MempoolEntry] = []
        weight = 0
        sigops = 0
        version: dict[bytes, int] = {}
        heap: list[tuple[_Score, int, bytes]] = []

        def package(txid: bytes) -> tuple[list[bytes], int, int, int]:
            anc = [t for t in self.ancestors(self.entries[txid].parents) if t not in chosen]
            members = anc + [txid]
            fee = sum(self.entries[t].fee for t in members)
            size = sum(self.entries[t].vsize for t in members)
            sig = sum(self.entries[t].sigop_cost for t in members)
            return members, fee, size, sig

        def push(txid: bytes) -> None:
            _, fee, size, _ = package(txid)
            version[txid] = version.get(txid, 0) + 1
            heapq.heappush(heap, (_Score(fee, size, txid), version[txid], txid))

        arrival = {txid: i for i, txid in enumerate(self.entries)}
        for txid in self.entries:
            push(txid)
        while heap:
            _, ver, txid = heapq.heappop(heap)
            if txid in chosen or version[txid] != ver:
                continue
            members, fee, size, sig = package(txid)
            if weight + size * WITNESS_SCALE_FACTOR >= max_weight or sigops + sig >= max_sigops:
                continue
            ordered = sorted(members, key=arrival.__getitem__)  # arrival order is topological
            for t in ordered:
                chosen.add(t)
                order.append(self.entries[t])
            weight += size * WITNESS_SCALE_FACTOR
            sigops += sig
            # descendants of what was just chosen have a new package score
            touched: set[bytes] = set()
            for t in ordered:
                touched |= self.descendants(t)
            for d in touched - chosen:
                push(d)
        return order


class _Score:
    """Heap key: higher package feerate first (compared exactly, by cross
    multiplication), then the smaller txid (internal byte order), as Core
    breaks ties."""

    __slots__ = ("fee", "size", "txid")

    def __init__(self, fee: int, size: int, txid: bytes):
        self.fee = fee
        self.size = size
        self.txid = txid

    def __lt__(self, other: "_Score") -> bool:
        a = self.fee * other.size
        b = other.fee * self.size
        if a != b:
            return a > b
        return self.txid < other.txid


# --------------------------------------------------------------------------
# Synthetic transactions

_P = 2**256 - 2**32 - 977  # secp256k1 field prime
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _valid_x(rng: random.Random) -> bytes:
    """A random x coordinate that is on secp256k1 (x^3 + 7 is a square), so
    the key is a plausible x-only/compressed public key."""
    while True:
        x = rng.randrange(1, _P)
        if pow(x**3 + 7, (_P - 1) // 2, _P) == 1:
            return x.to_bytes(32, "big")


def _der_signature(rng: random.Random) -> bytes:
    """A DER ECDSA signature with low S and SIGHASH_ALL, 71-73 bytes, like
    real ones; not a valid signature of anything."""

    def integer(v: int) -> bytes:
        b = v.to_bytes(32, "big").lstrip(b"\x00")
        if b[0] & 0x80:
            b = b"\x00" + b
        return b"\x02" + bytes([len(b)]) + b

    r = integer(rng.randrange(1, _N))
    s = integer(rng.randrange(1, _N // 2))
    return b"\x30" + bytes([len(r) + len(s)]) + r + s + b"\x01"


def p2wpkh_script(keyhash: bytes) -> bytes:
    return b"\x00\x14" + keyhash


def p2pkh_script(keyhash: bytes) -> bytes:
    return b"\x76\xa9\x14" + keyhash + b"\x88\xac"


def p2tr_script(xonly: bytes) -> bytes:
    return b"\x51\x20" + xonly


class Faucet:
    """The dev faucet: owns three scripts (P2WPKH, P2TR, P2PKH) whose coins
    it spends into synthetic transactions. Deterministic for a seed."""

    def __init__(self, seed: int = 0xB17C01, max_chain: int = 4):
        rng = random.Random(seed)
        x = _valid_x(rng)
        self.pubkey = b"\x02" + x  # compressed key for P2WPKH/P2PKH spends
        self.xonly = _valid_x(rng)
        self.p2wpkh = p2wpkh_script(hash160(self.pubkey))
        self.p2tr = p2tr_script(self.xonly)
        self.p2pkh = p2pkh_script(hash160(self.pubkey))
        self.scripts = (self.p2wpkh, self.p2tr, self.p2pkh)
        self.rng = random.Random(seed + 1)
        self.max_chain = max_chain

    @property
    def mining_script(self) -> bytes:
        """Where the initial blocks pay (so coinbases mature into the faucet)."""
        return self.p2wpkh

    def spendable(self, utxos: dict[tuple[bytes, int], Coin], mempool: Mempool, next_height: int) -> list[tuple[tuple[bytes, int], int, bytes]]:
        """Faucet outputs it may spend now: mature confirmed ones and
        unconfirmed change whose chain is still short, worth at least
        ``MIN_FAUCET_COIN``; (outpoint, value, script)."""
        mine = set(self.scripts)
        out = []
        for op, coin in utxos.items():
            if coin.script in mine and coin.value >= MIN_FAUCET_COIN and op not in mempool.spent_by:
                if coin.coinbase and next_height - coin.height < COINBASE_MATURITY:
                    continue
                out.append((op, coin.value, coin.script))
        for txid, e in mempool.entries.items():
            if e.children and len(e.children) >= len(e.tx.outputs):
                continue
            depth = len(mempool.ancestors(e.parents)) + 1
            if depth >= self.max_chain:
                continue
            for n, (value, script) in enumerate(e.tx.outputs):
                if script in mine and value >= MIN_FAUCET_COIN and (txid, n) not in mempool.spent_by:
                    out.append(((txid, n), value, script))
        return out

    def _recipient(self) -> bytes:
        kind = self.rng.choice(("p2wpkh", "p2tr", "p2pkh"))
        if kind == "p2wpkh":
            return p2wpkh_script(self.rng.randbytes(20))
        if kind == "p2tr":
            return p2tr_script(_valid_x(self.rng))
        return p2pkh_script(self.rng.randbytes(20))

    def _spend(self, script: bytes) -> tuple[bytes, list[bytes]]:
        """(scriptSig, witness stack) with dummy signatures of real sizes."""
        if script == self.p2wpkh:
            return b"", [_der_signature(self.rng), self.pubkey]
        if script == self.p2tr:
            return b"", [self.rng.randbytes(64)]
        sig = _der_signature(self.rng)
        return bytes([len(sig)]) + sig + bytes([len(self.pubkey)]) + self.pubkey, []

    def make_tx(self, coins: list[tuple[tuple[bytes, int], int, bytes]], locktime: int) -> RawTx | None:
        """A transaction spending one (sometimes two) of ``coins`` (from
        :meth:`spendable`) to one or two recipients (at most 0.05 BTC each)
        plus change back to the faucet, at a random feerate of 1-50 sat/vB.
        Large change is split in two now and then, so the faucet keeps
        enough coins for chains of unconfirmed transactions. None when
        nothing is spendable."""
        if not coins:
            return None
        rng = self.rng
        picked = rng.sample(coins, 2 if len(coins) > 4 and rng.random() < 0.25 else 1)
        total = sum(v for _, v, _ in picked)
        inputs, witnesses = [], []
        for (prev, n), _, script in picked:
            script_sig, stack = self._spend(script)
            inputs.append((prev, n, script_sig, 0xFFFFFFFD))
            witnesses.append(stack)
        outputs = []
        for _ in range(rng.choice((1, 1, 2))):
            amount = min(total // 4, rng.randrange(10_000, 5_000_000))
            if amount >= 1_000:
                outputs.append((amount, self._recipient()))
        paid = sum(v for v, _ in outputs)
        n_change = 2 if total - paid > 2 * COIN and rng.random() < 0.5 else 1
        change_scripts = [rng.choice(self.scripts) for _ in range(n_change)]
        draft = make_tx(2, inputs, outputs + [(total - paid, s) for s in change_scripts], witnesses if any(witnesses) else None, locktime)
        fee = virtual_size(draft.weight, 0) * rng.randint(1, 50)
        change = total - paid - fee
        if change < 1_000 * n_change:
            return None
        first = change // n_change
        outputs += [(first, change_scripts[0])] + [(change - first, s) for s in change_scripts[1:]]
        rng.shuffle(outputs)
        return make_tx(2, inputs, outputs, witnesses if any(witnesses) else None, locktime)

