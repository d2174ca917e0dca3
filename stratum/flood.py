"""Flood protection: what the pool does about a connection that sends mostly
invalid shares, or rejected submits faster than any miner would. Pure: no
sockets, no clock of its own (``now`` is passed in); ``hashcoop.stratum.server``
applies the decisions (writes, closes, refuses connections).

Escalation, per connection (``FloodPolicy``, state in ``FloodState``):

1. **New work.** Once at least ``window`` submits were counted and at least
   ``invalid_fraction`` of them were invalid, the session is sent fresh work
   (its difficulty and a clean job under a new job id): an honest miner in a
   confused state (lost job, wrong difficulty, after a reconnect) recovers.
2. **Disconnect.** If the next ``window`` counted submits are still mostly
   invalid, the connection is closed (reason ``flood``).

   Counted are accepted shares and the rejects that mean a broken or hostile
   miner (``COUNTED``). ``stale-job`` is not counted either way: every
   honest miner sends a few right after each new block.

   Independently, every rejected submit (stale ones too) spends a token of a
   bucket holding ``reject_burst`` tokens and refilling at
   ``max_rejects_per_second``: an empty bucket closes the connection at once
   (reason ``reject-rate``).

   Requests other than submits (subscribe, authorize, configure,
   suggest_difficulty, extranonce.subscribe, unknown methods, replies and
   blank lines) draw on a separate budget, ``RequestBudget``: past it they
   are refused (error 20, or ignored when they expect no answer), and a
   sustained excess closes the connection (reason ``request-rate``).

3. **Ban.** ``BanList``: a peer IP whose connections were closed for
   flooding ``ban_after`` times within ``ban_period`` seconds is refused new
   connections for ``ban_seconds``. Bans expire by themselves; the tables
   are bounded (``max_tracked`` IPs, oldest forgotten first).

An honest miner is far from every limit: vardiff keeps it near one share
every ``vardiff.target_interval`` seconds with a reject rate of a few per
cent, so it would take a long run of mostly invalid submits, twice, to be
closed once, and three such runs within the ban period to be banned.
"""
from __future__ import annotations

from collections import OrderedDict, deque

from hashcoop.pool.core.shares import Reject

NEW_WORK = "new_work"
DISCONNECT = "disconnect"  # mostly invalid after the new work
RATE = "reject-rate"  # the reject-rate bucket ran dry
REQUESTS = "request-rate"  # requests other than submits far past their budget
BAN = "ban"

# Rejects that signal a broken or hostile miner. Not stale-job: honest miners
# send some after every new block.
COUNTED = frozenset((
    Reject.UNKNOWN_JOB, Reject.BAD_EXTRANONCE2, Reject.BAD_NTIME, Reject.BAD_NONCE, Reject.BAD_VERSION,
    Reject.DUPLICATE, Reject.HIGH_HASH, Reject.UNAUTHORIZED, Reject.NOT_SUBSCRIBED, Reject.BAD_PARAMS,
))


class FloodState:
    """One connection's counters, created at its first rejected submit (a
    session that never has a share rejected never holds one)."""

    __slots__ = ("n", "bad", "warned", "tokens", "t")

    def __init__(self, burst: float, now: float):
        self.n = 0  # counted submits in the current stretch (accepted + COUNTED rejects)
        self.bad = 0  # COUNTED rejects in the current stretch
        self.warned = False  # fresh work was sent; the next mostly-invalid stretch disconnects
        self.tokens = burst  # reject-rate bucket
        self.t = now


class FloodPolicy:
    """Decides, for one rejected submit, what happens to the connection.

    The caller counts accepted shares itself (``state.n += 1`` when the
    session has a state): the hot path of honest miners stays a compare."""

    __slots__ = ("window", "invalid_fraction", "rate", "burst")

    def __init__(self, *, window: int = 100, invalid_fraction: float = 0.5, max_rejects_per_second: float = 50.0,
                 reject_burst: int = 500):
        if window < 1 or not 0 < invalid_fraction <= 1 or max_rejects_per_second <= 0 or reject_burst < 1:
            raise ValueError("window >= 1, 0 < invalid_fraction <= 1, max_rejects_per_second > 0, reject_burst >= 1")
        self.window = window
        self.invalid_fraction = invalid_fraction
        self.rate = max_rejects_per_second
        self.burst = float(reject_burst)

    @classmethod
    def from_config(cls, fc) -> "FloodPolicy":
        return cls(window=fc.window, invalid_fraction=fc.invalid_fraction,
                   max_rejects_per_second=fc.max_rejects_per_second, reject_burst=fc.reject_burst)

    def new_state(self, now: float) -> FloodState:
        return FloodState(self.burst, now)

    def on_reject(self, st: FloodState, reason: str, now: float) -> str | None:
        """Record one rejected submit; returns ``NEW_WORK``, ``DISCONNECT``,
        ``RATE`` or None (nothing to do)."""
        tokens = st.tokens + (now - st.t) * self.rate
        st.t = now
        if tokens > self.burst:
            tokens = self.burst
        tokens -= 1.0
        st.tokens = tokens
        if tokens < 0:
            return RATE
        if reason not in COUNTED:
            return None
        st.n += 1
        st.bad += 1
        if st.n < self.window:
            return None
        flooding = st.bad >= self.invalid_fraction * st.n
        st.n = st.bad = 0
        if not flooding:
            st.warned = False  # recovered
            return None
        if st.warned:
            return DISCONNECT
        st.warned = True
        return NEW_WORK


# RequestBudget.charge verdicts
ALLOWED = 0
REFUSED = 1  # past the budget: refused, the connection stays
OVERDRAWN = 2  # a sustained excess: close the connection


class RequestBudget:
    """How many requests other than submits one connection may send: at
    most ``burst`` at once, then ``rate`` a second. Requests past the budget
    are refused; once the refused ones alone would have spent another
    ``burst``, the excess is sustained and the connection is closed.

    The state is one float per connection, its theoretical arrival time
    (the generic cell rate algorithm): the time at which its budget would
    be whole again. A request moves it ``1 / rate`` later, refused or not,
    so a client that keeps sending faster than ``rate`` drifts towards the
    close, while one that slows down earns its budget back."""

    __slots__ = ("interval", "burst", "allowed_ahead", "closed_ahead")

    def __init__(self, *, rate: float = 1.0, burst: int = 100):
        if not rate > 0 or burst < 1:
            raise ValueError("rate > 0 and burst >= 1")
        self.interval = 1.0 / rate
        self.burst = burst
        self.allowed_ahead = burst * self.interval  # how far ahead of now the state may be for an allowed request
        self.closed_ahead = 2 * burst * self.interval  # ...and for a refused one before the close

    def charge(self, tat: float, now: float, n: int = 1) -> tuple[float, int]:
        """``n`` requests at ``now`` on a connection whose state is ``tat``
        (0.0 for a new one). Returns the new state and ``ALLOWED``,
        ``REFUSED`` or ``OVERDRAWN`` (for the last of them)."""
        tat = (tat if tat > now else now) + n * self.interval
        ahead = tat - now
        if ahead <= self.allowed_ahead:
            return tat, ALLOWED
        return tat, (REFUSED if ahead <= self.closed_ahead else OVERDRAWN)

    def first_refusal(self, tat: float, now: float) -> bool:
        """Whether a request refused at ``now`` on state ``tat`` (as it was
        before the request) is the first of a run (the one before it was
        allowed): a log line for the run, not one per request."""
        return (tat if tat > now else now) - now <= self.allowed_ahead


class Ban:
    __slots__ = ("until", "refused", "logged")

    def __init__(self, until: float):
        self.until = until
        self.refused = 0  # connections refused since the last log line
        self.logged = -1e300


class BanList:
    """Flood disconnects per peer IP and the bans they lead to. Memory is
    bounded: at most ``max_tracked`` IPs with recent disconnects and as many
    bans; beyond that the oldest are forgotten."""

    REFUSED_LOG_INTERVAL = 60.0

    def __init__(self, *, ban_after: int = 3, ban_period: float = 3600.0, ban_seconds: float = 1800.0,
                 max_tracked: int = 100_000):
        self.ban_after = ban_after  # 0: never ban
        self.ban_period = ban_period
        self.ban_seconds = ban_seconds
        self.max_tracked = max_tracked
        self.strikes: OrderedDict[str, deque] = OrderedDict()  # ip -> times of its flood disconnects
        self.bans: OrderedDict[str, Ban] = OrderedDict()  # ip -> ban, in the order they were set

    @classmethod
    def from_config(cls, fc) -> "BanList":
        return cls(ban_after=fc.ban_after, ban_period=fc.ban_period, ban_seconds=fc.ban_seconds,
                   max_tracked=fc.max_tracked_ips)

    def strike(self, ip: str, now: float) -> int:
        """A connection from ``ip`` was closed for flooding. Returns the
        number of such closes within the ban period (this one included); at
        ``ban_after`` the IP is banned (``banned`` says so from now on)."""
        if self.ban_after <= 0:
            return 0
        q = self.strikes.pop(ip, None)
        if q is None:
            q = deque(maxlen=self.ban_after)
        q.append(now)
        while q and q[0] <= now - self.ban_period:
            q.popleft()
        n = len(q)
        if n >= self.ban_after:
            self.bans.pop(ip, None)
            self.bans[ip] = Ban(now + self.ban_seconds)
            while len(self.bans) > self.max_tracked:
                self.bans.popitem(last=False)
        else:
            self.strikes[ip] = q  # moved to the end: most recent last
            while len(self.strikes) > self.max_tracked:
                self.strikes.popitem(last=False)
        return n

    def banned(self, ip: str, now: float) -> Ban | None:
        """The live ban on ``ip``, or None (an expired one is dropped)."""
        b = self.bans.get(ip)
        if b is None:
            return None
        if b.until <= now:
            del self.bans[ip]
            return None
        return b

    def refused(self, b: Ban, now: float) -> int:
        """A connection was refused under ban ``b``. Returns how many were
        refused since the last log line when one is due (the first refusal,
        then at most one a minute), else 0."""
        b.refused += 1
        if now - b.logged >= self.REFUSED_LOG_INTERVAL:
            n, b.refused, b.logged = b.refused, 0, now
            return n
        return 0

    def expire(self, now: float) -> list[str]:
        """Drops bans that ran out and strikes older than the ban period;
        returns the IPs whose ban ended. Both tables are in time order (every
        ban lasts ``ban_seconds``; an IP's strikes move to the end), so this
        costs what it drops."""
        ended = []
        bans = self.bans
        while bans:
            ip, b = next(iter(bans.items()))
            if b.until > now:
                break
            del bans[ip]
            ended.append(ip)
        old = now - self.ban_period
        strikes = self.strikes
        while strikes:
            ip, q = next(iter(strikes.items()))
            if q and q[-1] > old:
                break
            del strikes[ip]
        return ended

    def count(self, now: float) -> int:
        """Live bans (those expired but not yet dropped are not counted)."""
        expired = 0
        for b in self.bans.values():
            if b.until > now:
                break
            expired += 1
        return len(self.bans) - expired
