"""Small HTTP and Stratum clients for the deployment tests (their
processes, Redis and ``hashcoop run``, are in tests.procs)."""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_json(url: str, timeout: float = 10.0):
    status, body = http_get(url, timeout)
    return status, (json.loads(body) if body else None)


def subscribe(port: int, user: str, timeout: float = 10.0) -> tuple[socket.socket, str]:
    """A bare Stratum client: subscribe and authorize; returns the open
    socket (keep it open: extranonce1 is unique among live sessions) and
    the extranonce1 the pool gave it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(b'{"id":1,"method":"mining.subscribe","params":["ops-test/1"]}\n'
              + json.dumps({"id": 2, "method": "mining.authorize", "params": [user, "x"]}).encode() + b"\n")
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        for line in buf.split(b"\n")[:-1]:
            msg = json.loads(line)
            if msg.get("id") == 1 and msg.get("result"):
                return s, msg["result"][1]
    s.close()
    raise RuntimeError(f"no subscribe answer from port {port}")
