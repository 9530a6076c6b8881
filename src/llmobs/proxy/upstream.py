"""The upstream HTTP client's surface: the proxy sees only `Client` and `Response` below, and
their errors. The one implementation is the HTTP/1.1 client in h1client.py (its pool) and
h1connection.py (one connection); this module imports neither."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


class UpstreamUnreachable(Exception):
    """The upstream could not be connected to (or dropped us before answering)."""


class UpstreamTimeout(Exception):
    """The upstream did not answer, or stopped sending, in time."""


class UpstreamBroken(Exception):
    """The upstream broke off while sending the body."""


class UnsendableHeader(ValueError):
    """A request header holds a control character (CR, LF, NUL...): written, it would break the
    request's framing (or smuggle a header in), so the client refuses to write it."""

    def __init__(self, name: bytes) -> None:
        super().__init__(f"header {name.decode('latin-1')[:64]!r} has control characters")  # never the value
        self.name = name


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
