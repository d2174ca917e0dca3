"""Real Bitcoin software as test processes: Bitcoin Core (``$BITCOIND``,
``$BITCOIN_CLI``) and cpuminer (``$MINERD``).

Each :class:`CoreNode` has its own data directory and its own RPC, P2P and
ZMQ ports, and :meth:`CoreNode.close` stops it (``stop``, then SIGKILL if
it lingers), so a test that fails leaves nothing running. The fixtures in
``tests/realnode/conftest.py`` call ``close`` whatever the outcome.

``.ci/run`` points the variables at ``../shared/bitcoin/bin``; on a user's
machine they name the user's own binaries, and without them the tests that
need them are skipped (``tests/conftest.py``).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.procs import free_port, json_rpc, stop

COIN = 100_000_000


def binary(var: str) -> str:
    path = os.environ.get(var)
    if not path:
        raise RuntimeError(f"{var} is not set")
    return path


class CoreError(Exception):
    """A JSON-RPC error object from Core."""

    def __init__(self, error: dict):
        self.code = error.get("code")
        self.message = error.get("message")
        super().__init__(f"{self.code}: {self.message}")


class CoreNode:
    """``bitcoind`` on regtest (or a private signet: ``chain="signet"`` with
    ``-signetchallenge=51``, whose blocks need no signature, or another
    ``signet_challenge``) with cookie authentication, ZMQ ``hashblock``, no
    connections unless ``peers`` names other nodes' P2P ports, and a
    ``-fallbackfee`` for the wallet."""

    def __init__(self, datadir: Path, *, chain: str = "regtest", args: tuple[str, ...] = (), peers: tuple[int, ...] = (),
                 fallbackfee: str | None = "0.0002", signet_challenge: str = "51", start: bool = True):
        self.datadir = Path(datadir)
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.chain = chain
        self.signet_challenge = signet_challenge
        self.rpcport = free_port()
        self.p2pport = free_port()
        self.zmq = f"tcp://127.0.0.1:{free_port()}"
        self.extra = list(args)
        if fallbackfee is not None:
            self.extra.append(f"-fallbackfee={fallbackfee}")
        self.extra += [f"-addnode=127.0.0.1:{p}" for p in peers]
        self.proc: subprocess.Popen | None = None
        self.log = self.datadir / "bitcoind.out"
        if start:
            self.start()

    # -- process -------------------------------------------------------------

    @property
    def chain_args(self) -> list[str]:
        return ["-regtest"] if self.chain == "regtest" else ["-signet", f"-signetchallenge={self.signet_challenge}"]

    @property
    def chaindir(self) -> Path:
        return self.datadir / self.chain

    @property
    def cookie(self) -> Path:
        return self.chaindir / ".cookie"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rpcport}/"

    def args(self) -> list[str]:
        return [binary("BITCOIND"), *self.chain_args, f"-datadir={self.datadir}", f"-rpcport={self.rpcport}",
                f"-port={self.p2pport}", "-bind=127.0.0.1", "-listen=1", "-listenonion=0", "-discover=0", "-dnsseed=0",
                "-fixedseeds=0", "-natpmp=0", "-server=1", "-printtoconsole=0", f"-zmqpubhashblock={self.zmq}",
                "-rpcthreads=8", "-rpcworkqueue=64", *self.extra]

    def start(self, timeout: float = 60) -> "CoreNode":
        out = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(self.args(), stdout=out, stderr=out, start_new_session=True)
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bitcoind exited ({self.proc.returncode}): {self.tail()}")
            try:
                self.rpc("getblockchaininfo")
                return self
            except (OSError, CoreError, ValueError, RuntimeError):
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"bitcoind did not answer within {timeout}s: {self.tail()}")
                time.sleep(0.1)

    def tail(self, n: int = 3000) -> str:
        debug = self.chaindir / "debug.log"
        text = ""
        for p in (self.log, debug):
            if p.exists():
                text += p.read_text(errors="replace")[-n:]
        return text

    def stop(self, timeout: float = 60) -> None:
        """A clean shutdown (``stop``); SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.rpc("stop", timeout=10)
        except Exception:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would stop it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    close = stop

    # -- RPC -----------------------------------------------------------------

    def call(self, method: str, *params, wallet: str | None = None, timeout: float = 60) -> dict:
        """``{"result": ...}`` or ``{"error": {...}}``, as Core answered."""
        if not self.cookie.exists():
            raise RuntimeError("no cookie yet")
        return json_rpc(self.url, self.cookie.read_bytes(), method, params, wallet=wallet, timeout=timeout)

    def rpc(self, method: str, *params, wallet: str | None = None, timeout: float = 60):
        reply = self.call(method, *params, wallet=wallet, timeout=timeout)
        if "error" in reply:
            raise CoreError(reply["error"])
        return reply["result"]

    def cli(self, *args: str, timeout: float = 60) -> str:
        """``bitcoin-cli`` with this node's chain, data directory and port; its stdout, stripped."""
        res = subprocess.run([binary("BITCOIN_CLI"), *self.chain_args, f"-datadir={self.datadir}", f"-rpcport={self.rpcport}",
                              *args], capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"bitcoin-cli {' '.join(args)}: exit {res.returncode}: {res.stderr.strip()}")
        return res.stdout.strip()

    def wait_for_height(self, height: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.rpc("getblockcount") < height:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.datadir.name}: height {self.rpc('getblockcount')} < {height} after {timeout}s")
            time.sleep(0.05)

    def coinbase_value(self, block_hash: str) -> int:
        """The satoshis the coinbase of ``block_hash`` pays in all."""
        cb = self.rpc("getblock", block_hash, 2)["tx"][0]
        return sum(round(o["value"] * COIN) for o in cb["vout"])


_ACCEPTED = re.compile(r"accepted: (\d+)/(\d+)")
# cpuminer counts the replies it has read ("accepted: N/M", M = accepted +
# rejected). A share it sent in the instant before it was stopped can be
# credited by the pool with its reply never read: the pool may count up to
# this many more shares than minerd's last line, never fewer.
IN_FLIGHT = 2


class Minerd:
    """cpuminer (``$MINERD -a sha256d``) mining through a pool. Its own
    ``accepted: N/M`` lines are the miner's count: N accepted of M submitted."""

    def __init__(self, port: int, user: str, log: Path, *, password: str = "x", threads: int = 1, nice: int = 10,
                 args: tuple[str, ...] = ()):
        """``nice``: cpuminer takes every cycle of its threads; on a test
        machine it runs below the pool and the node (real miners are other
        machines), so it cannot starve them."""
        self.user = user
        self.log_path = Path(log)
        out = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [binary("MINERD"), "-a", "sha256d", "-t", str(threads), "-o", f"stratum+tcp://127.0.0.1:{port}",
                 "-u", user, "-p", password, "-q", *args],
                stdout=out, stderr=out, start_new_session=True, preexec_fn=lambda: os.nice(nice))
        finally:
            out.close()

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def counts(self) -> tuple[int, int]:
        """(accepted, submitted) from the last ``accepted: N/M`` line (0, 0 before the first)."""
        found = _ACCEPTED.findall(self.text())
        return (int(found[-1][0]), int(found[-1][1])) if found else (0, 0)

    def stop(self) -> tuple[int, int]:
        """SIGTERM (SIGKILL if it lingers); the final counts."""
        stop(self.proc, 10)
        return self.counts()

    close = stop
