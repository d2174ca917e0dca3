"""Replay machinery for ``test_replay.py``: play a real client's recorded
Stratum lines (``sequences/*.json``) into the server running on the test
harness, and read the server's answer the way that client's code reads it.

Nothing here imports the pool's hashing or target code: the client side
builds coinbases, merkle roots and headers itself (as firmware does), so a
share the server accepts proves both sides agree on the header.
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path
from typing import NamedTuple

import orjson
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from hashcoop.pool.config import load_config
from hashcoop.pool.core.btc.address import address_to_script, get_network
from hashcoop.pool.core.jobs import JobManager
from hashcoop.stratum.extranonce import Extranonce1Allocator
from tests.stratum.harness import ADDR, Harness, template

SEQ_DIR = Path(__file__).resolve().parent / "sequences"
BIP320_MASK = 0x1FFFE000
DIFF1 = 0xFFFF << 208
UINT32_MAX = 0xFFFFFFFF
GENESIS_TIME = 1231006505

# Ports. ASIC firmware keeps the difficulty as an integer (ESP-Miner uint32,
# Braiins u32, BFGMiner reads fractions as bdiff): integer difficulties from 1.
ASIC_PORT = {"port": 3333, "start_difficulty": 1, "min_difficulty": 1, "max_difficulty": 1e6}
# Software miners (and the fractional re-runs that get ordinary accepted
# shares at test speed): the cap of 4e-8 is where vardiff and suggestions land.
CPU_PORT = {"port": 3334, "start_difficulty": 1e-8, "min_difficulty": 1e-10, "max_difficulty": 4e-8}
# NerdMiner suggests 0.0001; the cap leaves vardiff room above it.
NERD_PORT = {"port": 3335, "start_difficulty": 1e-8, "min_difficulty": 1e-10, "max_difficulty": 1e-3}
# NiceHash checks the starting difficulty against its minimum (hathor-core#63: 500k for SHA256).
NICEHASH_PORT = {"port": 3336, "start_difficulty": 500_000, "min_difficulty": 500_000, "max_difficulty": 1e12}

# On ASIC ports a share meeting difficulty 1 costs ~4e9 hashes, out of reach
# here. Blocks are not: the network target of those templates is easy
# (difficulty 1e-6, ~4300 hashes), and the server must accept and credit a
# share that solves a block whatever the share difficulty. Fractional ports
# get a hard network target so their ordinary shares are never blocks.
EASY_NETWORK = 1e-6
HARD_NETWORK = 1.0
# A template version with a BIP320 bit (0x2000) and a signal bit outside the
# mask (0x4): the server must clear the masked bits in notify so that XOR,
# OR-ed and absolute version bits all describe the same header.
ASIC_TEMPLATE_VERSION = 0x20002004


# -- fixtures -------------------------------------------------------------------
def fixture(client: str) -> dict:
    return json.loads((SEQ_DIR / f"{client}.json").read_text())


def step(fx: dict, number) -> str:
    """The recorded line of a message step (``"line"`` as the fixture gives it)."""
    for m in fx["messages"]:
        if m["step"] == number:
            assert m["line"] is not None, f"{fx['client']} step {number} has no recorded line"
            return m["line"]
    raise KeyError(number)


_PLACEHOLDER = re.compile(r"\{[A-Z0-9_]+\}")


def fill(line: str, **values) -> bytes:
    """The fixture line with its ``{PLACEHOLDERS}`` replaced, as bytes."""
    for key, value in values.items():
        line = line.replace("{" + key + "}", str(value))
    left = _PLACEHOLDER.findall(line)
    assert not left, f"unfilled placeholders {left} in {line!r}"
    return line.encode()


# -- harness ----------------------------------------------------------------------
def make_harness(port: dict, *, network_diff: float, version: int | None = None, extranonce2_size: int = 4,
                 min_shares: int = 1) -> Harness:
    """A server with one port. ``min_shares`` 1 lets one accepted share drive
    a vardiff retarget (a pool setting, not a server change)."""
    cfg = load_config(data={
        "pool": {"network": "regtest", "address": ADDR, "coinbase_tag": "/test/", "extranonce2_size": extranonce2_size},
        "nodes": [{"url": "http://127.0.0.1:1/"}],
        "stratum": {"ports": [port]},
        "vardiff": {"target_interval": 10, "retarget_interval": 60, "min_shares": min_shares},
    }, env={})
    h = Harness(cfg, with_job=False)
    # Fixed extranonce1s make every run search the same nonces (same speed).
    h.server.extranonce = Extranonce1Allocator(cfg.pool.instance_id, start=0x5EED00)
    # Job sequence numbers whose hex has letters, so the lowercase rule bites.
    h.jobs = h.server.jobs = JobManager(
        payout_script=address_to_script(ADDR, get_network("regtest")), tag=b"/test/",
        extranonce_size=4 + extranonce2_size, now=h.reactor.seconds, first_seq=0x5EEDFACE)
    changes = {} if version is None else {"version": version}
    h.server.on_template(template(network_diff=network_diff, **changes), True)
    return h


class Line(NamedTuple):
    raw: bytes
    msg: dict

    @property
    def method(self):
        return self.msg.get("method")

    @property
    def is_reply(self) -> bool:
        return "method" not in self.msg


def check_error(err) -> None:
    """The error member: ``[int, "message", null]`` (Braiins deserialises
    ``StratumError(i32, String, Option<String>)``; cpuminer/ESP-Miner read error[1])."""
    assert type(err) is list and len(err) == 3, err
    assert type(err[0]) is int and type(err[1]) is str and err[1], err
    assert err[2] is None or type(err[2]) is str, err


class Conn:
    """One miner connection on the harness, sending raw lines."""

    def __init__(self, h: Harness, ip: str = "10.7.0.1", port: int = 50000):
        self.h = h
        self.proto = h.factory.buildProtocol(IPv4Address("TCP", ip, port))
        assert self.proto is not None
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", ip, port))
        self.proto.makeConnection(self.transport)
        self._pos = 0
        self.history: list[Line] = []

    @property
    def session(self):
        return self.proto.session

    @property
    def connected(self) -> bool:
        return not self.transport.disconnecting and not self.proto.closing

    def send(self, *lines: bytes) -> None:
        """Lines written back to back: they arrive in one TCP read."""
        self.proto.dataReceived(b"".join(line + b"\n" for line in lines))

    def recv(self) -> list[Line]:
        """Every line the server wrote since the last call. Checks what every
        client needs of every line: newline-terminated JSON objects, and each
        reply carrying exactly id, result and error (NiceHash needs ``error``
        present: miningcore#1709)."""
        data = self.transport.value()
        new, self._pos = data[self._pos:], len(data)
        assert not new or new.endswith(b"\n"), new[-200:]
        out = []
        for raw in new.split(b"\n")[:-1]:
            msg = orjson.loads(raw)
            assert type(msg) is dict, raw
            if "method" not in msg:
                assert set(msg) == {"id", "result", "error"}, raw
                if msg["error"] is not None:
                    check_error(msg["error"])
            else:
                assert msg.get("id", None) is None, raw  # server pushes are notifications
            out.append(Line(raw, msg))
        self.history.extend(out)
        return out


def reply(line: Line, mid) -> dict:
    """``line`` is the reply to request ``mid``: id echoed verbatim (same JSON
    type: 0 stays 0, "auth" stays "auth")."""
    m = line.msg
    assert line.is_reply, line.raw
    assert type(m["id"]) is type(mid) and m["id"] == mid, (line.raw, mid)
    return m


def replies(lines: list[Line]) -> list[dict]:
    return [x.msg for x in lines if x.is_reply]


def methods(lines: list[Line]) -> list[str]:
    return [x.method if not x.is_reply else f"reply:{x.msg['id']}" for x in lines]


def accepted(m: dict) -> None:
    """What every client counts as accepted: boolean true, null error."""
    assert m["result"] is True and m["error"] is None, m


def rejected(m: dict, code: int) -> None:
    assert m["result"] is False, m
    check_error(m["error"])
    assert m["error"][0] == code, m


# -- the client's job bookkeeping ---------------------------------------------------
_HEX = re.compile(r"[0-9a-f]*").fullmatch
_HEX_ANY = re.compile(r"[0-9a-fA-F]*").fullmatch


def target_of(difficulty: float) -> int:
    return int(DIFF1 / difficulty)


def sha256d(b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


def swap_words(b: bytes) -> bytes:
    return b"".join(b[i:i + 4][::-1] for i in range(0, len(b), 4))


def compact_target(bits: int) -> int:
    exp, mant = bits >> 24, bits & 0x7FFFFF
    return mant << (8 * (exp - 3)) if exp >= 3 else mant >> (8 * (3 - exp))


class Work:
    """A mining.notify as a client stores it."""

    def __init__(self, params: list, difficulty):
        self.params = params
        self.id = params[0]
        self.prevhash = swap_words(bytes.fromhex(params[1]))  # header byte order
        self.coinb1 = bytes.fromhex(params[2])
        self.coinb2 = bytes.fromhex(params[3])
        self.branch = [bytes.fromhex(b) for b in params[4]]
        self.version = int(params[5], 16)
        self.bits = int(params[6], 16)
        self.ntime = int(params[7], 16)
        self.ntime_hex = params[7]
        self.clean = params[8]
        self.difficulty = difficulty  # latched when the notify arrived
        self.network_target = compact_target(self.bits)

    def coinbase(self, en1: bytes, en2: bytes) -> bytes:
        return self.coinb1 + en1 + en2 + self.coinb2

    def search(self, en1: bytes, en2: bytes, *, version: int | None = None, ntime: int | None = None,
               meet: int | None = None, miss: tuple[int, ...] = (), start: int = 0, tries: int = 20_000_000):
        """First nonce from ``start`` whose header hash is <= ``meet`` and
        > every target in ``miss``. Returns (nonce, hash as int)."""
        h = sha256d(self.coinbase(en1, en2))
        for b in self.branch:
            h = sha256d(h + b)
        v = self.version if version is None else version
        t = self.ntime if ntime is None else ntime
        prefix = struct.pack("<I", v) + self.prevhash + h + struct.pack("<II", t, self.bits)
        mid = hashlib.sha256(prefix[:64]).copy
        tail = bytearray(prefix[64:] + b"\0\0\0\0")
        pack_into = struct.Struct("<I").pack_into
        sha256 = hashlib.sha256
        for nonce in range(start, min(start + tries, 1 << 32)):
            pack_into(tail, 12, nonce)
            c = mid()
            c.update(tail)
            hv = int.from_bytes(sha256(c.digest()).digest(), "little")
            if (meet is None or hv <= meet) and all(hv > m for m in miss):
                return nonce, hv
        raise AssertionError("no nonce found")

    def share(self, en1, en2, difficulty, *, harder=None, **kw):
        """A share meeting ``difficulty`` (with margin), not a block, and
        missing ``harder`` if given."""
        miss = [self.network_target]
        if harder is not None:
            miss.append(int(target_of(harder) * 1.001))
        return self.search(en1, en2, meet=int(target_of(difficulty) * 0.999), miss=tuple(miss), **kw)

    def block(self, en1, en2, **kw):
        return self.search(en1, en2, meet=self.network_target, **kw)

    def miss(self, en1, en2, difficulty, **kw):
        """A hash that meets neither ``difficulty`` nor the network target."""
        return self.search(en1, en2, miss=(int(target_of(difficulty) * 1.001), self.network_target), **kw)


def hash_hex(hv: int) -> str:
    """Display form, as the server's ShareAccepted.hash."""
    return hv.to_bytes(32, "big").hex()


def check_notify(params: list, now: float) -> None:
    """What the strictest client parsers accept (ESP-Miner parse_mining_notify,
    cgminer/BFGMiner parse_notify, cpuminer stratum_notify, Braiins HexBytes job ids)."""
    assert type(params) is list and len(params) == 9, params
    job_id, prev, cb1, cb2, branch, version, bits, ntime, clean = params
    assert type(job_id) is str and job_id and len(job_id) % 2 == 0 and _HEX(job_id), job_id
    assert type(prev) is str and len(prev) == 64 and _HEX(prev)
    for cb in (cb1, cb2):
        assert type(cb) is str and cb and len(cb) % 2 == 0 and _HEX(cb)
    assert type(branch) is list and len(branch) <= 32  # ESP-Miner MAX_MERKLE_BRANCHES
    for b in branch:
        assert type(b) is str and len(b) == 64 and _HEX(b)
    for w in (version, bits, ntime):
        assert type(w) is str and len(w) == 8 and _HEX(w)
    assert int(bits, 16) != 0
    assert GENESIS_TIME <= int(ntime, 16) <= now + 7200  # ESP-Miner
    assert int(version, 16) & BIP320_MASK == 0, f"notify version {version} has bits inside the rolling mask"
    assert type(clean) is bool


class Miner:
    """The client's view of the server's pushes: which jobs it has, and the
    difficulty it mines each at.

    ``latch``: ``"notify"`` -- set_difficulty applies from the next notify
    and each job keeps its own (ESP-Miner create_jobs_task, cpuminer
    stratum_notify, cgminer/BFGMiner parse_notify); ``"immediate"`` -- the
    newest difficulty applies to every job (NerdMiner, Braiins SetTarget).
    ``integer`` requires JSON integers >= 1 that fit a uint32.
    """

    def __init__(self, conn: Conn, latch: str, *, integer: bool, max_line: int = 16384):
        assert latch in ("notify", "immediate")
        self.conn = conn
        self.latch = latch
        self.integer = integer
        self.max_line = max_line
        self.pending = None
        self.difficulty = None
        self.jobs: dict[str, Work] = {}
        self.current: Work | None = None
        self.differences: list[tuple[str, float]] = []  # (job id, difficulty) per set_difficulty+notify pair
        self._after_diff = False

    def feed(self, lines: list[Line]) -> None:
        for line in lines:
            assert len(line.raw) + 1 <= self.max_line, len(line.raw)
            if self._after_diff:
                # one set_difficulty per notify, and right before it (cgminer
                # stacks a second pending difficulty onto the notify after)
                assert line.method == "mining.notify", f"set_difficulty not followed by its notify: {line.raw!r}"
            if line.method == "mining.set_difficulty":
                (d,) = line.msg["params"]
                assert type(d) in (int, float) and d > 0, line.raw
                if self.integer:
                    assert type(d) is int and 1 <= d <= UINT32_MAX, f"integer difficulty >= 1 needed: {line.raw!r}"
                if self.latch == "notify":
                    self.pending = d
                else:
                    self.difficulty = d
                self._after_diff = True
            elif line.method == "mining.notify":
                params = line.msg["params"]
                check_notify(params, self.conn.h.reactor.seconds())
                if self.latch == "notify" and self.pending is not None:
                    self.difficulty, self.pending = self.pending, None
                assert self.difficulty is not None, "mining.notify before any mining.set_difficulty"
                old = self.jobs.get(params[0])
                if old is not None:
                    assert old.params[1:8] == params[1:8], f"job id {params[0]} reused for different work"
                work = Work(params, self.difficulty)
                self.jobs[work.id] = work
                self.current = work
                if self._after_diff:
                    self.differences.append((work.id, self.difficulty))
                self._after_diff = False

    def difficulty_for(self, work: Work):
        return work.difficulty if self.latch == "notify" else self.difficulty


# -- client-specific read rules -------------------------------------------------------
def first_unhandled(lines: list[Line], known: set[str]) -> Line:
    """cpuminer stratum_authorize / cgminer auth_stratum: lines whose method
    the client handles are consumed; the first other line is THE reply."""
    for line in lines:
        if line.method in known:
            if line.method == "mining.set_difficulty" and not line.msg["params"][0]:
                return line  # a zero difficulty is refused -> taken as the reply
            continue
        return line
    raise AssertionError("no reply line")


def arduinojson_size(value) -> int:
    """Bytes an ArduinoJson 6 document on a 32-bit MCU needs for ``value``
    deserialised from a String (16-byte slots per member/element, strings
    copied with their NUL; no deduplication counted -- an upper bound)."""
    if isinstance(value, dict):
        return sum(16 + len(k.encode()) + 1 + arduinojson_size(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(16 + arduinojson_size(v) for v in value)
    if isinstance(value, str):
        return len(value.encode()) + 1
    return 0


def bfgminer_check_coinbase(cb: bytes) -> str | None:
    """luke-jr/bfgminer util.c check_coinbase() (index id 40485059): None if
    the coinbase passes, else the reason BFGMiner would disable the pool."""
    size = len(cb)
    if size < 62:
        return f"invalid length -- {size}"
    if cb[4] != 1:
        return "multiple inputs in coinbase"
    pos = 4 + 1 + 32 + 4
    if cb[pos] < 2 or cb[pos] > 100:
        return f"invalid input script sig length: {cb[pos]:#04x}"
    pos += 1 + cb[pos] + 4
    if size <= pos:
        return "incomplete coinbase"

    def varint(p):
        b = cb[p]
        if b < 0xFD:
            return b, 1
        n = {0xFD: 2, 0xFE: 4, 0xFF: 8}[b]
        if size <= p + n:
            return None, 0
        return int.from_bytes(cb[p + 1:p + 1 + n], "little"), 1 + n

    count, i = varint(pos)
    if not i:
        return "incomplete coinbase"
    pos += i
    for _ in range(count):
        if size <= pos + 8:
            return "incomplete coinbase"
        pos += 8
        ln, i = varint(pos)
        if not i or size <= pos + i + ln:
            return "incomplete coinbase"
        pos += i + ln
    if size < pos + 4:
        return "No room for locktime"
    return None
