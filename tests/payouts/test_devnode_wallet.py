"""The devnode's wallet against Bitcoin Core's: the session of
ops/record_wallet_vectors.py runs on a devnode (a Chain and its Rpc, no
sockets) and must answer as Core did in tests/vectors/bitcoind-wallet.json:
the payout flow (maturity, funding with either fee bearer, signing,
sending, confirmations), a payment whose coin another one spent first,
unloading and loading, and Core's errors. tests/vectors/wallet.py says
what "as Core did" means for values that change from run to run;
tests/realnode/test_wallet_vectors.py holds a live Core to the same file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hashcoop.pool.tools.devnode.chain import Chain
from hashcoop.pool.tools.devnode.rpc import Rpc, RpcError, dumps
from hashcoop.pool.tools.devnode.wallet import register_wallet_rpcs
from ops.record_wallet_vectors import session
from tests.vectors.wallet import differences, recording


class Clock:
    def __init__(self):
        self.t = 1_795_651_986

    def __call__(self):
        self.t += 1
        return self.t


def devnode_caller(datadir: Path):
    """A session ``call`` on a fresh devnode whose wallets live in
    ``datadir``/regtest/wallets, answering as Core's JSON does (the data
    directory in messages reads ``<datadir>``, as in the recording)."""
    chain = Chain(clock=Clock())
    rpc = Rpc(chain, clock=chain.clock)
    register_wallet_rpcs(rpc, datadir / "regtest" / "wallets")

    def call(method, *params, wallet=None):
        try:
            reply = {"result": rpc.execute(method, list(params), uri_wallet=wallet)}
        except RpcError as e:
            reply = {"error": e.to_json()}
        return json.loads(dumps(reply).decode().replace(str(datadir), "<datadir>"))

    return call


@pytest.fixture(scope="module")
def recorded():
    return recording()


def test_the_devnode_answers_the_recorded_session_as_core(tmp_path, recorded):
    steps = session(devnode_caller(tmp_path))
    assert differences(recorded, steps) == []
