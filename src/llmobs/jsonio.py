"""JSON decoding for the hot path: orjson, with the standard library behind it."""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes) -> Any:
    """Decode JSON; raises ValueError (or RecursionError) when the standard library would.

    orjson is several times faster on LLM bodies but stricter (NaN, lone surrogates,
    nesting past 1024): on its refusal the standard library decides, so what we accept
    is exactly what the stdlib accepts.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


# Past this many objects and arrays, a request body is not decoded whole: decoding costs ~100
# bytes of Python objects per container, so `{"a":[{},{},...]}` would cost ten times its size.
# A real request (messages, tools, images as base64 strings) has a few hundred at most.
MAX_CONTAINERS = 100_000


def too_complex(data: bytes) -> bool:
    """Whether decoding `data` whole could cost far more memory than its size (counted at C speed)."""
    return data.count(b"{") + data.count(b"[") > MAX_CONTAINERS
