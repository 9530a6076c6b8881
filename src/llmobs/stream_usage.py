"""Exact usage for streams whose client did not ask for it: pure, no I/O.

A chat or legacy-completions stream carries token counts only with
`stream_options.include_usage`. When the client did not ask, llmobs asks on its behalf
(`with_usage_option`), then gives the client the stream it asked for: `UsageChunkFilter`
removes the usage-only chunk and the `"usage": null` field the option adds to every other
chunk. An upstream that refuses the option gets the client's own body once more
(`rejects_usage_option`), and llmobs stops asking it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from llmobs.jsonio import loads
from llmobs.sse import Event, SSEDecoder

USAGE_OPTION = b'"stream_options":{"include_usage":true}'
REJECTION_PEEK = 64 * 1024  # how much of a 400 is read to see whether it is about the option
# Cutting holds back the bytes of an unfinished event. A chat chunk is small; an event this
# large means the stream is not what we think, so the filter stops cutting and relays.
HOLD_LIMIT = 1024 * 1024

_OBJECT_START = re.compile(rb"\A\s*\{")
_USAGE_KEY = b'"usage"'
_COMPACT_NULL_USAGE = b',"usage":null'
_NULL_USAGE = re.compile(rb'"usage"\s*:\s*null')
_NULL_USAGE_FIELD = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,?')


def with_usage_option(obj: dict[str, Any], body: bytes) -> bytes | None:
    """`body` with include_usage on, or None when the client asked for usage itself.

    Without a stream_options key, the field is spliced in after the opening brace, so
    every other byte stays as the client sent it. A null stream_options (the openai SDK
    sends one for `stream_options=None`) asks for nothing, as an absent one does.
    """
    options = obj.get("stream_options")
    if "stream_options" not in obj:
        match = _OBJECT_START.match(body)
        if match is None:  # pragma: no cover - the body decoded to a dict, so a brace starts it
            return None
        rest = body[match.end() :]
        sep = b"" if rest.lstrip().startswith(b"}") else b","
        return body[: match.end()] + USAGE_OPTION + sep + rest
    if options is None or (isinstance(options, dict) and any(options.get("include_usage") is v for v in (None, False))):
        obj["stream_options"] = {**(options or {}), "include_usage": True}
        try:  # escaped as ASCII: a lone surrogate the client escaped stays escaped; no Infinity for 1e400
            return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
        except ValueError:
            return None  # a number JSON cannot write back: the body goes as sent, usage unasked
    return None  # asked for usage already, or a shape the upstream should judge


def rejects_usage_option(status: int, peek: bytes) -> bool:
    """Whether an upstream's answer (its status and first bytes) refuses stream_options."""
    return status == 400 and (b"stream_options" in peek or b"include_usage" in peek)


def has_usage(data: bytes) -> bool:
    """Cheap test: the event's JSON may carry a non-null `usage`."""
    # find() rather than `in`: cheaper on CPython 3.11, and this runs on every stream chunk.
    return data.find(_USAGE_KEY) >= 0 and data.find(b'"usage":null') < 0 and _NULL_USAGE.search(data) is None


def is_usage_chunk(data: bytes) -> bool:
    """The chunk include_usage adds at the end: a `usage` object and no choices."""
    if not has_usage(data):
        return False
    try:
        obj = loads(data)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and isinstance(obj.get("usage"), dict) and not obj.get("choices")


def without_null_usage(raw: bytes) -> bytes:
    """An event's bytes less the `"usage": null` field that include_usage adds to each chunk.

    A quote inside a JSON string is always escaped, so the pattern only matches a key.
    """
    if _USAGE_KEY not in raw:
        return raw
    if _COMPACT_NULL_USAGE in raw:  # how OpenAI and vLLM write it: no regex needed
        return raw.replace(_COMPACT_NULL_USAGE, b"")
    return _NULL_USAGE_FIELD.sub(b"", raw)


class UsageChunkFilter:
    """feed(bytes) -> bytes: an SSE stream less what include_usage added; flush() at the end.

    Every event it decodes is handed to `observe` first, so one decoder serves both the
    cutting and the accounting. Past `hold_limit` bytes of one unfinished event it stops
    cutting and relays everything as it comes (`cutting` turns False).
    """

    __slots__ = ("decoder", "cutting", "observe", "_hold_limit", "_event_limit", "_dropped_last")

    def __init__(
        self,
        observe: Callable[[Event], None] | None = None,
        *,
        hold_limit: int = HOLD_LIMIT,
        event_limit: int | None = None,
    ) -> None:
        # While cutting, hold_limit bounds the decoder; an event over its own bound would be lost.
        self.decoder = SSEDecoder()
        self.cutting = True
        self.observe = observe  # set to None to stop accounting while the cutting goes on
        self._hold_limit = hold_limit
        self._event_limit = event_limit  # the decoder's bound once cutting stops
        self._dropped_last = False

    def feed(self, chunk: bytes) -> bytes:
        events = self.decoder.feed(chunk)
        observe = self.observe
        if not self.cutting:
            if observe is not None:
                for event in events:
                    observe(event)
            return chunk
        out = []
        for event in events:
            if event.tail:  # the LF of a CRLF split across chunks: goes where its event went
                if not self._dropped_last:
                    out.append(event.raw)
                continue
            if observe is not None:
                observe(event)
            self._dropped_last = is_usage_chunk(event.data)
            if not self._dropped_last:
                out.append(without_null_usage(event.raw))
        if self.decoder.pending_size > self._hold_limit:
            self.cutting = False  # relay from here on; see HOLD_LIMIT
            out.append(self.decoder.take_pending())
            self.decoder.max_event_bytes = self._event_limit
        return b"".join(out)

    def flush(self) -> bytes:
        """End of stream: the held-back bytes of an unfinished last event, as they came."""
        return self.decoder.pending if self.cutting else b""
