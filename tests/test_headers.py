"""Header policy: what goes upstream and what comes back (pure), and Date/Server end to end."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from hypothesis import given
from hypothesis import strategies as st

from conftest import Proxied
from fault_upstream import RawRequest, fault_upstream, http_response, refused_port
from llmobs.proxy import headers as hp
from llmobs.runner import ServerThread


def test_hop_by_hop_own_host_and_length_are_dropped_the_rest_kept_in_order() -> None:
    given_headers = [
        (b"host", b"evil.example"),
        (b"content-length", b"2"),
        (b"transfer-encoding", b"chunked"),
        (b"connection", b"keep-alive, x-private"),
        (b"x-private", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-authorization", b"Basic abc"),
        (b"te", b"trailers"),
        (b"upgrade", b"h2c"),
        (b"x-llmobs-tenant", b"t"),
        (b"X-LLMOBS-Other", b"o"),
        (b"authorization", b"Bearer sk-client"),
        (b"x-dup", b"1"),
        (b"x-dup", b"2"),
        (b"accept", b"text/event-stream"),
    ]
    assert hp.request_headers(given_headers) == [
        (b"authorization", b"Bearer sk-client"),
        (b"x-dup", b"1"),
        (b"x-dup", b"2"),
        (b"accept", b"text/event-stream"),
    ]


def test_configured_key_replaces_every_client_credential() -> None:
    out = hp.request_headers(
        [(b"authorization", b"Bearer a"), (b"api-key", b"b"), (b"Authorization", b"c"), (b"X-Api-Key", b"d")],
        credential=(b"authorization", b"Bearer upstream"),
    )
    assert out == [(b"authorization", b"Bearer upstream")]


def test_response_headers_keep_duplicates_and_drop_hop_by_hop() -> None:
    upstream = [
        (b"Content-Type", b"text/event-stream"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"10"),
    ]
    assert hp.response_headers(upstream, drop=frozenset({b"content-length"})) == [
        (b"content-type", b"text/event-stream"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]


def test_control_characters_make_a_header_unsendable() -> None:
    for value in (b"a\rb", b"a\nb", b"a\x00b", b"a\x7fb", b"a\x1bb"):
        assert hp.unsendable([(b"x-ok", b"fine"), (b"x-bad", value)]) == b"x-bad"
    assert hp.unsendable([(b"x-tab", b"a\tb"), (b"x-utf8", "café ☕".encode()), (b"x-latin", b"\xe9")]) is None


def test_utf8_header_text_round_trips_byte_for_byte() -> None:
    value = "café ☕ 東京".encode()
    assert hp.text(value).encode("utf-8") == value
    assert hp.text(b"caf\xe9") == "café"  # not UTF-8: obsolete latin-1 text, kept readable


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=12), st.binary(max_size=12)), max_size=12))
def test_policy_never_forwards_hop_by_hop_host_or_own_headers(headers: list[tuple[bytes, bytes]]) -> None:
    out = hp.request_headers(headers)
    for name, _ in out:
        lower = name.lower()
        assert lower not in hp.HOP_BY_HOP and lower not in (b"host", b"content-length")
        assert not lower.startswith(b"x-llmobs-")
    kept = [h for h in headers if h in out]
    assert out == kept  # what survives keeps its order and bytes


# -- Date and Server: singleton fields, relayed from upstream, added only when missing ------


def raw_headers(url: str, path: str, method: str = "GET", body: bytes | None = None) -> list[tuple[str, str]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        return [(k.lower(), v) for k, v in response.getheaders()]
    finally:
        conn.close()


def only(headers: list[tuple[str, str]], name: str) -> str:
    values = [v for k, v in headers if k == name]
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


def test_the_upstreams_date_and_server_are_relayed_once(upstream: ServerThread, proxy: Proxied) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    direct = raw_headers(upstream.url, "/v1/chat/completions", "POST", body)
    proxied = raw_headers(proxy.url, "/v1/chat/completions", "POST", body)
    assert only(proxied, "server") == only(direct, "server") == "uvicorn"
    assert abs(parsedate_to_datetime(only(proxied, "date")) - parsedate_to_datetime(only(direct, "date"))).seconds < 5


def test_without_upstream_date_and_server_the_proxy_adds_one_of_each(make_proxy: Callable[..., Proxied]) -> None:
    async def bare(request: RawRequest, conn: Any) -> None:
        await conn.send(http_response(200, b"{}"))  # no date, no server

    with fault_upstream(bare) as server:
        proxy = make_proxy(server.url)
        headers = raw_headers(proxy.url, "/v1/models")
    assert only(headers, "server") == "llmobs"
    assert parsedate_to_datetime(only(headers, "date")).tzinfo is not None


def test_the_proxys_own_answers_carry_one_date_and_one_server(make_proxy: Callable[..., Proxied]) -> None:
    sock, port = refused_port()
    with sock:
        proxy = make_proxy(f"http://127.0.0.1:{port}")
        for path in ("/v1/models", "/metrics", "/healthz"):  # a 502 of its own, and the admin routes
            headers = raw_headers(proxy.url, path)
            only(headers, "date")
            assert only(headers, "server") in ("llmobs", "uvicorn")


def test_expect_is_never_forwarded() -> None:
    given_headers = [(b"expect", b"100-continue"), (b"Expect", b"100-Continue"), (b"x-ok", b"1")]
    assert hp.request_headers(given_headers) == [(b"x-ok", b"1")]


def test_expect_100_continue_does_not_hang_on_an_upstream_that_never_sends_100(
    make_proxy: Callable[..., Proxied],
) -> None:
    """Issue 10 item 5: the body is already read; forwarded, the header made a client wait for
    a 100 Continue this upstream never sends, until the read timeout."""

    async def plain(request: RawRequest, conn: Any) -> None:  # reads the body at once, never says 100
        await conn.send(http_response(200, b"{}"))

    with fault_upstream(plain) as server:
        proxy = make_proxy(server.url + "/v1", read_timeout=5)
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", proxy.server.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\n"
                b"content-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
            )
            answer = b""
            while b"HTTP/1.1 200" not in answer:
                data = sock.recv(4096)
                assert data, answer
                answer += data
        assert time.monotonic() - began < 2
        assert server.requests[0].header("expect") is None and server.requests[0].body == b"{}"


def test_a_configured_key_with_control_characters_gets_400_and_reaches_no_upstream(
    make_proxy: Callable[..., Proxied],
) -> None:
    with fault_upstream(lambda request, conn: conn.send(http_response(200, b"{}"))) as server:
        proxy = make_proxy(server.url + "/v1", upstream_api_key="sk-bad\r\nx-smuggled: 1")
        with socket.create_connection(("127.0.0.1", proxy.server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n{}")
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400") and b'"invalid_header"' in answer and b"sk-bad" not in answer
        assert server.requests == []
        assert proxy.total("llmobs_requests_total", outcome="rejected", status_code="400") == 1
