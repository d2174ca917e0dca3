#!/usr/bin/env python3
"""Container health check for hashcoop processes (standard library only).

Checks every address given as arguments, or in HASHCOOP_HEALTHCHECK
(space-separated), and exits 0 when all answer:

* ``http://host:port/path`` -- a GET must answer 200 (the pool's operator
  listener serves /metrics; the payout service's metrics_listen too);
* ``tcp://host:port`` -- a TCP connection must be accepted (Stratum).

With nothing to check it exits 0. Exit 1 names what failed.
"""
from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 5.0


def check(address: str, timeout: float = TIMEOUT) -> str | None:
    """None when ``address`` answers, else what went wrong."""
    url = urllib.parse.urlsplit(address)
    try:
        if url.scheme in ("http", "https"):
            with urllib.request.urlopen(address, timeout=timeout) as r:
                if r.status != 200:
                    return f"{address}: HTTP {r.status}"
            return None
        if url.scheme == "tcp" and url.hostname and url.port:
            with socket.create_connection((url.hostname, url.port), timeout=timeout):
                return None
        return f"{address}: not an http:// or tcp://host:port address"
    except urllib.error.HTTPError as e:
        return f"{address}: HTTP {e.code}"
    except (OSError, ValueError) as e:
        return f"{address}: {e}"


def main(argv: list[str]) -> int:
    addresses = argv or os.environ.get("HASHCOOP_HEALTHCHECK", "").split()
    problems = [p for p in (check(a) for a in addresses) if p]
    for p in problems:
        print(f"unhealthy: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
