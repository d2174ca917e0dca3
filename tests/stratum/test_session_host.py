"""Sessions use their server only through ``SessionHost``: every flow of a
session (handshake, configure, suggestions, shares accepted and rejected,
a block, a stale job in the grace, blank lines, a request flood, the
close) runs against a proxy that has nothing but its members."""
from __future__ import annotations

from hashcoop.stratum.session import SessionHost
from tests.stratum.harness import Harness, config, template

ALLOWED = {name for name in dir(SessionHost) if not name.startswith("_")} | set(SessionHost.__annotations__)


class OnlyHost:
    """The server seen through ``SessionHost``: anything else is an error."""

    def __init__(self, server):
        object.__setattr__(self, "_server", server)
        object.__setattr__(self, "used", set())

    def __getattr__(self, name):
        if name not in ALLOWED:
            raise AssertionError(f"a session used server.{name}, which is not in SessionHost")
        self.used.add(name)
        return getattr(self._server, name)

    def __setattr__(self, name, value):
        raise AssertionError(f"a session set server.{name}")


def test_sessions_use_nothing_of_the_server_but_session_host():
    h = Harness(config(request_rate=1.0, request_burst=20, difficulty_change_interval=1.0))
    host = OnlyHost(h.server)
    c = h.connect()
    c.session.server = host  # from the first request on
    c.handshake()
    c.call("mining.configure", [["version-rolling", "minimum-difficulty", "x"], {"version-rolling.mask": "1fffe000",
                                                                                  "minimum-difficulty.value": 1e-8}])
    c.call("mining.suggest_difficulty", [2e-8])
    c.call("mining.suggest_difficulty", [3e-8])  # held by the interval
    h.reactor.advance(1.5)
    c.session.tick(h.reactor.seconds())
    share, _ = c.solve(en2=1)
    assert c.call("mining.submit", share)["result"] is True
    assert c.call("mining.submit", share)["result"] is False  # duplicate: rejected
    block, _ = c.solve(en2=2, block=True)
    assert c.call("mining.submit", block)["result"] is True
    h.jobs.stale_grace = 1.0
    late, _ = c.solve(en2=3)
    lost, _ = c.solve(en2=4, block=True)
    h.server.on_template(template(prev=(0xB10C0001).to_bytes(32, "little")), True)  # a new tip
    assert c.call("mining.submit", late)["result"] is True  # within the grace: late, credited
    h.reactor.advance(2)
    assert c.call("mining.submit", lost)["error"][0] == 21  # a block on the replaced tip: lost, stale
    c.call("mining.authorize", ["not-an-address", "x"])
    c.send_raw(b"\n \n")
    c.call("mining.get_transactions", [])
    for _ in range(60):  # past the request budget: refused, then closed
        c.send("mining.extranonce.subscribe", [])
    assert not c.connected
    c.proto.connectionLost(None)
    assert host.used >= {"share_accepted", "share_rejected", "stale_block", "late_share", "request_refused", "close_session"}
    assert h.sink.accepted_count >= 2 and h.submitter.found
