#!/usr/bin/env python3
"""Pool hopping under PPLNS and under proportional payouts: a simulation.

A steady miner mines all the time. A pool hopper mines in the pool only
while the current round is young (fewer than ``hop_fraction`` x D shares
since the last block; the classic hopping threshold is 0.435 D) and
elsewhere otherwise. Every share is a difficulty-1 share and solves a block
with probability 1/D, whoever mined it (D = network difficulty in shares).

Payouts per block (reward R = 50 BTC, pool fee 1%):

* PPLNS: the window is the last N = window_factor x D shares (the pool's
  default factor 2); the split is ``hashcoop.payouts.pplns.split_reward`` itself, over
  the window's difficulty by miner, in integer satoshis;
* proportional: the round's shares (since the previous block), same split
  function over the round.

Efficiency of a miner = (satoshis it received / shares it mined) divided by
the fair value of a share, R x (1 - fee) / D. Honest pay is 1.00.

    .venv/bin/python ops/simulate_pplns.py [--blocks N] [--seed S] [--json PATH]

The recorded result is in ops/simulate_pplns.result.json and docs/payouts.md.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hashcoop.payouts.pplns import split_reward  # noqa: E402

REWARD = 5_000_000_000
FEE = "1"


def simulate(blocks: int, d: int, hop_fraction: float, hopper_share: float, window_factor: float, seed: int) -> dict:
    rng = random.Random(seed)
    n = int(window_factor * d)
    p_block = 1.0 / d
    hop_limit = hop_fraction * d
    owners = bytearray()  # 1 = hopper, 0 = steady, in share order
    prefix = [0]  # hopper shares before index i
    mined = {"hopper": 0, "steady": 0}
    paid = {"pplns": {"hopper": 0, "steady": 0}, "proportional": {"hopper": 0, "steady": 0}}
    warmup = 3 * math.ceil(window_factor)  # blocks before the window can be full
    found = 0
    round_start = 0
    while found < blocks + warmup:
        i = len(owners)
        in_round = i - round_start
        hopper = in_round < hop_limit and rng.random() < hopper_share
        owners.append(1 if hopper else 0)
        prefix.append(prefix[-1] + (1 if hopper else 0))
        counted = found >= warmup
        if counted:
            mined["hopper" if hopper else "steady"] += 1
        if rng.random() < p_block:
            if counted:
                lo = max(0, i + 1 - n)
                h = prefix[i + 1] - prefix[lo]
                s = (i + 1 - lo) - h
                split = split_reward(REWARD, {k: float(v) for k, v in (("hopper", h), ("steady", s)) if v}, FEE)
                for k, v in split.credits.items():
                    paid["pplns"][k] += v
                h = prefix[i + 1] - prefix[round_start]
                s = (i + 1 - round_start) - h
                split = split_reward(REWARD, {k: float(v) for k, v in (("hopper", h), ("steady", s)) if v}, FEE)
                for k, v in split.credits.items():
                    paid["proportional"][k] += v
            found += 1
            round_start = i + 1
    fair = REWARD * 0.99 / d
    out = {"blocks": blocks, "shares": sum(mined.values()), "mined": mined}
    for scheme, got in paid.items():
        out[scheme] = {k: round(got[k] / mined[k] / fair, 4) for k in mined}
    return out


def stderr_of(runs: list[dict], scheme: str, who: str) -> tuple[float, float]:
    xs = [r[scheme][who] for r in runs]
    m = sum(xs) / len(xs)
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
    return m, math.sqrt(var / len(xs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=40_000, help="blocks per run (default 40000; about 35 s for 5 runs)")
    ap.add_argument("--runs", type=int, default=5, help="independent runs (default 5)")
    ap.add_argument("--difficulty", type=int, default=100, help="D: shares per block on average (default 100)")
    ap.add_argument("--hop-fraction", type=float, default=0.435, help="the hopper leaves after this x D round shares")
    ap.add_argument("--hopper-share", type=float, default=0.5, help="hopper's fraction of the pool's shares while it mines")
    ap.add_argument("--window-factor", type=float, default=2.0, help="PPLNS N = factor x D (the pool's default 2)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    runs = [simulate(args.blocks, args.difficulty, args.hop_fraction, args.hopper_share, args.window_factor, args.seed + i)
            for i in range(args.runs)]
    result = {
        "parameters": {"blocks_per_run": args.blocks, "runs": args.runs, "difficulty_shares": args.difficulty,
                       "hop_fraction": args.hop_fraction, "hopper_share": args.hopper_share,
                       "window_factor": args.window_factor, "seed": args.seed, "reward_sat": REWARD, "fee_percent": FEE},
        "shares": sum(r["shares"] for r in runs),
        "efficiency": {},
        "runs": runs,
        "seconds": round(time.monotonic() - t0, 1),
    }
    for scheme in ("pplns", "proportional"):
        for who in ("hopper", "steady"):
            m, se = stderr_of(runs, scheme, who)
            result["efficiency"][f"{scheme}_{who}"] = {"mean": round(m, 4), "stderr": round(se, 4)}
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    e = result["efficiency"]
    print(f"{result['shares']} shares, {args.runs} x {args.blocks} blocks, D = {args.difficulty}, hopper leaves at "
          f"{args.hop_fraction} D ({result['seconds']} s)")
    for scheme in ("pplns", "proportional"):
        print(f"  {scheme:13s} hopper {e[scheme + '_hopper']['mean']:.4f} ± {e[scheme + '_hopper']['stderr']:.4f}   "
              f"steady {e[scheme + '_steady']['mean']:.4f} ± {e[scheme + '_steady']['stderr']:.4f}")
    ok = abs(e["pplns_hopper"]["mean"] - 1.0) <= 0.02 and e["proportional_hopper"]["mean"] > e["pplns_hopper"]["mean"] + 0.02
    print("PPLNS: hopping earns nothing extra" if ok else "UNEXPECTED: check the figures")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
