"""Alembic environment for the payout ledger. Run through
``hashcoop.payouts.db.migrate`` (``hashcoop payouts migrate``), which hands over an
open connection in ``config.attributes["connection"]``."""
from __future__ import annotations

from alembic import context

from hashcoop.payouts.models import Base

target_metadata = Base.metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run the ledger migrations with `hashcoop payouts migrate` (hashcoop.payouts.db.migrate)")
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


run()
