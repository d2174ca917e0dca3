"""The fault cases' rig (tests/hostile/test_faults_*.py): a real
``hashcoop run`` pool process in front of a real ``hashcoop devnode``,
optionally with a scripted JSON-RPC node between them, a scripted Stratum
client that finds blocks on demand, and readers for the pool's block
journal and its /metrics.

``ScriptedNode`` is the "tiny scripted HTTP JSON-RPC node" of the
submitblock cases: it forwards every call to the devnode untouched, except
the first submitblock of each new block, which gets the next answer from
its script -- any answer Bitcoin Core can give (a BIP22 string, an RPC
error object, HTTP 401/500, a connection reset, or no answer at all) --
and may or may not reach the devnode (a "duplicate" did, a "high-hash"
did not). The pool cannot tell it from a node: it is one.
"""
from __future__ import annotations

import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from hashcoop.pool.core.btc.hashing import hash_to_hex, sha256d
from hashcoop.pool.tools.miner.work import Job, hash_value
from tests.procs import free_port, json_rpc, write_toml

# --------------------------------------------------------------------------
# the scripted node


@dataclass
class Answer:
    """What the scripted node does with the first submitblock of a block.

    kind: ``result`` (a JSON-RPC result: None or a BIP22 string), ``error``
    (a JSON-RPC error object, HTTP 500 like Core), ``http`` (a bare HTTP
    status with a non-JSON body), ``reset`` (the connection is reset, no
    answer), ``hang`` (no answer until the client gives up).
    forward: the block reaches the devnode first (the node has it).
    times: how many submitblock calls of that block get this answer (a
    401 is retried once after reading the cookie again, a reset once as a
    stale keep-alive connection: both need 2 to be seen by the pool).
    """

    name: str
    kind: str
    value: object = None
    forward: bool = False
    times: int = 1
    expect: str = "kept"  # "kept": the block must end up on the node; "rejected": final reject, never credited


@dataclass
class Seen:
    answer: Answer
    first_at: float
    calls: int = 0
    forwarded: bool = False


class ScriptedNode:
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.script: list[Answer] = []
        self.blocks: dict[str, Seen] = {}  # block hash -> the answer it got
        self.submits: list[tuple[float, str]] = []  # every submitblock seen (time, hash)
        self.headers_asked: dict[str, int] = {}  # getblockheader calls by block hash
        self.down = False  # every request is cut (connection reset)
        self.stuck = False  # every request waits, unanswered, until this is cleared (a node stuck in I/O or validation)
        self.lock = threading.Lock()
        rig = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rig.handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- answering -------------------------------------------------------------
    def forward(self, body: bytes, auth: str | None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.upstream, body, {"Content-Type": "application/json"})
        if auth:
            req.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        if self.down:
            return self.reset(h)
        if self.stuck and not self.wait_unstuck(h):
            return None
        auth = h.headers.get("Authorization")
        try:
            req = json.loads(body)
        except ValueError:
            req = None
        answer = None
        if isinstance(req, dict) and req.get("method") == "getblockheader" and req.get("params"):
            with self.lock:
                self.headers_asked[str(req["params"][0])] = self.headers_asked.get(str(req["params"][0]), 0) + 1
        if isinstance(req, dict) and req.get("method") == "submitblock":
            block_hex = req["params"][0]
            bh = hash_to_hex(sha256d(bytes.fromhex(block_hex[:160])))
            with self.lock:
                self.submits.append((time.monotonic(), bh))
                seen = self.blocks.get(bh)
                if seen is None and self.script:
                    seen = self.blocks[bh] = Seen(self.script.pop(0), time.monotonic())
                if seen is not None:
                    seen.calls += 1
                    if seen.calls <= seen.answer.times:
                        answer = seen.answer
            if answer is not None:
                if answer.forward and not seen.forwarded:
                    seen.forwarded = True
                    self.forward(body, auth)
                return self.answer(h, req, answer)
        try:
            status, data = self.forward(body, auth)
        except OSError:
            return self.reset(h)
        self.send(h, status, data)

    def wait_unstuck(self, h) -> bool:
        """Hold the request while the node is stuck; False if the client
        gave up meanwhile (then nobody is answered)."""
        h.connection.settimeout(0.05)
        try:
            while self.stuck:
                try:
                    if h.connection.recv(1, socket.MSG_PEEK) == b"":
                        h.close_connection = True
                        return False
                    time.sleep(0.05)
                except socket.timeout:
                    continue
                except OSError:
                    h.close_connection = True
                    return False
        finally:
            try:
                h.connection.settimeout(None)
            except OSError:
                pass
        return True

    def answer(self, h, req, a: Answer) -> None:
        if a.kind == "result":
            return self.send(h, 200, json.dumps({"result": a.value, "error": None, "id": req.get("id")}).encode())
        if a.kind == "error":
            code, message = a.value
            return self.send(h, 500, json.dumps({"result": None, "error": {"code": code, "message": message},
                                                 "id": req.get("id")}).encode())
        if a.kind == "http":
            status, text = a.value
            return self.send(h, status, text.encode())
        if a.kind == "reset":
            return self.reset(h)
        if a.kind == "hang":  # hold the request until the client hangs up
            h.connection.settimeout(1.0)
            end = time.monotonic() + 120
            while time.monotonic() < end:
                try:
                    if h.connection.recv(1) == b"":
                        break
                except socket.timeout:
                    continue
                except OSError:
                    break
            h.close_connection = True
            return None
        raise ValueError(a.kind)

    @staticmethod
    def send(h, status: int, data: bytes) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def reset(h) -> None:
        """Close with RST: SO_LINGER 0."""
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.close_connection = True
        h.connection.close()


# --------------------------------------------------------------------------
# a scripted Stratum client that finds blocks on demand


class StratumError(Exception):
    pass


class Client:
    """One blocking Stratum connection. ``share(block=...)`` grinds a
    share that is (or is not) a block on the newest job and submits it."""

    def __init__(self, port: int, user: str, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.settimeout(timeout)
        self.user = user
        self.buf = b""
        self.next_id = 1
        self.jobs: list[Job] = []
        self.difficulty = 1.0
        self.en1 = b""
        self.en2_size = 4
        self.en2 = 0
        self.notes: list[dict] = []
        sub = self.call("mining.subscribe", ["faultrig/1"])
        if sub.get("error"):
            raise StratumError(sub["error"])
        _, en1, self.en2_size = sub["result"]
        self.en1 = bytes.fromhex(en1)
        auth = self.call("mining.authorize", [user, "x"])
        if auth.get("result") is not True:
            raise StratumError(auth)
        self.wait_job()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _readline(self, timeout: float) -> dict | None:
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not data:
                raise ConnectionError("the pool closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        if msg.get("method") == "mining.notify":
            self.jobs.append(Job.from_notify(msg["params"], difficulty=self.difficulty, extranonce1=self.en1,
                                             extranonce2_size=self.en2_size, received_at=time.monotonic()))
        elif msg.get("method") == "mining.set_difficulty":
            self.difficulty = float(msg["params"][0])
        elif msg.get("method"):
            self.notes.append(msg)
        return msg

    def call(self, method: str, params: list, timeout: float = 10.0) -> dict:
        mid = self.next_id
        self.next_id += 1
        self.sock.sendall(json.dumps({"id": mid, "method": method, "params": params}).encode() + b"\n")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self._readline(end - time.monotonic())
            if msg is not None and msg.get("id") == mid and "method" not in msg:
                return msg
        raise TimeoutError(f"no answer to {method} within {timeout}s")

    def pump(self, seconds: float = 0.0) -> None:
        """Read whatever the pool sent (jobs) for up to ``seconds``."""
        end = time.monotonic() + seconds
        while True:
            msg = self._readline(max(0.0, end - time.monotonic()) if seconds else 0.01)
            if msg is None and time.monotonic() >= end:
                return

    def wait_job(self, *, other_than: bytes | None = None, timeout: float = 20.0) -> Job:
        """The newest job, waiting for one (on another previous block than
        ``other_than`` when given)."""
        end = time.monotonic() + timeout
        while True:
            if self.jobs and (other_than is None or self.jobs[-1].prevhash != other_than):
                return self.jobs[-1]
            if time.monotonic() > end:
                raise TimeoutError("no (new) job from the pool")
            self._readline(0.2)

    def grind(self, job: Job, block: bool):
        """(submit params, block hash display hex) of a share on ``job``."""
        target = job.network_target
        while True:
            self.en2 += 1
            en2 = self.en2.to_bytes(self.en2_size, "big")
            for nonce in range(1 << 16):
                header = job.header(en2, job.ntime, nonce)
                hv = hash_value(sha256d(header))
                if hv > job.share_target:
                    continue
                if (hv <= target) == block:
                    params = [self.user, job.job_id, en2.hex(), f"{job.ntime:08x}", f"{nonce:08x}"]
                    return params, hash_to_hex(sha256d(header))

    def share(self, *, block: bool) -> tuple[dict, str]:
        self.pump()
        params, h = self.grind(self.jobs[-1], block)
        return self.call("mining.submit", params), h


# --------------------------------------------------------------------------
# the pool process, seen from outside


def pool_toml(path: Path, *, node_url: str, cookie: str, data_dir: Path, stratum_port: int, metrics_port: int,
              redis_url: str | None = None, address: str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
              share_difficulty: float = 1e-10, node_timeout: float = 10.0, stratum: dict | None = None,
              block_recheck: float = 2.0, mine_on_own_block: bool = True) -> Path:
    config = {
        "pool": {"network": "regtest", "address": address, "data_dir": str(data_dir)},
        "nodes": [{"url": node_url, "cookie_file": str(cookie), "longpoll": False, "timeout": node_timeout}],
        "work": {"notify_listen": "", "poll_interval": 0.5, "refresh_interval": 1.0, "block_recheck_interval": block_recheck,
                 "mine_on_own_block": mine_on_own_block},
        "stratum": {**(stratum or {}),
                    "ports": [{"port": stratum_port, "bind": "127.0.0.1", "start_difficulty": share_difficulty,
                               "min_difficulty": share_difficulty, "max_difficulty": share_difficulty, "vardiff": False}]},
        "http": {"listen": f"tcp:{free_port()}:interface=127.0.0.1", "operator_listen": f"tcp:{metrics_port}:interface=127.0.0.1"},
    }
    if redis_url:
        config["redis"] = {"url": redis_url, "socket_timeout": 1.0, "connect_timeout": 0.5}
    return write_toml(path, config)


def metrics(port: int, timeout: float = 10.0) -> dict[tuple[str, tuple], float]:
    """Every sample of the pool's /metrics: {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class JournalBlock:
    found: dict
    found_records: int = 0
    statuses: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str | None:
        return self.statuses[-1]["status"] if self.statuses else None


def read_journal(path: Path) -> dict[str, JournalBlock]:
    """The pool's found-block journal by block hash."""
    out: dict[str, JournalBlock] = {}
    if not path.exists():
        return out
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec["event"] == "found":
            b = out.setdefault(rec["block"]["hash"], JournalBlock(rec["block"]))
            b.found_records += 1
        elif rec["event"] == "status":
            out[rec["hash"]].statuses.append(rec)
    return out


def rpc(url: str, cookie: str, method: str, *params, timeout: float = 30):
    """A call straight to the devnode; returns (result, error)."""
    reply = json_rpc(url, Path(cookie).read_bytes(), method, params, timeout=timeout)
    return reply.get("result"), reply.get("error")


