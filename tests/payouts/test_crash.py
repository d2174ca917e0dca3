"""Crash safety of the payment sequence on the stand-in node's wallet: the
payout process is killed (SIGKILL, from its fault-injection hook) right
after each step of the sequence -- intent, signed, stored, broadcast,
sent, confirmed -- at least 20 times each (100 in the hostile battery's
full run, HASHCOOP_HOSTILE_SCALE=full: case "payout-kill"), with new
credits coming in all the time (the harness: ``tests/payouts/crash.py``;
the same on Bitcoin Core: ``tests/realnode/test_payout_crash.py``).
Afterwards the ledger matches the wallet exactly: every address was sent
exactly what the ledger debited it, nothing twice, no balance lost."""
from __future__ import annotations

import os

import pytest

from tests.hostile.conftest import figures, full  # noqa: F401 (figures is a fixture)
from tests.payouts.crash import WalletNode, crash_run, forkserver, postgres_schema  # noqa: F401 (forkserver is a fixture)
from tests.payouts.rig import wallet_node

pytestmark = [pytest.mark.slow, pytest.mark.hostile]
KILLS_PER_STEP = 100 if full() else 20
PG_KILLS_PER_STEP = 100 if full() else 3  # fewer in CI: the SQLite run is the long one
PG_URL = os.environ.get("HASHCOOP_TEST_DATABASE_URL", "")


@pytest.fixture
def stand_in(tmp_path):
    node, pool_address = wallet_node(tmp_path / "node")
    yield WalletNode(node.url, node.cookie_path, pool_address, node.rpc, node.rpc)
    node.close()


def test_kill_at_every_step_of_the_payment_sequence(tmp_path, forkserver, figures, stand_in):
    out = crash_run(tmp_path, forkserver, f"sqlite:///{tmp_path}/ledger.sqlite", KILLS_PER_STEP, "pool", stand_in)
    figures("payout-kill", database="sqlite", **out)


@pytest.mark.skipif(not PG_URL, reason="HASHCOOP_TEST_DATABASE_URL not set")
def test_kill_at_every_step_on_postgresql(tmp_path, forkserver, figures, stand_in):
    """The same on PostgreSQL (fewer kills in CI: the SQLite run is the
    long one), with the payees bearing the transaction fees."""
    with postgres_schema(PG_URL) as url:
        out = crash_run(tmp_path, forkserver, url, PG_KILLS_PER_STEP, "miners", stand_in)
    figures("payout-kill", database="postgresql", **out)
