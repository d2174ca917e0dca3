"""The benchmark's load generator: simulated Stratum miners in one process.

It is a separate process from the pool (``python -m hashcoop.pool.tools.bench.loadgen``),
driven by the orchestrator (``hashcoop.pool.tools.bench.cli``) over stdin/stdout, one JSON
object per line each way. It uses a bare ``select.epoll`` loop rather than
Twisted so that it costs far less CPU per share than the pool it measures;
every phase reports the generator's own CPU time so the orchestrator can
show it was not the bottleneck.

Miners do no hashing. They submit random nonces with a distinct
extranonce2 per share (so no two shares of a connection are duplicates);
against a port whose difficulty is tiny (1e-12: the share target is then
the largest possible) every share meets the share target, and at
difficulty 1 nearly every share is rejected as ``high-hash``: the pool
does the full validation either way.

Commands (orchestrator -> generator)::

    {"cmd": "connect", "host", "port", "n", "users": [...], "wave": 500}
    {"cmd": "saturate", "depth": 4, "seconds": 20}      closed loop: each miner keeps `depth` submits in flight
    {"cmd": "rate", "rate": 5000, "seconds": 60, "warmup": 5, "burst": 1, "duplicate_every": 0}
                                                        open loop: `rate` shares/s spread evenly over the miners,
                                                        `burst` shares a write; with `duplicate_every` N > 0,
                                                        every Nth share is the miner's previous share again
                                                        (a known fraction of invalid shares: rejected as
                                                        duplicates, or stale if a new job came in between)
    {"cmd": "arm"}                                       fan-out: watch for the next clean job with a new prevhash
    {"cmd": "collect", "wait": 10}                       ... and report when every miner has it
    {"cmd": "info"}                                      extranonce1s, counters, CPU
    {"cmd": "close"}                                     disconnect every miner
    {"cmd": "quit"}

Every command is answered by one JSON line with ``"ok": true`` (or
``"ok": false, "error": ...``).
"""
from __future__ import annotations

import math
import os
import random
import select
import socket
import sys
import time

import orjson

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLERR = select.EPOLLERR | select.EPOLLHUP

# Latency histogram: 10 µs bins up to 200 ms, then one overflow bin.
BIN_US = 10
BINS = 20_000

SUBSCRIBE_ID = 1
AUTHORIZE_ID = 2
FIRST_SHARE_ID = 3

_ACCEPTED = b'"result":true'
_CODES = (20, 21, 22, 23, 24, 25)
_CODE_PATTERNS = tuple((c, b'"error":[%d,' % c) for c in _CODES)


# -- pure helpers (tested in tests/bench) ---------------------------------------------


def handshake_lines(user: str, agent: str = "hashcoop-bench/1") -> bytes:
    """subscribe and authorize, pipelined as ESP-Miner sends them."""
    return (orjson.dumps({"id": SUBSCRIBE_ID, "method": "mining.subscribe", "params": [agent]}) + b"\n"
            + orjson.dumps({"id": AUTHORIZE_ID, "method": "mining.authorize", "params": [user, "x"]}) + b"\n")


def submit_parts(user: str, job_id: str, ntime: str) -> tuple[bytes, bytes]:
    """The constant pieces of a job's ``mining.submit`` line: what goes
    before extranonce2 and between extranonce2 and the nonce."""
    head = b'{"method":"mining.submit","params":[' + orjson.dumps(user) + b"," + orjson.dumps(job_id) + b',"'
    mid = b'","' + ntime.encode() + b'","'
    return head, mid


def submit_line(head: bytes, mid: bytes, en2: int, en2_hex_digits: int, nonce: int, share_id: int) -> bytes:
    """One ``mining.submit``: extranonce2 ``en2`` (big-endian hex of the
    session's extranonce2 size), nonce as 8 hex digits."""
    return b"%s%0*x%s%08x\"],\"id\":%d}\n" % (head, en2_hex_digits, en2, mid, nonce, share_id)


def split_lines(buf: bytes) -> tuple[bytes, bytes]:
    """(complete lines, the partial rest)."""
    end = buf.rfind(b"\n")
    if end < 0:
        return b"", buf
    return buf[:end + 1], buf[end + 1:]


def count_replies(chunk: bytes) -> tuple[int, int, dict[int, int]]:
    """Share replies in complete lines that hold no server request:
    (accepted, rejected, rejected by error code)."""
    lines = chunk.count(b"\n")
    acc = chunk.count(_ACCEPTED)
    rej = lines - acc
    codes = {}
    if rej:
        for code, pat in _CODE_PATTERNS:
            k = chunk.count(pat)
            if k:
                codes[code] = k
    return acc, rej, codes


def reply_id(line: bytes) -> int | None:
    """The integer id of one of the pool's replies (``{"id":N,...``)."""
    if line.startswith(b'{"id":'):
        end = line.find(b",", 6)
        try:
            return int(line[6:end])
        except ValueError:
            return None
    try:
        v = orjson.loads(line).get("id")
    except orjson.JSONDecodeError:
        return None
    return v if type(v) is int else None


_NOTIFY = b'"method":"mining.notify","params":["'


def quick_notify(line: bytes) -> tuple[str, bool] | None:
    """(prevhash, clean_jobs) of a compact ``mining.notify`` line without
    decoding all of it (a fan-out to thousands of miners must not be slowed
    by the generator); None if the line is not one in the expected form."""
    i = line.find(_NOTIFY)
    if i < 0:
        return None
    i += len(_NOTIFY)
    j = line.find(b'","', i)
    if j < 0:
        return None
    prev = line[j + 3:j + 67]
    tail = line.rstrip(b"\r")
    if line[j + 67:j + 68] != b'"' or not tail.endswith(b"]}"):
        return None
    if tail.endswith(b",true]}"):
        clean = True
    elif tail.endswith(b",false]}"):
        clean = False
    else:
        return None
    try:
        int(prev, 16)
    except ValueError:
        return None
    return prev.decode(), clean


def hist_add(hist: list[int], seconds: float) -> None:
    i = int(seconds * 1e6) // BIN_US
    hist[i if i < BINS else BINS] += 1


def hist_compact(hist: list[int]) -> dict[str, int]:
    return {str(i): n for i, n in enumerate(hist) if n}


def hist_merge(hists) -> list[int]:
    out = [0] * (BINS + 1)
    for h in hists:
        for i, n in h.items():
            out[int(i)] += n
    return out


def hist_percentile(hist: list[int], q: float) -> float | None:
    """Upper edge (seconds) of the bin holding the q-quantile (0 < q <= 1);
    None for an empty histogram, inf when it falls in the overflow bin."""
    total = sum(hist)
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank:
            return float("inf") if i == BINS else (i + 1) * BIN_US / 1e6
    return float("inf")


# -- connections -----------------------------------------------------------------------


class Miner:
    __slots__ = (
        "gen", "idx", "user", "sock", "fd", "rbuf", "wbuf", "state", "en1", "en2_digits", "en2", "difficulty",
        "job_id", "ntime", "prevhash", "head", "mid", "next_id", "inflight", "sent_at", "clean_at", "watch_prev",
        "accepted", "rejected", "connected_at", "notify_raw", "last",
    )

    def __init__(self, gen: "Generator", idx: int, user: str):
        self.gen = gen
        self.idx = idx
        self.user = user
        self.sock: socket.socket | None = None
        self.fd = -1
        self.rbuf = b""
        self.wbuf = b""
        self.state = "new"  # connecting, handshake, ready, closed
        self.en1 = ""
        self.en2_digits = 8
        self.en2 = 0
        self.difficulty = None
        self.job_id = None
        self.ntime = None
        self.prevhash = None
        self.head = self.mid = b""
        self.next_id = FIRST_SHARE_ID
        self.inflight = 0
        self.sent_at: dict[int, float] = {}
        self.clean_at = 0.0
        self.watch_prev = None
        self.accepted = 0
        self.rejected = 0
        self.connected_at = 0.0
        self.notify_raw = None
        self.last = None  # (head, mid, extranonce2, nonce) of the last share sent

    def take_lines(self, data: bytes) -> bytes:
        buf = self.rbuf + data if self.rbuf else data
        chunk, self.rbuf = split_lines(buf)
        return chunk

    def on_request(self, msg: dict, now: float) -> None:
        method = msg.get("method")
        params = msg.get("params") or []
        if method == "mining.set_difficulty":
            self.difficulty = params[0]
        elif method == "mining.notify":
            self.on_notify(params[1], params[8] is True, None, now)
            self.set_job(params)

    def on_notify(self, prev: str, clean: bool, raw: bytes | None, now: float) -> None:
        """A job arrived (``raw``: its line, parsed when the miner next
        submits; None when the caller sets the job itself)."""
        if clean and self.watch_prev is not None and prev != self.watch_prev and not self.clean_at:
            self.clean_at = now
        self.prevhash = prev
        if raw is not None:
            self.notify_raw = raw
            self.head = None
        if self.state == "handshake" and self.en1:
            self.state = "ready"
            self.gen.became_ready(self)

    def set_job(self, params: list) -> None:
        self.job_id, self.ntime = params[0], params[7]
        self.head, self.mid = submit_parts(self.user, self.job_id, self.ntime)
        self.notify_raw = None

    def on_reply(self, msg: dict) -> None:
        mid = msg.get("id")
        if mid == SUBSCRIBE_ID:
            result = msg.get("result")
            if not result:
                self.gen.failed(self, f"subscribe failed: {msg}")
                return
            self.en1 = result[1]
            self.en2_digits = 2 * result[2]
        elif mid == AUTHORIZE_ID:
            if msg.get("result") is not True:
                self.gen.failed(self, f"authorize failed: {msg}")

    def next_share(self) -> bytes:
        if self.head is None:
            self.set_job(orjson.loads(self.notify_raw)["params"])
        self.en2 += 1
        sid = self.next_id
        self.next_id = sid + 1
        nonce = random.getrandbits(32)
        self.last = (self.head, self.mid, self.en2, nonce)
        return submit_line(self.head, self.mid, self.en2, self.en2_digits, nonce, sid)

    def duplicate_share(self) -> bytes:
        """The last share sent again, under a new request id (the first
        share of a connection when none was sent yet)."""
        if self.last is None:
            return self.next_share()
        head, mid, en2, nonce = self.last
        sid = self.next_id
        self.next_id = sid + 1
        return submit_line(head, mid, en2, self.en2_digits, nonce, sid)


class Generator:
    def __init__(self, out=None):
        self.ep = select.epoll()
        self.miners: dict[int, Miner] = {}
        self.all: list[Miner] = []
        self.out = out or sys.stdout
        self.mode = "idle"
        self.running = True
        self.pending_connect: list[Miner] = []
        self.connecting = 0
        self.ready_count = 0
        self.fail_count = 0
        self.errors: list[str] = []
        self.cmd_buf = b""
        self.stdin_fd = -1
        self.waiting = None  # (kind, deadline, extra) of a command answered later
        # counters of the current phase
        self.reset_phase()

    def reset_phase(self):
        self.sent = 0
        self.duplicates = 0
        self.acc = 0
        self.rej = 0
        self.codes: dict[int, int] = {}
        self.per_second: dict[int, int] = {}
        self.rej_per_second: dict[int, int] = {}
        self.hist = [0] * (BINS + 1)
        self.lat_max = 0.0
        self.lat_from = 0.0
        self.phase_cpu0 = time.process_time()
        self.phase_t0 = time.monotonic()

    # -- output ------------------------------------------------------------------------
    def reply(self, **kw) -> None:
        kw.setdefault("ok", True)
        self.out.write(orjson.dumps(kw, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
        self.out.flush()

    # -- connections ---------------------------------------------------------------------
    def start_connect(self, host: str, port: int, users: list[str], wave: int) -> None:
        base = len(self.all)
        for i, user in enumerate(users):
            m = Miner(self, base + i, user)
            self.all.append(m)
            self.pending_connect.append(m)
        self.target = (host, port)
        self.wave = wave
        self.waiting = ("connect", time.monotonic() + 300, len(self.all))
        self.connect_t0 = time.monotonic()
        self.pump_connects()

    def pump_connects(self) -> None:
        while self.pending_connect and self.connecting < self.wave:
            m = self.pending_connect.pop()
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                s.connect(self.target)
            except BlockingIOError:
                pass
            m.sock = s
            m.fd = s.fileno()
            m.state = "connecting"
            self.miners[m.fd] = m
            self.connecting += 1
            self.ep.register(m.fd, EPOLLOUT | EPOLLIN)

    def became_ready(self, m: Miner) -> None:
        self.ready_count += 1
        self.connecting -= 1
        m.connected_at = time.monotonic()

    def failed(self, m: Miner, why: str) -> None:
        if m.state == "closed":
            return
        if len(self.errors) < 20:
            self.errors.append(f"miner {m.idx}: {why}")
        if m.state in ("connecting", "handshake"):
            self.connecting -= 1
            self.fail_count += 1
        elif m.state == "ready":
            self.ready_count -= 1
            self.fail_count += 1
        m.state = "closed"
        self.drop(m)

    def drop(self, m: Miner) -> None:
        if m.sock is not None:
            try:
                self.ep.unregister(m.fd)
            except (OSError, ValueError):
                pass
            self.miners.pop(m.fd, None)
            m.sock.close()
            m.sock = None

    def send(self, m: Miner, data: bytes) -> None:
        if m.wbuf:
            m.wbuf += data
            return
        try:
            n = m.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as e:
            self.failed(m, f"send: {e}")
            return
        if n < len(data):
            m.wbuf = data[n:]
            self.ep.modify(m.fd, EPOLLIN | EPOLLOUT)

    def on_writable(self, m: Miner) -> None:
        if m.state == "connecting":
            err = m.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.failed(m, f"connect: {os.strerror(err)}")
                return
            m.state = "handshake"
            self.ep.modify(m.fd, EPOLLIN)
            self.send(m, handshake_lines(m.user))
            return
        if m.wbuf:
            try:
                n = m.sock.send(m.wbuf)
            except BlockingIOError:
                return
            except OSError as e:
                self.failed(m, f"send: {e}")
                return
            m.wbuf = m.wbuf[n:]
        if not m.wbuf:
            self.ep.modify(m.fd, EPOLLIN)

    def on_readable(self, m: Miner, now: float) -> None:
        try:
            data = m.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError as e:
            self.failed(m, f"recv: {e}")
            return
        if not data:
            self.failed(m, "closed by the pool")
            return
        chunk = m.take_lines(data)
        if not chunk:
            return
        if m.state != "ready" or b'"method"' in chunk or self.mode == "rate":
            self.slow_lines(m, chunk, now)
            return
        acc, rej, codes = count_replies(chunk)
        self.account(m, acc, rej, codes, now)

    def slow_lines(self, m: Miner, chunk: bytes, now: float) -> None:
        acc = rej = 0
        codes: dict[int, int] = {}
        rate = self.mode == "rate"
        for line in chunk.split(b"\n"):
            if not line:
                continue
            if line.startswith(b'{"id":') and b'"method"' not in line:
                sid = reply_id(line)
                if sid is not None and sid >= FIRST_SHARE_ID:
                    if _ACCEPTED in line:
                        acc += 1
                    else:
                        rej += 1
                        for code, pat in _CODE_PATTERNS:
                            if pat in line:
                                codes[code] = codes.get(code, 0) + 1
                    if rate:
                        t = m.sent_at.pop(sid, None)
                        if t is not None and t >= self.lat_from:
                            lat = now - t
                            hist_add(self.hist, lat)
                            if lat > self.lat_max:
                                self.lat_max = lat
                    continue
            quick = quick_notify(line)
            if quick is not None:
                m.on_notify(quick[0], quick[1], line, now)
                continue
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                self.failed(m, f"bad line from the pool: {line[:200]!r}")
                return
            if "method" in msg and msg["method"] is not None:
                m.on_request(msg, now)
            else:
                m.on_reply(msg)
        if acc or rej:
            self.account(m, acc, rej, codes, now)

    def account(self, m: Miner, acc: int, rej: int, codes: dict, now: float) -> None:
        m.accepted += acc
        m.rejected += rej
        self.acc += acc
        self.rej += rej
        for c, k in codes.items():
            self.codes[c] = self.codes.get(c, 0) + k
        sec = int(now)
        if acc:
            self.per_second[sec] = self.per_second.get(sec, 0) + acc
        if rej:
            self.rej_per_second[sec] = self.rej_per_second.get(sec, 0) + rej
        n = acc + rej
        m.inflight -= n
        if self.mode == "saturate" and now < self.phase_end:
            want = self.depth - m.inflight
            if want > 0:
                self.send(m, b"".join(m.next_share() for _ in range(want)))
                m.inflight += want
                self.sent += want

    # -- phases ----------------------------------------------------------------------------
    def ready_miners(self) -> list[Miner]:
        return [m for m in self.all if m.state == "ready"]

    def start_saturate(self, depth: int, seconds: float) -> None:
        self.reset_phase()
        self.mode = "saturate"
        self.depth = depth
        self.phase_end = time.monotonic() + seconds
        for m in self.ready_miners():
            m.inflight = 0
        for m in self.ready_miners():
            self.send(m, b"".join(m.next_share() for _ in range(depth)))
            m.inflight += depth
            self.sent += depth
        self.waiting = ("saturate", self.phase_end + 30, None)

    def start_rate(self, rate: float, seconds: float, warmup: float, burst: int = 1, duplicate_every: int = 0) -> None:
        self.reset_phase()
        self.mode = "rate"
        self.rate = rate
        self.burst = max(1, burst)
        self.duplicate_every = max(0, duplicate_every)
        self.bursts = 0
        self.rate_miners = self.ready_miners()
        random.shuffle(self.rate_miners)
        now = time.monotonic()
        self.rate_t0 = now
        self.lat_from = now + warmup
        self.phase_end = now + warmup + seconds
        self.waiting = ("rate", self.phase_end + 30, None)

    def rate_tick(self, now: float) -> float:
        """Send what is due; return the seconds until the next send."""
        if now >= self.phase_end:
            return 0.05
        burst = self.burst
        per_s = self.rate / burst  # sends a second, ``burst`` shares each
        due = int((now - self.rate_t0) * per_s) - self.bursts
        miners = self.rate_miners
        k = len(miners)
        while due > 0:
            m = miners[self.bursts % k]
            t = time.monotonic()
            lines = []
            dup = self.duplicate_every
            for _ in range(burst):
                if dup and (self.sent + len(lines)) % dup == dup - 1 and m.last is not None:
                    lines.append(m.duplicate_share())
                    self.duplicates += 1
                else:
                    lines.append(m.next_share())
                m.sent_at[m.next_id - 1] = t
            m.inflight += burst
            self.send(m, lines[0] if burst == 1 else b"".join(lines))
            self.sent += burst
            self.bursts += 1
            due -= 1
        return max(0.0, (self.bursts + 1) / per_s - (time.monotonic() - self.rate_t0))

    def phase_result(self, now: float) -> dict:
        cpu = time.process_time() - self.phase_cpu0
        wall = now - self.phase_t0
        return {
            "sent": self.sent, "duplicates_sent": self.duplicates, "accepted": self.acc, "rejected": self.rej, "codes": self.codes,
            "per_second": self.per_second, "rej_per_second": self.rej_per_second,
            "cpu": cpu, "wall": wall, "inflight": sum(m.inflight for m in self.all if m.state == "ready"),
            "miners": self.ready_count, "failed": self.fail_count, "errors": self.errors[:5],
        }

    def check_waiting(self, now: float) -> None:
        if self.waiting is None:
            return
        kind, deadline, extra = self.waiting
        if kind == "connect":
            self.pump_connects()
            done = self.ready_count + self.fail_count >= extra
            if done or now > deadline:
                self.waiting = None
                self.reply(ok=self.fail_count == 0 and done, event="connected", miners=self.ready_count,
                           failed=self.fail_count, seconds=now - self.connect_t0, errors=self.errors[:5])
        elif kind in ("saturate", "rate"):
            if now < self.phase_end:
                return
            if self.mode != "drain":
                self.mode = "drain"
                self.drain_end = min(deadline, now + 10)
            inflight = sum(m.inflight for m in self.all if m.state == "ready")
            if inflight <= 0 or now > self.drain_end:
                self.waiting = None
                res = self.phase_result(now)
                res["event"] = kind
                if kind == "rate":
                    res["hist"] = hist_compact(self.hist)
                    res["max"] = self.lat_max
                    for m in self.all:
                        m.sent_at.clear()
                self.mode = "idle"
                self.reply(**res)
        elif kind == "collect":
            watched = extra
            got = [m.clean_at for m in watched if m.clean_at]
            if len(got) == len(watched) or now > deadline:
                self.waiting = None
                self.reply(event="fanout", miners=len(watched), got=len(got), first=min(got, default=None),
                           last=max(got, default=None), times=sorted(got), cpu=time.process_time() - self.phase_cpu0)

    # -- commands ------------------------------------------------------------------------------
    def command(self, cmd: dict) -> None:
        name = cmd.get("cmd")
        if name == "connect":
            self.start_connect(cmd["host"], int(cmd["port"]), list(cmd["users"]), int(cmd.get("wave", 500)))
        elif name == "saturate":
            self.start_saturate(int(cmd.get("depth", 4)), float(cmd["seconds"]))
        elif name == "rate":
            self.start_rate(float(cmd["rate"]), float(cmd["seconds"]), float(cmd.get("warmup", 0)), int(cmd.get("burst", 1)),
                            int(cmd.get("duplicate_every", 0)))
        elif name == "arm":
            self.phase_cpu0 = time.process_time()
            for m in self.all:
                m.clean_at = 0.0
                m.watch_prev = m.prevhash
            self.reply(event="armed", miners=len(self.ready_miners()))
        elif name == "collect":
            self.waiting = ("collect", time.monotonic() + float(cmd.get("wait", 10)), self.ready_miners())
        elif name == "info":
            self.reply(event="info", extranonce1=[m.en1 for m in self.all if m.en1], miners=self.ready_count,
                       failed=self.fail_count, accepted=sum(m.accepted for m in self.all),
                       rejected=sum(m.rejected for m in self.all), errors=self.errors[:5])
        elif name == "close":
            for m in self.all:
                if m.sock is not None:
                    self.drop(m)
                m.state = "closed"
            self.ready_count = 0
            self.reply(event="closed")
        elif name == "quit":
            self.running = False
            self.reply(event="bye")
        else:
            self.reply(ok=False, error=f"unknown command {name!r}")

    def on_stdin(self, fd: int) -> None:
        data = os.read(fd, 1 << 20)
        if not data:
            self.running = False
            return
        buf = self.cmd_buf + data
        lines, self.cmd_buf = split_lines(buf)
        for line in lines.split(b"\n"):
            if line.strip():
                try:
                    self.command(orjson.loads(line))
                except Exception as e:  # report, keep serving
                    self.reply(ok=False, error=f"{type(e).__name__}: {e}")

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, stdin_fd: int) -> None:
        """Serve commands from ``stdin_fd`` until ``quit`` or end of input."""
        os.set_blocking(stdin_fd, False)
        self.ep.register(stdin_fd, EPOLLIN)
        self.stdin_fd = stdin_fd
        while self.running:
            self.step(0.05)

    def step(self, timeout: float) -> None:
        """One turn of the loop: wait up to ``timeout`` for sockets (and
        the command input, if any), handle what is ready, send what is due."""
        if self.mode == "rate":
            timeout = min(timeout, self.rate_tick(time.monotonic()))
        events = self.ep.poll(timeout, 4096)
        now = time.monotonic()
        miners = self.miners
        for fd, ev in events:
            if fd == self.stdin_fd:
                self.on_stdin(fd)
                continue
            m = miners.get(fd)
            if m is None:
                continue
            if ev & EPOLLIN:
                self.on_readable(m, now)
            if m.sock is not None and ev & EPOLLOUT:
                self.on_writable(m)
            if m.sock is not None and ev & EPOLLERR and not ev & EPOLLIN:
                self.failed(m, "socket error")
        if self.mode == "rate":
            self.rate_tick(time.monotonic())
        self.check_waiting(time.monotonic())


def main() -> int:
    gen = Generator()
    try:
        gen.run(sys.stdin.fileno())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
