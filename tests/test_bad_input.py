"""Bad input: odd bodies are forwarded unchanged for the upstream to judge and counted; odd
request targets and headers can never make the proxy talk to any host but its upstream."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2 as httpx
import pytest

from conftest import Proxied
from fault_upstream import (
    Conn,
    FaultUpstream,
    RawRequest,
    assert_quiet,
    chat_body,
    chat_chunks,
    fault_upstream,
    http_response,
    outcomes,
    sse,
)

MakeProxy = Callable[..., Proxied]


async def answer(request: RawRequest, conn: Conn) -> None:
    """A plain upstream: a stream for a body that asks for one, else a chat completion."""
    try:
        streamed = json.loads(request.body).get("stream") is True
    except (ValueError, AttributeError, RecursionError):
        streamed = False
    if streamed:
        await conn.send(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: "
            + str(len(STREAM)).encode()
            + b"\r\n\r\n"
            + STREAM
        )
    else:
        await conn.send(http_response(200, chat_body()))


STREAM = sse(chat_chunks(tokens=5))


@pytest.fixture
def upstream() -> Iterator[FaultUpstream]:
    with fault_upstream(answer) as server:
        yield server


@pytest.fixture
def proxy(upstream: FaultUpstream, make_proxy: MakeProxy) -> Proxied:
    return make_proxy(upstream.url + "/v1", max_body_bytes=100_000)


def send(proxy: Proxied, body: bytes, path: str = "/chat/completions", **headers: str) -> httpx.Response:
    with httpx.Client(timeout=10) as http:
        return http.post(proxy.base_url + path, content=body, headers={"content-type": "application/json", **headers})


# --- bodies -----------------------------------------------------------------------------------

DEEP = b'{"model": "m", "messages": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # RecursionError in json
ODD_BODIES = {
    "not json": b"this is not json",
    "truncated json": b'{"model": "m", "stream": tr',
    "json array": b'[{"model": "m"}]',
    "json string": b'"model"',
    "json null": b"null",
    "json number": b"42",
    "empty": b"",
    "non-utf8": b'{"model": "m\xff\xfe", "stream": true}',
    "utf-16": json.dumps({"model": "m", "stream": True}).encode("utf-16"),
    "utf-8 bom": b"\xef\xbb\xbf" + json.dumps({"model": "m", "stream": True}).encode(),
    "model not a string": b'{"model": 42, "messages": []}',
    "stream not a bool": b'{"model": "m", "stream": "yes"}',
    "stream_options not an object": b'{"model": "m", "stream": true, "stream_options": "all"}',
    "stream_options a list": b'{"model": "m", "stream": true, "stream_options": [true]}',
    "include_usage not a bool": b'{"model": "m", "stream": true, "stream_options": {"include_usage": "yes"}}',
    "deep nesting": DEEP,
    "duplicate keys": b'{"model": "a", "model": "b", "stream": false}',
    "nan": b'{"model": "m", "temperature": NaN}',
}


@pytest.mark.parametrize("name", ODD_BODIES)
def test_odd_bodies_are_forwarded_unchanged_and_counted(proxy: Proxied, upstream: FaultUpstream, name: str) -> None:
    body = ODD_BODIES[name]
    response = send(proxy, body)
    assert response.status_code == 200  # what the upstream said
    assert upstream.requests[-1].body == body  # byte for byte: the upstream judges it
    assert sum(outcomes(proxy).values()) == 1
    assert proxy.total("llmobs_requests_total", endpoint="chat_completions") == 1
    assert proxy.total("llmobs_telemetry_errors_total") == 0
    assert_quiet(proxy)


def test_what_can_be_read_is_accounted(proxy: Proxied) -> None:
    send(proxy, b'{"model": 42, "messages": []}')  # no model, but the upstream's usage counts
    send(proxy, ODD_BODIES["non-utf8"])
    # under the model the response named, since the request named none
    assert proxy.total("llmobs_tokens_total", model="m", type="output") == 10
    send(proxy, ODD_BODIES["duplicate keys"])  # as json.loads reads it: the last one wins
    assert proxy.total("llmobs_requests_total", model="b") == 1


def test_an_odd_body_that_asks_for_a_stream_still_gets_usage_added(proxy: Proxied, upstream: FaultUpstream) -> None:
    body = b'{"stream": true, "model": "m", "extra": {"nested": [1, 2, {"x": null}]}}'
    response = send(proxy, body)
    sent = upstream.requests[-1].body
    assert sent == b'{"stream_options":{"include_usage":true},' + body[1:]  # spliced, the rest untouched
    assert b'"usage"' not in response.content
    assert proxy.total("llmobs_tokens_total", model="m", type="output") == 5


@pytest.mark.parametrize(("size", "chunked"), [(300_000, False), (300_000, True), (4_000_000, False)])
def test_body_over_the_limit_gets_413_from_the_proxy(
    proxy: Proxied, upstream: FaultUpstream, size: int, chunked: bool
) -> None:
    body = b'{"model": "m", "messages": "' + b"x" * size + b'"}'
    content: Any = iter([body[i : i + 10_000] for i in range(0, len(body), 10_000)]) if chunked else body
    with httpx.Client(timeout=10) as http:
        response = http.post(proxy.base_url + "/chat/completions", content=content)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and "100000" in error["message"]
    assert upstream.requests == []  # never forwarded
    assert outcomes(proxy) == {("rejected", "413"): 1}
    assert send(proxy, b'{"model": "m"}').status_code == 200  # and the next one is served
    assert_quiet(proxy)


def test_body_at_the_limit_is_forwarded(proxy: Proxied, upstream: FaultUpstream) -> None:
    body = b'{"model": "m", "pad": "' + b"x" * (100_000 - 25) + b'"}'
    assert len(body) == 100_000
    assert send(proxy, body).status_code == 200
    assert upstream.requests[-1].body == body


# --- paths, methods, headers --------------------------------------------------------------------


@pytest.fixture
def evil() -> Iterator[FaultUpstream]:
    """Another server on loopback: nothing may ever reach it through the proxy."""

    async def bait(request: RawRequest, conn: Conn) -> None:
        await conn.send(http_response(200, b'{"evil": true}'))

    with fault_upstream(bait) as server:
        yield server


def raw(proxy: Proxied, request: bytes) -> bytes:
    """Send raw bytes on a fresh connection; return the status line of the answer."""
    with socket.create_connection(("127.0.0.1", proxy.server.port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    return answer.split(b"\r\n", 1)[0]


def test_no_request_reaches_any_host_but_the_upstream(
    proxy: Proxied, upstream: FaultUpstream, evil: FaultUpstream
) -> None:
    there = f"127.0.0.1:{evil.port}".encode()
    attempts = {
        b"GET http://" + there + b"/v1/models HTTP/1.1\r\nHost: " + there: b"/v1/models",  # absolute form
        b"GET https://" + there + b"/x HTTP/1.1\r\nHost: a": b"/x",
        b"GET /v1/models HTTP/1.1\r\nHost: " + there: b"/v1/models",  # Host trick
        b"GET /v1/models HTTP/1.1\r\nHost: a\r\nX-Forwarded-Host: "
        + there
        + b"\r\nForwarded: host="
        + there: b"/v1/models",
        b"GET //" + there + b"/x HTTP/1.1\r\nHost: a": b"//" + there + b"/x",  # scheme-relative look-alike
        b"GET /..%2f..%2f" + there + b" HTTP/1.1\r\nHost: a": b"/..%2f..%2f" + there,
        b"GET /../../x HTTP/1.1\r\nHost: a": b"/../../x",  # dot segments go as sent
        b"GET /%2F%2F" + there + b"/x HTTP/1.1\r\nHost: a": b"/%2F%2F" + there + b"/x",
        b"GET /x?next=http://" + there + b"/ HTTP/1.1\r\nHost: a": b"/x?next=http://" + there + b"/",
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: " + there: b"/x",  # duplicate Host
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 2": b"/v1/chat/completions",
    }
    for request, target in attempts.items():
        body = b"{}" if request.startswith(b"POST") else b""
        assert raw(proxy, request + b"\r\n\r\n" + body) == b"HTTP/1.1 200 OK", request
        assert upstream.requests[-1].target.encode() == target, request
        assert upstream.requests[-1].header("host") == f"127.0.0.1:{upstream.port}"
    refused = [
        b"CONNECT " + there + b" HTTP/1.1\r\nHost: " + there,
        b"GET @" + there + b"/x HTTP/1.1\r\nHost: a",
        b"GET \\\\" + there + b"\\x HTTP/1.1\r\nHost: a",
        b"OPTIONS * HTTP/1.1\r\nHost: a",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2",  # a bare CR cannot smuggle a header
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\x00",
        b"GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3",  # smuggling shape
    ]
    for request in refused:
        assert raw(proxy, request + b"\r\n\r\n").startswith(b"HTTP/1.1 400"), request
    time.sleep(0.1)
    assert evil.connections == 0 and evil.requests == []
    assert len(upstream.requests) == len(attempts)
    assert proxy.app.upstream.pooled_peers() <= {("127.0.0.1", upstream.port)}  # every pooled connection


def test_headers_reach_the_upstream_as_sent_less_hop_by_hop_and_our_own(
    proxy: Proxied, upstream: FaultUpstream
) -> None:
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
        b"Connection: keep-alive, X-Drop-Me\r\nX-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
        b"Proxy-Authorization: Basic c2VjcmV0\r\nX-LLMOBS-Tenant: t1\r\n"
        b"X-Dup: one\r\nX-Dup: two\r\nX-Title: caf\xc3\xa9 \xe2\x98\x95\r\nAuthorization: Bearer sk-abc\r\n\r\n{}"
    )
    assert raw(proxy, request) == b"HTTP/1.1 200 OK"
    received = upstream.requests[-1]
    names = [name.lower() for name, _ in received.headers]
    for dropped in ("connection", "x-drop-me", "keep-alive", "te", "proxy-authorization", "x-llmobs-tenant"):
        assert dropped not in names
    assert [v for k, v in received.headers if k.lower() == "x-dup"] == ["one", "two"]
    assert b"x-title: caf\xc3\xa9 \xe2\x98\x95\r\n" in received.head  # UTF-8 bytes unchanged (ASGI lowercases names)
    assert received.header("authorization") == "Bearer sk-abc"
    assert received.header("content-length") == "2"
    assert proxy.total("llmobs_requests_total", tenant="t1") == 1


def test_a_header_with_a_control_character_is_refused_not_a_crash(proxy: Proxied, upstream: FaultUpstream) -> None:
    # uvicorn lets DEL through; the HTTP client would refuse to send it (a 500 before).
    status = raw(proxy, b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nX-A: 1\x7f2\r\nContent-Length: 2\r\n\r\n{}")
    if status == b"HTTP/1.1 400 Bad Request":
        assert upstream.requests == []
        assert outcomes(proxy) in ({("rejected", "400"): 1}, {})  # {} when uvicorn refused it itself
    assert send(proxy, b"{}").status_code == 200
