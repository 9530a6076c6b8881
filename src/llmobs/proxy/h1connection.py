"""One HTTP/1.1 upstream connection (an asyncio Protocol parsed by httptools) and the response
read from it. The pool that owns connections is `h1client.py`."""

from __future__ import annotations

import asyncio
import select
from collections.abc import AsyncIterator
from enum import Enum
from typing import Protocol

import httptools

from llmobs.proxy.upstream import (
    Timeouts,
    UpstreamBadResponse,
    UpstreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
)

HIGH_WATER = 256 * 1024  # body bytes queued unread before the socket stops being read
MAX_HEAD = 64 * 1024  # a response head longer than this is refused (nginx refuses past 4-8 KiB)


class State(Enum):
    """Where a connection is. The connection alone changes it (as h11 and httpcore keep theirs)."""

    IDLE = "idle"  # open, carrying no request: pooled, on probation, or just made
    WAITING = "waiting"  # a request written; its response head not yet whole
    BODY = "body"  # the head arrived; the body is arriving
    DONE = "done"  # the response is whole (or ended with the connection); it waits to be released
    CLOSED = "closed"  # ended by either side, or dropped: never carries a request again


_IDLE, _WAITING, _BODY, _DONE, _CLOSED = State  # module constants: the hot path compares with `is`


class Pool(Protocol):
    """What a connection needs of the pool that owns it (h1client.H1Upstream)."""

    label: str  # host:port, for messages
    timeouts: Timeouts

    def release(self, conn: Connection) -> None:
        """Take back a connection whose response was read (or dropped)."""

    def gone(self, conn: Connection) -> None:
        """A connection ended: its slot is free."""


class Lost(UpstreamUnreachable):
    """The connection ended before a whole response head arrived."""

    def __init__(self, message: str, *, written: bool, received: bool, reset: bool = False) -> None:
        super().__init__(message)
        self.written = written  # our request had been handed to the socket
        self.received = received  # some response byte had arrived
        # The peer reset the connection (no FIN first): it closed its socket with our request
        # unread in it, which a close with unread data does.
        self.reset = reset


class Connection(asyncio.Protocol):
    """One upstream connection carrying one request at a time, its `state` its own.

    httptools calls on_header/on_body/... from inside feed_data; the response's reader waits
    on `waiter`, which every callback that changes what it can see resolves. The pool moves a
    connection only through request(), finish() and abort(); `pooled` and `idle_since` are the
    pool's own bookkeeping.
    """

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.label = pool.label
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.state = _IDLE
        self.reusable = True  # cleared by keep-alive off, an error, stray bytes, a HEAD
        self.pooled = False
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None  # the read timeout's; outlives requests
        self.poller: select.poll | None = None  # tells a pooled connection's EOF before it is reused
        self._reset()

    def _reset(self) -> None:
        self.written = False
        self.received = False
        self.head_only = False
        self.interim = False
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
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.poller = select.poll()
            self.poller.register(sock.fileno(), select.POLLIN)

    def readable(self) -> bool:
        """Whether the socket has something to read (an EOF, a reset, stray bytes) that the event
        loop has not yet seen: an idle connection that is readable is not reused (as urllib3 and
        httpcore check). A server that closed it (its idle timeout, or right after a response
        while announcing keep-alive) is caught here before a request is written into it."""
        poller = self.poller
        try:
            return poller is not None and bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()  # uvloop: the cached time of this loop iteration
        state = self.state
        if state is not _BODY and state is not _WAITING:
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
        if self.state is _WAITING and self.error is None:
            # A head still incomplete: the header being parsed may never end (httptools holds it).
            self.head_read += len(data)
            if self.head_read > MAX_HEAD:
                self._head_too_long()

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self.state is _BODY and self.error is None and exc is None and self._close_delimited():
            self._completed()  # the end of the connection is the end of this body
            self._wake()
        else:
            self._interrupt("upstream closed the connection mid-body", reset=isinstance(exc, ConnectionError))
        if self.state is not _DONE:  # a whole response stays readable
            self.state = _CLOSED
        self._stop_timer(everything=True)
        self.pool.gone(self)

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.state is _DONE:  # a second response to one request: never trust this connection again
            self.reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.state is not _DONE:
            self.headers.append((name, value))
            self.head_bytes += len(name) + len(value)
            if self.head_bytes > MAX_HEAD:
                self._head_too_long()

    def on_headers_complete(self) -> None:
        if self.state is not _WAITING or self.error is not None:
            return
        status = self.parser.get_status_code()
        if status < 200:  # 1xx interim responses are skipped (101 ends in HttpParserUpgrade)
            self.interim = True
            self.headers = []
            return
        self.status = status
        self.state = _BODY
        if self.head_only:  # a HEAD response has no body whatever its headers say
            self.reusable = False  # the parser cannot be told so; do not trust its state after
            self._completed()
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.state is not _BODY:
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
        if self.state is not _BODY:
            return
        if not self.parser.should_keep_alive():
            self.reusable = False
        self._completed()
        self._wake()

    # --- the request ------------------------------------------------------------------------

    async def request(self, data: bytes, tail: bytes, head_only: bool, deadline: float | None) -> None:
        """Write one request (`tail`: a large body, written apart) and wait for its response head."""
        transport = self.transport
        if self.state is not _IDLE or transport is None or transport.is_closing():
            raise Lost(f"{self.label} closed the connection", written=False, received=False)
        self._reset()
        self.state = _WAITING
        self.head_only = head_only
        self.deadline = deadline
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
        while self.state is _WAITING:
            self.waiter = self.loop.create_future()
            await self.waiter
        if self.state is _CLOSED:
            raise self.error or self._lost(written=True)

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

    def finish(self) -> bool:
        """The response is done with: back to IDLE (True) if the connection can carry another
        request (the response whole, keep-alive, no error), else dropped (False)."""
        transport = self.transport
        if self.state is not _DONE or not self.reusable or self.error is not None or transport is None:
            self.abort()
            return False
        self.state = _IDLE
        if self.paused:  # the body ended while reading was paused; an idle connection must see EOF
            self.paused = False
            transport.resume_reading()
        return True

    def fail(self, exc: Exception) -> None:
        """End the request with `exc` (seen by the reader after what is queued) and the connection."""
        if self.error is None and self.state is not _DONE:
            self.error = exc
        self._wake()
        self.abort()

    def abort(self) -> None:
        """Drop the connection; its connection_lost returns its slot to the pool."""
        self.reusable = False
        self._stop_timer(everything=True)
        self._interrupt("the connection was dropped mid-body")
        if self.state is not _DONE:  # a whole response stays readable
            self.state = _CLOSED
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # --- inside -----------------------------------------------------------------------------

    def _interrupt(self, mid_body: str, *, reset: bool = False) -> None:
        """A response under way ends with the connection: its reader is told why."""
        state = self.state
        if (state is _WAITING or state is _BODY) and self.error is None:
            if state is _WAITING:
                self.error = self._lost(written=self.written, reset=reset)
            else:
                self.error = UpstreamBroken(mid_body)
            self._wake()

    def _lost(self, *, written: bool, reset: bool = False) -> Lost:
        """The connection ended before this request's response head (the request under way)."""
        return Lost(f"{self.label} closed the connection", written=written, received=self.received, reset=reset)

    def _head_too_long(self) -> None:
        self.fail(UpstreamBadResponse(f"{self.label} sent a response head over {MAX_HEAD} bytes"))

    def _parse_failed(self) -> None:
        if self.state is _DONE:
            self.abort()  # junk after a whole response (a Content-Length too short): not reusable
        elif self.state is _WAITING:
            self.fail(UpstreamBadResponse(f"{self.label} sent an invalid HTTP response"))
        else:
            self.fail(UpstreamBroken("upstream sent an invalid body"))

    def _completed(self) -> None:
        self.state = _DONE
        self._stop_timer()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _close_delimited(self) -> bool:
        """Whether the body is framed by the end of the connection (no length, not chunked)."""
        headers = self.headers
        return not chunked(headers) and not any(name.lower() == b"content-length" for name, _ in headers)

    # The read timeout: one timer per connection, not one per read. It fires at the earliest
    # moment the timeout could be due and, when reads came since, is set again from the last.

    def _check_read(self) -> None:
        self.timer = None
        read = self.pool.timeouts.read
        if (self.state is not _WAITING and self.state is not _BODY) or read is None:
            return  # no response under way: request() sets the timer again
        now = self.loop.time()
        if self.paused:
            self.last_read = now  # the reader is behind; the upstream is not silent
        elif now - self.last_read >= read:
            self.fail(UpstreamTimeout("the upstream sent nothing in time"))
            return
        self.timer = self.loop.call_at(self.last_read + read, self._check_read)

    def _deadline_passed(self) -> None:
        self.deadline_timer = None
        if self.state is _WAITING or self.state is _BODY:
            self.fail(UpstreamTimeout("the upstream did not finish in time"))

    def _stop_timer(self, *, everything: bool = False) -> None:
        """Cancel the request's deadline; with `everything`, the read timer too."""
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        if everything and self.timer is not None:
            self.timer.cancel()
            self.timer = None


def chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a response's body is chunked (by its Transfer-Encoding)."""
    for name, value in headers:
        if len(name) == 17 and name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            return True
    return False


class H1Response:
    """Status, raw headers and a chunk iterator over the undecoded body, which peek() can look
    into before it is relayed (what it read, kept in `_head`, chunks() hands out first)."""

    __slots__ = ("_conn", "_head", "status", "headers")

    def __init__(self, conn: Connection) -> None:
        self._head = b""
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
            elif conn.state is not _BODY:  # whole (an interrupted body has its error)
                return
            else:
                await conn.wait()

    async def peek(self, size: int) -> bytes:
        """Read up to about `size` bytes of the body without consuming them for chunks()."""
        while len(self._head) < size:
            chunk = await self._read()
            if not chunk:
                break
            self._head += chunk
        return self._head

    async def _read(self) -> bytes:
        """The next bytes of the body; b"" at its end."""
        conn = self._conn
        while conn is not None:
            if conn.body:
                return conn.take()
            if conn.error is not None:
                raise conn.error
            if conn.state is not _BODY:
                break
            await conn.wait()
        return b""

    def close(self) -> None:
        """Drop the connection (used when the client goes away mid-response)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    def release(self) -> None:
        """Back to the pool if the response ended cleanly and keep-alive allows; else dropped."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.pool.release(conn)
