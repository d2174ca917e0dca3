"""A CPU Stratum V1 miner (``hashcoop miner``) for regtest/signet demos and
the project's integration tests.

* :mod:`hashcoop.pool.tools.miner.work`: pure job/header/share logic;
* :mod:`hashcoop.pool.tools.miner.hasher`: the nonce scan and its worker processes;
* :mod:`hashcoop.pool.tools.miner.client`: the Stratum session, its line protocol and the
  controller that ties connection, work and hashers together;
* :mod:`hashcoop.pool.tools.miner.cli`: the command line.
"""
from __future__ import annotations

from importlib import metadata


def miner_version() -> str:
    try:
        return metadata.version("hashcoop")
    except metadata.PackageNotFoundError:
        return "0"


def user_agent() -> str:
    return f"hashcoop-miner/{miner_version()}"
