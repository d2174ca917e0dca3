"""A descriptor wallet for the devnode, behaving like Bitcoin Core v31's for
what a mining pool's payout service does with it: create or load a wallet,
hand out receiving addresses (the pool's coinbase address comes from
``getnewaddress``, as with Core), see its coins mature, fund, sign and send
transactions, and report balances and transactions.

RPCs (answered on ``/wallet/<name>``, or on ``/`` when exactly one wallet is
loaded, with Core's -18/-19 errors otherwise): ``createwallet``,
``loadwallet``, ``unloadwallet``, ``listwallets``, ``getwalletinfo``,
``getnewaddress``, ``getrawchangeaddress``, ``getaddressinfo``,
``getbalances``, ``getbalance``, ``listunspent``, ``fundrawtransaction``,
``signrawtransactionwithwallet``, ``gettransaction``, ``listtransactions``,
``lockunspent``, ``listlockunspent``. What the payout service uses is held
to Bitcoin Core v31.99's recorded answers, field by field and value by
value (tests/vectors/bitcoind-wallet.json, recorded by
``ops/record_wallet_vectors.py``; tests/payouts/test_devnode_wallet.py).

Stand-in limits, on purpose:

* keys are not real keys and **signatures are dummies** of the real sizes
  (71 bytes for P2WPKH, as Core's low-R signatures nearly always are, with
  a 33-byte key; 64 bytes for P2TR); the devnode verifies no script or
  signature anywhere;
* address types ``bech32`` (P2WPKH, the default) and ``bech32m`` (P2TR);
  change is bech32m when a payee is P2TR, else bech32 when one is P2WPKH
  (Core's rule without ``-changetype``);
* no fee estimation: a fee rate comes from the call (``fee_rate`` in sat/vB
  or ``feeRate`` in BTC/kvB; any rate, 0 too, as Core v31 takes it; the
  mempool refuses what pays less than 0.1 sat/vB) or from
  ``--fallbackfee``, which is 0 by default as in Core, so without either
  ``fundrawtransaction`` fails like Core does;
* coin selection is largest-first (Core runs branch-and-bound, knapsack and
  others and picks the cheapest); fee, change and dust rules are Core's;
* the wallet's keys live in ``<datadir>/regtest/wallets/<name>/devnode-wallet.json``;
  everything else (transactions, coins, conflicts) is rebuilt from the
  chain and the mempool, so a wallet loaded after a restart of a
  ``--persist`` node sees its history again.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

from hashcoop.pool.core.btc.address import Network, script_to_address
from hashcoop.pool.core.btc.block import RawTx
from hashcoop.pool.core.btc.hashing import hash_to_hex
from hashcoop.pool.tools.devnode.chain import BlockStored, Chain
from hashcoop.pool.tools.devnode.consensus import COINBASE_MATURITY, WITNESS_SCALE_FACTOR, hash160, make_tx, witness_program
from hashcoop.pool.tools.devnode.mempool import _valid_x, p2tr_script, p2wpkh_script
from hashcoop.pool.tools.devnode.rawtx import amount_from_value, decode_any_tx, legacy_hex, legacy_tx, register_rawtx_rpcs
from hashcoop.pool.tools.devnode.rpc import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_TYPE_ERROR,
    Amount,
    Arg,
    Method,
    Rpc,
    RpcError,
    get_bool,
    get_int,
    get_str,
    parse_hash,
)
from hashcoop.pool.tools.devnode.script import AddressInvalid, decode_destination, descriptor_checksum

# Core's wallet RPC error codes
RPC_WALLET_ERROR = -4
RPC_WALLET_INSUFFICIENT_FUNDS = -6
RPC_WALLET_NOT_FOUND = -18
RPC_WALLET_NOT_SPECIFIED = -19
RPC_WALLET_ALREADY_LOADED = -35
RPC_WALLET_ALREADY_EXISTS = -36

DUST_RELAY_FEE = 3000  # sat/kvB (-dustrelayfee)
MAX_BIP125_RBF_SEQUENCE = 0xFFFFFFFD
WALLET_FILE = "devnode-wallet.json"


def dust_threshold(script: bytes) -> int:
    """GetDustThreshold at the default dust relay fee."""
    out_size = 8 + 1 + len(script)
    spend = 32 + 4 + 1 + (107 // WITNESS_SCALE_FACTOR) + 4 if witness_program(script) is not None else 32 + 4 + 1 + 107 + 4
    return (out_size + spend) * DUST_RELAY_FEE // 1000


def fee_for(rate_sat_kvb: int, vsize: int) -> int:
    """CFeeRate::GetFee (rounded up)."""
    return -(-rate_sat_kvb * vsize // 1000)


@dataclass(slots=True)
class Key:
    script: bytes
    pubkey: bytes  # 33-byte compressed (P2WPKH) or 32-byte x-only (P2TR)
    kind: str  # bech32 | bech32m
    change: bool
    index: int
    address: str
    desc: str
    parent_desc: str


@dataclass(slots=True)
class WalletTx:
    tx: RawTx
    txid: bytes
    time_received: int
    blocks: set[bytes] = field(default_factory=set)


@dataclass(slots=True)
class WalletCoin:
    txid: bytes
    n: int
    value: int
    key: Key
    depth: int  # 0 = in the mempool
    coinbase: bool
    from_me: bool


class Wallet:
    """One loaded wallet over the node's chain."""

    def __init__(self, name: str, chain: Chain, network: Network, seed: bytes, path: Path | None,
                 counters: dict | None = None, fallback_fee: int = 0):
        self.name = name
        self.chain = chain
        self.network = network
        self.seed = seed
        self.path = path
        self.fallback_fee = fallback_fee  # sat/kvB; 0 = disabled, as Core's default
        self.fingerprint = hash160(seed)[:4].hex()
        self.counters = counters or {"bech32/0": 0, "bech32/1": 0, "bech32m/0": 0, "bech32m/1": 0}
        self.keys: dict[bytes, Key] = {}
        self.txs: dict[bytes, WalletTx] = {}
        self.spenders: dict[tuple[bytes, int], set[bytes]] = {}
        self.locked: set[tuple[bytes, int]] = set()
        self.birth = chain.now()
        for slot, count in self.counters.items():
            kind, ch = slot.split("/")
            for i in range(count):
                self._derive(kind, ch == "1", i)
        chain.listeners.append(self._on_event)
        self.rescan()

    # -- keys ----------------------------------------------------------------------
    def _derive(self, kind: str, change: bool, index: int) -> Key:
        rng = random.Random(hashlib.sha256(self.seed + f"{kind}/{int(change)}/{index}".encode()).digest())
        x = _valid_x(rng)
        purpose = "84h" if kind == "bech32" else "86h"
        path = f"{self.fingerprint}/{purpose}/1h/0h/{int(change)}/{index}"
        if kind == "bech32":
            pub = b"\x02" + x
            script = p2wpkh_script(hash160(pub))
            body = f"wpkh([{path}]{pub.hex()})"
            parent = f"wpkh([{self.fingerprint}/{purpose}/1h/0h]tpubDEVNODE{self.fingerprint}/{int(change)}/*)"
        else:
            pub = x
            script = p2tr_script(x)
            body = f"tr([{path}]{pub.hex()})"
            parent = f"tr([{self.fingerprint}/{purpose}/1h/0h]tpubDEVNODE{self.fingerprint}/{int(change)}/*)"
        key = Key(script, pub, kind, change, index, script_to_address(script, self.network),
                  f"{body}#{descriptor_checksum(body)}", f"{parent}#{descriptor_checksum(parent)}")
        self.keys[script] = key
        return key

    def new_key(self, kind: str, change: bool) -> Key:
        slot = f"{kind}/{int(change)}"
        i = self.counters[slot]
        self.counters[slot] = i + 1
        key = self._derive(kind, change, i)
        self.save()
        return key

    def save(self) -> None:
        if self.path is None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / (WALLET_FILE + ".tmp")
        tmp.write_text(json.dumps({"name": self.name, "seed": self.seed.hex(), "counters": self.counters}))
        os.replace(tmp, self.path / WALLET_FILE)

    # -- following the chain ----------------------------------------------------------
    def _relevant(self, tx: RawTx) -> bool:
        if any(s in self.keys for _, s in tx.outputs):
            return True
        for prev, n, _, _ in tx.inputs:
            w = self.txs.get(prev)
            if w is not None and n < len(w.tx.outputs) and w.tx.outputs[n][1] in self.keys:
                return True
        return False

    def _add(self, tx: RawTx, txid: bytes, block: bytes | None) -> None:
        w = self.txs.get(txid)
        if w is None:
            if not self._relevant(tx):
                return
            w = self.txs[txid] = WalletTx(tx, txid, self.chain.now())
            if not tx.is_coinbase():
                for prev, n, _, _ in tx.inputs:
                    self.spenders.setdefault((prev, n), set()).add(txid)
        if block is not None:
            w.blocks.add(block)

    def _on_event(self, event: object) -> None:
        if isinstance(event, BlockStored):
            b = event.block
            for tx, txid in zip(b.txs, b.txids):
                self._add(tx, txid, b.hash)

    def rescan(self) -> None:
        stored = sorted((i for i in self.chain.index.values() if i.block is not None), key=lambda i: (i.seq, i.height))
        for idx in stored:
            for tx, txid in zip(idx.block.txs, idx.block.txids):
                self._add(tx, txid, idx.hash)
        self.sync()

    def sync(self) -> None:
        """Pick up mempool transactions (sendrawtransaction, relayed ones)."""
        for txid, e in list(self.chain.mempool.entries.items()):
            if txid not in self.txs:
                self._add(e.tx, txid, None)

    # -- state of transactions and coins ------------------------------------------------
    def block_of(self, w: WalletTx):
        for h in w.blocks:
            idx = self.chain.index.get(h)
            if idx is not None and self.chain.contains(idx):
                return idx
        return None

    def depth(self, w: WalletTx, conflicts: bool = True) -> int:
        """GetTxDepthInMainChain: > 0 in the main chain, 0 unconfirmed,
        -n conflicted by a transaction n blocks deep."""
        idx = self.block_of(w)
        if idx is not None:
            return self.chain.height - idx.height + 1
        if not conflicts or w.txid in self.chain.mempool:
            return 0
        worst = 0
        for prev, n, _, _ in w.tx.inputs:
            for other in self.spenders.get((prev, n), ()):
                if other != w.txid:
                    d = self.depth(self.txs[other], conflicts=False)
                    worst = max(worst, d)
        return -worst

    def conflicts(self, w: WalletTx) -> list[bytes]:
        out = set()
        for prev, n, _, _ in w.tx.inputs:
            out |= self.spenders.get((prev, n), set())
        out.discard(w.txid)
        return sorted(out)

    def is_mine(self, script: bytes) -> bool:
        return script in self.keys

    def from_me(self, tx: RawTx) -> bool:
        """All inputs are the wallet's (CachedTxIsFromMe for a whole tx)."""
        if tx.is_coinbase() or not tx.inputs:
            return False
        return all(self._input_value(prev, n) is not None for prev, n, _, _ in tx.inputs)

    def _input_value(self, prev: bytes, n: int) -> int | None:
        w = self.txs.get(prev)
        if w is None or n >= len(w.tx.outputs) or w.tx.outputs[n][1] not in self.keys:
            return None
        return w.tx.outputs[n][0]

    def debit(self, tx: RawTx) -> int:
        if tx.is_coinbase():
            return 0
        return sum(self._input_value(p, n) or 0 for p, n, _, _ in tx.inputs)

    def credit(self, tx: RawTx) -> int:
        return sum(v for v, s in tx.outputs if s in self.keys)

    def coins(self) -> list[WalletCoin]:
        """Unspent outputs of transactions in the main chain or the mempool
        (spends by mempool transactions count as spent)."""
        chain = self.chain
        mp = chain.mempool
        out = []
        for w in self.txs.values():
            d = self.depth(w, conflicts=False)
            in_mempool = w.txid in mp
            if d <= 0 and not in_mempool:
                continue
            cb = w.tx.is_coinbase()
            mine_in = None
            for n, (value, script) in enumerate(w.tx.outputs):
                key = self.keys.get(script)
                if key is None or (w.txid, n) in mp.spent_by:
                    continue
                if d > 0 and (w.txid, n) not in chain.utxos:
                    continue
                if mine_in is None:
                    mine_in = self.from_me(w.tx)
                out.append(WalletCoin(w.txid, n, value, key, d, cb, mine_in))
        out.sort(key=lambda c: (c.txid, c.n))
        return out

    @staticmethod
    def immature(c: WalletCoin) -> bool:
        return c.coinbase and COINBASE_MATURITY + 1 - c.depth > 0

    def spendable(self) -> list[WalletCoin]:
        """AvailableCoins with default coin control: mature, trusted (confirmed,
        or our own unconfirmed change), not locked."""
        return [c for c in self.coins() if not self.immature(c) and (c.depth > 0 or c.from_me) and (c.txid, c.n) not in self.locked]

    def balances(self) -> tuple[int, int, int, int]:
        """(trusted, untrusted_pending, immature, nonmempool): the last is
        what unconfirmed, unconflicted transactions that are not in the
        mempool (dropped from it) would pay the wallet."""
        trusted = pending = immature = 0
        for c in self.coins():
            if self.immature(c):
                immature += c.value
            elif c.depth > 0 or c.from_me:
                trusted += c.value
            else:
                pending += c.value
        nonmempool = 0
        for w in self.txs.values():
            if w.txid in self.chain.mempool or self.depth(w) != 0:
                continue
            for n, (value, script) in enumerate(w.tx.outputs):
                if script in self.keys and not self.spenders.get((w.txid, n)):
                    nonmempool += value
        return trusted, pending, immature, nonmempool

    # -- building transactions --------------------------------------------------------------
    def dummy_witness(self, key: Key, rng: random.Random, estimate: bool) -> list[bytes]:
        """The witness a signature would give; for fee estimates Core's
        descriptor sizes: a 65-byte Schnorr signature (with a sighash
        byte), a 71-byte ECDSA one (the wallet grinds for a low R)."""
        if key.kind == "bech32m":
            return [bytes(65) if estimate else rng.randbytes(64)]
        sig = bytes(71) if estimate else _low_r_signature(rng)
        return [sig, key.pubkey]

    def vsize(self, inputs: list[tuple[bytes, int, Key]], outputs: list[tuple[int, bytes]], locktime: int) -> int:
        rng = random.Random(0)
        tx = make_tx(2, [(t, n, b"", MAX_BIP125_RBF_SEQUENCE) for t, n, _ in inputs], outputs,
                     [self.dummy_witness(k, rng, True) for _, _, k in inputs] if inputs else None, locktime)
        return (tx.weight + WITNESS_SCALE_FACTOR - 1) // WITNESS_SCALE_FACTOR

    def fund(self, tx: RawTx, *, fee_rate: int, subtract: list[int], change_pos: int | None, lock: bool,
             add_inputs: bool = True, change_kind: str | None = None) -> tuple[RawTx, int, int]:
        """FundTransaction: (funded unsigned tx, fee, change position or -1).
        The locktime stays the raw transaction's (Core sets one against fee
        sniping only when the caller gave none, which a raw transaction
        always does)."""
        outputs = list(tx.outputs)
        if change_kind is None:
            change_kind = change_type(s for _, s in outputs)
        for v, s in outputs:
            if v < dust_threshold(s) and s[:1] != b"\x6a" and not subtract:
                raise RpcError(RPC_WALLET_ERROR, "Transaction amount too small")
        preset = []
        for prev, n, _, _ in tx.inputs:
            v = self._input_value(prev, n)
            if v is None:
                raise RpcError(RPC_WALLET_ERROR, "Not solvable pre-selected input " + f"{hash_to_hex(prev)}:{n}")
            preset.append(WalletCoin(prev, n, v, self.keys[self.txs[prev].tx.outputs[n][1]], 1, False, True))
        target = sum(v for v, _ in outputs)
        pool = sorted(self.spendable(), key=lambda c: (-c.value, c.txid, c.n)) if add_inputs else []
        pool = [c for c in pool if (c.txid, c.n) not in {(p.txid, p.n) for p in preset}]
        locktime = tx.locktime
        probe_change = p2wpkh_script(b"\x00" * 20) if change_kind == "bech32" else p2tr_script(b"\x00" * 32)
        selected = list(preset)
        candidates = iter(pool)
        while True:
            total = sum(c.value for c in selected)
            ins = [(c.txid, c.n, c.key) for c in selected]
            if selected:
                fee_nc = fee_for(fee_rate, self.vsize(ins, outputs, locktime))
                fee_c = fee_for(fee_rate, self.vsize(ins, outputs + [(0, probe_change)], locktime))
                if subtract:
                    if total >= target:
                        change = total - target
                        if change >= dust_threshold(probe_change):
                            return self._finish(tx, selected, outputs, subtract, fee_c, change, change_pos, locktime, lock, change_kind)
                        return self._finish(tx, selected, outputs, subtract, fee_nc + change, 0, change_pos, locktime, lock, change_kind)
                else:
                    change = total - target - fee_c
                    if change >= dust_threshold(probe_change):
                        return self._finish(tx, selected, outputs, subtract, fee_c, change, change_pos, locktime, lock, change_kind)
                    if total >= target + fee_nc:
                        return self._finish(tx, selected, outputs, subtract, total - target, 0, change_pos, locktime, lock, change_kind)
            nxt = next(candidates, None)
            if nxt is None:
                raise RpcError(RPC_WALLET_ERROR, "Insufficient funds")
            selected.append(nxt)

    def _finish(self, tx, selected, outputs, subtract, fee, change, change_pos, locktime, lock, change_kind):
        outputs = list(outputs)
        if subtract:
            n = len(subtract)
            each, rest = divmod(fee, n)
            for i, pos in enumerate(sorted(subtract)):  # the first in output order pays the remainder
                v, s = outputs[pos]
                v -= each + (rest if i == 0 else 0)
                if v < dust_threshold(s):
                    raise RpcError(RPC_WALLET_ERROR, "The transaction amount is too small to pay the fee")
                outputs[pos] = (v, s)
        pos = -1
        if change > 0:
            key = self.new_key(change_kind, True)
            pos = len(outputs) if change_pos is None else change_pos
            if change_pos is None:
                pos = random.Random(hashlib.sha256(tx.raw + bytes(str(change), "ascii")).digest()).randint(0, len(outputs))
            outputs.insert(pos, (change, key.script))
        ins = [(c.txid, c.n, b"", MAX_BIP125_RBF_SEQUENCE) for c in selected]
        funded = legacy_tx(2, ins, outputs, locktime)
        if lock:
            self.locked |= {(c.txid, c.n) for c in selected}
        return funded, fee, pos

    def sign(self, tx: RawTx) -> tuple[RawTx, list[dict]]:
        chain = self.chain
        rng = random.Random(hashlib.sha256(self.seed + tx.txid).digest())
        witnesses = []
        errors = []
        for prev, n, script_sig, seq in tx.inputs:
            out = chain.mempool.output((prev, n))
            script = out[1] if out is not None else (chain.utxos[(prev, n)].script if (prev, n) in chain.utxos else None)
            if script is None:
                witnesses.append([])
                errors.append({"txid": hash_to_hex(prev), "vout": n, "witness": [], "scriptSig": script_sig.hex(), "sequence": seq,
                               "error": "Input not found or already spent"})
                continue
            key = self.keys.get(script)
            if key is None:
                witnesses.append([])
                errors.append({"txid": hash_to_hex(prev), "vout": n, "witness": [], "scriptSig": script_sig.hex(), "sequence": seq,
                               "error": "Unable to sign input, invalid stack size (possibly missing key)"})
                continue
            witnesses.append(self.dummy_witness(key, rng, False))
        if any(witnesses):
            signed = make_tx(tx.version, tx.inputs, tx.outputs, witnesses, tx.locktime)
        else:
            signed = tx
        return signed, errors


def change_type(scripts) -> str:
    """TransactionChangeType without -changetype: bech32m if a payee is
    P2TR, else bech32 if one is P2WPKH, else bech32m (this wallet has no
    legacy or P2SH-segwit keys)."""
    kinds = set()
    for script in scripts:
        prog = witness_program(script)
        if prog is not None:
            kinds.add((prog[0], len(prog[1])))
    if (1, 32) in kinds:
        return "bech32m"
    if (0, 20) in kinds:
        return "bech32"
    return "bech32m"


def _low_r_signature(rng: random.Random) -> bytes:
    """A DER signature as Core's wallet makes it nearly always: R ground
    to 32 bytes, low S of 32 bytes, SIGHASH_ALL: 71 bytes. Not a valid
    signature of anything."""
    r = rng.randrange(1 << 248, 1 << 255)
    s = rng.randrange(1 << 248, _SECP256K1_N // 2)
    return b"\x30\x44\x02\x20" + r.to_bytes(32, "big") + b"\x02\x20" + s.to_bytes(32, "big") + b"\x01"


_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _fee_rate_option(options: dict, fallback: int) -> int:
    """sat/kvB from fee_rate (sat/vB) / feeRate (BTC/kvB), like Core's
    SetFeeEstimateMode. Core v31's wallet takes any explicit rate, zero
    too; the mempool's minimum relay fee refuses what is too cheap."""
    fr = options.get("fee_rate")
    frb = options.get("feeRate")
    if fr is not None and frb is not None:
        raise RpcError(RPC_INVALID_PARAMETER, "Cannot specify both fee_rate (sat/vB) and feeRate (BTC/kvB)")
    if fr is not None and options.get("conf_target") is not None:
        raise RpcError(RPC_INVALID_PARAMETER, "Cannot specify both conf_target and fee_rate. Please provide either a confirmation target in blocks for automatic fee estimation, or an explicit fee rate.")
    if fr is not None:
        return amount_from_value(fr, decimals=3)  # sat/vB with 3 decimals = sat/kvB
    if frb is not None:
        return amount_from_value(frb)
    if fallback <= 0:
        raise RpcError(RPC_WALLET_ERROR, "Fee estimation failed. Fallbackfee is disabled. Wait a few blocks or enable -fallbackfee.")
    return fallback


FUND_OPTIONS = {"add_inputs", "include_unsafe", "minconf", "maxconf", "changeAddress", "changePosition", "change_type",
                "includeWatching", "lockUnspents", "fee_rate", "feeRate", "subtractFeeFromOutputs", "input_weights",
                "max_tx_weight", "replaceable", "conf_target", "estimate_mode", "solving_data"}


class WalletRpcs:
    """The wallet RPC methods and the wallets loaded on one node."""

    def __init__(self, rpc: Rpc, wallets_dir: Path | None, *, fallback_fee: int = 0, clock: Callable[[], float] | None = None):
        self.rpc = rpc
        self.chain = rpc.chain
        self.network = rpc.network
        self.wallets_dir = wallets_dir
        self.fallback_fee = fallback_fee
        self.wallets: dict[str, Wallet] = {}

    # -- which wallet ------------------------------------------------------------------
    def wallet(self) -> Wallet:
        uri = getattr(self.rpc, "uri_wallet", None)
        if uri is not None:
            w = self.wallets.get(uri)
            if w is None:
                raise RpcError(RPC_WALLET_NOT_FOUND, "Requested wallet does not exist or is not loaded")
        elif len(self.wallets) == 1:
            w = next(iter(self.wallets.values()))
        elif not self.wallets:
            raise RpcError(RPC_WALLET_NOT_FOUND, "No wallet is loaded. Load a wallet using loadwallet or create a new one with createwallet. (Note: A default wallet is no longer automatically created)")
        else:
            raise RpcError(RPC_WALLET_NOT_SPECIFIED, "Multiple wallets are loaded. Please select which wallet to use by requesting the RPC through the /wallet/<walletname> URI path.")
        w.sync()
        return w

    def _dir(self, name: str) -> Path | None:
        return None if self.wallets_dir is None else self.wallets_dir / name

    def methods(self) -> dict[str, Method]:
        A = Arg
        return {
            "createwallet": Method(self.createwallet, (A("wallet_name", "str", True), A("disable_private_keys", "bool"), A("blank", "bool"), A("passphrase", "str"),
                                                       A("avoid_reuse", "bool"), A("descriptors", "bool"), A("load_on_startup", "bool"), A("external_signer", "bool")),
                                   "Creates and loads a new wallet."),
            "loadwallet": Method(self.loadwallet, (A("filename", "str", True), A("load_on_startup", "bool")), "Loads a wallet from a wallet file or directory."),
            "unloadwallet": Method(self.unloadwallet, (A("wallet_name", "str"), A("load_on_startup", "bool")), "Unloads the wallet referenced by the request endpoint or the wallet_name argument."),
            "listwallets": Method(self.listwallets, (), "Returns a list of currently loaded wallets."),
            "getwalletinfo": Method(self.getwalletinfo, (), "Returns an object containing various wallet state info."),
            "getnewaddress": Method(self.getnewaddress, (A("label", "str"), A("address_type", "str")), "Returns a new Bitcoin address for receiving payments."),
            "getrawchangeaddress": Method(self.getrawchangeaddress, (A("address_type", "str"),), "Returns a new Bitcoin address, for receiving change."),
            "getaddressinfo": Method(self.getaddressinfo, (A("address", "str", True),), "Return information about the given bitcoin address."),
            "getbalances": Method(self.getbalances, (), "Returns an object with all balances in BTC."),
            "getbalance": Method(self.getbalance, (A("dummy", "str"), A("minconf", "num"), A("include_watchonly", "bool"), A("avoid_reuse", "bool")), "Returns the total available balance."),
            "listunspent": Method(self.listunspent, (A("minconf", "num"), A("maxconf", "num"), A("addresses", "arr"), A("include_unsafe", "bool"), A("query_options", "obj")),
                                  "Returns array of unspent transaction outputs with between minconf and maxconf (inclusive) confirmations."),
            "fundrawtransaction": Method(self.fundrawtransaction, (A("hexstring", "str", True), A("options", "any"), A("iswitness", "bool")),
                                         "If the transaction has no inputs, they will be automatically selected to meet its out value."),
            "signrawtransactionwithwallet": Method(self.signrawtransactionwithwallet, (A("hexstring", "str", True), A("prevtxs", "arr"), A("sighashtype", "str")),
                                                   "Sign inputs for raw transaction (serialized, hex-encoded)."),
            "gettransaction": Method(self.gettransaction, (A("txid", "hex", True), A("include_watchonly", "bool"), A("verbose", "bool")),
                                     "Get detailed information about in-wallet transaction <txid>"),
            "listtransactions": Method(self.listtransactions, (A("label", "str"), A("count", "num"), A("skip", "num"), A("include_watchonly", "bool")),
                                       "Returns up to 'count' most recent transactions skipping the first 'from' transactions."),
            "lockunspent": Method(self.lockunspent, (A("unlock", "bool", True), A("transactions", "arr"), A("persistent", "bool")),
                                  "Updates list of temporarily unspendable outputs."),
            "listlockunspent": Method(self.listlockunspent, (), "Returns list of temporarily unspendable outputs."),
        }

    # -- wallets -------------------------------------------------------------------------
    def createwallet(self, wallet_name, disable_private_keys, blank, passphrase, avoid_reuse, descriptors, load_on_startup, external_signer) -> dict:
        name = get_str(wallet_name)
        if descriptors is not None and not get_bool(descriptors):
            raise RpcError(RPC_WALLET_ERROR, "descriptors argument must be set to \"true\"; it is no longer possible to create a legacy wallet.")
        if disable_private_keys or blank or external_signer or passphrase:
            raise RpcError(RPC_INVALID_PARAMETER, "hashcoop devnode: watch-only, blank, encrypted and external-signer wallets are not supported")
        d = self._dir(name)
        if d is not None and (d / WALLET_FILE).exists():  # Core looks at the path first, loaded or not
            raise RpcError(RPC_WALLET_ERROR, f"Wallet file verification failed. Failed to create database path '{d}'. Database already exists.")
        if name in self.wallets:
            raise RpcError(RPC_WALLET_ALREADY_LOADED, f"Wallet \"{name}\" is already loaded.")
        w = Wallet(name, self.chain, self.network, os.urandom(32), d, fallback_fee=self.fallback_fee)
        w.save()
        self.wallets[name] = w
        return {"name": name}

    def loadwallet(self, filename, load_on_startup) -> dict:
        name = get_str(filename)
        if name in self.wallets:
            raise RpcError(RPC_WALLET_ALREADY_LOADED, f"Wallet \"{name}\" is already loaded.")
        d = self._dir(name)
        if d is None or not (d / WALLET_FILE).exists():
            raise RpcError(RPC_WALLET_NOT_FOUND, f"Wallet file verification failed. Failed to load database path '{d}'. Path does not exist.")
        data = json.loads((d / WALLET_FILE).read_text())
        w = Wallet(name, self.chain, self.network, bytes.fromhex(data["seed"]), d, counters=data["counters"], fallback_fee=self.fallback_fee)
        self.wallets[name] = w
        return {"name": name}

    def unloadwallet(self, wallet_name, load_on_startup) -> dict:
        uri = getattr(self.rpc, "uri_wallet", None)
        name = get_str(wallet_name) if wallet_name is not None else uri
        if wallet_name is not None and uri is not None and name != uri:
            raise RpcError(RPC_INVALID_PARAMETER, "RPC endpoint wallet and wallet_name parameter specify different wallets")
        if name is None:
            name = self.wallet().name
        w = self.wallets.pop(name, None)
        if w is None:
            raise RpcError(RPC_WALLET_NOT_FOUND, "Requested wallet does not exist or is not loaded")
        if w._on_event in self.chain.listeners:
            self.chain.listeners.remove(w._on_event)
        return {}

    def listwallets(self) -> list[str]:
        return list(self.wallets)  # in the order they were loaded

    def getwalletinfo(self) -> dict:
        w = self.wallet()
        return {"walletname": w.name, "walletversion": 169900, "format": "sqlite", "txcount": len(w.txs), "keypoolsize": 1000,
                "keypoolsize_hd_internal": 1000, "paytxfee": Amount(0), "private_keys_enabled": True, "avoid_reuse": False,
                "scanning": False, "descriptors": True, "external_signer": False, "blank": False, "birthtime": w.birth,
                "flags": ["last_hardened_xpub_cached", "descriptor_wallet"],
                "lastprocessedblock": {"hash": self.chain.tip.hash_hex, "height": self.chain.height}}

    # -- addresses ---------------------------------------------------------------------------
    @staticmethod
    def _kind(address_type) -> str:
        kind = "bech32" if address_type is None else get_str(address_type)
        if kind not in ("bech32", "bech32m", "legacy", "p2sh-segwit"):
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, f"Unknown address type '{kind}'")
        if kind not in ("bech32", "bech32m"):
            raise RpcError(RPC_WALLET_ERROR, f"hashcoop devnode: address type {kind} is not supported (bech32 and bech32m are)")
        return kind

    def getnewaddress(self, label, address_type) -> str:
        w = self.wallet()
        if label is not None and get_str(label) == "*":
            raise RpcError(RPC_WALLET_INVALID_LABEL_NAME, "Invalid label name")
        return w.new_key(self._kind(address_type), False).address

    def getrawchangeaddress(self, address_type) -> str:
        return self.wallet().new_key(self._kind(address_type), True).address

    def getaddressinfo(self, address) -> dict:
        w = self.wallet()
        s = get_str(address)
        try:
            dest = decode_destination(s, self.network)
        except AddressInvalid as e:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, e.message if hasattr(e, "message") else "Invalid address") from None
        script = dest.script
        key = w.keys.get(script)
        prog = witness_program(script)
        out: dict[str, Any] = {"address": script_to_address(script, self.network), "scriptPubKey": script.hex(), "ismine": key is not None,
                               "solvable": key is not None}
        if key is not None:
            out["desc"] = key.desc
            out["parent_desc"] = key.parent_desc
        out["iswatchonly"] = False
        out["isscript"] = script[:1] == b"\xa9" or (prog is not None and prog[0] == 0 and len(prog[1]) == 32)
        out["iswitness"] = prog is not None
        if prog is not None:
            out["witness_version"] = prog[0]
            out["witness_program"] = prog[1].hex()
        if key is not None:
            out["pubkey"] = key.pubkey.hex()
            out["ischange"] = key.change
            out["timestamp"] = w.birth
            out["hdkeypath"] = "m/" + key.desc.split("[", 1)[1].split("]", 1)[0].split("/", 1)[1]
            out["hdseedid"] = "00" * 20  # descriptor wallets have no HD seed id
            out["hdmasterfingerprint"] = w.fingerprint
        else:
            out["ischange"] = False
        out["labels"] = [""] if key is not None and not key.change else []
        return out

    # -- balances and coins ---------------------------------------------------------------------
    def getbalances(self) -> dict:
        w = self.wallet()
        trusted, pending, immature, nonmempool = w.balances()
        return {"mine": {"trusted": Amount(trusted), "untrusted_pending": Amount(pending), "immature": Amount(immature),
                         "nonmempool": Amount(nonmempool)},
                "lastprocessedblock": {"hash": self.chain.tip.hash_hex, "height": self.chain.height}}

    def getbalance(self, dummy, minconf, include_watchonly, avoid_reuse) -> Amount:
        w = self.wallet()
        if dummy is not None and get_str(dummy) != "*":
            raise RpcError(RPC_METHOD_DEPRECATED, "dummy first argument must be excluded or set to \"*\".")
        mc = 0 if minconf is None else get_int(minconf)
        return Amount(sum(c.value for c in w.coins() if not w.immature(c) and (c.depth >= mc and (c.depth > 0 or c.from_me))))

    def listunspent(self, minconf, maxconf, addresses, include_unsafe, query_options) -> list[dict]:
        w = self.wallet()
        lo = 1 if minconf is None else get_int(minconf)
        hi = 9999999 if maxconf is None else get_int(maxconf)
        unsafe = True if include_unsafe is None else get_bool(include_unsafe)
        want = None
        if addresses is not None:
            want = set()
            for a in addresses:
                try:
                    want.add(decode_destination(get_str(a), self.network).script)
                except AddressInvalid:
                    raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, f"Invalid Bitcoin address: {a}") from None
        out = []
        for c in w.coins():
            if w.immature(c) or not lo <= c.depth <= hi or (want is not None and c.key.script not in want):
                continue
            safe = c.depth > 0 or c.from_me
            if not safe and not unsafe:
                continue
            e = {"txid": hash_to_hex(c.txid), "vout": c.n, "address": c.key.address}
            if not c.key.change:
                e["label"] = ""
            e.update({"scriptPubKey": c.key.script.hex(), "amount": Amount(c.value), "confirmations": c.depth})
            entry = self.chain.mempool.get(c.txid) if c.depth == 0 else None
            if entry is not None:
                mp = self.chain.mempool
                ancestors = mp.ancestors(entry.parents) | {c.txid}
                e.update({"ancestorcount": len(ancestors), "ancestorsize": sum(mp.entries[t].vsize for t in ancestors),
                          "ancestorfees": sum(mp.entries[t].fee for t in ancestors)})
            e.update({"spendable": True, "solvable": True, "desc": c.key.desc, "parent_descs": [c.key.parent_desc], "safe": safe})
            out.append(e)
        return out

    # -- funding, signing ---------------------------------------------------------------------------
    def fundrawtransaction(self, hexstring, options, iswitness) -> dict:
        w = self.wallet()
        tx = decode_any_tx(hexstring, True if iswitness is None else get_bool(iswitness))
        opts: dict = {}
        if isinstance(options, bool):
            opts = {"includeWatching": options}
        elif isinstance(options, dict):
            opts = options
        elif options is not None:
            raise RpcError(RPC_TYPE_ERROR, "JSON value of type " + type(options).__name__ + " is not of expected type object")
        for k in opts:
            if k not in FUND_OPTIONS:
                raise RpcError(RPC_TYPE_ERROR, f"Unexpected key {k}")
        rate = _fee_rate_option(opts, w.fallback_fee)
        change_pos = opts.get("changePosition")
        if change_pos is not None:
            change_pos = get_int(change_pos)
            if change_pos < 0 or change_pos > len(tx.outputs):
                raise RpcError(RPC_INVALID_PARAMETER, "changePosition out of bounds")
        subtract = []
        for v in opts.get("subtractFeeFromOutputs") or []:
            pos = get_int(v)
            if pos in subtract:
                raise RpcError(RPC_INVALID_PARAMETER, f"Invalid parameter, duplicated position: {pos}")
            if pos < 0 or pos >= len(tx.outputs):
                raise RpcError(RPC_INVALID_PARAMETER, f"Invalid parameter, value out of range: {pos}")
            subtract.append(pos)
        if not tx.outputs:
            raise RpcError(RPC_INVALID_PARAMETER, "TX must have at least one output")
        change_kind = None if opts.get("change_type") is None else self._kind(opts["change_type"])
        funded, fee, pos = w.fund(tx, fee_rate=rate, subtract=subtract, change_pos=change_pos,
                                  lock=bool(opts.get("lockUnspents")), add_inputs=opts.get("add_inputs", True) is not False,
                                  change_kind=change_kind)
        return {"hex": legacy_hex(funded), "fee": Amount(fee), "changepos": pos}

    def signrawtransactionwithwallet(self, hexstring, prevtxs, sighashtype) -> dict:
        w = self.wallet()
        tx = decode_any_tx(hexstring)
        if sighashtype is not None and get_str(sighashtype) not in ("DEFAULT", "ALL", "NONE", "SINGLE", "ALL|ANYONECANPAY", "NONE|ANYONECANPAY", "SINGLE|ANYONECANPAY"):
            raise RpcError(RPC_INVALID_PARAMETER, f"'{sighashtype}' is not a valid sighash parameter.")
        signed, errors = w.sign(tx)
        out: dict[str, Any] = {"hex": signed.raw.hex(), "complete": not errors}
        if errors:
            out["errors"] = errors
        return out

    def lockunspent(self, unlock, transactions, persistent) -> bool:
        w = self.wallet()
        do_unlock = get_bool(unlock)
        if transactions is None:
            if do_unlock:
                w.locked.clear()
                return True
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, transactions must be specified when locking")
        for item in transactions:
            op = (parse_hash(item.get("txid"), "txid"), get_int(item.get("vout")))
            if do_unlock:
                w.locked.discard(op)
            else:
                w.locked.add(op)
        return True

    def listlockunspent(self) -> list[dict]:
        w = self.wallet()
        return [{"txid": hash_to_hex(t), "vout": n} for t, n in sorted(w.locked)]

    # -- transactions ----------------------------------------------------------------------------------
    def _tx_info(self, w: Wallet, wt: WalletTx) -> dict:
        """WalletTxToJSON."""
        depth = w.depth(wt)
        out: dict[str, Any] = {"confirmations": depth}
        if wt.tx.is_coinbase():
            out["generated"] = True
        if depth <= 0:
            out["trusted"] = depth == 0 and w.from_me(wt.tx) and wt.txid in self.chain.mempool
        idx = w.block_of(wt)
        if idx is not None:
            out["blockhash"] = idx.hash_hex
            out["blockheight"] = idx.height
            out["blockindex"] = idx.block.txids.index(wt.txid)
            out["blocktime"] = idx.time
        out["txid"] = hash_to_hex(wt.txid)
        out["wtxid"] = hash_to_hex(wt.tx.wtxid)
        out["walletconflicts"] = [hash_to_hex(t) for t in w.conflicts(wt)]
        out["mempoolconflicts"] = []
        out["time"] = idx.time if idx is not None and idx.time < wt.time_received else wt.time_received
        out["timereceived"] = wt.time_received
        return out

    def _details(self, w: Wallet, wt: WalletTx) -> list[dict]:
        """ListTransactions' entries: sends (from us), then receives."""
        tx = wt.tx
        out = []
        from_me = w.from_me(tx)
        debit = w.debit(tx)
        fee = (sum(v for v, _ in tx.outputs) - debit) if from_me else 0  # negative
        depth = w.depth(wt)
        if from_me:
            for n, (v, s) in enumerate(tx.outputs):
                key = w.keys.get(s)
                if key is not None and key.change:
                    continue
                e: dict[str, Any] = {}
                addr = _address_or_none(s, self.network)
                if addr is not None:
                    e["address"] = addr
                e.update({"category": "send", "amount": Amount(-v), "vout": n, "fee": Amount(fee), "abandoned": False})
                out.append(e)
        for n, (v, s) in enumerate(tx.outputs):
            key = w.keys.get(s)
            if key is None or (from_me and key.change):
                continue
            if tx.is_coinbase():
                if depth < 1:
                    cat = "orphan"
                elif COINBASE_MATURITY + 1 - depth > 0:
                    cat = "immature"
                else:
                    cat = "generate"
            else:
                cat = "receive"
            e = {"address": key.address, "parent_descs": [key.parent_desc], "category": cat, "amount": Amount(v)}
            if not key.change:
                e["label"] = ""
            e["vout"] = n
            e["abandoned"] = False
            out.append(e)
        return out

    def gettransaction(self, txid, include_watchonly, verbose) -> dict:
        w = self.wallet()
        h = parse_hash(txid, "txid")
        wt = w.txs.get(h)
        if wt is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Invalid or non-wallet transaction id")
        tx = wt.tx
        credit = w.credit(tx)
        debit = w.debit(tx)
        from_me = w.from_me(tx)
        fee = (sum(v for v, _ in tx.outputs) - debit) if from_me else 0
        out: dict[str, Any] = {"amount": Amount(credit - debit - fee)}
        if from_me:
            out["fee"] = Amount(fee)
        out.update(self._tx_info(w, wt))
        out["details"] = self._details(w, wt)
        out["hex"] = tx.raw.hex()
        if verbose is not None and get_bool(verbose):
            out["decoded"] = self.rpc.tx_json(tx, wt.txid, None, False, tx.is_coinbase())
            out["decoded"].pop("hex", None)
        out["lastprocessedblock"] = {"hash": self.chain.tip.hash_hex, "height": self.chain.height}
        return out

    def listtransactions(self, label, count, skip, include_watchonly) -> list[dict]:
        w = self.wallet()
        n = 10 if count is None else get_int(count)
        k = 0 if skip is None else get_int(skip)
        if n < 0:
            raise RpcError(RPC_INVALID_PARAMETER, "Negative count")
        if k < 0:
            raise RpcError(RPC_INVALID_PARAMETER, "Negative from")
        want_label = None if label is None or get_str(label) == "*" else get_str(label)
        newest_first = []
        for wt in reversed(list(w.txs.values())):  # the order the wallet learnt of them
            info = self._tx_info(w, wt)
            for d in self._details(w, wt):
                if want_label is not None and d.get("label") != want_label:
                    continue
                if d["category"] == "send":  # Core puts "abandoned" after the transaction's fields here
                    abandoned = d.pop("abandoned")
                    newest_first.append({**d, **info, "abandoned": abandoned})
                else:
                    newest_first.append({**d, **info})
            if len(newest_first) >= k + n:
                break
        return newest_first[k:k + n][::-1]  # oldest first; one transaction's entries come out reversed too


RPC_WALLET_INVALID_LABEL_NAME = -11
RPC_METHOD_DEPRECATED = -32


def _address_or_none(script: bytes, network: Network) -> str | None:
    try:
        return script_to_address(script, network)
    except Exception:
        return None


def wallet_from_path(path: bytes) -> str | None:
    """``/wallet/<name>`` -> name (URL-decoded); ``/`` -> None."""
    if path.startswith(b"/wallet/"):
        return unquote(path[len(b"/wallet/"):].decode("utf-8", "replace"))
    return None


def register_wallet_rpcs(rpc: Rpc, wallets_dir: Path | None, *, fallback_fee: int = 0) -> WalletRpcs:
    """Add the wallet RPCs (and the raw-transaction RPCs they go with) to an
    ``Rpc``. ``fallback_fee`` is in sat/kvB (``--fallbackfee``)."""

    register_rawtx_rpcs(rpc)
    w = WalletRpcs(rpc, wallets_dir, fallback_fee=fallback_fee)
    rpc.methods.update(w.methods())
    return w
