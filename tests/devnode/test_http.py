"""The devnode's HTTP framing without sockets (a StringTransport and a
clock): header lines ending in a bare LF as ckpool sends them, HTTP/1.0,
keep-alive and pipelining, chunked bodies, the idle timeout, half-close,
and the refusals. tests/realnode/test_standin_http.py holds the same
requests against a live Bitcoin Core."""
from __future__ import annotations

import base64
import json

import pytest
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport

from hashcoop.pool.tools.devnode.http import (
    MAX_HEADERS_SIZE,
    BadRequest,
    HttpResponse,
    RequestParser,
    RpcHttpChannel,
    render_response,
)
from hashcoop.pool.tools.devnode.rpc import Rpc
from hashcoop.pool.tools.devnode.server import Authenticator, JsonRpcDispatcher, RpcHttpHandler
from tests.devnode.util import funded_chain

COOKIE = "__cookie__:" + "ab" * 32
AUTH = b"Basic " + base64.b64encode(COOKIE.encode())
BODY = b'{"jsonrpc":"1.0","id":1,"method":"getblockcount","params":[]}'
OK = b'{"result":3,"error":null,"id":1}\n'


def request(body: bytes = BODY, eol: bytes = b"\n", version: bytes = b"1.1", headers: tuple[bytes, ...] = ()) -> bytes:
    lines = [b"POST / HTTP/" + version, b"Host: x", b"Authorization: " + AUTH, b"Content-Length: %d" % len(body), *headers]
    return eol.join(lines) + eol + eol + body


class _Transport(StringTransport):
    """A StringTransport that also takes half-close."""

    def loseWriteConnection(self):
        self.loseConnection()


@pytest.fixture
def served():
    clock = task.Clock()
    chain = funded_chain(3)
    handler = RpcHttpHandler(JsonRpcDispatcher(Rpc(chain, clock=chain.clock), None), Authenticator([tuple(COOKIE.split(":"))]), clock)

    def connect(timeout: float = 30.0):
        channel = RpcHttpChannel(handler, clock, timeout)
        transport = _Transport()
        channel.makeConnection(transport)
        return channel, transport

    connect.clock = clock
    return connect


def responses(data: bytes) -> list[tuple[bytes, dict, bytes]]:
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.split(b": ", 1) for line in lines[1:])
        n = int(headers.get(b"Content-Length", len(rest)))
        out.append((lines[0], headers, rest[:n]))
        data = rest[n:]
    return out


def test_bare_lf_header_lines_as_ckpool_sends_them(served):
    """`POST / HTTP/1.1\\nHost: x\\nAuthorization: ..\\nContent-Length: N\\n\\n{..}`
    is answered at once, as Core answers it (it used to wait for a CRLF
    until the client gave up)."""
    channel, transport = served()
    channel.dataReceived(request(eol=b"\n"))
    [(status, headers, body)] = responses(transport.value())
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"Content-Type"] == b"application/json" and headers[b"Content-Length"] == b"%d" % len(OK)
    assert body == OK
    assert not transport.disconnecting  # HTTP/1.1 keeps the connection


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_pipelined_and_kept_alive(served, eol):
    channel, transport = served()
    channel.dataReceived(request(eol=eol) * 3)
    assert [r[2] for r in responses(transport.value())] == [OK] * 3
    transport.clear()
    channel.dataReceived(request(eol=eol)[:25])
    channel.dataReceived(request(eol=eol)[25:])
    assert [r[2] for r in responses(transport.value())] == [OK]
    assert not transport.disconnecting


def test_http_1_0_is_answered_without_a_length_and_closed(served):
    channel, transport = served()
    channel.dataReceived(request(version=b"1.0", eol=b"\r\n"))
    assert transport.value() == b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + OK
    assert transport.disconnecting
    channel, transport = served()
    channel.dataReceived(request(version=b"1.0", headers=(b"Connection: keep-alive",)) * 2)
    assert transport.value() == (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(OK), OK)) * 2
    assert not transport.disconnecting


def test_connection_close(served):
    channel, transport = served()
    channel.dataReceived(request(headers=(b"Connection: close",)) + request())
    [(status, headers, body)] = responses(transport.value())
    assert headers[b"Connection"] == b"close" and body == OK
    assert transport.disconnecting


def test_chunked_body_with_bare_lf(served):
    channel, transport = served()
    head = b"POST / HTTP/1.1\nAuthorization: " + AUTH + b"\nTransfer-Encoding: chunked\n\n"
    channel.dataReceived(head + b"%x\n%s\n0\n\n" % (len(BODY), BODY))
    assert [r[2] for r in responses(transport.value())] == [OK]


def test_no_content_length_means_no_body(served):
    channel, transport = served()
    channel.dataReceived(b"POST / HTTP/1.1\r\nAuthorization: " + AUTH + b"\r\n\r\n")
    [(status, _, body)] = responses(transport.value())
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert json.loads(body)["error"] == {"code": -32700, "message": "Parse error"}


def test_the_idle_timeout_closes_and_waits_for_no_answer(served):
    channel, transport = served(timeout=30)
    served.clock.advance(29)
    channel.dataReceived(request()[:30])
    served.clock.advance(29)
    assert not transport.disconnecting  # data restarted the timer
    served.clock.advance(1)
    assert transport.disconnecting and transport.value() == b""


def test_half_close_gets_its_answer(served):
    channel, transport = served()
    channel.dataReceived(request())
    channel.readConnectionLost()
    assert [r[2] for r in responses(transport.value())] == [OK]
    assert transport.disconnecting


def test_a_waiting_request_is_cancelled_when_the_client_goes(served):
    channel, transport = served()
    waiting = defer.Deferred()
    channel.handler = lambda req: waiting
    channel.dataReceived(request())
    channel.readConnectionLost()
    assert waiting.called and transport.disconnecting and transport.value() == b""


@pytest.mark.parametrize("data, status", [
    (b"HELLO\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    (b"POST / HTTP/2.0\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    (b"POST  / HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    (b"\r\nPOST / HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    (b"POST / HTTP/1.0\r\nNoColon\r\n\r\n", b"HTTP/1.0 400 Bad Request"),
    (b"POST / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    (b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    (b"POST / HTTP/1.1\r\nContent-Length: 40000000\r\n\r\n", b"HTTP/1.1 413 Content too large"),
    (b"POST / HTTP/1.1\r\nX: " + b"a" * MAX_HEADERS_SIZE + b"\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
])
def test_refusals_close_the_connection(served, data, status):
    channel, transport = served()
    channel.dataReceived(data)
    assert transport.value().split(b"\r\n")[0] == status
    assert transport.disconnecting


def test_methods_core_does_not_route_get_an_empty_405(served):
    channel, transport = served()
    channel.dataReceived(b"OPTIONS * HTTP/1.1\r\n\r\n")
    [(status, headers, body)] = responses(transport.value())
    assert (status, headers[b"Content-Length"], body) == (b"HTTP/1.1 405 Method Not Allowed", b"0", b"")
    channel, transport = served()
    channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    [(status, headers, body)] = responses(transport.value())
    assert (status, body) == (b"HTTP/1.1 405 Method Not Allowed", b"JSONRPC server handles only POST requests")
    assert headers[b"Content-Type"] == b"text/html; charset=ISO-8859-1"


def test_parser_keeps_failing_after_a_bad_request():
    p = RequestParser()
    p.feed(b"BAD\n\nPOST / HTTP/1.1\n\n")
    with pytest.raises(BadRequest):
        p.next()
    assert p.next() is None


def test_204_has_neither_length_nor_type():
    out = render_response(None, HttpResponse(204), 0.0)
    assert out == b"HTTP/1.1 204 No Content\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n"
