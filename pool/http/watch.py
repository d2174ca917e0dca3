"""``WithholdingWatch``: every ``accounting.withholding_check_interval``
seconds, read every worker's and address's expected blocks and blocks found
(a blocking Redis read, in the HTTP side's rationed thread pool), set
``hashcoop_withholding_suspects`` and log who became flagged (and who no
longer is). The statistics are ``hashcoop.pool.core.withholding``; docs/withholding.md
says what a flag means."""
from __future__ import annotations

import logging

from twisted.application.service import Service
from twisted.internet.task import LoopingCall

from hashcoop.pool.core.withholding import FlagLog

log = logging.getLogger("hashcoop.withholding")


class WithholdingWatch(Service):
    name = "withholding-watch"

    def __init__(self, reads, data, metrics, *, alpha: float, interval: float, clock):
        self.reads = reads
        self.data = data
        self.metrics = metrics
        self.alpha = alpha
        self.interval = interval
        self.flags = FlagLog()
        self.checks = 0
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock

    def startService(self):
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def check(self):
        # returned to the LoopingCall, which waits for it; never fails (a
        # failed Deferred would stop the loop for good)
        d = self.reads.get(("withholding-check",), self.data.withholding_verdicts, self.alpha, ttl=self.interval / 2)
        return d.addCallbacks(self._checked, self._failed)

    def _checked(self, result) -> None:
        self.checks += 1
        n_w, n_a, workers, addresses = result
        self.metrics.withholding_suspects.labels("worker").set(len(workers))
        self.metrics.withholding_suspects.labels("address").set(len(addresses))
        new, cleared = self.flags.update(workers + addresses)
        for v in new:
            who = f"{v.address}.{v.worker}" if v.worker is not None else f"address {v.address}"
            log.warning("withholding: %s flagged: %d block%s found where %.2f were expected (P = %.3g, alpha %g); "
                        "see /api/v1/operator/withholding", who, v.blocks, "" if v.blocks == 1 else "s",
                        v.expected_blocks, v.p_value, self.alpha)
        for address, worker in cleared:
            who = f"{address}.{worker}" if worker is not None else f"address {address}"
            log.info("withholding: %s no longer flagged (found a block, or its keys expired)", who)

    def _failed(self, f) -> None:
        log.warning("withholding check failed: %s", f.getErrorMessage())
