"""The Redis key layout, one place. Every key starts with the configured
prefix (default ``hashcoop:``); docs/redis.md lists them for operators.

Worker names are restricted by the Stratum side to ``[A-Za-z0-9_-]`` and
addresses are validated Bitcoin addresses, so ``:`` separates safely.
"""
from __future__ import annotations

# Hashrate time-series resolutions: name -> (bucket seconds, seconds kept).
# "10s" is a hash (field = bucket index, value = summed difficulty); "5m"
# is one string per UTC day of DAY_SLOTS little-endian doubles (2304
# bytes), an eighth of the memory a hash of the same buckets takes.
SERIES = {
    "10s": (10, 3700),  # 1 min, 5 min, 1 h hashrate
    "5m": (300, 8 * 86400),  # 24 h hashrate and the charts (7 days and more)
}
DAY_SLOTS = 86400 // 300


class Keys:
    __slots__ = ("prefix", "seq", "sharelog", "window", "window_meta", "round", "blocks", "pool", "workers",
                 "addresses", "unarchived")

    def __init__(self, prefix: str = "hashcoop:"):
        p = self.prefix = prefix
        self.seq = p + "seq"  # string: last global share sequence number assigned
        self.sharelog = p + "sharelog"  # stream: one entry per batch, id = "<first seq>-0"
        self.window = p + "window"  # list: PPLNS window entries, oldest first
        self.window_meta = p + "window:meta"  # hash: total, network difficulty reference
        self.round = p + "round"  # hash: the current round
        self.blocks = p + "blocks"  # zset: block hash -> seq of its block share
        self.pool = p + "pool"  # hash: pool-wide counters
        self.workers = p + "workers"  # zset: "address:worker" -> last share time
        self.addresses = p + "addresses"  # zset: address -> last share time
        self.unarchived = p + "snapshots:unarchived"  # zset: block hash -> first seq of its window

    def addr(self, address: str) -> str:
        return f"{self.prefix}addr:{address}"

    def addr_workers(self, address: str) -> str:
        return f"{self.prefix}addr:{address}:workers"

    def worker(self, address: str, worker: str) -> str:
        return f"{self.prefix}worker:{address}:{worker}"

    def block(self, block_hash: str) -> str:
        return f"{self.prefix}block:{block_hash}"

    def snapshot(self, block_hash: str) -> str:
        return f"{self.prefix}snapshot:{block_hash}"

    def snapshot_amounts(self, block_hash: str) -> str:
        return f"{self.prefix}snapshot:{block_hash}:addr"

    def batch(self, run: str) -> str:
        return f"{self.prefix}batch:{run}"

    def series(self, resolution: str, entity: str) -> str:
        """The "10s" hash. ``entity`` is ``pool``, ``addr:<address>`` or
        ``worker:<address>:<worker>``."""
        return f"{self.prefix}hr:{resolution}:{entity}"

    def series_day(self, entity: str, day: int) -> str:
        """The "5m" slots of one UTC day (day = unix time // 86400)."""
        return f"{self.prefix}hr:5m:{entity}:{day}"


def entity_pool() -> str:
    return "pool"


def entity_addr(address: str) -> str:
    return f"addr:{address}"


def entity_worker(address: str, worker: str) -> str:
    return f"worker:{address}:{worker}"
