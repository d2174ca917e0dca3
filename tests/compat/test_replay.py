"""Replay each real client's recorded Stratum V1 lines against the server.

For every fixture in ``sequences/`` the client's own lines are sent as they
are recorded (raw text, spacing, field order, id numbering, pipelining or
waiting), with a regtest address as the user in the client's convention, and
the server's output is read the way that client's code reads it (see
``replay.py``: ``Miner`` latches difficulties per client, ``first_unhandled``
is cpuminer/cgminer's authorize wait, ...). Then the client mines: shares in
its exact submit format and version-bit convention, accepted, then rejected
as duplicates; and its difficulty behaviour is replayed.

Shares on integer-difficulty (ASIC) ports: difficulty 1 needs ~4e9 hashes,
so there the accepted share is one that solves the (easy, regtest-like)
network target -- the server must accept a block whatever the share
difficulty -- and a hash missing difficulty 1 checks the reject path. The
ordinary accepted-share path and "old jobs keep their difficulty" are then
re-run with the same client lines on a fractional port (``CPU_PORT``).
"""
import itertools
import re
import struct

import pytest

from tests.compat.replay import (
    ASIC_PORT,
    ASIC_TEMPLATE_VERSION,
    BIP320_MASK,
    CPU_PORT,
    EASY_NETWORK,
    HARD_NETWORK,
    NERD_PORT,
    NICEHASH_PORT,
    Conn,
    Miner,
    accepted,
    arduinojson_size,
    bfgminer_check_coinbase,
    fill,
    first_unhandled,
    fixture,
    hash_hex,
    methods,
    rejected,
    replies,
    reply,
    step,
)
from tests.compat.replay import make_harness as _make_harness
from tests.stratum.harness import ADDR, ADDR2

CONFIGURE_OK = {"version-rolling": True, "version-rolling.mask": "1fffe000"}
DUPLICATE, LOW_DIFFICULTY = 22, 23
_HEX = re.compile(r"[0-9a-f]*").fullmatch
_HEX_ANY = re.compile(r"[0-9a-fA-F]*").fullmatch


def asic_harness(**kw):
    return _make_harness(ASIC_PORT, network_diff=EASY_NETWORK, version=ASIC_TEMPLATE_VERSION, **kw)


def cpu_harness(port=CPU_PORT, **kw):
    return _make_harness(port, network_diff=HARD_NETWORK, **kw)


def method_of(line: str) -> str:
    return re.search(r'"method":\s*"([^"]+)"', line).group(1)


def subscribe_result(m: dict, *, sizes) -> tuple[bytes, int]:
    """result = [subscriptions, extranonce1 hex, extranonce2_size]."""
    assert m["error"] is None and type(m["result"]) is list and len(m["result"]) >= 3, m
    en1, size = m["result"][1], m["result"][2]
    assert type(en1) is str and en1 and len(en1) % 2 == 0 and len(en1) <= 64 and _HEX(en1), en1
    assert type(size) is int and size in sizes, size
    return bytes.fromhex(en1), size


def check_block(h, hv: int, version: int) -> None:
    """The server credited the share with the header hash the client computed,
    and the block it built carries the client's rolled version."""
    assert h.sink.accepted[-1].hash == hash_hex(hv)
    assert h.sink.accepted[-1].is_block
    header = bytes.fromhex(h.submitter.found[-1].block_hex)[:80]
    assert struct.unpack("<I", header[:4])[0] == version


# =====================================================================================
# ESP-Miner (Bitaxe): configure/subscribe/authorize pipelined, then suggest_difficulty
# and extranonce.subscribe after a true authorize; 6-param submits, XOR version bits;
# difficulty latched per job at the next notify. (esp-miner.json)
# =====================================================================================
ESP_USER = ADDR + ".bitaxe"
ESP_VALUES = dict(USER=ESP_USER, PASSWORD="x", MODEL="BM1370", FW_VERSION="v2.9.0", SUGGESTED_DIFFICULTY=1000)
ESP_VARIANTS = ["current", "legacy_spaced", "oldest_jsonrpc2"]
ESP_ROLL = 0x0D9A2000  # bits the ASIC rolled, inside the negotiated mask


def esp_lines(variant: str) -> dict[str, str]:
    fx = fixture("esp-miner")
    if variant == "current":
        lines = [step(fx, n) for n in range(1, 7)]
    else:
        lines = fx["variants"][variant]["messages"]
    return {method_of(line): line for line in lines}


def esp_connect(h, variant, *, integer):
    L = esp_lines(variant)
    c = Conn(h)
    miner = Miner(c, "notify", integer=integer)
    c.send(*(fill(L[m], **ESP_VALUES) for m in ("mining.configure", "mining.subscribe", "mining.authorize")))
    out = c.recv()
    # each request answered in order, and nothing but difficulty+work before the authorize result
    assert methods(out) == ["reply:1", "reply:2", "reply:3", "mining.set_difficulty", "mining.notify"], methods(out)
    conf, sub, auth = (reply(out[i], i + 1) for i in range(3))
    # parse_configure_result: "version-rolling": true and a hex mask (ANDed with 1fffe000)
    assert conf["error"] is None and conf["result"] == CONFIGURE_OK
    en1, en2_size = subscribe_result(sub, sizes=range(1, 33))  # MAX_EXTRANONCE_2_LEN 32
    accepted(auth)  # parse_result: only a JSON true triggers suggest_difficulty
    miner.feed(out)
    first = miner.current
    next_id = 4
    if "mining.suggest_difficulty" in L:
        c.send(fill(L["mining.suggest_difficulty"], **ESP_VALUES), fill(L["mining.extranonce.subscribe"], **ESP_VALUES))
        out = c.recv()
        assert sorted(methods(out)) == sorted(["reply:4", "reply:5", "mining.set_difficulty", "mining.notify"]), methods(out)
        assert {r["id"]: r["error"] for r in replies(out)} == {4: None, 5: None}
        accepted(reply([x for x in out if x.is_reply][1], 5))
        miner.feed(out)
        # the new difficulty comes with a job id ESP-Miner has not seen (it drops repeated ids)
        assert miner.current.id != first.id and miner.differences[-1][0] == miner.current.id
        next_id = 6
    return c, miner, L, en1, en2_size, first, next_id


def esp_submit(L, mid, work, en2, nonce, vbits, ntime=None):
    return fill(L["mining.submit"], ID=mid, USER=ESP_USER, JOB_ID=work.id, EXTRANONCE2=en2.hex(),
                NTIME=f"{work.ntime if ntime is None else ntime:08x}", NONCE=f"{nonce:08x}", VERSION_BITS=f"{vbits:08x}")


@pytest.mark.parametrize("variant", ESP_VARIANTS)
def test_esp_miner_replay(variant):
    h = asic_harness()
    c, miner, L, en1, en2_size, first, mid = esp_connect(h, variant, integer=True)
    assert first.difficulty == 1
    if variant != "oldest_jsonrpc2":
        assert miner.current.difficulty == 1000  # the integer suggestion, as an integer
    work = miner.current
    rolled = work.version | ESP_ROLL
    vbits = rolled ^ work.version  # asic_result_task.c: rolled_version ^ job_version
    en2 = (1).to_bytes(en2_size, "big")
    nonce, hv = work.block(en1, en2, version=rolled)
    c.send(esp_submit(L, mid, work, en2, nonce, vbits))
    out = c.recv()
    accepted(reply(out[0], mid))
    check_block(h, hv, rolled)
    # the same share again: rejected, reason readable from error[1]
    c.send(esp_submit(L, mid + 1, work, en2, nonce, vbits))
    rejected(reply(c.recv()[0], mid + 1), DUPLICATE)
    # a hash below the job's difficulty: rejected as low difficulty
    miss, _ = work.miss(en1, en2, miner.difficulty_for(work), version=rolled)
    c.send(esp_submit(L, mid + 2, work, en2, miss, vbits))
    rejected(reply(c.recv()[0], mid + 2), LOW_DIFFICULTY)
    # a job from before the difficulty change is still mined and accepted
    en2b = (2).to_bytes(en2_size, "big")
    rolled_b = first.version | 0x00004000
    nonce, hv = first.block(en1, en2b, version=rolled_b)
    c.send(esp_submit(L, mid + 3, first, en2b, nonce, rolled_b ^ first.version))
    accepted(reply(c.recv()[0], mid + 3))
    check_block(h, hv, rolled_b)
    assert c.connected


@pytest.mark.parametrize("variant", ["current", "legacy_spaced"])
def test_esp_miner_difficulty_change_keeps_old_jobs(variant):
    """Fractional re-run: the suggestion (clamped to the port's 4e-8) comes
    as set_difficulty + new job; the old job keeps 1e-8 (create_jobs_task
    latches the difficulty per job)."""
    h = cpu_harness()
    c, miner, L, en1, en2_size, old, mid = esp_connect(h, variant, integer=False)
    new = miner.current
    assert (old.difficulty, new.difficulty) == (1e-8, 4e-8)
    en2 = (7).to_bytes(en2_size, "big")
    ver = old.version | 0x00006000
    nonce, hv = old.share(en1, en2, 1e-8, harder=4e-8, version=ver)
    c.send(esp_submit(L, mid, old, en2, nonce, ver ^ old.version))
    accepted(reply(c.recv()[0], mid))
    assert h.sink.accepted[-1].hash == hash_hex(hv) and h.sink.accepted[-1].difficulty == 1e-8
    nonce, hv = new.share(en1, en2, 4e-8, version=ver)
    c.send(esp_submit(L, mid + 1, new, en2, nonce, ver ^ new.version))
    accepted(reply(c.recv()[0], mid + 1))
    assert h.sink.accepted[-1].hash == hash_hex(hv) and h.sink.accepted[-1].difficulty == 4e-8
    nonce, _ = new.share(en1, en2, 1e-8, harder=4e-8, version=ver, start=nonce + 1)
    c.send(esp_submit(L, mid + 2, new, en2, nonce, ver ^ new.version))
    rejected(reply(c.recv()[0], mid + 2), LOW_DIFFICULTY)
    c.send(esp_submit(L, mid + 3, new, en2, nonce, ver ^ new.version, ntime=new.ntime + 3))
    assert c.recv()[0].msg["result"] is False  # ntime is part of the header


# =====================================================================================
# NerdMiner v2: subscribe, read exactly one line; authorize + float suggest_difficulty
# pipelined; 5-param submits with String(nonce, HEX); difficulty applies at once;
# the suggestion is repeated every 30 s as a keep-alive. (nerdminer.json)
# =====================================================================================
NERD_EXTRANONCE2 = {2: "0001", 4: "00000001", 8: "0000000000000001"}  # utils.cpp calculateMiningData


def nerd_connect(h, agent_line_transform=lambda s: s):
    fx = fixture("nerdminer")
    c = Conn(h)
    miner = Miner(c, "immediate", integer=False, max_line=4096)
    values = dict(FW_VERSION="V1.7.0", USER=ADDR, PASSWORD="x")  # USER = Settings.BtcWallet
    c.send(fill(agent_line_transform(step(fx, 1)), **values))
    out = c.recv()
    # readStringUntil('\n') once: the subscribe reply must be the first line
    assert out and out[0].is_reply, methods(out)
    en1, en2_size = subscribe_result(reply(out[0], 1), sizes=NERD_EXTRANONCE2)
    assert len(out) == 1, methods(out)
    c.send(fill(step(fx, 2), **values), fill(step(fx, 3)))
    out = c.recv()
    for line in out:  # StaticJsonDocument<4096>
        assert len(line.raw) < 4096 and arduinojson_size(line.msg) <= 4096, (len(line.raw), arduinojson_size(line.msg))
    r = {m["id"]: m for m in replies(out)}
    assert set(r) == {2, 3} and r[2]["error"] is None and r[3]["error"] is None
    accepted(r[2])
    miner.feed(out)
    assert miner.difficulty == 1e-4  # the float suggestion, taken as sent
    work = miner.current
    # coinbase_buffer[512] holds the coinbase as hex
    assert len(work.coinb1) + len(en1) + en2_size + len(work.coinb2) <= 255
    return fx, c, miner, en1, en2_size


@pytest.mark.parametrize("agent", ["NerdMinerV2/{FW_VERSION}", "NerdMinerV2", "NerdNOS/{FW_VERSION}", "HAN_SOLOminer/{FW_VERSION}"])
def test_nerdminer_handshake_agents(agent):
    h = cpu_harness(NERD_PORT)
    _, c, miner, _, _ = nerd_connect(h, lambda s: s.replace("NerdMinerV2/{FW_VERSION}", agent))
    assert c.session.user_agent == agent.replace("{FW_VERSION}", "V1.7.0")
    assert miner.current is not None and c.connected


def test_nerdminer_replay():
    h = cpu_harness(NERD_PORT)
    fx, c, miner, en1, en2_size = nerd_connect(h)
    work = miner.current
    en2 = bytes.fromhex(NERD_EXTRANONCE2[en2_size])
    nonce, hv = work.share(en1, en2, miner.difficulty_for(work))
    text = format(nonce, "x")  # Arduino String(nonce, HEX): no zero padding
    assert len(text) < 8

    def submit(mid, nonce_text):
        return fill(step(fx, 5), ID=mid, USER=ADDR, JOB_ID=work.id, EXTRANONCE2=en2.hex(), NTIME=work.ntime_hex,
                    NONCE=nonce_text)

    c.send(submit(4, text))
    out = c.recv()
    accepted(reply(out[0], 4))
    assert h.sink.accepted[-1].hash == hash_hex(hv) and h.sink.accepted[-1].difficulty == 1e-4
    miner.feed(out)
    # one share in no time: vardiff raises the difficulty (set_difficulty, then a new job), once
    # stratum.difficulty_change_interval has passed since the suggestion's change
    assert len(miner.differences) == 2
    h.reactor.advance(h.cfg.stratum.difficulty_change_interval)
    c.session.tick(h.reactor.seconds())  # what the server's sweep does every second
    miner.feed(c.recv())
    assert len(miner.differences) == 3 and miner.differences[-1] == (miner.current.id, 1e-3)
    raised = miner.difficulty
    # the same share again, also in upper case: duplicate
    for mid, t in ((5, text), (6, text.upper())):
        c.send(submit(mid, t))
        rejected(reply(c.recv()[0], mid), DUPLICATE)
    # keep-alive suggest_difficulty every 30 s: answered, difficulty untouched
    for mid in (7, 8, 9):
        h.reactor.advance(30)
        c.send(fill(step(fx, 4), ID=mid))
        out = c.recv()
        assert methods(out) == [f"reply:{mid}"], methods(out)
        assert out[0].msg["error"] is None
        miner.feed(out)
    assert miner.difficulty == raised == c.session.difficulty
    assert c.session.vardiff.low == 1e-4  # the suggestion stays the floor


def test_nerdnos_asic_submit_six_params_without_configure():
    """NERD_NOS builds send %08lx fields and a 6th param (rolled ^ job
    version) although they never send mining.configure."""
    h = cpu_harness(NERD_PORT)
    fx, c, miner, en1, en2_size = nerd_connect(h, lambda s: s.replace("NerdMinerV2", "NerdNOS"))
    work = miner.current
    en2 = bytes.fromhex(NERD_EXTRANONCE2[en2_size])
    nonce, hv = work.share(en1, en2, miner.difficulty_for(work), start=0x10000000)

    def submit(mid):
        return fill(step(fx, "5-asic"), ID=mid, USER=ADDR, JOB_ID=work.id, EXTRANONCE2=en2.hex(),
                    NTIME=f"{work.ntime:08x}", NONCE=f"{nonce:08x}", VERSION_BITS=f"{work.version ^ work.version:08x}")

    c.send(submit(4))
    accepted(reply(c.recv()[0], 4))
    assert h.sink.accepted[-1].hash == hash_hex(hv)
    c.send(submit(5))
    rejected(reply(c.recv()[0], 5), DUPLICATE)


# =====================================================================================
# cpuminer 2.5: subscribe and authorize each waiting; the first line it does not
# handle is the authorize reply; 5-param submits, always id 4; difficulty from the
# next notify. (cpuminer.json)
# =====================================================================================
CPUMINER_KNOWN = {"mining.notify", "mining.set_difficulty", "client.reconnect", "client.get_version", "client.show_message"}
CPU_VALUES = dict(CPUMINER_VERSION="2.5.1", USER=ADDR + ".cpu", PASSWORD="")  # -p omitted: ""


def cpuminer_connect(h, subscribe_line, port=50000, **extra):
    fx = fixture("cpuminer")
    c = Conn(h, port=port)
    miner = Miner(c, "notify", integer=False)
    c.send(fill(subscribe_line, **CPU_VALUES, **extra))
    out = c.recv()
    sub = reply(out[0], 1)  # the first line received is the subscribe reply
    assert sub["result"] is not None
    en1, en2_size = subscribe_result(sub, sizes=range(1, 101))
    session_id = next(s[1] for s in sub["result"][0] if s[0] == "mining.notify")
    c.send(fill(step(fx, 2), **CPU_VALUES))
    more = c.recv()
    accepted(reply(first_unhandled(out[1:] + more, CPUMINER_KNOWN), 2))
    miner.feed(out[1:] + more)
    assert miner.current is not None
    return fx, c, miner, en1, en2_size, session_id


def test_cpuminer_replay():
    h = cpu_harness()
    fx, c, miner, en1, en2_size, _ = cpuminer_connect(h, step(fixture("cpuminer"), 1))
    old = miner.current
    assert old.difficulty == 1e-8

    def submit(work, en2, nonce):
        return fill(step(fx, 3), USER=CPU_VALUES["USER"], JOB_ID=work.id, EXTRANONCE2=en2.hex(),
                    NTIME=work.ntime_hex, NONCE=f"{nonce:08x}")

    def en2(n):  # xnonce2: a little-endian counter from 0 for each job id
        return n.to_bytes(en2_size, "little")

    n1, h1 = old.share(en1, en2(0), 1e-8, harder=4e-8)
    c.send(submit(old, en2(0), n1))
    out = c.recv()
    accepted(reply(out[0], 4))
    # one fast share: vardiff sends set_difficulty, then a job with a new id
    miner.feed(out[1:])
    new = miner.current
    assert new.id != old.id and (new.difficulty, old.difficulty) == (4e-8, 1e-8)
    # more shares, every one with id 4: not de-duplicated by id
    n2, h2 = old.share(en1, en2(1), 1e-8, harder=4e-8)  # old job, at its own difficulty
    c.send(submit(old, en2(1), n2))
    accepted(reply(c.recv()[0], 4))
    assert (h.sink.accepted[-1].hash, h.sink.accepted[-1].difficulty) == (hash_hex(h2), 1e-8)
    n3, h3 = new.share(en1, en2(0), 4e-8)
    c.send(submit(new, en2(0), n3))
    accepted(reply(c.recv()[0], 4))
    assert (h.sink.accepted[-1].hash, h.sink.accepted[-1].difficulty) == (hash_hex(h3), 4e-8)
    n4, _ = new.share(en1, en2(1), 1e-8, harder=4e-8)
    c.send(submit(new, en2(1), n4))
    rejected(reply(c.recv()[0], 4), LOW_DIFFICULTY)
    c.send(submit(old, en2(0), n1))
    rejected(reply(c.recv()[0], 4), DUPLICATE)
    assert len(h.sink.accepted) == 3


def test_cpuminer_resume_and_retry_subscribe_forms():
    """Reconnect with the session id from the last subscribe reply, and the
    params-less retry form: both must just start a working session."""
    h = cpu_harness()
    fx = fixture("cpuminer")
    first = step(fx, 1)
    *_, session_id = cpuminer_connect(h, first, port=1)
    resume = first.replace('"params": ["cpuminer/{CPUMINER_VERSION}"]', '"params": ["cpuminer/{CPUMINER_VERSION}", "{SESSION_ID}"]')
    assert resume != first
    _, c2, m2, *_ = cpuminer_connect(h, resume, port=2, SESSION_ID=session_id)
    _, c3, m3, *_ = cpuminer_connect(h, step(fx, "1-retry"), port=3)
    assert c2.connected and c3.connected and m2.current and m3.current


# =====================================================================================
# cgminer 4.x: (USE_VMASK) configure first, its reply must be the next line;
# subscribe; authorize (first unhandled line); optional integer suggest; 6-param
# submits with the rolled bits of the micro job; ids from a global counter at 0.
# (cgminer.json)
# =====================================================================================
CGMINER_KNOWN = CPUMINER_KNOWN | {"mining.ping", "mining.set_version_mask"}
# set_vmask() split of the mask 1fffe000 for micro jobs 0, 2, 4, 8
# (vmask_003[3], [2] = low nibble group, [1] = the rest, [0] = whole mask)
CGMINER_VMASK_002 = ["00000000", "0000e000", "1fff0000", "1fffe000"]
CG_VALUES = dict(CGMINER_AGENT="cgminer/4.12.1", USER=ADDR + ".cg1", PASSWORD="x")


def cgminer_connect(h, *, vmask, suggest, integer):
    fx = fixture("cgminer")
    ids = itertools.count(0)  # swork_id: 0 on a fresh process
    c = Conn(h)
    miner = Miner(c, "notify", integer=integer)
    if vmask:
        mid = next(ids)
        c.send(fill(step(fx, 1), ID=mid))
        out = c.recv()
        assert len(out) == 1  # the single next line is the configure reply
        conf = reply(out[0], mid)
        assert conf["error"] is None and conf["result"] == CONFIGURE_OK
    mid = next(ids)
    c.send(fill(step(fx, 2), ID=mid, **CG_VALUES))
    out = c.recv()
    sub = reply(next(x for x in out if x.is_reply), mid)  # method lines are processed and skipped
    en1, en2_size = subscribe_result(sub, sizes=range(2, 17))  # 'Failed to get valid n2size'
    miner.feed(out)
    mid = next(ids)
    c.send(fill(step(fx, 3), ID=mid, **CG_VALUES))
    out = c.recv()
    accepted(reply(first_unhandled(out, CGMINER_KNOWN), mid))
    miner.feed(out)
    first = miner.current
    if suggest is not None:
        mid = next(ids)
        c.send(fill(step(fx, 4), ID=mid, SUGGESTED_DIFFICULTY=suggest))
        out = c.recv()
        miner.feed(out)
        assert miner.current.id != first.id and miner.differences[-1][0] == miner.current.id
    submit_line = step(fx, "5-vmask" if vmask else 5)

    def submit(work, en2, nonce, vbits=None, ntime=None):
        mid = next(ids)
        extra = {} if vbits is None else {"VERSION_BITS": vbits}
        return mid, fill(submit_line, ID=mid, USER=CG_VALUES["USER"], JOB_ID=work.id, EXTRANONCE2=en2.hex(),
                         NTIME=work.ntime_hex if ntime is None else ntime, NONCE=f"{nonce:08x}", **extra)

    return c, miner, en1, en2_size, first, submit


@pytest.mark.parametrize("vmask", [True, False], ids=["vmask", "plain"])
def test_cgminer_replay(vmask):
    h = asic_harness()
    c, miner, en1, en2_size, first, submit = cgminer_connect(h, vmask=vmask, suggest=64 if vmask else None, integer=True)
    work = miner.current
    assert work.difficulty == (64 if vmask else 1)
    en2 = (3).to_bytes(en2_size, "big")
    shares = []
    for bits in (CGMINER_VMASK_002 if vmask else [None]):
        version = work.version | int(bits or "0", 16)  # midstate version: bversion | vmask_003[i]
        nonce, hv = work.block(en1, en2, version=version)
        mid, line = submit(work, en2, nonce, bits)
        c.send(line)
        accepted(reply(c.recv()[0], mid))
        check_block(h, hv, version)
        shares.append((nonce, bits))
    mid, line = submit(work, en2, *shares[0])
    c.send(line)
    rejected(reply(c.recv()[0], mid), DUPLICATE)
    miss, _ = work.miss(en1, en2, work.difficulty)
    mid, line = submit(work, en2, miss, shares[0][1])
    c.send(line)
    rejected(reply(c.recv()[0], mid), LOW_DIFFICULTY)
    if vmask:  # the job from before the suggested difficulty is still good
        en2 = (4).to_bytes(en2_size, "big")  # (the same work as the re-sent job: another extranonce2)
        nonce, hv = first.block(en1, en2, version=first.version | 0x1FFF0000)
        mid, line = submit(first, en2, nonce, "1fff0000")
        c.send(line)
        accepted(reply(c.recv()[0], mid))
        check_block(h, hv, first.version | 0x1FFF0000)


@pytest.mark.parametrize("vmask", [True, False], ids=["vmask-suggest", "plain-vardiff"])
def test_cgminer_difficulty_change_keeps_old_jobs(vmask):
    """Fractional re-run. The vmask build suggests 64 (clamped to 4e-8); the
    plain one gets its change from vardiff after one fast share."""
    h = cpu_harness()
    c, miner, en1, en2_size, old, submit = cgminer_connect(h, vmask=vmask, suggest=64 if vmask else None, integer=False)
    en2 = (9).to_bytes(en2_size, "big")
    bits = "0000e000" if vmask else None
    version = old.version | 0xE000 if vmask else old.version
    nonce, hv = old.share(en1, en2, 1e-8, harder=4e-8, version=version)
    mid, line = submit(old, en2, nonce, bits)
    c.send(line)
    out = c.recv()
    accepted(reply(out[0], mid))
    assert h.sink.accepted[-1].hash == hash_hex(hv) and h.sink.accepted[-1].difficulty == 1e-8
    miner.feed(out[1:])
    new = miner.current
    assert new.id != old.id and (old.difficulty, new.difficulty) == (1e-8, 4e-8)
    nonce, hv = old.share(en1, en2, 1e-8, harder=4e-8, version=version, start=nonce + 1)
    mid, line = submit(old, en2, nonce, bits)
    c.send(line)
    accepted(reply(c.recv()[0], mid))
    assert h.sink.accepted[-1].difficulty == 1e-8
    nonce, hv = new.share(en1, en2, 4e-8, version=version)
    mid, line = submit(new, en2, nonce, bits)
    c.send(line)
    accepted(reply(c.recv()[0], mid))
    assert h.sink.accepted[-1].difficulty == 4e-8
    nonce, _ = new.share(en1, en2, 1e-8, harder=4e-8, version=version, start=nonce + 1)
    mid, line = submit(new, en2, nonce, bits)
    c.send(line)
    rejected(reply(c.recv()[0], mid), LOW_DIFFICULTY)


# =====================================================================================
# BFGMiner 5.x: suggest_target with id null before subscribe; subscribe reply is the
# next line; xnsub and authorize with STRING ids; get_transactions "txlist<job>";
# every coinbase must pass check_coinbase; fractional difficulty = bdiff. (bfgminer.json)
# =====================================================================================
BFG_VALUES = dict(BFG_AGENT="bfgminer/5.5.0", USER=ADDR + ".bfg", PASSWORD="x",
                  TARGET_HEX="00000000ffff0000000000000000000000000000000000000000000000000000")
# BFGMiner's mining.submit text is not in the fixture (miner.c not readable in the
# index). This is the 5-param form of cgminer, which BFGMiner was forked from.
BFG_SUBMIT_ASSUMED = '{"params": ["{USER}", "{JOB_ID}", "{EXTRANONCE2}", "{NTIME}", "{NONCE}"], "id": {ID}, "method": "mining.submit"}'


def bfgminer_connect(h, *, integer):
    fx = fixture("bfgminer")
    ids = itertools.count(0)
    c = Conn(h)
    miner = Miner(c, "notify", integer=integer)
    sub_id = next(ids)
    c.send(fill(step(fx, 0), **BFG_VALUES), fill(step(fx, 1), ID=sub_id, **BFG_VALUES))
    out = c.recv()
    # initiate_stratum reads exactly one line: no answer to the null-id suggest_target
    assert len(out) == 1
    en1, en2_size = subscribe_result(reply(out[0], sub_id), sizes=range(1, 33))
    c.send(fill(step(fx, 2)), fill(step(fx, 3), **BFG_VALUES))
    out = c.recv()
    # auth_stratum: method lines processed, the "xnsub" reply ignored, wait for id "auth"
    xn = [x for x in out if x.is_reply and x.msg["id"] == "xnsub"]
    auth = [x for x in out if x.is_reply and x.msg["id"] == "auth"]
    assert len(xn) == 1 and len(auth) == 1, methods(out)
    accepted(reply(xn[0], "xnsub"))
    accepted(reply(auth[0], "auth"))
    miner.feed(out)
    for work in miner.jobs.values():  # pool_check_coinbase on every notify
        assert bfgminer_check_coinbase(work.coinbase(en1, bytes(en2_size))) is None
    # get_transactions after authorize, id built from the job id
    work = miner.current
    c.send(fill(step(fx, 4), JOB_ID=work.id))
    out = c.recv()
    assert len(out) == 1 and c.connected
    reply(out[0], "txlist" + work.id)

    def submit(work, en2, nonce):
        mid = next(ids)
        return mid, fill(BFG_SUBMIT_ASSUMED, ID=mid, USER=BFG_VALUES["USER"], JOB_ID=work.id, EXTRANONCE2=en2.hex(),
                         NTIME=work.ntime_hex, NONCE=f"{nonce:08x}")

    return c, miner, en1, en2_size, submit


def test_bfgminer_replay():
    h = asic_harness()
    c, miner, en1, en2_size, submit = bfgminer_connect(h, integer=True)
    work = miner.current
    assert work.difficulty == 1
    en2 = (5).to_bytes(en2_size, "big")
    nonce, hv = work.block(en1, en2)
    mid, line = submit(work, en2, nonce)
    c.send(line)
    accepted(reply(c.recv()[0], mid))
    check_block(h, hv, work.version)
    mid, line = submit(work, en2, nonce)
    c.send(line)
    rejected(reply(c.recv()[0], mid), DUPLICATE)
    miss, _ = work.miss(en1, en2, 1)
    mid, line = submit(work, en2, miss)
    c.send(line)
    rejected(reply(c.recv()[0], mid), LOW_DIFFICULTY)


def test_bfgminer_difficulty_change_keeps_old_jobs():
    h = cpu_harness()
    c, miner, en1, en2_size, submit = bfgminer_connect(h, integer=False)
    old = miner.current
    en2 = (6).to_bytes(en2_size, "big")
    nonce, _ = old.share(en1, en2, 1e-8, harder=4e-8)
    mid, line = submit(old, en2, nonce)
    c.send(line)
    out = c.recv()
    accepted(reply(out[0], mid))
    miner.feed(out[1:])
    new = miner.current
    assert new.id != old.id and new.difficulty == 4e-8
    nonce, _ = old.share(en1, en2, 1e-8, harder=4e-8, start=nonce + 1)
    mid, line = submit(old, en2, nonce)
    c.send(line)
    accepted(reply(c.recv()[0], mid))
    assert h.sink.accepted[-1].difficulty == 1e-8


# =====================================================================================
# Braiins OS (V2 -> V1 translation): configure id 0 with mask 1fffe000 and wait; then
# subscribe + authorize pipelined; needs a set_difficulty (u32) before mining;
# 6-param submits, extranonce2 all zeros, ntime from the V2 share, version bits
# = version & 1fffe000; replies matched FIFO; errors [int, str, null]. (braiins-os.json)
# =====================================================================================
BRAIINS_VALUES = dict(FW_VERSION="Braiins OS 2019-06-05", HOST_PORT="pool.example:3333", USER=ADDR2 + ".worker0", PASSWORD="")


def braiins_response(m: dict, pending: list) -> dict:
    """rpc.rs Response {id: u32, result, error}: the id must match a pending
    request; result and error must not both be null or both non-null."""
    assert type(m["id"]) is int and 0 <= m["id"] <= 0xFFFFFFFF, m
    assert m["id"] in pending, f"Received invalid ID {m['id']}"
    pending.remove(m["id"])
    assert not (m["result"] is None and m["error"] is None), f"Invalid JSON-RPC: {m}"
    return m


def braiins_connect(h, *, integer):
    fx = fixture("braiins-os")
    c = Conn(h)
    miner = Miner(c, "immediate", integer=integer)
    pending = [0]
    c.send(fill(step(fx, 1)))
    out = c.recv()
    assert len(out) == 1
    conf = braiins_response(reply(out[0], 0), pending)
    # the mask must equal BIP320_N_VERSION_MASK exactly
    assert conf["result"] == CONFIGURE_OK
    pending += [1, 2]
    c.send(fill(step(fx, 2), **BRAIINS_VALUES), fill(step(fx, 3), **BRAIINS_VALUES))
    out = c.recv()
    r = {m["id"]: braiins_response(m, pending) for m in replies(out)}
    assert set(r) == {1, 2} and not pending
    subs = r[1]["result"][0]  # Vec<Subscription>: [string, string] pairs
    assert type(subs) is list and all(type(s) is list and len(s) == 2 and all(type(x) is str for x in s) for s in subs)
    en1, en2_size = subscribe_result(r[1], sizes=range(0, 33))
    assert r[2]["result"] is True  # BooleanResult
    assert c.session.user_agent == BRAIINS_VALUES["FW_VERSION"]  # params [agent, null, "host:port", null]
    miner.feed(out)
    # the channel opens only after a set_difficulty
    assert miner.difficulty is not None and miner.current is not None
    return fx, c, miner, en1, en2_size


def braiins_submit(fx, mid, work, en2, nonce, rolled, ntime):
    return fill(step(fx, 4), ID=mid, USER=BRAIINS_VALUES["USER"], JOB_ID=work.id, EXTRANONCE2=en2.hex(),
                NTIME=f"{ntime:08x}", NONCE=f"{nonce:08x}", VERSION_BITS=f"{rolled & BIP320_MASK:08x}")


def test_braiins_os_replay():
    h = asic_harness()
    fx, c, miner, en1, en2_size = braiins_connect(h, integer=True)
    work = miner.current
    assert miner.difficulty == 1
    en2 = bytes(en2_size)  # channel id 0, zero padded
    ntime = work.ntime + 17  # the V2 share's ntime, rolled forward from the job's
    a = work.version | 0x0ABCE000
    b = work.version | 0x00002000
    na, ha = work.block(en1, en2, version=a, ntime=ntime)
    nb, hb = work.block(en1, en2, version=b, ntime=ntime)
    miss, _ = work.miss(en1, en2, 1, version=b, ntime=ntime)
    pending = [3, 4, 5, 6]
    c.send(braiins_submit(fx, 3, work, en2, na, a, ntime), braiins_submit(fx, 4, work, en2, nb, b, ntime),
           braiins_submit(fx, 5, work, en2, na, a, ntime), braiins_submit(fx, 6, work, en2, miss, b, ntime))
    out = c.recv()
    rs = [braiins_response(m, pending) for m in replies(out)]
    assert [m["id"] for m in rs] == [3, 4, 5, 6]  # FIFO
    accepted(rs[0])
    accepted(rs[1])
    rejected(rs[2], DUPLICATE)
    rejected(rs[3], LOW_DIFFICULTY)
    assert [e.hash for e in h.sink.accepted] == [hash_hex(ha), hash_hex(hb)]
    miner.feed(out)  # pushes (block announcements) are ignored by the translation


def test_braiins_os_difficulty_applies_at_once():
    """Fractional re-run. The translation turns every set_difficulty into a
    V2 SetTarget for all following shares, old job or not: after vardiff
    raises the difficulty, shares for the old job come at the new one."""
    h = cpu_harness()
    fx, c, miner, en1, en2_size = braiins_connect(h, integer=False)
    old = miner.current
    en2 = bytes(en2_size)
    v = old.version | 0x00006000
    nonce, _ = old.share(en1, en2, miner.difficulty, version=v)
    c.send(braiins_submit(fx, 3, old, en2, nonce, v, old.ntime))
    out = c.recv()
    accepted(reply(out[0], 3))
    miner.feed(out[1:])
    assert miner.difficulty == 4e-8 and miner.current.id != old.id
    nonce, hv = old.share(en1, en2, miner.difficulty, version=v, start=nonce + 1)
    c.send(braiins_submit(fx, 4, old, en2, nonce, v, old.ntime))
    accepted(reply(c.recv()[0], 4))
    assert h.sink.accepted[-1].hash == hash_hex(hv)


# =====================================================================================
# NiceHash: only its subscribe line is sourced; the rest are its documented needs:
# "error" in every reply, extranonce2_size >= 4, set_difficulty only after subscribe
# AND authorize, the pool's starting difficulty, the whole extranonce2 used. (nicehash.json)
# =====================================================================================
@pytest.mark.parametrize("en2_size", [4, 8])
def test_nicehash_requirements(en2_size):
    fx = fixture("nicehash")
    h = _make_harness(NICEHASH_PORT, network_diff=EASY_NETWORK, extranonce2_size=en2_size)
    c = Conn(h)
    miner = Miner(c, "notify", integer=True)
    c.send(fill(step(fx, 1), TIMESTAMP="1662637786319", HMAC="3e747837e632920e8cd11453c2558233e3822489a20d828fdf205a149b064afc"))
    out = c.recv()
    assert methods(out) == ["reply:1"]  # no difficulty before authorize (hathor-core#103)
    en1, size = subscribe_result(reply(out[0], 1), sizes=range(4, 33))  # 'minimum is 4'
    assert size == en2_size
    assert c.session.user_agent == "NiceHash/1.0.0"  # params[1] is a timestamp, not a session id
    # NiceHash's authorize text is not recorded (closed source): a plain one
    c.send(b'{"id":2,"method":"mining.authorize","params":["' + ADDR.encode() + b'.nh","x"]}')
    out = c.recv()
    assert methods(out) == ["reply:2", "mining.set_difficulty", "mining.notify"]  # hypepool#44 order
    accepted(reply(out[0], 2))
    miner.feed(out)
    assert miner.current.difficulty == 500_000
    c.send(b'{"id": 3, "method": "mining.extranonce.subscribe", "params": []}')
    assert reply(c.recv()[0], 3) == {"id": 3, "result": True, "error": None}
    # NiceHash fills part of extranonce2 with its own bytes: all of it counts
    work = miner.current
    en2 = bytes(range(0xA1, 0xA1 + en2_size))
    nonce, hv = work.block(en1, en2)
    c.send(b'{"id":4,"method":"mining.submit","params":["' + ADDR.encode() + b'.nh","' + work.id.encode() + b'","'
           + en2.hex().encode() + b'","' + work.ntime_hex.encode() + b'","' + f"{nonce:08x}".encode() + b'"]}')
    accepted(reply(c.recv()[0], 4))
    check_block(h, hv, work.version)
