"""The ledger's schema: the migrations build what the models describe, the
schema itself refuses a status outside the StrEnums, and migration 0002
renames a credited block's status (``confirmed`` -> ``credited``) both ways.
On SQLite, and on PostgreSQL when HASHCOOP_TEST_DATABASE_URL is set."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hashcoop.payouts.db import current_revision, downgrade, head_revision, migrate
from hashcoop.payouts.models import Base
from hashcoop.payouts.states import BlockState, PaymentState

OLD_BLOCK = {  # a blocks row as revision 0001 stored a credited block
    "hash": "aa" * 32, "height": 7, "status": "confirmed", "reward": 5_000_000_000, "reward_source": "node",
    "finder_address": "bcrt1qexample", "finder_worker": "w", "found_time": 1.0, "imported_time": 2.0,
    "orphan_count": 0, "seq": 10, "log_from": 1, "floor_seq": 0, "partial": False, "n_target": 20.0,
    "window_total": 20.0, "complete": True, "network_difficulty": 1.0, "window_factor": 2.0,
    "window_difficulty": 1.0, "entry_shares": 1, "share_time": 1.0, "snapshot_created": 2.0,
}


def _status(engine) -> str:
    with engine.connect() as c:
        return c.execute(sa.text("SELECT status FROM blocks")).scalar_one()


def test_the_migrations_build_what_the_models_describe(db):
    assert current_revision(db.main) == head_revision() == "0002"
    with db.main.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert diff == []
    checks = {ck["name"]: ck["sqltext"] for t in ("blocks", "payments") for ck in sa.inspect(db.main).get_check_constraints(t)}
    assert set(checks) == {"ck_blocks_status", "ck_payments_status"}
    assert all(f"'{s}'" in checks["ck_blocks_status"] for s in BlockState)
    assert all(f"'{s}'" in checks["ck_payments_status"] for s in PaymentState)


@pytest.mark.parametrize("table, row_status", [("blocks", "confirmed"), ("blocks", "mature"), ("payments", "paid")])
def test_the_schema_refuses_a_status_outside_the_enums(db, table, row_status):
    with db.main.begin() as c:
        c.execute(sa.table("blocks", *[sa.column(k) for k in OLD_BLOCK]).insert().values(**{**OLD_BLOCK, "status": "pending"}))
        c.execute(sa.text("INSERT INTO payments (id, status, fee_payer, created, updated, total_sat, broadcasts) "
                          "VALUES (1, 'intent', 'pool', 1, 1, 1, 0)"))
    with pytest.raises(sa.exc.IntegrityError):
        with db.main.begin() as c:
            c.execute(sa.text(f"UPDATE {table} SET status = :s"), {"s": row_status})


def test_0002_renames_credited_blocks_and_back(db):
    downgrade(db.main, "0001")
    assert current_revision(db.main) == "0001"
    with db.main.begin() as c:
        c.execute(sa.table("blocks", *[sa.column(k) for k in OLD_BLOCK]).insert().values(**OLD_BLOCK))
        c.execute(sa.text("UPDATE blocks SET status = 'anything'"))  # 0001 held nothing to its values
        c.execute(sa.text("UPDATE blocks SET status = 'confirmed'"))
    migrate(db.main)
    assert _status(db.main) == BlockState.CREDITED
    downgrade(db.main, "0001")
    assert _status(db.main) == "confirmed"
    migrate(db.main)
    assert _status(db.main) == "credited"
