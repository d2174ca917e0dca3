"""The proof that our byte orders are right: rebuild the block that a real
ckpool 0.9.9 / cpuminer 2.5.1 session solved on a real regtest bitcoind, from
the Stratum lines alone, with the project's own job and share code."""
import json

from hashcoop.pool.core.btc.block import parse_block
from hashcoop.pool.core.btc.target import difficulty_to_target
from hashcoop.pool.core.jobs import Job
from hashcoop.pool.core.shares import Step, Submit, validate_share
from tests.vectors import DIR as VECTORS

VECTOR = VECTORS / "ckpool-cpuminer-regtest.json"


def _session():
    """The recorded session's pieces: extranonce1, extranonce2 size, the
    solving submit's params, its difficulty, and our Job rebuilt from the
    notify it answers (with the block's transactions after the coinbase)."""
    data = json.loads(VECTOR.read_text())
    lines = [(m["dir"], json.loads(m["line"])) for m in data["session"]]
    subscribe_reply = next(msg for d, msg in lines if d == "s2c" and msg.get("id") == 1)
    _, en1_hex, en2_size = subscribe_reply["result"]
    submit = next(msg for d, msg in lines if d == "c2s" and msg.get("method") == "mining.submit")
    job_id = submit["params"][1]
    notify = next(msg for d, msg in lines if d == "s2c" and msg.get("method") == "mining.notify" and msg["params"][0] == job_id)
    difficulty = next(msg for d, msg in lines if d == "s2c" and msg.get("method") == "mining.set_difficulty")["params"][0]
    _header, block_txs = parse_block(bytes.fromhex(data["accepted_block"]["hex"]))
    job = Job.from_notify(notify["params"], [t.raw for t in block_txs[1:]], extranonce_size=4 + en2_size)
    return data, bytes.fromhex(en1_hex), en2_size, submit["params"], difficulty, notify, job


def test_rebuild_ckpool_block_from_stratum_lines():
    data, en1, en2_size, (_user, _job_id, en2, ntime, nonce), difficulty, notify, job = _session()
    accepted = data["accepted_block"]

    # our merkle branch for these transactions equals ckpool's
    assert [b.hex() for b in job.branch] == notify["params"][4]
    assert job.notify_params[:8] == notify["params"][:8]

    result = validate_share(job, Submit(en1, en2, ntime, nonce), Step(job.seq, 0, difficulty, difficulty_to_target(difficulty)),
                            en2_size)
    assert result.ok and result.is_block
    assert result.hash_hex == accepted["hash"]
    assert job.build_block(result.coinbase, result.header).hex() == accepted["hex"]


def test_same_share_replayed_is_a_duplicate():
    _data, en1, en2_size, (_user, _job_id, en2, ntime, nonce), _difficulty, _notify, job = _session()
    step = Step(job.seq, 0, 1.0, difficulty_to_target(1))
    first = validate_share(job, Submit(en1, en2, ntime, nonce), step, en2_size)
    again = validate_share(job, Submit(en1, en2.upper(), ntime.upper(), nonce.upper()), step, en2_size)
    assert first.ok and not again.ok and again.reason == "duplicate"
