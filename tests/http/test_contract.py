"""The OpenAPI file (docs/api/openapi.yaml) against the live API of a pool
that has mined: every response of every operation must match it (status
code documented, content type, schema; bad input answered 4xx, never 5xx).
Generated inputs (schemathesis) and known-good ones (real addresses,
workers and blocks from the mining run)."""
from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.http.rig import TOKEN, UNKNOWN, A, B

pytestmark = pytest.mark.slow

SPEC = Path(__file__).resolve().parents[2] / "docs" / "api" / "openapi.yaml"
schema = schemathesis.openapi.from_path(SPEC)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@schema.auth()
class OperatorToken:
    """The operator endpoints on the public port need the bearer token;
    schemathesis adds it (and leaves it out when it tests that it is needed)."""

    def get(self, case, ctx):
        return TOKEN

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def test_spec_is_valid_openapi():
    import yaml
    from openapi_spec_validator import validate

    validate(yaml.safe_load(SPEC.read_text()))


@schema.exclude(path="/metrics").parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_generated_requests_get_documented_answers(case, rig):
    # An address is checked beyond what a schema can say (checksum, the
    # pool's network): a schema-valid string may rightly get 400 there.
    excluded = [positive_data_acceptance] if "{address}" in case.operation.path else []
    case.call_and_validate(base_url=rig.public, excluded_checks=excluded)


def _blocks(rig):
    status, body = rig.json("/api/v1/blocks?limit=3")
    assert status == 200
    return [b["hash"] for b in body["blocks"]]


KNOWN = [
    ("/api/v1/pool", {}, {}),
    ("/api/v1/pool/hashrate", {}, {"resolution": "10s"}),
    ("/api/v1/blocks", {}, {"limit": 2, "offset": 1}),
    ("/api/v1/window", {}, {}),
    ("/api/v1/addresses/{address}", {"address": A}, {}),
    ("/api/v1/addresses/{address}", {"address": B}, {}),
    ("/api/v1/addresses/{address}", {"address": UNKNOWN}, {}),
    ("/api/v1/addresses/{address}", {"address": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"}, {}),
    ("/api/v1/addresses/{address}/hashrate", {"address": A}, {"resolution": "5m"}),
    ("/api/v1/addresses/{address}/workers/{worker}", {"address": A, "worker": "rig1"}, {}),
    ("/api/v1/addresses/{address}/workers/{worker}", {"address": A, "worker": "nosuch"}, {}),
    ("/api/v1/addresses/{address}/workers/{worker}/hashrate", {"address": A, "worker": "rig2"}, {"resolution": "10s"}),
    ("/api/v1/operator/status", {}, {}),
    ("/api/v1/operator/sessions", {}, {"limit": 5}),
    ("/api/v1/operator/withholding", {}, {}),
    ("/api/v1/operator/withholding", {}, {"limit": 1}),
]


@pytest.mark.parametrize("path,params,query", KNOWN)
def test_known_requests_match_the_spec(rig, path, params, query):
    case = schema[path]["GET"].Case(path_parameters=params, query=query)
    response = case.call_and_validate(base_url=rig.public, headers=AUTH)
    assert response.status_code in (200, 400, 404)


def test_every_found_block_matches_the_spec(rig):
    for h in _blocks(rig):
        case = schema["/api/v1/blocks/{hash}"]["GET"].Case(path_parameters={"hash": h})
        assert case.call_and_validate(base_url=rig.public).status_code == 200
