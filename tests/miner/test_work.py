"""Pure work building: notify -> coinbase/merkle/header, targets, version
rolling, work units and shares."""
from fractions import Fraction

import pytest

from hashcoop.pool.core.btc.block import parse_block
from hashcoop.pool.core.btc.hashing import hash_to_hex, merkle_root, sha256d
from hashcoop.pool.core.btc.target import DIFF1_TARGET, MAX_TARGET
from hashcoop.pool.tools.miner.work import (
    DEFAULT_VERSION_MASK,
    NONCE_SPACE,
    Job,
    NotifyError,
    WorkSource,
    check_share,
    hash_value,
    rolled_version,
    share_target,
    spread_bits,
    stratum_prevhash_to_header,
)
from tests.miner.vectors import accepted_block, notify, recorded_submit, subscribe_result


def vector_job(difficulty: float = 1.0, received_at: float = 0.0) -> Job:
    _subs, en1, en2_size = subscribe_result()
    return Job.from_notify(notify()["params"], difficulty=difficulty, extranonce1=bytes.fromhex(en1),
                           extranonce2_size=en2_size, received_at=received_at)


def test_ckpool_vector_header_hash_and_bytes():
    """The recorded subscribe reply + notify + cpuminer's submit rebuild the
    exact header bitcoind accepted as block 105."""
    job = vector_job()
    _user, job_id, en2, ntime, nonce = recorded_submit()["params"]
    assert job_id == job.job_id
    header = job.header(bytes.fromhex(en2), int(ntime, 16), int(nonce, 16))
    block = accepted_block()
    assert header.hex() == block["hex"][:160]
    assert hash_to_hex(sha256d(header)) == block["hash"]


def test_ckpool_vector_coinbase_and_merkle_match_the_block():
    job = vector_job()
    en2 = bytes.fromhex(recorded_submit()["params"][2])
    _header, txs = parse_block(bytes.fromhex(accepted_block()["hex"]))
    # the block carries the witness coinbase; miners hash its stripped form
    assert txs[0].stripped == job.coinbase(en2)
    assert job.merkle_root(en2) == merkle_root([tx.txid for tx in txs])


def test_prevhash_word_swap():
    raw = bytes(range(32))
    stratum = b"".join(raw[i:i + 4][::-1] for i in range(0, 32, 4)).hex()
    assert stratum_prevhash_to_header(stratum) == raw
    # the vector's notify prevhash, unswapped, is the accepted header's prevhash field
    assert vector_job().prevhash == bytes.fromhex(accepted_block()["hex"][8:72])


def test_notify_fields_are_big_endian_hex():
    job = vector_job()
    assert (job.version, job.nbits, job.ntime) == (0x20000000, 0x207FFFFF, 0x6B077BFF)
    assert len(job.merkle_branch) == 3 and not job.clean


@pytest.mark.parametrize("bad", [
    [],
    ["j", "00" * 31, "", "", [], "20000000", "207fffff", "6b077bff", True],
    ["j", "00" * 32, "zz", "", [], "20000000", "207fffff", "6b077bff", True],
    ["j", "00" * 32, "", "", ["00" * 31], "20000000", "207fffff", "6b077bff", True],
    ["j", "00" * 32, "", "", [], "2000000", "207fffff", "6b077bff", True],
    ["", "00" * 32, "", "", [], "20000000", "207fffff", "6b077bff", True],
])
def test_malformed_notify_is_rejected(bad):
    with pytest.raises(NotifyError):
        Job.from_notify(bad, difficulty=1, extranonce1=b"", extranonce2_size=4)


def test_extranonce2_must_have_the_subscribed_size():
    with pytest.raises(ValueError):
        vector_job().coinbase(b"\0" * 4)


@pytest.mark.parametrize("difficulty, expected", [
    (1, DIFF1_TARGET),
    (2, DIFF1_TARGET // 2),
    (0.5, DIFF1_TARGET * 2),
    (0.0001, DIFF1_TARGET * Fraction(0.0001).denominator // Fraction(0.0001).numerator),
    (1e-12, MAX_TARGET),
])
def test_share_target_including_fractional(difficulty, expected):
    assert share_target(difficulty) == expected


def test_fractional_difficulty_target_is_about_right():
    # 0.0001 is not exact in binary; the target must still be within 1 ppm of 10000 * diff1
    assert abs(share_target(0.0001) / (DIFF1_TARGET * 10000) - 1) < 1e-6


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), True, "1"])
def test_share_target_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        share_target(bad)


def test_spread_bits_is_a_bijection_into_the_mask():
    mask = 0b1011_0010
    values = [spread_bits(i, mask) for i in range(16)]
    assert len(set(values)) == 16
    assert all(v & ~mask == 0 for v in values)
    assert spread_bits(0b0101, mask) == 0b0010_0010 | 0  # bits 1 and 5 set
    with pytest.raises(ValueError):
        spread_bits(16, mask)


def test_default_mask_rolls_16_bits_inside_the_mask():
    seen = set()
    for i in range(0, 1 << 16, 97):
        v = spread_bits(i, DEFAULT_VERSION_MASK)
        assert v & ~DEFAULT_VERSION_MASK == 0
        seen.add(v)
    assert len(seen) == len(range(0, 1 << 16, 97))
    assert spread_bits((1 << 16) - 1, DEFAULT_VERSION_MASK) == DEFAULT_VERSION_MASK


def test_rolled_version_keeps_bits_outside_the_mask():
    v = rolled_version(0x20000000, DEFAULT_VERSION_MASK, 0xFFFFFFFF)
    assert v == 0x3FFFE000
    assert rolled_version(0x20000000, DEFAULT_VERSION_MASK, 0) == 0x20000000
    assert rolled_version(0x3FFFFFFF, 0x00006000, 0x00002000) == 0x3FFFBFFF


def test_work_source_never_repeats_and_stays_in_mask():
    job = vector_job()
    src = WorkSource(job, version_mask=0x00006000)  # two bits: four versions per extranonce2
    units = [src.next_unit(0.0, i) for i in range(12)]
    keys = {(u.extranonce2, u.version, u.nonce_start) for u in units}
    assert len(keys) == 12
    for u in units:
        assert u.version & ~0x00006000 == job.version & ~0x00006000
        assert u.version_bits & ~0x00006000 == 0
        assert u.version == rolled_version(job.version, 0x00006000, u.version_bits)
        assert u.header_prefix == job.header(u.extranonce2, u.ntime, 0, u.version)[:76]
        assert (u.nonce_start, u.nonce_end) == (0, NONCE_SPACE)
    # versions first, then extranonce2 (little-endian counter)
    assert [u.extranonce2[0] for u in units] == [0] * 4 + [1] * 4 + [2] * 4
    assert len({u.version for u in units[:4]}) == 4


def test_work_source_without_rolling_submits_no_version_bits():
    src = WorkSource(vector_job(), version_mask=None)
    a, b = src.next_unit(0.0, 1), src.next_unit(0.0, 2)
    assert a.version_bits is None and a.version == 0x20000000
    assert a.extranonce2 != b.extranonce2


def test_mask_change_moves_to_a_fresh_extranonce2():
    src = WorkSource(vector_job(), version_mask=0x00006000)
    first = src.next_unit(0.0, 1)
    src.set_version_mask(0x00002000)
    second = src.next_unit(0.0, 2)
    assert second.extranonce2 != first.extranonce2
    assert second.version_bits & ~0x00002000 == 0


def test_work_source_splits_nonce_ranges_and_exhausts():
    job = Job.from_notify(notify()["params"], difficulty=1, extranonce1=b"\1", extranonce2_size=1)
    src = WorkSource(job, version_mask=None, nonces_per_unit=1 << 31)
    units = [src.next_unit(0.0, i) for i in range(512)]
    assert [(u.nonce_start, u.nonce_end) for u in units[:2]] == [(0, 1 << 31), (1 << 31, 1 << 32)]
    assert units[1].extranonce2 == units[0].extranonce2 and units[2].extranonce2 == b"\1"
    assert len({(u.extranonce2, u.nonce_start) for u in units}) == 512
    assert src.next_unit(0.0, 999) is None


def test_ntime_rolls_with_time_since_the_job_arrived():
    job = vector_job(received_at=100.0)
    src = WorkSource(job)
    assert src.next_unit(100.4, 1).ntime == job.ntime
    assert src.next_unit(107.9, 2).ntime == job.ntime + 7


def test_check_share_rebuilds_from_the_job_and_flags_blocks():
    job = vector_job(difficulty=1.0)
    unit = WorkSource(job).next_unit(0.0, 1)  # extranonce2 0, job ntime: what cpuminer used
    nonce = int(recorded_submit()["params"][4], 16)
    share = check_share(unit, nonce)
    assert share is not None and share.is_block
    assert hash_to_hex(share.header_hash) == accepted_block()["hash"]
    assert share.submit_params("u") == ["u", *recorded_submit()["params"][1:]]
    # a neighbouring nonce misses difficulty 1: the share check really compares
    assert hash_value(sha256d(unit.header(nonce + 1))) > job.share_target
    assert check_share(unit, nonce + 1) is None


def test_submit_params_carry_version_bits_when_rolling():
    job = vector_job(difficulty=1e-12)  # target capped at 2**256-1: every hash is a share
    src = WorkSource(job, version_mask=DEFAULT_VERSION_MASK)
    src.next_unit(0.0, 1)
    u2 = src.next_unit(0.0, 2)  # the second unit rolls the lowest mask bit
    share = check_share(u2, 7)
    params = share.submit_params("addr.w")
    assert len(params) == 6 and params[5] == f"{u2.version_bits:08x}" and u2.version_bits == 0x2000
    header = job.header(u2.extranonce2, u2.ntime, 7, rolled_version(job.version, DEFAULT_VERSION_MASK, int(params[5], 16)))
    assert sha256d(header) == share.header_hash
