"""The upstream client on its own: bytes as sent, peek and replay, pooling, and each failure mapped."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from fault_upstream import RawRequest, fault_upstream, http_response, refused_port, unaccepting_port
from llmobs.proxy.upstream import (
    Timeouts,
    Upstream,
    UpstreamBadResponse,
    UpstreamBroken,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
)

T = TypeVar("T")


QUICK = Timeouts(1.0, 1.0)


def run(url: str, body: Callable[[Upstream], Awaitable[T]], timeouts: Timeouts = QUICK) -> T:
    async def main() -> T:
        upstream = Upstream(url, timeouts=timeouts)
        await upstream.open()
        try:
            return await body(upstream)
        finally:
            await upstream.close()

    return asyncio.run(main())


async def read_all(resp: UpstreamResponse) -> bytes:
    """The whole body; the connection goes back to the pool, or is dropped if the body broke."""
    out = b""
    try:
        async for chunk in resp.chunks():
            out += chunk
    except BaseException:
        resp.close()
        raise
    resp.release()
    return out


def test_the_body_comes_back_as_sent_still_compressed_and_the_connection_is_reused() -> None:
    packed = gzip.compress(b'{"ok": true}')

    async def script(request: RawRequest, conn: Any) -> None:
        await conn.send(http_response(200, packed, [("content-encoding", "gzip")]))

    async def two(upstream: Upstream) -> list[bytes]:
        bodies = []
        for _ in range(2):
            resp = await upstream.send("POST", "/v1/x?a=1", [("x-test", "1")], b"{}")
            assert resp.status == 200 and (b"content-encoding", b"gzip") in resp.headers
            bodies.append(await read_all(resp))
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
