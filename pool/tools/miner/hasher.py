"""CPU hashing: the nonce-scanning loop, the worker process that runs it, and
the Twisted adapter that spawns and talks to workers.

Workers are ``python -m hashcoop.pool.tools.miner.hasher`` children speaking line-JSON over
stdin/stdout, so the reactor in the miner's main process never blocks on
hashing. A worker scans its nonce range in chunks of ~20 ms and polls stdin
between chunks, so new work replaces old work within a chunk (a clean job
stops old work well inside 100 ms).

Parent -> worker::

    {"op": "work", "id": 7, "prefix": "<76-byte header prefix hex>",
     "target": "<64 hex>", "start": 0, "end": 4294967296}
    {"op": "idle"}          stop hashing, wait for work
    {"op": "quit"}          (or EOF on stdin) report hashes and exit

Worker -> parent::

    {"op": "started", "id": 7}              picked up a unit
    {"op": "found", "id": 7, "nonce": 123}  hash(prefix + nonce) <= target
    {"op": "hashes", "id": 7, "n": 81920}   hashes done since the last report
    {"op": "done", "id": 7}                 range exhausted
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import select
import signal
import struct
import sys
import time
from typing import Callable, Protocol

from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol

log = logging.getLogger("hashcoop.miner.hasher")

CHUNK_SECONDS = 0.02
REPORT_SECONDS = 0.5
MAX_LINE = 1 << 16


def scan(prefix: bytes, target: int, start: int, end: int) -> list[int]:
    """Nonces in [start, end) whose header ``prefix + nonce`` (little-endian)
    double-SHA256s to a value <= ``target``.

    Uses the SHA-256 midstate: the first 64 header bytes are hashed once and
    the state copied for each nonce, so each try hashes only the last 16.
    """
    if len(prefix) != 76:
        raise ValueError("a header prefix is 76 bytes")
    sha256 = hashlib.sha256
    mid_copy = sha256(prefix[:64]).copy
    buf = bytearray(prefix[64:76] + b"\0\0\0\0")
    pack_into = struct.Struct("<I").pack_into
    from_bytes = int.from_bytes
    found = []
    for nonce in range(start, end):
        pack_into(buf, 12, nonce)
        c = mid_copy()
        c.update(buf)
        if from_bytes(sha256(c.digest()).digest(), "little") <= target:
            found.append(nonce)
    return found


# ---------------------------------------------------------------- worker side

class _Unit:
    __slots__ = ("id", "prefix", "target", "pos", "end", "unreported")

    def __init__(self, msg: dict):
        self.id = int(msg["id"])
        self.prefix = bytes.fromhex(msg["prefix"])
        self.target = int(msg["target"], 16)
        self.pos = int(msg["start"])
        self.end = int(msg["end"])
        self.unreported = 0
        if len(self.prefix) != 76 or not 0 <= self.pos <= self.end <= 1 << 32:
            raise ValueError("bad work unit")


class _Worker:
    """The worker loop, with its input fd and output writer passed in."""

    def __init__(self, infd: int, write: Callable[[bytes], None]):
        self.infd = infd
        self.write = write
        self.buffer = b""
        self.unit: _Unit | None = None
        self.chunk = 2048
        self.last_report = time.monotonic()
        self.running = True

    def emit(self, **msg) -> None:
        self.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    def flush_hashes(self) -> None:
        u = self.unit
        if u is not None and u.unreported:
            self.emit(op="hashes", id=u.id, n=u.unreported)
            u.unreported = 0
        self.last_report = time.monotonic()

    def handle(self, msg: dict) -> None:
        op = msg.get("op")
        if op == "work":
            self.flush_hashes()
            self.unit = _Unit(msg)
            self.emit(op="started", id=self.unit.id)
        elif op == "idle":
            self.flush_hashes()
            self.unit = None
        elif op == "quit":
            self.flush_hashes()
            self.running = False

    def poll_input(self, timeout: float | None) -> None:
        """Read whatever the parent sent (waiting up to ``timeout``)."""
        ready, _, _ = select.select([self.infd], [], [], timeout)
        if not ready:
            return
        data = os.read(self.infd, 65536)
        if not data:  # parent went away
            self.flush_hashes()
            self.running = False
            return
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        if len(self.buffer) > MAX_LINE:
            raise ValueError("line too long from parent")
        for line in lines:
            if line.strip():
                self.handle(json.loads(line))
                if not self.running:
                    return

    def hash_chunk(self) -> None:
        u = self.unit
        end = min(u.pos + self.chunk, u.end)
        t0 = time.perf_counter()
        found = scan(u.prefix, u.target, u.pos, end)
        elapsed = time.perf_counter() - t0
        # keep chunks near CHUNK_SECONDS so new work is picked up quickly
        if elapsed < CHUNK_SECONDS / 2 and self.chunk < 1 << 20:
            self.chunk *= 2
        elif elapsed > CHUNK_SECONDS * 2 and self.chunk > 64:
            self.chunk //= 2
        u.unreported += end - u.pos
        u.pos = end
        for nonce in found:
            self.emit(op="found", id=u.id, nonce=nonce)
        if u.pos >= u.end:
            self.flush_hashes()
            self.emit(op="done", id=u.id)
            self.unit = None
        elif time.monotonic() - self.last_report >= REPORT_SECONDS:
            self.flush_hashes()

    def run(self) -> None:
        while self.running:
            self.poll_input(0 if self.unit else None)
            if self.running and self.unit:
                self.hash_chunk()


def worker_main() -> int:
    """Entry point of a worker process. The parent owns its lifetime: SIGINT
    (a terminal's Ctrl-C reaches the whole process group) is ignored, and
    the worker exits on ``quit`` or when stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    try:
        _Worker(sys.stdin.fileno(), write).run()
    except BrokenPipeError:
        pass
    return 0


# ---------------------------------------------------------------- parent side

class HasherListener(Protocol):
    def on_found(self, worker: int, unit_id: int, nonce: int) -> None: ...
    def on_hashes(self, worker: int, unit_id: int, count: int) -> None: ...
    def on_done(self, worker: int, unit_id: int) -> None: ...
    def on_worker_restarted(self, worker: int) -> None: ...


def unit_message(unit) -> dict:
    """The ``work`` message for a :class:`hashcoop.pool.tools.miner.work.WorkUnit`."""
    return {"op": "work", "id": unit.unit_id, "prefix": unit.header_prefix.hex(),
            "target": f"{unit.target:064x}", "start": unit.nonce_start, "end": unit.nonce_end}


class WorkerProcess(ProcessProtocol):
    """One worker child: frames its stdout into messages for the pool."""

    def __init__(self, pool: "HasherPool", index: int):
        self.pool = pool
        self.index = index
        self.buffer = b""
        self.ended = defer.Deferred()

    def send(self, msg: dict) -> None:
        if self.transport is not None:
            self.transport.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                try:
                    msg = json.loads(line)
                except ValueError:
                    log.warning("worker %d: bad line %r", self.index, line[:100])
                    continue
                self.pool._message(self.index, msg)

    def errReceived(self, data: bytes) -> None:
        for line in data.decode(errors="replace").splitlines():
            log.warning("worker %d: %s", self.index, line)

    def processEnded(self, reason) -> None:
        self.pool._ended(self, reason)
        self.ended.callback(None)


class HasherPool:
    """N worker processes, spawned with ``reactor.spawnProcess``.

    ``listener`` gets found nonces, hash counts and exhausted units, tagged
    with the worker index and the unit id. A worker that dies unexpectedly
    is respawned after ``restart_delay`` and the listener told, so it can
    hand out fresh work.
    """

    def __init__(self, reactor, processes: int, listener: HasherListener, *,
                 python: str = sys.executable, restart_delay: float = 1.0):
        if processes < 1:
            raise ValueError("need at least one process")
        self.reactor = reactor
        self.processes = processes
        self.listener = listener
        self.python = python
        self.restart_delay = restart_delay
        self.workers: list = [None] * processes
        self.stopping = False
        self._stopped = None

    def start(self) -> None:
        for i in range(self.processes):
            self._spawn(i)

    def _spawn(self, index: int) -> None:
        proto = WorkerProcess(self, index)
        self.reactor.spawnProcess(proto, self.python, [self.python, "-m", "hashcoop.pool.tools.miner.hasher"],
                                  env=dict(os.environ))
        self.workers[index] = proto

    def assign(self, index: int, unit) -> None:
        self._send(index, unit_message(unit))

    def idle(self, index: int) -> None:
        self._send(index, {"op": "idle"})

    def _send(self, index: int, msg: dict) -> None:
        proto = self.workers[index]
        if proto is not None and not self.stopping:
            proto.send(msg)

    def _message(self, index: int, msg: dict) -> None:
        op = msg.get("op")
        if op == "found":
            self.listener.on_found(index, msg["id"], msg["nonce"])
        elif op == "hashes":
            self.listener.on_hashes(index, msg["id"], msg["n"])
        elif op == "done":
            self.listener.on_done(index, msg["id"])

    def _ended(self, proto, reason) -> None:
        if self.stopping or self.workers[proto.index] is not proto:
            return
        log.error("worker %d exited unexpectedly: %s", proto.index, reason.getErrorMessage())
        self.workers[proto.index] = None

        def respawn():
            if not self.stopping:
                self._spawn(proto.index)
                self.listener.on_worker_restarted(proto.index)

        self.reactor.callLater(self.restart_delay, respawn)

    def stop(self, timeout: float = 3.0):
        """Ask every worker to quit (they report their last hashes first);
        kill any still running after ``timeout``. Returns a Deferred."""
        if self._stopped is not None:
            return self._stopped
        self.stopping = True
        waits = []
        for proto in self.workers:
            if proto is None or proto.transport is None:
                continue
            waits.append(proto.ended)
            proto.send({"op": "quit"})
            proto.transport.closeStdin()

            def kill(p=proto):
                if not p.ended.called:
                    try:
                        p.transport.signalProcess("KILL")
                    except Exception:  # already gone
                        pass

            call = self.reactor.callLater(timeout, kill)
            proto.ended.addBoth(lambda r, c=call: (c.cancel() if c.active() else None, r)[1])
        self._stopped = defer.DeferredList(waits).addCallback(lambda _: None)
        return self._stopped


if __name__ == "__main__":
    sys.exit(worker_main())
