"""The hand-written HTTP/1.1 client: header bytes verbatim, the pool and its stale-connection
rule, backpressure, one read-timeout timer per connection, and TLS."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fault_upstream import (
    Conn,
    RawRequest,
    chunked,
    fault_upstream,
    http_response,
    read_all,
    sse_head,
    unaccepting_port,
)
from llmobs.proxy.h1client import PROBATION, H1Upstream
from llmobs.proxy.h1connection import HIGH_WATER
from llmobs.proxy.upstream import Timeouts, UnsendableHeader, UpstreamTimeout, UpstreamUnreachable

T = TypeVar("T")
QUICK = Timeouts(1.0, 1.0)


def run(url: str, body: Callable[[H1Upstream], Awaitable[T]], timeouts: Timeouts = QUICK, **options: Any) -> T:
    """`body` on a new pool; the upstream known to keep connections open, unless `keeps_open` says."""
    options.setdefault("keeps_open", True)

    async def main() -> T:
        upstream = H1Upstream(url, timeouts=timeouts, **options)
        await upstream.open()
        try:
            return await body(upstream)
        finally:
            await upstream.close()

    return asyncio.run(main())


async def ok(request: RawRequest, conn: Conn) -> None:
    await conn.send(http_response(200, b"{}"))


# --- bytes as given -----------------------------------------------------------------------


def test_header_bytes_that_are_not_utf8_arrive_unchanged() -> None:
    # aiohttp takes str and writes UTF-8, so latin-1 "caf\xe9" reached upstreams as "caf\xc3\xa9".
    sent = [(b"X-Title", b"caf\xe9"), (b"x-raw", b"\x80\xff obs-text"), (b"x-utf8", "東京".encode())]

    async def send(upstream: H1Upstream) -> bytes:
        return await read_all(await upstream.send("POST", "/v1/x", sent, b"{}"))

    with fault_upstream(ok) as server:
        run(server.url, send)
        head = server.requests[0].head
    for name, value in sent:
        assert name + b": " + value + b"\r\n" in head


def test_non_utf8_header_bytes_cross_the_proxy_unchanged(make_proxy: Callable[..., Any]) -> None:
    with fault_upstream(ok) as server:
        proxy = make_proxy(server.url + "/v1")
        with socket.create_connection(("127.0.0.1", proxy.server.port), timeout=5) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\nx-title: caf\xe9\r\n\r\n{}"
            )
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert b"x-title: caf\xe9\r\n" in server.requests[0].head


@pytest.mark.parametrize("header", [(b"x-key", b"a\r\nx-smuggled: 1"), (b"x-nul", b"a\x00b"), (b"x\nname", b"v")])
def test_a_header_with_control_characters_is_refused_where_it_is_written(header: tuple[bytes, bytes]) -> None:
    async def send(upstream: H1Upstream) -> None:
        with pytest.raises(UnsendableHeader) as refused:
            await upstream.send("POST", "/", [(b"x-ok", b"1"), header], b"{}")
        assert refused.value.name == header[0] and header[1] not in str(refused.value).encode()  # never the value

    with fault_upstream(ok) as server:
        run(server.url, send)
        assert server.connections == 0 and server.requests == []  # not a byte went out


# --- the pool -----------------------------------------------------------------------------


def second_request_on_a_connection_is_dropped() -> tuple[Callable[[RawRequest, Conn], Awaitable[None]], list[str]]:
    """A script whose connections each answer once, then close without a word: a stale
    pooled connection, as when the server timed it out just as the client reused it."""
    served: dict[int, int] = {}
    seen: list[str] = []

    async def script(request: RawRequest, conn: Conn) -> None:
        seen.append(request.method)
        served[id(conn)] = served.get(id(conn), 0) + 1
        if served[id(conn)] == 1:
            await conn.send(http_response(200, b"{}"))
        else:
            conn.close()

    return script, seen


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_a_stale_pooled_connection_is_retried_once_on_a_fresh_one_for_idempotent_methods(method: str) -> None:
    script, seen = second_request_on_a_connection_is_dropped()

    async def twice(upstream: H1Upstream) -> list[int]:
        statuses = []
        for _ in range(2):
            resp = await upstream.send(method, "/", [], b"")
            await read_all(resp)
            statuses.append(resp.status)
        return statuses

    with fault_upstream(script) as server:
        assert run(server.url, twice) == [200, 200]
        assert server.connections == 2 and seen == [method] * 3  # the second went twice


def test_a_post_on_a_stale_connection_is_never_sent_twice() -> None:
    script, seen = second_request_on_a_connection_is_dropped()

    async def twice(upstream: H1Upstream) -> None:
        await read_all(await upstream.send("POST", "/", [], b"{}"))
        await upstream.send("POST", "/", [], b"{}")

    with fault_upstream(script) as server:
        with pytest.raises(UpstreamUnreachable, match="closed the connection"):
            run(server.url, twice)
        assert server.connections == 1 and seen == ["POST", "POST"]  # it may have been acted on


def test_a_new_connection_that_fails_is_not_retried() -> None:
    async def drop(request: RawRequest, conn: Conn) -> None:
        conn.close()

    with fault_upstream(drop) as server:
        with pytest.raises(UpstreamUnreachable, match="closed the connection"):
            run(server.url, lambda u: u.send("GET", "/", [], b""))
        assert len(server.requests) == 1


def test_a_connection_the_server_closed_is_never_reused() -> None:
    async def answer_then_close(request: RawRequest, conn: Conn) -> None:
        await conn.send(http_response(200, b"{}"))  # no "connection: close": the FIN says it
        conn.close()

    async def two_posts(upstream: H1Upstream) -> int:
        await read_all(await upstream.send("POST", "/", [], b"{}"))
        await asyncio.sleep(0.1)  # the FIN arrives while the connection sits in the pool
        assert upstream.pooled_peers() == set()
        resp = await upstream.send("POST", "/", [], b"{}")
        await read_all(resp)
        return resp.status

    with fault_upstream(answer_then_close) as server:
        assert run(server.url, two_posts) == 200
        assert server.connections == 2


async def llama_server(request: RawRequest, conn: Conn) -> None:
    """As llama-server (cpp-httplib) does: a stream announced keep-alive, then, a moment after
    its last chunk, a shutdown (FIN) and 100 ms of reading and dropping what arrives; a plain
    answer keeps its connection."""
    if request.method == "GET":
        await conn.send(http_response(200, b"{}", [("keep-alive", "timeout=5, max=100")]))
        return
    head = sse_head(chunked=True).replace(b"\r\n\r\n", b"\r\nkeep-alive: timeout=5, max=100\r\n\r\n")
    await conn.send(head + chunked(b"data: {}\n\n") + b"0\r\n\r\n")
    await asyncio.sleep(0.02)  # the serving thread, between its last write and its shutdown
    conn.writer.write_eof()
    try:
        async with asyncio.timeout(0.1):
            while await conn.reader.read(65536):
                pass  # read and dropped: never answered, never reset
    except TimeoutError:
        pass
    conn.close()


def test_a_connection_is_reused_only_once_the_upstream_showed_it_keeps_that_kind_open() -> None:
    async def traffic(upstream: H1Upstream) -> list[int]:
        statuses = []
        for _ in range(4):  # streams, each in quick succession: none lands in a draining connection
            resp = await upstream.send("POST", "/", [], b"{}")
            statuses.append(resp.status)
            await read_all(resp)
        for _ in range(2):  # plain answers: the first is on probation, the second gets a new connection
            resp = await upstream.send("GET", "/", [], b"")
            statuses.append(resp.status)
            await read_all(resp)
        assert upstream.pooled_peers() == set()
        await asyncio.sleep(PROBATION + 0.1)
        assert len(upstream.pooled_peers()) == 1  # kept open all along: now it is pooled
        for _ in range(3):
            resp = await upstream.send("GET", "/", [], b"")
            statuses.append(resp.status)
            await read_all(resp)
        return statuses

    with fault_upstream(llama_server) as server:
        assert run(server.url, traffic, keeps_open=None) == [200] * 9
        # 4 streams on 4 connections, 2 plain answers on 2 more, then the pooled one, reused.
        assert server.connections == 6 and len(server.requests) == 9


def test_without_the_probation_a_request_lands_in_a_draining_connection_and_is_lost() -> None:
    """What the probation prevents: the same upstream, known (wrongly) to keep streams open."""

    async def two_streams(upstream: H1Upstream) -> None:
        await read_all(await upstream.send("POST", "/", [], b"{}"))
        await upstream.send("POST", "/", [], b"{}")

    with fault_upstream(llama_server) as server:
        with pytest.raises(UpstreamUnreachable, match="closed the connection"):
            run(server.url, two_streams, keeps_open=True)
        assert server.connections == 1 and len(server.requests) == 1  # the second was drained unread


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}",
    ],
)
def test_no_keep_alive_means_a_new_connection(head: bytes) -> None:
    async def script(request: RawRequest, conn: Conn) -> None:
        await conn.send(head)

    async def twice(upstream: H1Upstream) -> None:
        for _ in range(2):
            await read_all(await upstream.send("GET", "/", [], b""))

    with fault_upstream(script) as server:
        run(server.url, twice)
        assert server.connections == 2


def test_a_response_not_read_to_its_end_is_not_pooled() -> None:
    async def big(request: RawRequest, conn: Conn) -> None:
        await conn.send(http_response(200, b"x" * 1_000_000))

    async def peek_and_release(upstream: H1Upstream) -> None:
        for _ in range(2):
            resp = await upstream.send("GET", "/", [], b"")
            await resp.peek(10)
            resp.release()
            assert upstream.connections_in_use() == 0

    with fault_upstream(big) as server:
        run(server.url, peek_and_release)
        assert server.connections == 2


def test_a_body_that_ended_while_reading_was_paused_still_sees_the_server_close() -> None:
    async def big_then_close(request: RawRequest, conn: Conn) -> None:
        body = http_response(200, b"z" * (HIGH_WATER + 1000))
        await conn.send(body[:-1000])  # up to the mark: reading goes on
        await asyncio.sleep(0.1)
        await conn.send(body[-1000:])  # past it: reading pauses, and the body ends, in one read
        await asyncio.sleep(0.3)
        conn.close()

    async def unread(upstream: H1Upstream) -> set[tuple[str, int]]:
        resp = await upstream.send("GET", "/", [], b"")
        await asyncio.sleep(0.2)  # the whole body arrives, unread
        assert resp.buffered == HIGH_WATER + 1000
        resp.release()  # complete: pooled, and reading again so that the close is seen
        assert len(upstream.pooled_peers()) == 1
        await asyncio.sleep(0.5)
        return upstream.pooled_peers()

    with fault_upstream(big_then_close) as server:
        assert run(server.url, unread) == set()


def test_connections_are_bounded_and_requests_wait_for_a_free_one() -> None:
    async def slow(request: RawRequest, conn: Conn) -> None:
        await asyncio.sleep(0.05)
        await conn.send(http_response(200, b"{}"))

    async def many(upstream: H1Upstream) -> list[int]:
        async def one() -> int:
            resp = await upstream.send("GET", "/", [], b"")
            await read_all(resp)
            return resp.status

        return list(await asyncio.gather(*(one() for _ in range(10))))

    with fault_upstream(slow) as server:
        assert run(server.url, many, max_connections=2) == [200] * 10
        assert server.connections == 2 and len(server.requests) == 10


def test_idle_connections_are_closed_after_the_keepalive_time() -> None:
    async def wait_idle(upstream: H1Upstream) -> None:
        await read_all(await upstream.send("GET", "/", [], b""))
        assert len(upstream.pooled_peers()) == 1
        await asyncio.sleep(0.5)
        assert upstream.pooled_peers() == set()

    with fault_upstream(ok) as server:
        run(server.url, wait_idle, keepalive=0.2)
        server.wait_for(lambda: server.peer_closed == 1)


def test_an_address_that_never_answers_costs_a_moment_not_the_connect_timeout() -> None:
    held, dead = unaccepting_port()  # SYNs dropped, as on a black-holed IPv6 route

    async def get(upstream: H1Upstream) -> float:
        async def two_addresses() -> list[Any]:
            tcp = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
            return [(socket.AF_INET, *tcp, ("127.0.0.1", dead)), (socket.AF_INET, *tcp, ("127.0.0.1", server.port))]

        upstream._resolve = two_addresses  # type: ignore[method-assign]
        began = time.monotonic()
        await read_all(await upstream.send("GET", "/", [], b""))
        return time.monotonic() - began

    try:
        with fault_upstream(ok) as server:
            assert run(server.url, get, Timeouts(5.0, 5.0)) < 2.0
    finally:
        for sock in held:
            sock.close()


# --- reading ------------------------------------------------------------------------------


def test_a_slow_reader_keeps_the_clients_buffer_bounded() -> None:
    piece = b"y" * 16_384

    async def firehose(request: RawRequest, conn: Conn) -> None:
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n")
        while True:
            await conn.send(piece)

    async def stall(upstream: H1Upstream) -> tuple[int, int, int]:
        resp = await upstream.send("GET", "/", [], b"")
        await asyncio.sleep(0.5)  # read nothing: the upstream should be made to wait
        stalled = resp.buffered
        sent = server.sent
        await asyncio.sleep(0.3)
        got = 0
        async for chunk in resp.chunks():  # reading again resumes the flow
            got += len(chunk)
            if got > 4 * HIGH_WATER:
                break
        resp.close()
        return stalled, server.sent - sent, got

    with fault_upstream(firehose) as server:
        buffered, sent_while_stalled, got = run(server.url, stall, Timeouts(1.0, 5.0))
    assert 0 < buffered <= HIGH_WATER + 256 * 1024  # at most one read past the mark
    assert sent_while_stalled < 4 * 2**20  # only what kernel buffers still took
    assert got > 4 * HIGH_WATER


def test_the_read_timeout_fires_with_one_timer_per_connection_not_one_per_read() -> None:
    async def drip_then_hang(request: RawRequest, conn: Conn) -> None:
        await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(200):
            await conn.send(b"1\r\nx\r\n")
            await asyncio.sleep(0.002)
        await conn.hang()

    timers: list[str] = []

    async def read(upstream: H1Upstream) -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        call_at = loop.call_at

        def counted(when: float, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            timers.append(getattr(callback, "__qualname__", "?"))
            return call_at(when, callback, *args, **kwargs)

        loop.call_at = counted  # type: ignore[method-assign]
        got = 0
        resp = await upstream.send("GET", "/", [], b"")
        try:
            async for chunk in resp.chunks():
                got += len(chunk)
                last = time.monotonic()
        except UpstreamTimeout:
            resp.close()
            return got, time.monotonic() - last
        raise AssertionError("no timeout")

    with fault_upstream(drip_then_hang) as server:
        got, silence = run(server.url, read, Timeouts(1.0, 0.3))
        server.wait_for(lambda: server.peer_closed == 1)  # and the connection was dropped
    assert got == 200
    assert 0.25 < silence < 1.0
    mine = [name for name in timers if name.startswith("Connection.")]
    assert 1 <= len(mine) <= 4, mine  # 200 reads, a handful of timers


def test_a_total_timeout_ends_a_response_that_keeps_coming() -> None:
    async def endless(request: RawRequest, conn: Conn) -> None:
        await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            await conn.send(b"1\r\nx\r\n")
            await asyncio.sleep(0.01)

    async def read(upstream: H1Upstream) -> bytes:
        return await read_all(await upstream.send("GET", "/", [], b""))

    began = time.monotonic()
    with fault_upstream(endless) as server, pytest.raises(UpstreamTimeout):
        run(server.url, read, Timeouts(1.0, 5.0, 0.3))
    assert time.monotonic() - began < 2


# --- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for localhost and 127.0.0.1 (made with the openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    yield cert, key


def test_tls_with_sni_and_a_verified_certificate(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,misc,func-returns-value]
    trusted = ssl.create_default_context(cafile=str(cert))  # the test's CA, injected; nothing disabled

    async def get(upstream: H1Upstream) -> tuple[int, bytes]:
        resp = await upstream.send("GET", "/", [], b"")
        return resp.status, await read_all(resp)

    with fault_upstream(ok, tls=server_ctx) as server:
        url = f"https://localhost:{server.port}"  # a name: resolved, sent as SNI, checked against the cert
        assert run(url, get, ssl_context=trusted) == (200, b"{}")
        assert names == ["localhost"]
        assert server.requests[0].header("host") == f"localhost:{server.port}"
        with pytest.raises(UpstreamUnreachable, match="cannot connect"):
            run(url, get)  # the default context verifies: a self-signed certificate is refused
