"""Read the few request fields we account for; everything else passes through untouched."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from llmobs.apis.content import input_content
from llmobs.apis.table import Endpoint
from llmobs.jsonio import loads
from llmobs.records import Content

log = logging.getLogger(__name__)

# Generation parameters and the GenAI semantic-convention attribute each one feeds.
_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
}
_OBJECT_START = re.compile(rb"\A\s*\{")


@dataclass(frozen=True, slots=True)
class ParsedBody:
    model: str | None
    stream: bool
    params: dict[str, Any]
    body: bytes  # what goes upstream
    usage_injected: bool
    input_content: Content | None = None  # the prompt, only when capture was asked for


def parse_body(endpoint: Endpoint, body: bytes, *, inject_usage: bool, capture_content: bool = False) -> ParsedBody:
    """Read model, stream and parameters; add stream_options.include_usage when asked to.

    A body we cannot read (not JSON, not an object, wrong types) is forwarded unchanged:
    the upstream judges it. With `capture_content` the prompt is read too (opt-in; off,
    it costs nothing).
    """
    if endpoint.operation is None or not body:
        return ParsedBody(None, False, {}, body, False)
    try:
        obj = loads(body)
    except (ValueError, RecursionError):
        return ParsedBody(None, False, {}, body, False)
    if not isinstance(obj, dict):
        return ParsedBody(None, False, {}, body, False)
    model = obj.get("model") if isinstance(obj.get("model"), str) else None
    stream = obj.get("stream") is True
    params = _params(obj)
    injected = False
    if inject_usage and stream and endpoint.stream_usage_option:
        new_body = _with_usage(obj, body)
        if new_body is not None:
            body, injected = new_body, True
    content = _captured(endpoint, obj) if capture_content else None
    return ParsedBody(model, stream, params, body, injected, content)


def _captured(endpoint: Endpoint, obj: dict[str, Any]) -> Content | None:
    try:
        return input_content(endpoint.name, obj)
    except Exception as exc:  # noqa: BLE001 - telemetry never breaks the request; the message may hold content
        log.debug("content capture failed: %s", type(exc).__name__)
        return None


def _params(obj: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, attribute in _PARAMS.items():
        value = obj.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            params[attribute] = value
    n = obj.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        params["gen_ai.request.choice.count"] = n
    stop = obj.get("stop")
    if isinstance(stop, str):
        params["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        params["gen_ai.request.stop_sequences"] = list(stop)
    tier = obj.get("service_tier")
    if isinstance(tier, str):
        params["openai.request.service_tier"] = tier
    return params


def _with_usage(obj: dict[str, Any], body: bytes) -> bytes | None:
    """The body with include_usage on, or None when the client asked for usage itself.

    Without a stream_options key, the field is spliced in after the opening brace, so
    every other byte stays as the client sent it.
    """
    options = obj.get("stream_options")
    if options is None and "stream_options" not in obj:
        match = _OBJECT_START.match(body)
        if match is None:  # pragma: no cover - json.loads gave a dict, so a brace starts it
            return None
        rest = body[match.end() :]
        sep = b"" if rest.lstrip().startswith(b"}") else b","
        return body[: match.end()] + b'"stream_options":{"include_usage":true}' + sep + rest
    if isinstance(options, dict) and any(options.get("include_usage") is v for v in (None, False)):
        obj["stream_options"] = {**options, "include_usage": True}
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return None  # asked for usage already, or a shape the upstream should judge


@lru_cache(maxsize=1024)  # a handful of keys send most traffic; bounded, as clients choose them
def fingerprint(key: str) -> str:
    """A short, non-reversible tenant id for an API key: never the key itself."""
    return "key-" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:10]


def tenant_of(headers: dict[bytes, bytes], tenant_header: bytes) -> str:
    """Tenant from the configured header, else an API-key fingerprint, else empty."""
    value = headers.get(tenant_header)
    if value:
        return value.decode("latin-1").strip()
    auth = headers.get(b"authorization")
    if auth:
        scheme, _, token = auth.decode("latin-1").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else auth.decode("latin-1").strip()
        if key:
            return fingerprint(key)
    api_key = headers.get(b"api-key")
    if api_key:
        return fingerprint(api_key.decode("latin-1").strip())
    return ""
