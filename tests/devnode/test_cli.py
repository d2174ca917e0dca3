"""``hashcoop devnode`` as a subprocess: --print-ready, cookie auth, stop
by RPC and by SIGTERM, option checking."""
from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hashcoop.pool.app.cli", "devnode", "--rpcport", "0", "--datadir", str(tmp_path / "node"), "--print-ready", "--mempool-rate", "0", "--log-level", "WARNING", *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise AssertionError(f"devnode did not get ready: {proc.stderr.read()}")
    return proc, json.loads(line)


def call(info: dict, method: str, params=None, auth: str | None = None) -> tuple[int, dict | None]:
    auth = auth if auth is not None else Path(info["cookie"]).read_text()
    req = urllib.request.Request(
        info["rpc_url"],
        data=json.dumps({"method": method, "params": params or [], "id": 1}).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(auth.encode()).decode(), "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, json.loads(body) if body else None


def test_print_ready_cookie_and_sigterm(tmp_path):
    proc, info = start(tmp_path, "--initial-blocks", "5")
    try:
        assert info["ready"] is True and info["height"] == 5
        assert info["rpc_url"] == f"http://127.0.0.1:{info['rpcport']}/"
        cookie = Path(info["cookie"])
        assert cookie == (tmp_path / "node" / "regtest" / ".cookie").resolve()
        assert cookie.read_text().startswith("__cookie__:") and len(cookie.read_text()) == len("__cookie__:") + 64
        assert call(info, "getblockcount") == (200, {"result": 5, "error": None, "id": 1})
        assert call(info, "getblockcount", auth="__cookie__:" + "0" * 64) == (401, None)
        assert info["faucet_address"].startswith("bcrt1q")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert not cookie.exists()


def test_stop_rpc_ends_the_process(tmp_path):
    proc, info = start(tmp_path, "--initial-blocks", "0", "--rpcuser", "u", "--rpcpassword", "p")
    try:
        assert info["cookie"] is None
        assert call(info, "getblockchaininfo", auth="u:p")[1]["result"]["blocks"] == 0
        assert call(info, "stop", auth="u:p")[1]["result"] == "Bitcoin Core stopping"
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_persist_across_processes(tmp_path):
    proc, info = start(tmp_path, "--initial-blocks", "3", "--persist")
    try:
        hashes = call(info, "generatetoaddress", [2, info["faucet_address"]])[1]["result"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    proc, info = start(tmp_path, "--initial-blocks", "3", "--persist")
    try:
        assert info["height"] == 5
        assert call(info, "getbestblockhash")[1]["result"] == hashes[-1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_help_documents_the_stand_in_extensions():
    out = subprocess.run([sys.executable, "-m", "hashcoop.pool.app.cli", "devnode", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("--rpcbind", "--rpcport", "--datadir", "--rpcuser", "--rpcpassword", "--zmqpubhashblock", "--blocknotify"):
        assert flag in out.stdout
    options = {block.split()[0]: block for block in re.split(r"\n  (?=-)", out.stdout) if block.startswith("--")}
    for flag in ("--bits", "--initial-blocks", "--mempool-rate", "--auto-mine", "--persist", "--print-ready", "--longpoll-mempool-wait"):
        assert "[stand-in]" in options[flag], flag
    assert "[stand-in]" not in options["--rpcport"]
    assert "stand-in extensions" in out.stdout


@pytest.mark.parametrize("args", [["--bits", "217fffff"], ["--bits", "xyz"], ["--rpcport", "-1"], ["--mempool-rate", "-2"]])
def test_bad_options_are_refused(tmp_path, args):
    out = subprocess.run([sys.executable, "-m", "hashcoop.pool.app.cli", "devnode", "--datadir", str(tmp_path), *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "devnode" in out.stderr


def test_port_in_use(tmp_path):
    proc, info = start(tmp_path, "--initial-blocks", "0")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "hashcoop.pool.app.cli", "devnode", "--rpcport", str(info["rpcport"]), "--datadir", str(tmp_path / "other"), "--initial-blocks", "0"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 1 and "cannot listen" in out.stderr
        assert not (tmp_path / "other" / "regtest" / ".cookie").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
