"""``hashcoop notify``: tell a running pool about a new block. bitcoind runs
it for every block (``-blocknotify="hashcoop notify -c CONF %s"``), so this
module imports only the standard library: no Twisted, no pyzmq, no pydantic
(tests/node/test_tipwatch.py checks). The pool's side is
``hashcoop.pool.node.tipwatch.NotifyListener``."""
from __future__ import annotations

import os
import re
import socket
import sys
import tomllib

HASH_RE = re.compile(r"[0-9a-fA-F]{64}")
# Must equal hashcoop.pool.config.WorkSection's default (a test checks it); notify does
# not import hashcoop.pool.config, which pulls in pydantic.
DEFAULT_NOTIFY_LISTEN = "tcp:3335:interface=127.0.0.1"
NOTIFY_ENV = "HASHCOOP__WORK__NOTIFY_LISTEN"


def split_endpoint(description: str) -> tuple[str, list[str], dict[str, str]]:
    """Split a Twisted endpoint string into (type, positional args, keyword
    args), honouring backslash escapes (``tcp:3335:interface=\\:\\:1``)."""
    parts: list[str] = []
    cur: list[str] = []
    it = iter(description)
    for ch in it:
        if ch == "\\":
            cur.append(next(it, ""))
        elif ch == ":":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            kwargs[k] = v
        else:
            args.append(p)
    return parts[0], args, kwargs


def client_address(description: str) -> tuple[str, object]:
    """Where to connect to reach a listener on ``description``: a server
    endpoint string (``tcp:3335:interface=127.0.0.1``, ``unix:/path``) or a
    client one (``tcp:host=127.0.0.1:port=3335``). Returns ("tcp", (host,
    port)) or ("unix", path); ValueError for other endpoint types."""
    kind, args, kw = split_endpoint(description.strip())
    if kind in ("tcp", "tcp6"):
        port_s = kw.get("port") or next((a for a in args if a.isdigit()), None)
        if not port_s or not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ValueError(f"no port in endpoint {description!r}")
        host = kw.get("host") or kw.get("interface") or ("::1" if kind == "tcp6" else "127.0.0.1")
        # A listener on every interface is reached over loopback.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return "tcp", (host, int(port_s))
    if kind == "unix":
        path = kw.get("address") or kw.get("path") or (args[0] if args else "")
        if not path:
            raise ValueError(f"no path in endpoint {description!r}")
        return "unix", path
    raise ValueError(f"cannot connect to a {kind!r} endpoint; give --endpoint tcp:host=HOST:port=PORT or unix:PATH")


def notify_listen_from_config(path: str, env=None) -> str:
    """``work.notify_listen`` from the TOML file (and the environment
    override), without validating the rest of the configuration."""

    env = os.environ if env is None else env
    if NOTIFY_ENV in env:
        return env[NOTIFY_ENV]
    with open(path, "rb") as f:
        data = tomllib.load(f)
    work = data.get("work") or {}
    value = work.get("notify_listen", DEFAULT_NOTIFY_LISTEN) if isinstance(work, dict) else DEFAULT_NOTIFY_LISTEN
    if not isinstance(value, str):
        raise ValueError("work.notify_listen must be a string")
    return value


def send_notify(address: tuple[str, object], blockhash: str, timeout: float = 4.0) -> str:
    """Send one hash to a listener and return its answer line. Raises
    OSError (incl. timeouts) when the pool cannot be reached."""

    kind, where = address
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(where)
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.create_connection(where, timeout=timeout)
    with sock:
        sock.sendall(blockhash.encode() + b"\n")
        answer = b""
        while b"\n" not in answer and len(answer) < 1024:
            chunk = sock.recv(1024)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\n", 1)[0].decode("utf-8", "replace").strip()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "notify",
        help="tell a running pool about a new block (for bitcoind -blocknotify)",
        description="Send BLOCKHASH to the pool's notify listener (work.notify_listen). "
        'Use as bitcoind -blocknotify="hashcoop notify -c /etc/hashcoop.toml %s".',
    )
    p.add_argument("-c", "--config", help="the pool's configuration file (for work.notify_listen)")
    p.add_argument("--endpoint", help="listener to reach instead of the config's, e.g. tcp:host=127.0.0.1:port=3335 or unix:/run/hashcoop/notify.sock")
    p.add_argument("--timeout", type=float, default=4.0, help="seconds to wait for the pool (default 4)")
    p.add_argument("blockhash", metavar="BLOCKHASH", help="the new block's hash (64 hex digits)")
    p.set_defaults(func=run_notify)


def run_notify(args) -> int:
    """Exit status: 0 the pool took it, 1 the pool answered with an error,
    2 bad arguments or configuration, 3 the pool could not be reached."""
    def fail(code: int, msg: str) -> int:
        print(f"hashcoop notify: {msg}", file=sys.stderr)
        return code

    if not HASH_RE.fullmatch(args.blockhash):
        return fail(2, f"not a block hash: {args.blockhash!r}")
    desc = args.endpoint
    if desc is None:
        if not args.config:
            return fail(2, "give -c CONFIG or --endpoint")
        try:
            desc = notify_listen_from_config(args.config)
        except (OSError, ValueError) as e:  # tomllib.TOMLDecodeError is a ValueError
            return fail(2, f"cannot read work.notify_listen from {args.config}: {e}")
        if not desc:
            return fail(2, f"the notify listener is disabled in {args.config} (work.notify_listen is empty)")
    try:
        address = client_address(desc)
    except ValueError as e:
        return fail(2, str(e))
    try:
        answer = send_notify(address, args.blockhash.lower(), timeout=args.timeout)
    except OSError as e:
        where = address[1] if address[0] == "unix" else "%s:%s" % address[1]
        return fail(3, f"the pool is not reachable at {where}: {e.strerror or e}")
    if answer != "ok":
        return fail(1, f"the pool answered {answer!r}")
    return 0
