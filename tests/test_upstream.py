"""The upstream client on its own, through its surface (upstream.Client): bytes as sent, peek and
replay, pooling, and each failure mapped."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from fault_upstream import RawRequest, fault_upstream, http_response, read_all, refused_port, unaccepting_port
from llmobs.proxy.h1client import PROBATION, H1Upstream
from llmobs.proxy.upstream import (
    Client,
    Timeouts,
    UpstreamBadResponse,
    UpstreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
)

T = TypeVar("T")
Upstream = Client

QUICK = Timeouts(1.0, 1.0)


def run(url: str, body: Callable[[Upstream], Awaitable[T]], timeouts: Timeouts = QUICK) -> T:
    async def main() -> T:
        upstream: Client = H1Upstream(url, timeouts=timeouts)
        await upstream.open()
        try:
            return await body(upstream)
        finally:
            await upstream.close()

    return asyncio.run(main())


def test_the_body_comes_back_as_sent_still_compressed_and_the_connection_is_reused() -> None:
    packed = gzip.compress(b'{"ok": true}')

    async def script(request: RawRequest, conn: Any) -> None:
        await conn.send(http_response(200, packed, [("content-encoding", "gzip")]))

    async def two(upstream: Upstream) -> list[bytes]:
        bodies = []
        for _ in range(2):
            resp = await upstream.send("POST", "/v1/x?a=1", [(b"x-test", b"1")], b"{}")
            assert resp.status == 200 and (b"content-encoding", b"gzip") in resp.headers
            bodies.append(await read_all(resp))
            await asyncio.sleep(PROBATION + 0.05)  # h1 reuses a connection once the upstream kept one open
        return bodies

    with fault_upstream(script) as server:
        assert run(server.url + "/v1", two) == [packed, packed]
        assert server.connections == 1  # released to the pool, used again
        assert server.requests[0].target == "/v1/x?a=1" and server.requests[0].header("x-test") == "1"


def test_peeked_bytes_are_handed_out_again_first() -> None:
    body = b"x" * 5000

    async def script(request: RawRequest, conn: Any) -> None:
        await conn.send(http_response(400, body))

    async def peek_then_read(upstream: Upstream) -> tuple[bytes, bytes]:
        resp = await upstream.send("POST", "/", [], b"")
        head = await resp.peek(10)
        return head, await read_all(resp)

    with fault_upstream(script) as server:
        head, whole = run(server.url, peek_then_read)
    assert body.startswith(head) and len(head) >= 10
    assert whole == body


def test_a_refused_connection_is_unreachable() -> None:
    sock, port = refused_port()
    with sock, pytest.raises(UpstreamUnreachable, match=f"127.0.0.1:{port}"):
        run(f"http://127.0.0.1:{port}", lambda u: u.send("GET", "/", [], b""))


def test_a_connect_that_never_completes_times_out() -> None:
    held, port = unaccepting_port()
    try:
        with pytest.raises(UpstreamTimeout):
            run(f"http://127.0.0.1:{port}", lambda u: u.send("GET", "/", [], b""), Timeouts(0.3, 1.0))
    finally:
        for sock in held:
            sock.close()


def test_silence_before_the_head_times_out() -> None:
    async def script(request: RawRequest, conn: Any) -> None:
        await conn.hang()

    with fault_upstream(script) as server, pytest.raises(UpstreamTimeout):
        run(server.url, lambda u: u.send("GET", "/", [], b""), Timeouts(1.0, 0.3))


def test_a_malformed_head_is_a_bad_response() -> None:
    async def script(request: RawRequest, conn: Any) -> None:
        await conn.send(b"HTTP/1.1 abc nonsense\r\n\r\n")
        conn.close()

    with fault_upstream(script) as server, pytest.raises(UpstreamBadResponse):
        run(server.url, lambda u: u.send("GET", "/", [], b""))


def test_a_body_cut_short_is_broken_and_silence_mid_body_times_out() -> None:
    async def short(request: RawRequest, conn: Any) -> None:
        await conn.send(http_response(200, b"half", content_length=100))
        conn.reset()

    async def silent(request: RawRequest, conn: Any) -> None:
        await conn.send(http_response(200, b"half", content_length=100))
        await conn.hang()

    async def read(upstream: Upstream) -> bytes:
        return await read_all(await upstream.send("GET", "/", [], b""))

    with fault_upstream(short) as server, pytest.raises(UpstreamBroken):
        run(server.url, read)
    with fault_upstream(silent) as server, pytest.raises(UpstreamTimeout):
        run(server.url, read, Timeouts(1.0, 0.3))


# --- framing, for both clients alike ------------------------------------------------------


def fetch(url: str, method: str = "GET", timeouts: Timeouts = QUICK) -> tuple[int, bytes]:
    async def one(upstream: Upstream) -> tuple[int, bytes]:
        resp = await upstream.send(method, "/", [], b"")
        return resp.status, await read_all(resp)

    return run(url, one, timeouts)


def test_interim_1xx_responses_are_skipped() -> None:
    async def script(request: RawRequest, conn: Any) -> None:
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n")
        await conn.send(http_response(200, b"after"))

    with fault_upstream(script) as server:
        assert fetch(server.url) == (200, b"after")


@pytest.mark.parametrize(
    ("method", "status", "framing"),
    [("HEAD", 200, "content-length: 5"), ("GET", 204, "x: y"), ("GET", 304, "content-length: 5")],
)
def test_responses_without_a_body(method: str, status: int, framing: str) -> None:
    async def script(request: RawRequest, conn: Any) -> None:
        await conn.send(f"HTTP/1.1 {status} X\r\n{framing}\r\n\r\n".encode())

    with fault_upstream(script) as server:
        assert fetch(server.url, method) == (status, b"")


def test_chunked_and_close_delimited_bodies_come_back_as_sent() -> None:
    async def script(request: RawRequest, conn: Any) -> None:
        if request.target == "/":
            await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        else:
            await conn.send(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
            conn.close()

    async def both(upstream: Upstream) -> list[bytes]:
        out = []
        for target in ("/", "/close"):
            out.append(await read_all(await upstream.send("GET", target, [], b"")))
        return out

    with fault_upstream(script) as server:
        assert run(server.url, both) == [b"abcde", b"until the end"]


def test_a_huge_response_head_is_a_bad_response() -> None:
    async def script(request: RawRequest, conn: Any) -> None:
        await conn.send(b"HTTP/1.1 200 OK\r\nx-huge: " + b"a" * 100_000 + b"\r\ncontent-length: 0\r\n\r\n")

    with fault_upstream(script) as server, pytest.raises(UpstreamBadResponse) as caught:
        fetch(server.url)
    assert "aaaa" not in str(caught.value)  # never quotes upstream bytes


def test_request_head_has_host_and_content_length_and_nothing_added() -> None:
    async def script(request: RawRequest, conn: Any) -> None:
        await conn.send(http_response(200, b"{}"))

    async def post(upstream: Upstream) -> bytes:
        return await read_all(await upstream.send("POST", "/v1/x", [(b"X-Case", b"Kept")], b"{}"))

    with fault_upstream(script) as server:
        run(server.url + "/v1", post)
        request = server.requests[0]
    names = sorted(name.lower() for name, _ in request.headers)
    assert names == ["content-length", "host", "x-case"]
    assert request.header("host") == f"127.0.0.1:{server.port}" and request.header("content-length") == "2"
    assert b"X-Case: Kept\r\n" in request.head  # the name's case as given
