"""The devnode's RPC methods: Bitcoin Core v31's answers (field names,
order, types, error codes and messages) over a :class:`~.chain.Chain`.
Pure: no I/O; the HTTP server (``server.py``) frames requests and
responses and does the longpoll waiting.

Handlers are thin: they check parameters like Core's RPCHelpMan (count,
JSON types, named parameters) and shape results; the chain decides.

Numbers: ``CoreFloat`` (doubles such as difficulty, written with 16
significant digits like UniValue) and ``Amount`` (satoshis written as BTC
with 8 decimals, like ValueFromAmount) are float subclasses, so results
compare equal to parsed JSON while :func:`dumps` writes Core's exact text.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from hashcoop.pool.core.btc.address import NETWORKS, Network, script_to_address
from hashcoop.pool.core.btc.hashing import hash_to_hex
from hashcoop.pool.core.btc.target import bits_difficulty, bits_to_target
from hashcoop.pool.tools.devnode.chain import VALID_SCRIPTS, BlockIndex, BlockTemplate, Chain, ChainError
from hashcoop.pool.tools.devnode.consensus import (
    COIN,
    MAX_BLOCK_SERIALIZED_SIZE,
    MAX_BLOCK_SIGOPS_COST,
    MAX_BLOCK_WEIGHT,
    Block,
    DecodeError,
    decode_block_hex,
    decode_tx,
    derive_target,
    is_hex,
)
from hashcoop.pool.tools.devnode.mempool import MIN_RELAY_FEE, MempoolReject
from hashcoop.pool.tools.devnode.script import (
    AddressInvalid,
    decode_destination,
    describe_address,
    descriptor_checksum,
    script_to_asm,
    script_to_univ,
)

log = logging.getLogger("hashcoop.devnode.rpc")

# Core's RPCErrorCode values
RPC_MISC_ERROR = -1
RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_INVALID_PARAMETER = -8
RPC_CLIENT_NOT_CONNECTED = -9
RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25
RPC_VERIFY_REJECTED = -26
RPC_VERIFY_ALREADY_IN_UTXO_SET = -27
RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_INTERNAL_ERROR = -32603
RPC_PARSE_ERROR = -32700

CLIENT_VERSION = 319900
SUBVERSION = "/Satoshi:31.99.0(hashcoop-devnode)/"
PROTOCOL_VERSION = 70016
STAND_IN_WARNING = "hashcoop devnode: a regtest stand-in for Bitcoin Core; scripts and signatures are not verified"
DEFAULT_MAX_TRIES = 1_000_000
BLOCK_MIN_TX_FEE = 1  # sat/kvB (-blockmintxfee)
TEMPLATE_REFRESH_SECONDS = 6  # Core rebuilds when more than 5 whole seconds have passed


class RpcError(Exception):
    """A JSON-RPC error object: Core's code and message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_json(self) -> dict:
        return {"code": self.code, "message": self.message}


class CoreFloat(float):
    """A double written like UniValue writes it (``%.16g``). The value is
    rounded to those 16 significant digits, so it equals what a client
    parses from Core's JSON."""

    def __new__(cls, value: float) -> "CoreFloat":
        return super().__new__(cls, float(format(float(value), ".16g")))


class Amount(float):
    """Satoshis written in BTC with exactly 8 decimals (ValueFromAmount)."""

    def __new__(cls, sat: int) -> "Amount":
        obj = super().__new__(cls, sat / COIN)
        obj.sat = int(sat)
        return obj


def _default(obj: Any) -> Any:
    if isinstance(obj, Amount):
        q, r = divmod(abs(obj.sat), COIN)
        return orjson.Fragment(f"{'-' if obj.sat < 0 else ''}{q}.{r:08d}".encode())
    if isinstance(obj, CoreFloat):
        return orjson.Fragment(format(float(obj), ".16g").encode())
    for base in (int, float, str, dict, list):  # other subclasses of builtins: plain JSON
        if isinstance(obj, base):
            return base(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    """JSON exactly as Core writes it (compact; Core numbers)."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_PASSTHROUGH_SUBCLASS)


def _uv_type(v: Any) -> str:
    """UniValue's type names."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    return "null"


_EXPECTED = {"str": "string", "hex": "string", "num": "number", "bool": "bool", "obj": "object", "arr": "array"}


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    type: str  # str, hex, num, bool, obj, arr, any (no type check)
    required: bool = False


@dataclass(frozen=True, slots=True)
class Method:
    func: Callable[..., Any]
    args: tuple[Arg, ...]
    help: str


def get_int(v: Any) -> int:
    """UniValue::getInt: integral JSON numbers only."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RpcError(RPC_MISC_ERROR, f"JSON value of type {_uv_type(v)} is not of expected type number")
    if isinstance(v, float):
        if not v.is_integer():
            raise RpcError(RPC_MISC_ERROR, "JSON integer out of range")
        v = int(v)
    if not -(2**63) <= v < 2**63:
        raise RpcError(RPC_MISC_ERROR, "JSON integer out of range")
    return v


def get_str(v: Any) -> str:
    if not isinstance(v, str):
        raise RpcError(RPC_MISC_ERROR, f"JSON value of type {_uv_type(v)} is not of expected type string")
    return v


def get_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise RpcError(RPC_MISC_ERROR, f"JSON value of type {_uv_type(v)} is not of expected type bool")
    return v


def parse_hash(v: Any, name: str) -> bytes:
    """ParseHashV: 64 hex digits (display order) -> internal byte order."""
    s = get_str(v)
    if len(s) != 64:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(s)}, for '{s}')")
    if not is_hex(s):
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{s}')")
    return bytes.fromhex(s)[::-1]


def _atoi(s: str) -> int:
    """LocaleIndependentAtoi: leading integer, 0 when there is none."""
    s = s.strip()
    if s.startswith("+"):
        if s[1:2] == "-":
            return 0
        s = s[1:]
    i = 1 if s.startswith("-") else 0
    while i < len(s) and s[i].isdigit():
        i += 1
    digits = s[:i]
    if digits in ("", "-"):
        return 0
    return int(digits)


def _hex256(n: int) -> str:
    return f"{n:064x}"


class Rpc:
    """The RPC method table of one devnode.

    ``on_stop`` is called by the ``stop`` method; ``clock`` gives the
    wall-clock (uptime); ``started`` is the start time. While only the
    mempool changed, getblocktemplate reuses its block for
    ``template_refresh`` seconds (Core: more than 5).
    """

    def __init__(
        self,
        chain: Chain,
        *,
        network: Network = NETWORKS["regtest"],
        clock: Callable[[], float] | None = None,
        started: float | None = None,
        on_stop: Callable[[], None] | None = None,
        warnings: list[str] | None = None,
        template_refresh: float = TEMPLATE_REFRESH_SECONDS,
    ):
        self.chain = chain
        self.template_refresh = template_refresh
        self.network = network
        self.clock = clock or chain.clock
        self.started = self.clock() if started is None else started
        self.on_stop = on_stop
        self.warnings = [STAND_IN_WARNING] if warnings is None else warnings
        self.stopping = False
        # the wallet a request names in its URI path (/wallet/<name>), set by execute()
        self.uri_wallet: str | None = None
        # getblocktemplate's cached block (Core keeps these in statics)
        self._gbt_prev: BlockIndex | None = None
        self._gbt_updated_last = 0
        self._gbt_time_start = 0
        self._gbt_template: BlockTemplate | None = None
        A = Arg
        self.methods: dict[str, Method] = {
            "getbestblockhash": Method(self.getbestblockhash, (), "Returns the hash of the best (tip) block in the most-work fully-validated chain."),
            "getblock": Method(self.getblock, (A("blockhash", "hex", True), A("verbosity", "any")), "Returns a block: hex (verbosity 0), an object (1), with transaction details (2) or with prevouts (3)."),
            "getblockchaininfo": Method(self.getblockchaininfo, (), "Returns an object containing various state info regarding blockchain processing."),
            "getblockcount": Method(self.getblockcount, (), "Returns the height of the most-work fully-validated chain."),
            "getblockhash": Method(self.getblockhash, (A("height", "num", True),), "Returns hash of block in best-block-chain at height provided."),
            "getblockheader": Method(self.getblockheader, (A("blockhash", "hex", True), A("verbose", "bool")), "Returns the block header as an object (verbose) or hex."),
            "getblocktemplate": Method(self.getblocktemplate, (A("template_request", "obj", True),), "Returns data needed to construct a block to work on (BIP 22, 23, 9, 145)."),
            "getchaintips": Method(self.getchaintips, (), "Return information about all known tips in the block tree."),
            "getdifficulty": Method(self.getdifficulty, (), "Returns the proof-of-work difficulty as a multiple of the minimum difficulty."),
            "getmempoolinfo": Method(self.getmempoolinfo, (), "Returns details on the active state of the TX memory pool."),
            "getmininginfo": Method(self.getmininginfo, (), "Returns a json object containing mining-related information."),
            "getnetworkhashps": Method(self.getnetworkhashps, (A("nblocks", "num"), A("height", "num")), "Returns the estimated network hashes per second based on the last n blocks."),
            "getnetworkinfo": Method(self.getnetworkinfo, (), "Returns an object containing various state info regarding P2P networking."),
            "getrawmempool": Method(self.getrawmempool, (A("verbose", "bool"), A("mempool_sequence", "bool")), "Returns all transaction ids in memory pool."),
            "generateblock": Method(self.generateblock, (A("output", "str", True), A("transactions", "arr", True), A("submit", "bool")), "Mine a set of ordered transactions to a specified address and return the block hash."),
            "generatetoaddress": Method(self.generatetoaddress, (A("nblocks", "num", True), A("address", "str", True), A("maxtries", "num")), "Mine to a specified address and return the block hashes."),
            "help": Method(self.help, (A("command", "str"),), "List all commands, or get help for a specified command."),
            "invalidateblock": Method(self.invalidateblock, (A("blockhash", "hex", True),), "Permanently marks a block as invalid, as if it violated a consensus rule."),
            "reconsiderblock": Method(self.reconsiderblock, (A("blockhash", "hex", True),), "Removes invalidity status of a block, its ancestors and its descendants."),
            "sendrawtransaction": Method(self.sendrawtransaction, (A("hexstring", "hex", True), A("maxfeerate", "any"), A("maxburnamount", "any")), "Submit a raw transaction to the local node's mempool."),
            "stop": Method(self.stop, (A("wait", "num"),), "Request a graceful shutdown."),
            "submitblock": Method(self.submitblock, (A("hexdata", "hex", True), A("dummy", "str")), "Attempts to submit new block to network."),
            "uptime": Method(self.uptime, (), "Returns the total uptime of the server."),
            "validateaddress": Method(self.validateaddress, (A("address", "str", True),), "Return information about the given bitcoin address."),
        }

    # ------------------------------------------------------------------
    # dispatch

    def usage(self, name: str) -> str:
        m = self.methods[name]
        args = " ".join(a.name if a.required else f"( {a.name} )" for a in m.args)
        return f"{name} {args}".rstrip() + f"\n\n{m.help}\n"

    def normalize(self, name: str, params: Any) -> list[Any]:
        """Positional parameters for ``name``, checked like RPCHelpMan."""
        m = self.methods[name]
        if isinstance(params, dict):
            names = {a.name: i for i, a in enumerate(m.args)}
            positional: list[Any] = [None] * len(m.args)
            for key, value in params.items():
                if key not in names:
                    raise RpcError(RPC_INVALID_PARAMETER, f"Unknown named parameter {key}")
                positional[names[key]] = value
            while positional and positional[-1] is None:
                positional.pop()
            params = positional
        required = sum(1 for a in m.args if a.required)
        if not required <= len(params) <= len(m.args):
            raise RpcError(RPC_MISC_ERROR, self.usage(name))
        mismatches = []
        for i, a in enumerate(m.args):
            v = params[i] if i < len(params) else None
            if a.type == "any" or (v is None and not a.required):
                continue
            got = _uv_type(v)
            if got != _EXPECTED[a.type]:
                mismatches.append((f"Position {i + 1} ({a.name})", f"JSON value of type {got} is not of expected type {_EXPECTED[a.type]}"))
        if mismatches:
            body = ",\n".join(f"    {orjson.dumps(k).decode()}: {orjson.dumps(v).decode()}" for k, v in mismatches)
            raise RpcError(RPC_TYPE_ERROR, "Wrong type passed:\n{\n" + body + "\n}")
        return list(params) + [None] * (len(m.args) - len(params))

    def execute(self, name: str, params: Any = None, *, uri_wallet: str | None = None) -> Any:
        """Run one method; raises RpcError. Longpoll waiting is the
        caller's job (see :meth:`longpoll_request`). ``uri_wallet``: the
        wallet named by the request's ``/wallet/<name>`` path (wallet.py)."""
        if name not in self.methods:
            raise RpcError(RPC_METHOD_NOT_FOUND, "Method not found")
        self.uri_wallet = uri_wallet
        args = self.normalize(name, [] if params is None else params)
        try:
            return self.methods[name].func(*args)
        except ChainError as e:
            raise RpcError(RPC_MISC_ERROR, str(e)) from None

    # ------------------------------------------------------------------
    # blockchain

    def _tip_objects(self, idx: BlockIndex) -> dict:
        return {"bits": f"{idx.bits:08x}", "target": _hex256(derive_target(idx.bits) or bits_to_target(idx.bits)), "difficulty": CoreFloat(bits_difficulty(idx.bits))}

    def getbestblockhash(self) -> str:
        return self.chain.tip.hash_hex

    def getblockcount(self) -> int:
        return self.chain.height

    def getblockhash(self, height: Any) -> str:
        h = get_int(height)
        if h < 0 or h > self.chain.height:
            raise RpcError(RPC_INVALID_PARAMETER, "Block height out of range")
        idx = self.chain.at_height(h)
        if idx is None:
            raise RpcError(RPC_MISC_ERROR, f"Block not available (this chain starts from a recorded context at height {self.chain.offset})")
        return idx.hash_hex

    def _lookup(self, v: Any) -> BlockIndex:
        idx = self.chain.lookup(parse_hash(v, "blockhash"))
        if idx is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
        return idx

    def header_json(self, idx: BlockIndex) -> dict:
        """blockheaderToJSON."""
        chain = self.chain
        nxt = chain.next_in_chain(idx)
        out = {
            "hash": idx.hash_hex,
            "confirmations": chain.height - idx.height + 1 if chain.contains(idx) else -1,
            "height": idx.height,
            "version": idx.version,
            "versionHex": f"{idx.version & 0xFFFFFFFF:08x}",
            "merkleroot": hash_to_hex(idx.merkle_root),
            "time": idx.time,
            "mediantime": idx.mtp,
            "nonce": idx.nonce,
            "bits": f"{idx.bits:08x}",
            "target": _hex256(derive_target(idx.bits) or 0),
            "difficulty": CoreFloat(bits_difficulty(idx.bits)),
            "chainwork": _hex256(idx.chainwork),
            "nTx": idx.n_tx,
        }
        if idx.prev is not None or idx.height > 0:
            out["previousblockhash"] = hash_to_hex(idx.prev_hash)
        if nxt is not None:
            out["nextblockhash"] = nxt.hash_hex
        return out

    def getblockheader(self, blockhash: Any, verbose: Any) -> Any:
        idx = self._lookup(blockhash)
        if verbose is not None and not get_bool(verbose):
            return idx.header.hex()
        return self.header_json(idx)

    def _block_data(self, idx: BlockIndex) -> Block:
        if idx.block is not None:
            return idx.block
        if idx is self.chain.base:
            raise RpcError(RPC_MISC_ERROR, "Block not available (pruned data)")
        raise RpcError(RPC_MISC_ERROR, "Block not found on disk")

    def getblock(self, blockhash: Any, verbosity: Any) -> Any:
        idx = self._lookup(blockhash)
        if verbosity is None:
            level = 1
        elif isinstance(verbosity, bool):
            level = int(verbosity)
        else:
            level = get_int(verbosity)
        block = self._block_data(idx)
        if level <= 0:
            return block.raw.hex()
        out = self.header_json(idx)
        out["strippedsize"] = block.stripped_size
        out["size"] = block.size
        out["weight"] = block.weight
        cb = block.txs[0]
        coinbase = {"version": cb.version, "locktime": cb.locktime, "sequence": cb.inputs[0][3], "coinbase": cb.inputs[0][2].hex()}
        if cb.witnesses and cb.witnesses[0]:
            coinbase["witness"] = cb.witnesses[0][0].hex()
        out["coinbase_tx"] = coinbase
        if level == 1:
            out["tx"] = [hash_to_hex(t) for t in block.txids]
        else:
            undo = idx.undo if self.chain.contains(idx) else None
            out["tx"] = [self.tx_json(tx, txid, undo[i - 1] if undo is not None and i > 0 else None, level >= 3, i == 0) for i, (tx, txid) in enumerate(zip(block.txs, block.txids))]
        return out

    def tx_json(self, tx, txid: bytes, spent, with_prevout: bool, coinbase: bool) -> dict:
        """TxToUniv with hex (getblock verbosity 2 and 3)."""
        weight = tx.weight
        out: dict[str, Any] = {
            "txid": hash_to_hex(txid),
            "hash": hash_to_hex(tx.wtxid),
            "version": tx.version,
            "size": len(tx.raw),
            "vsize": (weight + 3) // 4,
            "weight": weight,
            "locktime": tx.locktime,
        }
        vin = []
        for i, (prev, n, script_sig, seq) in enumerate(tx.inputs):
            entry: dict[str, Any]
            if coinbase:
                entry = {"coinbase": script_sig.hex()}
            else:
                entry = {"txid": hash_to_hex(prev), "vout": n, "scriptSig": {"asm": script_to_asm(script_sig, True), "hex": script_sig.hex()}}
            if tx.witnesses is not None and tx.witnesses[i]:
                entry["txinwitness"] = [item.hex() for item in tx.witnesses[i]]
            if spent is not None and with_prevout:
                coin = spent[i]
                entry["prevout"] = {"generated": coin.coinbase, "height": coin.height, "value": Amount(coin.value), "scriptPubKey": script_to_univ(coin.script, self.network)}
            entry["sequence"] = seq
            vin.append(entry)
        out["vin"] = vin
        out["vout"] = [{"value": Amount(v), "n": n, "scriptPubKey": script_to_univ(s, self.network)} for n, (v, s) in enumerate(tx.outputs)]
        if spent is not None:
            out["fee"] = Amount(sum(c.value for c in spent) - sum(v for v, _ in tx.outputs))
        out["hex"] = tx.raw.hex()
        return out

    def getblockchaininfo(self) -> dict:
        chain = self.chain
        tip = chain.tip
        out = {
            "chain": self.network.core_chain,
            "blocks": tip.height,
            "headers": chain.best_header().height,
            "bestblockhash": tip.hash_hex,
            **self._tip_objects(tip),
            "time": tip.time,
            "mediantime": tip.mtp,
            "verificationprogress": CoreFloat(1.0),
            "initialblockdownload": chain.is_initial_block_download(),
            "chainwork": _hex256(tip.chainwork),
            "size_on_disk": chain.size_on_disk(),
            "pruned": False,
            "warnings": list(self.warnings),
        }
        return out

    def getdifficulty(self) -> CoreFloat:
        return CoreFloat(bits_difficulty(self.chain.tip.bits))

    def getchaintips(self) -> list:
        return [{"height": b.height, "hash": b.hash_hex, "branchlen": branch, "status": status} for b, branch, status in self.chain.chain_tips()]

    def invalidateblock(self, blockhash: Any) -> None:
        self.chain.invalidate_block(self._lookup(blockhash))
        return None

    def reconsiderblock(self, blockhash: Any) -> None:
        self.chain.reconsider_block(self._lookup(blockhash))
        return None

    # ------------------------------------------------------------------
    # mempool

    def _mempool_entry(self, e) -> dict:
        mp = self.chain.mempool
        anc = mp.ancestors(e.parents)
        desc = mp.descendants(e.txid)
        anc_all = anc | {e.txid}
        chunk = mp.chunk(e.txid)
        return {
            "vsize": e.vsize,
            "weight": e.weight,
            "time": e.time,
            "height": e.height,
            "descendantcount": len(desc),
            "descendantsize": sum(mp.entries[t].vsize for t in desc),
            "ancestorcount": len(anc_all),
            "ancestorsize": sum(mp.entries[t].vsize for t in anc_all),
            "wtxid": hash_to_hex(e.wtxid),
            "chunkweight": sum(mp.entries[t].weight for t in chunk),
            "fees": {
                "base": Amount(e.fee),
                "modified": Amount(e.fee),
                "ancestor": Amount(sum(mp.entries[t].fee for t in anc_all)),
                "descendant": Amount(sum(mp.entries[t].fee for t in desc)),
                "chunk": Amount(sum(mp.entries[t].fee for t in chunk)),
            },
            "depends": sorted(hash_to_hex(p) for p in e.parents),
            "spentby": sorted(hash_to_hex(c) for c in e.children),
            "unbroadcast": e.unbroadcast,
        }

    def getrawmempool(self, verbose: Any, mempool_sequence: Any) -> Any:
        verbose = bool(verbose is not None and get_bool(verbose))
        sequence = bool(mempool_sequence is not None and get_bool(mempool_sequence))
        mp = self.chain.mempool
        if verbose and sequence:
            raise RpcError(RPC_INVALID_PARAMETER, "Verbose results cannot contain mempool sequence values.")
        if verbose:
            return {hash_to_hex(t): self._mempool_entry(e) for t, e in mp.entries.items()}
        txids = [hash_to_hex(t) for t in mp.entries]
        if sequence:
            return {"txids": txids, "mempool_sequence": mp.transactions_updated}
        return txids

    def getmempoolinfo(self) -> dict:
        mp = self.chain.mempool
        return {
            "loaded": True,
            "size": len(mp),
            "bytes": sum(e.vsize for e in mp.entries.values()),
            "usage": sum(len(e.tx.raw) + 400 for e in mp.entries.values()),
            "total_fee": Amount(sum(e.fee for e in mp.entries.values())),
            "maxmempool": 300_000_000,
            "mempoolminfee": Amount(MIN_RELAY_FEE),
            "minrelaytxfee": Amount(MIN_RELAY_FEE),
            "incrementalrelayfee": Amount(MIN_RELAY_FEE),
            "unbroadcastcount": sum(e.unbroadcast for e in mp.entries.values()),
            "fullrbf": True,
        }

    def sendrawtransaction(self, hexstring: Any, maxfeerate: Any, maxburnamount: Any) -> str:
        s = get_str(hexstring)
        try:
            if not is_hex(s):
                raise DecodeError("not hex")
            raw = bytes.fromhex(s)
            tx, end = decode_tx(raw)
            if end != len(raw):
                raise DecodeError("trailing bytes")
        except DecodeError:
            raise RpcError(RPC_DESERIALIZATION_ERROR, "TX decode failed. Make sure the tx has at least one input.") from None
        txid = tx.txid
        if any((txid, n) in self.chain.utxos for n in range(len(tx.outputs))):
            raise RpcError(RPC_VERIFY_ALREADY_IN_UTXO_SET, "Transaction outputs already in utxo set")
        if txid in self.chain.mempool:
            return hash_to_hex(txid)
        try:
            self.chain.accept_to_mempool(tx, unbroadcast=True)
        except MempoolReject as e:
            code = RPC_VERIFY_ERROR if e.reason == "bad-txns-inputs-missingorspent" else RPC_VERIFY_REJECTED
            raise RpcError(code, e.reason) from None
        return hash_to_hex(txid)

    # ------------------------------------------------------------------
    # mining

    def getmininginfo(self) -> dict:
        chain = self.chain
        tip = chain.tip
        out: dict[str, Any] = {"blocks": tip.height}
        if chain.last_block_weight is not None:
            out["currentblockweight"] = chain.last_block_weight
        if chain.last_block_num_txs is not None:
            out["currentblocktx"] = chain.last_block_num_txs
        out["bits"] = f"{tip.bits:08x}"
        out["difficulty"] = CoreFloat(bits_difficulty(tip.bits))
        out["target"] = _hex256(derive_target(tip.bits) or 0)
        out["networkhashps"] = self._network_hashps(120, -1)
        out["pooledtx"] = len(chain.mempool)
        out["blockmintxfee"] = Amount(BLOCK_MIN_TX_FEE)
        out["chain"] = self.network.core_chain
        bits = chain.next_bits(tip)
        out["next"] = {"height": tip.height + 1, "bits": f"{bits:08x}", "difficulty": CoreFloat(bits_difficulty(bits)), "target": _hex256(derive_target(bits) or 0)}
        out["warnings"] = list(self.warnings)
        return out

    def _network_hashps(self, lookup: int, height: int) -> CoreFloat | int:
        """GetNetworkHashPS over the active chain (from the context base at
        the earliest, when the chain starts from a recorded context)."""
        chain = self.chain
        if lookup < -1 or lookup == 0:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid nblocks. Must be a positive number or -1.")
        if height < -1 or height > chain.height:
            raise RpcError(RPC_INVALID_PARAMETER, "Block does not exist at specified height")
        pb = chain.tip if height < 0 else chain.at_height(height)
        if pb is None or pb.height == 0:
            return 0
        if lookup == -1:
            lookup = pb.height % 2016 + 1
        lookup = min(lookup, pb.height - chain.offset)
        pb0 = pb
        lo = hi = pb.time
        for _ in range(lookup):
            pb0 = pb0.prev
            lo, hi = min(lo, pb0.time), max(hi, pb0.time)
        if lo == hi:
            return 0
        return CoreFloat((pb.chainwork - pb0.chainwork) / (hi - lo))

    def getnetworkhashps(self, nblocks: Any, height: Any) -> Any:
        return self._network_hashps(120 if nblocks is None else get_int(nblocks), -1 if height is None else get_int(height))

    def getnetworkinfo(self) -> dict:
        def net(name: str, reachable: bool) -> dict:
            return {"name": name, "limited": not reachable, "reachable": reachable, "proxy": "", "proxy_randomize_credentials": False}

        return {
            "version": CLIENT_VERSION,
            "subversion": SUBVERSION,
            "protocolversion": PROTOCOL_VERSION,
            "localservices": "0000000000000c09",
            "localservicesnames": ["NETWORK", "WITNESS", "NETWORK_LIMITED", "P2P_V2"],
            "localrelay": True,
            "timeoffset": 0,
            "networkactive": True,
            "connections": 0,
            "connections_in": 0,
            "connections_out": 0,
            "networks": [net("ipv4", True), net("ipv6", True), net("onion", False), net("i2p", False), net("cjdns", False)],
            "relayfee": Amount(MIN_RELAY_FEE),
            "incrementalfee": Amount(MIN_RELAY_FEE),
            "localaddresses": [],
            "warnings": list(self.warnings),
        }

    def _gbt_options(self, request: Any) -> tuple[str, Any, set[str], dict]:
        if not isinstance(request, dict):
            raise RpcError(RPC_MISC_ERROR, f"JSON value of type {_uv_type(request)} is not of expected type object")
        mode = request.get("mode")
        if mode is None:
            mode = "template"
        elif not isinstance(mode, str):
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid mode")
        rules: set[str] = set()
        if isinstance(request.get("rules"), list):
            rules = {get_str(r) for r in request["rules"]}
        return mode, request.get("longpollid"), rules, request

    def longpoll_request(self, params: Any) -> tuple[bytes, int] | None:
        """For a getblocktemplate call: None if it answers at once, else
        (watched tip hash, transactions-updated counter) to wait on, as
        Core's longpoll does. Raises the errors Core raises before waiting."""
        args = self.normalize("getblocktemplate", params)
        mode, lpval, _, request = self._gbt_options(args[0])
        if mode == "proposal":
            return None
        if mode != "template":
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid mode")
        if lpval is None:
            return None
        if isinstance(lpval, str):
            return parse_hash(lpval[:64], "longpollid"), _atoi(lpval[64:]) & 0xFFFFFFFF
        return self.chain.tip.hash, self._gbt_updated_last

    def getblocktemplate(self, template_request: Any) -> Any:
        """The template (after any longpoll wait, which the server did)."""
        chain = self.chain
        mode, _, rules, request = self._gbt_options(template_request)
        if mode == "proposal":
            data = request.get("data")
            if not isinstance(data, str):
                raise RpcError(RPC_TYPE_ERROR, "Missing data String key for proposal")
            try:
                block = decode_block_hex(data)
            except DecodeError:
                raise RpcError(RPC_DESERIALIZATION_ERROR, "Block decode failed") from None
            idx = chain.lookup(block.hash)
            if idx is not None:
                if idx.status & VALID_SCRIPTS and not idx.failed:
                    return "duplicate"
                if idx.failed:
                    return "duplicate-invalid"
                return "duplicate-inconclusive"
            verdict = chain.test_block_validity(block, check_pow=False, check_merkle=True)
            return None if verdict is None else verdict.reason
        if mode != "template":
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid mode")
        if "segwit" not in rules:
            raise RpcError(RPC_INVALID_PARAMETER, 'getblocktemplate must be called with the segwit rule set (call with {"rules": ["segwit"]})')
        now = chain.now()
        updated = chain.mempool.transactions_updated
        if (
            self._gbt_template is None
            or self._gbt_prev is not chain.tip
            or (updated != self._gbt_updated_last and now - self._gbt_time_start >= self.template_refresh)
        ):
            self._gbt_updated_last = updated
            self._gbt_time_start = now
            self._gbt_template = chain.create_new_block()
            self._gbt_prev = chain.tip
        return self.template_json(self._gbt_template, self._gbt_updated_last)

    def template_json(self, tpl: BlockTemplate, updated: int) -> dict:
        index = {}
        transactions = []
        for i, e in enumerate(tpl.entries, start=1):
            index[e.txid] = i
            transactions.append(
                {
                    "data": e.tx.raw.hex(),
                    "txid": hash_to_hex(e.txid),
                    "hash": hash_to_hex(e.wtxid),
                    "depends": [index[p] for p in dict.fromkeys(prev for prev, _, _, _ in e.tx.inputs) if p in index],
                    "fee": e.fee,
                    "sigops": e.sigop_cost,
                    "weight": e.weight,
                }
            )
        return {
            "capabilities": ["proposal"],
            "version": tpl.version,
            "rules": ["csv", "!segwit", "taproot"],
            "vbavailable": {},
            "vbrequired": 0,
            "previousblockhash": tpl.prev.hash_hex,
            "transactions": transactions,
            "coinbaseaux": {},
            "coinbasevalue": tpl.coinbase_value,
            "longpollid": tpl.prev.hash_hex + str(updated),
            "target": _hex256(derive_target(tpl.bits) or 0),
            "mintime": tpl.mintime,
            "mutable": ["time", "transactions", "prevblock"],
            "noncerange": "00000000ffffffff",
            "sigoplimit": MAX_BLOCK_SIGOPS_COST,
            "sizelimit": MAX_BLOCK_SERIALIZED_SIZE,
            "weightlimit": MAX_BLOCK_WEIGHT,
            "curtime": self.chain.block_time(tpl.prev),
            "bits": f"{tpl.bits:08x}",
            "height": tpl.height,
            "default_witness_commitment": tpl.commitment_script.hex(),
        }

    def submitblock(self, hexdata: Any, dummy: Any) -> Any:
        try:
            block = decode_block_hex(get_str(hexdata))
        except DecodeError:
            raise RpcError(RPC_DESERIALIZATION_ERROR, "Block decode failed") from None
        # Core dropped its "Block does not start with a coinbase" pre-check
        # (bitcoin/bitcoin#31175, v29): CheckBlock answers instead.
        result = self.chain.submit_block(block)
        log.info("submitblock %s height %s: %s", block.hash[::-1].hex(), getattr(self.chain.lookup(block.hash), "height", "?"), result or "accepted")
        return result

    def _output_script(self, s: str, allow_descriptor: bool) -> bytes:
        try:
            return decode_destination(s, self.network).script
        except AddressInvalid:
            pass
        if allow_descriptor:
            body, _, checksum = s.partition("#")
            if checksum and descriptor_checksum(body) != checksum:
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, f"Provided checksum '{checksum}' does not match computed checksum '{descriptor_checksum(body)}'")
            if body.startswith("addr(") and body.endswith(")"):
                try:
                    return decode_destination(body[5:-1], self.network).script
                except AddressInvalid:
                    pass
            if body.startswith("raw(") and body.endswith(")") and is_hex(body[4:-1]):
                return bytes.fromhex(body[4:-1])
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address or descriptor")
        raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address")

    def generatetoaddress(self, nblocks: Any, address: Any, maxtries: Any) -> list[str]:
        n = get_int(nblocks)
        tries = DEFAULT_MAX_TRIES if maxtries is None else get_int(maxtries)
        script = self._output_script(get_str(address), allow_descriptor=False)
        try:
            hashes = self.chain.generate(script, n, tries)
        except ChainError as e:
            raise RpcError(RPC_INTERNAL_ERROR, str(e)) from None
        return [hash_to_hex(h) for h in hashes]

    def generateblock(self, output: Any, transactions: Any, submit: Any) -> dict:
        chain = self.chain
        script = self._output_script(get_str(output), allow_descriptor=True)
        txs = []
        for item in transactions:
            s = get_str(item)
            if len(s) == 64 and is_hex(s):
                e = chain.mempool.get(bytes.fromhex(s)[::-1])
                if e is None:
                    raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, f"Transaction {s} not in mempool.")
                txs.append(e.tx)
                continue
            try:
                if not is_hex(s):
                    raise DecodeError("not hex")
                raw = bytes.fromhex(s)
                tx, end = decode_tx(raw)
                if end != len(raw) or not tx.inputs:
                    raise DecodeError("bad transaction")
            except DecodeError:
                raise RpcError(RPC_DESERIALIZATION_ERROR, f"Transaction decode failed for {s}. Make sure the tx has at least one input.") from None
            txs.append(tx)
        do_submit = True if submit is None else get_bool(submit)
        tpl = chain.create_new_block(use_mempool=False)
        block = chain.assemble(tpl, script, txs)
        verdict = chain.test_block_validity(block, check_pow=False, check_merkle=False)
        if verdict is not None:
            raise RpcError(RPC_VERIFY_ERROR, f"TestBlockValidity failed: {verdict}")
        solved, _ = chain.grind(block, DEFAULT_MAX_TRIES)
        if solved is None:
            raise RpcError(RPC_MISC_ERROR, "Failed to make block.")
        if do_submit:
            accepted, _ = chain.process_new_block(solved)
            if not accepted:
                raise RpcError(RPC_INTERNAL_ERROR, "ProcessNewBlock, block not accepted")
            return {"hash": solved.hash[::-1].hex()}
        return {"hash": solved.hash[::-1].hex(), "hex": solved.raw.hex()}

    # ------------------------------------------------------------------
    # util, control

    def validateaddress(self, address: Any) -> dict:
        s = get_str(address)
        try:
            dest = decode_destination(s, self.network)
        except AddressInvalid as e:
            return {"isvalid": False, "error_locations": e.locations, "error": e.message}
        return {"isvalid": True, "address": script_to_address(dest.script, self.network), "scriptPubKey": dest.script.hex(), **describe_address(dest)}

    def uptime(self) -> int:
        return int(self.clock() - self.started)

    def help(self, command: Any) -> str:
        if command is None:
            return "\n".join(self.usage(n).splitlines()[0] for n in sorted(self.methods))
        name = get_str(command)
        if name not in self.methods:
            return f"help: unknown command: {name}"
        return self.usage(name)

    def stop(self, wait: Any) -> str:
        self.stopping = True
        if self.on_stop is not None:
            self.on_stop()
        return "Bitcoin Core stopping"
