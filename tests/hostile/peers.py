"""Hostile peers by input class, on real sockets, for the cost-per-byte
and backpressure cases of the battery (RELIABILITY.md, "Backpressure and
cost per byte").

``CLASSES`` names every kind of input a peer can send over and over: each
method, blank and whitespace-only lines, unknown methods, reply-shaped
lines, rejected submits, oversized numbers, deep nesting, bad JSON, one
endless line. ``feed`` sends one class until a number of bytes has gone
into the pool's sockets (reconnecting whenever the pool closes), reading
or not reading what comes back, and says what the peer saw.

    python -m tests.hostile.peers HOST PORT --cls subscribe --bytes 1000000 [--no-read] [--src 127.0.4.1]

runs ``feed`` in its own process and prints its result as one JSON line
(the ten-peer case runs ten of them beside the honest miners).
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import select
import socket
import sys
import time

ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
HANDSHAKE = (b'{"id":1,"method":"mining.subscribe","params":["peer/1"]}\n'
             b'{"id":2,"method":"mining.authorize","params":["' + ADDR.encode() + b'.peer","x"]}\n')


def _alternating():
    i = 0
    while True:
        i += 1
        yield b'{"id":%d,"method":"mining.suggest_difficulty","params":[%d]}\n' % (i, 1 + i % 2)


def _repeat(line: bytes):
    while True:
        yield line


# name -> (a generator of lines, handshake first, answered: the pool replies to each line it accepts)
CLASSES: dict[str, tuple] = {
    "blank": (lambda: _repeat(b"\n"), False, False),
    "whitespace": (lambda: _repeat(b" \t \r\n"), False, False),
    "reply-shaped": (lambda: _repeat(b'{"id":7,"result":"v2.4.0","error":null}\n'), False, False),
    "subscribe": (lambda: _repeat(b'{"id":1,"method":"mining.subscribe","params":["x"]}\n'), False, True),
    "authorize": (lambda: _repeat(b'{"id":2,"method":"mining.authorize","params":["' + ADDR.encode() + b'.w","x"]}\n'),
                  False, True),
    "configure": (lambda: _repeat(b'{"id":3,"method":"mining.configure","params":[["version-rolling"],'
                                  b'{"version-rolling.mask":"1fffe000"}]}\n'), True, True),
    "suggest-difficulty": (_alternating, True, True),
    "extranonce-subscribe": (lambda: _repeat(b'{"id":4,"method":"mining.extranonce.subscribe","params":[]}\n'), True, True),
    "unknown-method": (lambda: _repeat(b'{"id":5,"method":"mining.nope","params":[]}\n'), False, True),
    "rejected-submit": (lambda: _repeat(b'{"id":6,"method":"mining.submit","params":["' + ADDR.encode()
                                        + b'.peer","ffffffff","00000000","00000000","00000000"]}\n'), True, True),
    "oversized-number": (lambda: _repeat(b'{"id":' + b"9" * 400 + b',"method":"mining.subscribe","params":[]}\n'),
                         False, True),
    "deep-nesting": (lambda: _repeat(b'{"id":1,"method":"mining.submit","params":' + b"[" * 1500 + b"]" * 1500 + b"}\n"),
                     False, True),
    "bad-json": (lambda: _repeat(b"garbage\n"), False, True),
    "endless-line": (lambda: _repeat(b"x" * 65536), False, True),
}
NO_REPLY = sorted(name for name, (_, _, answered) in CLASSES.items() if not answered)


def feed(host: str, port: int, cls: str, total: int, *, read: bool = True, src: str = "127.0.0.1",
         stall: float = 2.0, timeout: float = 120.0, connections: int = 0) -> dict:
    """Send ``cls`` until ``total`` bytes went into the pool's sockets,
    over as many connections as the pool closes. With ``read``, replies
    are read as they come, and the last connection is half-closed and read
    to its end (so the pool has handled everything sent); without, a
    connection is fed until the pool stops taking its bytes for ``stall``
    seconds, then read to its end, and the feed ends there. ``connections``
    (when not 0) ends the feed after that many connections, however they end. Returns bytes sent and received,
    connections, how each ended (``eof``: the pool's FIN; ``reset``: its
    RST; ``refused``), reply lines, errors among them, stalls."""
    lines_of, handshake, _ = CLASSES[cls]
    out = {"cls": cls, "sent": 0, "received": 0, "connections": 0, "ended": {}, "lines": 0, "errors": 0,
           "results": 0, "stalled": 0, "seconds": 0.0}
    t0 = time.monotonic()
    gen = lines_of()
    while out["sent"] < total and time.monotonic() - t0 < timeout:
        if connections and out["connections"] >= connections:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((src, 0))
            s.connect((host, port))
        except OSError:
            s.close()
            out["ended"]["refused"] = out["ended"].get("refused", 0) + 1
            time.sleep(0.05)
            continue
        out["connections"] += 1
        s.setblocking(False)
        pending = HANDSHAKE if handshake else b""
        rbuf = b""
        ended = None
        quiet_since = None
        while ended is None:
            if out["sent"] >= total:  # all sent on a live connection: let the pool finish, read to the end
                reset = False
                if read:
                    try:
                        s.shutdown(socket.SHUT_WR)
                    except OSError:  # ENOTCONN: the pool reset it as the last bytes went (CI at 8392b1c and 76ffe80)
                        reset = True  # what it sent before the reset is still queued here: read it
                ended = _drain(s, out, rbuf, timeout)
                if reset:
                    ended = "reset"
                break
            if not pending:
                chunk, n = [], 0
                while n < 65536:
                    line = next(gen)
                    chunk.append(line)
                    n += len(line)
                pending = b"".join(chunk)[:total - out["sent"]]
            r, w, _ = select.select([s] if read else [], [s], [], 0.2)
            if w:
                try:
                    k = s.send(pending)
                    out["sent"] += k
                    pending = pending[k:]
                    quiet_since = None
                except BlockingIOError:
                    pass
                except OSError as e:
                    ended = "reset" if e.errno in (errno.ECONNRESET, errno.EPIPE) else f"error-{e.errno}"
            elif not read:
                # the pool takes nothing more: its reading is paused (or it closed)
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > stall:
                    out["stalled"] += 1
                    ended = _drain(s, out, rbuf, timeout)
                    total = out["sent"]  # one stalled connection is the case: no other after it
            if r and ended is None:
                try:
                    data = s.recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError as e:
                    ended = "reset" if e.errno == errno.ECONNRESET else f"error-{e.errno}"
                    break
                if not data:
                    ended = "eof"
                    break
                out["received"] += len(data)
                rbuf = _count(out, rbuf + data)
        s.close()
        out["ended"][ended] = out["ended"].get(ended, 0) + 1
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out


def _count(out: dict, buf: bytes) -> bytes:
    """Count the complete lines in ``buf``; return the partial rest."""
    *lines, rest = buf.split(b"\n")
    for line in lines:
        out["lines"] += 1
        if b'"error":[' in line:
            out["errors"] += 1
        elif b'"result":' in line:
            out["results"] += 1
    return rest


def _drain(s: socket.socket, out: dict, rbuf: bytes, timeout: float) -> str:
    """Read the connection to its end (the pool closes a stalled one)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([s], [], [], 0.5)
        if not r:
            continue
        try:
            data = s.recv(1 << 20)
        except BlockingIOError:
            continue
        except OSError as e:
            return "reset" if e.errno in (errno.ECONNRESET, errno.ENOTCONN) else f"error-{e.errno}"
        if not data:
            return "eof"
        out["received"] += len(data)
        rbuf = _count(out, rbuf + data)
    return "open"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--cls", required=True, choices=sorted(CLASSES))
    ap.add_argument("--bytes", type=int, default=1_000_000)
    ap.add_argument("--no-read", action="store_true")
    ap.add_argument("--src", default="127.0.0.1")
    ap.add_argument("--stall", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--connections", type=int, default=0)
    ap.add_argument("--nice", type=int, default=0)
    a = ap.parse_args(argv)
    if a.nice:
        os.nice(a.nice)
    res = feed(a.host, a.port, a.cls, a.bytes, read=not a.no_read, src=a.src, stall=a.stall, timeout=a.timeout,
               connections=a.connections)
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
