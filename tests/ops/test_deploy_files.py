"""The deployment files are valid for the tools that read them: the compose
stack for Docker Compose, the Prometheus configuration and alert rules for
promtool (with unit tests of every alert), the systemd units for
systemd-analyze; and the configuration the stack hands the pool loads."""
from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from hashcoop.pool.config import load_config
from tests.ops.tools import compose, tool
from tests.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
OPS = ROOT / "ops"
EXAMPLES = ROOT / "pool" / "examples"

SECRETS = ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
ADDRESSES = {"signet": "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
             "regtest": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
             "main": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"}
CONFIG_FOR = {"signet": "signet.toml", "regtest": "regtest.toml", "main": "mainnet.toml"}


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def env_file(tmp_path: Path, chain: str = "signet", drop: str = "", profiles: str = "") -> Path:
    """docker/example.env filled in as an operator would."""
    lines = []
    for line in (DOCKER / "example.env").read_text().splitlines():
        key = line.split("=", 1)[0]
        if key in SECRETS and key != drop:
            line = f"{key}={'ab12' * 8}"
        elif key == "POOL_ADDRESS" and drop != key:
            line = f"POOL_ADDRESS={ADDRESSES[chain]}"
        elif key == "BITCOIN_CHAIN":
            line = f"BITCOIN_CHAIN={chain}"
        elif key == "HASHCOOP_CONFIG":
            line = f"HASHCOOP_CONFIG={CONFIG_FOR[chain]}"
        lines.append(line)
    if profiles:
        lines.append(f"COMPOSE_PROFILES={profiles}")
    p = tmp_path / f"{chain}.env"
    p.write_text("\n".join(lines) + "\n")
    return p


def compose_config(env: Path, *extra: str) -> subprocess.CompletedProcess:
    return run([*compose(), "--project-directory", str(DOCKER), "-f", str(DOCKER / "compose.yaml"),
                "--env-file", str(env), *extra, "config"], cwd=DOCKER)


# -- docker compose -------------------------------------------------------------

@pytest.mark.parametrize("chain", ["signet", "regtest"])
def test_compose_file_validates_and_hands_the_pool_a_valid_configuration(tmp_path, chain):
    r = compose_config(env_file(tmp_path, chain, profiles="regtest" if chain == "regtest" else ""))
    assert r.returncode == 0, r.stderr
    stack = yaml.safe_load(r.stdout)
    services = stack["services"]
    always = {"bitcoind", "redis", "postgres", "pool", "payouts", "prometheus", "grafana"}
    regtest = {"regtest-setup", "regtest-network", "miner"}
    assert always <= set(services)
    assert all("profiles" not in services[s] for s in always)
    if chain == "regtest":
        assert regtest <= set(services)
    # (Compose v2 lists only the active profiles' services, Compose 1 all)
    assert all(services[s]["profiles"] == ["regtest"] for s in regtest & set(services))
    assert services["bitcoind"]["command"][-1] == f"-chain={chain}"
    for name in ("pool", "payouts"):
        svc = services[name]
        # the configuration file the service runs with, and the environment
        # the stack lays over it, make a valid configuration
        config_file = svc["command"][svc["command"].index("-c") + 1]
        assert config_file == f"/etc/hashcoop/{CONFIG_FOR[chain]}"
        env = {k: str(v) for k, v in svc["environment"].items() if k.startswith("HASHCOOP__")}
        cfg = load_config(EXAMPLES / CONFIG_FOR[chain], env=env)
        assert cfg.redis is not None and cfg.redis.url.startswith("redis://:")
        assert cfg.database.url.startswith("postgresql+psycopg://hashcoop:")
        assert cfg.nodes[0].url == "http://bitcoind:8332" and cfg.nodes[0].cookie_file == "/run/bitcoind/.cookie"
        assert cfg.nodes[0].zmq_hashblock == "tcp://bitcoind:28332"
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    pool = services["pool"]
    assert pool["environment"]["HASHCOOP__HTTP__OPERATOR_LISTEN"] == "tcp:8081"  # Prometheus scrapes pool:8081
    assert services["payouts"]["environment"]["HASHCOOP__PAYOUTS__METRICS_LISTEN"] == "tcp:9102"
    # Redis persists with an append-only file and never evicts
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--appendfsync everysec" in redis_cmd and "noeviction" in redis_cmd
    # bitcoind's image is built from a pinned release, checked by its hash
    args = services["bitcoind"]["build"]["args"]
    assert re.fullmatch(r"\d+\.\d+", args["BITCOIN_VERSION"]) and re.fullmatch(r"[0-9a-f]{64}", args["BITCOIN_SHA256"])
    for name in ("redis", "postgres", "prometheus", "grafana"):
        assert re.search(r":v?\d+\.\d+", services[name]["image"]), f"{name} image is not pinned: {services[name]['image']}"
    # no published port for RPC, ZMQ, the notify listener or /metrics
    published = {str(p.get("published", p) if isinstance(p, dict) else p) for s in services.values() for p in s.get("ports", [])}
    assert not any(x in p for p in published for x in ("8332", "28332", "3335", "8081", "9102"))


@pytest.mark.parametrize("missing", [*SECRETS, "POOL_ADDRESS"])
def test_compose_refuses_to_start_without_a_secret(tmp_path, missing):
    r = compose_config(env_file(tmp_path, drop=missing))
    assert r.returncode != 0
    assert missing in r.stderr


def test_no_secret_is_committed():
    example = (DOCKER / "example.env").read_text()
    for key in (*SECRETS, "POOL_ADDRESS"):
        assert re.search(rf"^{key}=$", example, re.M), f"example.env must leave {key} empty"
    tracked = run(["git", "ls-files", "docker", "ops"], cwd=ROOT).stdout.split()
    assert not [f for f in tracked if f.endswith(".env") and f != "docker/example.env"]
    assert run(["git", "check-ignore", "-q", "docker/example.env"], cwd=ROOT).returncode == 1  # not ignored
    ignored = run(["git", "check-ignore", "docker/.env", "docker/prod.env", "ops/systemd/hashcoop.env"], cwd=ROOT)
    assert len(ignored.stdout.split()) == 3


def test_bitcoind_config_gives_the_pool_what_it_needs():
    conf = (DOCKER / "bitcoin.conf").read_text()
    settings = [line.split("=", 1) for line in conf.splitlines() if "=" in line and not line.startswith("#")]
    keys = {k for k, _ in settings}
    assert {"server", "rpccookiefile", "zmqpubhashblock", "blocknotify"} <= keys
    assert dict(settings)["blocknotify"].startswith("hashcoop notify --endpoint tcp:host=pool:port=3335 ")
    assert "rpcpassword" not in keys  # cookie auth: no password in a file
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^USER hashcoop$", dockerfile, re.M) and "HEALTHCHECK" in dockerfile
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 3  # multi-stage
    assert "sha256sum -c" in dockerfile


# -- Prometheus ----------------------------------------------------------------

def test_alert_rules_are_valid():
    r = run([tool("promtool"), "check", "rules", str(OPS / "prometheus" / "alerts.yml")])
    assert r.returncode == 0, r.stdout + r.stderr


def test_alert_rules_fire_when_they_should():
    r = run([tool("promtool"), "test", "rules", str(OPS / "prometheus" / "alerts_test.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_has_a_test_and_a_runbook_section():
    rules = yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    tested = {c["alertname"] for t in yaml.safe_load((OPS / "prometheus" / "alerts_test.yml").read_text())["tests"]
              for c in t["alert_rule_test"] if c.get("exp_alerts")}
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.*)$", runbook, re.M)}
    for a in alerts:
        assert a["alert"] in tested, f"{a['alert']} has no firing case in alerts_test.yml"
        anchor = a["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in anchors, f"{a['alert']}: docs/runbook.md has no section #{anchor}"


@pytest.mark.parametrize("config", ["ops/prometheus/prometheus.yml", "docker/prometheus.yml"])
def test_prometheus_configs_are_valid(tmp_path, config):
    # laid out as installed: alerts.yml beside the configuration
    shutil.copy(ROOT / config, tmp_path / "prometheus.yml")
    shutil.copy(OPS / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    r = run([tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = {j["job_name"] for j in yaml.safe_load((ROOT / config).read_text())["scrape_configs"]}
    assert {"hashcoop-pool", "hashcoop-payouts"} <= jobs  # the job names the alerts use


# -- systemd -------------------------------------------------------------------

UNITS = ["hashcoop-pool@.service", "hashcoop-payouts.service", "hashcoop.target"]


@pytest.fixture
def unit_root(tmp_path):
    """A filesystem root with the units installed, the hashcoop executable
    where they expect it, and the system's own units (targets)."""
    analyze = tool("systemd-analyze")
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    for u in UNITS:
        shutil.copy(OPS / "systemd" / u, root / "etc/systemd/system" / u)
    exe = root / "opt/hashcoop/bin/hashcoop"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    system = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if (p / "sysinit.target").exists()), None)
    if system is None:
        pytest.fail("systemd-analyze is installed but the system's unit directory is not")
    shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    return analyze, root


def test_systemd_units_verify(unit_root):
    analyze, root = unit_root
    units = ["/etc/systemd/system/hashcoop-pool@0.service", "/etc/systemd/system/hashcoop-pool@1.service",
             "/etc/systemd/system/hashcoop-payouts.service", "/etc/systemd/system/hashcoop.target"]
    r = run([analyze, "verify", f"--root={root}", *units])
    assert r.returncode == 0, r.stderr
    # verify only warns about unknown keys or bad values: no warning at all
    assert not [line for line in r.stderr.splitlines() if "hashcoop" in line], r.stderr


@pytest.mark.parametrize("unit", ["hashcoop-pool@0.service", "hashcoop-payouts.service"])
def test_systemd_units_are_hardened(unit_root, unit):
    analyze, root = unit_root
    text = (OPS / "systemd" / unit.replace("@0", "@")).read_text()
    for setting in ("User=hashcoop", "Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=hashcoop"):
        assert setting in text
    # systemd's own exposure score, 0 (locked down) .. 10: at most 2
    r = run([analyze, "security", "--offline=true", "--threshold=20", f"--root={root}", f"/etc/systemd/system/{unit}"])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert "OK" in r.stdout.splitlines()[-1]


def test_sysusers_creates_the_dedicated_user():
    line = [x for x in (OPS / "systemd" / "hashcoop.sysusers").read_text().splitlines() if x and not x.startswith("#")]
    assert line == ['u hashcoop - "hashcoop mining pool" /var/lib/hashcoop /usr/sbin/nologin']


# -- example configurations --------------------------------------------------

@pytest.mark.parametrize("name", ["regtest", "signet", "mainnet"])
def test_example_configurations_load_and_are_commented(name):
    path = OPS / "config" / f"{name}.toml"
    assert path.resolve() == (EXAMPLES / f"{name}.toml").resolve()  # one source of truth
    cfg = load_config(path, env={})
    assert cfg.pool.network == name
    text = path.read_text()
    assert sum(1 for line in text.splitlines() if line.lstrip().startswith("#")) >= 15


def test_mainnet_example_runs_with_accounting_http_and_payout_metrics():
    cfg = load_config(EXAMPLES / "mainnet.toml", env={})
    assert cfg.redis is not None and cfg.http is not None
    assert cfg.http.operator_listen == "tcp:8081:interface=127.0.0.1"  # what ops/prometheus/prometheus.yml scrapes
    assert cfg.payouts.metrics_listen == "tcp:9102:interface=127.0.0.1"
    assert cfg.accounting.journal_fsync and cfg.stratum.max_template_age > 0


# -- the container health check ----------------------------------------------

def test_healthcheck_script(tmp_path):
    class OK(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/metrics" else 503)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), OK)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dead = free_port()
    port = server.server_address[1]
    script = str(DOCKER / "healthcheck.py")
    try:
        ok = run([sys.executable, script, f"http://127.0.0.1:{port}/metrics", f"tcp://127.0.0.1:{port}"])
        assert ok.returncode == 0, ok.stderr
        bad = run([sys.executable, script, f"http://127.0.0.1:{port}/other", f"tcp://127.0.0.1:{dead}"])
        assert bad.returncode == 1
        assert "HTTP 503" in bad.stderr and f"127.0.0.1:{dead}" in bad.stderr
        env = run([sys.executable, script], env={"HASHCOOP_HEALTHCHECK": f"tcp://127.0.0.1:{dead}", "PATH": "/usr/bin:/bin"})
        assert env.returncode == 1
    finally:
        server.shutdown()


def unit_environment(unit: str, instance: str) -> dict:
    text = (OPS / "systemd" / unit).read_text().replace("%i", instance)
    return dict(line.split("=", 2)[1:] for line in text.splitlines() if line.startswith("Environment=HASHCOOP__"))


def env_file_settings(path: Path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line.startswith("HASHCOOP__"))


def test_a_second_stratum_process_as_the_runbook_sets_it_up_collides_with_nothing():
    """hashcoop-pool@0 and @1 on the mainnet example, @1 with
    pool-1.env.example: their own instance id, journal and listeners, the
    same Redis, window and ledger."""
    c0 = load_config(EXAMPLES / "mainnet.toml", env=unit_environment("hashcoop-pool@.service", "0"))
    c1 = load_config(EXAMPLES / "mainnet.toml", env={**unit_environment("hashcoop-pool@.service", "1"),
                                                     **env_file_settings(OPS / "systemd" / "pool-1.env.example")})

    def listeners(c):
        ports = {("stratum", p.port) for p in c.stratum.ports}
        return ports | {("tcp", re.match(r"tcp:(\d+)", e).group(1)) for e in (c.http.listen, c.http.operator_listen, c.work.notify_listen)}

    assert (c0.pool.instance_id, c1.pool.instance_id) == (0, 1)
    assert c0.pool.data_dir != c1.pool.data_dir
    assert not listeners(c0) & listeners(c1)
    assert c0.redis == c1.redis and c0.accounting == c1.accounting and c0.database == c1.database
    assert c0.pool.address == c1.pool.address
    # the second operator listener is the one the runbook has Prometheus scrape
    assert c1.http.operator_listen == "tcp:8091:interface=127.0.0.1"
    assert "127.0.0.1:8091" in (ROOT / "docs" / "runbook.md").read_text()


# -- Grafana -------------------------------------------------------------------

def test_grafana_dashboard_is_well_formed_and_its_queries_parse(tmp_path):
    """Unique panel ids, every query on the datasource variable, and every
    PromQL expression valid (promtool parses them as recording rules, with
    Grafana's variables filled in)."""
    dash = json.loads((OPS / "grafana" / "hashcoop.json").read_text())
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource", "instance"]
    exprs = []
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            exprs.append(t["expr"])
    filled = [e.replace("$instance", ".*").replace("$__range", "1h") for e in exprs]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(filled)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    r = run([tool("promtool"), "check", "rules", str(path)])
    assert r.returncode == 0, r.stdout + r.stderr
    # the docker stack provisions it from this file, with the datasource it names
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/hashcoop.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert "../ops/grafana/hashcoop.json:/var/lib/grafana/dashboards/hashcoop.json:ro" in (DOCKER / "compose.yaml").read_text()
