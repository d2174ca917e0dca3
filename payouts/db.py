"""Engines and migrations for the payout ledger.

SQLite (the default, one file next to the pool's data) runs in WAL mode
with ``synchronous=FULL``; a writer's transaction starts with ``BEGIN
IMMEDIATE`` so two writers never deadlock on a lock upgrade (the second
waits up to ``busy_timeout``). PostgreSQL runs at READ COMMITTED; writers
serialise on the lease row (``hashcoop.payouts.ledger``).
"""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url

MIGRATIONS = str(Path(__file__).resolve().parent / "migrations")
SQLITE_BUSY_TIMEOUT = 30.0  # seconds a SQLite writer waits for the lock; ?timeout=N in the URL overrides it


def make_engine(url: str, *, writer: bool = True, schema: str | None = None, pool_size: int = 4) -> Engine:
    """An engine for ``url``. ``writer`` False gives plain deferred
    transactions on SQLite (for readers such as the HTTP API). ``schema``
    (PostgreSQL only) puts the ledger's tables in that schema."""
    if url.startswith("sqlite"):
        u = make_url(url)
        # ?timeout=SECONDS: how long a writer waits for the write lock before
        # "database is locked" (default 30)
        busy = float(u.query.get("timeout", SQLITE_BUSY_TIMEOUT))
        u = u.difference_update_query(["timeout"])
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, connect_args={"check_same_thread": False, "timeout": busy})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine
    kw = {}
    if schema:
        kw["connect_args"] = {"options": f"-csearch_path={schema}"}
    return create_engine(url, pool_size=pool_size, max_overflow=2, pool_pre_ping=True, **kw)


def _alembic_config(connection):
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", MIGRATIONS)
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the ledger's schema to ``revision`` (idempotent)."""
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the ledger's schema back to ``revision`` (to run an older
    hashcoop on it; docs/payouts.md, "Migrations")."""
    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    return ScriptDirectory(MIGRATIONS).get_current_head()


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


def has_tables(engine: Engine) -> bool:
    return inspect(engine).has_table("blocks")
