"""`hashcoop ARGS` as a forked child (the crash tests' payout runs, and
the real-node payout tests' commands): the same ``hashcoop.pool.app.cli.main`` as the
command line, started from a forkserver that has the modules imported
already, so a hundred restarts take seconds, not minutes (a fresh
interpreter spends 2-7 s importing on a busy 2-core machine). The child
installs its own reactor. The parent side is ``tests.payouts.crash.ForkedCLI``."""
from __future__ import annotations

import os
import sys

PRELOAD = ["hashcoop.pool.app.cli", "hashcoop.pool.app.payouts_cli", "hashcoop.payouts.service", "hashcoop.payouts.ledger", "hashcoop.payouts.db", "hashcoop.payouts.verify", "hashcoop.payouts.read",
           "hashcoop.pool.config", "hashcoop.pool.app.service", "hashcoop.pool.rpc", "hashcoop.pool.accounting.sharelog", "hashcoop.pool.accounting.writer", "redis",
           "alembic.command", "alembic.config", "alembic.runtime.migration", "sqlite3", "sqlalchemy.dialects.sqlite", "idna",
           "twisted.web.client", "twisted.internet.epollreactor"]  # imported, not installed: each child installs its own reactor


def cli(argv: list[str], out_path: str, err_path: str, env: dict[str, str]) -> None:
    """``hashcoop ARGV``, its stdout appended to ``out_path`` and stderr to
    ``err_path``; ``env`` sets variables first (an empty value removes one)."""
    for path, fd in ((out_path, 1), (err_path, 2)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(f, fd)
        os.close(f)
    for k, v in env.items():
        if v:
            os.environ[k] = v
        else:
            os.environ.pop(k, None)
    from hashcoop.pool.app.cli import main

    sys.exit(main(argv))
