"""Raw HTTP exchanges for comparing two servers byte by byte: send chunks
on one connection, collect the responses, and note whether the server
closed the connection."""
from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field

_STATUS = re.compile(rb"HTTP/\d\.\d \d{3} [^\r\n]*")


@dataclass
class Response:
    status_line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class Exchange:
    responses: list[Response] = field(default_factory=list)
    rest: bytes = b""  # bytes that do not parse as a response
    closed: bool = False  # the server closed the connection

    def comparable(self) -> dict:
        """What two servers must agree on: status lines, headers (any
        order; a Date header's value is only checked for its form), bodies,
        and whether the connection was closed."""
        out = []
        for r in self.responses:
            headers = []
            for k, v in r.headers:
                if k.lower() == b"date":
                    v = b"<date>" if re.fullmatch(rb"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", v) else v
                headers.append((k.lower().decode(), v.decode("latin-1")))
            out.append({"status": r.status_line.decode(), "headers": sorted(headers), "body": r.body.decode("latin-1")})
        return {"responses": out, "rest": self.rest.decode("latin-1"), "closed": self.closed}


def parse_responses(data: bytes, closed: bool) -> tuple[list[Response], bytes]:
    """Complete responses at the start of ``data``; what is left over. A
    response without Content-Length (HTTP/1.0) runs to the end of the
    connection."""
    out = []
    while data:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0 or not _STATUS.match(data):
            break
        lines = data[:head_end].split(b"\r\n")
        headers = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines[1:]]
        resp = Response(lines[0], headers, b"")
        rest = data[head_end + 4:]
        code = int(lines[0].split(b" ")[1])
        length = resp.header(b"content-length")
        if length is not None:
            n = int(length)
            if len(rest) < n:
                break
            resp.body, rest = rest[:n], rest[n:]
        elif code not in (204, 304) and not 100 <= code < 200:
            if not closed:
                break
            resp.body, rest = rest, b""
        out.append(resp)
        data = rest
    return out, data


def exchange(port: int, chunks: list[bytes], *, responses: int, half_close: bool = False, timeout: float = 10.0,
             settle: float = 0.3, pause: float = 0.05) -> Exchange:
    """Send ``chunks`` (``pause`` apart) on one connection; read until
    ``responses`` complete responses came (or ``timeout``), then ``settle``
    seconds more to see whether the server closes or sends anything else."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    data = b""
    closed = False
    try:
        for i, chunk in enumerate(chunks):
            if i:
                time.sleep(pause)
            s.sendall(chunk)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout
        settled_at = None
        while True:
            now = time.monotonic()
            got, _ = parse_responses(data, closed)
            if settled_at is None and len(got) >= responses:
                settled_at = now + settle
            end = settled_at if settled_at is not None else deadline
            if now >= end or closed:
                break
            s.settimeout(max(0.001, end - now))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
            data += chunk
    finally:
        s.close()
    got, rest = parse_responses(data, closed)
    return Exchange(got, rest, closed)
