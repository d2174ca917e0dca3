"""A leaner TCP transport for many mostly idle miners.

Twisted's ``tcp.Server`` stores, per connection, two display strings (its
log prefix and its repr) and a bound ``fileno`` method: some 200 bytes that
an idle miner pays for nothing. ``LeanServer`` computes them when asked;
``LeanPort`` is ``tcp.Port`` making ``LeanServer`` transports. Everything
else is Twisted's own code.
"""
from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.error import CannotListenError


def _closed_fileno() -> int:
    return -1  # what FileDescriptor.fileno answers once the socket is gone


class LeanServer(tcp.Server):
    def _logstr(self) -> str:
        proto = self.__dict__.get("protocol")
        prefix = self._getLogPrefix(proto) if proto is not None else "Uninitialized"
        return f"{prefix},{self.sessionno},{self.hostname}"

    def _repstr(self) -> str:
        proto = self.__dict__.get("protocol")
        name = proto.__class__.__name__ if proto is not None else "Uninitialized"
        return f"<{name} #{self.sessionno} on {self.server._realPortNumber}>"

    def _fileno(self):
        skt = self.__dict__.get("socket")
        return skt.fileno if skt is not None else _closed_fileno

    def _ignore(self, value=None) -> None:
        pass

    # Twisted assigns (and deletes) these in __init__ and connectionLost;
    # the assignments are dropped and the values derived on reading.
    logstr = property(_logstr, _ignore)
    repstr = property(_repstr, _ignore)
    fileno = property(_fileno, _ignore, _ignore)


class LeanPort(tcp.Port):
    transport = LeanServer


def listen(reactor, port: int, factory, *, backlog: int, interface: str, reuse_port: bool = False):
    """Listen on ``interface:port`` with ``LeanServer`` transports (with
    SO_REUSEPORT when asked: the kernel then spreads new connections over
    every process listening on the same address and port)."""
    if not reuse_port:
        p = LeanPort(port, factory, backlog, interface, reactor)
        p.startListening()
        return p
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    skt = socket.socket(family, socket.SOCK_STREAM)
    try:
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        skt.bind((interface, port))
        skt.listen(backlog)
        skt.setblocking(False)
        # the port keeps its own duplicate of the descriptor
        p = LeanPort._fromListeningDescriptor(reactor, skt.fileno(), family, factory)
    except OSError as e:
        raise CannotListenError(interface, port, e) from None
    finally:
        skt.close()
    p.startListening()
    return p
