"""Read the few request fields we account for; everything else passes through untouched."""

from __future__ import annotations

import logging
import re
from typing import Any

from llmobs.apis.content import input_content
from llmobs.apis.tool_definitions import with_tools
from llmobs.jsonio import loads, too_complex
from llmobs.records import Content, ParsedBody
from llmobs.stream_usage import with_usage_option
from llmobs.telemetry import semconv as sc

log = logging.getLogger(__name__)

# Generation parameters and the GenAI semantic-convention attribute each one feeds.
_PARAMS = {
    "temperature": sc.GEN_AI_REQUEST_TEMPERATURE,
    "top_p": sc.GEN_AI_REQUEST_TOP_P,
    "top_k": sc.GEN_AI_REQUEST_TOP_K,
    "max_tokens": sc.GEN_AI_REQUEST_MAX_TOKENS,
    "max_completion_tokens": sc.GEN_AI_REQUEST_MAX_TOKENS,
    "max_output_tokens": sc.GEN_AI_REQUEST_MAX_TOKENS,
    "frequency_penalty": sc.GEN_AI_REQUEST_FREQUENCY_PENALTY,
    "presence_penalty": sc.GEN_AI_REQUEST_PRESENCE_PENALTY,
    "seed": sc.GEN_AI_REQUEST_SEED,
}
# Endpoints whose requests offer tools (`tools`, and chat's legacy `functions`).
_TOOL_ENDPOINTS = frozenset({"chat_completions", "responses"})
_JSON_FORMATS = frozenset({"json_object", "json_schema"})


def parse_body(
    endpoint: str,
    body: bytes,
    *,
    stream_usage_option: bool = False,
    inject_usage: bool = False,
    capture_content: bool = False,
) -> ParsedBody:
    """Read model, stream, parameters, the tools offered and whether JSON is asked for; add
    stream_options.include_usage when asked to.

    A body we cannot read (not JSON, not an object, wrong types) is forwarded unchanged:
    the upstream judges it. With `capture_content` the prompt is read too (opt-in; off,
    it costs nothing).
    """
    if not body:
        return ParsedBody(None, False, {}, body, False)
    if too_complex(body):
        return _scanned(body, inject_usage and stream_usage_option)
    try:
        obj = loads(body)
    except (ValueError, RecursionError):
        return ParsedBody(None, False, {}, body, False)
    if not isinstance(obj, dict):
        return ParsedBody(None, False, {}, body, False)
    model = obj.get("model") if isinstance(obj.get("model"), str) else None
    stream = obj.get("stream") is True
    params = _params(obj)
    if endpoint == "embeddings":
        params.update(_embeddings_params(obj))
    injected = False
    if inject_usage and stream and stream_usage_option:
        new_body = with_usage_option(obj, body)
        if new_body is not None:
            body, injected = new_body, True
    content = _captured(endpoint, obj) if capture_content else None
    tools = _tool_definitions(obj) if endpoint in _TOOL_ENDPOINTS else None
    expects_json = _asks_json(endpoint, obj)
    if expects_json:
        params[sc.GEN_AI_OUTPUT_TYPE] = sc.OUTPUT_TYPE_JSON
    return ParsedBody(
        model, stream, params, body, injected, content,
        conversation=conversation_of(obj), tool_definitions=tools, expects_json=expects_json,
    )  # fmt: skip


def conversation_of(obj: dict[str, Any]) -> str | None:
    """The conversation or session a request body names (gen_ai.conversation.id), if any.

    In order: the Responses API's `conversation` (an id, or an object with one); `metadata`'s
    `conversation_id`, `session_id` or `thread_id`; `prompt_cache_key` (requests sharing a
    prefix, usually a conversation's); the end-user `user`. Only ever a span attribute.
    """
    conversation = obj.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    candidates = [conversation]
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        candidates += [metadata.get(key) for key in ("conversation_id", "session_id", "thread_id")]
    candidates += [obj.get("prompt_cache_key"), obj.get("user")]
    for value in candidates:
        if isinstance(value, str) and value.strip():
            return value.strip()[:256]
    return None


def _tool_definitions(obj: dict[str, Any]) -> int:
    tools, functions = obj.get("tools"), obj.get("functions")  # `functions`: chat's legacy name
    count = len(tools) if isinstance(tools, list) else 0
    return count + len(functions) if isinstance(functions, list) else count


def _asks_json(endpoint: str, obj: dict[str, Any]) -> bool:
    """Chat's `response_format`, or the Responses API's `text.format`, of a JSON type."""
    if endpoint == "chat_completions":
        fmt = obj.get("response_format")
    elif endpoint == "responses":
        text = obj.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
    else:
        return False
    if not isinstance(fmt, dict):
        return False
    kind = fmt.get("type")
    return isinstance(kind, str) and kind in _JSON_FORMATS


_MODEL = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.){1,256})"')
_STREAM = re.compile(rb'"stream"\s*:\s*true\b')


def _scanned(body: bytes, inject_usage: bool) -> ParsedBody:
    """model and stream of a body too costly to decode, found by a scan; no parameters.

    A quote inside a JSON string is escaped, so these patterns only match keys; a nested
    object's "model" could match too, a price paid only by bodies nobody sends in earnest.
    """
    found = _MODEL.search(body)
    model = found.group(1).decode("utf-8", "replace") if found else None
    stream = _STREAM.search(body) is not None
    if inject_usage and stream and b'"stream_options"' not in body:
        spliced = with_usage_option({}, body)
        if spliced is not None:
            return ParsedBody(model, stream, {}, spliced, True)
    return ParsedBody(model, stream, {}, body, False)


def _captured(endpoint: str, obj: dict[str, Any]) -> Content | None:
    try:
        content = input_content(endpoint, obj)
        if content is not None and endpoint in _TOOL_ENDPOINTS:
            content = with_tools(content, obj.get("tools"), obj.get("functions"))
        return content
    except Exception as exc:  # noqa: BLE001 - telemetry never breaks the request; the message may hold content
        log.debug("content capture failed: %s", type(exc).__name__)
        return None


def _embeddings_params(obj: dict[str, Any]) -> dict[str, Any]:
    """`dimensions` and `encoding_format` of an embeddings request, when it names them."""
    params: dict[str, Any] = {}
    dimensions = obj.get("dimensions")
    if isinstance(dimensions, int) and not isinstance(dimensions, bool) and dimensions > 0:
        params[sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = dimensions
    encoding = obj.get("encoding_format")
    if isinstance(encoding, str) and 0 < len(encoding) <= 32:  # OpenAI takes one: `float` or `base64`
        params[sc.GEN_AI_REQUEST_ENCODING_FORMATS] = [encoding]
    return params


def _params(obj: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, attribute in _PARAMS.items():
        value = obj.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            params[attribute] = value
    n = obj.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        params[sc.GEN_AI_REQUEST_CHOICE_COUNT] = n
    stop = obj.get("stop")
    if isinstance(stop, str):
        params[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        params[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = list(stop)
    tier = obj.get("service_tier")
    if isinstance(tier, str) and tier != "auto":  # the conventions leave out the default
        params[sc.OPENAI_REQUEST_SERVICE_TIER] = tier
    return params
