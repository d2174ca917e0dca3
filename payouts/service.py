"""The payout process: the Twisted service that runs a pass every
``payouts.interval`` seconds (its wiring point is
``hashcoop.pool.app.payouts.build_payouts``):

1. **lease**: take or renew the single-instance lease (a standby process
   waits here until the holder's lease expires or the holder dies);
2. **import**: every block snapshot Redis still holds un-archived
   (``snapshots:unarchived``) goes into the ledger with the shares its
   window is recomputed from, then ``ShareLogReader.mark_archived`` lets
   Redis trim them;
3. **maturity**: each pending block (and each recent orphan) is checked
   against the node (``getblockhash(height)``); mature blocks are credited
   (``hashcoop.payouts.maturity``);
4. **reconcile**: payments whose transaction was stored are brought in line
   with the wallet and the mempool: confirmed, sent, broadcast again (the
   stored transaction, never a new one), or failed (debits given back);
5. **pay**: balances at or above the minimum, in batches, each through the
   crash-safe sequence intent -> fund and sign -> store signed transaction
   and debits -> broadcast -> mark sent (-> confirmed in a later pass).

Every database call goes through the ledger connector
(``hashcoop.payouts.connector.LedgerConnector``), whose methods return
Deferreds and run on the service's own thread pool; every Redis call runs
there too (``PayoutEngine.in_thread``); the reactor never blocks.
``fault`` is called with a step name after each step of the payment
sequence (``intent``, ``signed``, ``stored``, ``broadcast``, ``sent``,
``confirmed``); the CLI's fault hook kills the process there (crash tests).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

from sqlalchemy import exc
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from hashcoop.payouts import read
from hashcoop.payouts.connector import LedgerConnector
from hashcoop.payouts.ledger import BlockSnapshot, LeaseLost, Ledger, LedgerBlock, LedgerError
from hashcoop.payouts.maturity import NodeView, decide
from hashcoop.payouts.payments import Payee, TxView, check_funded, plan_batches, reconcile
from hashcoop.payouts.pplns import build_report, canonical_json, report_digest, split_reward
from hashcoop.payouts.states import BlockState, PaymentState
from hashcoop.pool.core.btc.address import address_to_script
from hashcoop.pool.core.btc.block import parse_tx
from hashcoop.pool.core.btc.hashing import hash_to_hex
from hashcoop.pool.rpc import NodeClient, RPCError, RPCTransportError

log = logging.getLogger("hashcoop.payouts")

STEPS = ("intent", "signed", "stored", "broadcast", "sent", "confirmed")
COIN = 100_000_000


def btc(sat: int) -> str:
    """Satoshis as the exact BTC text Core's AmountFromValue takes."""
    q, r = divmod(sat, COIN)
    return f"{q}.{r:08d}"


def sat(btc_value) -> int:
    """A BTC amount from a JSON answer (a float parsed from Core's 8-decimal
    text) -> satoshis, exactly."""
    return int((Decimal(repr(float(btc_value))) * COIN).to_integral_value())


@dataclass(frozen=True)
class Settings:
    """What the engine needs from the [payouts] section (and the pool address)."""

    pool_address: str
    network: object
    fee_percent: str
    fee_address: str | None
    min_payout: int
    max_outputs: int
    fee_payer: str
    fee_rate: float
    conf_target: int
    max_tx_fee: int
    maturity_depth: int
    payment_confirmations: int
    orphan_recheck_depth: int
    interval: float
    lease_ttl: float

    @classmethod
    def from_config(cls, config) -> "Settings":
        p = config.payouts
        return cls(config.pool.address, config.network, format(Decimal(repr(p.fee_percent)).normalize(), "f"), p.fee_address or None,
                   p.min_payout_sat, p.max_outputs, p.tx_fee_payer, p.fee_rate_sat_vb, p.conf_target, p.max_tx_fee_sat,
                   p.maturity_depth, p.payment_confirmations, p.orphan_recheck_depth, p.interval, p.lease_ttl)


class PaymentStop(Exception):
    """Stop paying for this pass (the wallet cannot fund, the node refused, ...)."""


class PayoutEngine:
    """One pass of the payout process; every step is also callable alone
    (tests drive them one by one)."""

    def __init__(self, *, reactor, ledger: LedgerConnector, threads: ThreadPool, node: NodeClient, wallet: NodeClient,
                 settings: Settings, sharelog=None, redis=None, redis_keys=None, metrics=None,
                 fault: Callable[[str], None] | None = None):
        self.reactor = reactor
        self.ledger = ledger
        self.threads = threads
        self.node = node
        self.wallet = wallet
        self.s = settings
        self.sharelog = sharelog
        self.redis = redis
        self.keys = redis_keys
        self.metrics = metrics
        self.fault = fault or (lambda step: None)
        self.pool_script = address_to_script(settings.pool_address, settings.network)
        self._mine_cache: dict[str, bool] = {}

    def in_thread(self, fn, *args, **kw) -> defer.Deferred:
        """A blocking Redis call on the payout threads (the ledger's go
        through ``self.ledger``, the connector, which hops on its own)."""
        return deferToThreadPool(self.reactor, self.threads, fn, *args, **kw)

    # -- a pass ------------------------------------------------------------------------
    async def run_pass(self) -> None:
        start = time.monotonic()
        await self.import_blocks()
        await self.check_maturity()
        await self.reconcile_payments()
        await self.pay()
        await self.update_metrics()
        if self.metrics is not None:
            self.metrics.payout_pass_seconds.observe(time.monotonic() - start)

    # -- 2. import ------------------------------------------------------------------------
    async def import_blocks(self) -> int:
        if self.sharelog is None:
            return 0
        hashes = [h.decode() if isinstance(h, bytes) else h for h in await self.in_thread(self.redis.zrange, self.keys.unarchived, 0, -1)]
        if not hashes:
            return 0
        known = await self.ledger.known_blocks(hashes)
        n = 0
        for h in hashes:
            if h not in known:
                snap = await self.in_thread(self.sharelog.snapshot, h)
                if snap is None:
                    log.error("block %s is listed un-archived but Redis has no snapshot for it", h)
                    continue
                try:
                    shares = await self.in_thread(self.sharelog.window_shares, snap)
                except LookupError as e:
                    log.error("block %s: cannot archive its window: %s", h, e)
                    continue
                claim = await self.in_thread(self.redis.hget, self.keys.block(h), "reward")
                reward = int(claim) if claim else 0
                if await self.ledger.import_block(BlockSnapshot.from_snapshot(snap), shares, reward=reward, reward_source="pool"):
                    n += 1
                    log.info("block %d %s imported: window of %d addresses, %d shares archived", snap.height, h, len(snap.amounts), len(shares))
            await self.in_thread(self.sharelog.mark_archived, h)
        return n

    # -- 3. maturity ------------------------------------------------------------------------
    async def _view(self, block_hash: str, height: int, tip: int) -> NodeView:
        try:
            at = await self.node.call("getblockhash", height)
        except RPCError as e:
            if isinstance(e, RPCTransportError) or e.code != -8:
                raise
            at = None
        known = True
        if at != block_hash:
            try:
                await self.node.call("getblockheader", block_hash)
            except RPCError as e:
                if isinstance(e, RPCTransportError) or e.code != -5:
                    raise
                known = False
        return NodeView(tip, at, known)

    async def _is_mine(self, address: str) -> bool:
        if address not in self._mine_cache:
            try:
                info = await self.wallet.call("getaddressinfo", address)
                self._mine_cache[address] = bool(info.get("ismine"))
            except RPCError as e:
                if isinstance(e, RPCTransportError):
                    raise
                self._mine_cache[address] = False
        return self._mine_cache[address]

    async def coinbase_value(self, block_hash: str) -> int:
        """What the block's coinbase pays the pool: outputs to the pool
        address or to any other address of the pool's wallet."""
        block = await self.node.call("getblock", block_hash, 2)
        total = 0
        for out in block["tx"][0]["vout"]:
            spk = out["scriptPubKey"]
            if bytes.fromhex(spk["hex"]) == self.pool_script or ("address" in spk and await self._is_mine(spk["address"])):
                total += sat(out["value"])
        return total

    async def check_maturity(self) -> dict[str, int]:
        tip = await self.node.call("getblockcount")
        rows = await self.ledger.blocks_to_check(tip, self.s.orphan_recheck_depth)
        done = {"credit": 0, "orphan": 0, "revive": 0}
        for b in rows:
            view = await self._view(b.hash, b.height, tip)
            d = decide(b.status, b.hash, b.height, view, self.s.maturity_depth)
            if d.action == "credit":
                await self.credit(b.hash, d.confirmations)
                done["credit"] += 1
            elif d.action == "wait":
                reward = None
                if b.reward_source != "node":
                    reward = await self.coinbase_value(b.hash)
                await self.ledger.record_check(b.hash, BlockState.PENDING, d.confirmations, None, reward=reward)
            elif d.action == "orphan":
                log.warning("block %d %s orphaned: %s", b.height, b.hash, d.reason)
                await self.ledger.record_check(b.hash, BlockState.ORPHANED, 0, d.reason)
                done["orphan"] += 1
            elif d.action == "revive":
                log.info("block %d %s is back in the main chain (%d confirmations)", b.height, b.hash, d.confirmations)
                await self.ledger.record_check(b.hash, BlockState.PENDING, d.confirmations, d.reason)
                done["revive"] += 1
        return done

    async def credit(self, block_hash: str, confirmations: int) -> bool:
        reward = await self.coinbase_value(block_hash)
        if reward <= 0:
            log.error("block %s: its coinbase pays nothing to the pool's wallet; not credited", block_hash)
            await self.ledger.record_check(block_hash, BlockState.ORPHANED, 0, "the coinbase pays nothing to the pool's wallet")
            return False
        b = await self.ledger.block(block_hash)
        window = await self.ledger.window(block_hash)
        split = split_reward(reward, window, self.s.fee_percent)
        report = build_report(block=report_block(b), window=window, split=split, fee_address=self.s.fee_address)
        credits = [(c["address"], c["kind"], c["amount"]) for c in report["credits"]]
        ok = await self.ledger.credit_block(block_hash, reward=reward, confirmations=confirmations,
                           fee_percent=split.fee_percent, fee_sat=split.fee, fee_address=self.s.fee_address, credits=credits,
                           report_json=canonical_json(report).decode(), digest=report_digest(report))
        if ok:
            log.info("block %d %s credited: %d sat to %d addresses, fee %d sat", b.height, block_hash, split.distributed,
                     len(split.credits), split.fee)
        return ok

    # -- 4. reconcile ------------------------------------------------------------------------------
    async def tx_view(self, txid: str):
        confs = block = None
        try:
            t = await self.wallet.call("gettransaction", txid)
            confs, block = int(t["confirmations"]), t.get("blockhash")
        except RPCError as e:
            if isinstance(e, RPCTransportError) or e.code != -5:
                raise
        in_mempool = True
        try:
            await self.node.call("getmempoolentry", txid)
        except RPCError as e:
            if isinstance(e, RPCTransportError) or e.code != -5:
                raise
            in_mempool = False
        return TxView(confs, in_mempool, block)

    async def reconcile_payments(self) -> None:
        for p in await self.ledger.unresolved_payments():
            if p.status == PaymentState.INTENT:
                log.warning("payment %d: an intent that was never signed and stored; abandoned (no money moved)", p.id)
                await self.ledger.abandon(p.id, "not signed and stored before the payout process stopped")
                continue
            view = await self.tx_view(p.txid)
            action = reconcile(p.status, view, self.s.payment_confirmations)
            if action == "confirm":
                await self.ledger.mark_confirmed(p.id, view.wallet_confirmations, view.block_hash)
                log.info("payment %d %s confirmed (%d confirmations)", p.id, p.txid, view.wallet_confirmations)
                if self.metrics is not None:
                    self.metrics.payments_confirmed.inc()
                self.fault("confirmed")
            elif action == "sent":
                if p.status == PaymentState.SIGNED:
                    await self.ledger.mark_sent(p.id)
                    self.fault("sent")
                if view.wallet_confirmations is not None and view.wallet_confirmations != p.confirmations:
                    await self.ledger.set_payment_confirmations(p.id, view.wallet_confirmations, view.block_hash)
            elif action == "broadcast":
                await self.broadcast(p.id, p.txid, p.raw_tx, again=True)
            elif action == "fail":
                log.error("payment %d %s conflicted %d blocks deep: it can never confirm; balances given back", p.id, p.txid,
                          -view.wallet_confirmations)
                await self.ledger.mark_failed(p.id, f"conflicted {-view.wallet_confirmations} blocks deep")
                if self.metrics is not None:
                    self.metrics.payments_failed.inc()

    async def broadcast(self, payment_id: int, txid: str, raw: str, again: bool = False) -> bool:
        try:
            got = await self.node.call("sendrawtransaction", raw)
        except RPCError as e:
            if isinstance(e, RPCTransportError):
                raise
            if e.code == -27:  # "Transaction outputs already in utxo set": it is in the chain
                got = txid
            else:
                log.error("payment %d %s: the node refused the stored transaction: %s", payment_id, txid, e)
                await self.ledger.note_broadcast(payment_id, str(e))
                if self.metrics is not None:
                    self.metrics.payment_errors.labels(kind="broadcast").inc()
                return False
        if got != txid:
            raise LedgerError(f"payment {payment_id}: the node says txid {got}, the ledger {txid}")
        self.fault("broadcast")
        await self.ledger.note_broadcast(payment_id, None)
        await self.ledger.mark_sent(payment_id)
        if again:
            log.warning("payment %d %s broadcast again (stored transaction)", payment_id, txid)
        if self.metrics is not None:
            self.metrics.payments_sent.inc()
        self.fault("sent")
        return True

    # -- 5. pay -----------------------------------------------------------------------------------------
    async def pay(self) -> int:
        open_ = await self.ledger.unresolved_payments()
        if any(p.status in (PaymentState.INTENT, PaymentState.SIGNED) for p in open_):
            log.warning("a stored payment is not broadcast yet; no new payments this pass")
            return 0
        balances = await self.ledger.payable(self.s.min_payout)
        sent = 0
        for batch in plan_batches(balances, self.s.min_payout, self.s.max_outputs):
            try:
                if await self.pay_batch(batch):
                    sent += 1
            except PaymentStop as e:
                log.warning("payments stopped for this pass: %s", e)
                break
        return sent

    async def _hold(self, address: str, reason: str) -> None:
        log.error("payee %s set aside: %s (its balance stays owed; `hashcoop payouts release %s` after fixing)", address, reason, address)
        await self.ledger.hold(address, reason)

    async def pay_batch(self, batch: list[Payee]) -> bool:
        payees = []
        for p in batch:
            v = await self.node.call("validateaddress", p.address)
            if not v.get("isvalid"):
                await self._hold(p.address, f"the node rejects the address: {v.get('error') or 'invalid'}")
            else:
                payees.append(p)
        while payees:
            try:
                raw = await self.node.call("createrawtransaction", [], [{p.address: btc(p.owed)} for p in payees])
            except RPCError as e:
                bad = next((p for p in payees if e.code == -5 and p.address in e.message), None)
                if bad is None:
                    raise PaymentStop(f"createrawtransaction: {e}") from None
                await self._hold(bad.address, str(e))
                payees.remove(bad)
                continue
            break
        if not payees:
            return False
        pid = await self.ledger.create_intent(payees, self.s.fee_payer)
        self.fault("intent")
        opts: dict = {"changePosition": len(payees)}
        if self.s.fee_rate > 0:
            opts["fee_rate"] = self.s.fee_rate
        else:
            opts["conf_target"] = self.s.conf_target
        if self.s.fee_payer == "miners":
            opts["subtractFeeFromOutputs"] = list(range(len(payees)))
        try:
            funded = await self.wallet.call("fundrawtransaction", raw, opts)
            signed = await self.wallet.call("signrawtransactionwithwallet", funded["hex"])
        except RPCError as e:
            await self.ledger.abandon(pid, f"wallet: {e}")
            if self.metrics is not None:
                self.metrics.payment_errors.labels(kind="funds" if e.code in (-4, -6) else "wallet").inc()
            raise PaymentStop(f"payment {pid}: wallet: {e}") from None
        if not signed.get("complete"):
            await self.ledger.abandon(pid, f"wallet could not sign: {signed.get('errors')}")
            raise PaymentStop(f"payment {pid}: the wallet could not sign all inputs: {signed.get('errors')}")
        self.fault("signed")
        tx, _ = parse_tx(bytes.fromhex(signed["hex"]))
        fee = sat(funded["fee"])
        scripts = [address_to_script(p.address, self.s.network) for p in payees]
        problems = check_funded(payees, scripts, tx.outputs, fee, self.s.fee_payer, self.s.max_tx_fee)
        if problems:
            await self.ledger.abandon(pid, "; ".join(problems))
            if self.metrics is not None:
                self.metrics.payment_errors.labels(kind="check").inc()
            raise PaymentStop(f"payment {pid}: the funded transaction is not what was intended: {'; '.join(problems)}")
        txid = hash_to_hex(tx.txid)
        outputs = [(p.address, tx.outputs[i][0], i) for i, p in enumerate(payees)]
        await self.ledger.store_signed(pid, raw_tx=signed["hex"], txid=txid, fee_sat=fee, outputs=outputs)
        self.fault("stored")
        log.info("payment %d %s: %d payees, %d sat, fee %d sat (%s pay it)", pid, txid, len(payees), sum(p.owed for p in payees), fee, self.s.fee_payer)
        if not await self.broadcast(pid, txid, signed["hex"]):
            raise PaymentStop(f"payment {pid} not broadcast; it is retried next pass")
        return True

    async def update_metrics(self) -> None:
        if self.metrics is None:
            return

        s = await self.ledger.run(read.pool_summary, self.ledger.engine)
        m = self.metrics
        for k, v in s["blocks"].items():
            m.payout_blocks.labels(status=k).set(v)
        m.payout_owed_sat.set(s["owed"])
        m.payout_in_flight_sat.set(s["in_flight"])
        m.payout_pending_reward_sat.set(s["pending_reward"])
        m.payout_addresses_held.set(s["addresses_held"])


def ledger_unavailable(e: BaseException) -> bool:
    """True for a database that cannot be reached or written now (server
    down, connection cut, SQLite locked past its busy timeout), not for a
    statement that is wrong.

    The whole chain of causes counts: when a connection is cut in the middle
    of SQLAlchemy's pre-ping, psycopg fails the ping with an OperationalError
    and then, while the pool restores autocommit on the dead connection, with
    a ProgrammingError ("connection in transaction status UNKNOWN"), which is
    what reaches the caller (sqlalchemy/sqlalchemy#8008)."""

    seen: set[int] = set()
    link: BaseException | None = e
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError)):
            return True
        if isinstance(link, exc.DBAPIError) and link.connection_invalidated:
            return True
        # a driver's own PEP 249 exception (psycopg, sqlite3, ...) in the chain
        if not isinstance(link, exc.SQLAlchemyError) and any(
                c.__name__ in ("OperationalError", "InterfaceError") for c in type(link).__mro__):
            return True
        nxt = getattr(link, "orig", None) if isinstance(link, exc.DBAPIError) else None
        link = nxt if isinstance(nxt, BaseException) and id(nxt) not in seen else (link.__cause__ or link.__context__)
    return False


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def report_block(b: LedgerBlock) -> dict:
    """The ledger's block row in the shape ``build_report`` takes."""
    return {"hash": b.hash, "height": b.height, "finder_address": b.finder_address, "finder_worker": b.finder_worker,
            "time": b.share_time, "n_target": b.n_target, "window_total": b.window_total, "complete": b.complete,
            "first_seq": b.first_seq, "seq": b.seq, "partial": b.first_credit if b.partial else None,
            "network_difficulty": b.network_difficulty, "window_factor": b.window_factor,
            "window_difficulty": b.window_difficulty, "floor_seq": b.floor_seq}


class PayoutService(Service):
    """Holds the lease and runs a pass every ``interval`` seconds. Without
    the lease it waits as a standby and tries again every few seconds."""

    def __init__(self, engine: PayoutEngine, *, clock, interval: float, lease_ttl: float, once: bool = False,
                 on_done: Callable[[int], None] | None = None):
        self.engine = engine
        self.clock = clock
        self.interval = interval
        self.lease_ttl = lease_ttl
        self.once = once
        self.on_done = on_done
        self.has_lease = False
        self._loop: task.LoopingCall | None = None
        self._renew: task.LoopingCall | None = None
        self._running: defer.Deferred | None = None
        self.passes = 0
        self._waiting_logged = False
        self._ledger_down_since: float | None = None

    def startService(self) -> None:
        super().startService()
        self.engine.threads.start()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True).addErrback(lambda f: log.error("payout loop: %s", f.getTraceback()))
        self._renew = task.LoopingCall(self._renew_lease)
        self._renew.clock = self.clock
        self._renew.start(max(1.0, self.lease_ttl / 3), now=False).addErrback(lambda f: log.error("lease renewal: %s", f.getTraceback()))

    async def _acquire(self) -> bool:
        got = await self.engine.ledger.acquire_lease(self.lease_ttl)
        if got and not self.has_lease:
            log.info("payout lease acquired (%s)", self.engine.ledger.holder)
        if not got:
            if self.has_lease or not self._waiting_logged:
                lease = await self.engine.ledger.lease()
                log.warning("another payout process holds the lease (%s, until %s); waiting as a standby",
                            lease and lease.holder, lease and time.strftime("%H:%M:%S", time.localtime(lease.expires)))
                self._waiting_logged = True
        self.has_lease = got
        if self.engine.metrics is not None:
            self.engine.metrics.payout_lease_held.set(1 if got else 0)
        return got

    def _renew_lease(self) -> defer.Deferred | None:
        if not self.has_lease or (self._running is not None and not self._running.called):
            return None  # a pass renews at its start; don't race it
        return defer.Deferred.fromCoroutine(self._acquire()).addErrback(
            lambda f: log.log(logging.WARNING if ledger_unavailable(f.value) else logging.ERROR, "lease renewal failed: %s",
                              _first_line(f.value)))

    def _tick(self) -> defer.Deferred | None:
        if self._running is not None and not self._running.called:
            return None
        self._running = defer.Deferred.fromCoroutine(self._pass())
        return self._running

    async def _pass(self) -> None:
        code = 0
        try:
            got = await self._acquire()
            if self._ledger_down_since is not None:  # the ledger answered
                log.info("ledger available again after %.0f s", time.monotonic() - self._ledger_down_since)
                self._ledger_down_since = None
            if not got:
                code = 3
                return
            await self.engine.run_pass()
            self.passes += 1
        except LeaseLost as e:
            self.has_lease = False
            code = 3
            self._failed("lease")
            log.error("payout lease lost: %s; nothing was written after losing it", e)
        except RPCTransportError as e:
            code = 1
            self._failed("node")
            log.warning("node unreachable, pass stopped: %s", e)
        except Exception as e:
            code = 1
            if ledger_unavailable(e):
                # the database is down, unreachable or locked: every step is
                # a transaction, so the next pass carries on where this stopped
                self._failed("ledger")
                if self._ledger_down_since is None:
                    self._ledger_down_since = time.monotonic()
                log.warning("ledger unavailable, pass stopped (retried every %g s): %s", self.interval, _first_line(e))
            else:
                self._failed("error")
                log.exception("payout pass failed")
        finally:
            if self.once and self.on_done is not None:
                self.on_done(code)

    def _failed(self, kind: str) -> None:
        if self.engine.metrics is not None:
            self.engine.metrics.payout_pass_failures.labels(kind=kind).inc()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        for lc in (self._loop, self._renew):
            if lc is not None and lc.running:
                lc.stop()
        d = self._running if self._running is not None and not self._running.called else defer.succeed(None)

        def release(_):
            if self.has_lease:
                return self.engine.ledger.release_lease()

        def stop_threads(_):
            self.engine.threads.stop()
            for c in {self.engine.node, self.engine.wallet}:
                c.close()

        d.addBoth(release)
        d.addBoth(stop_threads)
        return d


@dataclass
class Payouts:
    """Handles on the running parts, for the CLI and tests."""

    service: PayoutService
    engine: PayoutEngine
    ledger: Ledger  # the blocking ledger (the CLI and tests; the engine has the connector)
    metrics: object
    config: object
