"""Typed configuration: TOML plus environment overrides, validated once.

Every error is reported together, each with the dotted key at fault, e.g.
``stratum.ports.0.min_difficulty: must not exceed start_difficulty``.

Environment overrides use ``HASHCOOP__`` and double underscores between
keys; list items are addressed by index. Values are read as TOML values when
they parse as one (numbers, booleans, arrays), otherwise as strings::

    HASHCOOP__POOL__ADDRESS=bcrt1q...
    HASHCOOP__NODES__0__PASSWORD=secret
    HASHCOOP__STRATUM__PORTS__0__START_DIFFICULTY=0.01
"""
from __future__ import annotations

import copy
import ipaddress
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hashcoop.pool.core.btc.address import AddressError, address_to_script, get_network
from hashcoop.pool.core.coinbase import max_tag_length

ENV_PREFIX = "HASHCOOP__"


class ConfigError(Exception):
    """Raised with every problem found; ``errors`` is a list of (key, message)."""

    def __init__(self, errors: list[tuple[str, str]], source: str = ""):
        self.errors = errors
        self.source = source
        lines = "\n".join(f"  {k}: {m}" for k, m in errors)
        super().__init__(f"invalid configuration{(' in ' + source) if source else ''}:\n{lines}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolSection(_Model):
    network: Literal["mainnet", "testnet3", "testnet4", "signet", "regtest"] = "regtest"
    address: str = Field(description="where the coinbase pays; the pool's wallet address")
    coinbase_tag: str = "/hashcoop/"
    instance_id: int = Field(0, ge=0, le=255, description="extranonce1 prefix; unique per stratum process sharing one Redis")
    extranonce2_size: Literal[4, 8] = 4
    data_dir: str = "./data"
    name: str = "hashcoop"


class NodeSection(_Model):
    name: str = ""
    url: str
    user: str | None = None
    password: str | None = None
    cookie_file: str | None = None
    zmq_hashblock: str | None = None
    timeout: float = Field(10.0, gt=0, le=600)
    longpoll: bool = True

    @field_validator("cookie_file")
    @classmethod
    def _expand(cls, v: str | None) -> str | None:
        return os.path.expanduser(v) if v else v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v


class PortSection(_Model):
    port: int = Field(ge=1, le=65535)
    bind: str = "0.0.0.0"
    start_difficulty: float = Field(1.0, gt=0)
    min_difficulty: float = Field(0.0001, gt=0)
    max_difficulty: float = Field(1e15, gt=0)
    vardiff: bool = True
    name: str = ""

    @field_validator("start_difficulty", "min_difficulty", "max_difficulty")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


def _networks(v: list[str]) -> list[str]:
    """A list of networks in CIDR notation (``connection_limit_exempt``)."""
    for n in v:
        try:
            ipaddress.ip_network(n, strict=False)
        except ValueError:
            raise ValueError(f"{n!r} is not a network (CIDR)") from None
    return v


class FloodSection(_Model):
    """Escalating treatment of connections that send mostly invalid shares (see stratum/flood.py)."""

    enabled: bool = Field(True, description="off: no fresh work, no flood disconnects, no bans")
    window: int = Field(100, ge=10, le=100_000, description="counted submits (accepted shares and rejects other than stale-job) the invalid fraction is taken over")
    invalid_fraction: float = Field(0.5, gt=0, le=1, description="a window with at least this fraction of invalid submits gets fresh work, a second one in a row a disconnect")
    max_rejects_per_second: float = Field(50.0, gt=0, le=1e6, description="sustained rate of rejected submits (stale ones too) a connection may send; beyond it, once reject_burst is spent, it is closed")
    reject_burst: int = Field(500, ge=1, le=1_000_000, description="rejected submits a connection may send at once before max_rejects_per_second applies")
    ban_after: int = Field(3, ge=0, le=1000, description="flood disconnects of one IP within ban_period that ban it (0 = never ban); networks in connection_limit_exempt are never banned")
    ban_period: float = Field(3600.0, gt=0, le=30 * 86400, description="seconds over which flood disconnects of one IP are counted")
    ban_seconds: float = Field(1800.0, gt=0, le=30 * 86400, description="how long a banned IP's new connections are refused")
    max_tracked_ips: int = Field(100_000, ge=100, le=10_000_000, description="IPs with recent flood disconnects, and bans, kept in memory (oldest forgotten first)")

    @field_validator("invalid_fraction", "max_rejects_per_second", "ban_period", "ban_seconds")
    @classmethod
    def _finite_flood(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class StratumSection(_Model):
    ports: list[PortSection] = Field(default_factory=lambda: [PortSection(port=3333)], min_length=1)
    max_line_length: int = Field(4096, ge=512, le=1 << 20)
    max_connections_per_ip: int = Field(256, ge=1)
    connection_limit_exempt: list[str] = Field(default_factory=list, description="networks (CIDR) without the per-IP cap, e.g. a trusted proxy")
    subscribe_timeout: float = Field(15.0, gt=0)
    authorize_timeout: float = Field(60.0, gt=0)
    idle_timeout: float = Field(900.0, gt=0, description="authorized miners that send no share for this long are disconnected")
    backlog: int = Field(4096, ge=16)
    version_rolling_mask: str = "1fffe000"
    allow_password_difficulty: bool = True
    max_template_age: float = Field(0.0, ge=0, description="refuse new miners when the template is older than this (0 = never)")
    stale_grace: float = Field(1.0, ge=0, le=30, description="seconds after a new tip during which a share on the tip it replaced is still credited (the miner found it before it could read the new job); a block it solves is lost all the same. 0 = stale-job at once")
    reuse_port: bool = Field(False, description="listen with SO_REUSEPORT, so several stratum processes (each its own pool.instance_id and data_dir) share one port")
    flood: FloodSection = Field(default_factory=FloodSection, description="fresh work, disconnect, then a temporary ban for connections sending mostly invalid shares")
    # what one connection may make the pool hold or do (RELIABILITY.md, "Backpressure and cost per byte")
    output_pause_bytes: int = Field(65536, ge=4096, le=16 << 20, description="unsent output to one connection past which the pool stops reading from it until the output has drained (a peer that does not read its replies cannot make the pool hold them)")
    output_limit_bytes: int = Field(1 << 20, ge=8192, le=256 << 20, description="unsent output past which a connection is closed at once (reason output-limit)")
    output_stall_timeout: float = Field(60.0, gt=0, le=3600, description="seconds a connection whose reading is paused may take none of its unsent output before it is closed (reason output-stalled)")
    close_timeout: float = Field(5.0, gt=0, le=300, description="a closed connection is sent what was queued for it, then a FIN; if the peer has not closed its side this many seconds later, the connection is aborted")
    request_rate: float = Field(1.0, gt=0, le=1e6, description="requests other than mining.submit (subscribe, authorize, configure, suggest_difficulty, extranonce.subscribe, unknown methods, blank lines) one connection may send a second, sustained")
    request_burst: int = Field(100, ge=1, le=1_000_000, description="such requests a connection may send at once (a proxy authorizing its workers); past the budget they are refused, and as many again refused close the connection (reason request-rate)")
    difficulty_change_interval: float = Field(2.0, ge=0, le=600, description="at most one difficulty change (set_difficulty with the job sent again) per connection in this many seconds; changes in between are coalesced into the next one")

    @field_validator("connection_limit_exempt")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return _networks(v)

    @field_validator("version_rolling_mask")
    @classmethod
    def _mask(cls, v: str) -> str:
        try:
            n = int(v, 16)
        except ValueError:
            raise ValueError("must be 8 hex digits") from None
        if len(v) != 8 or n < 0:
            raise ValueError("must be 8 hex digits")
        return v.lower()


class VardiffSection(_Model):
    target_interval: float = Field(10.0, gt=0, description="seconds between shares the pool aims for")
    retarget_interval: float = Field(60.0, gt=0, description="longest time between retargets")
    variance: float = Field(0.3, gt=0, lt=1, description="no retarget while the rate is within this fraction of the target")
    min_shares: int = Field(4, ge=1, description="shares needed before a rate-based retarget")


class WorkSection(_Model):
    refresh_interval: float = Field(30.0, gt=0, description="seconds between template refreshes (clean_jobs false)")
    poll_interval: float = Field(1.0, ge=0, description="seconds between getbestblockhash polls, the fallback new-block detector; 0 turns the poll off")
    notify_listen: str = Field("tcp:3335:interface=127.0.0.1", description="Twisted endpoint for `hashcoop notify`; empty disables")
    block_recheck_interval: float = Field(10.0, gt=0)
    mine_on_own_block: bool = Field(True, description="when the pool finds a block, send miners an empty-block job on it at once instead of letting them work on the replaced tip until a node's template arrives; the node's template replaces it as soon as a node reports the block")


class LogSection(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class RedisSection(_Model):
    """The live accounting store. Present = share accounting on (see docs/redis.md)."""

    url: str = Field("redis://127.0.0.1:6379/0", description="redis://, rediss:// or unix:// URL; several stratum processes may share one Redis")
    prefix: str = Field("hashcoop:", min_length=1, max_length=64, description="namespace put before every key")
    socket_timeout: float = Field(2.0, gt=0, le=60, description="seconds a Redis call may take before the pool buffers shares instead")
    connect_timeout: float = Field(1.0, gt=0, le=60, description="seconds to wait for a connection to Redis")

    @field_validator("url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if any(c.isspace() for c in v):
            raise ValueError("must not contain whitespace")
        return v


class AccountingSection(_Model):
    """Share accounting (used when [redis] is configured). Processes sharing one Redis must agree on the window settings."""

    flush_interval: float = Field(0.25, gt=0, le=5, description="seconds between batched writes to Redis")
    max_buffered_shares: int = Field(5_000, ge=100, description="accepted shares held in memory while Redis is slow or down (and the next two batches, whatever their size); beyond this they wait in the journal file only, so a backlog leaves no lasting memory behind")
    journal_fsync: bool = Field(False, description="fsync the journal before each Redis write (survives power loss, not just a crash)")
    window_factor: float = Field(2.0, gt=0, le=100, description="PPLNS window N = factor x network difficulty of the block share")
    window_difficulty: float = Field(0.0, ge=0, description="fixed PPLNS window in share difficulty; 0 uses window_factor")
    window_margin: float = Field(0.5, ge=0, le=10, description="window entries kept beyond N, as a fraction of N (room for a difficulty rise)")
    worker_offline_after: float = Field(600.0, gt=0, description="seconds without an accepted share before a worker shows offline")
    idle_expiry: float = Field(8 * 86400.0, ge=8 * 86400.0, description="seconds after their last share that a worker's or address's keys expire (>= 8 days: the charts keep 7)")
    max_blocks: int = Field(10_000, ge=10, description="found blocks (rounds) listed; older ones are dropped, un-archived window snapshots never")
    withholding_alpha: float = Field(0.001, gt=0, le=0.1, description="a worker or address is flagged as a possible block withholder when an honest one would find as few blocks as it did with at most this probability (the false-positive rate per check; docs/withholding.md)")
    withholding_check_interval: float = Field(300.0, ge=10, le=86400, description="seconds between the withholding checks behind hashcoop_withholding_suspects and the log lines (with [http])")

    @field_validator("window_factor", "window_difficulty", "window_margin", "flush_interval", "worker_offline_after", "idle_expiry",
                     "withholding_alpha", "withholding_check_interval")
    @classmethod
    def _finite_acct(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class HttpSection(_Model):
    """Dashboard, JSON API and Prometheus metrics (see docs/dashboard.md). Present = on.

    The public listener serves the read-only part: the dashboard and the public
    /api/v1 endpoints. The operator part (/metrics, /api/v1/operator/...) is
    served on ``operator_listen``, and also on the public listener to requests
    carrying ``Authorization: Bearer <operator_token>`` when a token is set."""

    listen: str = Field("tcp:8080", description="Twisted endpoint of the public part (dashboard, /api/v1)")
    operator_listen: str = Field("tcp:8081:interface=127.0.0.1", description="Twisted endpoint of the operator part (/metrics, /api/v1/operator); empty = none")
    operator_token: str = Field("", description="bearer token that opens the operator part on the public listener too; empty = operator part only on operator_listen")
    cors_origins: list[str] = Field(default_factory=list, description='origins allowed to call the public API from a browser ("*" = any)')
    per_worker_metrics: bool = Field(False, description="export per-worker share counters labelled by address and worker (unbounded labels: small pools only)")
    cache_seconds: float = Field(5.0, gt=0, le=300, description="how long an answer read from Redis or the ledger is reused")
    read_timeout: float = Field(5.0, gt=0, le=120, description="seconds a read may take before the request is answered 503")
    read_threads: int = Field(4, ge=1, le=64, description="threads for blocking reads (Redis, ledger)")
    max_pending_reads: int = Field(64, ge=1, le=10_000, description="reads queued beyond this are refused with 503 (protects Redis)")
    refresh_seconds: float = Field(10.0, ge=1, le=3600, description="how often dashboard pages update themselves")
    idle_timeout: float = Field(15.0, gt=0, le=3600, description="seconds a connection may go without a request while nothing is being answered (idle keep-alive) before it is closed")
    request_timeout: float = Field(30.0, gt=0, le=3600, description="seconds a request may take to arrive, from its first byte to its last (a client trickling its headers is closed)")
    write_timeout: float = Field(30.0, gt=0, le=3600, description="seconds a connection's backed-up output may go without the peer taking any of it before the connection is aborted (a client that stopped reading)")
    max_connections: int = Field(1000, ge=1, le=1_000_000, description="open connections per listener (listen and operator_listen each); new ones beyond are refused")
    max_connections_per_ip: int = Field(50, ge=1, le=1_000_000, description="open connections from one peer IP per listener; new ones beyond are refused")
    connection_limit_exempt: list[str] = Field(default_factory=list, description="networks (CIDR) without the per-IP cap, e.g. a reverse proxy in front of the public listener (max_connections still applies)")

    @field_validator("connection_limit_exempt")
    @classmethod
    def _exempt(cls, v: list[str]) -> list[str]:
        return _networks(v)

    @field_validator("listen", "operator_listen")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if v and not re.fullmatch(r"(tcp|tcp6|unix|ssl):\S+", v):
            raise ValueError('must be a Twisted server endpoint such as "tcp:8080" or "tcp:8081:interface=127.0.0.1"')
        return v

    @field_validator("operator_token")
    @classmethod
    def _token(cls, v: str) -> str:
        if v and (len(v) < 16 or any(c.isspace() for c in v)):
            raise ValueError("at least 16 characters, no whitespace")
        return v

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for o in v:
            if o != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", o):
                raise ValueError(f'{o!r} is not an origin ("*" or scheme://host[:port], no path)')
        return v


class DatabaseSection(_Model):
    """The payout ledger's database (see docs/payouts.md)."""

    url: str = Field("", description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db; empty = SQLite file payouts.sqlite in pool.data_dir")

    @field_validator("url")
    @classmethod
    def _db_url(cls, v: str) -> str:
        if v and not re.match(r"^(sqlite|postgresql)(\+\w+)?://", v):
            raise ValueError("must be a sqlite:// or postgresql[+driver]:// URL")
        return v


class PayoutsSection(_Model):
    """The payout service (`hashcoop payouts`): PPLNS credits, maturity, payments. Amounts in satoshis."""

    fee_percent: float = Field(1.0, ge=0, lt=100, description="pool fee, percent of each block's reward (coinbase value)")
    fee_address: str = Field("", description="address credited with the pool fee like a miner; empty = the fee stays in the wallet")
    min_payout_sat: int = Field(100_000, ge=1_000, description="balances at or above this are paid")
    max_outputs: int = Field(100, ge=1, le=1_000, description="payees per transaction")
    tx_fee_payer: Literal["pool", "miners"] = Field("pool", description="who bears the transaction fee: the pool's wallet, or the payees (split equally)")
    fee_rate_sat_vb: float = Field(0.0, ge=0, le=10_000, description="transaction fee rate in sat/vB; 0 = the wallet estimates for conf_target")
    conf_target: int = Field(6, ge=1, le=1008, description="confirmation target for the wallet's fee estimate")
    max_tx_fee_sat: int = Field(1_000_000, ge=1_000, description="a transaction whose fee is above this is not sent")
    maturity_depth: int = Field(101, ge=101, description="a block is credited when it is this deep in the main chain (coinbase spendable)")
    payment_confirmations: int = Field(6, ge=1, le=1000, description="a payment is confirmed at this depth")
    orphan_recheck_depth: int = Field(1000, ge=0, description="orphaned blocks are re-checked (a reorg may bring them back) until the chain is this far past them")
    interval: float = Field(30.0, gt=0, le=3600, description="seconds between passes (import, maturity, payments)")
    node: str = Field("", description="name of the [[nodes]] entry with the wallet; empty = the first")
    wallet: str = Field("", description="wallet name (RPC path /wallet/<name>); empty = the node's only loaded wallet")
    lease_ttl: float = Field(60.0, ge=5, le=3600, description="seconds the single-instance lease lasts without renewal")
    metrics_listen: str = Field("", description="Twisted endpoint serving /metrics of the payout process; empty = none")

    @field_validator("fee_percent", "fee_rate_sat_vb", "interval", "lease_ttl")
    @classmethod
    def _finite_payouts(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("fee_rate_sat_vb")
    @classmethod
    def _core_fee_rate(cls, v: float) -> float:
        # what Bitcoin Core v31 takes (tests/vectors/bitcoind-wallet.json): its wallet refuses a
        # fee_rate with more than 3 decimals (-3), its mempool a rate below 0.1 sat/vB (-26)
        if v and v < 0.1:
            raise ValueError("below 0.1 sat/vB, which Bitcoin Core's mempool refuses (0 = let the wallet estimate)")
        if round(v, 3) != v:
            raise ValueError("more than 3 decimals, which Bitcoin Core's wallet refuses")
        return v

    @field_validator("wallet")
    @classmethod
    def _wallet_name(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9._-]+", v):
            raise ValueError("letters, digits, '.', '_' and '-' only")
        return v

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_endpoint(cls, v: str) -> str:
        if v and not re.fullmatch(r"(tcp|tcp6|unix):\S+", v):
            raise ValueError('must be a Twisted server endpoint such as "tcp:9102:interface=127.0.0.1"')
        return v


class Config(_Model):
    pool: PoolSection
    nodes: list[NodeSection] = Field(min_length=1)
    stratum: StratumSection = Field(default_factory=StratumSection)
    vardiff: VardiffSection = Field(default_factory=VardiffSection)
    work: WorkSection = Field(default_factory=WorkSection)
    logging: LogSection = Field(default_factory=LogSection)
    redis: RedisSection | None = Field(None, description="share accounting store; absent = no accounting")
    accounting: AccountingSection = Field(default_factory=AccountingSection)
    http: HttpSection | None = Field(None, description="dashboard, JSON API and /metrics; absent = no HTTP")
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    payouts: PayoutsSection = Field(default_factory=PayoutsSection)

    @property
    def network(self):
        return get_network(self.pool.network)

    def node_name(self, i: int) -> str:
        return self.nodes[i].name or f"node{i}"


def _semantic_errors(cfg: Config) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    net = cfg.network
    try:
        address_to_script(cfg.pool.address, net)
    except AddressError as e:
        errors.append(("pool.address", f"{e} (network {net.name})"))

    room = max_tag_length(cfg.pool.extranonce2_size)
    if len(cfg.pool.coinbase_tag.encode()) > room:
        errors.append(("pool.coinbase_tag", f"at most {room} bytes with extranonce2_size {cfg.pool.extranonce2_size} (scriptSig limit 100 bytes)"))
    for i, p in enumerate(cfg.stratum.ports):
        k = f"stratum.ports.{i}"
        if p.min_difficulty > p.max_difficulty:
            errors.append((f"{k}.min_difficulty", "must not exceed max_difficulty"))
        if not p.min_difficulty <= p.start_difficulty <= p.max_difficulty:
            errors.append((f"{k}.start_difficulty", "must lie between min_difficulty and max_difficulty"))
    seen: dict[tuple[str, int], int] = {}
    for i, p in enumerate(cfg.stratum.ports):
        if (p.bind, p.port) in seen:
            errors.append((f"stratum.ports.{i}.port", f"same as stratum.ports.{seen[(p.bind, p.port)]}"))
        seen[(p.bind, p.port)] = i
    if cfg.stratum.output_limit_bytes <= cfg.stratum.output_pause_bytes:
        errors.append(("stratum.output_limit_bytes", f"must exceed stratum.output_pause_bytes ({cfg.stratum.output_pause_bytes})"))
    names: set[str] = set()
    for i, n in enumerate(cfg.nodes):
        name = cfg.node_name(i)
        if name in names:
            errors.append((f"nodes.{i}.name", f"duplicate node name {name!r}"))
        names.add(name)
        if n.cookie_file and (n.user or n.password):
            errors.append((f"nodes.{i}.cookie_file", "give either cookie_file or user/password, not both"))
        if (n.user is None) != (n.password is None):
            errors.append((f"nodes.{i}.password" if n.password is None else f"nodes.{i}.user", "user and password go together"))
    if cfg.http is not None and cfg.http.listen and cfg.http.listen == cfg.http.operator_listen:
        errors.append(("http.operator_listen", "same as http.listen; leave it empty and set operator_token to serve both on one port"))
    if cfg.payouts.fee_address:
        try:
            address_to_script(cfg.payouts.fee_address, net)
        except AddressError as e:
            errors.append(("payouts.fee_address", f"{e} (network {net.name})"))
    if cfg.payouts.node and cfg.payouts.node not in names:
        errors.append(("payouts.node", f"no [[nodes]] entry named {cfg.payouts.node!r}"))
    return errors


def database_url(cfg: Config) -> str:
    """The ledger's SQLAlchemy URL: [database] url, or SQLite in pool.data_dir."""
    if cfg.database.url:
        return cfg.database.url
    return "sqlite:///" + str(Path(cfg.pool.data_dir).expanduser().resolve() / "payouts.sqlite")


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env(data: dict, env: Mapping[str, str]) -> tuple[dict, list[tuple[str, str]]]:
    """Apply HASHCOOP__A__B=value overrides to the raw config dict."""
    errors: list[tuple[str, str]] = []
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        key = ".".join(path)
        if not all(path):
            errors.append((key, f"malformed environment variable {name}"))
            continue
        node: Any = data
        try:
            for i, part in enumerate(path[:-1]):
                nxt_is_index = path[i + 1].isdigit()
                if isinstance(node, list):
                    idx = int(part)
                    while len(node) <= idx:
                        node.append({})
                    node = node[idx]
                else:
                    if part not in node or not isinstance(node[part], (dict, list)):
                        node[part] = [] if nxt_is_index else {}
                    node = node[part]
            last = path[-1]
            if isinstance(node, list):
                idx = int(last)
                while len(node) <= idx:
                    node.append(None)
                node[idx] = _parse_env_value(raw)
            else:
                node[last] = _parse_env_value(raw)
        except (ValueError, TypeError):
            errors.append((key, f"cannot apply environment variable {name}"))
    return data, errors


def load_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None, data: dict | None = None) -> Config:
    """Read, override and validate. Raises ConfigError listing every error."""
    source = str(path) if path else "<dict>"
    if data is None:
        if path is None:
            raise ConfigError([("<file>", "no configuration file given")])
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError([("<file>", f"{path} not found")], source) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError([("<file>", f"not valid TOML: {e}")], source) from None
    else:
        data = copy.deepcopy(data)
    data, errors = apply_env(data, os.environ if env is None else env)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<root>"
            msg = err["msg"]
            if err["type"] == "missing":
                msg = "required"
            elif err["type"] == "extra_forbidden":
                msg = "unknown key"
            errors.append((key, msg))
        raise ConfigError(errors, source) from None
    errors.extend(_semantic_errors(cfg))
    if errors:
        raise ConfigError(errors, source)
    return cfg
