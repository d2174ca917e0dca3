"""Who may start a Stratum session: refusals at connect, before any byte is
read. ``StratumFactory.buildProtocol`` asks ``Admission.refusal``; the
server releases each admitted connection when its session closes.

Refused, in this order:

* ``banned``: the IP is banned for flooding (``hashcoop.stratum.flood.BanList``);
  counted always, logged at the first refusal of a ban and then at most
  once a minute;
* ``per-ip-limit``: ``stratum.max_connections_per_ip`` already open from
  the IP, unless it is in ``stratum.connection_limit_exempt``;
* ``stale-template``: the template is older than
  ``stratum.max_template_age`` (the nodes stopped answering): miners
  already connected keep the last work, new ones are better served by a
  backup pool. Logged once per episode, and once when it ends.
"""
from __future__ import annotations

import ipaddress
import logging
from collections import Counter

from hashcoop.pool.metrics import NullMetrics
from hashcoop.stratum.flood import BanList

log = logging.getLogger("hashcoop.stratum")


class Admission:
    def __init__(self, *, clock, bans: BanList, max_per_ip: int, exempt: list[str] = (), max_template_age: float = 0.0,
                 work=None, metrics=None):
        self.clock = clock
        self.bans = bans
        self.max_per_ip = max_per_ip
        self.exempt_networks = [ipaddress.ip_network(n, strict=False) for n in exempt]
        self.max_template_age = max_template_age
        self.work = work  # anything with ``current_since`` (the WorkSource), or None
        self.metrics = metrics if metrics is not None else NullMetrics()
        self.per_ip: Counter[str] = Counter()  # admitted connections open, by IP
        self.started_at: float | None = None  # the template's age counts from here while there is none
        self._refusing_stale = False  # new miners refused for a stale template (logged once per episode)

    def start(self) -> None:
        self.started_at = self.clock.seconds()

    def refusal(self, ip: str) -> str | None:
        """None when a new connection from ``ip`` may start a session (it is
        then counted until ``release``), else the reason it is refused
        (logged, counted)."""
        now = self.clock.seconds()
        if self.bans.bans:
            ban = self.bans.banned(ip, now)
            if ban is not None:
                self._refused_banned(ip, ban, now)
                return "banned"
        if self.per_ip[ip] >= self.max_per_ip and not self.exempt(ip):
            self._refused("per-ip-limit", ip)
            return "per-ip-limit"
        if self.max_template_age and self.work is not None and self._template_stale(now):
            self._refused("stale-template", ip)
            return "stale-template"
        self.per_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        """An admitted connection from ``ip`` has closed."""
        n = self.per_ip[ip] - 1
        if n > 0:
            self.per_ip[ip] = n
        else:
            del self.per_ip[ip]

    def exempt(self, ip: str) -> bool:
        """Whether ``ip`` is in ``stratum.connection_limit_exempt`` (no
        per-IP cap, never banned)."""
        if not self.exempt_networks:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.exempt_networks)

    def _template_stale(self, now: float) -> bool:
        # without any template yet (a start while every node is down) the
        # age counts from the start: such a pool has no work to give
        since = getattr(self.work, "current_since", None)
        if since is None:
            since = self.started_at
        if since is not None and now - since > self.max_template_age:
            if not self._refusing_stale:
                self._refusing_stale = True
                log.warning("the template is %.0f s old%s (stratum.max_template_age %g s): new miners are refused until "
                            "a node serves a fresh one; connected miners keep the last work", now - since,
                            "" if self.work.current_since is not None else " (none yet since the start)",
                            self.max_template_age)
            return True
        if self._refusing_stale:
            self._refusing_stale = False
            log.info("the template is fresh again: new miners are admitted")
        return False

    def _refused(self, reason: str, ip: str) -> None:
        self.metrics.connections_refused.labels(reason).inc()
        log.info("refused connection from %s: %s", ip, reason)

    def _refused_banned(self, ip: str, ban, now: float) -> None:
        self.metrics.connections_refused.labels("banned").inc()
        n = self.bans.refused(ban, now)
        if n:  # the first refusal of a ban, then one line a minute at most
            log.info("refused %d connection%s from %s: banned for flooding for another %ds", n, "s" if n > 1 else "", ip,
                     max(0, round(ban.until - now)))
