"""Provider rate-limit headroom, read from response headers or a Realtime event; pure.

OpenAI-compatible upstreams send `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the
reset as a Go duration (`1s`, `6m0s`, `1h2m3.5s`, `120ms`). Anthropic sends
`anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`, the
reset as an RFC 3339 time, which becomes seconds from the response's `date` header (else from
the wall-clock time the caller hands in). Realtime sessions send the same figures in
`rate_limits.updated` events.

Only those names are read, and a value is believed only when it is a plain non-negative finite
number (or duration, or time) of at most 64 characters: anything else is ignored, never raised.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

from llmobs.records import RateLimit

RESOURCES = ("requests", "tokens", "input_tokens", "output_tokens")
_FIELDS = ("limit", "remaining", "reset")
# Header name -> (resource, index of the field in _FIELDS).
_NAMES: dict[bytes, tuple[str, int]] = {
    **{f"x-ratelimit-{f}-{r}".encode(): (r, i) for r in ("requests", "tokens") for i, f in enumerate(_FIELDS)},
    **{
        f"anthropic-ratelimit-{r.replace('_', '-')}-{f}".encode(): (r, i)
        for r in RESOURCES
        for i, f in enumerate(_FIELDS)
    },
}
_MAX_VALUE = 64  # characters: any real figure is far shorter; longer ones are not parsed at all
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_GO_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_REALTIME_ENTRIES = 8  # a rate_limits list longer than this is not a real one


def from_headers(headers: Iterable[tuple[bytes, bytes]], wall: float) -> tuple[RateLimit, ...]:
    """The rate limits a response's headers report, in RESOURCES order; `wall` is time.time() now."""
    found: dict[str, list[bytes | None]] = {}
    date: bytes | None = None
    for name, value in headers:
        lowered = name.lower()
        key = _NAMES.get(lowered)
        if key is not None:
            fields = found.get(key[0])
            if fields is None:
                fields = found[key[0]] = [None, None, None]
            if fields[key[1]] is None:  # the first of repeated headers, as for any other field
                fields[key[1]] = value
        elif lowered == b"date":
            date = value
    if not found:
        return ()
    now = wall
    if date is not None and any(f[2] is not None and b":" in f[2] for f in found.values()):
        now = _date(date) or wall  # a reset given as a time (a duration has no colon); parsing costs
    limits = []
    for resource in RESOURCES:
        fields = found.get(resource)
        if fields is not None:
            limit = RateLimit(resource, number(fields[0]), number(fields[1]), reset_seconds(fields[2], now))
            if _reported(limit):
                limits.append(limit)
    return tuple(limits)


def from_realtime(rate_limits: Any) -> tuple[RateLimit, ...]:
    """The `rate_limits` list of a Realtime `rate_limits.updated` event, as rate limits."""
    if not isinstance(rate_limits, list) or len(rate_limits) > _REALTIME_ENTRIES:
        return ()
    found: dict[str, RateLimit] = {}
    for entry in rate_limits:
        if not isinstance(entry, dict) or entry.get("name") not in RESOURCES:
            continue
        resource = str(entry["name"])
        limit = RateLimit(
            resource,
            limit=_json_number(entry.get("limit")),
            remaining=_json_number(entry.get("remaining")),
            reset_seconds=_json_number(entry.get("reset_seconds")),
        )
        if _reported(limit):
            found.setdefault(resource, limit)
    return tuple(found[r] for r in RESOURCES if r in found)


def _reported(limit: RateLimit) -> bool:
    return limit.limit is not None or limit.remaining is not None or limit.reset_seconds is not None


def number(value: bytes | None) -> float | None:
    """A count from a header: digits, maybe a fraction; anything else (sign, exponent, inf) is None."""
    if value is None or len(value) > _MAX_VALUE:
        return None
    if value.isdigit():  # the usual case; bytes.isdigit() is ASCII digits only
        return float(value)
    text = value.strip().decode("ascii", "replace")
    return float(text) if _NUMBER.fullmatch(text) else None


def reset_seconds(value: bytes | None, now: float) -> float | None:
    """Seconds until a reset: a Go duration, or an RFC 3339 time counted from `now` (0 once past)."""
    if value is None or len(value) > _MAX_VALUE:
        return None
    text = value.strip().decode("utf-8", "replace")
    if ":" not in text:  # no time of day: a duration, if anything
        return go_duration(text)
    if _RFC3339.fullmatch(text):
        at = _rfc3339(text)
        return None if at is None else max(0.0, at - now)
    return None


@lru_cache(maxsize=1024)  # the same few resets come back on every response; bounded, as upstreams choose
def go_duration(text: str) -> float | None:
    """Seconds in a Go duration string (`0`, `120ms`, `1.5s`, `6m0s`, `1h2m3.5s`); None if it is not one."""
    if text == "0":
        return 0.0
    seconds, end = 0.0, 0
    for part in _GO_PART.finditer(text):
        if part.start() != end:  # something between two parts: not a duration
            return None
        seconds += float(part[1]) * _GO_UNITS[part[2]]
        end = part.end()
    return seconds if 0 < end == len(text) and math.isfinite(seconds) else None


def _rfc3339(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.upper()).timestamp()
    except (ValueError, OverflowError):  # month 13, year 0, ...
        return None


def _date(value: bytes) -> float | None:
    """An HTTP `date` header as a POSIX time; None when it is not one."""
    if len(value) > _MAX_VALUE:
        return None
    try:
        at = parsedate_to_datetime(value.decode("ascii"))
    except (ValueError, TypeError, IndexError, UnicodeDecodeError):
        return None
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()


def _json_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        result = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return result if math.isfinite(result) and result >= 0 else None
