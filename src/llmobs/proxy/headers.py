"""Pure header policy: what goes upstream and what comes back."""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.utils import formatdate
from functools import lru_cache

# RFC 9110 section 7.6.1 hop-by-hop headers, plus the pre-standard ones still seen.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
OWN_PREFIX = b"x-llmobs-"
Headers = list[tuple[bytes, bytes]]
# Bytes no header may carry (RFC 9110 section 5.5: CTLs other than HTAB); the HTTP client
# refuses to send them, so a request carrying them is answered by the proxy.
_FORBIDDEN = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


CREDENTIALS = frozenset({b"authorization", b"api-key", b"x-api-key"})  # OpenAI, Azure, Anthropic
_REWRITTEN = frozenset({b"host", b"content-length", b"expect"})


def request_headers(
    headers: Iterable[tuple[bytes, bytes]],
    *,
    drop: frozenset[bytes] = frozenset(),
    credential: tuple[bytes, bytes] | None = None,
) -> Headers:
    """Client headers for the upstream: no hop-by-hop, no x-llmobs-*, no Host (rewritten
    by the client library), no Content-Length (recomputed), no Expect (the body is already
    read; forwarded, `100-continue` makes the HTTP client wait for a 100 the upstream may
    never send). With a `credential` (the
    upstream key the operator configured, as a header), every key header the client sent
    is replaced by it. Everything else is kept as sent, duplicates included."""
    headers = list(headers)
    named = _connection_tokens(headers)
    out: Headers = []
    for name, value in headers:
        lower = name.lower()
        if (
            lower in HOP_BY_HOP
            or lower in named
            or lower.startswith(OWN_PREFIX)
            or lower in _REWRITTEN
            or lower in drop
        ):
            continue
        if credential is not None and lower in CREDENTIALS:
            continue
        out.append((name, value))
    if credential is not None:
        out.append(credential)
    return out


def response_headers(headers: Iterable[tuple[bytes, bytes]], *, drop: frozenset[bytes] = frozenset()) -> Headers:
    """Upstream headers for the client, as sent (names lower-cased), less hop-by-hop ones and `drop`."""
    headers = list(headers)
    named = _connection_tokens(headers)
    return [
        (name.lower(), value)
        for name, value in headers
        if (lower := name.lower()) not in HOP_BY_HOP and lower not in named and lower not in drop
    ]


SERVER = b"llmobs"


def with_defaults(headers: Headers, now: int) -> Headers:
    """`headers` (lower-case names) plus `date` (for `now`, epoch seconds) and `server` where missing.

    `Date` is a singleton field (RFC 9110 section 6.6.1): a proxy relays the upstream's and
    adds one only when there is none; `Server` likewise.
    """
    has_date = has_server = False
    for name, _ in headers:
        if name == b"date":
            has_date = True
        elif name == b"server":
            has_server = True
    if not has_date:
        headers.append((b"date", http_date(now)))
    if not has_server:
        headers.append((b"server", SERVER))
    return headers


@lru_cache(maxsize=2)
def http_date(epoch_seconds: int) -> bytes:
    """An IMF-fixdate for a Date header (RFC 9110 section 5.6.7), computed once a second."""
    return formatdate(epoch_seconds, usegmt=True).encode("ascii")


def unsendable(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The name of the first header holding a control character (CR, LF, NUL...), or None."""
    for name, value in headers:
        if _FORBIDDEN.search(name) or _FORBIDDEN.search(value):
            return name
    return None


def text(value: bytes) -> str:
    """A header as the str the websockets client wants; it encodes str as UTF-8, so UTF-8 bytes
    round-trip exactly. Other bytes (obsolete latin-1 text) cannot, and go as latin-1 text
    re-encoded (the HTTP client sends bytes as they are)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def header_map(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The first value of each header, by its (already lower-case) name."""
    out: dict[bytes, bytes] = {}
    for name, value in headers:
        out.setdefault(name, value)
    return out
