"""Hostile clients over raw sockets: head size and count, slowloris, idle and stalled bodies, too many
connections, and log floods are bounded as nginx and Envoy bound them."""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client import CollectorRegistry

from conftest import Proxied
from fault_upstream import RawRequest, chat_body, fault_upstream, http_response
from llmobs.app import create_app
from llmobs.config import Settings
from llmobs.dev.harness import serve
from llmobs.proxy import http_server
from llmobs.sim import SimConfig
from llmobs.sim import create_app as create_simulator
from servers import ServerThread

CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


def rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@contextmanager
def raw(proxy: Proxied, timeout: float = 10.0) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", proxy.server.port), timeout=timeout)
    try:
        yield sock
    finally:
        sock.close()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one response (Content-Length framed), or (0, {}, b"") on close."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, {}, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def request(path: str = "/v1/chat/completions", body: bytes = CHAT, extra: bytes = b"") -> bytes:
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + extra
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


@pytest.fixture
def limited(upstream: ServerThread, make_proxy: Callable[..., Proxied]) -> Proxied:
    return make_proxy(
        upstream.url + "/v1",
        max_header_bytes=8192,
        max_headers=20,
        client_header_timeout=1.0,
        client_body_timeout=1.0,
        keepalive_timeout=1.0,
        max_client_connections=8,
    )


def test_the_configured_limits_hold_whatever_wraps_the_app(upstream: ServerThread) -> None:
    # At trace level uvicorn wraps the app in its message logger; the limits once came from the
    # wrapped app's settings, so a configured 2,048 silently became the default 65,536.
    app = create_app(
        Settings(upstream_url=upstream.url + "/v1", max_header_bytes=2048),
        registry=CollectorRegistry(),
        otel_from_env=False,
    )
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")]
    levels = [logger.level for logger in loggers]
    server = ServerThread(app, log_level="trace").start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: a\r\nx-big: " + b"a" * 3000 + b"\r\n\r\n")
            assert read_response(sock)[0] == 431
    finally:
        server.stop()
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)  # as they were: uvicorn set them for the whole process


def test_a_head_over_the_limit_gets_431_before_it_is_held(limited: Proxied) -> None:
    before = rss_kib()
    with raw(limited) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: ")
        sent = 0
        try:
            for _ in range(4096):  # up to 64 MiB, a MiB at a time: the proxy stops it long before
                sock.sendall(b"a" * 16384)
                sent += 16384
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = read_response(sock)
    assert status in (431, 0)  # 431, unless the reset outran the answer on the wire
    assert sent < 8 * 1024 * 1024, "the proxy kept reading a head far past its limit"
    assert rss_kib() - before < 32 * 1024
    if status:
        assert json.loads(body)["error"]["code"] == "head_too_large"
    assert httpx.get(limited.url + "/healthz").status_code == 200


def test_too_many_headers_get_431(limited: Proxied) -> None:
    with raw(limited) as sock:
        sock.sendall(request(extra=b"".join(b"x-h%d: 1\r\n" % i for i in range(30))))
        status, headers, body = read_response(sock)
    assert status == 431 and headers["connection"] == "close"
    assert json.loads(body)["error"]["type"] == "llmobs_proxy_error"


def test_a_head_within_the_limit_is_fine_with_a_big_body_in_the_same_read(limited: Proxied) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 200_000}]}).encode()
    with raw(limited) as sock:
        sock.sendall(request(body=body))
        status, _, answer = read_response(sock)
    assert status == 200 and json.loads(answer)["object"] == "chat.completion"


def test_slowloris_gets_408_when_the_head_takes_too_long(limited: Proxied) -> None:
    start = time.monotonic()
    with raw(limited) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\n")
        try:
            for i in range(40):  # a header line every 0.1 s: never a whole head within the timeout
                sock.sendall(b"x-slow-%d: 1\r\n" % i)
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, _ = read_response(sock)
    assert status in (408, 0) and time.monotonic() - start < 3.5


def test_a_connection_that_never_speaks_is_closed(limited: Proxied) -> None:
    with raw(limited) as sock:
        start = time.monotonic()
        status, _, body = read_response(sock)
        assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"
        assert 0.8 < time.monotonic() - start < 3


def test_a_stalled_body_gets_408_and_the_request_counts_as_the_client_leaving(limited: Proxied) -> None:
    with raw(limited) as sock:
        sock.sendall(request()[:-10])  # the head and most of the body, then nothing
        status, _, _ = read_response(sock)
    assert status == 408
    assert limited.total("llmobs_requests_total", outcome="client_closed", status_code="499") == 1


def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(limited: Proxied) -> None:
    with raw(limited) as sock:
        sock.sendall(request())
        assert read_response(sock)[0] == 200
        start = time.monotonic()
        assert closed(sock)
        assert time.monotonic() - start < 3


def test_a_slowloris_head_after_a_kept_alive_response_gets_408(limited: Proxied) -> None:
    with raw(limited) as sock:
        sock.sendall(request())
        assert read_response(sock)[0] == 200
        start = time.monotonic()
        try:
            for piece in (b"GET /v1/models HTTP/1.1\r\n", *(b"x-slow-%d: 1\r\n" % i for i in range(20))):
                sock.sendall(piece)  # each piece well inside the keep-alive timeout, the head never whole
                time.sleep(0.3)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, _ = read_response(sock)
    assert status in (408, 0) and time.monotonic() - start < 3.5


def trickle(sock: socket.socket, pieces: int = 20, gap: float = 0.3) -> float:
    """A head one header line at a time, never whole, until the proxy answers or closes: how long."""
    start = time.monotonic()
    try:
        for i in range(pieces):
            sock.sendall(b"x-slow-%d: 1\r\n" % i)
            if select.select([sock], [], [], gap)[0]:
                break  # an answer (408) or the end
    except (BrokenPipeError, ConnectionResetError):
        pass
    return time.monotonic() - start


def test_a_pipelined_head_that_never_ends_gets_408(limited: Proxied) -> None:
    with raw(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.1\r\n")
        assert read_response(sock)[0] == 200
        assert trickle(sock) < 2.5
        assert read_response(sock)[0] in (408, 0) and closed(sock, timeout=1)


@pytest.mark.parametrize("then", ["silence", "a slow head"])
def test_after_an_answer_before_the_body_the_connection_is_still_timed(limited: Proxied, then: str) -> None:
    body = b"x" * 100_000
    with raw(limited) as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body) + body[:-10])
        assert read_response(sock)[0] == 405
        start = time.monotonic()
        sock.sendall(body[-10:] + (b"GET /healthz HTTP/1.1\r\n" if then == "a slow head" else b""))
        if then == "a slow head":
            assert trickle(sock) < 2.5
        assert closed(sock, timeout=3) and time.monotonic() - start < 3.5


def test_many_pipelined_requests_in_one_write_are_all_answered(limited: Proxied) -> None:
    count = 3000  # 120 KB of heads in one write, read in several pieces: each piece past the 8 KiB head limit
    with raw(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n" * count)
        answers = b""
        while answers.count(b"HTTP/1.1 ") < count:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {answers.count(b'HTTP/1.1 ')} answers"
            answers += chunk
    assert answers.count(b"HTTP/1.1 200 ") == count


@pytest.fixture
def slow_upstream() -> Iterator[ServerThread]:
    """The simulator with 0.1 s between stream chunks: a 20-chunk stream lasts about 2 s."""
    with serve(create_simulator(SimConfig(chunk_gap=0.1))) as server:
        yield server


STREAM = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()


def test_a_request_on_a_kept_alive_connection_outlives_the_keepalive_timeout(
    slow_upstream: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(slow_upstream.url + "/v1", keepalive_timeout=0.5)
    with raw(proxy) as sock:
        sock.sendall(request())
        assert read_response(sock)[0] == 200
        start = time.monotonic()
        sock.sendall(request(body=STREAM))  # the same connection: keep-alive bounds idling, not this
        stream = b""
        while not stream.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, f"cut after {time.monotonic() - start:.2f} s: {stream[-80:]!r}"
            stream += chunk
    assert time.monotonic() - start > 1.5 and b"data: [DONE]" in stream
    assert proxy.total("llmobs_requests_total", outcome="completed") == 2


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def send_endlessly(sock: socket.socket, piece: bytes = b"a" * 16384) -> int:
    """Bytes sent before the proxy closed the connection (at most 64 MiB)."""
    sent = 0
    try:
        for _ in range(4096):
            sock.sendall(piece)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_endless_trailers_are_bounded_like_a_head(limited: Proxied) -> None:
    before = rss_kib()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    with raw(limited) as sock:
        sock.sendall(head + b"%x\r\n" % len(CHAT) + CHAT + b"\r\n0\r\nx-trailer: ")
        sent = send_endlessly(sock)
        status, _, body = read_response(sock)
    assert status in (431, 0) and sent < 8 * 1024 * 1024
    assert rss_kib() - before < 32 * 1024
    if status:
        assert json.loads(body)["error"]["code"] == "head_too_large"
    assert wait_for(lambda: limited.total("llmobs_requests_total") == 1)
    assert limited.total("llmobs_requests_total", outcome="client_closed") == 1  # counted once, as gone


@pytest.mark.parametrize("size", [1, 8, 64])
def test_a_body_in_tiny_chunks_is_not_mistaken_for_trailers(limited: Proxied, size: int) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 100_000}]}).encode()
    framed = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)
    )
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    with raw(limited) as sock:
        sock.sendall(head + framed + b"0\r\n\r\n")  # one write: reads of framing far past the head limit
        status, _, answer = read_response(sock)
    assert status == 200 and json.loads(answer)["object"] == "chat.completion"


def test_an_answer_before_the_body_is_read_is_the_only_answer(limited: Proxied) -> None:
    body = b"x" * 400_000
    with raw(limited) as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 16384):  # the answer comes before the body is all sent
            sock.sendall(body[i : i + 16384])
        status, _, _ = read_response(sock)
        assert status == 405
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")  # the same connection goes on
        assert read_response(sock)[0] == 200


def test_a_pipelined_head_over_the_limit_never_lands_inside_a_streamed_answer(
    slow_upstream: ServerThread, make_proxy: Callable[..., Proxied], caplog: pytest.LogCaptureFixture
) -> None:
    proxy = make_proxy(slow_upstream.url + "/v1", max_header_bytes=8192)
    with raw(proxy) as sock:
        second = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
        sock.sendall(request(body=STREAM) + second)
        time.sleep(0.3)  # the stream under way, the second request queued behind it
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nx-big: " + b"a" * 100_000)
        received = b""
        sock.settimeout(10)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    stream = received.partition(b"\r\n\r\n")[2]
    assert b"HTTP/1.1 431" not in stream.partition(b"0\r\n\r\n")[0]  # never inside the chunked stream
    # The stream was cut because of its client: counted so (uvicorn tells only the newest request).
    assert proxy.total("llmobs_requests_total", endpoint="chat_completions", outcome="client_closed") == 1
    assert "Exception in ASGI application" not in caplog.text  # no traceback any client can cause


def test_an_endless_head_behind_a_queued_request_is_bounded_like_a_head(
    slow_upstream: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(slow_upstream.url + "/v1", max_header_bytes=8192)
    with raw(proxy) as sock:
        second = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"  # queued behind the stream
        sock.sendall(request(body=STREAM) + second + b"GET /v1/models HTTP/1.1\r\nx-big: ")
        sent = send_endlessly(sock)
    assert sent < 8 * 1024 * 1024, f"{sent >> 20} MiB of one head read"


def test_a_request_queued_behind_a_stream_gets_its_body_clock_when_it_starts(
    slow_upstream: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(slow_upstream.url + "/v1", client_body_timeout=1.0)  # the stream lasts about 2 s
    with raw(proxy) as sock:
        sock.sendall(request(body=STREAM))
        time.sleep(0.3)
        queued = request()
        sock.sendall(queued[:-5])  # the body comes in two writes, and is not read until the stream ends
        time.sleep(0.2)
        sock.sendall(queued[-5:])
        received = b""
        sock.settimeout(10)
        while received.count(b"HTTP/1.1 200") < 2 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, f"closed: {received[-120:]!r}"
            received += chunk
    assert b"data: [DONE]" in received and b'"object":"chat.completion"' in received


def test_an_endless_pipelined_head_during_a_stream_is_bounded_like_a_head(
    slow_upstream: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(slow_upstream.url + "/v1", max_header_bytes=8192)
    before = rss_kib()
    with raw(proxy) as sock:
        sock.sendall(request(body=STREAM) + b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: ")
        sent = send_endlessly(sock)
        assert closed(sock)
    assert sent < 8 * 1024 * 1024 and rss_kib() - before < 32 * 1024
    assert httpx.get(proxy.url + "/healthz").status_code == 200
    assert wait_for(lambda: proxy.total("llmobs_requests_total") == 1)
    assert proxy.total("llmobs_requests_total", outcome="client_closed") == 1


def test_at_the_connection_cap_idle_and_head_reading_connections_make_room(limited: Proxied) -> None:
    hogs = [socket.create_connection(("127.0.0.1", limited.server.port)) for _ in range(8)]
    try:
        for hog in hogs[:4]:
            hog.sendall(b"GET /v1/models HTTP/1.1\r\nx-partial: ")  # slowloris-style partial heads
        time.sleep(0.1)
        for _ in range(3):  # legitimate requests and a probe still get through
            assert httpx.post(limited.base_url + "/chat/completions", content=CHAT, timeout=5).status_code == 200
        assert httpx.get(limited.url + "/healthz", timeout=5).status_code == 200
        # ... because the proxy closed hogs to make room (each httpx call is a new connection)
        assert sum(closed(hog, timeout=0.5) for hog in hogs) >= 4
    finally:
        for hog in hogs:
            hog.close()


def test_at_the_connection_cap_with_every_connection_busy_the_new_one_gets_503(
    upstream: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(upstream.url + "/v1", max_client_connections=4)
    busy = []
    hang = json.dumps({"model": "sim-hang", "messages": []}).encode()
    try:
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", proxy.server.port), timeout=10)
            sock.sendall(request(body=hang))
            busy.append(sock)
        deadline = time.monotonic() + 5
        while proxy.app.proxy.in_flight < 4:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with raw(proxy) as sock:
            status, headers, body = read_response(sock)
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body)["error"]["code"] == "too_many_connections"
    finally:
        for sock in busy:
            sock.close()


class Records(logging.Handler):
    """The records one logger emits, each once, however the logging tree is configured."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_malformed_requests_do_not_flood_the_log(limited: Proxied) -> None:
    # Our own handler on uvicorn's logger: caplog's also sits on the root, which a record may
    # reach too, depending on how uvicorn configured propagation (it counted one warning twice).
    server_log, seen = logging.getLogger("uvicorn.error"), Records()
    server_log.addHandler(seen)
    http_server._last_warning = float("-inf")  # as if no warning came in the last minute
    try:
        for _ in range(30):
            with raw(limited) as sock:
                sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                assert read_response(sock)[0] == 400
    finally:
        server_log.removeHandler(seen)
    warnings = [r for r in seen.records if "Invalid HTTP request" in r.getMessage()]
    assert len(warnings) == 1  # the first one, then held back


class SlowCollector:
    """A collector that takes a while, as an 8 MiB exposition does, and counts its runs."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.runs = 0

    def collect(self) -> list[Any]:
        self.runs += 1
        time.sleep(self.seconds)  # off the event loop, this blocks nobody
        return []


def test_metrics_render_off_the_event_loop_and_parallel_scrapes_share_one_render(
    upstream: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(upstream.url + "/v1")
    slow = SlowCollector(1.0)
    proxy.registry.register(slow)  # type: ignore[arg-type]
    with ThreadPoolExecutor(10) as pool:
        scrapes = [pool.submit(httpx.get, proxy.url + "/metrics", timeout=10) for _ in range(10)]
        time.sleep(0.2)  # the render is under way
        start = time.monotonic()
        answer = httpx.post(proxy.base_url + "/chat/completions", content=CHAT, timeout=10)
        waited = time.monotonic() - start
        bodies = [f.result().text for f in scrapes]
    assert answer.status_code == 200 and waited < 0.6, f"a proxied request waited {waited:.2f} s on /metrics"
    assert slow.runs <= 2 and all("llmobs_requests_total" in body for body in bodies)


async def canned(request: RawRequest, conn: Any) -> None:
    """An upstream that reads a body as bytes, never decoding it, and answers a completion."""
    await conn.send(http_response(200, chat_body("gpt-4o-mini")))


def test_a_body_of_many_tiny_objects_costs_about_its_size_not_ten_times(make_proxy: Callable[..., Proxied]) -> None:
    with fault_upstream(canned) as raw_upstream:
        proxy = make_proxy(raw_upstream.url + "/v1")
        check_many_tiny_objects(proxy)


def check_many_tiny_objects(proxy: Proxied) -> None:
    items = 3 * 1024 * 1024  # `{},` x 3 Mi: a 9 MiB body that would decode into 3 million dicts
    tiny = b'{"messages": [' + b"{}," * (items - 1) + b'{}], "model": "gpt-4o-mini"}'
    plain = b'{"messages": [{"role": "user", "content": "' + b"x" * (len(tiny) - 60) + b'"}], "model": "gpt-4o-mini"}'

    def peak_growth_mib(body: bytes) -> float:
        # Python's own allocations (every object decoding makes), traced: unlike RSS, not hidden
        # by memory the allocator kept from an earlier phase.
        tracemalloc.start()
        try:
            with ThreadPoolExecutor(4) as pool:
                posts = pool.map(
                    lambda _: httpx.post(proxy.base_url + "/chat/completions", content=body, timeout=60), range(4)
                )
                assert [answer.status_code for answer in posts] == [200] * 4
            return tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()

    plain_growth = peak_growth_mib(plain)  # the client's, the proxy's and the upstream's copies
    tiny_growth = peak_growth_mib(tiny)
    # Decoded whole, 4 such bodies cost twice what plain ones of the same size do (380 vs 180 MiB).
    assert tiny_growth < 1.5 * plain_growth + 16, (tiny_growth, plain_growth)
    assert proxy.total("llmobs_requests_total", model="gpt-4o-mini") == 8  # the model, found by a scan


def test_past_the_buffered_body_budget_a_request_gets_503_with_retry_after(
    upstream: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(upstream.url + "/v1", max_buffered_bytes=1024 * 1024)
    held = socket.create_connection(("127.0.0.1", proxy.server.port), timeout=10)
    try:
        body = b'{"model": "m", "pad": "' + b"x" * 700_000 + b'"}'
        held.sendall(request(body=body)[:-100])  # 700 KB held while the rest never comes
        time.sleep(0.2)
        refused = httpx.post(proxy.base_url + "/chat/completions", content=body, timeout=10)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        small = httpx.post(proxy.base_url + "/chat/completions", content=CHAT, timeout=10)
        assert small.status_code == 200  # what fits still goes through
    finally:
        held.close()
    deadline = time.monotonic() + 5
    while proxy.app.proxy.body_budget.held:  # the stalled body is let go when its client leaves
        assert time.monotonic() < deadline, proxy.app.proxy.body_budget.held
        time.sleep(0.02)
    assert httpx.post(proxy.base_url + "/chat/completions", content=body, timeout=10).status_code == 200
