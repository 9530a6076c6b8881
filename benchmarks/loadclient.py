"""The load client: a closed-loop HTTP/1.1 keep-alive driver on uvloop + httptools.

Runs as its own process so its CPU can be measured apart from the servers. The harness
writes one JSON command per line on stdin and reads one JSON result per line on stdout:

    {"port": 8001, "path": "/v1/chat/completions", "body": "...", "headers": {...},
     "n": 3000, "concurrency": 32, "deadline": 60}

Every response body is normalised (the simulator's random ids and `created` stamps are
replaced) and hashed, so the harness can prove each target returned the same bytes as
the upstream did directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httptools
import uvloop

# ids: chatcmpl-<hex>, call_<hex>, req_<hex>, resp_<hex>...; timestamps: "created":<int>.
_RANDOM = re.compile(rb'("id":"[a-z]+[-_])[0-9a-f]+"|("created(?:_at)?":)\d+')


def normalise(body: bytes) -> bytes:
    """The body with the simulator's random ids and timestamps masked."""
    return _RANDOM.sub(lambda m: m.group(1) + b'0"' if m.group(1) else m.group(2) + b"0", body)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass
class Result:
    """One response as seen by the client."""

    status: int = 0
    ttfb: float = 0.0  # first body byte, seconds after the request was written
    total: float = 0.0
    chunks: int = 0  # body reads (network-level chunks) of this response
    digest: str = ""


@dataclass
class _Pending:
    sent: float
    body: list[bytes] = field(default_factory=list)
    first: float = 0.0
    chunks: int = 0
    future: asyncio.Future[Result] | None = None


class Connection(asyncio.Protocol):
    """One keep-alive connection that carries one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.pending: _Pending | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed"))
        if not self.lost.done():
            self.lost.set_result(None)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        p = self.pending
        if p is not None:
            if not p.chunks:
                p.first = time.perf_counter()
            p.chunks += 1
            p.body.append(body)

    def on_message_complete(self) -> None:
        p, self.pending = self.pending, None
        if p is None or p.future is None or p.future.done():
            return
        end = time.perf_counter()
        digest = hashlib.md5(normalise(b"".join(p.body))).hexdigest()
        status = self.parser.get_status_code()
        first = p.first or end
        p.future.set_result(Result(status, first - p.sent, end - p.sent, p.chunks, digest))

    def _fail(self, exc: BaseException) -> None:
        p, self.pending = self.pending, None
        if p is not None and p.future is not None and not p.future.done():
            p.future.set_exception(exc)

    def request(self, raw: bytes) -> asyncio.Future[Result]:
        """Write one request; the future resolves when its response is complete."""
        assert self.transport is not None and self.pending is None
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.pending = _Pending(time.perf_counter(), future=future)
        self.transport.write(raw)
        return future

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A raw HTTP/1.1 POST with a JSON body."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"host: {host}:{port}",
        "content-type: application/json",
        "authorization: Bearer sk-bench",
        f"content-length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _open(host: str, port: int, count: int) -> list[Connection]:
    loop = asyncio.get_running_loop()
    conns: list[Connection] = []
    for start in range(0, count, 200):  # in waves, so as not to overflow accept backlogs
        made = await asyncio.gather(
            *(loop.create_connection(Connection, host, port) for _ in range(min(200, count - start)))
        )
        conns.extend(proto for _, proto in made)
    return conns


async def run(cmd: dict[str, Any]) -> dict[str, Any]:
    """Send `n` requests over `concurrency` keep-alive connections; summarise what came back."""
    host, port = cmd.get("host", "127.0.0.1"), int(cmd["port"])
    n, concurrency = int(cmd["n"]), int(cmd["concurrency"])
    raw = build_request(host, port, cmd["path"], cmd["body"].encode(), cmd.get("headers", {}))
    conns = await _open(host, port, min(n, concurrency))
    results: list[Result] = []
    errors: dict[str, int] = {}
    issued = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    stop_at = t0 + float(cmd.get("deadline", 120))

    async def worker(conn: Connection) -> None:
        nonlocal issued
        while issued < n and time.perf_counter() < stop_at:
            issued += 1
            try:
                results.append(await conn.request(raw))
            except Exception as exc:  # noqa: BLE001 - counted, and the connection is replaced
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                conn.close()
                try:
                    conn = (await _open(host, port, 1))[0]
                except OSError as exc2:
                    errors[type(exc2).__name__] = errors.get(type(exc2).__name__, 0) + 1
                    return

    tasks = [asyncio.ensure_future(worker(c)) for c in conns]
    done, late = await asyncio.wait(tasks, timeout=max(0.1, stop_at - time.perf_counter() + 5))
    for task in late:
        task.cancel()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    for conn in conns:
        conn.close()
    return summarise(results, errors, issued, wall, cpu, timed_out=len(late))


def summarise(
    results: list[Result], errors: dict[str, int], issued: int, wall: float, cpu: float, timed_out: int = 0
) -> dict[str, Any]:
    """Percentiles (ms), status and digest counts, throughput and the client's own CPU."""
    ttfb = sorted(r.ttfb * 1e3 for r in results)
    total = sorted(r.total * 1e3 for r in results)
    statuses: dict[str, int] = {}
    digests: dict[str, int] = {}
    for r in results:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
        digests[r.digest] = digests.get(r.digest, 0) + 1
    return {
        "issued": issued,
        "completed": len(results),
        "errors": errors,
        "timed_out_workers": timed_out,
        "statuses": statuses,
        "digests": digests,
        "chunks": sum(r.chunks for r in results),
        "wall_s": wall,
        "rps": len(results) / wall if wall > 0 else 0.0,
        "client_cpu_s": cpu,
        "ttfb_ms": {q: percentile(ttfb, float(q)) for q in ("50", "90", "99")},
        "total_ms": {q: percentile(total, float(q)) for q in ("50", "90", "99")},
        "total_max_ms": total[-1] if total else float("nan"),
    }


async def serve_commands() -> None:
    """Read commands from stdin until EOF; answer each on stdout."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        cmd = json.loads(line)
        try:
            out = await run(cmd)
        except Exception as exc:  # noqa: BLE001 - reported to the driving process, which decides
            out = {"fatal": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    uvloop.run(serve_commands())
