"""Pure accumulators: response bytes and SSE events in, one Observation out.

No I/O and no clock: every method that needs the time is handed `now`.
"""

from __future__ import annotations

import dataclasses
import re
from decimal import Decimal
from typing import Any

from llmobs.apis.content import OutputCapture
from llmobs.jsonio import loads
from llmobs.records import (
    Content,
    Observation,
    Outcome,
    RequestInfo,
    Timings,
    Usage,
    UsageSource,
)
from llmobs.sse import Event

# Cheap byte checks, so that the bulk of stream chunks is never JSON-decoded once the
# first token has been seen: only chunks that can carry usage, a finish reason or an
# error are parsed.
_USAGE_KEY = b'"usage"'
_NULL_USAGE = re.compile(rb'"usage"\s*:\s*null')
_FINISH_SET = re.compile(rb'"finish_reason"\s*:\s*"')
_ERROR_KEY = b'"error"'
_DONE = b"[DONE]"
_COMPACT_NULL_USAGE = b',"usage":null'
_NULL_USAGE_FIELD = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,?')


def without_null_usage(raw: bytes) -> bytes:
    """An event's bytes less the `"usage": null` field that include_usage adds to each chunk.

    A quote inside a JSON string is always escaped, so the pattern only matches a key.
    """
    if _USAGE_KEY not in raw:
        return raw
    if _COMPACT_NULL_USAGE in raw:  # how OpenAI and vLLM write it: no regex needed
        return raw.replace(_COMPACT_NULL_USAGE, b"")
    return _NULL_USAGE_FIELD.sub(b"", raw)


def _count(value: Any) -> int | None:
    """A token count as reported, or None when absent or not a non-negative integer."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _details(usage: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        value = usage.get(key)
        if isinstance(value, dict):
            return value
    return {}


def parse_usage(usage: dict[str, Any]) -> Usage:
    """Read an OpenAI `usage` object, chat/completions or Responses shape."""
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        input_tokens = _count(usage.get("prompt_tokens"))
        output_tokens = _count(usage.get("completion_tokens"))
    else:
        input_tokens = _count(usage.get("input_tokens"))
        output_tokens = _count(usage.get("output_tokens"))
    prompt = _details(usage, "prompt_tokens_details", "input_tokens_details")
    completion = _details(usage, "completion_tokens_details", "output_tokens_details")
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=_count(prompt.get("cached_tokens")),
        cache_write_tokens=_count(prompt.get("cache_write_tokens")),
        reasoning_tokens=_count(completion.get("reasoning_tokens")),
    )


def _error_type(error: Any) -> str:
    """A low-cardinality name for an OpenAI error object."""
    if isinstance(error, dict):
        for key in ("code", "type"):
            value = error.get(key)
            if isinstance(value, str) and value and len(value) <= 64:
                return value
    return "stream_error"


def _loads(data: bytes) -> dict[str, Any] | None:
    try:
        obj = loads(data)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


class Accumulator:
    """Collects what one response tells; finishes into an Observation exactly once."""

    has_usage = True  # the endpoint reports usage on success
    reads_body = True  # a non-streamed body is worth buffering for on_body()
    has_output = True  # the endpoint generates text (content capture applies)
    terminal_seen = False

    def __init__(self, info: RequestInfo, start: float, *, strip_usage_chunk: bool = False) -> None:
        self.info = info
        self.start = start
        self.strip_usage_chunk = strip_usage_chunk
        self.usage: Usage | None = None
        self.reasons: dict[int, str] = {}
        self.response_model: str | None = None
        self.response_id: str | None = None
        self.error_type: str | None = None
        self.first_byte: float | None = None
        self.first_token: float | None = None
        self.first_reasoning: float | None = None
        self.reasoning_end: float | None = None
        self.token_events = 0  # stream chunks that carried generated text; for estimates
        self.extra: dict[str, Any] = {}
        # Completion text, only when the user opted in: off, nothing is collected or parsed.
        self.output: OutputCapture | None = OutputCapture() if info.capture_content and self.has_output else None

    # --- feeding -------------------------------------------------------------

    def on_event(self, event: Event, now: float) -> bool:
        """Account one SSE event; return False when the event must not reach the client."""
        return True

    def on_body(self, body: bytes) -> None:
        """Account a whole non-streamed response body."""
        obj = _loads(body)
        if obj is not None:
            self.terminal_seen = True
            self._on_result(obj)

    def _on_result(self, obj: dict[str, Any]) -> None:
        self._identify(obj)
        if obj.get("error"):
            self.error_type = _error_type(obj["error"])
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = parse_usage(usage)
        choices = obj.get("choices")
        if isinstance(choices, list):
            self._finish_reasons(choices)
            if self.output is not None:
                self.output.chat_choices(choices)

    def _identify(self, obj: dict[str, Any]) -> None:
        if self.response_id is None and isinstance(obj.get("id"), str):
            self.response_id = obj["id"]
        if self.response_model is None and isinstance(obj.get("model"), str):
            self.response_model = obj["model"]
        for key in ("system_fingerprint", "service_tier"):
            value = obj.get(key)
            if isinstance(value, str) and key not in self.extra:
                self.extra[key] = value

    def _finish_reasons(self, choices: list[Any]) -> None:
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                index = choice.get("index")
                self.reasons[index if isinstance(index, int) else position] = reason

    def _answer(self, now: float) -> None:
        if self.first_token is None:
            self.first_token = now
            if self.first_reasoning is not None:
                self.reasoning_end = now

    def _reasoning(self, now: float) -> None:
        if self.first_reasoning is None and self.first_token is None:
            self.first_reasoning = now

    # --- finishing -----------------------------------------------------------

    def finish(
        self,
        outcome: Outcome,
        status_code: int,
        end: float,
        *,
        proxy_overhead: float = 0.0,
        cost: Decimal | None = None,
    ) -> Observation:
        """The frozen record of this request."""
        if outcome is Outcome.COMPLETED and self.error_type is not None:
            outcome = Outcome.UPSTREAM_ERROR
        if outcome is Outcome.COMPLETED and self.info.stream and not self.terminal_seen:
            outcome = Outcome.STREAM_INTERRUPTED
        source = UsageSource.NOT_APPLICABLE
        estimated = None
        if self.usage is not None:
            source = UsageSource.REPORTED
        elif self.has_usage and self.info.operation is not None and 200 <= status_code < 300:
            source = UsageSource.MISSING
            if self.info.stream and self.token_events:
                estimated = self.token_events
        error_type = self.error_type
        if error_type is None and outcome is not Outcome.COMPLETED:
            error_type = str(status_code) if outcome is Outcome.UPSTREAM_ERROR else outcome.value
        return Observation(
            request=self.info,
            outcome=outcome,
            status_code=status_code,
            timings=Timings(
                start=self.start,
                end=end,
                first_byte=self.first_byte,
                first_token=self.first_token,
                first_reasoning=self.first_reasoning,
                reasoning_end=self.reasoning_end,
            ),
            usage=self.usage or Usage(),
            usage_source=source,
            estimated_output_tokens=estimated,
            finish_reasons=tuple(self.reasons[i] for i in sorted(self.reasons)),
            response_model=self.response_model,
            response_id=self.response_id,
            error_type=error_type,
            proxy_overhead=proxy_overhead,
            cost=cost if self.usage is not None else None,
            extra=self.extra,
            output_content=self._output_content(outcome),
        )

    def _output_content(self, outcome: Outcome) -> Content | None:
        if self.output is None:
            return None
        return self.output.result(self.reasons, failed=outcome is not Outcome.COMPLETED)


class OtherAccumulator(Accumulator):
    """Paths we do not understand: timings and status only."""

    has_usage = False
    has_output = False
    reads_body = False
    terminal_seen = True


class EmbeddingsAccumulator(Accumulator):
    """Embeddings: usage carries prompt tokens only; an embedding generates no tokens."""

    has_output = False
    terminal_seen = True

    def _on_result(self, obj: dict[str, Any]) -> None:
        super()._on_result(obj)
        if self.usage is not None and self.usage.input_tokens is not None and self.usage.output_tokens is None:
            self.usage = dataclasses.replace(self.usage, output_tokens=0)


class ChatAccumulator(Accumulator):
    """Chat completions and legacy completions, streamed or not."""

    def on_event(self, event: Event, now: float) -> bool:
        data = event.data
        if not data:
            return True
        if data == _DONE:
            self.terminal_seen = True
            return True
        if self.first_token is not None and self.output is None and not self._worth_parsing(data):
            self.token_events += 1
            return True
        obj = _loads(data)
        if obj is None:
            return True
        if obj.get("error"):
            self.error_type = _error_type(obj["error"])
            return True
        self._identify(obj)
        choices = obj.get("choices")
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = parse_usage(usage)
            if self.strip_usage_chunk and not choices:
                return False  # the usage-only chunk the proxy asked for on the client's behalf
        if isinstance(choices, list) and choices:
            self._deltas(choices, now)
            self._finish_reasons(choices)
            if self.output is not None:
                self._capture(choices, self.output)
        return True

    @staticmethod
    def _capture(choices: list[Any], output: OutputCapture) -> None:
        for position, choice in enumerate(choices):
            if isinstance(choice, dict):
                index = choice.get("index")
                index = index if isinstance(index, int) else position
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    output.delta(index, delta)
                else:
                    output.text(index, choice.get("text"))

    @staticmethod
    def _worth_parsing(data: bytes) -> bool:
        if _ERROR_KEY in data:
            return True
        if _USAGE_KEY in data and b'"usage":null' not in data and not _NULL_USAGE.search(data):
            return True
        finish = data.count(b'"finish_reason"')
        if finish and data.count(b'"finish_reason":null') < finish:
            return _FINISH_SET.search(data) is not None
        return False

    def _deltas(self, choices: list[Any], now: float) -> None:
        answered = reasoned = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                if (
                    delta.get("content")
                    or delta.get("tool_calls")
                    or delta.get("function_call")
                    or delta.get("refusal")
                ):
                    answered = True
                elif delta.get("reasoning_content") or delta.get("reasoning"):
                    reasoned = True
            elif choice.get("text"):  # legacy completions
                answered = True
        if reasoned:
            self._reasoning(now)
        if answered:
            self._answer(now)
        if answered or reasoned:
            self.token_events += 1


_RESPONSE_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_RESPONSE_REASONING = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})
_RESPONSE_IDENTITY = frozenset({"response.created", "response.in_progress"})
_TOOL_ITEMS = frozenset({"function_call", "custom_tool_call", "computer_call", "mcp_call"})


class ResponsesAccumulator(Accumulator):
    """The Responses API, streamed (typed events) or not."""

    def on_event(self, event: Event, now: float) -> bool:
        if not event.data:
            return True
        kind = event.event
        obj: dict[str, Any] | None = None
        if kind == "message":  # no `event:` line: the type is inside the JSON
            if event.data == _DONE:
                return True
            obj = _loads(event.data)
            if obj is None:
                return True
            kind = obj["type"] if isinstance(obj.get("type"), str) else ""
        if kind.endswith(".delta"):
            if kind in _RESPONSE_REASONING:
                self._reasoning(now)
            else:
                self._answer(now)
            self.token_events += 1
            if self.output is not None:
                self._capture_delta(kind, obj if obj is not None else _loads(event.data), self.output)
        elif kind == "response.output_item.added" and self.output is not None:
            self._capture_item(obj if obj is not None else _loads(event.data), self.output)
        elif kind in _RESPONSE_TERMINAL or kind in _RESPONSE_IDENTITY or kind == "error":
            obj = obj if obj is not None else _loads(event.data)
            if obj is None:
                return True
            if kind == "error":
                self.error_type = _error_type(obj.get("error", obj))
                self.terminal_seen = True
            else:
                response = obj.get("response")
                if isinstance(response, dict):
                    if kind in _RESPONSE_TERMINAL:
                        self.terminal_seen = True
                        self._on_result(response)
                    else:
                        self._identify(response)
        return True

    @staticmethod
    def _capture_delta(kind: str, obj: dict[str, Any] | None, output: OutputCapture) -> None:
        if obj is None:
            return
        delta = obj.get("delta")
        if kind in _RESPONSE_REASONING:
            output.reasoning(0, delta)
        elif kind == "response.function_call_arguments.delta":
            at = obj.get("output_index")
            output.tool_call(0, at if isinstance(at, int) else 0, None, None, delta)
        elif kind == "response.output_text.delta" or kind == "response.refusal.delta":
            output.text(0, delta)

    @staticmethod
    def _capture_item(obj: dict[str, Any] | None, output: OutputCapture) -> None:
        item = obj.get("item") if obj is not None else None
        if isinstance(item, dict) and item.get("type") == "function_call":
            at = obj.get("output_index") if obj is not None else None
            output.tool_call(0, at if isinstance(at, int) else 0, item.get("call_id"), item.get("name"), None)

    def _on_result(self, obj: dict[str, Any]) -> None:
        self._identify(obj)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = parse_usage(usage)
        output = obj.get("output")
        if self.output is not None and isinstance(output, list) and output:
            self.output.responses_output(output)
        status = obj.get("status")
        if status == "failed" or (obj.get("error") and status != "completed"):
            self.error_type = _error_type(obj.get("error"))
            return
        if status == "incomplete":
            details = obj.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            self.reasons[0] = "length" if reason == "max_output_tokens" else str(reason or "incomplete")
        elif status == "completed":
            output = obj.get("output")
            tools = isinstance(output, list) and any(
                isinstance(item, dict) and item.get("type") in _TOOL_ITEMS for item in output
            )
            self.reasons[0] = "tool_calls" if tools else "stop"
