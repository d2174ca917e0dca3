"""``python -m ops.reliability fuzz``: the Stratum fuzz harness of
tests/hostile/fuzzing.py for a million inputs and more.

Hypothesis draws a few hundred inputs a second, too slow for 10^6. This
loop makes the same kinds of inputs with ``random`` (a port of the
``streams()`` strategy: real client lines from tests/vectors and the
firmware fixtures, behind a valid opening or not, with values replaced,
keys dropped or added, methods swapped, bytes damaged, spliced and cut)
and plays each on one ``FuzzTarget`` -- a real ``StratumServer`` on a
memory reactor, kept for the whole run as a server is. Every input is
checked by ``FuzzTarget.run`` (no exception leaves ``dataReceived``,
nothing logged at ERROR, every request answered in order or the
connection closed, no session outliving its connection); every
``--sample`` inputs the server must hold nothing of the connections that
are gone (``FuzzTarget.leaks``), and the worker's RSS is sampled. At the
end the last inputs are replayed three times under tracemalloc (the
memory the pool's own code holds must not grow).

Workers are processes (``--workers``, default the number of CPUs), each
with its own seed and target; a failure is recorded with its input and
the loop goes on, on a fresh target.
"""
from __future__ import annotations

import gc
import math
import multiprocessing
import os
import random
import resource
import time
import tracemalloc
from collections import deque

import orjson

# the fuzz target and the seeds are the battery's own (tests/hostile/fuzzing.py)
from tests.hostile import fuzzing as F

MESSAGE_KINDS = ("json", "json", "json", "bytes", "bytes", "seed", "binary", "fixed")
FIXED = [b"", b" ", b"\r", b"null", b"[]", b"1", b'"x"', b"{}", b'{"id":1}', b'{"method":null}', b"\xef\xbb\xbf{}",
         b'{"id":1,"method":"mining.subscribe","params":[]}{"id":2}', b'{"id":1,"id":2,"method":"mining.subscribe"}']
INSERTS = [b"\n", b"\r", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\", b'"', b"{", b"[", b"]", b"}", b",", b":",
           b"\\u0000", b"\\ud800", b" " * 100]
KEYS = ["version-rolling.mask", "minimum-difficulty.value", "id", "method"]
ADD_KEYS = ["id", "method", "params", "result", "error", "jsonrpc", "x"]


class Mutator:
    """Inputs like ``tests.hostile.fuzzing.streams()``, drawn with a seeded ``random.Random``."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    # -- values --------------------------------------------------------------------------
    def text(self, max_size: int) -> str:
        r = self.r
        n = r.randint(0, max_size)
        pick = r.random()
        if pick < 0.5:
            return "".join(chr(r.randint(32, 126)) for _ in range(n))
        if pick < 0.8:
            return "".join(chr(r.randint(0, 0x2FF)) for _ in range(n))
        # anything but lone surrogates (not encodable as UTF-8)
        return "".join(chr(c if not 0xD800 <= c <= 0xDFFF else 0xFFFD) for c in (r.randint(0, 0x10FFFF) for _ in range(n)))

    def scalar(self):
        r = self.r
        k = r.randrange(8)
        if k == 0:
            return None
        if k == 1:
            return r.random() < 0.5
        if k == 2:
            return r.randint(-(2 ** 70), 2 ** 70)
        if k == 3:
            return r.randint(-3, 70000)
        if k == 4:
            return r.choice([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-300, 1e300, 5e-324,
                             r.uniform(-1e6, 1e6), r.random(), r.expovariate(1e-9)])
        if k == 5:
            return self.text(40)
        if k == 6:
            return r.choice(F.SPECIAL_STRINGS)
        return F.Raw(r.choice(F.RAW_NUMBERS))

    def value(self, depth: int = 0):
        r = self.r
        k = r.randrange(7)
        if k == 0 or depth > 3:
            return self.scalar()
        if k == 1:
            return [self.scalar() for _ in range(r.randint(0, 8))]
        if k == 2:
            return {(self.text(12) if r.random() < 0.5 else r.choice(KEYS)): self.scalar() for _ in range(r.randint(0, 5))}
        if k == 3:
            return F.nested(r.randint(1, 1200), r.choice("[{"))
        if k == 4:
            return "x" * r.randint(200, 70000)
        if k == 5:
            return [self.value(depth + 1) for _ in range(r.randint(0, 4))]
        return {self.text(5): self.value(depth + 1) for _ in range(r.randint(0, 4))}

    # -- messages ------------------------------------------------------------------------
    def json_message(self) -> bytes:
        r = self.r
        msg = orjson.loads(orjson.dumps(r.choice(F.SEED_OBJECTS)))
        for _ in range(r.randint(0, 3)):
            op = r.choice(("set", "set", "set", "drop", "add", "method", "params", "params-len", "wrap"))
            if op == "set":
                msg = F._set(msg, r.choice(list(F._paths(msg))), self.value())
            elif op == "drop" and isinstance(msg, dict) and msg:
                msg.pop(r.choice(sorted(msg, key=str)))
            elif op == "add" and isinstance(msg, dict):
                msg[r.choice(ADD_KEYS)] = self.value()
            elif op == "method" and isinstance(msg, dict):
                msg["method"] = r.choice(F.KNOWN_METHODS) if r.random() < 0.7 else self.text(20)
            elif op == "params" and isinstance(msg, dict):
                msg["params"] = self.value()
            elif op == "params-len" and isinstance(msg, dict) and isinstance(msg.get("params"), list):
                n = r.randint(0, 12)
                p = msg["params"]
                msg["params"] = p[:n] if n <= len(p) else p + [self.value() for _ in range(n - len(p))]
            elif op == "wrap":
                msg = [msg]
        return F.dump(msg).encode()

    def byte_message(self) -> bytes:
        r = self.r
        b = bytearray(r.choice(F.SEEDS))
        for _ in range(r.randint(1, 4)):
            op = r.choice(("flip", "insert", "delete", "dup", "splice", "truncate"))
            n = len(b)
            i = r.randint(0, n)
            if op == "flip" and n:
                b[min(i, n - 1)] = r.randrange(256)
            elif op == "insert":
                b[i:i] = r.choice(INSERTS) if r.random() < 0.6 else r.randbytes(r.randint(0, 8))
            elif op == "delete":
                del b[i:i + r.randint(1, 16)]
            elif op == "dup":
                b[i:i] = b[i:i + r.randint(1, 64)]
            elif op == "splice":
                other = r.choice(F.SEEDS)
                b = b[:i] + other[r.randint(0, len(other)):]
            elif op == "truncate":
                b = b[:i]
        return bytes(b)

    def message(self) -> bytes:
        r = self.r
        kind = r.choice(MESSAGE_KINDS)
        if kind == "json":
            return self.json_message()
        if kind == "bytes":
            return self.byte_message()
        if kind == "seed":
            return r.choice(F.SEEDS)
        if kind == "binary":
            return r.randbytes(r.randint(0, 200))
        return r.choice(FIXED)

    def stream(self) -> tuple[bytes, tuple[int, ...]]:
        """(bytes of one connection, cut points): an opening, then 1-6 mutated lines."""
        r = self.r
        lines = list(r.choice(F.PREFIXES)) + [self.message() for _ in range(r.randint(1, 6))]
        data = b"\n".join(lines)
        if r.random() < 0.5:
            data += b"\n"
        cuts = sorted({r.randint(0, len(data)) for _ in range(r.randint(0, 4))})
        return data, tuple(cuts)


# -- the loop ----------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def new_target(factory=None):
    t = (factory or F.FuzzTarget)()
    # bounded, as the pool's own block journal is: the harness keeps every found block
    sub = getattr(getattr(t, "h", None), "submitter", None)
    if sub is not None:
        sub.found = deque(maxlen=100)
        sub.stale = deque(maxlen=100)
    return t


def fuzz_worker(inputs: int, seed: int, *, sample: int = 20_000, replay: int = 5_000, max_failures: int = 20,
                target_factory=None, deadline: float | None = None) -> dict:
    """Play ``inputs`` generated inputs on one target; return the figures
    (failures with their inputs, RSS samples, tracemalloc marks of the replay)."""
    mut = Mutator(seed)
    target = new_target(target_factory)
    failures: list[dict] = []
    failed = 0
    kinds: dict[str, int] = {}
    samples: list[tuple[int, float, int]] = []  # (inputs done, seconds, RSS bytes)
    leaks: list[dict] = []
    recent: deque = deque(maxlen=replay)
    replies = dropped = connections = 0
    t0 = time.monotonic()
    done = 0
    gc.collect()
    samples.append((0, 0.0, rss_bytes()))
    try:
        while done < inputs:
            stream = mut.stream()
            done += 1
            try:
                target.run(*stream)
            except Exception as e:  # FuzzFailure, or the harness itself broke
                failed += 1
                kind = type(e).__name__ + ": " + str(e).split("\n", 1)[0][:120]
                kinds[kind] = kinds.get(kind, 0) + 1
                if len(failures) < max_failures:
                    failures.append({"input": stream[0][:4000].decode("latin-1"), "cuts": list(stream[1]),
                                     "error": f"{type(e).__name__}: {str(e)[:2000]}"})
                # a fresh server: the old one may hold what the failure left behind
                replies += target.replies
                dropped += target.dropped
                connections += target.n
                target.close()
                target = new_target(target_factory)
                continue
            recent.append(stream)
            if done % sample == 0:
                held = target.leaks()
                if held:
                    leaks.append({"after": done, "held": held})
                gc.collect()
                samples.append((done, time.monotonic() - t0, rss_bytes()))
                if deadline is not None and time.monotonic() > deadline:
                    break
        seconds = time.monotonic() - t0
        held = target.leaks()
        if held:
            leaks.append({"after": done, "held": held})
        gc.collect()
        samples.append((done, seconds, rss_bytes()))
        # the last inputs again, three times, memory traced: the first pass
        # fills what is bounded, the others must leave it where it was
        marks = []
        if recent:
            tracemalloc.start()
            for _ in range(3):
                for s in recent:
                    try:
                        target.run(*s)
                    except Exception:  # already recorded the first time
                        pass
                gc.collect()
                marks.append(F.memory_in())
            tracemalloc.stop()
    finally:
        replies += target.replies
        dropped += target.dropped
        connections += target.n
        target.close()
    return {
        "seed": seed, "inputs": done, "seconds": seconds, "inputs_per_s": done / seconds if seconds else None,
        "failures": failed, "failure_kinds": kinds, "first_failures": failures, "leaks": leaks,
        "connections": connections, "replies": replies, "closed_by_server": dropped,
        "rss_samples": samples, "replayed": len(recent), "traced_bytes_after_replays": marks,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _worker_main(args):
    inputs, seed, sample, replay, deadline = args
    return fuzz_worker(inputs, seed, sample=sample, replay=replay, deadline=deadline)


def memory_verdict(samples: list[tuple[int, float, int]], warmup: float = 0.2, limit: float = 0.05) -> dict:
    """RSS growth from the end of the warm-up (``warmup`` of the inputs) to the end."""
    if len(samples) < 2:
        return {"growth": None, "flat": None}
    last = samples[-1][0]
    after = [s for s in samples if s[0] >= warmup * last] or samples[-1:]
    base = after[0][2]
    end = samples[-1][2]
    growth = (end - base) / base if base else 0.0
    return {"rss_after_warmup_mb": base / 2**20, "rss_end_mb": end / 2**20, "growth": growth, "flat": growth < limit}


def traced_verdict(marks: list[int], slack: float = 0.05, abs_slack: int = 16 * 1024) -> bool | None:
    if len(marks) < 3:
        return None
    return marks[2] <= marks[1] * (1 + slack) + abs_slack


def run_fuzz(inputs: int = 1_000_000, workers: int | None = None, seed: int | None = None, sample: int = 20_000,
             minutes: float | None = None, replay: int = 5_000, target_factory=None, log=print) -> dict:
    """Split ``inputs`` over ``workers`` processes (1: in this process) and
    merge their figures into the report's ``fuzz`` section."""
    workers = workers or os.cpu_count() or 1
    seed = int(time.time()) if seed is None else seed
    per = [inputs // workers + (1 if i < inputs % workers else 0) for i in range(workers)]
    t0 = time.monotonic()
    log(f"fuzz: {inputs:,} inputs over {workers} worker(s), seed {seed}")
    mono_deadline = (time.monotonic() + minutes * 60) if minutes else None
    if workers == 1:
        results = [fuzz_worker(per[0], seed, sample=sample, replay=replay, target_factory=target_factory, deadline=mono_deadline)]
    else:
        if target_factory is not None:
            raise ValueError("a custom target runs in one worker")
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers) as pool:
            # time.monotonic() is system-wide on Linux: the deadline holds in the children
            results = pool.map(_worker_main, [(n, seed + i, sample, replay, mono_deadline) for i, n in enumerate(per)])
    wall = time.monotonic() - t0
    done = sum(r["inputs"] for r in results)
    kinds: dict[str, int] = {}
    for r in results:
        for k, n in r["failure_kinds"].items():
            kinds[k] = kinds.get(k, 0) + n
    mem = [memory_verdict(r["rss_samples"]) for r in results]
    traced = [traced_verdict(r["traced_bytes_after_replays"]) for r in results]
    out = {
        "inputs": done, "requested": inputs, "workers": workers, "seed": seed, "wall_seconds": wall,
        # the loop's own rate (the workers run side by side; the traced replays at the end are not counted)
        "inputs_per_s": done / max(r["seconds"] for r in results) if done else None,
        "inputs_per_s_per_worker": [r["inputs_per_s"] for r in results],
        "exceptions": sum(r["failures"] for r in results), "failure_kinds": kinds,
        "first_failures": [f for r in results for f in r["first_failures"]][:20],
        "leaks": [x for r in results for x in r["leaks"]],
        "connections": sum(r["connections"] for r in results), "replies": sum(r["replies"] for r in results),
        "closed_by_server": sum(r["closed_by_server"] for r in results),
        "peak_rss_mb": max(r["peak_rss_bytes"] for r in results) / 2**20,
        "rss_growth_after_warmup": [m["growth"] for m in mem],
        "rss_mb_per_worker": [[round(s[2] / 2**20, 1) for s in r["rss_samples"]] for r in results],
        "traced_kib_after_replays": [[round(m / 1024, 1) for m in r["traced_bytes_after_replays"]] for r in results],
        "memory_flat": all(m["flat"] is not False for m in mem) and all(t is not False for t in traced),
    }
    out["passed"] = out["exceptions"] == 0 and not out["leaks"] and out["memory_flat"] and done >= min(inputs, 1)
    return out


def summary(f: dict) -> str:
    lines = [f"fuzz: {f['inputs']:,} inputs in {f['wall_seconds']:.0f} s ({f['inputs_per_s']:,.0f}/s, {f['workers']} workers), "
             f"{f['connections']:,} connections, {f['replies']:,} replies, {f['closed_by_server']:,} closed by the server; "
             f"exceptions {f['exceptions']}, leaks {len(f['leaks'])}, peak RSS {f['peak_rss_mb']:.1f} MB, "
             f"RSS growth after warm-up {', '.join(f'{g:+.1%}' for g in f['rss_growth_after_warmup'] if g is not None)}, "
             f"traced KiB after replays {f['traced_kib_after_replays']} -> {'PASS' if f['passed'] else 'FAIL'}"]
    for k, n in f["failure_kinds"].items():
        lines.append(f"  {n} x {k}")
    return "\n".join(lines)
