"""Content decoding for the observer's copy of a body, behind one interface (as httpx's _decoders).

The client always gets the upstream's bytes as sent; only what llmobs reads is decoded. A
decoder never inflates one chunk past `limit` bytes, nor a body past MAX_RATIO times its
compressed size (after its first MiB): a compression bomb or corrupt data raises
DecodingError, and the caller stops observing that body. Without the ratio, 81 KB of gzip
made 32 MiB of tiny SSE events: 324 MiB held and 6 s of CPU for the proxy.
"""

from __future__ import annotations

import zlib
from typing import Protocol

# Decoded bytes per compressed byte past which a body is a bomb, as Apache POI's ZipSecureFile
# judges one (minimum inflate ratio 0.01). Text and JSON compress 3-20x; deflate can reach 1032x.
MAX_RATIO = 100
_SLACK = 1 << 20  # the first MiB of a body is decoded whatever its ratio


class DecodingError(Exception):
    """The body cannot be decoded within the limit (corrupt, or a bomb)."""


class _Ratio:
    """Compressed bytes in, decoded bytes out, over the whole body."""

    __slots__ = ("read", "written")

    def __init__(self) -> None:
        self.read = self.written = 0

    def check(self, data: bytes, out: bytes) -> bytes:
        self.read += len(data)
        self.written += len(out)
        if self.written > MAX_RATIO * self.read + _SLACK:
            raise DecodingError(f"decoded more than {MAX_RATIO} times its compressed size")
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

    def __init__(self, wbits: int, limit: int) -> None:
        self._obj = zlib.decompressobj(wbits)
        self._limit = limit
        self._ratio = _Ratio()

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
    """br, when the optional `brotli` package is installed."""

    def __init__(self, limit: int) -> None:
        import brotli

        self._obj = brotli.Decompressor()
        self._limit = limit
        self._ratio = _Ratio()

    def decode(self, data: bytes) -> bytes:
        try:
            out: bytes = self._obj.process(data)
        except Exception as exc:  # noqa: BLE001 - brotli raises its own bare `error` type
            raise DecodingError(str(exc)) from None
        if len(out) > self._limit:
            raise DecodingError("decoded chunk over the limit")
        return self._ratio.check(data, out)

    def flush(self) -> bytes:
        return b""


def decoder_for(encoding: bytes, limit: int) -> ContentDecoder | None:
    """A decoder for a Content-Encoding value, or None when llmobs cannot read it."""
    encoding = encoding.strip().lower()
    if encoding in (b"", b"identity"):
        return IdentityDecoder()
    if encoding in (b"gzip", b"x-gzip"):
        return ZlibDecoder(16 + zlib.MAX_WBITS, limit)
    if encoding == b"deflate":
        return ZlibDecoder(zlib.MAX_WBITS, limit)
    if encoding == b"br":
        try:
            return BrotliDecoder(limit)
        except ImportError:
            return None
    return None
