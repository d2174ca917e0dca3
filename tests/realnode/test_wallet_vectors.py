"""The recorded wallet session (tests/vectors/bitcoind-wallet.json) against
a live Bitcoin Core: ops/record_wallet_vectors.session runs on a fresh
``bitcoind -regtest`` (``-fallbackfee`` unset, as when it was recorded) and
must answer as the recording says, by the rules of tests/vectors/wallet.py.
A Core that answers differently (a newer version, another build) fails
here; record the vectors again with ops/record_wallet_vectors.py, and
tests/payouts/test_devnode_wallet.py then shows where the stand-in's
wallet has to follow."""
from __future__ import annotations

import pytest

from ops.record_wallet_vectors import session
from tests.vectors.wallet import SIGNATURE_SIZED, differences, recording, signature_length


@pytest.mark.bitcoind
def test_core_answers_the_recorded_wallet_session(core):
    node = core(fallbackfee=None)
    datadir = str(node.datadir)

    def call(method, *params, wallet=None):
        reply = node.call(method, *params, wallet=wallet)
        if "error" in reply:
            reply["error"]["message"] = reply["error"]["message"].replace(datadir, "<datadir>")
        return reply

    recorded = recording()
    steps = session(call)
    # Core grinds for a low R: a 70-byte signature (one run in about 128)
    # makes the payment one byte smaller than the recorded one
    extra = SIGNATURE_SIZED if signature_length(steps) != signature_length(recorded["steps"]) else ()
    assert differences(recorded, steps, extra) == []
