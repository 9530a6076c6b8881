"""The Anthropic Messages API (`POST .../v1/messages`), streamed or not.

Usage goes through genai-prices' own Anthropic extractor, which knows that Anthropic's
`input_tokens` leaves the cache out: the `input` we record is the total (uncached + cache
read + cache write), as for every provider, and the extractor's values are kept for pricing
(1-hour cache writes cost more than 5-minute ones). A stream carries usage in
`message_start` (the input side) and in cumulative `message_delta`s (the output side);
only those events, the error event and (with content capture) the deltas are JSON-decoded:
every other event is judged by its `event:` name and a byte check.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

from genai_prices.data import providers as BUNDLED_PROVIDERS

from llmobs.apis.anthropic_content import capture_blocks, capture_event, input_content, semconv_finish
from llmobs.apis.base import Accumulator, count, error_type, loads_object
from llmobs.records import Content, Observation, Outcome, ParsedBody, Usage
from llmobs.sse import Event

log = logging.getLogger(__name__)

# Our own span attribute names: the pinned conventions (0.66b2) have none for the split.
ATTR_CACHE_5M = "llmobs.usage.cache_creation.ephemeral_5m_input_tokens"
ATTR_CACHE_1H = "llmobs.usage.cache_creation.ephemeral_1h_input_tokens"

# genai-prices' bundled Anthropic provider, for its usage extractor. Not the module-level
# `genai_prices.extract_usage`: that one also looks the model up, raises LookupError for a
# model it does not know, and reads the snapshot an UpdatePrices thread may replace.
_ANTHROPIC = next(p for p in BUNDLED_PROVIDERS if p.id == "anthropic")

_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
}

# Delta types, found as quoted JSON strings: a quote inside text is escaped, so these bytes
# only ever match the structure, never the generated text.
_TEXT = b'"text_delta"'
_TOOL = b'"input_json_delta"'
_THINKING = b'"thinking_delta"'
_EMPTY_TOOL_PIECE = re.compile(rb'"partial_json"\s*:\s*""')  # sent before a tool call's input: no token
_USAGE_EVENTS = frozenset({"message_start", "message_delta", "error"})
_CAPTURED_EVENTS = frozenset({"content_block_start", "content_block_delta"})


# --- request --------------------------------------------------------------------------------


def parse_request(body: bytes, *, capture_content: bool = False) -> ParsedBody:
    """Read model, stream and the generation parameters; the body goes upstream unchanged.

    Anthropic always reports usage, in streams too: nothing is injected.
    """
    obj = _request_object(body)
    if obj is None:
        return ParsedBody(None, False, {}, body, False)
    model = obj.get("model") if isinstance(obj.get("model"), str) else None
    params: dict[str, Any] = {}
    for key, attribute in _PARAMS.items():
        value = obj.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            params[attribute] = value
    stop = obj.get("stop_sequences")
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        params["gen_ai.request.stop_sequences"] = list(stop)
    content = _captured(obj) if capture_content else None
    return ParsedBody(model, obj.get("stream") is True, params, body, False, content)


def _request_object(body: bytes) -> dict[str, Any] | None:
    return loads_object(body) if body else None


def _captured(obj: dict[str, Any]) -> Content | None:
    try:
        return input_content(obj)
    except Exception as exc:  # noqa: BLE001 - telemetry never breaks the request; the message may hold content
        log.debug("content capture failed: %s", type(exc).__name__)
        return None


# --- usage ----------------------------------------------------------------------------------


def extract(usage: dict[str, Any]) -> dict[str, int | float] | None:
    """genai-prices' usage values for an Anthropic `usage` object; None when it is not one."""
    try:
        _, extracted = _ANTHROPIC.extract_usage({"usage": usage})
    except (ValueError, TypeError):  # a required count missing or not a number
        return None
    return {key: value for key, value in vars(extracted).items() if isinstance(value, (int, float))}


def normalise(values: dict[str, int | float], *, output_known: bool = True) -> Usage:
    """Our Usage from genai-prices' values: `input` is the total, cache included.

    Without the output side (a stream cut before its `message_delta`), the input side is
    still reported, the output count is unknown (None) and nothing is priced.
    """

    def get(key: str) -> int | None:
        return count(values.get(key))

    if not output_known:
        return Usage(
            input_tokens=get("input_tokens"),
            cache_read_tokens=get("cache_read_tokens"),
            cache_write_tokens=get("cache_write_tokens"),
        )
    return Usage(
        input_tokens=get("input_tokens"),
        output_tokens=get("output_tokens"),
        cache_read_tokens=get("cache_read_tokens"),
        cache_write_tokens=get("cache_write_tokens"),
        reasoning_tokens=get("output_reasoning_tokens"),
        pricing=tuple(sorted(values.items())),
    )


def cache_split(usage: dict[str, Any]) -> dict[str, int]:
    """The 5-minute / 1-hour split of cache writes, as span attributes, when reported."""
    split = usage.get("cache_creation")
    if not isinstance(split, dict):
        return {}
    attrs = {}
    for key, name in (("ephemeral_5m_input_tokens", ATTR_CACHE_5M), ("ephemeral_1h_input_tokens", ATTR_CACHE_1H)):
        value = count(split.get(key))
        if value is not None:
            attrs[name] = value
    return attrs


# --- response -------------------------------------------------------------------------------


class MessagesAccumulator(Accumulator):
    """One Messages response: a message object, or its event stream."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.usage_seen: dict[str, Any] | None = None  # message_start's usage, deltas merged in
        self.output_known = False  # a whole message or a message_delta gave the output count

    def on_result(self, obj: dict[str, Any]) -> None:
        """A whole message, or an error body."""
        if obj.get("type") == "error" or "error" in obj:
            self.error_type = error_type(obj.get("error"), "api_error")
            return
        self._identify(obj)
        self._stop_reason(obj.get("stop_reason"))
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage_seen, self.output_known = usage, True
        if self.output is not None:
            capture_blocks(self.output, obj.get("content"))

    def on_event(self, event: Event, now: float) -> None:
        data = event.data
        if not data:
            return
        kind = event.event
        obj: dict[str, Any] | None = None
        if kind == "message":  # no `event:` line: the type is inside the JSON
            obj = loads_object(data)
            kind = obj["type"] if obj is not None and isinstance(obj.get("type"), str) else ""
        if kind == "content_block_delta":
            self._delta(data, now)
        elif kind == "message_stop":
            self.terminal_seen = True
        elif kind in _USAGE_EVENTS:
            obj = obj if obj is not None else loads_object(data)
            if obj is not None:
                self._usage_event(kind, obj)
            return
        if self.output is not None and kind in _CAPTURED_EVENTS:
            capture_event(self.output, kind, obj if obj is not None else loads_object(data))

    def _delta(self, data: bytes, now: float) -> None:
        if _TEXT in data or (_TOOL in data and _EMPTY_TOOL_PIECE.search(data) is None):
            self.answered(now)
            self.token_events += 1
        elif _THINKING in data:
            self.reasoned(now)
            self.token_events += 1

    def _usage_event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "error":
            self.error_type = error_type(obj.get("error"), "api_error")
            self.terminal_seen = True
        elif kind == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                self._identify(message)
                usage = message.get("usage")
                if isinstance(usage, dict):
                    self.usage_seen = dict(usage)
        else:  # message_delta: stop reason, and usage counts that are cumulative totals
            delta = obj.get("delta")
            if isinstance(delta, dict):
                self._stop_reason(delta.get("stop_reason"))
            usage = obj.get("usage")
            if isinstance(usage, dict):
                merged = self.usage_seen if self.usage_seen is not None else {}
                merged.update((k, v) for k, v in usage.items() if v is not None)
                self.usage_seen = merged
                self.output_known = self.output_known or "output_tokens" in usage

    def _identify(self, message: dict[str, Any]) -> None:
        if self.response_id is None and isinstance(message.get("id"), str):
            self.response_id = message["id"]
        if self.response_model is None and isinstance(message.get("model"), str):
            self.response_model = message["model"]

    def _stop_reason(self, reason: Any) -> None:
        if isinstance(reason, str) and reason and len(reason) <= 64:
            self.reasons[0] = reason

    def finish(self, outcome: Outcome, status_code: int, end: float, *, proxy_overhead: float = 0.0) -> Observation:
        """The record; usage is normalised once, here, from what the response reported."""
        attributes: dict[str, Any] = {}
        if self.usage_seen is not None:
            values = extract(self.usage_seen)
            if values is not None:
                self.usage = normalise(values, output_known=self.output_known)
                attributes = cache_split(self.usage_seen)
        obs = super().finish(outcome, status_code, end, proxy_overhead=proxy_overhead)
        estimated = None
        if self.usage is not None and self.usage.output_tokens is None and self.info.stream and self.token_events:
            estimated = self.token_events  # cut off before the output count: what the deltas showed
        if attributes or estimated is not None:
            obs = dataclasses.replace(obs, attributes=attributes, estimated_output_tokens=estimated)
        return obs

    def _output_content(self, outcome: Outcome) -> Content | None:
        if self.output is None:
            return None
        return self.output.result(semconv_finish(self.reasons), failed=outcome is not Outcome.COMPLETED)
