"""Sanity checks for the miner-compatibility fixtures in tests/compat/sequences.

These do not talk to the server; they only make sure every recorded client line
is well-formed JSON once its placeholders are filled in, so that replay tests
can rely on the fixtures.
"""
import json
import re
from pathlib import Path

import pytest

SEQ_DIR = Path(__file__).resolve().parent / "sequences"
CLIENTS = ["esp-miner", "nerdminer", "cpuminer", "cgminer", "bfgminer", "braiins-os", "nicehash"]
REQUIRED_KEYS = {"client", "source", "notes", "messages", "expects", "version_bits", "difficulty"}

# Sample values: bare numeric placeholders and string placeholders (inside quotes).
SAMPLES = {
    "{ID}": "7",
    "{SUGGESTED_DIFFICULTY}": "512",
    "{USER}": "bc1qexampleworker.rig1",
    "{PASSWORD}": "x",
    "{JOB_ID}": "1a2b",
    "{EXTRANONCE2}": "00000001",
    "{NTIME}": "6650c0de",
    "{NONCE}": "0443c37b",
    "{VERSION_BITS}": "00002000",
    "{MODEL}": "BM1370",
    "{FW_VERSION}": "v2.0.0",
    "{CPUMINER_VERSION}": "2.5.1",
    "{CGMINER_AGENT}": "cgminer/4.12.1",
    "{BFG_AGENT}": "bfgminer/5.5.0",
    "{SESSION_ID}": "deadbeef",
    "{TARGET_HEX}": "00000000ffff0000000000000000000000000000000000000000000000000000",
    "{HOST_PORT}": "pool.example:3333",
    "{TIMESTAMP}": "1662637786319",
    "{HMAC}": "3e747837e632920e8cd11453c2558233e3822489a20d828fdf205a149b064afc",
}
PLACEHOLDER_RE = re.compile(r"\{[A-Z0-9_]+\}")


def fill(line: str) -> str:
    out = line
    for key, value in SAMPLES.items():
        out = out.replace(key, value)
    left = PLACEHOLDER_RE.findall(out)
    assert not left, f"unknown placeholders {left} in {line!r}"
    return out


def load(client):
    return json.loads((SEQ_DIR / f"{client}.json").read_text())


def test_all_clients_present():
    assert sorted(p.stem for p in SEQ_DIR.glob("*.json")) == sorted(CLIENTS)


@pytest.mark.parametrize("client", CLIENTS)
def test_fixture_shape(client):
    data = load(client)
    assert REQUIRED_KEYS <= set(data), REQUIRED_KEYS - set(data)
    assert data["client"] == client
    assert data["messages"], "at least one message"
    for msg in data["messages"]:
        assert "method" in msg and "line" in msg


@pytest.mark.parametrize("client", CLIENTS)
def test_lines_are_json_after_substitution(client):
    data = load(client)
    lines = [m["line"] for m in data["messages"] if m["line"] is not None]
    for variant in data.get("variants", {}).values():
        lines.extend(variant["messages"])
    for line in lines:
        obj = json.loads(fill(line))
        assert isinstance(obj, dict)
        assert "method" in obj and "params" in obj and "id" in obj


@pytest.mark.parametrize("client", CLIENTS)
def test_recorded_ids_and_methods_match_line(client):
    data = load(client)
    for msg in data["messages"]:
        if msg["line"] is None:
            continue
        obj = json.loads(fill(msg["line"]))
        assert msg["method"].split(" ")[0] == obj["method"]
        if isinstance(msg.get("id"), int):
            assert obj["id"] == msg["id"]


def test_submit_param_counts():
    """5-param vs 6-param submits as recorded from source."""
    expected = {
        "esp-miner": {6},
        "nerdminer": {5, 6},   # 6 only in NERD_NOS ASIC builds
        "cpuminer": {5},
        "cgminer": {5, 6},     # 6 only after mining.configure (USE_VMASK builds)
        "braiins-os": {6},
    }
    for client, counts in expected.items():
        seen = set()
        for msg in load(client)["messages"]:
            if msg["line"] and msg["method"].startswith("mining.submit"):
                seen.add(len(json.loads(fill(msg["line"]))["params"]))
        assert seen == counts, (client, seen)
