"""Ledger fixtures: every ledger test runs on SQLite, and also on PostgreSQL
when HASHCOOP_TEST_DATABASE_URL is set (each test in its own schema, dropped
afterwards, so parallel runs never collide)."""
from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from hashcoop.payouts.db import make_engine, migrate

PG_URL = os.environ.get("HASHCOOP_TEST_DATABASE_URL", "")


def _backends():
    out = ["sqlite"]
    if PG_URL:
        out.append("postgresql")
    return out


class Database:
    """A migrated, empty ledger database: ``url`` and ``schema`` name it,
    ``engine()`` opens another engine on it (as another process would)."""

    def __init__(self, kind: str, tmp_path):
        self.kind = kind
        self.schema = None
        self._engines = []
        if kind == "sqlite":
            self.url = f"sqlite:///{tmp_path}/ledger.sqlite"
        else:
            self.url = PG_URL
            self.schema = "t_" + uuid.uuid4().hex[:12]
            admin = sa.create_engine(PG_URL)
            with admin.begin() as c:
                c.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
            admin.dispose()
        self.main = self.engine()
        migrate(self.main)

    def engine(self, writer: bool = True):
        e = make_engine(self.url, writer=writer, schema=self.schema)
        self._engines.append(e)
        return e

    def close(self):
        for e in self._engines:
            e.dispose()
        if self.schema:
            admin = sa.create_engine(PG_URL)
            with admin.begin() as c:
                c.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            admin.dispose()


@pytest.fixture(params=_backends())
def db(request, tmp_path):
    d = Database(request.param, tmp_path)
    yield d
    d.close()
