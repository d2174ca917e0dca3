"""The benchmark's load generator counts right: its helpers, and the
generator itself driving a real Stratum server over loopback (the server
runs on its own reactor in a thread). Correctness only: no timings."""
from __future__ import annotations

import io
import math
import random
import threading
import time

import orjson
import pytest

from hashcoop.pool.core.btc.address import address_to_script, get_network
from hashcoop.pool.core.events import MemorySink
from hashcoop.pool.core.jobs import JobManager
from hashcoop.pool.tools.bench.loadgen import (
    BIN_US,
    BINS,
    Generator,
    count_replies,
    hist_add,
    hist_compact,
    hist_merge,
    hist_percentile,
    quick_notify,
    reply_id,
    split_lines,
    submit_line,
    submit_parts,
)
from hashcoop.stratum.server import StratumServer
from tests.stratum.harness import ADDR, config, template

# -- helpers ------------------------------------------------------------------------------


def test_submit_line_is_the_share_it_means():
    head, mid = submit_parts(ADDR + ".m7", "0000abcd", "6b077bff")
    line = submit_line(head, mid, 0x1F, 8, 0xDEADBEEF, 42)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    msg = orjson.loads(line)
    assert msg == {"method": "mining.submit", "id": 42,
                   "params": [ADDR + ".m7", "0000abcd", "0000001f", "6b077bff", "deadbeef"]}
    # extranonce2 takes the session's size; nonces keep their leading zeros
    msg = orjson.loads(submit_line(head, mid, 5, 16, 7, 3))
    assert msg["params"][2] == "0000000000000005" and msg["params"][4] == "00000007"


def test_reply_counting_and_ids():
    chunk = (b'{"id":3,"result":true,"error":null}\n'
             b'{"id":4,"result":false,"error":[23,"Low difficulty share",null]}\n'
             b'{"id":"x","result":false,"error":[21,"Stale job",null]}\n'
             b'{"id":5,"result":true,"error":null}\n')
    assert count_replies(chunk) == (2, 2, {23: 1, 21: 1})
    assert [reply_id(x) for x in chunk.split(b"\n")[:4]] == [3, 4, None, 5]
    assert reply_id(b'{"result":true,"id":9,"error":null}') == 9
    assert split_lines(b'{"id":1}\n{"id"') == (b'{"id":1}\n', b'{"id"')
    assert split_lines(b"partial") == (b"", b"partial")


def test_quick_notify_agrees_with_a_full_parse():
    jobs = JobManager(payout_script=address_to_script(ADDR, get_network("regtest")), tag=b"/t/", extranonce_size=8,
                      now=lambda: 1795651986.0, first_seq=5)
    job, _ = jobs.new_job(template(), True)
    for clean in (True, False):
        line = job.notify_line(clean).rstrip(b"\n")
        params = orjson.loads(line)["params"]
        assert quick_notify(line) == (params[1], clean)
    assert quick_notify(b'{"id":null,"method":"mining.set_difficulty","params":[1]}') is None
    assert quick_notify(b'{"id":null,"method":"mining.notify","params":["01","zz"]}') is None


def test_histogram_percentiles():
    hist = [0] * (BINS + 1)
    values = [random.Random(1).uniform(0, 0.05) for _ in range(10_000)]
    for v in values:
        hist_add(hist, v)
    merged = hist_merge([hist_compact(hist[: BINS // 2] + [0] * (BINS - BINS // 2 + 1)),
                         hist_compact([0] * (BINS // 2) + hist[BINS // 2:])])
    assert merged == hist
    exact = sorted(values)
    for q in (0.5, 0.9, 0.99, 1.0):
        want = exact[math.ceil(q * len(exact)) - 1]
        got = hist_percentile(hist, q)
        assert want <= got <= want + BIN_US / 1e6 + 1e-12  # the upper edge of the value's bin
    hist_add(hist, 10.0)
    assert hist_percentile(hist, 1.0) == math.inf
    assert hist_percentile([0] * (BINS + 1), 0.5) is None


# -- the generator against a real server ---------------------------------------------------


class ThreadedPool:
    """A StratumServer on a reactor of its own, running in a thread."""

    def __init__(self, difficulty: float):
        from twisted.internet.epollreactor import EPollReactor

        from tests.procs import free_port

        self.reactor = EPollReactor()
        self.port = free_port()
        cfg = config(ports=[{"port": self.port, "bind": "127.0.0.1", "start_difficulty": difficulty,
                             "min_difficulty": difficulty, "max_difficulty": 1e6, "vardiff": False}],
                     max_connections_per_ip=10_000)
        self.sink = MemorySink()
        self.jobs = JobManager(payout_script=address_to_script(ADDR, get_network("regtest")), tag=b"/t/",
                               extranonce_size=8, now=self.reactor.seconds, first_seq=1000)
        self.server = StratumServer(reactor=self.reactor, config=cfg, jobs=self.jobs, sink=self.sink)
        self.server.on_template(template(network_diff=1e9), True)
        self.server.startService()
        self.thread = threading.Thread(target=self.reactor.run, kwargs={"installSignalHandlers": False}, daemon=True)
        self.thread.start()

    def call(self, fn, *args):
        done = threading.Event()
        out = []

        def run():
            try:
                out.append(fn(*args))
            finally:
                done.set()

        self.reactor.callFromThread(run)
        assert done.wait(30)
        return out[0] if out else None

    def stop(self):
        self.call(self.server.stopService)
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(30)


class Driver:
    """Runs the generator's loop in this thread and collects its answers."""

    def __init__(self):
        self.out = io.StringIO()
        self.gen = Generator(out=self.out)
        self.read = 0

    def call(self, timeout: float = 60, **cmd) -> dict:
        self.gen.command(cmd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.out.getvalue()[self.read:]
            if "\n" in text:
                line = text[:text.index("\n") + 1]
                self.read += len(line)
                reply = orjson.loads(line)
                assert reply["ok"], reply
                return reply
            self.gen.step(0.01)
        raise AssertionError(f"no answer to {cmd['cmd']} within {timeout}s")

    def close(self):
        self.gen.command({"cmd": "close"})


@pytest.fixture
def tiny():
    pool = ThreadedPool(1e-12)
    yield pool
    pool.stop()


def users(n):
    return [f"{ADDR}.m{i}" for i in range(n)]


def test_every_accepted_share_is_counted_once(tiny):
    d = Driver()
    r = d.call(cmd="connect", host="127.0.0.1", port=tiny.port, users=users(20), wave=7)
    assert r["miners"] == 20 and r["failed"] == 0
    info = d.call(cmd="info")
    assert len(set(info["extranonce1"])) == 20
    res = d.call(cmd="saturate", depth=3, seconds=1.0)
    assert res["accepted"] > 20 and res["rejected"] == 0 and res["inflight"] == 0
    assert res["sent"] == res["accepted"]
    assert sum(res["per_second"].values()) == res["accepted"]
    assert tiny.call(lambda: tiny.sink.accepted_count) == res["accepted"]
    # every share was distinct work, credited to the worker that sent it
    accepted = tiny.call(lambda: list(tiny.sink.accepted))
    assert len({s.hash for s in accepted}) == len(accepted)
    assert {s.worker for s in accepted} == {f"m{i}" for i in range(20)}
    d.close()


def test_random_nonces_at_difficulty_one_are_rejected_as_high_hash():
    pool = ThreadedPool(1.0)
    try:
        d = Driver()
        d.call(cmd="connect", host="127.0.0.1", port=pool.port, users=users(5))
        res = d.call(cmd="saturate", depth=2, seconds=0.5)
        assert res["rejected"] > 0 and res["accepted"] == 0
        assert res["codes"] == {"23": res["rejected"]}
        assert pool.call(lambda: pool.sink.rejected_by_reason["high-hash"]) == res["rejected"]
        d.close()
    finally:
        pool.stop()


def test_fixed_rate_measures_every_reply(tiny):
    d = Driver()
    d.call(cmd="connect", host="127.0.0.1", port=tiny.port, users=users(10))
    res = d.call(cmd="rate", rate=200, seconds=1.0, warmup=0)
    assert 150 <= res["sent"] <= 260  # the schedule, give or take the loop's turns
    assert res["accepted"] == res["sent"] and res["inflight"] == 0
    hist = hist_merge([res["hist"]])
    assert sum(hist) == res["accepted"]
    assert 0 < hist_percentile(hist, 0.5) <= hist_percentile(hist, 0.99) <= res["max"] + BIN_US / 1e6
    d.close()


def test_fanout_sees_every_miner_get_the_clean_job(tiny):
    d = Driver()
    d.call(cmd="connect", host="127.0.0.1", port=tiny.port, users=users(30))
    assert d.call(cmd="arm")["miners"] == 30
    before = time.monotonic()
    tiny.call(tiny.server.on_template, template(prev=b"\x11" * 32, network_diff=1e9), True)
    res = d.call(cmd="collect", wait=30)
    assert res["got"] == 30 and res["miners"] == 30
    assert before <= res["first"] <= res["last"]
    # a refresh on the same tip (clean_jobs false) is not a tip change
    d.call(cmd="arm")
    tiny.call(tiny.server.on_template, template(prev=b"\x11" * 32, network_diff=1e9, curtime=1795652000), False)
    res = d.call(cmd="collect", wait=0.5)
    assert res["got"] == 0
    d.close()


def test_commands_over_a_pipe():
    """The process interface: one JSON command per line in, one answer out."""
    import os

    r, w = os.pipe()
    out = io.StringIO()
    gen = Generator(out=out)
    os.write(w, b'{"cmd":"info"}\n{"cmd":"bogus"}\n{"cmd":"quit"}\n')
    os.close(w)
    gen.run(r)
    os.close(r)
    answers = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert answers[0]["ok"] and answers[0]["miners"] == 0
    assert answers[1] == {"ok": False, "error": "unknown command 'bogus'"}
    assert answers[2]["event"] == "bye"
    assert not gen.running


def test_generator_process_answers_commands():
    from hashcoop.pool.tools.bench.stack import LoadGen

    g = LoadGen(None)
    try:
        assert g.call(cmd="info", timeout=60)["miners"] == 0
        with pytest.raises(RuntimeError, match="unknown command"):
            g.call(cmd="bogus", timeout=60)
    finally:
        g.stop()
    assert g.proc.returncode == 0


def test_rate_in_bursts_sends_whole_bursts(tiny):
    d = Driver()
    d.call(cmd="connect", host="127.0.0.1", port=tiny.port, users=users(5))
    res = d.call(cmd="rate", rate=400, seconds=1.0, warmup=0, burst=4)
    assert res["sent"] % 4 == 0 and 300 <= res["sent"] <= 480
    assert res["accepted"] == res["sent"] and sum(hist_merge([res["hist"]])) == res["accepted"]
    d.close()


def test_rate_with_duplicates_sends_a_known_fraction_of_invalid_shares(tiny):
    d = Driver()
    d.call(cmd="connect", host="127.0.0.1", port=tiny.port, users=users(5))
    d.call(cmd="rate", rate=200, seconds=0.2, warmup=0)  # every miner has sent a share: the next phase can repeat it
    res = d.call(cmd="rate", rate=400, seconds=1.0, warmup=0, duplicate_every=10)
    assert res["duplicates_sent"] == res["sent"] // 10 > 20
    assert res["rejected"] == res["duplicates_sent"] and res["codes"] == {"22": res["rejected"]}
    assert res["accepted"] == res["sent"] - res["duplicates_sent"]
    assert tiny.call(lambda: tiny.sink.rejected_by_reason["duplicate"]) == res["rejected"]
    d.close()
