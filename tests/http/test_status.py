"""`hashcoop status`: the pool summary in the terminal, read from Redis and
the node, the same figures as /api/v1/pool."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.procs import ROOT

pytestmark = pytest.mark.slow


def status(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hashcoop.pool.app.cli", "status", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_status_prints_the_pool_summary(rig):
    cfg = str(rig.tmp / "pool.toml")
    _, api = rig.json("/api/v1/pool")  # first: rig1 keeps finding blocks
    res = status("-c", cfg, "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["blocks_found"] >= api["blocks_found"] >= 2
    assert s["addresses_known"] == api["addresses_known"] and s["workers_known"] == api["workers_known"]
    assert s["network"]["node"] == "node0" and s["network"]["height"] >= api["network"]["height"]
    res = status("-c", cfg)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert out.startswith("hashcoop (regtest) · ") and "H/s" in lines["Hashrate"]
    assert f"of {s['addresses_known']} known" in lines["Miners"]
    height = re.search(r"height ([0-9,]+) · difficulty \S+ \(from node0\)", lines["Network"])
    assert height and int(height.group(1).replace(",", "")) >= s["network"]["height"]
    found = re.match(r"Blocks +([0-9,]+) found · last #[0-9]+ .* by \S+\.(rig1|rig2|solo), reward", lines["Blocks"])
    assert found and int(found.group(1).replace(",", "")) >= s["blocks_found"]
    assert "unknown-job 3" in lines["Shares"]
    # regtest: every share is a block, nobody is short of blocks
    assert s["withholding"]["flagged_workers"] == 0 and s["withholding"]["workers_checked"] >= 3
    assert re.match(r"Withholding 0 of \d+ workers and 0 of \d+ addresses flagged \(alpha 0.001;", lines["Withholding"])
    # the ledger's totals
    assert s["payouts"]["blocks"]["credited"] > 0 and s["payouts"]["paid_confirmed"] > 0
    assert re.search(r"blocks \d+ maturing · [1-9]\d* credited · \d+ orphaned · owed .* BTC · paid .* BTC confirmed",
                     lines["Payouts"])

def test_status_without_redis_or_when_it_is_down(tmp_path, rig):
    text = (rig.tmp / "pool.toml").read_text()
    no_redis = tmp_path / "no-redis.toml"
    no_redis.write_text(text.split("[redis]")[0] + "[accounting]" + text.split("[accounting]", 1)[1])
    res = status("-c", str(no_redis))
    assert res.returncode == 2 and "[redis] is not configured" in res.stderr
    down = tmp_path / "down.toml"
    from tests.procs import free_port

    down.write_text(text.replace(rig.redis.url, f"redis://127.0.0.1:{free_port()}/0"))
    res = status("-c", str(down), "--no-node")
    assert res.returncode == 1 and "did not answer" in res.stderr
    res = status("-c", str(tmp_path / "missing.toml"))
    assert res.returncode == 2 and "not found" in res.stderr
