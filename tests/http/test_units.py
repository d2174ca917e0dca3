"""The HTTP side's parts without processes: the rationed reads (cache,
single flight, timeout, refusal), the hashrate tracker, the sampled timer,
input checks, routing and the operator split, HTML escaping, config."""
from __future__ import annotations

import orjson
import pytest
from prometheus_client import generate_latest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from hashcoop.pool.config import ConfigError, load_config
from hashcoop.pool.http.api import ApiError, App, check_address, check_hash, check_worker
from hashcoop.pool.http.live import Live
from hashcoop.pool.http.pages import Pages, fmt_btc, fmt_hashrate
from hashcoop.pool.http.reads import Busy, Reads, ReadTimeout
from hashcoop.pool.http.service import STATIC_DIR
from hashcoop.pool.http.sinks import HashrateTracker, MetricsSink
from hashcoop.pool.metrics import Metrics, SampledTimer

ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
TOKEN = "t" * 20


def config(**http):
    return load_config(data={"pool": {"network": "regtest", "address": ADDR}, "nodes": [{"url": "http://x"}], "http": http},
                       env={})


# -- reads ---------------------------------------------------------------------------------
class FakeThreads:
    """run_in_thread stand-in: each call gets a Deferred the test fires."""

    def __init__(self):
        self.calls: list[tuple[object, tuple, defer.Deferred]] = []

    def __call__(self, fn, *args):
        d = defer.Deferred()
        self.calls.append((fn, args, d))
        return d


def reads(**kw):
    clock, threads = Clock(), FakeThreads()
    return Reads(clock, None, clock=clock, run_in_thread=threads, **kw), clock, threads


def results(d):
    out = []
    d.addBoth(out.append)
    return out


def test_reads_share_one_call_and_cache_it():
    r, clock, threads = reads(ttl=5, timeout=10)
    a, b = results(r.get("k", len, "abc")), results(r.get("k", len, "abc"))
    assert len(threads.calls) == 1 and a == b == []
    threads.calls[0][2].callback(3)
    assert a == b == [3]
    assert results(r.get("k", len, "abc")) == [3] and len(threads.calls) == 1  # cached
    clock.advance(5.1)
    r.get("k", len, "abc")
    assert len(threads.calls) == 2  # expired: read again


def test_read_errors_are_cached_briefly():
    r, clock, threads = reads(ttl=5, timeout=10, error_ttl=1)
    first = results(r.get("k", len, "x"))
    threads.calls[0][2].errback(ConnectionError("redis down"))
    assert first[0].check(ConnectionError)
    again = results(r.get("k", len, "x"))
    assert again[0].check(ConnectionError) and len(threads.calls) == 1
    clock.advance(1.1)
    r.get("k", len, "x")
    assert len(threads.calls) == 2


def test_a_slow_read_times_out_but_still_fills_the_cache():
    r, clock, threads = reads(ttl=5, timeout=2)
    waiting = results(r.get("k", len, "x"))
    clock.advance(2.1)
    assert waiting[0].check(ReadTimeout)
    threads.calls[0][2].callback("late")  # the thread finishes after all
    assert results(r.get("k", len, "x")) == ["late"] and r.pending == 0


def test_too_many_reads_are_refused_not_queued():
    r, clock, threads = reads(max_pending=2)
    r.get("a", len, "x")
    r.get("b", len, "x")
    refused = results(r.get("c", len, "x"))
    assert refused[0].check(Busy) and len(threads.calls) == 2
    joined = results(r.get("a", len, "x"))  # the same key joins the running read
    threads.calls[0][2].callback(1)
    assert joined == [1]
    r.get("c", len, "x")
    assert len(threads.calls) == 3


def test_the_cache_is_bounded():
    r, clock, threads = reads(max_entries=3)
    for i in range(10):
        r.get(i, len, "x")
        threads.calls[-1][2].callback(i)
    assert len(r._cache) == 3


# -- hashrate, sampled timer, per-worker switch --------------------------------------------
def test_hashrate_tracker_windows():
    clock = Clock()
    clock.advance(1_000_000)
    t = HashrateTracker(clock)
    for _ in range(60):
        clock.advance(1)
        t.add(clock.seconds(), 1.0)  # difficulty 1 a second = 2^32 H/s
    assert t.rate("1m") == pytest.approx(2 ** 32, rel=0.2)
    assert t.rate("1h") == pytest.approx(2 ** 32, rel=0.2)  # up 60 s: divides by the time since start
    clock.advance(120)
    assert t.rate("1m") == 0.0 and 0 < t.rate("5m") < 2 ** 32


def test_metrics_sink_feeds_the_gauge_and_per_worker_counters():
    from hashcoop.pool.core.events import ShareAccepted, ShareRejected

    clock = Clock()
    clock.advance(1000)
    m = Metrics()
    sink = MetricsSink(m, clock, per_worker=True)
    sink.share_accepted(ShareAccepted(time=1000, address=ADDR, worker="w1", difficulty=2.0, share_difficulty=3.0,
                                      job_id="j", height=1, hash="00" * 32, network_difficulty=1.0))
    sink.share_rejected(ShareRejected(time=1000, reason="duplicate", address=ADDR, worker="w1"))
    text = generate_latest(m.registry).decode()
    assert f'hashcoop_worker_shares_accepted_total{{address="{ADDR}",worker="w1"}} 1.0' in text
    assert f'hashcoop_worker_shares_rejected_total{{address="{ADDR}",reason="duplicate",worker="w1"}} 1.0' in text
    rate = m.registry.get_sample_value("hashcoop_hashrate_hashes_per_second", {"window": "1m"})
    assert rate == pytest.approx(2.0 * 2 ** 32 / 1.0)  # difficulty 2 within the first second


def test_sampled_timer_times_one_call_in_n():
    ticks = iter(range(1000))
    m = Metrics()
    timer = SampledTimer(m.share_validation_seconds, every=4, clock=lambda: next(ticks))
    f = timer.wrap(lambda x: x + 1)
    assert [f(i) for i in range(12)] == list(range(1, 13))
    assert m.share_validation_seconds.collect()[0].samples[-2].value == 3  # _count: 3 of 12 timed
    with pytest.raises(ValueError):
        SampledTimer(m.share_validation_seconds, every=0)


# -- input checks ----------------------------------------------------------------------------
def test_address_checks_name_the_network():
    net = config().network
    assert check_address(ADDR, net) == ADDR
    for bad in ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "", "x" * 101, "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"):
        with pytest.raises(ApiError) as e:
            check_address(bad, net)
        assert e.value.status == 400 and "regtest" in e.value.message
    assert check_worker("rig_1-a") == "rig_1-a"
    for bad in ("", "a.b", "x" * 65, "<b>"):
        with pytest.raises(ApiError):
            check_worker(bad)
    assert check_hash("AB" * 32) == "ab" * 32
    with pytest.raises(ApiError):
        check_hash("ab" * 31)


# -- routing and the operator split ------------------------------------------------------------
def app(**http) -> App:
    cfg = config(**http)
    clock = Clock()
    return App(config=cfg, reads=Reads(clock, None, clock=clock, run_in_thread=FakeThreads()), data=None,
               live=Live(clock=clock, config=cfg), metrics=Metrics(), static_dir=STATIC_DIR)


def call(a: App, path: str, *, operator=False, method=b"GET", headers=None, args=None):
    req = DummyRequest(path.lstrip("/").split("/") if path != "/" else [b""])
    req.path = path.encode()
    req.uri = path.encode()
    req.method = method
    req.channel = DummyChannel()
    req.args = {k.encode(): [v.encode()] for k, v in (args or {}).items()}
    for k, v in (headers or {}).items():
        req.requestHeaders.setRawHeaders(k, [v])
    a.handle(req, operator)
    body = b"".join(req.written)
    return req.responseCode or 200, req.responseHeaders, body


def test_operator_endpoints_need_the_listener_or_the_token():
    a = app(operator_token=TOKEN)
    assert call(a, "/metrics", operator=True)[0] == 200
    status, headers, body = call(a, "/metrics")
    assert status == 401 and headers.getRawHeaders("WWW-Authenticate")[0].startswith("Bearer")
    assert orjson.loads(body)["error"]["code"] == "unauthorized"
    assert call(a, "/metrics", headers={"Authorization": "Bearer nope"})[0] == 401
    assert call(a, "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    # without a token the operator part does not exist on the public listener
    assert call(app(), "/api/v1/operator/status")[0] == 404


def test_cors_only_for_configured_origins_and_never_operator():
    a = app(cors_origins=["https://a.example"], operator_token=TOKEN)
    _, h, _ = call(a, "/api/v1", headers={"Origin": "https://a.example"})
    assert h.getRawHeaders("Access-Control-Allow-Origin") == ["https://a.example"]
    _, h, _ = call(a, "/api/v1", headers={"Origin": "https://b.example"})
    assert not h.hasHeader("Access-Control-Allow-Origin")
    _, h, _ = call(a, "/api/v1/operator/status", operator=True, headers={"Origin": "https://a.example"})
    assert not h.hasHeader("Access-Control-Allow-Origin")
    _, h, _ = call(app(cors_origins=["*"]), "/api/v1", headers={"Origin": "https://z.example"})
    assert h.getRawHeaders("Access-Control-Allow-Origin") == ["*"]


def test_without_accounting_the_api_says_so():
    status, _, body = call(app(), "/api/v1/pool")
    assert status == 503 and orjson.loads(body)["error"]["code"] == "accounting-off"
    status, h, body = call(app(), "/")
    assert status == 503 and h.getRawHeaders("Content-Type")[0].startswith("text/html") and b"[redis]" in body


def test_read_only_and_unknown_paths():
    a = app()
    status, h, _ = call(a, "/api/v1/pool", method=b"DELETE")
    assert status == 405 and "GET" in h.getRawHeaders("Allow")[0]
    assert call(a, "/api/v1/nope")[0] == 404
    status, h, body = call(a, "/static/app.js")
    assert status == 200 and h.getRawHeaders("Content-Type")[0].startswith("text/javascript")
    assert call(a, "/static/..%2Fapi.py")[0] == 404
    assert call(a, "/api/v1/blocks", args={"limit": "5", "bogus": "1"})[0] in (400,)


# -- HTML -------------------------------------------------------------------------------------------
def test_pages_escape_everything():
    pages = Pages(config(), STATIC_DIR)
    evil = '<script>alert(1)</script>'
    worker = {"worker": evil, "online": True, "hashrate": {"5m": 1e6, "1h": 1e6}, "accepted": 1, "rejected_total": 0,
              "best_share": {"difficulty": 1.0}, "last_share": 1.0}
    a = {"address": ADDR, "hashrate": {"1m": 0, "5m": 0, "1h": 0, "24h": 0}, "best_share": None, "workers": [worker],
         "workers_online": 1, "online": True, "accepted": 1, "rejected_total": 0, "last_share": 1.0, "payouts": None,
         "blocks": []}
    html = pages.miner(a).decode()
    assert evil not in html and "&lt;script&gt;" in html
    assert "payout service is not connected" in html


def test_formats():
    assert fmt_hashrate(1.5e12) == "1.5 TH/s" and fmt_hashrate(999) == "999 H/s"
    assert fmt_btc(150_000_000) == "1.50 BTC" and fmt_btc(None) == "–"


# -- config ------------------------------------------------------------------------------------------
def test_http_config_errors_carry_their_keys():
    with pytest.raises(ConfigError) as e:
        config(listen="8080", operator_token="short", cors_origins=["https://x.example/path"], read_threads=0, bogus=1)
    keys = {k for k, _ in e.value.errors}
    assert {"http.listen", "http.operator_token", "http.cors_origins", "http.read_threads", "http.bogus"} <= keys
    with pytest.raises(ConfigError) as e:
        config(listen="tcp:8080", operator_listen="tcp:8080")
    assert [k for k, _ in e.value.errors] == ["http.operator_listen"]
    assert config().http.operator_listen == "tcp:8081:interface=127.0.0.1"
    cfg = load_config(data={"pool": {"network": "regtest", "address": ADDR}, "nodes": [{"url": "http://x"}]},
                      env={"HASHCOOP__HTTP__OPERATOR_TOKEN": TOKEN, "HASHCOOP__HTTP__LISTEN": "tcp:9999"})
    assert cfg.http.operator_token == TOKEN and cfg.http.listen == "tcp:9999"
