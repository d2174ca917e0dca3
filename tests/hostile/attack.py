"""Attackers in their own process, so that the miners a test measures do
not share an event loop (or the GIL) with them:

    python -m tests.hostile.attack HOST PORT --mode flood --concurrency 4 --seconds 3

keeps ``concurrency`` connections of ``mode`` (see swarm.MODES) open for
``seconds``, replacing each one the server closes (at most ``--rate`` new
ones a second), then prints one JSON
line: attackers, how each ended, the most bytes one got into the socket."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tests.hostile.swarm import Swarm


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--mode", default="flood")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--src", default="127.0.2.1")
    ap.add_argument("--limit", type=int, default=10 * 2**20)
    ap.add_argument("--rate", type=float, default=0.0, help="new attackers per second at most (0: as fast as they are cut off)")
    ap.add_argument("--nice", type=int, default=0, help="lower this process's priority: the attacker stands for other machines")
    a = ap.parse_args(argv)
    if a.nice:
        os.nice(a.nice)
    sw = Swarm(a.host, a.port)
    conns = []
    t0 = time.monotonic()
    while (now := time.monotonic()) - t0 < a.seconds:
        live = sum(c.state != "closed" for c in conns)
        room = a.concurrency - live
        if a.rate:
            room = min(room, int((now - t0) * a.rate) + 1 - len(conns))
        if room > 0:
            conns += sw.add(room, a.mode, src=a.src, payload=b"A" * 65536, limit=a.limit)
        sw.step(0.005)
    sw.run_until(lambda: all(c.state == "closed" for c in conns), 10)
    ended: dict[str, int] = {}
    for c in conns:
        ended[str(c.closed_by)] = ended.get(str(c.closed_by), 0) + 1
    print(json.dumps({"attackers": len(conns), "ended": ended, "max_bytes": max((c.bytes_sent for c in conns), default=0),
                      "total_bytes": sum(c.bytes_sent for c in conns), "seconds": time.monotonic() - t0}), flush=True)
    sw.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
