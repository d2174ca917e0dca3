"""Many Stratum connections from one process, on real sockets: honest
miners that measure their reply latency, idle and half-open sockets
(slowloris), floods of bytes, and miners that reconnect when the pool goes
away. One epoll loop, no threads, driven by the caller (``run_for``,
``run_until``), so a test decides exactly when time passes.

Each connection can come from its own loopback address (127.0.0.2,
127.0.0.3, ...: the whole 127/8 is local on Linux), which is how the
battery plays "other addresses" and keeps a reconnect storm of thousands
clear of one address's ephemeral ports.

Shares: random nonces with a distinct extranonce2 each, meant for a port
whose difficulty is tiny (every hash meets the share target), so an honest
share is accepted unless the pool finds something wrong with it.
"""
from __future__ import annotations

import errno
import os
import random
import select
import socket
import time

import orjson

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLLERR = select.EPOLLERR | select.EPOLLHUP
SUB_ID, AUTH_ID, FIRST_SHARE = 1, 2, 10
ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"

MODES = ("miner", "idle", "subscribe", "silent", "flood")


class Conn:
    __slots__ = ("swarm", "idx", "mode", "src", "user", "interval", "reconnect", "payload", "limit", "sock", "fd",
                 "state", "rbuf", "wbuf", "en1", "en2_digits", "job_id", "ntime", "authorized", "opened_at",
                 "ready_at", "closed_at", "closed_by", "next_submit", "en2", "next_id", "sent_at", "latencies",
                 "accepted", "rejected", "reject_codes", "attempts", "retry_at", "bytes_sent", "sessions", "reconnected_at")

    def __init__(self, swarm, idx, mode, src, user, interval, reconnect, payload, limit):
        self.swarm = swarm
        self.idx = idx
        self.mode = mode
        self.src = src
        self.user = user
        self.interval = interval
        self.reconnect = reconnect
        self.payload = payload
        self.limit = limit
        self.sock = None
        self.fd = -1
        self.state = "new"  # connecting, open, closed, waiting (to reconnect)
        self.rbuf = b""
        self.wbuf = b""
        self.en1 = None
        self.en2_digits = 8
        self.job_id = None
        self.ntime = None
        self.authorized = False
        self.opened_at = None
        self.ready_at = None  # subscribed, authorized and holding a job
        self.closed_at = None
        self.closed_by = None  # "server", "refused", "error"
        self.next_submit = 0.0
        self.en2 = random.getrandbits(24) << 8
        self.next_id = FIRST_SHARE
        self.sent_at: dict[int, float] = {}
        self.latencies: list[float] = []
        self.accepted = 0
        self.rejected = 0
        self.reject_codes: dict[int, int] = {}
        self.attempts = 0
        self.retry_at = 0.0
        self.bytes_sent = 0
        self.sessions = 0  # connections that reached ready
        self.reconnected_at = None

    @property
    def open(self) -> bool:
        return self.state in ("connecting", "open")

    @property
    def ready(self) -> bool:
        return self.state == "open" and self.ready_at is not None


class Swarm:
    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.ep = select.epoll()
        self.conns: list[Conn] = []
        self.by_fd: dict[int, Conn] = {}
        self.waiting: list[Conn] = []
        self.rng = random.Random(7)

    def close(self) -> None:
        for c in self.conns:
            self._drop(c)
        self.ep.close()

    # -- building ------------------------------------------------------------------------
    def add(self, n: int, mode: str = "miner", *, src: str | list[str] = "127.0.0.1", user: str | None = None,
            interval: float = 0.2, reconnect: bool = False, payload: bytes = b"", limit: int = 0,
            connect: bool = True) -> list[Conn]:
        assert mode in MODES
        out = []
        for i in range(n):
            s = src if isinstance(src, str) else src[i % len(src)]
            idx = len(self.conns)
            c = Conn(self, idx, mode, s, user or f"{ADDR}.w{idx}", interval, reconnect, payload, limit)
            self.conns.append(c)
            out.append(c)
            if connect:
                self.connect(c)
        return out

    def connect(self, c: Conn) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if c.src != "127.0.0.1":
                s.bind((c.src, 0))
            err = s.connect_ex((self.host, self.port))
        except OSError as e:
            s.close()
            self._closed(c, "error", f"connect: {e}")
            return
        if err not in (0, errno.EINPROGRESS):
            s.close()
            self._closed(c, "refused", os.strerror(err))
            return
        c.sock, c.fd = s, s.fileno()
        c.state = "connecting"
        c.rbuf = c.wbuf = b""
        c.en1 = c.job_id = None
        c.authorized = False
        c.ready_at = None
        c.opened_at = time.monotonic()
        c.attempts += 1
        self.by_fd[c.fd] = c
        self.ep.register(c.fd, EPOLLOUT | EPOLLIN)

    # -- the loop --------------------------------------------------------------------------
    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.step(min(left, 0.02))

    def run_until(self, cond, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            self.step(0.02)
        return cond()

    def step(self, timeout: float) -> None:
        now = time.monotonic()
        if self.waiting:
            due = [c for c in self.waiting if c.retry_at <= now]
            if due:
                self.waiting = [c for c in self.waiting if c.retry_at > now]
                for c in due:
                    self.connect(c)
        for fd, ev in self.ep.poll(timeout, 4096):
            c = self.by_fd.get(fd)
            if c is None:
                continue
            if ev & EPOLLIN:
                self._readable(c)
            if c.sock is not None and ev & EPOLLOUT:
                self._writable(c)
            if c.sock is not None and ev & EPOLLERR and not ev & EPOLLIN:
                self._closed(c, "refused" if c.state == "connecting" else "server", "reset")
        now = time.monotonic()
        for c in self.conns:
            if c.mode == "miner" and c.ready_at is not None and c.state == "open" and now >= c.next_submit:
                self._submit(c, now)

    # -- per connection ---------------------------------------------------------------------
    def _send(self, c: Conn, data: bytes) -> None:
        if c.wbuf:
            c.wbuf += data
            return
        try:
            n = c.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as e:
            self._closed(c, "server", f"send: {e}")
            return
        c.bytes_sent += n
        if n < len(data):
            c.wbuf = data[n:]
            self.ep.modify(c.fd, EPOLLIN | EPOLLOUT)

    def _writable(self, c: Conn) -> None:
        if c.state == "connecting":
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._closed(c, "refused", os.strerror(err))
                return
            c.state = "open"
            self.ep.modify(c.fd, EPOLLIN)
            if c.mode in ("miner", "idle"):
                self._send(c, orjson.dumps({"id": SUB_ID, "method": "mining.subscribe", "params": ["swarm/1"]}) + b"\n"
                           + orjson.dumps({"id": AUTH_ID, "method": "mining.authorize", "params": [c.user, "x"]}) + b"\n")
            elif c.mode == "subscribe":
                self._send(c, orjson.dumps({"id": SUB_ID, "method": "mining.subscribe", "params": ["swarm/1"]}) + b"\n")
            elif c.mode == "flood":
                self._flood(c)
            return
        if c.mode == "flood" and not c.wbuf:
            self._flood(c)
            return
        if c.wbuf:
            try:
                n = c.sock.send(c.wbuf)
            except BlockingIOError:
                return
            except OSError as e:
                self._closed(c, "server", f"send: {e}")
                return
            c.bytes_sent += n
            c.wbuf = c.wbuf[n:]
        if not c.wbuf and c.sock is not None:
            self.ep.modify(c.fd, EPOLLIN | (EPOLLOUT if c.mode == "flood" else 0))

    def _flood(self, c: Conn) -> None:
        """Write the payload again and again (no newline in it: one endless line) up to ``limit`` bytes."""
        while c.sock is not None and c.bytes_sent < c.limit:
            chunk = c.payload[: c.limit - c.bytes_sent]
            try:
                n = c.sock.send(chunk)
            except BlockingIOError:
                self.ep.modify(c.fd, EPOLLIN | EPOLLOUT)
                return
            except OSError as e:
                self._closed(c, "server", f"send: {e}")
                return
            c.bytes_sent += n
        if c.sock is not None:
            self.ep.modify(c.fd, EPOLLIN)

    def _readable(self, c: Conn) -> None:
        try:
            data = c.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError as e:
            self._closed(c, "server", f"recv: {e}")
            return
        if not data:
            self._closed(c, "server", "closed")
            return
        buf = c.rbuf + data
        end = buf.rfind(b"\n")
        if end < 0:
            c.rbuf = buf
            return
        c.rbuf = buf[end + 1:]
        now = time.monotonic()
        for line in buf[:end].split(b"\n"):
            if line:
                self._line(c, orjson.loads(line), now)

    def _line(self, c: Conn, msg: dict, now: float) -> None:
        method = msg.get("method")
        if method == "mining.notify":
            p = msg["params"]
            c.job_id, c.ntime = p[0], p[7]
        elif method is None:
            mid = msg.get("id")
            if mid == SUB_ID:
                if msg.get("result"):
                    c.en1 = msg["result"][1]
                    c.en2_digits = 2 * msg["result"][2]
            elif mid == AUTH_ID:
                c.authorized = msg.get("result") is True
            elif type(mid) is int and mid >= FIRST_SHARE:
                t = c.sent_at.pop(mid, None)
                if t is not None:
                    c.latencies.append(now - t)
                if msg.get("result") is True:
                    c.accepted += 1
                else:
                    c.rejected += 1
                    code = (msg.get("error") or [0])[0]
                    c.reject_codes[code] = c.reject_codes.get(code, 0) + 1
        if c.ready_at is None and c.en1 is not None and c.authorized and c.job_id is not None:
            c.ready_at = now
            c.sessions += 1
            if c.sessions > 1 and c.reconnected_at is None:
                c.reconnected_at = now
            c.next_submit = now + self.rng.random() * c.interval

    def _submit(self, c: Conn, now: float) -> None:
        c.en2 += 1
        mid = c.next_id
        c.next_id += 1
        c.sent_at[mid] = now
        c.next_submit = now + c.interval
        line = b'{"id":%d,"method":"mining.submit","params":["%s","%s","%0*x","%s","%08x"]}\n' % (
            mid, c.user.encode(), c.job_id.encode(), c.en2_digits, c.en2 & ((1 << (4 * c.en2_digits)) - 1),
            c.ntime.encode(), self.rng.getrandbits(32))
        self._send(c, line)

    def submit_raw(self, c: Conn, params: list, mid: int | None = None) -> int:
        """Send one mining.submit with exactly these params; returns its id."""
        if mid is None:
            mid = c.next_id
            c.next_id += 1
        c.sent_at[mid] = time.monotonic()
        self._send(c, orjson.dumps({"id": mid, "method": "mining.submit", "params": params}) + b"\n")
        return mid

    def _drop(self, c: Conn) -> None:
        if c.sock is not None:
            try:
                self.ep.unregister(c.fd)
            except (OSError, ValueError):
                pass
            self.by_fd.pop(c.fd, None)
            c.sock.close()
            c.sock = None

    def _closed(self, c: Conn, by: str, why: str) -> None:
        if c.state in ("closed", "waiting"):
            return
        self._drop(c)
        c.closed_at = time.monotonic()
        c.closed_by = by
        c.sent_at.clear()
        if c.reconnect:
            c.state = "waiting"
            # firmware-like: retry soon, then back off, with jitter
            k = min(c.attempts, 4)
            c.retry_at = c.closed_at + self.rng.uniform(0.05, 0.5) * (2 ** k)
            self.waiting.append(c)
        else:
            c.state = "closed"

    def hangup(self, conns: list[Conn]) -> None:
        """Close these connections from the client side, for good."""
        for c in conns:
            c.reconnect = False
            self._drop(c)
            c.state = "closed"
            c.closed_at = time.monotonic()
            c.closed_by = "client"

    # -- figures ------------------------------------------------------------------------------
    @staticmethod
    def percentile(values: list[float], q: float) -> float | None:
        if not values:
            return None
        v = sorted(values)
        return v[min(len(v) - 1, max(0, int(round(q * (len(v) - 1)))))]
