"""The Stratum fuzz harness: bytes -> line framing -> JSON -> dispatch.

One ``FuzzTarget`` is a real ``StratumServer`` on a memory reactor (the
test harness of tests/stratum), kept for the whole run, as a server is: each
input is one connection whose bytes arrive in chunks cut at drawn points.
The inputs are real Stratum traffic mutated: every client line of the
recorded ckpool/cpuminer session (``tests/vectors``) and of the
firmware sequences (``tests/compat/sequences``), optionally behind a valid
handshake so that the deeper states (authorized, mining) are fuzzed too.

What every input must satisfy (``FuzzTarget.run`` raises ``FuzzFailure``):

* no exception leaves ``dataReceived`` (Twisted would log it and drop the
  connection: a crash of that connection's handling);
* nothing is logged at ERROR level (a sink failure, a bug caught late);
* every line the server writes is a JSON object: a reply
  ``{"id", "result", "error"}`` with ``error`` null or ``[int, str, null]``,
  or a request with a ``method``;
* every input line is answered or ends the connection: a line that is not a
  JSON object (or an object whose id is an array or an object) closes it; a request with a non-null id gets exactly one
  reply (in order); nothing is answered after the connection was dropped;
* when the connection is gone, nothing of it is left in the server (no
  session, no per-IP count, no extranonce1 held).

``FuzzTarget.leaks()`` checks the last point for the whole server, and
``memory()`` is the memory the server's own code holds (tracemalloc,
filtered to ``pool/`` and ``stratum/``), for the flat-memory check.

The generator is written as Hypothesis strategies (``streams()``), so a
failure shrinks to a small input; the fast battery runs a few thousand,
``python -m ops.reliability fuzz`` a million and more.
"""
from __future__ import annotations

import json
import logging
import math
import re
import tracemalloc
from collections import deque
from pathlib import Path

import orjson
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from tests import vectors
from tests.stratum.harness import ADDR, ADDR2, Harness, config, template

ROOT = Path(__file__).resolve().parents[2]
SEQUENCES = ROOT / "tests" / "compat" / "sequences"
KNOWN_METHODS = ("mining.subscribe", "mining.authorize", "mining.configure", "mining.suggest_difficulty",
                 "mining.extranonce.subscribe", "mining.submit", "mining.get_transactions", "mining.suggest_target",
                 "mining.ping", "pong", "client.get_version", "mining.set_difficulty", "mining.notify")


ID_TYPES = (type(None), int, float, str, bool)  # a JSON-RPC id; anything else closes the connection


class FuzzFailure(AssertionError):
    pass


# -- seeds: real traffic -------------------------------------------------------------------

_PLACEHOLDER = re.compile(rb"\{[A-Z0-9_]+\}")
# Run-time values (the job changes under the fuzzer): filled when an input is played.
_LIVE = (b"{JOB_ID}", b"{NTIME}", b"{USER}")
# Fixed values for everything else a fixture leaves open.
_FIXED = {
    b"{PASSWORD}": b"x", b"{EXTRANONCE2}": b"00000000", b"{NONCE}": b"1234abcd", b"{VERSION_BITS}": b"00002000",
    b"{ID}": b"7", b"{SUGGESTED_DIFFICULTY}": b"512", b"{TARGET_HEX}": b"00000000ffff" + b"0" * 52,
    b"{MODEL}": b"BM1366", b"{FW_VERSION}": b"v2.4.0", b"{BFG_AGENT}": b"bfgminer/5.5.0", b"{CGMINER_AGENT}": b"cgminer/4.12.1",
    b"{CPUMINER_VERSION}": b"2.5.1", b"{HOST_PORT}": b"pool.example:3333", b"{TIMESTAMP}": b"1700000000",
    b"{HMAC}": b"0" * 64,
}


def _fixture_lines() -> list[bytes]:
    out = []
    for path in sorted(SEQUENCES.glob("*.json")):
        fx = json.loads(path.read_text())
        lines = [m.get("line") for m in fx.get("messages", [])]
        lines += [r.get("line") for r in fx.get("replies_to_server_requests", [])]
        for v in fx.get("variants", {}).values():
            lines += v.get("messages", []) if isinstance(v, dict) else []
        out += [line.encode() for line in lines if isinstance(line, str) and line.startswith("{")]
    return out


def _session_lines() -> list[bytes]:
    rec = vectors.ckpool()
    return [e["line"].encode() for e in rec["session"] if e["dir"] == "c2s"]


def _fix(line: bytes) -> bytes:
    def sub(m):
        tok = m.group(0)
        return tok if tok in _LIVE else _FIXED.get(tok, b"1")
    return _PLACEHOLDER.sub(sub, line)


def seed_lines() -> list[bytes]:
    """Every real client line, live placeholders ({JOB_ID}, {NTIME},
    {USER}) left in; the ckpool session's lines as recorded."""
    seen, out = set(), []
    for line in _session_lines() + [_fix(x) for x in _fixture_lines()]:
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


def _parses(line: bytes) -> bool:
    try:
        return type(orjson.loads(line)) is dict
    except orjson.JSONDecodeError:
        return False


SEEDS = seed_lines()
SEED_OBJECTS = [orjson.loads(x) for x in SEEDS if _parses(x)]

# Valid openings, so that later lines meet a subscribed/authorized session.
PREFIXES: list[list[bytes]] = [
    [],
    [b'{"id":1,"method":"mining.subscribe","params":["fuzz/1"]}'],
    [b'{"id":1,"method":"mining.subscribe","params":["fuzz/1"]}', b'{"id":2,"method":"mining.authorize","params":["{USER}","x"]}'],
    [b'{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"ffffffff"}]}',
     b'{"id":2,"method":"mining.subscribe","params":["bitaxe/BM1366/v2.4.0"]}',
     b'{"id":3,"method":"mining.authorize","params":["{USER}","x"]}'],
    [b'{"id":2,"method":"mining.authorize","params":["{USER}","d=0.001"]}', b'{"id":1,"method":"mining.subscribe","params":[]}'],
]


# -- JSON with raw tokens ------------------------------------------------------------------

class Raw:
    """A JSON token written verbatim (NaN, 1e999, 40-digit integers, deep nesting)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"


def dump(v) -> str:
    if isinstance(v, Raw):
        return v.text
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ",".join(dump(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(str(k)) + ":" + dump(x) for k, x in v.items()) + "}"
    raise TypeError(type(v))


def nested(depth: int, kind: str = "[") -> Raw:
    if kind == "[":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


SPECIAL_STRINGS = [
    "", " ", "0x1f", "0X00000001", "00000000", "ffffffff", "FFFFFFFF", "zzzzzzzz", "1234abcd ", " 1234abcd", "+1", "-1",
    "1e-300", "1e300", "NaN", "inf", "-inf", "nan", "d=0", "d=-1", "d=1e-300", "d=1e300", "d=nan", "d=inf", "d=abc",
    "x,d=64", "d=", "\u0000", "\u2028", "\ufeff", "é" * 10, "a" * 300, "0" * 64, "00" * 40, "{JOB_ID}", "{USER}",
    "{JOB_ID}0001", "{JOB_ID}ffff", "{JOB_ID}FFFF", "{JOB_ID}0000", "mining.submit", "version-rolling", "minimum-difficulty",
    ADDR, ADDR2, ADDR + ".w", ADDR + "." + "w" * 300, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", ADDR.upper(),
]
RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999", "-0", "-0.0", "123456789012345678901234567890",
               "-123456789012345678901234567890", "18446744073709551616", "9223372036854775808", "1E+2", "0.1e1", "1e-300",
               "1e300", "4.9e-324", "1.7976931348623157e308", "01", "0x10", ".5", "1.", "+1", "--1", "1_000"]

_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2 ** 70), 2 ** 70),
    st.integers(-3, 70000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(SPECIAL_STRINGS),
    st.sampled_from(RAW_NUMBERS).map(Raw),
)
hostile_values = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=8),
    st.dictionaries(st.text(max_size=12) | st.sampled_from(["version-rolling.mask", "minimum-difficulty.value", "id", "method"]),
                    _scalars, max_size=5),
    st.integers(1, 1200).map(nested),
    st.integers(1, 1200).map(lambda d: nested(d, "{")),
    st.integers(200, 70000).map(lambda n: "x" * n),
    st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                 max_leaves=20),
)


def _paths(v, prefix=()):
    """Every place in a decoded message a value can be put."""
    yield prefix
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _paths(x, prefix + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from _paths(x, prefix + (i,))


def _set(obj, path, value):
    if not path:
        return value
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return obj


def _copy(v):
    return orjson.loads(orjson.dumps(v))


@st.composite
def json_message(draw) -> bytes:
    """A real message with values replaced, keys dropped or added, methods swapped."""
    msg = _copy(draw(st.sampled_from(SEED_OBJECTS)))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["set", "set", "set", "drop", "add", "method", "params", "params-len", "wrap"]))
        if op == "set":
            paths = list(_paths(msg))
            path = draw(st.sampled_from(paths))
            msg = _set(msg, path, draw(hostile_values))
        elif op == "drop" and isinstance(msg, dict) and msg:
            msg.pop(draw(st.sampled_from(sorted(msg, key=str))))
        elif op == "add" and isinstance(msg, dict):
            msg[draw(st.sampled_from(["id", "method", "params", "result", "error", "jsonrpc", "x"]))] = draw(hostile_values)
        elif op == "method" and isinstance(msg, dict):
            msg["method"] = draw(st.sampled_from(KNOWN_METHODS) | st.text(max_size=20))
        elif op == "params" and isinstance(msg, dict):
            msg["params"] = draw(hostile_values)
        elif op == "params-len" and isinstance(msg, dict) and isinstance(msg.get("params"), list):
            n = draw(st.integers(0, 12))
            p = msg["params"]
            msg["params"] = p[:n] if n <= len(p) else p + draw(st.lists(hostile_values, min_size=n - len(p), max_size=n - len(p)))
        elif op == "wrap":
            msg = [msg]
    return dump(msg).encode()


@st.composite
def byte_message(draw) -> bytes:
    """A real line with its bytes damaged."""
    b = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup", "splice", "truncate"]))
        n = len(b)
        i = draw(st.integers(0, n))
        if op == "flip" and n:
            b[min(i, n - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            b[i:i] = draw(st.sampled_from([b"\n", b"\r", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\", b'"', b"{", b"[",
                                           b"]", b"}", b",", b":", b"\\u0000", b"\\ud800", b" " * 100]) | st.binary(max_size=8))
        elif op == "delete":
            del b[i:i + draw(st.integers(1, 16))]
        elif op == "dup":
            b[i:i] = b[i:i + draw(st.integers(1, 64))]
        elif op == "splice":
            other = draw(st.sampled_from(SEEDS))
            b = b[:i] + other[draw(st.integers(0, len(other))):]
        elif op == "truncate":
            b = b[:i]
    return bytes(b)


message = st.one_of(
    json_message(), json_message(), json_message(), byte_message(), byte_message(),
    st.sampled_from(SEEDS),
    st.binary(max_size=200),
    st.sampled_from([b"", b" ", b"\r", b"null", b"[]", b"1", b'"x"', b"{}", b'{"id":1}', b'{"method":null}', b"\xef\xbb\xbf{}",
                     b'{"id":1,"method":"mining.subscribe","params":[]}{"id":2}', b'{"id":1,"id":2,"method":"mining.subscribe"}']),
)


@st.composite
def streams(draw) -> tuple[bytes, tuple[int, ...]]:
    """(bytes of one connection, cut points): an opening, then mutated lines."""
    lines = list(draw(st.sampled_from(PREFIXES))) + draw(st.lists(message, min_size=1, max_size=6))
    data = b"\n".join(lines)
    if draw(st.booleans()):
        data += b"\n"
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=4))
    return data, tuple(sorted(set(cuts)))


# -- the target ----------------------------------------------------------------------------

class _ErrorLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def fuzz_config():
    # the default line cap (4096): deep nesting up to orjson's own limit gets through
    return config(max_connections_per_ip=1_000_000)


class FuzzTarget:
    def __init__(self, cfg=None):
        self.h = Harness(cfg or fuzz_config())
        # bounded as the pool's own are, but small, so memory is flat after a short warm-up
        self.h.sink.accepted = deque(maxlen=100)
        self.h.sink.rejected = deque(maxlen=100)
        self.h.jobs.max_jobs = 8
        self.n = 0
        self.dropped = 0
        self.replies = 0
        self._err = _ErrorLog()
        logging.getLogger("hashcoop").addHandler(self._err)
        self._ip = 0

    def close(self) -> None:
        logging.getLogger("hashcoop").removeHandler(self._err)

    def _live(self, data: bytes) -> bytes:
        job = self.h.jobs.current
        return (data.replace(b"{JOB_ID}", job.id.encode()).replace(b"{NTIME}", f"{job.ntime:08x}".encode())
                .replace(b"{USER}", (ADDR + ".fuzz").encode()))

    def tick(self) -> None:
        """Time passes and the chain moves on, as on a live server."""
        self.h.reactor.advance(61)
        self.h.server._sweep()
        if self.n % 5000 == 0:
            self.h.server.on_template(template(prev=self.n.to_bytes(32, "little")), True)
        else:
            self.h.server.on_template(template(), False)

    def run(self, data: bytes, cuts: tuple[int, ...] = ()) -> None:
        self.n += 1
        if self.n % 500 == 0:
            self.tick()
        data = self._live(data)
        self._ip = (self._ip + 1) % 250
        ip = f"10.66.{self._ip}.{self.n % 250 + 1}"
        proto = self.h.factory.buildProtocol(IPv4Address("TCP", ip, 40000))
        if proto is None:
            raise FuzzFailure(f"connection refused: {self.h.server.admission.per_ip[ip]} open from {ip}")
        transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 40000))
        proto.makeConnection(transport)
        errors_before = len(self._err.records)
        pos = 0
        try:
            for cut in (*cuts, len(data)):
                if cut > pos:
                    proto.dataReceived(data[pos:cut])
                    pos = cut
        except Exception as e:
            raise FuzzFailure(f"{type(e).__name__} escaped dataReceived: {e}\ninput: {data[:2000]!r}") from e
        finally:
            closed = proto.closing
            proto.connectionLost(None)  # what Twisted does once the socket is closed, by either side
        if len(self._err.records) > errors_before:
            rec = self._err.records[-1]
            raise FuzzFailure(f"logged an error: {rec.getMessage()} {rec.exc_text or ''}\ninput: {data[:2000]!r}")
        self.replies += self._check_output(data, transport.value(), closed)
        self.dropped += closed
        if proto.session is not None:
            raise FuzzFailure("the session outlived its connection")

    def _check_output(self, data: bytes, out: bytes, closed: bool) -> int:
        """Every server line well formed; every request line answered in order, or the connection closed."""
        replies = []
        for line in out.split(b"\n")[:-1] if out else []:
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise FuzzFailure(f"server wrote a line that is not JSON: {line[:300]!r}") from None
            if type(msg) is not dict:
                raise FuzzFailure(f"server wrote a non-object: {line[:300]!r}")
            if msg.get("method") is not None:
                continue
            if set(msg) != {"id", "result", "error"}:
                raise FuzzFailure(f"malformed reply: {line[:300]!r}")
            err = msg["error"]
            if err is not None and not (type(err) is list and len(err) == 3 and type(err[0]) is int and type(err[1]) is str
                                        and err[2] is None):
                raise FuzzFailure(f"malformed error member: {line[:300]!r}")
            replies.append(msg["id"])
        # what the framing delivered: complete lines within the cap, in order
        expected = []
        complete = data.split(b"\n")[:-1]
        for line in complete:
            if len(line) > self.h.server.max_line:
                break
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                if not line.strip():
                    continue
                break  # must have closed the connection
            if type(msg) is not dict or type(msg.get("id")) not in ID_TYPES:
                break
            if msg.get("method") is None:
                continue
            if msg.get("id") is not None:
                expected.append(msg["id"])
        else:
            rest = data.rsplit(b"\n", 1)[-1] if b"\n" in data else data
            if len(rest) <= self.h.server.max_line and not closed:
                if replies != expected:
                    raise FuzzFailure(f"replies {replies[:20]} for requests {expected[:20]}\ninput: {data[:2000]!r}")
                return len(replies)
        if not closed and len(replies) >= len(expected):
            # every request answered before a line that should have closed it
            raise FuzzFailure(f"the connection survived a line that is not a JSON object or too long\ninput: {data[:2000]!r}")
        if replies != expected[:len(replies)]:
            raise FuzzFailure(f"replies {replies[:20]} are not the requests {expected[:20]} in order\ninput: {data[:2000]!r}")
        return len(replies)

    def leaks(self) -> list[str]:
        """What the server still holds of connections that are gone."""
        s = self.h.server
        out = []
        if s.sessions:
            out.append(f"{len(s.sessions)} sessions")
        if s.ready:
            out.append(f"{len(s.ready)} ready sessions")
        if s.admission.per_ip:
            out.append(f"per-IP counts for {len(s.admission.per_ip)} addresses")
        if s.extranonce.live:
            out.append(f"{len(s.extranonce.live)} extranonce1 values held")
        return out


def memory_in(paths=("/pool/", "/stratum/")) -> int:
    """Bytes currently allocated by code under ``paths`` (tracemalloc must be on)."""
    snap = tracemalloc.take_snapshot()
    filters = [tracemalloc.Filter(True, f"*{p}*") for p in paths]
    return sum(s.size for s in snap.filter_traces(filters).statistics("filename"))
