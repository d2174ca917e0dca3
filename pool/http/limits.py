"""The HTTP side's connection bounds, decided without I/O: which new
connection a listener admits (a cap on its open connections and on those
from one peer IP), and which refusals and disconnects get a log line of
their own. ``bounds.py`` carries the decisions out on Twisted."""
from __future__ import annotations

import ipaddress
from collections import Counter
from enum import StrEnum


class Refusal(StrEnum):
    MAX_CONNECTIONS = "max-connections"  # http.max_connections open on the listener
    PER_IP = "per-ip-limit"  # http.max_connections_per_ip open from the peer's IP


class Disconnect(StrEnum):
    IDLE = "idle-timeout"  # no request for http.idle_timeout, nothing being answered
    WRITE_STALLED = "write-stalled"  # backed-up output the peer took none of for http.write_timeout
    REQUEST_TIMEOUT = "request-timeout"  # a request still arriving http.request_timeout after its first byte
    BODY_TOO_LARGE = "body-too-large"  # a request body over MAX_REQUEST_BODY, or chunked


# The API is read-only (GET, HEAD, OPTIONS): no request needs a body. A
# bigger one is refused before it is read (twisted.web would spool it to a
# temporary file, however large, before the handler could answer 405).
MAX_REQUEST_BODY = 65536


def body_refused(content_length: int | None, chunked: bool) -> bool:
    """Whether a request announcing this body is refused unread."""
    return chunked or (content_length or 0) > MAX_REQUEST_BODY


def peer_ip(host: object) -> str | None:
    """The IP a peer is counted under: IPv4 for an IPv4-mapped IPv6
    address; None for a peer without one (a Unix socket)."""
    try:
        ip = ipaddress.ip_address(host)  # type: ignore[arg-type]
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


class Admission:
    """Open connections of one listener, in total and by peer IP.

    ``admit(ip)`` counts the connection and returns None, or returns why it
    is refused (then nothing is counted); every admitted connection is
    ``release``d once. Peers without an IP count only toward the total, and
    so do IPs in ``exempt`` (e.g. a reverse proxy)."""

    def __init__(self, max_total: int, max_per_ip: int, exempt: list[str] | tuple[str, ...] = ()):
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in exempt]
        self.open = 0
        self.per_ip: dict[str, int] = {}

    def admit(self, ip: str | None) -> Refusal | None:
        if self.open >= self.max_total:
            return Refusal.MAX_CONNECTIONS
        if ip is not None:
            n = self.per_ip.get(ip, 0)
            if n >= self.max_per_ip and not self._exempt(ip):
                return Refusal.PER_IP
            self.per_ip[ip] = n + 1
        self.open += 1
        return None

    def release(self, ip: str | None) -> None:
        self.open -= 1
        if ip is not None:
            n = self.per_ip[ip] - 1
            if n:
                self.per_ip[ip] = n
            else:
                del self.per_ip[ip]

    def _exempt(self, ip: str) -> bool:
        if not self.exempt:
            return False
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in self.exempt)


class LogThrottle:
    """One log line for the first event, then at most one every
    ``interval`` seconds: the events in between are held, counted by
    reason, and summed up in one line when ``flush`` is called at ``due``.
    So a flood of refused connections costs a line a minute, not one each."""

    def __init__(self, interval: float = 60.0):
        self.interval = interval
        self.last: float | None = None  # when a line was last logged
        self.held: Counter[str] = Counter()

    def event(self, now: float, reason: str) -> bool:
        """True: log this event now. False: it is held for ``flush``."""
        if self.last is None or now - self.last >= self.interval:
            self.last = now
            return True
        self.held[reason] += 1
        return False

    @property
    def due(self) -> float | None:
        """When the held events should be flushed (None: nothing held)."""
        if not self.held or self.last is None:
            return None
        return self.last + self.interval

    def flush(self, now: float) -> dict[str, int]:
        """The held events by reason (empty: nothing to log); a line logged now."""
        held, self.held = dict(self.held), Counter()
        if held:
            self.last = now
        return held
