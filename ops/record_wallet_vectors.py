#!/usr/bin/env python3
"""Record how Bitcoin Core's wallet answers the RPCs the payout service
uses, so the devnode's wallet (pool/devnode/wallet.py) can be held to them.

    BITCOIND=/path/to/bitcoind .venv/bin/python ops/record_wallet_vectors.py [--out FILE]

Starts ``bitcoind -regtest`` in a temporary directory (no network, cookie
auth), runs one scripted session (create a wallet, mine to it, watch the
coinbase mature, create/fund/sign/send payments with either fee bearer,
confirm them, and provoke Core's errors: invalid address, insufficient
funds, no fee rate, both fee rates, unknown transaction, wallet routing) and
writes every request with Core's answer or error object to FILE (default
tests/payouts/vectors/bitcoind-wallet.json). ``tests/payouts/test_real_bitcoind.py``
runs the same session against the devnode and compares the answers' fields,
types and error codes.

Status: written without a bitcoind at hand (none can be installed on the
project's machines); it has NOT been run here, so no vectors file is in the
repository yet. The devnode's wallet follows Core's RPC help texts instead.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "payouts" / "vectors" / "bitcoind-wallet.json"
OTHER = "bcrt1qj4j7j704sq2yumjs0xq2hp2xhaukegh4emmvfn"
PAYEES = ["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
          "bcrt1psjw83ferk5eyapl0f5fpd8u50s2t39hxp4pzuttnugf0acxfwy4qwwea25"]

Call = Callable[..., dict]  # (method, *params, wallet=None) -> {"result": ...} or {"error": {...}}


def session(call: Call) -> list[dict]:
    """The scripted session; each step: {"name", "method", "params", "wallet", "result" | "error"}."""
    steps: list[dict] = []

    def step(name: str, method: str, *params, wallet: str | None = None):
        reply = call(method, *params, wallet=wallet)
        steps.append({"name": name, "method": method, "params": list(params), "wallet": wallet, **reply})
        return reply.get("result")

    step("no wallet loaded", "getbalances")
    step("createwallet", "createwallet", "pool")
    step("createwallet again", "createwallet", "pool")
    addr = step("getnewaddress", "getnewaddress")
    step("getaddressinfo mine", "getaddressinfo", addr)
    step("getaddressinfo not mine", "getaddressinfo", OTHER)
    step("mine to the wallet", "generatetoaddress", 1, addr)
    step("mine 99 more", "generatetoaddress", 99, OTHER)
    step("balances at 100 confirmations", "getbalances")
    step("listunspent at 100 confirmations", "listunspent")
    step("mine 1 more", "generatetoaddress", 1, OTHER)
    step("balances at 101 confirmations", "getbalances")
    step("listunspent at 101", "listunspent")
    raw = step("createrawtransaction", "createrawtransaction", [], [{PAYEES[0]: "1.5"}, {PAYEES[1]: "0.25"}])
    step("createrawtransaction invalid address", "createrawtransaction", [], [{"bcrt1qnotanaddress": 1}])
    step("createrawtransaction duplicate address", "createrawtransaction", [], [{PAYEES[0]: 1}, {PAYEES[0]: 2}])
    step("fund without a fee rate (fallbackfee 0)", "fundrawtransaction", raw)
    step("fund with both fee rates", "fundrawtransaction", raw, {"fee_rate": 2, "feeRate": 0.0001})
    step("fund below the minimum fee rate", "fundrawtransaction", raw, {"fee_rate": 0.5})
    step("fund changePosition out of bounds", "fundrawtransaction", raw, {"fee_rate": 2, "changePosition": 9})
    big = step("createrawtransaction too much", "createrawtransaction", [], [{PAYEES[0]: 1000}])
    step("fund insufficient funds", "fundrawtransaction", big, {"fee_rate": 2})
    funded = step("fund, pool pays the fee", "fundrawtransaction", raw, {"fee_rate": 2, "changePosition": 2})
    step("fund, payees pay the fee", "fundrawtransaction", raw, {"fee_rate": 2, "changePosition": 2, "subtractFeeFromOutputs": [0, 1]})
    signed = step("sign", "signrawtransactionwithwallet", funded["hex"])
    txid = step("send", "sendrawtransaction", signed["hex"])
    step("gettransaction unconfirmed", "gettransaction", txid)
    step("getmempoolentry", "getmempoolentry", txid)
    step("getrawtransaction from the mempool", "getrawtransaction", txid, 1)
    step("balances with own change unconfirmed", "getbalances")
    step("send again (already in the mempool)", "sendrawtransaction", signed["hex"])
    step("confirm", "generatetoaddress", 1, OTHER)
    step("gettransaction confirmed", "gettransaction", txid)
    step("getmempoolentry after confirmation", "getmempoolentry", txid)
    step("getrawtransaction without index", "getrawtransaction", txid, 1)
    step("gettxout", "gettxout", txid, 0)
    step("send again (confirmed)", "sendrawtransaction", signed["hex"])
    step("gettransaction unknown", "gettransaction", "00" * 32)
    step("listtransactions", "listtransactions", "*", 100)
    step("createwallet second", "createwallet", "other")
    step("two wallets, no path", "getbalances")
    step("wallet path", "getbalances", wallet="pool")
    step("unknown wallet path", "getbalances", wallet="nope")
    step("loadwallet already loaded", "loadwallet", "pool")
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    binary = os.environ.get("BITCOIND")
    if not binary:
        print("set BITCOIND to a bitcoind binary", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, cookie = start_bitcoind(binary, Path(tmp))
        try:
            call = rpc_caller(url, cookie)
            version = call("getnetworkinfo")["result"]["subversion"]
            steps = session(call)
        finally:
            rpc_caller(url, cookie)("stop")
            proc.wait(60)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"node": version, "steps": steps}, indent=1) + "\n")
    print(f"{len(steps)} answers from {version} written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
