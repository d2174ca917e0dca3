"""Backpressure and cost per byte on real sockets (issue 14; RELIABILITY.md,
"Backpressure and cost per byte"). The server is the pool's StratumServer
in its own process (tests/hostile/serve.py), measured from outside: its
CPU seconds (getrusage), its RSS, the bytes it holds unsent for the
connections it is not reading. The peers are tests/hostile/peers.py, one
class of input each; the honest miners tests/hostile/swarm.py."""
from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time

import orjson
import pytest

from hashcoop.stratum.protocol import FLUSH_EVERY
from tests.hostile.conftest import full
from tests.hostile.peers import ADDR, CLASSES, NO_REPLY, feed
from tests.hostile.swarm import Swarm
from tests.hostile.test_connections import server  # noqa: F401  (the fixture)
from tests.procs import ROOT

pytestmark = pytest.mark.hostile

# CPU seconds the pool may spend per MB of a class of input
BUDGET_NO_REPLY = 0.1  # input that gets no answer (the figure)
BUDGET_ANSWERED = 0.25  # input answered line by line (parse, reply, write)
LIFTED = {"request_rate": 1e6, "request_burst": 1_000_000, "flood": {"enabled": False}}
MB = 1_000_000


def _cpu_per_mb(srv, cls: str, total: int, src: str, **kw) -> tuple[float, dict]:
    before = srv.stats()["cpu"]
    res = feed("127.0.0.1", srv.port, cls, total, src=src, **kw)
    time.sleep(0.2)  # the pool finishes what it read
    return (srv.stats()["cpu"] - before) / (res["sent"] / MB), res


def test_every_input_class_costs_little_per_byte_even_with_the_request_budget_lifted(server, figures):
    """What each class costs the pool to read and handle, byte for byte:
    with the request budget lifted and the flood policy off, so that every
    line sent is handled (the defaults close such peers long before)."""
    srv = server(stratum=dict(LIFTED))
    total = (8 if full() else 2) * MB
    rows = {}
    for i, cls in enumerate(sorted(CLASSES)):
        cost, res = _cpu_per_mb(srv, cls, total, f"127.0.5.{i + 1}")
        budget = BUDGET_NO_REPLY if cls in NO_REPLY else BUDGET_ANSWERED
        rows[cls] = {"cpu_s_per_mb": round(cost, 4), "budget": budget, "sent": res["sent"],
                     "out_per_in": round(res["received"] / res["sent"], 3), "replies": res["lines"],
                     "errors": res["errors"], "connections": res["connections"], "ended": res["ended"]}
    st = srv.stats()
    figures("cost-per-byte-budget-lifted", classes=rows, rss=st["rss"], disconnects=st["disconnects"])
    over = {c: r["cpu_s_per_mb"] for c, r in rows.items() if r["cpu_s_per_mb"] > r["budget"]}
    assert not over, f"over budget (CPU s/MB): {over}"
    for cls in NO_REPLY:
        assert rows[cls]["replies"] == 0
    # answered classes are answered; the ones that are never valid are closed at their first line
    for cls in ("subscribe", "authorize", "configure", "suggest-difficulty", "extranonce-subscribe", "unknown-method",
                "rejected-submit"):
        assert rows[cls]["replies"] > 1000, (cls, rows[cls])
    for cls, reason in (("bad-json", "bad-json"), ("oversized-number", "bad-json"), ("deep-nesting", "bad-json"),
                        ("endless-line", "line-too-long")):
        assert rows[cls]["replies"] == 0 and st["disconnects"].get(f"reason={reason}", 0) >= rows[cls]["connections"]


def test_with_the_default_budgets_every_class_is_answered_or_closed_and_costs_little(server, figures):
    """The pool as deployed: requests past the budget refused, then the
    connection closed (request-rate), rejected submits closed by the flood
    policy; what each class costs per MB a peer sends, and what it sees."""
    srv = server()
    total = (4 if full() else 1) * MB
    rows = {}
    for i, cls in enumerate(sorted(CLASSES)):
        cost, res = _cpu_per_mb(srv, cls, total, f"127.0.6.{i + 1}")
        closed = sum(n for how, n in res["ended"].items() if how in ("eof", "reset"))
        rows[cls] = {"cpu_s_per_mb": round(cost, 4), "sent": res["sent"], "replies": res["lines"], "errors": res["errors"],
                     "connections": res["connections"], "closed_by_pool": closed, "ended": res["ended"]}
    st = srv.stats()
    figures("cost-per-byte-defaults", classes=rows, disconnects=st["disconnects"], requests_refused=st["requests_refused"])
    for cls, r in rows.items():
        budget = BUDGET_NO_REPLY if cls in NO_REPLY else BUDGET_ANSWERED
        assert r["cpu_s_per_mb"] <= budget, (cls, r)
        assert r["closed_by_pool"] >= 1, (cls, r)  # a megabyte of any of them ends in a close
    # requests: the first ones answered, then refused with error 20, then closed
    for cls in ("subscribe", "authorize", "unknown-method", "extranonce-subscribe", "configure"):
        assert rows[cls]["replies"] >= 100 and rows[cls]["errors"] >= 100, (cls, rows[cls])
    assert st["disconnects"].get("reason=request-rate", 0) >= 8
    assert st["disconnects"].get("reason=reject-rate", 0) + st["disconnects"].get("reason=flood", 0) >= 1


@pytest.mark.parametrize("cls", ["subscribe", "unknown-method", "suggest-difficulty", "authorize"])
def test_a_peer_that_never_reads_makes_the_pool_hold_little_and_is_closed(server, figures, cls):
    """The issue's 8 MB of subscribe lines with nothing read: the pool stops
    reading once output_pause_bytes are unsent, holds no more, and closes
    the connection once it has taken nothing for output_stall_timeout.
    With the request budget lifted: backpressure alone bounds it."""
    srv = server(stratum=dict(LIFTED, output_stall_timeout=3.0))
    rss0 = srv.stats()["rss"]
    samples = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            samples.append(srv.stats())
            time.sleep(0.1)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    try:
        # the peer waits longer than the pool's stall timeout before it reads anything
        # one connection, offered more than the kernel's socket buffers take on loopback (some 10 MB
        # both ways), that reads nothing for longer than the pool's stall timeout
        res = feed("127.0.0.1", srv.port, cls, 256 * MB, read=False, src="127.0.7.1", stall=6.0, timeout=120,
                   connections=1)
    finally:
        done.set()
        w.join()
    st = srv.stats()
    held = max(s["output_held"] for s in samples)
    rss = max(s["rss"] for s in samples) - rss0
    figures("peer-never-reads", cls=cls, sent=res["sent"], ended=res["ended"], held_max=held, rss_growth=rss, pauses=st["output_pauses"], disconnects=st["disconnects"])
    assert res["sent"] < 256 * MB and res["ended"] == {"reset": 1}, res  # cut off by the pool, unread
    assert st["output_pauses"] >= 1 and max(s["blocked"] for s in samples) == 1
    # held: the pause bound plus at most one flush of replies (FLUSH_EVERY; a reply < 2 KB)
    assert 0 < held <= 65536 + FLUSH_EVERY * 2048, held
    assert rss < 8 << 20, rss  # the issue saw 16 MB held for 8 MB sent
    assert res["connections"] == 1 and st["disconnects"].get("reason=output-stalled") == 1
    assert st["blocked"] == 0 and st["sessions"] == 0


def _line(sock_file) -> dict:
    return orjson.loads(sock_file.readline())


def _share(en2_size: int, notify: list, en2: int) -> list:
    """Any nonce: the test pool's difficulty (1e-12) takes every hash."""
    job_id, ntime = notify[0], notify[7]
    return [f"{ADDR}.garbage", job_id, en2.to_bytes(en2_size, "big").hex(), ntime, struct.pack(">I", en2).hex()]


def test_a_share_followed_by_garbage_in_one_write_gets_its_reply_then_a_fin(server):
    """The issue's lost reply: the share is credited, its ``true`` arrives,
    then the pool's FIN (an orderly end of stream, not a reset)."""
    srv = server()
    n = 20
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        f = s.makefile("rb")
        s.sendall(b'{"id":1,"method":"mining.subscribe","params":[]}\n'
                  b'{"id":2,"method":"mining.authorize","params":["' + ADDR.encode() + b'.garbage","x"]}\n')
        msgs = [_line(f) for _ in range(4)]  # subscribe reply, authorize reply, set_difficulty, notify
        sub = next(m for m in msgs if m.get("id") == 1)["result"]
        notify = next(m for m in msgs if m.get("method") == "mining.notify")["params"]
        share = _share(sub[2], notify, i + 1)
        s.sendall(orjson.dumps({"id": 99, "method": "mining.submit", "params": share}) + b"\ngarbage\n")
        assert _line(f) == {"id": 99, "result": True, "error": None}
        assert f.readline() == b""  # end of stream: a FIN; a reset would raise ConnectionResetError
        s.close()
    st = srv.stats()
    assert st["accepted"] == n and st["disconnects"]["reason=bad-json"] == n


HOSTILE_TEN = [  # (class, reads its replies)
    ("subscribe", False), ("suggest-difficulty", False), ("unknown-method", False), ("blank", True),
    ("whitespace", True), ("reply-shaped", True), ("rejected-submit", False), ("endless-line", True),
    ("deep-nesting", True), ("authorize", False),
]


def test_ten_hostile_peers_beside_honest_miners(server, figures):
    """Ten slow or hostile peers at once, each its own process, while honest
    miners keep submitting: their reply times hold (full scale: 1,000
    miners, p99 under 10 ms)."""
    n_miners, seconds = (1000, 20.0) if full() else (200, 6.0)
    srv = server(stratum={"max_connections_per_ip": 10_000, "output_stall_timeout": 3.0})
    sw = Swarm("127.0.0.1", srv.port)
    miners = sw.add(n_miners, "miner", src=[f"127.0.{8 + i // 250}.{1 + i % 250}" for i in range(n_miners)],
                    interval=1.0)
    assert sw.run_until(lambda: all(m.ready for m in miners), 60)
    sw.run_for(2.0)
    for m in miners:
        m.latencies.clear()
    sw.run_for(seconds)
    baseline = [x for m in miners for x in m.latencies]
    for m in miners:
        m.latencies.clear()
    rss0 = srv.stats()["rss"]
    peers = [subprocess.Popen([sys.executable, "-m", "tests.hostile.peers", "127.0.0.1", str(srv.port), "--cls", cls,
                               "--bytes", str(1 << 40), "--src", f"127.0.20.{i + 1}", "--timeout", str(seconds),
                               "--stall", "1.0", "--nice", "10"] + ([] if reads else ["--no-read"]),
                              cwd=ROOT, stdout=subprocess.PIPE)
             for i, (cls, reads) in enumerate(HOSTILE_TEN)]
    sw.run_for(seconds)
    during = [x for m in miners for x in m.latencies]
    st = srv.stats()
    results = []
    for p in peers:
        try:
            out = p.communicate(timeout=120)[0]
        except subprocess.TimeoutExpired:
            p.kill()
            out = p.communicate()[0]
        results.append(json.loads(out) if out.strip() else {"error": p.returncode})
    sw.close()
    b50, b99 = Swarm.percentile(baseline, 0.5), Swarm.percentile(baseline, 0.99)
    d50, d99 = Swarm.percentile(during, 0.5), Swarm.percentile(during, 0.99)
    figures("ten-hostile-peers", miners=n_miners, seconds=seconds, baseline_p50_ms=round(b50 * 1e3, 2),
            baseline_p99_ms=round(b99 * 1e3, 2), during_p50_ms=round(d50 * 1e3, 2), during_p99_ms=round(d99 * 1e3, 2),
            replies_during=len(during), rss_growth=st["rss"] - rss0, disconnects=st["disconnects"],
            peers={r.get("cls", "?"): {k: r.get(k) for k in ("sent", "received", "connections", "ended", "stalled")}
                   for r in results})
    assert all("sent" in r for r in results), results
    assert len(during) > 0.8 * len(baseline), "the miners kept getting replies"
    assert all(m.rejected == 0 and m.state == "open" for m in miners)
    assert st["rss"] - rss0 < 64 << 20
    if full():
        assert d99 < 0.010, (b99, d99)
    else:
        # Fast scale is a correctness check, not a benchmark: on a 2-core CI
        # machine the ten peer processes and the swarm share the pool's cores,
        # so medians move with the load (a CI run saw 0.34 -> 3.87 ms). What
        # must not happen is a hostile peer holding the reactor: before issue
        # 14, blank lines alone pushed honest replies to 110-200 ms.
        assert d99 < 0.100, (b50, d50, b99, d99)
