"""ledger-stop: the payout ledger goes away in the middle of payments, at
every step of the payment sequence (intent, signed, stored, broadcast,
sent, confirmed), against the stand-in node's wallet.

The payout process is one long-running ``hashcoop payouts run`` (never
restarted by the test). Its test-only fault hook (``HASHCOOP_PAYOUTS_STOP_AT``)
stops it with SIGSTOP right after a step; the test takes the ledger away,
lets the process run on into the dead ledger for a while, brings the ledger
back, and waits for the next stop. On PostgreSQL a TCP proxy between the
process and the server is cut (every connection reset, new ones refused);
on SQLite another connection holds the write lock (``BEGIN EXCLUSIVE``)
past the process's busy timeout, so its writes fail with "database is
locked".

Afterwards, with no restart, the process has recovered by itself and paid
everyone: no address was paid twice, and the ledger reconciles with the
wallet exactly (what the wallet sent to each address is what the ledger
says it paid, every transaction the wallet sent is in the ledger).
"""
from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from hashcoop.payouts import read
from hashcoop.payouts.db import make_engine, migrate
from hashcoop.payouts.ledger import BlockSnapshot, Ledger
from hashcoop.payouts.service import STEPS
from hashcoop.pool.core.btc.address import get_network, script_to_address
from hashcoop.pool.tools.devnode.consensus import hash160
from hashcoop.pool.tools.devnode.mempool import p2wpkh_script
from tests.hostile.conftest import full
from tests.hostile.faultrig import metric, metrics
from tests.payouts.helpers import h
from tests.payouts.rig import OTHER, sends_by_address, wallet_node, write_config
from tests.procs import free_port, hashcoop

pytestmark = pytest.mark.hostile
PG_URL = os.environ.get("HASHCOOP_TEST_DATABASE_URL", "")
OUTAGE = 1.0 if full() else 2.0  # seconds the ledger stays away each time (600 times a database in the full run)
SQLITE_BUSY = 0.5  # the process's SQLite busy timeout (?timeout=): the outage outlasts it


def cuts_per_step() -> int:
    return 100 if full() else 2


def payee(i: int) -> str:
    return script_to_address(p2wpkh_script(hash160(b"ledger-stop payee %d" % i)), get_network("regtest"))


# -- ways to take the ledger away ------------------------------------------------------------------


class TcpCut:
    """A TCP proxy to PostgreSQL that can be cut: every connection through
    it reset, new ones refused (closed at once), until restored."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = False
        self.pairs: set[tuple[socket.socket, socket.socket]] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            if self.cut:
                self._reset(c)
                continue
            try:
                s = socket.create_connection(self.target, 5)
            except OSError:
                self._reset(c)
                continue
            pair = (c, s)
            with self.lock:
                self.pairs.add(pair)
            threading.Thread(target=self._pipe, args=(c, s, pair), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, pair), daemon=True).start()

    def _pipe(self, a, b, pair):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        with self.lock:
            self.pairs.discard(pair)
        for x in pair:
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @staticmethod
    def _reset(sock):
        import struct

        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        except OSError:
            pass

    def stop(self, wait: float = 0.0):
        self.cut = True
        with self.lock:
            pairs = list(self.pairs)
            self.pairs.clear()
        for c, s in pairs:
            self._reset(c)
            self._reset(s)

    def restore(self):
        self.cut = False

    def close(self):
        self.stop()
        self.listener.close()


class SqliteLock:
    """Another connection holding the SQLite ledger's write lock."""

    def __init__(self, path):
        self.path = str(path)
        self.conn = None

    def stop(self, wait: float = 30.0):
        conn = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError:
            conn.close()
            raise
        self.conn = conn

    def restore(self):
        if self.conn is not None:
            self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None

    def close(self):
        self.restore()


# -- the run ---------------------------------------------------------------------------------


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def stops_in(log_path) -> list[str]:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return [ln.rsplit(" ", 1)[1] for ln in text.splitlines() if "fault hook: stopped after" in ln]


def scrape_running(proc, port: int) -> dict:
    """/metrics of the payout process, which the fault hook stops (SIGSTOP)
    after every step of a payment: let it go on until it answers."""
    for _ in range(30):
        if proc_state(proc.pid) == "T":
            proc.send_signal(signal.SIGCONT)
        try:
            return metrics(port, timeout=2.0)
        except OSError:  # stopped again before it answered (TimeoutError, a reset)
            continue
    raise AssertionError("the payout process never answered /metrics")


def ledger_stop_run(tmp_path, **kw) -> None:
    node, pool_address = wallet_node(tmp_path / "node")
    try:
        _ledger_stop_run(tmp_path, node, pool_address, **kw)
    finally:
        node.close()  # also when the run failed: no node left behind


def _ledger_stop_run(tmp_path, node, pool_address: str, *, process_url: str, direct_url: str, outage, figures,
                     db: str) -> None:
    node.rpc("generatetoaddress", 25, pool_address)
    node.rpc("generatetoaddress", 101, OTHER)
    k = cuts_per_step()
    payees = [payee(i) for i in range(6 * k + 4)]
    mport = free_port()
    cfg = write_config(tmp_path / "payouts.toml", node=node, pool_address=pool_address, data_dir=tmp_path / "data",
                       db_url=process_url,
                       payouts={"fee_address": "", "min_payout_sat": 10_000, "max_outputs": 1, "payment_confirmations": 1,
                                "interval": 0.5, "lease_ttl": 30.0,
                                "metrics_listen": f"tcp:{mport}:interface=127.0.0.1"})
    engine = make_engine(direct_url)
    migrate(engine)
    seeder = Ledger(engine)
    rng = random.Random(11)
    credited: dict[str, int] = {}
    assert seeder.acquire_lease(30)
    for n in range(0, len(payees), 4):
        group = payees[n:n + 4]
        amounts = {a: 1.0 for a in group}
        snap = BlockSnapshot(hash=h(f"ls-block{n}"), height=n + 1, seq=n + 1, log_from=n + 1, floor_seq=0, first_seq=n + 1,
                             first_credit=1.0, partial=False, n_target=100.0, total=float(len(group)), complete=False,
                             network_difficulty=50.0, window_factor=2.0, window_difficulty=0.0, entry_shares=1024,
                             time=float(n), created=float(n), finder_address=group[0], finder_worker="w", amounts=amounts)
        seeder.import_block(snap, [], reward=0, reward_source="pool")
        credits = {a: rng.randint(20_000, 2_000_000) for a in group}
        seeder.credit_block(snap.hash, reward=sum(credits.values()), confirmations=101, fee_percent="0", fee_sat=0,
                            fee_address=None, credits=[(a, "share", v) for a, v in credits.items()], report_json="{}",
                            digest="0" * 64)
        credited.update(credits)
    seeder.release_lease()
    log_path = tmp_path / "payouts.log"
    log = open(log_path, "ab")
    proc = hashcoop("payouts", "-c", str(cfg), "run", stdout=log, stderr=log,
                    env={"HASHCOOP_PAYOUTS_STOP_AT": ",".join(STEPS)})
    cuts = {s: 0 for s in STEPS}
    recover = []
    restored_at = None
    seen = 0
    started = time.monotonic()
    try:
        budget = 60 + 30 * 6 * k
        while True:
            assert time.monotonic() - started < budget, f"no progress: {cuts}; see {log_path}"
            assert proc.poll() is None, f"the payout process exited ({proc.returncode}); see {log_path}"
            stops = stops_in(log_path)
            if len(stops) > seen and proc_state(proc.pid) == "T":
                step = stops[-1]
                seen = len(stops)
                if restored_at is not None:  # the process got past a step again after the ledger came back
                    recover.append(time.monotonic() - restored_at)
                    restored_at = None
                if cuts[step] < k:
                    cuts[step] += 1
                    try:
                        outage.stop(wait=2.0)
                    except sqlite3.OperationalError:  # stopped inside a transaction: let it finish first
                        proc.send_signal(signal.SIGCONT)
                        outage.stop()
                    proc.send_signal(signal.SIGCONT)  # on into the dead ledger
                    time.sleep(OUTAGE)
                    outage.restore()
                    restored_at = time.monotonic()
                else:
                    proc.send_signal(signal.SIGCONT)
                node.rpc("generatetoaddress", 1, OTHER)  # payments confirm
                continue
            if all(v >= k for v in cuts.values()) and settled(engine, credited):
                break
            if proc_state(proc.pid) != "T":
                node.rpc("generatetoaddress", 1, OTHER)
            time.sleep(0.1)
        # recovered by itself: every address paid, every payment confirmed, with no restart
        text = log_path.read_text(errors="replace")
        failures = int(metric(scrape_running(proc, mport), "hashcoop_payout_pass_failures_total", kind="ledger"))
        assert failures > 0 and text.count("ledger unavailable, pass stopped") == failures, "each failed pass: a line, a count"
        assert text.count("ledger available again") >= 1
        assert "payout pass failed" not in text and "Traceback" not in text, "an unavailable ledger is no bug"
        seconds = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(30)
            except Exception:
                proc.kill()
                proc.wait()
        log.close()
    try:
        double, mismatches = reconcile(engine, node, credited)
    finally:
        node.close()
        engine.dispose()
    assert double == 0 and mismatches == 0
    figures("ledger-stop", database=db, cuts=sum(cuts.values()), cuts_per_step=k, steps=list(STEPS),
            outage_seconds=OUTAGE, payees=len(credited), failed_passes=failures, double_payments=double,
            mismatches=mismatches, restarts=0, seconds_to_recover=round(max(recover), 2) if recover else None,
            seconds=round(seconds, 1))


def settled(engine, credited) -> bool:
    pays = read.payments(engine, limit=100_000)
    if [p for p in pays if p["status"] in ("intent", "signed", "sent")]:
        return False
    return all(read.address_summary(engine, a)["owed"] < 10_000 for a in credited)


def reconcile(engine, node, credited) -> tuple[int, int]:
    """(addresses paid more than once / more than owed, ledger-wallet mismatches)."""
    assert Ledger(engine).check_invariants() == []
    pays = read.payments(engine, limit=100_000)
    sent = sends_by_address(node.rpc)
    double = mismatches = 0
    for a, v in credited.items():
        s = read.address_summary(engine, a)
        confirmed = [p for p in read.address_payments(engine, a, limit=1000) if p["status"] == "confirmed"]
        in_tx = sum(p["amount"] for p in confirmed)
        double += len(confirmed) > 1 or sent.get(a, 0) > v
        mismatches += not (s["credited"] == v and s["paid"] == v - s["owed"] and sent.get(a, 0) == in_tx
                           == s["paid_confirmed"] == s["paid"])
    wallet_sends = {e["txid"] for e in node.rpc("listtransactions", "*", 100000) if e["category"] == "send"}
    ledger_txids = {p["txid"] for p in pays if p["status"] == "confirmed"}
    mismatches += wallet_sends != ledger_txids
    mismatches += bool(set(sent) - set(credited))
    return double, mismatches


def test_sqlite_ledger_locked_at_every_step(tmp_path, figures):
    path = tmp_path / "ledger.sqlite"
    lock = SqliteLock(path)
    try:
        ledger_stop_run(tmp_path, process_url=f"sqlite:///{path}?timeout={SQLITE_BUSY}", direct_url=f"sqlite:///{path}",
                        outage=lock, figures=figures, db="sqlite")
    finally:
        lock.close()


@pytest.mark.skipif(not PG_URL, reason="HASHCOOP_TEST_DATABASE_URL not set")
def test_postgresql_ledger_cut_at_every_step(tmp_path, figures):
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_URL)
    with admin.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    u = sa.engine.make_url(PG_URL)
    proxy = TcpCut(u.host or "127.0.0.1", u.port or 5432)
    sep = "&" if "?" in PG_URL else "?"
    direct = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    via = u.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        ledger_stop_run(tmp_path, process_url=f"{via}{sep}options=-csearch_path%3D{schema}", direct_url=direct,
                        outage=proxy, figures=figures, db="postgresql")
    finally:
        proxy.close()
        with admin.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
