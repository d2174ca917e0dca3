"""Raw-transaction RPCs of the devnode that the payout service uses and the
original devnode lacked: ``createrawtransaction``, ``getrawtransaction``,
``getmempoolentry``, ``gettxout``, ``decoderawtransaction``. Field names,
types, error codes and messages follow Bitcoin Core v31's RPC help and
source. Pure: over the node's :class:`~.rpc.Rpc` and its chain.

``register_rawtx_rpcs(rpc)`` adds them to an ``Rpc``'s method table.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from hashcoop.pool.core.btc.block import RawTx
from hashcoop.pool.core.btc.serialize import read_compact_size
from hashcoop.pool.tools.devnode.consensus import MAX_MONEY, DecodeError, decode_tx, is_hex, serialize_tx
from hashcoop.pool.tools.devnode.rpc import (
    RPC_DESERIALIZATION_ERROR,
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
from hashcoop.pool.tools.devnode.script import AddressInvalid, decode_destination, script_to_univ

MAX_BIP125_RBF_SEQUENCE = 0xFFFFFFFD


def amount_from_value(v: Any, decimals: int = 8) -> int:
    """Core's AmountFromValue: a JSON number or numeric string in BTC with
    at most ``decimals`` decimals -> satoshis (with 3: sat/vB -> sat/kvB)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise RpcError(RPC_TYPE_ERROR, "Amount is not a number or string")
    try:
        d = Decimal(str(v)) if not isinstance(v, str) else Decimal(v)
    except InvalidOperation:
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount") from None
    if not d.is_finite():
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount")
    sat = d.scaleb(decimals)
    if sat != sat.to_integral_value():
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount")
    sat = int(sat)
    if sat < 0 or sat > MAX_MONEY:
        raise RpcError(RPC_TYPE_ERROR, "Amount out of range")
    return sat


def decode_any_tx(s: Any, try_witness: bool = True) -> RawTx:
    """DecodeHexTx: with witness if it parses so, else the legacy form (which
    is how a transaction without inputs, e.g. from createrawtransaction,
    reads)."""
    s = get_str(s)
    if not is_hex(s) or len(s) % 2:
        raise RpcError(RPC_DESERIALIZATION_ERROR, "TX decode failed")
    raw = bytes.fromhex(s)
    if try_witness:
        try:
            tx, end = decode_tx(raw)
            if end == len(raw):
                return tx
        except DecodeError:
            pass
    try:
        return _decode_legacy(raw)
    except (ValueError, IndexError) as e:
        raise RpcError(RPC_DESERIALIZATION_ERROR, "TX decode failed") from e


def _decode_legacy(raw: bytes) -> RawTx:
    pos = 4
    version = int.from_bytes(raw[0:4], "little", signed=True)
    n_in, pos = read_compact_size(raw, pos)
    inputs = []
    for _ in range(n_in):
        prev, n = raw[pos:pos + 32], int.from_bytes(raw[pos + 32:pos + 36], "little")
        pos += 36
        ln, pos = read_compact_size(raw, pos)
        script = raw[pos:pos + ln]
        pos += ln
        seq = int.from_bytes(raw[pos:pos + 4], "little")
        pos += 4
        if len(prev) != 32 or len(script) != ln:
            raise ValueError("truncated")
        inputs.append((prev, n, script, seq))
    n_out, pos = read_compact_size(raw, pos)
    outputs = []
    for _ in range(n_out):
        value = int.from_bytes(raw[pos:pos + 8], "little", signed=True)
        pos += 8
        ln, pos = read_compact_size(raw, pos)
        script = raw[pos:pos + ln]
        if len(script) != ln:
            raise ValueError("truncated")
        pos += ln
        outputs.append((value, script))
    if pos + 4 != len(raw):
        raise ValueError("trailing or missing bytes")
    locktime = int.from_bytes(raw[pos:pos + 4], "little")
    return legacy_tx(version, inputs, outputs, locktime)


def legacy_tx(version: int, inputs, outputs, locktime: int) -> RawTx:
    """A transaction without witnesses, built directly (``parse_tx`` would
    read an empty input vector followed by one output as a segwit marker)."""
    raw = serialize_tx(version, inputs, outputs, None, locktime)
    return RawTx(raw, list(inputs), list(outputs), version, locktime, None, raw)


def legacy_hex(tx: RawTx) -> str:
    """A transaction without witnesses as Core writes it (``EncodeHexTx``
    of a transaction without witness data)."""
    return tx.stripped.hex()


class RawTxRpcs:
    def __init__(self, rpc: Rpc):
        self.rpc = rpc
        self.chain = rpc.chain

    def methods(self) -> dict[str, Method]:
        A = Arg
        return {
            "createrawtransaction": Method(self.createrawtransaction, (A("inputs", "arr", True), A("outputs", "any", True), A("locktime", "num"), A("replaceable", "bool")),
                                           "Create a transaction spending the given inputs and creating new outputs."),
            "decoderawtransaction": Method(self.decoderawtransaction, (A("hexstring", "str", True), A("iswitness", "bool")),
                                           "Return a JSON object representing the serialized, hex-encoded transaction."),
            "getrawtransaction": Method(self.getrawtransaction, (A("txid", "hex", True), A("verbosity", "any"), A("blockhash", "hex")),
                                        "By default, this call only returns a transaction if it is in the mempool. If -txindex is enabled and no blockhash argument is passed, it will return the transaction if it is in a block in the blockchain."),
            "getmempoolentry": Method(self.getmempoolentry, (A("txid", "hex", True),), "Returns mempool data for given transaction"),
            "gettxout": Method(self.gettxout, (A("txid", "hex", True), A("n", "num", True), A("include_mempool", "bool")),
                               "Returns details about an unspent transaction output."),
        }

    def createrawtransaction(self, inputs: Any, outputs: Any, locktime: Any, replaceable: Any) -> str:
        lock = 0 if locktime is None else get_int(locktime)
        if lock < 0 or lock > 0xFFFFFFFF:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, locktime out of range")
        rbf = bool(replaceable is not None and get_bool(replaceable))
        ins = []
        for item in inputs:
            if not isinstance(item, dict):
                raise RpcError(RPC_TYPE_ERROR, "JSON value of type " + type(item).__name__ + " is not of expected type object")
            txid = parse_hash(item.get("txid"), "txid")
            if "vout" not in item or not isinstance(item["vout"], int) or isinstance(item["vout"], bool):
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, missing vout key")
            n = item["vout"]
            if n < 0:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, vout cannot be negative")
            if "sequence" in item:
                seq = get_int(item["sequence"])
                if seq < 0 or seq > 0xFFFFFFFF:
                    raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, sequence number is out of range")
            elif rbf:
                seq = MAX_BIP125_RBF_SEQUENCE
            elif lock:
                seq = 0xFFFFFFFE
            else:
                seq = 0xFFFFFFFF
            ins.append((txid, n, b"", seq))
        if isinstance(outputs, dict):
            pairs = [outputs]
        elif isinstance(outputs, list):
            pairs = outputs
        else:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, key-value pair must contain exactly one key")
        outs = []
        seen: set[str] = set()
        has_data = False
        for obj in pairs:
            if not isinstance(obj, dict) or (outputs is not obj and len(obj) != 1):
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, key-value pair must contain exactly one key")
            for key, value in obj.items():
                if key == "data":
                    if has_data:
                        raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, duplicate key: data")
                    has_data = True
                    data = get_str(value)
                    if not is_hex(data) or len(data) % 2:
                        raise RpcError(RPC_INVALID_PARAMETER, f"Data must be hexadecimal string (not '{data}')")
                    outs.append((0, b"\x6a" + _push(bytes.fromhex(data))))
                    continue
                try:
                    script = decode_destination(key, self.rpc.network).script
                except AddressInvalid:
                    raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, f"Invalid Bitcoin address: {key}") from None
                if key in seen:
                    raise RpcError(RPC_INVALID_PARAMETER, f"Invalid parameter, duplicated address: {key}")
                seen.add(key)
                outs.append((amount_from_value(value), script))
        tx = legacy_tx(2, ins, outs, lock)
        return legacy_hex(tx)

    def decoderawtransaction(self, hexstring: Any, iswitness: Any) -> dict:
        tx = decode_any_tx(hexstring, True if iswitness is None else get_bool(iswitness))
        out = self.rpc.tx_json(tx, tx.txid, None, False, tx.is_coinbase())
        out.pop("hex", None)
        return out

    def getrawtransaction(self, txid: Any, verbosity: Any, blockhash: Any) -> Any:
        h = parse_hash(txid, "parameter 1")
        level = 0
        if verbosity is not None:
            level = int(verbosity) if isinstance(verbosity, bool) else get_int(verbosity)
        chain = self.chain
        in_chain = None
        if blockhash is not None:
            idx = chain.lookup(parse_hash(blockhash, "parameter 3"))
            if idx is None:
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block hash not found")
            block = idx.block
            tx = None
            if block is not None:
                for t, tid in zip(block.txs, block.txids):
                    if tid == h:
                        tx = t
                        break
            if tx is None:
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "No such transaction found in the provided block. Use gettransaction for wallet transactions.")
            in_chain = chain.contains(idx)
            found_idx = idx
        else:
            e = chain.mempool.get(h)
            if e is None:
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "No such mempool transaction. Use -txindex or provide a block hash to enable blockchain transaction queries. Use gettransaction for wallet transactions.")
            tx, found_idx = e.tx, None
        if level <= 0:
            return tx.raw.hex()
        out = self.rpc.tx_json(tx, h, None, False, tx.is_coinbase())
        if blockhash is not None:
            out = {"in_active_chain": in_chain, **out}
            if in_chain:
                out["blockhash"] = found_idx.hash_hex
                out["confirmations"] = chain.height - found_idx.height + 1
                out["time"] = found_idx.time
                out["blocktime"] = found_idx.time
            else:
                out["blockhash"] = found_idx.hash_hex
                out["confirmations"] = 0
        return out

    def getmempoolentry(self, txid: Any) -> dict:
        e = self.chain.mempool.get(parse_hash(txid, "parameter 1"))
        if e is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
        return self.rpc._mempool_entry(e)

    def gettxout(self, txid: Any, n: Any, include_mempool: Any) -> Any:
        h = parse_hash(txid, "txid")
        vout = get_int(n)
        mempool = True if include_mempool is None else get_bool(include_mempool)
        chain = self.chain
        if mempool:
            if (h, vout) in chain.mempool.spent_by:
                return None
            e = chain.mempool.get(h)
            if e is not None:
                if vout >= len(e.tx.outputs):
                    return None
                value, script = e.tx.outputs[vout]
                return {"bestblock": chain.tip.hash_hex, "confirmations": 0, "value": Amount(value),
                        "scriptPubKey": script_to_univ(script, self.rpc.network), "coinbase": False}
        coin = chain.utxos.get((h, vout))
        if coin is None:
            return None
        return {"bestblock": chain.tip.hash_hex, "confirmations": chain.height - coin.height + 1, "value": Amount(coin.value),
                "scriptPubKey": script_to_univ(coin.script, self.rpc.network), "coinbase": coin.coinbase}


def _push(data: bytes) -> bytes:
    n = len(data)
    if n < 0x4C:
        return bytes([n]) + data
    if n <= 0xFF:
        return b"\x4c" + bytes([n]) + data
    return b"\x4d" + n.to_bytes(2, "little") + data


def register_rawtx_rpcs(rpc: Rpc) -> None:
    rpc.methods.update(RawTxRpcs(rpc).methods())
