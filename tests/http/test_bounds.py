"""The HTTP side's bounds on real sockets (issue 14; RELIABILITY.md, "HTTP
side"): pipelined requests from a client that never reads, slow readers of
large pages, many idle keep-alive connections. The server is the pool's
HttpService in its own process (tests/http/serve.py), the clients plain
sockets in the test. The same rules on a clock: tests/http/test_limits.py."""
from __future__ import annotations

import errno
import selectors
import socket
import time

import pytest

from tests.hostile.conftest import figures, full  # noqa: F401 - figures is a fixture
from tests.procs import ServeProcess, serve_processes

pytestmark = pytest.mark.hostile

BUFFER = 65536  # Twisted's transport bufferSize: output beyond it pauses the channel
APP_JS = b"GET /static/app.js HTTP/1.1\r\nHost: pool\r\n\r\n"


class HttpProc(ServeProcess):
    """The HTTP side in its own process (tests/http/serve.py)."""

    def __init__(self, log, **opts):
        super().__init__("tests.http.serve", log)
        ready = self.spawn(opts)
        self.port, self.plain_port, self.pid = ready["port"], ready["plain_port"], ready["pid"]

    def wait_stats(self, cond, timeout: float, every: float = 0.05) -> tuple[dict, float]:
        """Polls until ``cond(stats)``; (the last stats, seconds waited)."""
        t0 = time.monotonic()
        while True:
            st = self.stats()
            if cond(st) or time.monotonic() - t0 > timeout:
                return st, time.monotonic() - t0
            time.sleep(every)



@pytest.fixture
def server(tmp_path):
    yield from serve_processes(tmp_path, HttpProc, "http")


def client(port: int, *, src: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def drain(s: socket.socket, limit: float = 5.0) -> tuple[bytes, str]:
    """Everything the peer still has for us, and how it ended: eof, reset or open."""
    s.settimeout(limit)
    got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return got, "eof"
            got += d
    except ConnectionResetError:
        return got, "reset"
    except TimeoutError:
        return got, "open"


def pipeline_without_reading(port: int, n: int, until, timeout: float, linger: float = 2.0) -> dict:
    """Sends ``n`` pipelined GETs of /static/app.js and never reads; stops
    when ``until()`` says so (polled between sends). What it managed to send."""
    s = client(port, rcvbuf=BUFFER)
    s.setblocking(False)
    data, sent = APP_JS * n, 0
    t0 = time.monotonic()
    result = None
    while time.monotonic() - t0 < timeout:
        try:
            if sent < len(data):
                sent += s.send(data[sent:sent + BUFFER])
        except BlockingIOError:
            pass
        except OSError as e:  # the server aborted us: the reset shows on a send
            result = e.errno
        r = until()
        if r:
            break
        time.sleep(0.02)
    got, end = drain(s, linger)
    s.close()
    return {"sent": sent, "requests_sent": sent // len(APP_JS), "responses_seen": got.count(b"HTTP/1.1 200 OK"),
            "end": end if result is None else errno.errorcode.get(result, str(result)), "seconds": time.monotonic() - t0}


# -- pipelining, never reading -------------------------------------------------------------------
def test_pipelined_requests_from_a_client_that_never_reads_hold_one_buffer_and_are_aborted(server, figures):
    n = 200_000 if full() else 20_000
    srv = server(http={"write_timeout": 1.0, "idle_timeout": 5.0}, plain=True)
    base = srv.stats()
    peak = [0]

    def closed():
        st = srv.stats()
        peak[0] = max(peak[0], st["held_max"])
        return st["connections"] == 0 and st["disconnects"].get("reason=write-stalled")

    out = pipeline_without_reading(srv.port, n, closed, timeout=20)
    st = srv.stats()
    response = 5641 + 400  # app.js and its headers
    assert st["disconnects"].get("reason=write-stalled") == 1, st
    assert peak[0] < BUFFER + 2 * response, peak  # the transport's buffer and the response that went over it
    assert out["seconds"] < 15, out  # write_timeout 1 s: aborted once the kernel's buffers are full and 1-1.25 s pass
    assert out["end"] in ("reset", "ECONNRESET", "EPIPE"), out
    assert st["rss"] - base["rss"] < 32 << 20
    # the same client against stock twisted.web: every response it reads is buffered
    m = 2_000
    stock, grew = [0], [time.monotonic()]

    def buffered():  # until what it holds stops growing for half a second
        held = srv.stats()["plain_held_max"]
        if held > stock[0]:
            stock[0], grew[0] = held, time.monotonic()
        return stock[0] and time.monotonic() - grew[0] > 0.5

    plain = pipeline_without_reading(srv.plain_port, m, buffered, timeout=10, linger=0.1)
    assert stock[0] > 50 * peak[0]
    figures("http pipelined, never reads", requests_sent=out["requests_sent"], bytes_sent=out["sent"],
            held_peak_bytes=peak[0], closed_after_s=round(out["seconds"], 2), peer_saw=out["end"],
            responses_peer_could_read=out["responses_seen"], cpu_s=round(st["cpu"] - base["cpu"], 3),
            cpu_s_per_mb_sent=round((st["cpu"] - base["cpu"]) / (out["sent"] / 2**20), 3),
            rss_growth_bytes=st["rss"] - base["rss"], stock_twisted_requests=plain["requests_sent"],
            stock_twisted_held_bytes=stock[0])


def test_cpu_per_megabyte_of_pipelined_requests_read_back(server, figures):
    """A client that pipelines and reads everything: what each MB of
    requests costs the server (the work is answering them, 5.6 KB each)."""
    n = 50_000 if full() else 5_000
    srv = server()
    s = client(srv.port)
    s.setblocking(False)
    data, sent, got, t0 = APP_JS * n, 0, 0, time.monotonic()
    ends = 0
    cpu0 = srv.stats()["cpu"]
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    tail = b""
    while ends < n and time.monotonic() - t0 < 60:
        for _, ev in sel.select(1.0):
            if ev & selectors.EVENT_WRITE and sent < len(data):
                try:
                    sent += s.send(data[sent:sent + BUFFER])
                except BlockingIOError:
                    pass
                if sent == len(data):
                    sel.modify(s, selectors.EVENT_READ)
            if ev & selectors.EVENT_READ:
                chunk = s.recv(1 << 20)
                assert chunk, "the server closed a connection that reads"
                got += len(chunk)
                ends += (tail + chunk).count(b"HTTP/1.1 200 OK")
                tail = chunk[-16:]
    seconds = time.monotonic() - t0
    cpu = srv.stats()["cpu"] - cpu0
    s.close()
    assert ends == n
    figures("http pipelined, read back", requests=n, mb_in=round(sent / 2**20, 3), mb_out=round(got / 2**20, 1),
            cpu_s=round(cpu, 3), cpu_s_per_mb_in=round(cpu / (sent / 2**20), 2),
            cpu_ms_per_mb_out=round(1000 * cpu / (got / 2**20), 1), requests_per_s=round(n / seconds))


# -- slow readers -----------------------------------------------------------------------------------
def read_big(port: int, chunk: int, gap: float, stop_after: int | None = None) -> dict:
    s = client(port, rcvbuf=BUFFER)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: pool\r\n\r\n")
    got, last, t0 = 0, time.monotonic(), time.monotonic()
    end = "open"
    s.settimeout(10)
    try:
        while True:
            d = s.recv(chunk)
            if not d:
                end = "eof"
                break
            if not got:  # the first read holds the headers
                header = d[:d.index(b"\r\n\r\n") + 4]
                total = int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0]) + len(header)
            got += len(d)
            last = time.monotonic()
            if got >= total:
                end = "complete"
                break
            if stop_after is not None and got >= stop_after:
                end = "stopped"
                break
            time.sleep(gap)
    except ConnectionResetError:
        end = "reset"
    return {"sock": s, "got": got, "end": end, "last_read": last, "seconds": time.monotonic() - t0}


def test_a_reader_that_stops_is_aborted_and_a_slow_steady_one_is_not(server, figures):
    page = 512 << 10
    # the kernel's send buffer pinned to 32 KB (serve.py), as on a slow link: the page backs up in the process
    srv = server(http={"write_timeout": 1.0, "idle_timeout": 10.0}, big_bytes=page, sndbuf=32768)
    # steady: 32 KB every 0.2 s (160 KB/s), the output backed up for seconds, several write_timeouts
    cpu0 = srv.stats()["cpu"]
    steady = read_big(srv.port, 32768, 0.2)
    steady["sock"].close()
    st = srv.stats()
    steady_cpu = st["cpu"] - cpu0
    assert steady["end"] == "complete", steady
    assert st["disconnects"].get("reason=write-stalled") is None, st
    # stops after 64 KB
    stopper = read_big(srv.port, 32768, 0.05, stop_after=65536)
    assert stopper["end"] == "stopped"
    held = srv.stats()["held_max"]
    st, waited = srv.wait_stats(lambda st: st["connections"] == 0, timeout=10)
    closed_after = time.monotonic() - stopper["last_read"]
    _, seen = drain(stopper["sock"], 5.0)
    stopper["sock"].close()
    assert st["disconnects"].get("reason=write-stalled") == 1, st
    assert closed_after < 1.25 + 3.0, closed_after  # write_timeout x 1.25, and a loaded machine's margin
    assert seen == "reset"
    assert held > 256 << 10  # the rest of the page was still waiting in the process
    figures("http slow readers", page_bytes=page, steady_seconds=round(steady["seconds"], 2),
            steady_rate_kb_s=round(page / steady["seconds"] / 1024), steady_cpu_s=round(steady_cpu, 3),
            stopper_closed_after_s=round(closed_after, 2),
            stopper_held_bytes=held, peer_saw=seen)


# -- requests trickled in, request bodies ------------------------------------------------------------
def test_a_trickled_request_is_closed_and_a_large_body_is_refused_unread(server, figures):
    srv = server(http={"request_timeout": 1.0, "idle_timeout": 5.0})
    base = srv.stats()
    # a byte every 0.2 s: the idle timeout (5 s) never fires
    s = client(srv.port)
    s.settimeout(0.2)
    t0, end = time.monotonic(), "open"
    for b in APP_JS * 10:
        try:
            s.send(bytes([b]))
            if s.recv(100) == b"":
                end = "eof"
                break
        except TimeoutError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            end = "reset"
            break
        if time.monotonic() - t0 > 10:
            break
    trickle_closed = time.monotonic() - t0
    s.close()
    assert end == "eof" and trickle_closed < 1.0 + 3.0, (end, trickle_closed)
    # a 50 MB body for a read-only API: 413 after the headers, the body never read
    body = 50 << 20
    b = client(srv.port)
    b.sendall(b"POST /api/v1/pool HTTP/1.1\r\nHost: pool\r\nContent-Length: %d\r\n\r\n" % body)
    b.settimeout(5)
    sent, t0 = 0, time.monotonic()
    try:
        while sent < body:
            sent += b.send(b"z" * BUFFER)
    except (ConnectionResetError, BrokenPipeError, TimeoutError):
        pass
    got, how = drain(b, 2.0)
    b.close()
    st, _ = srv.wait_stats(lambda st: st["connections"] == 0, timeout=5)
    assert st["disconnects"] == {"reason=request-timeout": 1.0, "reason=body-too-large": 1.0}, st
    assert sent < body  # the server stopped reading: the client could not send it all
    assert got.startswith(b"HTTP/1.1 413") or how == "reset", (got[:40], how)
    assert st["fds"] == base["fds"] and st["rss"] - base["rss"] < 8 << 20
    figures("http trickle and body", trickle_closed_after_s=round(trickle_closed, 2), body_bytes_offered=body,
            body_bytes_client_could_send=sent, body_peer_saw="413" if got.startswith(b"HTTP/1.1 413") else how,
            rss_growth_bytes=st["rss"] - base["rss"], cpu_s=round(st["cpu"] - base["cpu"], 3))


# -- idle keep-alive connections --------------------------------------------------------------------
def test_idle_connections_are_capped_and_closed_and_a_normal_client_still_gets_pages(server, figures):
    per_ip, total = 50, (1000 if full() else 200)
    idle_timeout = 4.0  # the setup below takes a tenth of a second; this leaves a loaded machine room
    # a listen backlog for the burst of connects (Twisted's default, 50, drops SYNs: 1 s retransmits)
    srv = server(http={"idle_timeout": idle_timeout, "max_connections": total, "max_connections_per_ip": per_ip,
                       "listen": "tcp:0:interface=127.0.0.1:backlog=2048"})
    base = srv.stats()
    fds0 = base["fds"]
    attackers = [f"127.0.1.{i}" for i in range(1, total // per_ip + 2)]  # one IP more than the cap allows
    socks = []
    t_open = time.monotonic()
    for ip in attackers[:-1]:
        socks += [client(srv.port, src=ip) for _ in range(per_ip + 10)]  # 10 beyond the per-IP cap each
    socks += [client(srv.port, src=attackers[-1]) for _ in range(10)]  # the listener is full
    opened = time.monotonic() - t_open
    st, _ = srv.wait_stats(lambda st: sum(st["refused"].values()) >= 10 * len(attackers), timeout=10)
    held = st["rss"] - base["rss"]
    cpu = st["cpu"] - base["cpu"]
    # the last full IP's ten extras find the listener full before their IP's cap, as do the last IP's ten
    assert st["connections"] == total and st["refused"] == {
        "reason=per-ip-limit": 10.0 * (len(attackers) - 2), "reason=max-connections": 20.0}, st
    assert st["gauge"] == {"listener=public": float(total)}
    # what a refused peer sees: a 503 and the end of the connection
    refused = []
    for s in socks:
        s.setblocking(False)
        try:
            d = s.recv(4096)
        except BlockingIOError:
            continue
        refused.append(d[:12])
    assert len(refused) == 10 * len(attackers) and set(refused) == {b"HTTP/1.1 503"}
    # the per-IP cap leaves room for others below max_connections: a dashboard user on another address
    # (the listener is full here, so first one attacker's connections go; then the user's pages come)
    for s in socks[:per_ip]:
        s.close()
    srv.wait_stats(lambda st: st["connections"] <= total - per_ip, timeout=5)
    t0 = time.monotonic()
    for _ in range(5):
        s = client(srv.port, src="127.0.0.9")
        s.sendall(b"GET /static/app.js HTTP/1.1\r\nHost: pool\r\nConnection: close\r\n\r\n")
        body, end = drain(s, 5.0)
        s.close()
        assert body.startswith(b"HTTP/1.1 200 OK") and end == "eof"
    page_s = (time.monotonic() - t0) / 5
    assert srv.stats()["connections"] == total - per_ip  # the idle ones were still there
    # the idle ones close after idle_timeout
    st, _ = srv.wait_stats(lambda st: st["connections"] == 0, timeout=idle_timeout + 10)
    closed_after = time.monotonic() - t_open
    assert st["connections"] == 0 and st["open"] == 0 and st["per_ip"] == {}
    assert idle_timeout - 0.1 < closed_after < idle_timeout + 5, closed_after
    idle_closed = st["disconnects"].get("reason=idle-timeout", 0)
    assert idle_closed >= total - per_ip
    ends = [drain(s, 2.0)[1] for s in socks[per_ip:]]
    for s in socks:
        s.close()
    assert set(ends) == {"eof"}
    st, _ = srv.wait_stats(lambda st: st["fds"] <= fds0, timeout=5)
    assert st["fds"] <= fds0
    # one log line for the refusals (the next would sum up the following minute)
    lines = [ln for ln in srv.text().splitlines() if "refused" in ln]
    assert len(lines) == 1, lines
    figures("http idle connections", attempted=len(socks), admitted=total,
            refused_per_ip=int(st["refused"]["reason=per-ip-limit"]), refused_total=int(st["refused"]["reason=max-connections"]),
            open_seconds=round(opened, 3), idle_closed=int(idle_closed), idle_closed_after_s=round(closed_after, 2),
            page_seconds_meanwhile=round(page_s, 4), refusal_log_lines=len(lines), fds_before=fds0, fds_after=st["fds"],
            rss_growth_while_open_bytes=held, rss_per_idle_connection_bytes=held // total,
            cpu_s_to_admit_and_refuse=round(cpu, 3))
