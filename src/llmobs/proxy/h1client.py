"""A lean HTTP/1.1 upstream client: keep-alive pools of asyncio Protocols parsed by httptools.

The same surface as the aiohttp client in upstream.py (send, peek, chunks, release, close;
the same exceptions and messages), chosen with LLMOBS_UPSTREAM_CLIENT=h1. What it does
differently: header bytes go out exactly as given (aiohttp re-encodes them as UTF-8); the
request head is one bytes object; the read timeout is one timer per connection, checked
against the time of the last read, instead of a timer re-armed on every read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohappyeyeballs
import httptools

from llmobs.proxy.upstream import (
    PeekableBody,
    Timeouts,
    UpstreamBadResponse,
    UpstreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
)

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]  # as getaddrinfo gives them
DEFAULT_TIMEOUTS = Timeouts()
HIGH_WATER = 256 * 1024  # body bytes queued unread before the socket stops being read
MAX_HEAD = 64 * 1024  # a response head longer than this is refused (nginx refuses past 4-8 KiB)
KEEPALIVE = 15.0  # seconds an idle pooled connection is kept (aiohttp's default)
DNS_TTL = 60.0
INLINE_BODY = 64 * 1024  # bodies up to this size are copied into the head: one write, one segment
# RFC 9110 section 9.2.2. Only these are sent again after a reused connection failed silently.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Methods that get no Content-Length when they carry no body (as aiohttp does).
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})


class _Lost(UpstreamUnreachable):
    """The connection ended before a whole response head arrived."""

    def __init__(self, message: str, *, written: bool, received: bool) -> None:
        super().__init__(message)
        self.written = written  # our request had been handed to the socket
        self.received = received  # some response byte had arrived


class Connection(asyncio.Protocol):
    """One upstream connection carrying one request at a time.

    httptools calls on_header/on_body/... from inside feed_data; the response's reader waits
    on `waiter`, which every callback that changes what it can see resolves.
    """

    def __init__(self, pool: H1Upstream, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.label = pool.label
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False  # connection_lost has run
        self.reusable = True  # cleared by keep-alive off, an error, stray bytes, a HEAD
        self.pooled = False
        self.idle_since = 0.0
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None  # the read timeout's; outlives requests
        self._reset()

    def _reset(self) -> None:
        self.written = False
        self.received = False
        self.head_only = False
        self.interim = False
        self.head_done = False
        self.complete = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0  # of the headers parsed
        self.head_read = 0  # of the reads that ended inside the head
        self.body: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.deadline: float | None = None
        self.deadline_timer: asyncio.TimerHandle | None = None  # only with a total timeout
        self.last_read = 0.0

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()  # uvloop: the cached time of this loop iteration
        if not self.busy or self.complete:
            # Bytes nobody asked for: whatever the server meant, this connection is done.
            self.abort()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._parse_failed()
        except httptools.HttpParserError:
            self._parse_failed()
        if not self.head_done and self.error is None:
            # A head still incomplete: the header being parsed may never end (httptools holds it).
            self.head_read += len(data)
            if self.head_read > MAX_HEAD:
                self._head_too_long()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self.busy and not self.complete and self.error is None:
            if not self.head_done:
                self.error = _Lost(f"{self.label} closed the connection", written=self.written, received=self.received)
            elif exc is None and self._close_delimited():
                self.complete = True  # the end of the connection is the end of this body
            else:
                self.error = UpstreamBroken("upstream closed the connection mid-body")
            self._wake()
        self._stop_timer(everything=True)
        self.pool.gone(self)

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second response to one request: never trust this connection again
            self.reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name, value))
            self.head_bytes += len(name) + len(value)
            if self.head_bytes > MAX_HEAD:
                self._head_too_long()

    def on_headers_complete(self) -> None:
        if self.complete or self.error is not None:
            return
        status = self.parser.get_status_code()
        if status < 200:  # 1xx interim responses are skipped (101 ends in HttpParserUpgrade)
            self.interim = True
            self.headers = []
            return
        self.status = status
        self.head_done = True
        if self.head_only:  # a HEAD response has no body whatever its headers say
            self.reusable = False  # the parser cannot be told so; do not trust its state after
            self._completed()
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        waiter = self.waiter  # _wake(), inlined: this runs once per body chunk
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.complete:
            return
        if not self.parser.should_keep_alive():
            self.reusable = False
        self._completed()
        self._wake()

    # --- the request ------------------------------------------------------------------------

    async def request(self, data: bytes, tail: bytes, head_only: bool, deadline: float | None) -> None:
        """Write one request (`tail`: a large body, written apart) and wait for its response head."""
        self._reset()
        self.busy = True
        self.head_only = head_only
        self.deadline = deadline
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise _Lost(f"{self.label} closed the connection", written=False, received=False)
        transport.write(data)
        if tail:
            transport.write(tail)
        self.written = True
        self.last_read = self.loop.time()
        read = self.pool.timeouts.read
        if self.timer is None and read is not None:
            self.timer = self.loop.call_at(self.last_read + read, self._check_read)
        if deadline is not None:
            self.deadline_timer = self.loop.call_at(deadline, self._deadline_passed)
        while not self.head_done:
            if self.error is not None:
                raise self.error
            self.waiter = self.loop.create_future()
            await self.waiter

    def wait(self) -> asyncio.Future[None]:
        """A future resolved when more of the body, its end, or an error is there to see."""
        self.waiter = waiter = self.loop.create_future()
        return waiter

    def take(self) -> bytes:
        """Every body byte queued so far, as one bytes object; reading resumes if it was paused."""
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self.buffered = 0
        if self.paused:
            self.paused = False
            self.last_read = self.loop.time()  # the pause was the reader's, not the upstream's
            if self.transport is not None:
                self.transport.resume_reading()
        return data

    def fail(self, exc: Exception) -> None:
        """End the request with `exc` (seen by the reader after what is queued) and the connection."""
        if self.error is None and not self.complete:
            self.error = exc
        self._wake()
        self.abort()

    def abort(self) -> None:
        """Drop the connection; its connection_lost returns its slot to the pool."""
        self.reusable = False
        self._stop_timer(everything=True)
        if self.transport is not None and not self.closed:
            self.transport.abort()

    # --- inside -----------------------------------------------------------------------------

    def _head_too_long(self) -> None:
        self.fail(UpstreamBadResponse(f"{self.label} sent a response head over {MAX_HEAD} bytes"))

    def _parse_failed(self) -> None:
        if self.complete:
            self.abort()  # junk after a whole response (a Content-Length too short): not reusable
        elif not self.head_done:
            self.fail(UpstreamBadResponse(f"{self.label} sent an invalid HTTP response"))
        else:
            self.fail(UpstreamBroken("upstream sent an invalid body"))

    def _completed(self) -> None:
        self.complete = True
        self._stop_timer()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _close_delimited(self) -> bool:
        """Whether the body is framed by the end of the connection (no length, not chunked)."""
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    # The read timeout: one timer per connection, not one per read. It fires at the earliest
    # moment the timeout could be due and, when reads came since, is set again from the last.

    def _check_read(self) -> None:
        self.timer = None
        read = self.pool.timeouts.read
        if not self.busy or self.complete or self.closed or read is None:
            return  # idle: request() sets the timer again
        now = self.loop.time()
        if self.paused:
            self.last_read = now  # the reader is behind; the upstream is not silent
        elif now - self.last_read >= read:
            self.fail(UpstreamTimeout("the upstream sent nothing in time"))
            return
        self.timer = self.loop.call_at(self.last_read + read, self._check_read)

    def _deadline_passed(self) -> None:
        self.deadline_timer = None
        if self.busy and not self.complete and not self.closed:
            self.fail(UpstreamTimeout("the upstream did not finish in time"))

    def _stop_timer(self, *, everything: bool = False) -> None:
        """Cancel the request's deadline; with `everything`, the read timer too."""
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        if everything and self.timer is not None:
            self.timer.cancel()
            self.timer = None


class H1Response(PeekableBody):
    """Status, raw headers and a chunk iterator over the undecoded body."""

    __slots__ = ("_conn", "status", "headers")

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self._conn: Connection | None = conn
        self.status: int = conn.status
        self.headers: list[tuple[bytes, bytes]] = conn.headers

    @property
    def buffered(self) -> int:
        """Body bytes received and not yet handed out (bounded by backpressure)."""
        return self._conn.buffered if self._conn is not None else 0

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive, still content-encoded; several reads come as one when queued."""
        if self._head:
            head, self._head = self._head, b""
            yield head
        conn = self._conn
        if conn is None:
            return
        while True:
            if conn.body:
                yield conn.take()
            elif conn.error is not None:
                raise conn.error
            elif conn.complete:
                return
            else:
                await conn.wait()

    async def _read(self) -> bytes:
        conn = self._conn
        while conn is not None:
            if conn.body:
                return conn.take()
            if conn.error is not None:
                raise conn.error
            if conn.complete:
                break
            await conn.wait()
        return b""

    def close(self) -> None:
        """Drop the connection (used when the client goes away mid-response)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.busy = False
            conn.abort()

    def release(self) -> None:
        """Back to the pool if the response ended cleanly and keep-alive allows; else dropped."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.pool.release(conn)


class H1Upstream:
    """A keep-alive connection pool bound to one upstream origin.

    Stale connections: a connection taken from the pool that ends before any byte of the
    response arrived is most likely one the server timed out while it sat idle. The request
    is then sent once more, on a new connection, only if it never reached the socket, or
    if its method is idempotent (a POST may have been acted on, so it is never sent twice).
    """

    def __init__(
        self,
        url: str,
        *,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        max_connections: int = 4096,
        ssl_context: ssl.SSLContext | None = None,
        keepalive: float = KEEPALIVE,
    ) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        default_port = 443 if parts.scheme == "https" else 80
        self.port = parts.port or default_port
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.prefix = parts.path.rstrip("/")
        self.timeouts = timeouts
        self.max_connections = max_connections
        self.keepalive = keepalive
        self.label = f"{self.host}:{self.port}"
        self._host_line = b"host: " + _host_header(parts.netloc, parts.port == default_port) + b"\r\n"
        self._ssl: ssl.SSLContext | None = ssl_context
        self._literal = _is_ip(self.host)
        self._dns: tuple[float, Sequence[AddrInfo]] | None = None  # (expiry, addresses)
        self._idle: deque[Connection] = deque()  # oldest first; taken from the newest end
        self._count = 0  # connections open or opening
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._all: set[Connection] = set()
        self._closed = False
        self.loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.scheme == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()  # verified, with SNI
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn.abort()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await asyncio.sleep(0)  # let the transports' connection_lost run

    def connections_in_use(self) -> int:
        """Connections held for a request right now (not idle in the pool; not being opened)."""
        return sum(1 for conn in self._all if conn.busy)

    def pooled_peers(self) -> set[tuple[str, int]]:
        """(address, port) of every connection kept in the pool (for tests)."""
        peers = set()
        for conn in self._idle:
            if conn.transport is not None:
                peer = conn.transport.get_extra_info("peername")
                peers.add((str(peer[0]), int(peer[1])))
        return peers

    async def send(self, method: str, target: str, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> H1Response:
        """Send a request to origin + target (path and query, already encoded)."""
        assert self.loop is not None, "Upstream.open() was not awaited"
        data = self._request_head(method, target, headers, body)
        tail = b""
        if len(body) > INLINE_BODY:
            tail = body
        elif body:
            data += body
        total = self.timeouts.total
        deadline = None if total is None else self.loop.time() + total
        retried = False
        while True:
            conn, reused = await self._acquire(deadline, fresh=retried)
            try:
                await conn.request(data, tail, method == "HEAD", deadline)
            except _Lost as lost:
                conn.busy = False
                conn.abort()
                stale = reused and not lost.received and (not lost.written or method in IDEMPOTENT)
                if stale and not retried:
                    retried = True
                    continue
                raise UpstreamUnreachable(str(lost)) from None
            except BaseException:
                conn.busy = False
                conn.abort()
                raise
            return H1Response(conn)

    def _request_head(self, method: str, target: str, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> bytes:
        parts = [method.encode("ascii"), b" ", target.encode("latin-1"), b" HTTP/1.1\r\n", self._host_line]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if body or method not in BODYLESS:
            parts.append(b"content-length: %d\r\n" % len(body))
        parts.append(b"\r\n")
        return b"".join(parts)

    # --- the pool ---------------------------------------------------------------------------

    async def _acquire(self, deadline: float | None, *, fresh: bool = False) -> tuple[Connection, bool]:
        """A pooled connection (True) or a new one (False, always so if `fresh`), within max_connections."""
        assert self.loop is not None
        while True:
            if self._closed:
                raise UpstreamUnreachable(f"{self.label}: the client is closed")
            conn = None if fresh else self._pop_idle()
            if conn is not None:
                return conn, True
            if fresh and self._count >= self.max_connections and self._idle:
                self._idle[0].abort()  # make room: the oldest idle one goes (its slot frees shortly)
            if self._count < self.max_connections:
                return await self._connect(deadline), False
            await self._wait_for_slot(deadline)

    def _pop_idle(self) -> Connection | None:
        idle = self._idle
        assert self.loop is not None
        now = self.loop.time()
        while idle:
            conn = idle.pop()
            conn.pooled = False
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if now - conn.idle_since >= self.keepalive:
                conn.abort()
                continue
            return conn
        return None

    async def _wait_for_slot(self, deadline: float | None) -> None:
        assert self.loop is not None
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            if deadline is None:
                await waiter
            else:
                async with asyncio.timeout_at(deadline):
                    await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # the wake-up was ours; pass it on
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout("no upstream connection became free in time") from None
            raise

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self, deadline: float | None) -> Connection:
        assert self.loop is not None
        loop = self.loop
        limit = self.timeouts.connect
        if deadline is not None:
            left = deadline - loop.time()
            limit = left if limit is None else min(limit, left)
        self._count += 1
        try:
            async with asyncio.timeout(limit):
                conn = await self._open_any()
        except TimeoutError:
            self._count -= 1
            self._wake_one()
            raise UpstreamTimeout(f"connecting to {self.label} timed out") from None
        except OSError as exc:
            self._count -= 1
            self._wake_one()
            raise UpstreamUnreachable(f"cannot connect to {self.label}") from exc
        except BaseException:
            self._count -= 1
            self._wake_one()
            raise
        self._all.add(conn)
        return conn

    async def _open_any(self) -> Connection:
        """A connection to the first address that accepts: Happy Eyeballs (RFC 8305) as
        aiohttp does it, so a black-holed IPv6 route costs 250 ms, not the connect timeout."""
        loop = self.loop
        assert loop is not None
        sock = await aiohappyeyeballs.start_connection(await self._resolve(), happy_eyeballs_delay=0.25, interleave=1)
        try:
            _, conn = await loop.create_connection(
                lambda: Connection(self, loop),
                sock=sock,
                ssl=self._ssl,
                server_hostname=self.host if self._ssl is not None else None,
            )
        except BaseException:
            sock.close()
            raise
        return conn

    async def _resolve(self) -> Sequence[AddrInfo]:
        """The host's addresses, cached for DNS_TTL seconds."""
        assert self.loop is not None
        if self._literal:
            six = ":" in self.host
            family = socket.AF_INET6 if six else socket.AF_INET
            address = (self.host, self.port, 0, 0) if six else (self.host, self.port)
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)]
        now = self.loop.time()
        if self._dns is not None and self._dns[0] > now:
            return self._dns[1]
        addresses = await self.loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        self._dns = (now + DNS_TTL, addresses)
        return addresses

    def release(self, conn: Connection) -> None:
        """Back to the pool, or dropped: kept only after a whole response, with keep-alive."""
        conn.busy = False
        if not (conn.complete and conn.reusable and not conn.closed and conn.error is None) or self._closed:
            conn.abort()
            return
        assert self.loop is not None
        if conn.paused:  # the body ended while reading was paused; an idle connection must see EOF
            conn.paused = False
            if conn.transport is not None:
                conn.transport.resume_reading()
        conn.idle_since = self.loop.time()
        conn.pooled = True
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_at(conn.idle_since + self.keepalive, self._sweep)
        self._wake_one()

    def gone(self, conn: Connection) -> None:
        """A connection ended (either side closed it): its slot is free."""
        if conn not in self._all:
            return  # it never made it out of _connect, which counted it out itself
        if conn.pooled:
            conn.pooled = False
            try:
                self._idle.remove(conn)
            except ValueError:
                pass
        self._all.discard(conn)
        self._count -= 1
        self._wake_one()

    def _sweep(self) -> None:
        """Close connections idle for longer than `keepalive`; one timer per pool."""
        assert self.loop is not None
        self._sweeper = None
        idle = self._idle
        expired = self.loop.time() - self.keepalive
        while idle and idle[0].idle_since <= expired:
            conn = idle.popleft()
            conn.pooled = False
            conn.abort()
        if idle:
            self._sweeper = self.loop.call_at(idle[0].idle_since + self.keepalive, self._sweep)


def _host_header(netloc: str, default_port: bool) -> bytes:
    """The Host value for a URL's netloc: no userinfo, no default port, the name in IDNA."""
    hostport = netloc.rpartition("@")[2]
    host, port = hostport, ""
    if not hostport.endswith("]") and ":" in hostport:  # an IPv6 literal ends with ]
        host, _, port = hostport.rpartition(":")
    try:
        name = host.encode("ascii")
    except UnicodeEncodeError:
        name = host.encode("idna")
    return name if default_port or not port else name + b":" + port.encode("ascii")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
