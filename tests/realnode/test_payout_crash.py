"""Crash safety of payments through Bitcoin Core's own wallet: the crash
harness of ``tests/payouts/crash.py`` (the one the stand-in runs) on a real
bitcoind. ``hashcoop payouts run --once`` is killed with SIGKILL right after
each step of the payment sequence -- intent, signed, stored, broadcast,
sent, confirmed -- 3 times a step in CI (2 on PostgreSQL), 20 at
``HASHCOOP_HOSTILE_SCALE=full`` (case "payout-kill"), with credits arriving
all along, and restarted. Afterwards Core's wallet and the ledger agree:
the pool wallet's sends (``listtransactions``) are exactly the ledger's
confirmed payments, each payee received on chain (``getreceivedbyaddress``,
its address watched by a second, watch-only wallet) exactly what the ledger
says it was paid, nothing twice, every balance settled or still owed, and
the ledger's invariants hold."""
from __future__ import annotations

import contextlib
import os
from functools import partial

import pytest

from tests.hostile.conftest import figures, full  # noqa: F401 (figures is a fixture)
from tests.payouts.crash import PAYEES, WalletNode, crash_run, forkserver, postgres_schema  # noqa: F401 (forkserver is a fixture)
from tests.realnode.core import COIN

pytestmark = [pytest.mark.bitcoind, pytest.mark.hostile]
KILLS_PER_STEP = 20 if full() else 3
PG_KILLS_PER_STEP = 20 if full() else 2
# 200 BTC pay even the full run (about 10 BTC); Core's wallet takes ~0.1-0.25 s per block paying it here
FUNDING_BLOCKS = 4
PG_URL = os.environ.get("HASHCOOP_TEST_DATABASE_URL", "")


@pytest.fixture
def core_wallet(core) -> WalletNode:
    """Core with the pool's wallet "pool" and a watch-only wallet "payees" holding the payees' addresses."""
    node = core("core")
    node.rpc("createwallet", "pool")
    node.rpc("createwallet", "payees", True, True)  # disable_private_keys, blank
    descs = [{"desc": node.rpc("getdescriptorinfo", f"addr({a})")["descriptor"], "timestamp": "now"} for a in PAYEES]
    assert all(r["success"] for r in node.rpc("importdescriptors", descs, wallet="payees"))
    return WalletNode(node.url, str(node.cookie), node.rpc("getnewaddress", wallet="pool"), node.rpc, partial(node.rpc, wallet="pool"),
                      lambda a: round(node.rpc("getreceivedbyaddress", a, 1, wallet="payees") * COIN))


# PostgreSQL only when HASHCOOP_TEST_DATABASE_URL names one: not a skipped test (a skipped bitcoind test fails the run)
@pytest.mark.parametrize("database", ["sqlite", *(["postgresql"] if PG_URL else [])])
def test_kill_at_every_step_on_cores_wallet(tmp_path, forkserver, figures, core_wallet, database):
    """SQLite with the pool bearing the transaction fees; PostgreSQL (fewer
    kills in CI) with the payees bearing them."""
    with contextlib.ExitStack() as stack:
        if database == "sqlite":
            url, kills, fee_payer = f"sqlite:///{tmp_path}/ledger.sqlite", KILLS_PER_STEP, "pool"
        else:
            url, kills, fee_payer = stack.enter_context(postgres_schema(PG_URL)), PG_KILLS_PER_STEP, "miners"
        out = crash_run(tmp_path, forkserver, url, kills, fee_payer, core_wallet, funding_blocks=FUNDING_BLOCKS)
    figures("payout-kill", node="bitcoind", database=database, **out)
