"""A raw, fault-injecting upstream: an asyncio TCP server on 127.0.0.1 that misbehaves on cue.

The simulator speaks correct HTTP; this one speaks whatever bytes a test script writes, so
tests can send what no well-behaved server would: truncated bodies, wrong lengths, resets,
malformed SSE, silence. Every request it receives is kept for inspection.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from llmobs.proxy.upstream import Response


@dataclass
class RawRequest:
    """One request as it arrived on the wire."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    head: bytes = b""  # the request line and headers, verbatim

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Conn:
    """The server end of one connection, with the faults a script can inject."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sent: int = 0
    closed_by_peer: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()
        self.sent += len(data)

    async def trickle(self, data: bytes, delay: float = 0.0, step: int = 1) -> None:
        """Send `data` `step` bytes at a time, `delay` seconds apart."""
        for i in range(0, len(data), step):
            await self.send(data[i : i + step])
            await asyncio.sleep(delay)

    async def hang(self) -> None:
        """Say nothing until the other side goes away."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.closed_by_peer.set()

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), not an orderly FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()


Script = Callable[[RawRequest, Conn], Awaitable[None]]


class FaultUpstream:
    """Serve `script` for every request on a background event loop.

    After the script returns, the connection is kept alive for the next request unless
    the script closed or reset it.
    """

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls  # a server context: speak HTTPS
        self.requests: list[RawRequest] = []
        self.connections = 0
        self.peer_closed = 0  # connections the proxy closed (e.g. on cancellation)
        self.conns: list[Conn] = []
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fault-upstream")
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> FaultUpstream:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls), self.loop
        )
        self._server = future.result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()
            await asyncio.sleep(0.01)  # let the transports' connection_lost callbacks close sockets

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = Conn(reader, writer)
        self.conns.append(conn)
        try:
            while not writer.is_closing():
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                await self.script(request, conn)
                if conn.closed_by_peer.is_set():
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            conn.closed_by_peer.set()
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio logs a cancelled connection task as an error)
        finally:
            if conn.closed_by_peer.is_set() or reader.at_eof():
                self.peer_closed += 1
            writer.close()

    @property
    def sent(self) -> int:
        """Bytes written so far, over all connections."""
        return sum(conn.sent for conn in self.conns)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("fault upstream: condition not met in time")
            time.sleep(0.01)


async def _read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head[:-4].split(b"\r\n")
    method, target, _ = lines[0].decode("latin-1").split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    body = await reader.readexactly(length) if length else b""
    return RawRequest(method, target, headers, body, head)


@contextmanager
def fault_upstream(script: Script, tls: ssl.SSLContext | None = None) -> Iterator[FaultUpstream]:
    server = FaultUpstream(script, tls).start()
    try:
        yield server
    finally:
        server.stop()


# --- canned wire bytes -------------------------------------------------------------------


def http_response(
    status: int,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    *,
    content_length: int | None = None,
    reason: str = "X",
) -> bytes:
    """A response head plus body; `content_length` may lie."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    for name, value in headers or [("content-type", "application/json")]:
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {len(body) if content_length is None else content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sse_head(status: int = 200, *, chunked: bool = False) -> bytes:
    """The head of an event stream: close-delimited, or chunked as real servers send it."""
    framing = "transfer-encoding: chunked" if chunked else "connection: close"
    return f"HTTP/1.1 {status} OK\r\ncontent-type: text/event-stream\r\n{framing}\r\n\r\n".encode()


def chunked(data: bytes) -> bytes:
    """`data` as one chunk of a chunked body (no last-chunk marker)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def chat_chunks(
    model: str = "m", tokens: int = 5, *, usage: bool = True, prompt: int = 7, finish: str = "stop"
) -> list[dict[str, Any]]:
    """The JSON objects of a chat completions stream, usage chunk last when asked."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
    chunks: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    ]
    for i in range(tokens):
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage:
        chunks.append(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens},
            }
        )
    return chunks


def sse(objects: list[Any], *, done: bool = True, eol: bytes = b"\n") -> bytes:
    """Frame JSON objects (or raw bytes) as SSE events."""
    out = b""
    for obj in objects:
        data = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
        out += b"data: " + data + eol + eol
    if done:
        out += b"data: [DONE]" + eol + eol
    return out


def chat_body(model: str = "m", tokens: int = 5, prompt: int = 7) -> bytes:
    """A non-streamed chat completion with usage."""
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens},
        }
    ).encode()


async def read_all(resp: Response) -> bytes:
    """A client's whole body; the connection goes back to the pool, or is dropped if the body broke."""
    out = b""
    try:
        async for chunk in resp.chunks():
            out += chunk
    except BaseException:
        resp.close()
        raise
    resp.release()
    return out


def refused_port() -> tuple[socket.socket, int]:
    """A bound port nobody listens on: connections are refused. Keep the socket until done."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


def unaccepting_port() -> tuple[list[socket.socket], int]:
    """A listener whose accept queue is full: connects hang (SYNs are dropped) until timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    held = [listener]
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        held.append(filler)
    time.sleep(0.05)
    return held, port


# --- looking inside a running proxy ------------------------------------------------------


def outcomes(proxy: Any) -> dict[tuple[str, str], float]:
    """llmobs_requests_total by (outcome, status_code), non-zero only, once traffic settled."""
    proxy.settle()
    counts: dict[tuple[str, str], float] = {}
    for family in proxy.registry.collect():
        for sample in family.samples:
            if sample.name == "llmobs_requests_total" and sample.value:
                key = (sample.labels["outcome"], sample.labels["status_code"])
                counts[key] = counts.get(key, 0) + sample.value
    return counts


def proxy_tasks(proxy: Any) -> list[str]:
    """Names of the proxy's own coroutines still running on its event loop."""
    loop = proxy.server.server.servers[0].get_loop()

    async def running() -> list[str]:
        return [t.get_coro().__qualname__ for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    names = asyncio.run_coroutine_threadsafe(running(), loop).result(5)
    return [n for n in names if n.startswith(("Proxy", "Exchange", "ClientSession")) or "_watch" in n or "_relay" in n]


def upstream_connections_in_use(proxy: Any) -> int:
    """Upstream connections the proxy holds for a request right now (not idle in the pool)."""
    return int(proxy.app.upstream.connections_in_use())


def assert_quiet(proxy: Any, timeout: float = 3.0) -> None:
    """Nothing in flight, no request coroutine left running, no upstream connection held."""
    proxy.settle(timeout)
    deadline = time.monotonic() + timeout
    while proxy_tasks(proxy) or upstream_connections_in_use(proxy):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"still running: {proxy_tasks(proxy)}, {upstream_connections_in_use(proxy)} upstream connections held"
            )
        time.sleep(0.01)
    assert proxy.total("llmobs_requests_in_flight") == 0
