"""``hashcoop status -c hashcoop.toml``: the pool summary in the terminal.

It reads the accounting store (Redis) and the payout ledger directly, with the same code as
``/api/v1/pool`` (``hashcoop.pool.http.data.PoolData.summary``), and asks the first
configured node that answers for the chain height and difficulty. So it
works whether or not the pool process (or its HTTP side) is running, which
is when an operator needs it most. ``--json`` prints the summary as JSON.

Exit status: 0 summary printed; 1 Redis did not answer; 2 bad configuration
or no ``[redis]`` section.
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from redis.exceptions import RedisError

from hashcoop.payouts import read
from hashcoop.payouts.reads import PayoutReads
from hashcoop.pool.accounting.read import AccountingReader
from hashcoop.pool.config import ConfigError, load_config
from hashcoop.pool.http.data import PoolData
from hashcoop.pool.http.pages import fmt_ago, fmt_btc, fmt_duration, fmt_hashrate, fmt_int, fmt_num, fmt_pct, fmt_time, short


def node_info(config, timeout: float = 3.0) -> dict:
    """Chain height and difficulty from the first node that answers."""
    errors = []
    for i, n in enumerate(config.nodes):
        name = config.node_name(i)
        body = json.dumps({"jsonrpc": "1.0", "id": "status", "method": "getblockchaininfo", "params": []}).encode()
        req = urllib.request.Request(n.url, body, {"Content-Type": "application/json"})
        try:
            if n.cookie_file:
                auth = Path(n.cookie_file).read_text().strip()
            elif n.user is not None:
                auth = f"{n.user}:{n.password}"
            else:
                auth = None
            if auth:
                req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
            with urllib.request.urlopen(req, timeout=min(timeout, n.timeout)) as r:
                info = json.loads(r.read())["result"]
            return {"node": name, "height": int(info["blocks"]), "difficulty": float(info["difficulty"]),
                    "chain": info.get("chain"), "error": None}
        except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError) as e:
            errors.append(f"{name}: {getattr(e, 'reason', None) or e}")
    return {"node": None, "height": None, "difficulty": None, "chain": None, "error": "; ".join(errors)}


def summary(config, *, reader=None, node: bool = True) -> dict:
    data = PoolData(reader or AccountingReader.from_config(config))
    s = data.summary()
    s["pool"] = {"name": config.pool.name, "network": config.network.name}
    s["network"] = node_info(config) if node else None
    s["payouts"] = ledger_summary(config)
    w = data.withholding(config.accounting.withholding_alpha, 3)
    s["withholding"] = {k: w[k] for k in ("alpha", "workers_checked", "addresses_checked", "flagged_workers",
                                           "flagged_addresses", "workers")}
    return s


def ledger_summary(config) -> dict | None:
    """The payout ledger's totals (``hashcoop.payouts.read.pool_summary``), or None
    while there is no ledger (see payouts/reads.py)."""

    reads = PayoutReads.from_config(config)
    try:
        engine = reads.engine()
        if engine is None:
            return None

        return read.pool_summary(engine)
    finally:
        reads.close()


def render(s: dict) -> str:
    now = s["time"]
    hr, rnd, luck, net = s["hashrate"], s["round"], s["luck"], s.get("network") or {}
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(s["rejected"].items()))
    last = s.get("last_block")
    if net.get("height") is not None:
        network = f"height {fmt_int(net['height'])} · difficulty {fmt_num(net['difficulty'])} (from {net['node']})"
    else:
        nd = rnd.get("network_difficulty")
        network = (f"node not answering ({net.get('error') or 'not asked'}); "
                   f"difficulty of the last share {fmt_num(nd) if nd else '–'}")
    best = rnd.get("best_share") or {}
    lines = [
        f"{s['pool']['name']} ({s['pool']['network']}) · {fmt_time(now)}",
        f"Hashrate   1 min {fmt_hashrate(hr['1m'])} · 5 min {fmt_hashrate(hr['5m'])} · 1 h {fmt_hashrate(hr['1h'])}"
        f" · 24 h {fmt_hashrate(hr['24h'])}",
        f"Miners     {fmt_int(s['addresses_online'])} online of {fmt_int(s['addresses_known'])} known"
        f" · workers {fmt_int(s['workers_online'])} online of {fmt_int(s['workers_known'])}",
        f"Network    {network}",
        f"Round      effort {fmt_pct(rnd['effort'])} · {fmt_int(rnd['shares'])} shares · {fmt_duration(rnd['duration'])}"
        f" · best share {fmt_num(best.get('difficulty'))}",
        f"Luck       {fmt_pct(luck['luck'])} (average effort {fmt_pct(luck['average_effort'])} over {luck['blocks']} blocks)",
        f"Blocks     {fmt_int(s['blocks_found'])} found"
        + (f" · last #{last['height']} {fmt_ago(last['time'], now)} ({last['status']}) by "
           f"{short(last['finder_address'], 6)}.{last['finder_worker']}, reward {fmt_btc(last['reward'])}" if last else ""),
        f"Shares     {fmt_int(s['accepted'])} accepted · {fmt_int(s['rejected_total'])} rejected"
        + (f" ({rejected})" if rejected else ""),
        f"Window     N {fmt_num(s['window']['n'])} · {fmt_int(s['window']['entries'])} entries",
    ]
    wh = s.get("withholding")
    if wh is not None:
        line = (f"Withholding {fmt_int(wh['flagged_workers'])} of {fmt_int(wh['workers_checked'])} workers and "
                f"{fmt_int(wh['flagged_addresses'])} of {fmt_int(wh['addresses_checked'])} addresses flagged"
                f" (alpha {wh['alpha']:g}; docs/withholding.md)")
        if wh["workers"]:
            line += ": " + ", ".join(f"{short(v['address'], 6)}.{v['worker']} {v['blocks']} of {v['expected_blocks']:.1f}"
                                     for v in wh["workers"])
        lines.append(line)
    pay = s.get("payouts")
    if pay is None:
        lines.append("Payouts    no payout ledger yet ([database]; hashcoop payouts)")
    else:
        b, p = pay["blocks"], pay["payments"]
        lines.append(f"Payouts    blocks {b['pending']} maturing · {b['credited']} credited · {b['orphaned']} orphaned"
                     f" · owed {fmt_btc(pay['owed'])} · paid {fmt_btc(pay['paid_confirmed'])} confirmed"
                     f" · payments {p['sent'] + p['signed']} in flight, {p['failed']} failed")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    if config.redis is None:
        print(f"{args.config}: share accounting is off ([redis] is not configured): nothing to summarise",
              file=sys.stderr)
        return 2

    try:
        s = summary(config, node=not args.no_node)
    except RedisError as e:
        print(f"Redis at {config.redis.url} did not answer: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(s, indent=2, sort_keys=True))
    else:
        print(render(s))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="print the pool summary in the terminal",
                       description="Print the pool summary (the same figures as /api/v1/pool), read from Redis "
                                   "and the node; works whether or not the pool is running.")
    p.add_argument("-c", "--config", required=True, help="TOML configuration file (its [redis] and [[nodes]])")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-node", action="store_true", help="do not ask the node for height and difficulty")
    p.set_defaults(func=run)

