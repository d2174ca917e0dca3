#!/usr/bin/env python3
"""Record how Bitcoin Core's wallet answers the RPCs the payout service
uses, so the devnode's wallet (pool/tools/devnode/wallet.py) is held to them.

    BITCOIND=/path/to/bitcoind .venv/bin/python ops/record_wallet_vectors.py [--out FILE]

Runs one scripted session (:func:`session`) twice, each time on a fresh
``bitcoind -regtest`` in a temporary directory (no network, cookie auth,
``-fallbackfee=0``): create a wallet, mine to it, watch the coinbase mature,
create/fund/sign/send payments with either fee bearer, confirm them, a
payment whose coin another one spent first, unload and load the wallet, and
Core's errors (invalid address, insufficient funds, no fee rate, both fee
rates, a fee below the minimum relay fee, unknown transaction, wallet
routing).
Writes FILE (default tests/vectors/bitcoind-wallet.json)::

    {"node": "/Satoshi:31.99.0/", "steps": [{"name", "method", "params",
     "wallet", "result" | "error"}, ...], "volatile": ["<step name>/result/txid", ...]}

``steps`` are the first run's requests and answers; the temporary data
directory in messages reads ``<datadir>``. ``volatile`` lists the JSON paths
(step name, then keys and list indexes, ``/``-separated) whose values
differed between the two runs: what keys, clocks and block hashes make
different on every run. Everything else is deterministic, and the stand-in
must give it exactly (tests/vectors/wallet.py compares; tests/payouts and
tests/realnode use it).

Recorded 2026-12-07 from Bitcoin Core v31.99.0 (../shared/bitcoin/bin/bitcoind).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from hashcoop.pool.tools.demo import free_port

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "vectors" / "bitcoind-wallet.json"
OTHER = "bcrt1qj4j7j704sq2yumjs0xq2hp2xhaukegh4emmvfn"
PAYEES = ["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
          "bcrt1psjw83ferk5eyapl0f5fpd8u50s2t39hxp4pzuttnugf0acxfwy4qwwea25"]

Call = Callable[..., dict]  # (method, *params, wallet=None) -> {"result": ...} or {"error": {...}}


def get(value, key):
    """``value[key]``, or None when an earlier step failed (a node that
    answers differently still runs the whole session)."""
    return value.get(key) if isinstance(value, dict) else None


def session(call: Call) -> list[dict]:
    """The scripted session; each step: {"name", "method", "params", "wallet", "result" | "error"}."""
    steps: list[dict] = []

    def step(name: str, method: str, *params, wallet: str | None = None):
        assert "/" not in name  # names start the JSON paths in "volatile"
        reply = call(method, *params, wallet=wallet)
        steps.append({"name": name, "method": method, "params": list(params), "wallet": wallet, **reply})
        return reply.get("result")

    step("no wallet loaded", "getbalances")
    step("createwallet", "createwallet", "pool")
    step("createwallet again", "createwallet", "pool")
    step("listwallets", "listwallets")
    addr = step("getnewaddress", "getnewaddress")
    step("getaddressinfo mine", "getaddressinfo", addr)
    step("getaddressinfo not mine", "getaddressinfo", OTHER)
    step("validateaddress", "validateaddress", PAYEES[1])
    step("validateaddress invalid", "validateaddress", "bcrt1qnotanaddress")
    step("mine to the wallet", "generatetoaddress", 1, addr)
    step("mine 99 more", "generatetoaddress", 99, OTHER)
    step("balances at 100 confirmations", "getbalances")
    step("listunspent at 100 confirmations", "listunspent")
    step("mine 1 more", "generatetoaddress", 1, OTHER)
    step("balances at 101 confirmations", "getbalances")
    step("getbalance at 101 confirmations", "getbalance")
    step("listunspent at 101", "listunspent")
    raw = step("createrawtransaction", "createrawtransaction", [], [{PAYEES[0]: "1.5"}, {PAYEES[1]: "0.25"}])
    step("createrawtransaction invalid address", "createrawtransaction", [], [{"bcrt1qnotanaddress": 1}])
    step("createrawtransaction duplicate address", "createrawtransaction", [], [{PAYEES[0]: 1}, {PAYEES[0]: 2}])
    step("fund without a fee rate (fallbackfee 0)", "fundrawtransaction", raw)
    step("fund with a confirmation target (no estimates)", "fundrawtransaction", raw, {"conf_target": 6, "changePosition": 2})
    step("fund with both fee rates", "fundrawtransaction", raw, {"fee_rate": 2, "feeRate": 0.0001})
    step("fund at a fee rate finer than 0.001 sat per vB", "fundrawtransaction", raw, {"fee_rate": 0.0005})
    low = step("fund below the minimum relay fee", "fundrawtransaction", raw, {"fee_rate": 0.05, "changePosition": 2})
    step("send below the minimum relay fee", "sendrawtransaction", get(step("sign it", "signrawtransactionwithwallet", get(low, "hex")), "hex"))
    step("fund at 0.5 sat per vB", "fundrawtransaction", raw, {"fee_rate": 0.5, "changePosition": 2})
    step("fund changePosition out of bounds", "fundrawtransaction", raw, {"fee_rate": 2, "changePosition": 9})
    big = step("createrawtransaction too much", "createrawtransaction", [], [{PAYEES[0]: 1000}])
    step("fund insufficient funds", "fundrawtransaction", big, {"fee_rate": 2})
    funded = step("fund, pool pays the fee", "fundrawtransaction", raw, {"fee_rate": 2, "changePosition": 2})
    step("decode, pool pays the fee", "decoderawtransaction", get(funded, "hex"))
    by_payees = step("fund, payees pay the fee", "fundrawtransaction", raw,
                     {"fee_rate": 2, "changePosition": 2, "subtractFeeFromOutputs": [0, 1]})
    step("decode, payees pay the fee", "decoderawtransaction", get(by_payees, "hex"))
    odd = step("fund, payees pay an odd fee", "fundrawtransaction", raw,
               {"fee_rate": 1.001, "changePosition": 2, "subtractFeeFromOutputs": [1, 0]})
    step("decode, payees pay an odd fee", "decoderawtransaction", get(odd, "hex"))
    signed = get(step("sign", "signrawtransactionwithwallet", get(funded, "hex")), "hex")
    txid = step("send", "sendrawtransaction", signed)
    step("gettransaction unconfirmed", "gettransaction", txid)
    step("getmempoolentry", "getmempoolentry", txid)
    step("getrawtransaction from the mempool", "getrawtransaction", txid, 1)
    step("balances with own change unconfirmed", "getbalances")
    step("listunspent with own change unconfirmed", "listunspent", 0)
    step("send again (already in the mempool)", "sendrawtransaction", signed)
    step("confirm", "generatetoaddress", 1, OTHER)
    step("gettransaction confirmed", "gettransaction", txid)
    step("getmempoolentry after confirmation", "getmempoolentry", txid)
    step("getrawtransaction without index", "getrawtransaction", txid, 1)
    step("gettxout", "gettxout", txid, 0)
    step("gettxout change", "gettxout", txid, 2)
    step("send again (confirmed)", "sendrawtransaction", signed)
    step("gettransaction unknown", "gettransaction", "00" * 32)
    # two payments funded from the same coin: the second one sent spends it first
    first = step("fund a payment", "fundrawtransaction", step("createrawtransaction 0.1", "createrawtransaction", [], [{PAYEES[0]: "0.1"}]),
                 {"fee_rate": 2, "changePosition": 1})
    first = get(step("sign it, keep it", "signrawtransactionwithwallet", get(first, "hex")), "hex")
    second = step("fund another from the same coin", "fundrawtransaction",
                  step("createrawtransaction 0.2", "createrawtransaction", [], [{PAYEES[1]: "0.2"}]), {"fee_rate": 5, "changePosition": 1})
    second = get(step("sign the other", "signrawtransactionwithwallet", get(second, "hex")), "hex")
    other_txid = step("send the other", "sendrawtransaction", second)
    step("mine 3", "generatetoaddress", 3, OTHER)
    step("send the first (its coin is spent)", "sendrawtransaction", first)
    first_txid = get(step("decode the first", "decoderawtransaction", first), "txid")
    step("gettransaction never sent", "gettransaction", first_txid)
    step("gettransaction the other", "gettransaction", other_txid)
    step("listtransactions", "listtransactions", "*", 100)
    step("createwallet second", "createwallet", "aux")
    step("listwallets two", "listwallets")
    step("two wallets, no path", "getbalances")
    step("wallet path", "getbalances", wallet="pool")
    step("unknown wallet path", "getbalances", wallet="nope")
    step("loadwallet already loaded", "loadwallet", "pool")
    step("unloadwallet", "unloadwallet", "pool")
    step("loadwallet", "loadwallet", "pool")
    step("listwallets after reload", "listwallets")
    step("balances after reload", "getbalances", wallet="pool")
    step("listunspent after reload", "listunspent", wallet="pool")
    step("gettransaction after reload", "gettransaction", txid, wallet="pool")
    step("getaddressinfo after reload", "getaddressinfo", addr, wallet="pool")
    step("loadwallet unknown", "loadwallet", "nope")
    return steps


def rpc_caller(url: str, cookie: Path) -> Call:
    def call(method: str, *params, wallet: str | None = None) -> dict:
        body = json.dumps({"jsonrpc": "1.0", "id": 1, "method": method, "params": list(params)}).encode()
        req = urllib.request.Request(url.rstrip("/") + (f"/wallet/{wallet}" if wallet else "/"), body,
                                     {"Content-Type": "application/json"})
        req.add_header("Authorization", "Basic " + base64.b64encode(cookie.read_bytes().strip()).decode())
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                reply = json.loads(r.read())
        except urllib.error.HTTPError as e:
            reply = json.loads(e.read())
        if reply.get("error"):
            return {"error": reply["error"]}
        return {"result": reply["result"]}

    return call



def start_bitcoind(binary: str, datadir: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    proc = subprocess.Popen([binary, "-regtest", f"-datadir={datadir}", f"-rpcport={port}", "-listen=0", "-server=1",
                             "-printtoconsole=0", "-fallbackfee=0"])
    url = f"http://127.0.0.1:{port}/"
    cookie = datadir / "regtest" / ".cookie"
    deadline = time.monotonic() + 60
    while True:
        try:
            if cookie.exists() and "result" in rpc_caller(url, cookie)("getblockchaininfo"):
                return proc, url, cookie
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("bitcoind did not start")
        time.sleep(0.2)


def record(binary: str) -> tuple[str, list[dict]]:
    """One session on a fresh node: (its version string, the steps)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, cookie = start_bitcoind(binary, Path(tmp))
        try:
            call = rpc_caller(url, cookie)
            version = call("getnetworkinfo")["result"]["subversion"]
            steps = session(call)
        finally:
            rpc_caller(url, cookie)("stop")
            proc.wait(60)
    return version, json.loads(json.dumps(steps).replace(tmp, "<datadir>"))


def differing(a, b, path: str, out: set[str]) -> None:
    """The paths where two recordings differ (a path whose structure differs
    is listed itself, not its leaves)."""
    if type(a) is not type(b) or (isinstance(a, list) and len(a) != len(b)) or (isinstance(a, dict) and list(a) != list(b)):
        out.add(path)
    elif isinstance(a, dict):
        for k in a:
            differing(a[k], b[k], f"{path}/{k}", out)
    elif isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b)):
            differing(x, y, f"{path}/{i}", out)
    elif a != b:
        out.add(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    binary = os.environ.get("BITCOIND")
    if not binary:
        print("set BITCOIND to a bitcoind binary", file=sys.stderr)
        return 2
    version, steps = record(binary)
    again_version, again = record(binary)
    if again_version != version or [s["name"] for s in again] != [s["name"] for s in steps]:
        print("the two runs do not match step for step", file=sys.stderr)
        return 1
    volatile: set[str] = set()
    for a, b in zip(steps, again):
        differing({k: v for k, v in a.items() if k != "name"}, {k: v for k, v in b.items() if k != "name"}, a["name"], volatile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"node": version, "steps": steps, "volatile": sorted(volatile)}, indent=1) + "\n")
    print(f"{len(steps)} answers from {version} written to {args.out} ({len(volatile)} volatile paths)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
