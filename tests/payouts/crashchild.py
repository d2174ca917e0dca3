"""The payout process as a forked child for the crash tests: the same
`hashcoop payouts -c CONFIG run --once` as the command line, started from a
forkserver that has the modules imported already (so a hundred restarts take
seconds, not minutes). The child installs its own reactor."""
from __future__ import annotations

import os
import sys

PRELOAD = ["payouts.cli", "payouts.service", "payouts.ledger", "payouts.db", "payouts.verify", "pool.config", "pool.service",
           "pool.rpc", "alembic.command", "alembic.runtime.migration", "sqlalchemy.dialects.sqlite", "twisted.web.client"]


def run_once(config: str, kill_at: str, log_path: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if kill_at:
        os.environ["HASHCOOP_PAYOUTS_KILL_AT"] = kill_at
    else:
        os.environ.pop("HASHCOOP_PAYOUTS_KILL_AT", None)
    from pool.cli import main

    sys.exit(main(["payouts", "-c", config, "run", "--once"]))
