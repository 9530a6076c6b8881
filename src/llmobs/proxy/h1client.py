"""A lean HTTP/1.1 upstream client: keep-alive pools of connections (h1connection.py) parsed by httptools.

The surface in upstream.py (send, peek, chunks, release, close). Chosen over aiohttp, which it
replaced (benchmarks/AB_CLIENT.md: 0.60x its CPU per request): header bytes go out exactly as
given (aiohttp re-encodes them as UTF-8); the request head is one bytes object; the read
timeout is one timer per connection, checked against the time of the last read, instead of a
timer re-armed on every read; and it can see a pooled socket's EOF before reusing it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohappyeyeballs

from llmobs.proxy import headers as hp
from llmobs.proxy.h1connection import Connection, H1Response, Lost, State, chunked
from llmobs.proxy.upstream import (
    Timeouts,
    UnsendableHeader,
    UpstreamTimeout,
    UpstreamUnreachable,
)

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]  # as getaddrinfo gives them
DEFAULT_TIMEOUTS = Timeouts()
KEEPALIVE = 15.0  # seconds an idle pooled connection is kept (aiohttp's default)
PROBATION = 0.25  # seconds the first connection after a kind of response is watched before reuse
DNS_TTL = 60.0
INLINE_BODY = 64 * 1024  # bodies up to this size are copied into the head: one write, one segment
# RFC 9110 section 9.2.2. Only these are sent again after a reused connection failed silently.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Headers that mark a request as safe to send again (the IETF idempotency-key draft; Go honours both).
IDEMPOTENCY_KEYS = frozenset({b"idempotency-key", b"x-idempotency-key"})
IN_USE = frozenset({State.WAITING, State.BODY, State.DONE})  # a request holds the connection
# Methods that get no Content-Length when they carry no body (as aiohttp does).
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})


class H1Upstream:
    """A keep-alive connection pool bound to one upstream origin.

    Stale connections. No client gets an error the upstream did not give it:
    - a connection is reused after a response only once the upstream has shown that it keeps
      connections open after that kind of response (chunked or not): the first of each kind is
      watched for PROBATION seconds before it joins the pool, and meanwhile the others are
      closed. A real llama-server announces keep-alive, yet shuts a connection down after each
      stream and drains (reads and drops) whatever arrives: a request written into it in that
      moment got no answer and no error to tell it from a request the server read and then died
      on. Such a kind of response is never pooled again;
    - a pooled connection whose socket is readable (the server closed it, or sent bytes nobody
      asked for) is never reused: checked just before reuse, as urllib3 and httpcore do;
    - a request on a reused connection that ends before any byte of a response arrived is sent
      once more, on a new connection, when the upstream provably did not act on it: it never
      reached the socket; or the upstream reset the connection, which a close with our request
      unread does; or it may be replayed anyway: an idempotent method, or an Idempotency-Key
      header (as Go's transport). A clean close after the request was written is ambiguous
      (the server may have read it and acted on it), so a POST is then not sent twice.
    """

    def __init__(
        self,
        url: str,
        *,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        max_connections: int = 4096,
        ssl_context: ssl.SSLContext | None = None,
        keepalive: float = KEEPALIVE,
        keeps_open: bool | None = None,
    ) -> None:
        """`keeps_open`: whether the upstream is known to keep connections open after responses
        (None: each kind of response is learned by a probation, see above)."""
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
        # Whether the upstream keeps a connection open after a response, by the response's
        # framing (chunked: True): None until a probation tells (see the class docstring).
        self._keeps_open: dict[bool, bool | None] = {True: keeps_open, False: keeps_open}
        self._probation: dict[Connection, bool] = {}  # connection -> its response was chunked
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
        return sum(1 for conn in self._all if conn.state in IN_USE)

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
            except Lost as lost:
                conn.abort()
                stale = (
                    reused and not lost.received and (not lost.written or lost.reset or _replayable(method, headers))
                )
                if stale and not retried:
                    retried = True
                    continue
                raise UpstreamUnreachable(str(lost)) from None
            except BaseException:
                conn.abort()
                raise
            return H1Response(conn)

    def _request_head(self, method: str, target: str, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> bytes:
        """The request line and headers, as one bytes object; header bytes are checked where they
        are written (as h11 does): a control character raises UnsendableHeader."""
        bad = hp.unsendable(headers)
        if bad is not None:
            raise UnsendableHeader(bad)
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
            if conn.state is not State.IDLE or conn.transport is None or conn.transport.is_closing():
                continue
            if conn.readable():  # closed by the server, its FIN not yet seen by the event loop
                conn.abort()
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
        if not conn.finish() or self._closed:
            conn.abort()
            return
        assert self.loop is not None
        keeps = self._keeps_open
        if not (keeps[True] and keeps[False]):
            kind = chunked(conn.headers)
            if keeps[kind] is None and kind not in self._probation.values():
                self._probation[conn] = kind
                self.loop.call_later(PROBATION, self._probation_over, conn)
                return
            if not keeps[kind]:  # it closes them (or a probation is under way): not reused
                conn.abort()
                return
        self._pool(conn)

    def _probation_over(self, conn: Connection) -> None:
        kind = self._probation.pop(conn, None)
        if kind is not None and conn.state is State.IDLE and not self._closed:
            self._keeps_open[kind] = True
            self._pool(conn)

    def _pool(self, conn: Connection) -> None:
        assert self.loop is not None
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
        kind = self._probation.pop(conn, None)
        if kind is not None and not self._closed:
            self._keeps_open[kind] = False  # the upstream closed it right after its response
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


def _replayable(method: str, headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether a request may go out twice: an idempotent method, or one the client marked so."""
    return method in IDEMPOTENT or any(name.lower() in IDEMPOTENCY_KEYS for name, _ in headers)


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
