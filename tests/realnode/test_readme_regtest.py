"""README, "Running against a real bitcoind", regtest, done as written on
Bitcoin Core: bitcoind with ZMQ and ``-blocknotify`` running ``hashcoop
notify``, a wallet whose new address is the pool's, pool/examples/regtest.toml
with the edits the README names (the address, the cookie file, the ZMQ
endpoint), ``hashcoop run``, and cpuminer pointed at it as the README's
"Pointing miners at it" says. Only ports and directories differ, so that the
test runs beside anything else."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.ops.stack import http_get
from tests.procs import ROOT, PoolProcess, free_port, wait_for
from tests.realnode.rig import MINER_A, OTHER

pytestmark = pytest.mark.bitcoind(needs=("BITCOIN_CLI", "MINERD"))


def hashcoop_command() -> str:
    """The venv's console script, as the README's $PWD/.venv/bin/hashcoop."""
    script = Path(sys.executable).with_name("hashcoop")
    return str(script) if script.exists() else f"{sys.executable} -m hashcoop.pool.app.cli"


def test_the_readme_regtest_walkthrough(tmp_path, core, minerd):
    toml = tmp_path / "hashcoop.toml"
    stratum, notify, http, operator = free_port(), free_port(), free_port(), free_port()
    node = core(start=False)
    node.extra += [f"-blocknotify={hashcoop_command()} notify -c {toml} %s"]
    text = (ROOT / "pool" / "examples" / "regtest.toml").read_text()
    node.start()
    node.cli("createwallet", "pool")
    address = node.cli("-rpcwallet=pool", "getnewaddress")
    edits = {
        r'address = "bcrt1q[0-9a-z]+"': f'address = "{address}"',
        r'cookie_file = "[^"]*"': f'cookie_file = "{node.cookie}"\nzmq_hashblock = "{node.zmq}"',
        r'url = "http://127.0.0.1:18443"': f'url = "{node.url}"',
        r'data_dir = "[^"]*"': f'data_dir = "{tmp_path / "data"}"',
        r'notify_listen = "tcp:3335:interface=127.0.0.1"': f'notify_listen = "tcp:{notify}:interface=127.0.0.1"',
        r"port = 3333": f'port = {stratum}\nbind = "127.0.0.1"',
        r'listen = "tcp:8080"': f'listen = "tcp:{http}:interface=127.0.0.1"',
        r'operator_listen = "tcp:8081:interface=127.0.0.1"': f'operator_listen = "tcp:{operator}:interface=127.0.0.1"',
    }
    for pattern, value in edits.items():
        text, n = re.subn(pattern, lambda _m, v=value: v, text, count=1)
        assert n == 1, f"the example no longer has {pattern}"
    toml.write_text(text)
    pool = PoolProcess(toml, tmp_path / "pool.log", stratum)
    try:
        start = node.rpc("getblockcount")
        miner = minerd(stratum, f"{MINER_A}.cpu")
        wait_for(lambda: node.rpc("getblockcount") >= start + 3 and miner.counts()[0] >= 3, timeout=120,
                 what="cpuminer's blocks in Core's chain")
        accepted, submitted = miner.stop()
        assert accepted == submitted
        for h in range(start + 1, start + 4):
            cb = node.rpc("getblock", node.rpc("getblockhash", h), 2)["tx"][0]
            assert cb["vout"][0]["scriptPubKey"]["address"] == address, "the coinbase pays the wallet's address"
        assert node.rpc("getbalances", wallet="pool")["mine"]["immature"] > 0, "the wallet sees its coinbases"
        # a block made outside the pool: bitcoind's -blocknotify ran hashcoop notify, which reached the pool,
        # and ZMQ did too (each source's reports are counted on the operator's /metrics)
        node.cli("generatetoaddress", "1", OTHER)
        wait_for(lambda: reports(operator).get("notify", 0) >= 1 and reports(operator).get("zmq", 0) >= 1, timeout=30,
                 what=f"reports from -blocknotify and ZMQ (have {reports(operator)})")
        since = [node.rpc("getblockhash", h) for h in range(start + 1, node.rpc("getblockcount") + 1)]
        failed = [line for line in node.tail(1_000_000).splitlines() if "runCommand error" in line]
        assert not [b for b in since if any(b in line for line in failed)], failed
        text = pool.text()
        assert "invalid configuration" not in text and "Traceback" not in text, text[-2000:]
    finally:
        pool.stop()


def reports(port: int) -> dict[str, float]:
    """hashcoop_tip_reports_total by source, from the operator's /metrics."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return {m.group(1).decode(): float(m.group(2))
            for m in re.finditer(rb'hashcoop_tip_reports_total\{source="(\w+)"\} (\S+)', body)}
