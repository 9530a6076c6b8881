"""Content decoding for the observer's copy of a body, behind one interface (as httpx's _decoders).

The client always gets the upstream's bytes as sent; only what llmobs reads is decoded. A
decoder never inflates one chunk past `limit` bytes, nor (with `max_ratio`, for streams) a
body past that many times its compressed size after its first MiB: a compression bomb or
corrupt data raises DecodingError, and the caller stops observing that body. Without the
ratio, 81 KB of gzip made 32 MiB of tiny SSE events: 324 MiB held and 6 s of CPU for the
proxy. A whole body needs no ratio: what it inflates to is bounded by the body limit, and a
runaway JSON answer (a long run of spaces) legitimately compresses 900 to 1.
"""

from __future__ import annotations

import zlib
from typing import Protocol

# Decoded bytes per compressed byte past which a stream is a bomb, as Apache POI's ZipSecureFile
# judges one (minimum inflate ratio 0.01). SSE events compress 3-60x; deflate can reach 1032x.
MAX_RATIO = 100
_SLACK = 1 << 20  # the first MiB is decoded whatever its ratio


class DecodingError(Exception):
    """The body cannot be decoded within the limit (corrupt, or a bomb)."""


class _Ratio:
    """Compressed bytes in, decoded bytes out, over the whole body; None: no bound."""

    __slots__ = ("max", "read", "written")

    def __init__(self, max_ratio: int | None) -> None:
        self.max = max_ratio
        self.read = self.written = 0

    def check(self, data: bytes, out: bytes) -> bytes:
        if self.max is not None:
            self.read += len(data)
            self.written += len(out)
            if self.written > self.max * self.read + _SLACK:
                raise DecodingError(f"decoded more than {self.max} times its compressed size")
        return out


class ContentDecoder(Protocol):
    def decode(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class IdentityDecoder:
    """No content-encoding."""

    def decode(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class ZlibDecoder:
    """gzip (`wbits=16+MAX_WBITS`) or deflate (zlib-wrapped)."""

    def __init__(self, wbits: int, limit: int, max_ratio: int | None = None) -> None:
        self._obj = zlib.decompressobj(wbits)
        self._limit = limit
        self._ratio = _Ratio(max_ratio)

    def decode(self, data: bytes) -> bytes:
        try:
            out = self._obj.decompress(data, self._limit)
        except zlib.error as exc:
            raise DecodingError(str(exc)) from None
        if self._obj.unconsumed_tail:  # one chunk inflating past the limit: a bomb
            raise DecodingError("decoded chunk over the limit")
        return self._ratio.check(data, out)

    def flush(self) -> bytes:
        try:
            return self._ratio.check(b"", self._obj.flush())
        except zlib.error as exc:
            raise DecodingError(str(exc)) from None


class BrotliDecoder:
    """br, when the optional `brotli` package (1.2 or later) is installed."""

    def __init__(self, limit: int, max_ratio: int | None = None) -> None:
        import brotli

        self._obj = brotli.Decompressor()
        if not hasattr(self._obj, "can_accept_more_data"):  # before 1.2 output cannot be bounded
            raise ImportError("brotli >= 1.2 is needed to decode within a limit")
        self._limit = limit
        self._ratio = _Ratio(max_ratio)

    def decode(self, data: bytes) -> bytes:
        try:
            # Bounded as it inflates: 1 KB of br can make 700 MiB (the CVE-2025-6176 pattern).
            out: bytes = self._obj.process(data, output_buffer_limit=self._limit)
        except Exception as exc:  # noqa: BLE001 - brotli raises its own bare `error` type
            raise DecodingError(str(exc)) from None
        if len(out) > self._limit or not self._obj.can_accept_more_data():  # more was still to come
            raise DecodingError("decoded chunk over the limit")
        return self._ratio.check(data, out)

    def flush(self) -> bytes:
        return b""


def decoder_for(encoding: bytes, limit: int, max_ratio: int | None = None) -> ContentDecoder | None:
    """A decoder for a Content-Encoding value, or None when llmobs cannot read it."""
    encoding = encoding.strip().lower()
    if encoding in (b"", b"identity"):
        return IdentityDecoder()
    if encoding in (b"gzip", b"x-gzip"):
        return ZlibDecoder(16 + zlib.MAX_WBITS, limit, max_ratio)
    if encoding == b"deflate":
        return ZlibDecoder(zlib.MAX_WBITS, limit, max_ratio)
    if encoding == b"br":
        try:
            return BrotliDecoder(limit, max_ratio)
        except ImportError:
            return None
    return None
