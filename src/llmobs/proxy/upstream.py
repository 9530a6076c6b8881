"""The upstream HTTP client's surface, and its aiohttp implementation.

The proxy sees only `Client` and `Response` below; `make_upstream` picks the implementation,
by LLMOBS_UPSTREAM_CLIENT: the hand-written HTTP/1.1 client in h1client.py (the default), or
aiohttp (here). Both behind one small surface, a benchmark can swap them (benchmarks/ab.py clients).
"""

from __future__ import annotations

import io
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from llmobs.proxy.headers import text

ClientName = Literal["aiohttp", "h1"]
_LARGE_BODY = 1024 * 1024  # aiohttp's own threshold for its warning


class UpstreamUnreachable(Exception):
    """The upstream could not be connected to (or dropped us before answering)."""


class UpstreamTimeout(Exception):
    """The upstream did not answer, or stopped sending, in time."""


class UpstreamBroken(Exception):
    """The upstream broke off while sending the body."""


class UpstreamBadResponse(Exception):
    """The upstream answered with something that is not an HTTP response."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float | None = 10.0
    read: float | None = 600.0  # longest silence between two reads
    total: float | None = None


class Response(Protocol):
    """An upstream response whose head has arrived: status, raw headers, the body to come."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]: ...

    async def peek(self, size: int) -> bytes:
        """Read up to about `size` bytes of the body without consuming them for chunks()."""

    def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive, still content-encoded (peeked bytes first)."""

    def close(self) -> None:
        """Drop the connection (used when the client goes away mid-response)."""

    def release(self) -> None:
        """Give the connection back: pooled if the body was read to its end, else dropped."""


class Client(Protocol):
    """A connection pool bound to one upstream origin."""

    host: str
    port: int
    origin: str  # scheme://host[:port]
    timeouts: Timeouts

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, method: str, target: str, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Response:
        """Send a request to origin + target (path and query, already encoded); headers as bytes."""

    def connections_in_use(self) -> int:
        """Connections held for a request right now (not idle in the pool)."""

    def pooled_peers(self) -> set[tuple[str, int]]:
        """(address, port) of every connection idle in the pool (for tests)."""


def make_upstream(
    url: str,
    *,
    client: ClientName = "h1",
    timeouts: Timeouts = Timeouts(),
    max_connections: int = 4096,
    ssl_context: ssl.SSLContext | None = None,
) -> Client:
    """The upstream client for `url`, by implementation name."""
    if client == "h1":
        from llmobs.proxy.h1client import H1Upstream

        return H1Upstream(url, timeouts=timeouts, max_connections=max_connections, ssl_context=ssl_context)
    return Upstream(url, timeouts=timeouts, max_connections=max_connections, ssl_context=ssl_context)


class PeekableBody:
    """A response body that can be looked into before it is relayed: peek() keeps what it read
    in `_head`, which chunks() hands out first. Subclasses supply `_read()`."""

    __slots__ = ("_head",)

    def __init__(self) -> None:
        self._head = b""

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
        raise NotImplementedError


class UpstreamResponse(PeekableBody):
    """Status, raw headers and a chunk iterator over the undecoded body."""

    __slots__ = ("_resp", "status", "headers")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        super().__init__()
        self._resp = resp
        self.status: int = resp.status
        self.headers: tuple[tuple[bytes, bytes], ...] = resp.raw_headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive, still content-encoded."""
        if self._head:
            head, self._head = self._head, b""
            yield head
        read = self._read
        while chunk := await read():
            yield chunk

    async def _read(self) -> bytes:
        """The next bytes of the body; b"" at its end."""
        try:
            return await self._resp.content.readany()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamBroken(type(exc).__name__) from exc

    def close(self) -> None:
        """Drop the connection (used when the client goes away mid-response)."""
        self._resp.close()

    def release(self) -> None:
        self._resp.release()


class Upstream:
    """A shared aiohttp client session bound to one upstream origin."""

    def __init__(
        self,
        url: str,
        *,
        timeouts: Timeouts = Timeouts(),
        max_connections: int = 4096,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.prefix = parts.path.rstrip("/")
        self.timeouts = timeouts
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            ttl_dns_cache=300,
            enable_cleanup_closed=False,
            ssl=self.ssl_context if self.ssl_context is not None else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # relay bytes as sent; the observer decodes its own copy
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            timeout=aiohttp.ClientTimeout(
                total=self.timeouts.total, sock_connect=self.timeouts.connect, sock_read=self.timeouts.read
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def connections_in_use(self) -> int:
        connector = self._session.connector if self._session is not None else None
        return len(connector._acquired) if isinstance(connector, aiohttp.TCPConnector) else 0

    def pooled_peers(self) -> set[tuple[str, int]]:
        """(host, port) of every connection kept in the pool (for tests)."""
        connector = self._session.connector if self._session is not None else None
        if not isinstance(connector, aiohttp.TCPConnector):
            return set()
        return {(key.host, key.port or 0) for key in connector._conns}

    async def send(
        self, method: str, target: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        """Send a request to origin + target (path and query, already encoded)."""
        assert self._session is not None, "Upstream.open() was not awaited"
        url = URL(self.origin + target, encoded=True)
        # aiohttp takes str and writes UTF-8: UTF-8 bytes round-trip, other bytes cannot.
        pairs = [(text(name), text(value)) for name, value in headers]
        try:
            # aiohttp writes a large bytes body in one go, warning that it may stall the loop;
            # a BytesIO (sharing the bytes, not copying them) is written a piece at a time.
            data = (io.BytesIO(body) if len(body) > _LARGE_BODY else body) if body else None
            resp = await self._session.request(method, url, headers=pairs, data=data, allow_redirects=False)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(str(exc) or "timed out") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnreachable(f"cannot connect to {self.host}:{self.port}") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise UpstreamUnreachable(f"{self.host}:{self.port} closed the connection") from exc
        except aiohttp.ClientResponseError as exc:
            # aiohttp's parser errors; the message quotes upstream bytes, so it is not passed on.
            raise UpstreamBadResponse(f"{self.host}:{self.port} sent an invalid HTTP response") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(type(exc).__name__) from exc
        return UpstreamResponse(resp)
