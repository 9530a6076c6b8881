"""The Anthropic Messages API (`POST .../v1/messages`), streamed or not.

Usage goes through genai-prices' own Anthropic extractor, which knows that Anthropic's
`input_tokens` leaves the cache out: the `input` we record is the total (uncached + cache
read + cache write), as for every provider, and the extractor's values are kept for pricing
(1-hour cache writes cost more than 5-minute ones). A stream carries usage in
`message_start` (the input side) and in cumulative `message_delta`s (the output side);
only those events, the error event, tool calls (their start and argument pieces) and, with
content capture or when the request asked for JSON, the text deltas are JSON-decoded: every
other event is judged by its `event:` name and a byte check.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

from genai_prices.data import providers as BUNDLED_PROVIDERS

from llmobs.apis.anthropic_content import capture_blocks, capture_event, input_content, semconv_finish
from llmobs.apis.base import Accumulator, count, error_type, loads_object
from llmobs.apis.quality import Judge
from llmobs.apis.tool_definitions import with_tools
from llmobs.records import Content, Observation, Outcome, ParsedBody, Usage
from llmobs.sse import Event
from llmobs.telemetry import semconv as sc

log = logging.getLogger(__name__)

# Our own span attribute names: the pinned conventions (0.66b2) have none for the split.
ATTR_CACHE_5M = sc.USAGE_CACHE_5M
ATTR_CACHE_1H = sc.USAGE_CACHE_1H

# genai-prices' bundled Anthropic provider, for its usage extractor. Not the module-level
# `genai_prices.extract_usage`: that one also looks the model up, raises LookupError for a
# model it does not know, and reads the snapshot an UpdatePrices thread may replace.
_ANTHROPIC = next(p for p in BUNDLED_PROVIDERS if p.id == "anthropic")

_PARAMS = {
    "max_tokens": sc.GEN_AI_REQUEST_MAX_TOKENS,
    "temperature": sc.GEN_AI_REQUEST_TEMPERATURE,
    "top_p": sc.GEN_AI_REQUEST_TOP_P,
    "top_k": sc.GEN_AI_REQUEST_TOP_K,
}

# Delta types, found as quoted JSON strings: a quote inside text is escaped, so these bytes
# only ever match the structure, never the generated text.
_TEXT = b'"text_delta"'
_TOOL = b'"input_json_delta"'
_THINKING = b'"thinking_delta"'
_TOOL_USE = b'"tool_use"'
_EMPTY_TOOL_PIECE = re.compile(rb'"partial_json"\s*:\s*""')  # sent before a tool call's input: no token
_EMPTY_TEXT = re.compile(rb'"text"\s*:\s*""')
_SPEEDS = ("standard", "fast")  # usage.speed, as the Messages API reports it
_USAGE_EVENTS = frozenset({"message_start", "message_delta", "error"})
_CAPTURED_EVENTS = frozenset({"content_block_start", "content_block_delta"})


# --- request --------------------------------------------------------------------------------


def parse_request(body: bytes, *, capture_content: bool = False) -> ParsedBody:
    """Read model, stream, the generation parameters, the tools offered and whether JSON is
    asked for (`output_config.format`, or the beta's `output_format`); the body goes upstream
    unchanged. Anthropic always reports usage, in streams too: nothing is injected.
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
        params[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = list(stop)
    content = _captured(obj) if capture_content else None
    tools = obj.get("tools")
    return ParsedBody(
        model,
        obj.get("stream") is True,
        params,
        body,
        False,
        content,
        tool_definitions=len(tools) if isinstance(tools, list) else 0,
        expects_json=_asks_json(obj),
    )


def _asks_json(obj: dict[str, Any]) -> bool:
    config = obj.get("output_config")
    for fmt in (config.get("format") if isinstance(config, dict) else None, obj.get("output_format")):
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            return True
    return False


def _request_object(body: bytes) -> dict[str, Any] | None:
    return loads_object(body) if body else None


def _captured(obj: dict[str, Any]) -> Content | None:
    try:
        return with_tools(input_content(obj), obj.get("tools"))
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


def _judge_block(judge: Judge, index: Any, block: dict[str, Any]) -> None:
    """Feed the judge one content block: text, or a tool call (whole, or the start of a streamed one).

    A whole `tool_use` carries its input decoded (an object); a streamed one's arrives in
    `input_json_delta` pieces, judged once joined.
    """
    kind = block.get("type")
    if kind == "text":
        judge.text(0, block.get("text"))
    elif kind == "tool_use":
        judge.tool_call(index if isinstance(index, int) else 0, block.get("name"), None)


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

    judges = True

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
        content = obj.get("content")
        if self.judge is not None and isinstance(content, list):
            for position, block in enumerate(content):
                if isinstance(block, dict):
                    _judge_block(self.judge, position, block)

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
            obj = self._delta(data, now, obj)
        elif kind == "content_block_start" and _TOOL_USE in data:
            obj = self._tool_start(data, obj)
        elif kind == "message_stop":
            self.terminal_seen = True
        elif kind in _USAGE_EVENTS:
            obj = obj if obj is not None else loads_object(data)
            if obj is not None:
                self._usage_event(kind, obj)
            return
        if self.output is not None and kind in _CAPTURED_EVENTS:
            capture_event(self.output, kind, obj if obj is not None else loads_object(data))

    def _delta(self, data: bytes, now: float, obj: dict[str, Any] | None) -> dict[str, Any] | None:
        """Account one content delta; returns it decoded when it had to be (tool input, JSON text)."""
        judge = self.judge
        if _TEXT in data:
            self.answered(now)
            self.token_events += 1
            if self.chunks is not None:
                self.chunk(now)
            if judge is not None:
                if judge.expects_json:
                    obj = self._judge_delta(judge, data, obj)
                elif not judge.answered and _EMPTY_TEXT.search(data) is None:
                    judge.answered = True  # some text: its words are not needed
        elif _TOOL in data:
            if _EMPTY_TOOL_PIECE.search(data) is None:
                self.answered(now)
                self.token_events += 1
                if self.chunks is not None:
                    self.chunk(now)
            if judge is not None:
                obj = self._judge_delta(judge, data, obj)
        elif _THINKING in data:
            self.reasoned(now)
            self.token_events += 1
            if self.chunks is not None:
                self.chunk(now)
        return obj

    def _tool_start(self, data: bytes, obj: dict[str, Any] | None) -> dict[str, Any] | None:
        """A content block that may start a tool call: its name is in it."""
        if self.judge is None:
            return obj
        obj = obj if obj is not None else loads_object(data)
        block = obj.get("content_block") if obj is not None else None
        if obj is not None and isinstance(block, dict):
            _judge_block(self.judge, obj.get("index"), block)
        return obj

    @staticmethod
    def _judge_delta(judge: Judge, data: bytes, obj: dict[str, Any] | None) -> dict[str, Any] | None:
        obj = obj if obj is not None else loads_object(data)
        delta = obj.get("delta") if obj is not None else None
        if obj is None or not isinstance(delta, dict):
            return obj
        if delta.get("type") == "input_json_delta":
            at = obj.get("index")
            judge.tool_call(at if isinstance(at, int) else 0, None, delta.get("partial_json"))
        else:
            judge.text(0, delta.get("text"))
        return obj

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
            if reason == "refusal" and self.judge is not None:
                self.judge.refusal()

    def finish(self, outcome: Outcome, status_code: int, end: float, *, proxy_overhead: float = 0.0) -> Observation:
        """The record; usage is normalised once, here, from what the response reported."""
        attributes: dict[str, Any] = {}
        if self.usage_seen is not None:
            values = extract(self.usage_seen)
            if values is not None:
                self.usage = normalise(values, output_known=self.output_known)
                attributes = cache_split(self.usage_seen)
            speed = self.usage_seen.get("speed")
            if speed in _SPEEDS:
                self.extra["speed"] = speed  # fast mode has its own price
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
