"""Upstream and client faults on loopback: a faithful answer, the next request served, and
each request counted exactly once with the right outcome."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Proxied
from fault_upstream import (
    Conn,
    RawRequest,
    assert_quiet,
    chat_body,
    chat_chunks,
    chunked,
    fault_upstream,
    http_response,
    outcomes,
    refused_port,
    sse,
    sse_head,
    unaccepting_port,
)

MakeProxy = Callable[..., Proxied]
Fault = Callable[[RawRequest, Conn], Awaitable[None]]
MESSAGES = [{"role": "user", "content": "hi"}]
OK = http_response(200, chat_body())


def unless_ok(fault: Fault) -> Fault:
    """A script: model "ok" gets a normal answer, anything else gets `fault`."""

    async def script(request: RawRequest, conn: Conn) -> None:
        if request.body and request.json().get("model") == "ok":
            await conn.send(OK)
        else:
            await fault(request, conn)

    return script


def post(
    proxy: Proxied, model: str = "fault", *, stream: bool = False, timeout: float = 10, **extra: Any
) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, **({"stream": True} if stream else {}), **extra}
    with httpx.Client(timeout=timeout) as http:
        return http.post(proxy.base_url + "/chat/completions", json=body)


def post_broken(proxy: Proxied, **kwargs: Any) -> bytes:
    """POST expecting the response to break off; returns the bytes that did arrive."""
    received = b""
    body = {"model": "fault", "messages": MESSAGES, **kwargs}
    with httpx.Client(timeout=10) as http:
        with pytest.raises(httpx.TransportError):
            with http.stream("POST", proxy.base_url + "/chat/completions", json=body) as response:
                for chunk in response.iter_raw():
                    received += chunk
    return received


def serves_next(proxy: Proxied) -> None:
    """The proxy answers the next request normally, and counts it once as completed."""
    before = outcomes(proxy).get(("completed", "200"), 0)
    response = post(proxy, "ok")
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 5
    assert outcomes(proxy).get(("completed", "200"), 0) == before + 1


def proxy_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"].startswith("llmobs proxy: ")
    assert set(error) >= {"message", "type", "code"}


# --- the upstream cannot be reached, or says nothing ---------------------------------------


def test_refused_connection_is_a_502_counted_as_unreachable(make_proxy: MakeProxy) -> None:
    sock, port = refused_port()
    with sock:
        proxy = make_proxy(f"http://127.0.0.1:{port}/v1")
        for _ in range(2):  # the proxy keeps answering
            proxy_error(post(proxy), 502, "upstream_unreachable")
    assert outcomes(proxy) == {("upstream_unreachable", "502"): 2}
    assert_quiet(proxy)


def test_connect_timeout_is_a_504(make_proxy: MakeProxy) -> None:
    held, port = unaccepting_port()
    try:
        proxy = make_proxy(f"http://127.0.0.1:{port}/v1", connect_timeout=0.3)
        began = time.monotonic()
        proxy_error(post(proxy), 504, "upstream_timeout")
        assert time.monotonic() - began < 3
    finally:
        for sock in held:
            sock.close()
    assert outcomes(proxy) == {("upstream_timeout", "504"): 1}
    assert_quiet(proxy)


def test_upstream_that_accepts_and_never_answers_hits_the_read_timeout(make_proxy: MakeProxy) -> None:
    with fault_upstream(unless_ok(lambda request, conn: conn.hang())) as upstream:
        proxy = make_proxy(upstream.url + "/v1", read_timeout=0.3)
        began = time.monotonic()
        proxy_error(post(proxy), 504, "upstream_timeout")
        assert time.monotonic() - began < 3
        upstream.wait_for(lambda: upstream.peer_closed == 1)  # the proxy hung up on it
        assert outcomes(proxy) == {("upstream_timeout", "504"): 1}
        serves_next(proxy)
        assert_quiet(proxy)


def test_total_timeout_before_the_answer_is_a_504(make_proxy: MakeProxy) -> None:
    async def slow_drip(request: RawRequest, conn: Conn) -> None:
        await conn.send(b"HTTP/1.1 200 OK\r\n")
        while True:  # header lines keep coming, so only the total timeout can fire
            await conn.send(b"x-slow: header\r\n")
            await asyncio.sleep(0.05)

    with fault_upstream(unless_ok(slow_drip)) as upstream:
        proxy = make_proxy(upstream.url + "/v1", read_timeout=5, total_timeout=0.5)
        proxy_error(post(proxy), 504, "upstream_timeout")
        assert outcomes(proxy) == {("upstream_timeout", "504"): 1}
        serves_next(proxy)


def test_total_timeout_during_a_stream_interrupts_it(make_proxy: MakeProxy) -> None:
    async def endless(request: RawRequest, conn: Conn) -> None:
        await conn.send(sse_head())
        for chunk in chat_chunks(tokens=10_000):
            await conn.send(sse([chunk], done=False))
            await asyncio.sleep(0.02)

    with fault_upstream(unless_ok(endless)) as upstream:
        proxy = make_proxy(upstream.url + "/v1", read_timeout=5, total_timeout=0.5)
        began = time.monotonic()
        received = post_broken(proxy, stream=True)
        assert time.monotonic() - began < 3
        assert received.startswith(b"data: {") and b"t0 " in received
        assert outcomes(proxy) == {("stream_interrupted", "200"): 1}
        assert proxy.total("llmobs_usage_missing_total") == 1
        assert proxy.total("llmobs_estimated_tokens_total") > 0  # partial tokens, kept apart
        serves_next(proxy)
        assert_quiet(proxy)


# --- the upstream answers badly -------------------------------------------------------------


def test_slow_byte_by_byte_stream_reaches_the_client_exactly_and_is_counted(make_proxy: MakeProxy) -> None:
    stream = sse(chat_chunks(tokens=4, prompt=7))

    async def trickle(request: RawRequest, conn: Conn) -> None:
        await conn.send(sse_head())
        first = len(upstream.requests) == 1
        await conn.trickle(stream, delay=0.0005 if first else 0.0, step=1 if first else 7)
        conn.close()

    with fault_upstream(unless_ok(trickle)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        asked = post(proxy, stream=True, stream_options={"include_usage": True})
        assert asked.content == stream  # byte for byte
        cut = post(proxy, stream=True)  # the proxy asked for usage on the client's behalf
        assert cut.content == sse(chat_chunks(tokens=4, usage=False))
        assert upstream.requests[1].json()["stream_options"] == {"include_usage": True}
        assert outcomes(proxy) == {("completed", "200"): 2}
        assert proxy.total("llmobs_tokens_total", type="input") == 14
        assert proxy.total("llmobs_tokens_total", type="output") == 8
        assert proxy.total("llmobs_time_to_first_token_seconds_count") == 2
        assert proxy.total("llmobs_finish_reasons_total", reason="stop") == 2


def test_slow_byte_by_byte_json_body(make_proxy: MakeProxy) -> None:
    async def trickle(request: RawRequest, conn: Conn) -> None:
        await conn.trickle(OK, delay=0.0005, step=3)

    with fault_upstream(unless_ok(trickle)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        response = post(proxy)
        assert response.content == chat_body()
        assert outcomes(proxy) == {("completed", "200"): 1}
        assert proxy.total("llmobs_tokens_total", type="output") == 5


def test_reset_mid_stream_interrupts_the_client_and_counts_partial_tokens(make_proxy: MakeProxy) -> None:
    chunks = chat_chunks(tokens=6)

    async def reset(request: RawRequest, conn: Conn) -> None:
        await conn.send(sse_head(chunked=True) + chunked(sse(chunks[:4], done=False)))
        await asyncio.sleep(0.1)
        conn.reset()

    with fault_upstream(unless_ok(reset)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        received = post_broken(proxy, stream=True)
        assert received == sse(chunks[:4], done=False)  # everything sent before the reset
        assert outcomes(proxy) == {("stream_interrupted", "200"): 1}
        assert proxy.total("llmobs_usage_missing_total") == 1
        assert proxy.total("llmobs_estimated_tokens_total", type="output") == 3  # t0, t1, t2
        serves_next(proxy)
        assert_quiet(proxy)


def test_reset_mid_json_body_interrupts_the_client(make_proxy: MakeProxy) -> None:
    async def reset(request: RawRequest, conn: Conn) -> None:
        await conn.send(OK[: len(OK) - 20])
        await asyncio.sleep(0.1)
        conn.reset()

    with fault_upstream(unless_ok(reset)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        received = post_broken(proxy)
        assert chat_body().startswith(received) and len(received) < len(chat_body())
        assert outcomes(proxy) == {("stream_interrupted", "200"): 1}
        serves_next(proxy)


def test_reset_before_answering_is_a_502(make_proxy: MakeProxy) -> None:
    async def reset(request: RawRequest, conn: Conn) -> None:
        conn.reset()

    with fault_upstream(unless_ok(reset)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        proxy_error(post(proxy), 502, "upstream_unreachable")
        assert outcomes(proxy) == {("upstream_unreachable", "502"): 1}
        serves_next(proxy)


def test_truncated_body_then_close_interrupts_the_client(make_proxy: MakeProxy) -> None:
    async def truncated(request: RawRequest, conn: Conn) -> None:
        await conn.send(http_response(200, chat_body(), content_length=len(chat_body()) + 50))
        conn.close()

    with fault_upstream(unless_ok(truncated)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        received = post_broken(proxy)
        assert received == chat_body()
        assert outcomes(proxy) == {("stream_interrupted", "200"): 1}
        serves_next(proxy)


def test_content_length_longer_than_the_body_times_out_as_interrupted(make_proxy: MakeProxy) -> None:
    async def lies(request: RawRequest, conn: Conn) -> None:
        await conn.send(http_response(200, chat_body(), content_length=len(chat_body()) + 50))
        await conn.hang()

    with fault_upstream(unless_ok(lies)) as upstream:
        proxy = make_proxy(upstream.url + "/v1", read_timeout=0.3)
        assert post_broken(proxy) == chat_body()
        assert outcomes(proxy) == {("stream_interrupted", "200"): 1}
        upstream.wait_for(lambda: upstream.peer_closed == 1)
        serves_next(proxy)
        assert_quiet(proxy)


def test_content_length_shorter_than_the_body_is_a_bad_response(make_proxy: MakeProxy) -> None:
    async def lies(request: RawRequest, conn: Conn) -> None:
        await conn.send(http_response(200, chat_body(), content_length=10))

    with fault_upstream(unless_ok(lies)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        response = post(proxy)
        # Either the first bytes (as declared) or a clear 502; never the junk as a new response.
        if response.status_code == 200:
            assert response.content == chat_body()[:10]
        else:
            proxy_error(response, 502, "upstream_bad_response")
        assert sum(outcomes(proxy).values()) == 1
        serves_next(proxy)  # the poisoned connection was not reused


@pytest.mark.parametrize(
    "head", [b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\nx-bad: a\rb\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n"]
)
def test_garbage_response_head_is_a_502_bad_response(make_proxy: MakeProxy, head: bytes) -> None:
    async def garbage(request: RawRequest, conn: Conn) -> None:
        await conn.send(head)
        conn.close()

    with fault_upstream(unless_ok(garbage)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        proxy_error(post(proxy), 502, "upstream_bad_response")
        assert outcomes(proxy) == {("upstream_error", "502"): 1}
        serves_next(proxy)


def test_invalid_json_body_is_relayed_verbatim_and_counted_as_missing_usage(make_proxy: MakeProxy) -> None:
    junk = b'{"id": "x", "usage": {"prompt_tokens": 3,'  # cut short, but the length is right

    async def invalid(request: RawRequest, conn: Conn) -> None:
        await conn.send(http_response(200, junk))

    with fault_upstream(unless_ok(invalid)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        assert post(proxy).content == junk
        assert outcomes(proxy) == {("completed", "200"): 1}
        assert proxy.total("llmobs_usage_missing_total") == 1
        assert proxy.total("llmobs_tokens_total") == 0
        serves_next(proxy)


def test_malformed_sse_is_relayed_verbatim_and_what_is_valid_is_counted(make_proxy: MakeProxy) -> None:
    chunks = chat_chunks(tokens=3)
    stream = (
        b": keep-alive comment\n\n"
        + b"data: {not json\n\n"
        + b"data: [1, 2]\n\n"
        + b"event: weird\n\n"
        + b"garbage line without colon\n"
        + sse(chunks[:2], done=False)
        + b"data: \xff\xfe\n\n"
        + sse(chunks[2:], eol=b"\r\n")
    )

    async def malformed(request: RawRequest, conn: Conn) -> None:
        await conn.send(sse_head() + stream)
        conn.close()

    with fault_upstream(unless_ok(malformed)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        assert post(proxy, stream=True, stream_options={"include_usage": True}).content == stream
        assert outcomes(proxy) == {("completed", "200"): 1}
        assert proxy.total("llmobs_tokens_total", type="output") == 3
        assert proxy.total("llmobs_telemetry_errors_total") == 0
        serves_next(proxy)


def test_sse_without_event_boundaries_is_relayed_as_it_comes_not_held_back(make_proxy: MakeProxy) -> None:
    """A stream with no blank line never completes an event; its bytes must still flow."""
    released = threading.Event()
    line = b"data: " + b"x" * 60_000 + b"\n"

    async def no_boundaries(request: RawRequest, conn: Conn) -> None:
        await conn.send(sse_head())
        for _ in range(40):  # 2.4 MB without a blank line
            await conn.send(line)
        while not released.is_set():
            await asyncio.sleep(0.01)
        conn.close()

    with fault_upstream(unless_ok(no_boundaries)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        received = 0
        body = {"model": "fault", "messages": MESSAGES, "stream": True}  # usage is injected: the cut path
        with httpx.Client(timeout=10) as http:
            with http.stream("POST", proxy.base_url + "/chat/completions", json=body) as response:
                for chunk in response.iter_raw():
                    received += len(chunk)
                    if received >= 40 * len(line):
                        released.set()
        assert received == 40 * len(line)
        assert outcomes(proxy) == {("stream_interrupted", "200"): 1}  # no [DONE]
        serves_next(proxy)


def test_corrupt_gzip_body_is_relayed_as_sent_and_counted_as_missing_usage(make_proxy: MakeProxy) -> None:
    junk = b"\x1f\x8b\x08\x00garbage, not deflate"
    gz = gzip.compress(chat_body())

    async def corrupt(request: RawRequest, conn: Conn) -> None:
        body = gz if request.json()["model"] == "fine" else junk
        await conn.send(http_response(200, body, [("content-type", "application/json"), ("content-encoding", "gzip")]))

    with fault_upstream(unless_ok(corrupt)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        with httpx.Client(timeout=10) as http:
            for model, expected in (("fault", junk), ("fine", gz)):
                body = {"model": model, "messages": MESSAGES}
                with http.stream("POST", proxy.base_url + "/chat/completions", json=body) as response:
                    assert response.headers["content-encoding"] == "gzip"
                    assert b"".join(response.iter_raw()) == expected  # as sent, still compressed
        assert outcomes(proxy) == {("completed", "200"): 2}
        assert proxy.total("llmobs_usage_missing_total") == 1  # the corrupt one
        assert proxy.total("llmobs_tokens_total", type="output") == 5  # the fine one, decoded
        assert proxy.total("llmobs_telemetry_errors_total") == 0  # bad upstream bytes are not our failure


@pytest.mark.parametrize("status", [429, 500, 502, 503])
@pytest.mark.parametrize("with_body", [True, False])
def test_upstream_error_status_passes_through_untouched(make_proxy: MakeProxy, status: int, with_body: bool) -> None:
    body = json.dumps({"error": {"message": "slow down", "type": "x", "code": "rate"}}).encode() if with_body else b""
    headers = [("content-type", "application/json"), ("retry-after", "7"), ("x-request-id", "req-1")]

    async def error(request: RawRequest, conn: Conn) -> None:
        await conn.send(http_response(status, body, headers))

    with fault_upstream(unless_ok(error)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        for stream in (False, True):
            response = post(proxy, stream=stream)
            assert response.status_code == status and response.content == body
            assert response.headers["retry-after"] == "7" and response.headers["x-request-id"] == "req-1"
        assert outcomes(proxy) == {("upstream_error", str(status)): 2}
        assert proxy.total("llmobs_usage_missing_total") == 0
        serves_next(proxy)


def test_error_status_with_a_close_delimited_body(make_proxy: MakeProxy) -> None:
    async def error(request: RawRequest, conn: Conn) -> None:
        await conn.send(b"HTTP/1.1 503 Busy\r\nconnection: close\r\n\r\nupstream overloaded")
        conn.close()

    with fault_upstream(unless_ok(error)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        response = post(proxy)
        assert response.status_code == 503 and response.content == b"upstream overloaded"
        assert outcomes(proxy) == {("upstream_error", "503"): 1}
        serves_next(proxy)


def test_error_object_inside_a_stream(make_proxy: MakeProxy) -> None:
    chunks = chat_chunks(tokens=5)
    error = {"error": {"message": "overloaded", "type": "server_error", "code": "overloaded"}}
    stream = sse(chunks[:3] + [error], done=False)

    async def failing(request: RawRequest, conn: Conn) -> None:
        await conn.send(sse_head() + stream)
        conn.close()

    with fault_upstream(unless_ok(failing)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        assert post(proxy, stream=True).content == stream
        assert outcomes(proxy) == {("upstream_error", "200"): 1}
        serves_next(proxy)


# --- the client misbehaves ------------------------------------------------------------------


def raw_request(proxy: Proxied, body: dict[str, Any]) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", proxy.server.port), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock


def test_client_disconnect_before_the_upstream_answers(make_proxy: MakeProxy) -> None:
    with fault_upstream(unless_ok(lambda request, conn: conn.hang())) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        sock = raw_request(proxy, {"model": "fault", "messages": MESSAGES})
        upstream.wait_for(lambda: len(upstream.requests) == 1)
        sock.close()
        upstream.wait_for(lambda: upstream.peer_closed == 1)  # the upstream request was cancelled
        assert outcomes(proxy) == {("client_closed", "499"): 1}
        assert_quiet(proxy)
        serves_next(proxy)


def test_client_disconnect_while_sending_its_body(make_proxy: MakeProxy) -> None:
    with fault_upstream(unless_ok(lambda request, conn: conn.hang())) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        sock = socket.create_connection(("127.0.0.1", proxy.server.port), timeout=10)
        sock.sendall(b'POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{"model"')
        time.sleep(0.2)
        sock.close()
        proxy.settle()
        assert outcomes(proxy) == {("client_closed", "499"): 1}
        assert upstream.connections == 0  # nothing was sent upstream
        assert_quiet(proxy)
        serves_next(proxy)


def test_client_disconnect_mid_stream_cancels_upstream_and_records_partial(make_proxy: MakeProxy) -> None:
    chunks = chat_chunks(tokens=1000)

    async def slow_stream(request: RawRequest, conn: Conn) -> None:
        await conn.send(sse_head())
        for chunk in chunks:
            await conn.send(sse([chunk], done=False))
            await asyncio.sleep(0.01)

    with fault_upstream(unless_ok(slow_stream)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        sock = raw_request(proxy, {"model": "fault", "messages": MESSAGES, "stream": True})
        seen = b""
        while seen.count(b"t4 ") == 0:
            seen += sock.recv(65536)
        sock.close()
        upstream.wait_for(lambda: upstream.peer_closed == 1, timeout=3)  # not 10 s later
        assert outcomes(proxy) == {("client_closed", "200"): 1}
        assert proxy.total("llmobs_usage_missing_total") == 1
        assert 5 <= proxy.total("llmobs_estimated_tokens_total", type="output") < 100
        assert_quiet(proxy)
        serves_next(proxy)


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_slow_reader_gets_backpressure_and_proxy_memory_stays_bounded(make_proxy: MakeProxy) -> None:
    piece = sse([{"choices": [{"index": 0, "delta": {"content": "y" * 16_000}}]}], done=False)

    async def firehose(request: RawRequest, conn: Conn) -> None:
        await conn.send(sse_head())
        while True:  # as fast as the proxy will take it, until it hangs up
            await conn.send(piece)

    with fault_upstream(unless_ok(firehose)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        sock = raw_request(proxy, {"model": "fault", "messages": MESSAGES, "stream": True})
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.recv(1024)
        rss_before = _rss()
        samples = [-1, -2]
        deadline = time.monotonic() + 10
        while samples[-1] != samples[-2]:  # the upstream is blocked: nothing is being read
            assert time.monotonic() < deadline, "the upstream never blocked: the proxy reads without bound"
            time.sleep(0.3)
            samples.append(upstream.sent)
        grown = _rss() - rss_before
        # Kernel socket buffers can hold tens of MB on loopback; the proxy itself holds little.
        assert samples[-1] < 80 * 2**20
        assert grown < 16 * 2**20, f"proxy memory grew by {grown} bytes while the client stalled"
        sock.close()
        upstream.wait_for(lambda: upstream.peer_closed == 1)
        assert outcomes(proxy) == {("client_closed", "200"): 1}
        assert_quiet(proxy)


def test_metrics_scraped_hard_during_load_stay_consistent(make_proxy: MakeProxy) -> None:
    stream = sse(chat_chunks(tokens=3))

    async def mixed(request: RawRequest, conn: Conn) -> None:
        model = request.json()["model"]
        if model == "err":
            await conn.send(http_response(500, b'{"error":{"message":"x"}}'))
        elif model == "stream":
            await conn.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                + f"content-length: {len(stream)}\r\n\r\n".encode()
                + stream
            )
        else:
            await conn.send(OK)

    with fault_upstream(mixed) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        stop = threading.Event()
        scrapes: list[float] = []
        problems: list[str] = []

        def scrape() -> None:
            last = 0.0
            with httpx.Client(timeout=10) as http:
                while not stop.is_set():
                    response = http.get(proxy.url + "/metrics")
                    if response.status_code != 200:
                        problems.append(str(response.status_code))
                        continue
                    total = sum(
                        s.value
                        for f in text_string_to_metric_families(response.text)
                        for s in f.samples
                        if s.name == "llmobs_requests_total"
                    )
                    if total < last:
                        problems.append(f"counter went back: {last} -> {total}")
                    last = total
                    scrapes.append(total)

        def drive(models: list[str]) -> None:
            with httpx.Client(timeout=10) as http:
                for model in models:
                    body = {"model": model, "messages": MESSAGES, "stream": model == "stream"}
                    http.post(proxy.base_url + "/chat/completions", json=body)

        plan = ["ok", "stream", "err"] * 15
        scrapers = [threading.Thread(target=scrape) for _ in range(2)]
        drivers = [threading.Thread(target=drive, args=(plan,)) for _ in range(4)]
        for thread in scrapers + drivers:
            thread.start()
        for thread in drivers:
            thread.join(60)
        stop.set()
        for thread in scrapers:
            thread.join(10)
        assert not problems and len(scrapes) > 20
        assert outcomes(proxy) == {("completed", "200"): 120, ("upstream_error", "500"): 60}
        assert proxy.total("llmobs_tokens_total", type="output") == 4 * 15 * (5 + 3)
        assert_quiet(proxy)
