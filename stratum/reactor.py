"""The reactor and process settings ``hashcoop run`` uses on Linux.

``StratumReactor`` is Twisted's epoll reactor with a lighter dispatch: the
stock ``doPoll`` wraps every ready descriptor's ``doRead``/``doWrite`` in
``twisted.python.log.callWithLogger`` (it asks the transport for its log
prefix and pushes a legacy log context, a dictionary copy per event) so
that old-style ``log.msg`` calls made inside a callback carry a "system"
prefix. Nothing in hashcoop logs that way (it uses the standard
``logging`` module), so the context is skipped; everything else, including
error handling and disconnection, is the stock ``_doReadOrWrite``.

``tune_gc`` is called once the pool is up: see its docstring.

Only the ``run`` entry point installs and tunes; library code never
imports the global reactor.
"""
from __future__ import annotations

import errno
import gc
import sys

from twisted.internet.main import installReactor

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # not Linux
    EPollReactor = None

# Young-generation collections once this many more container objects are
# alive than at the last one (CPython's default is 700).
GC_THRESHOLD = (10_000, 10, 10)
# How long a thread may hold the GIL while another waits for it (CPython's
# default is 5 ms): the accounting threads must not hold up a reply.
SWITCH_INTERVAL = 0.0005


if EPollReactor is not None:
    class StratumReactor(EPollReactor):
        def doPoll(self, timeout):
            if timeout is None:
                timeout = -1  # wait indefinitely
            try:
                events = self._poller.poll(timeout, len(self._selectables))
            except OSError as err:
                if err.errno == errno.EINTR:
                    return
                raise
            selectables = self._selectables
            dispatch = self._doReadOrWrite
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is not None:
                    dispatch(selectable, fd, event)

        doIteration = doPoll


def install() -> bool:
    """Install ``StratumReactor`` as the global reactor if none is installed
    yet and epoll exists; True if it was installed."""
    if EPollReactor is None or "twisted.internet.reactor" in sys.modules:
        return False

    installReactor(StratumReactor())
    return True


def tune_gc() -> None:
    """Call once the pool has started. Everything alive then (modules,
    configuration, the first template) moves out of the collector's sight
    (``gc.freeze``), and young collections run every ``GC_THRESHOLD[0]``
    net new objects instead of every 700. A pool allocates a few objects
    per share that live until the next accounting flush (~250 ms); with the
    default thresholds they were promoted to the oldest generation and
    triggered full collections every few seconds, each walking every
    miner's objects (tens of milliseconds at 10,000 miners: a pause for
    every miner). Cyclic garbage is still collected, just in larger
    batches. Also shortens the GIL switch interval to ``SWITCH_INTERVAL``."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    sys.setswitchinterval(SWITCH_INTERVAL)
