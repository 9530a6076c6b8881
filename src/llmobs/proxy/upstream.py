"""The one module that knows the upstream HTTP client (aiohttp).

aiohttp was measured cheapest per request on this workload (see the brief); keeping it
behind this small surface lets a benchmark swap it.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

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


class UpstreamResponse:
    """Status, raw headers and a chunk iterator over the undecoded body."""

    __slots__ = ("_resp", "_head", "status", "headers")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self._head = b""  # bytes read by peek(), handed out first by chunks()
        self.status: int = resp.status
        self.headers: tuple[tuple[bytes, bytes], ...] = resp.raw_headers

    async def peek(self, size: int) -> bytes:
        """Read up to about `size` bytes of the body without consuming them for chunks()."""
        while len(self._head) < size:
            chunk = await self._read()
            if not chunk:
                break
            self._head += chunk
        return self._head

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
    """A shared client session bound to one upstream origin."""

    def __init__(self, url: str, *, timeouts: Timeouts = Timeouts(), max_connections: int = 4096) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.prefix = parts.path.rstrip("/")
        self.timeouts = timeouts
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300, enable_cleanup_closed=False)
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

    async def send(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> UpstreamResponse:
        """Send a request to origin + target (path and query, already encoded)."""
        assert self._session is not None, "Upstream.open() was not awaited"
        url = URL(self.origin + target, encoded=True)
        try:
            # aiohttp writes a large bytes body in one go, warning that it may stall the loop;
            # a BytesIO (sharing the bytes, not copying them) is written a piece at a time.
            data = (io.BytesIO(body) if len(body) > _LARGE_BODY else body) if body else None
            resp = await self._session.request(method, url, headers=headers, data=data, allow_redirects=False)
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
