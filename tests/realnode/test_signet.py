"""The pool on a private signet of real Bitcoin Core, with cpuminer
(issue 13, 3.7): ``bitcoind -signet -signetchallenge=51``.

A signet with the challenge ``51`` (OP_TRUE) is one anyone can mine: a
block needs no signet solution. Its genesis is signet's, difficulty
0.001126 (bits ``1e0377ae``), so a CPU miner finds a block in about a
second. Facts checked on Core here, the README's signet instructions rest
on them:

* ``getblocktemplate`` without the ``signet`` rule is refused (-8); the
  pool asks with ``["segwit", "signet"]`` and gets templates that carry
  ``signet_challenge``;
* Core v31 serves templates on signet while still in initial block
  download (at genesis), so the pool can mine the first block itself (on
  mainnet Core refuses: -9 without peers, -10 in IBD);
* blocks the pool finds are accepted, pay the pool's ``tb1`` address (a
  Core wallet's: it sees them as immature coinbase), and at a share
  difficulty below the network's only some shares are blocks;
* on a signet whose challenge needs a signature (the default signet's
  1-of-2 multisig, on a private node) Core rejects the pool's blocks with
  ``bad-signet-blksig``: the pool says so at its first template.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.hostile.faultrig import read_journal
from tests.procs import free_port, wait_for
from tests.realnode.core import COIN, IN_FLIGHT, CoreNode
from tests.realnode.rig import SIGNET_OTHER, pool_config

pytestmark = pytest.mark.bitcoind(needs=("MINERD",))

EXAMPLES = Path(__file__).resolve().parents[2] / "pool" / "examples"
SIGNET_BITS = "1e0377ae"
SIGNET_DIFFICULTY = 0.001126515290698186
SHARE_DIFFICULTY = 0.0002  # about one share in 5.6 is a block
BLOCKS = 3
SUBSIDY = 50 * COIN


def example_config(node: CoreNode, *, port: int, data_dir: Path, address: str) -> dict:
    """pool/examples/signet.toml as an operator would adapt it: the pool's
    address, its node (URL, cookie, ZMQ), free ports, and a fixed share
    difficulty below the network's for the CPU port (the example's vardiff
    would soon raise it above, making every share a block)."""
    cfg = tomllib.loads((EXAMPLES / "signet.toml").read_text())
    assert cfg["pool"]["network"] == "signet"
    cfg["pool"].update(address=address, data_dir=str(data_dir), coinbase_tag="/realnode/")
    cfg["nodes"] = pool_config([node], port=port, data_dir=data_dir)["nodes"]
    cfg["work"].update(notify_listen=f"tcp:{free_port()}:interface=127.0.0.1", block_recheck_interval=1.0)
    cpu, asic = cfg["stratum"]["ports"]
    cfg["stratum"]["ports"] = [{**cpu, "port": port, "bind": "127.0.0.1", "start_difficulty": SHARE_DIFFICULTY,
                                "min_difficulty": SHARE_DIFFICULTY, "max_difficulty": SHARE_DIFFICULTY, "vardiff": False},
                               {**asic, "port": free_port(), "bind": "127.0.0.1"}]
    cfg["http"].update(listen=f"tcp:{free_port()}:interface=127.0.0.1",
                       operator_listen=f"tcp:{free_port()}:interface=127.0.0.1")
    cfg["logging"] = {"level": "DEBUG"}  # each share with the difficulty its hash met
    return cfg


def test_pool_mines_blocks_core_accepts_on_a_private_signet(core, minerd, pool_process, tmp_path):
    node = core("signet", chain="signet")
    info = node.rpc("getblockchaininfo")
    assert (info["chain"], info["signet_challenge"], info["bits"], info["blocks"]) == ("signet", "51", SIGNET_BITS, 0)
    assert info["difficulty"] == pytest.approx(SIGNET_DIFFICULTY) and info["initialblockdownload"] is True

    # Core wants the signet rule; with it, it serves a template at genesis, in IBD
    refused = node.call("getblocktemplate", {"rules": ["segwit"]})
    assert refused["error"]["code"] == -8 and "signet rule" in refused["error"]["message"]
    gbt = node.rpc("getblocktemplate", {"rules": ["segwit", "signet"]})
    assert (gbt["height"], gbt["signet_challenge"], gbt["bits"]) == (1, "51", SIGNET_BITS)
    assert "!signet" in gbt["rules"] and "!segwit" in gbt["rules"]

    node.rpc("createwallet", "pool")
    address = node.rpc("getnewaddress", "pool", "bech32", wallet="pool")
    assert address.startswith("tb1q")

    port = free_port()
    pool = pool_process(example_config(node, port=port, data_dir=tmp_path / "data", address=address))
    miner = minerd(port, f"{address}.cpu")
    node.wait_for_height(BLOCKS, timeout=120)
    journal = tmp_path / "data" / "found-blocks.jsonl"
    # only some shares are blocks: wait for one that is not (nearly always there already)
    wait_for(lambda: miner.counts()[0] > len(read_journal(journal)), 60, what="a share that is not a block")
    shares_accepted, shares_sent = miner.stop()

    def submitted() -> dict:
        return {h: j for h, j in read_journal(journal).items() if j.status != "stale"}

    wait_for(lambda: all(j.status in ("submitted", "confirmed", "orphaned") for j in submitted().values()), 30,
             what="Core took every block the pool submitted")

    # Core's chain: every block is the pool's, on signet's difficulty, paying
    # the pool's address the whole coinbase value of the template
    height = node.rpc("getblockcount")
    for h in range(1, height + 1):
        block = node.rpc("getblock", node.rpc("getblockhash", h), 2)
        assert block["bits"] == SIGNET_BITS
        cb = block["tx"][0]
        assert b"/realnode/".hex() in cb["vin"][0]["coinbase"]
        paid = {o["scriptPubKey"].get("address"): round(o["value"] * COIN) for o in cb["vout"] if o["value"] > 0}
        assert paid == {address: SUBSIDY}, (h, paid)
    assert node.rpc("getblockchaininfo")["initialblockdownload"] is False
    # the wallet holding the pool's address sees the coinbases (immature)
    assert node.rpc("getaddressinfo", address, wallet="pool")["ismine"] is True
    balances = node.rpc("getbalances", wallet="pool")["mine"]
    assert round(balances["immature"] * COIN) == height * SUBSIDY

    # The pool: signet templates, shares below the network's difficulty,
    # only some of them blocks; each block found is in the chain
    text = pool.text()
    assert "on signet: paying " + address in text
    assert f"first template: height 1 on {info['bestblockhash']}" in text
    found = submitted()
    assert len(found) >= BLOCKS
    in_chain = {node.rpc("getblockhash", h) for h in range(1, height + 1)}
    assert in_chain <= set(found)
    for h in found:  # a block that lost a race at its height is still Core's, on a side branch
        assert node.rpc("getblockheader", h)["hash"] == h
    assert all(f"network {SIGNET_DIFFICULTY:.4g}" in line for line in text.splitlines() if "BLOCK FOUND" in line)
    # every share whose hash met signet's target was taken for a block, no other
    got = [float(g) for g in re.findall(r"share accepted \S+ diff=\S+ got=(\S+)", text)]
    # minerd counts the replies it read: a share it sent in the instant before it was stopped can be
    # credited with its reply unread (IN_FLIGHT, tests/realnode/core.py)
    assert shares_accepted <= len(got) <= shares_accepted + IN_FLIGHT, (len(got), shares_accepted, shares_sent)
    assert sum(g > SIGNET_DIFFICULTY * 1.001 for g in got) <= len(found) <= sum(g >= SIGNET_DIFFICULTY * 0.999 for g in got)
    assert shares_accepted > len(found), (shares_accepted, shares_sent, len(found))
    assert "Traceback" not in text
    print(f"\nsignet: {height} blocks, {len(found)} found, shares {shares_accepted}/{shares_sent}")


# the default signet's challenge: a 1-of-2 multisig of its operators' keys
DEFAULT_SIGNET_CHALLENGE = ("512103ad5e0edad18cb1f0fc0d28a3d4f1f3e445640337489abb10404f2d1e086be430210359ef5021964fe22d6f"
                            "8e05b2463c9540ce96883fe3b278760f048f5189f2e6c452ae")


def test_on_a_signet_that_needs_signatures_the_operator_is_told_and_blocks_are_rejected(core, minerd, pool_process,
                                                                                        tmp_path):
    """The default signet's challenge on a private node (same rules, no
    peers): the pool says at its first template that Core will reject its
    blocks; it still serves the miner and counts shares; the block it finds
    is rejected by Core with bad-signet-blksig and journaled as rejected."""
    node = core("signed", chain="signet", signet_challenge=DEFAULT_SIGNET_CHALLENGE)
    assert node.rpc("getblockchaininfo")["signet_challenge"] == DEFAULT_SIGNET_CHALLENGE
    port = free_port()
    pool = pool_process(pool_config([node], port=port, data_dir=tmp_path / "data", address=SIGNET_OTHER,
                                    network="signet", difficulty=SHARE_DIFFICULTY))
    # said at the first template, which may come a moment after Stratum listens
    wait_for(lambda: f"this signet's challenge {DEFAULT_SIGNET_CHALLENGE} needs a signature" in pool.text(), 30,
             what="the operator told at the first template")
    miner = minerd(port, f"{SIGNET_OTHER}.cpu")
    journal = tmp_path / "data" / "found-blocks.jsonl"
    wait_for(lambda: any(j.status == "rejected" for j in read_journal(journal).values()), 120,
             what="a block found and rejected")
    shares_accepted, shares_sent = miner.stop()
    rejected = [j for j in read_journal(journal).values() if j.status == "rejected"]
    assert rejected[0].statuses[-1]["verdicts"] == {"signed": "bad-signet-blksig"} and rejected[0].statuses[-1]["final"]
    assert node.rpc("getblockcount") == 0
    assert shares_accepted >= 1
