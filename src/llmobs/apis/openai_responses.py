"""The OpenAI Responses API, streamed (typed events) or not."""

from __future__ import annotations

import re
from typing import Any

from llmobs.apis.base import error_type, loads_object
from llmobs.apis.content import OutputCapture
from llmobs.apis.openai_common import OpenAIAccumulator, parse_usage
from llmobs.apis.quality import Judge
from llmobs.sse import Event

_DONE = b"[DONE]"
_RESPONSE_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_RESPONSE_REASONING = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})
_RESPONSE_IDENTITY = frozenset({"response.created", "response.in_progress"})
_TOOL_ITEMS = frozenset({"function_call", "custom_tool_call", "computer_call", "mcp_call"})
_JSON_ARGUMENTS = frozenset({"function_call", "mcp_call"})  # the others' input is free-form or an action
_CALL_ITEM = b'_call"'  # the end of a tool-call item's quoted type
_EMPTY_DELTA = re.compile(rb'"delta"\s*:\s*""')


class ResponsesAccumulator(OpenAIAccumulator):
    """The Responses API, streamed (typed events) or not.

    Tool calls and the answer are judged from the final response object (a body, or the
    terminal event of a stream): it holds every output item whole, so no delta is kept. A
    stream also names its tool calls as their items are added, and its deltas tell that
    there was an answer, should a server leave the final object's output out.
    """

    judges = True

    def on_event(self, event: Event, now: float) -> None:
        if not event.data:
            return
        kind = event.event
        obj: dict[str, Any] | None = None
        if kind == "message":  # no `event:` line: the type is inside the JSON
            if event.data == _DONE:
                return
            obj = loads_object(event.data)
            if obj is None:
                return
            kind = obj["type"] if isinstance(obj.get("type"), str) else ""
        if kind.endswith(".delta"):
            if kind in _RESPONSE_REASONING:
                self.reasoned(now)
            else:
                self.answered(now)
                judge = self.judge
                if judge is not None:
                    if not judge.answered and _EMPTY_DELTA.search(event.data) is None:
                        judge.answered = True
                    if kind == "response.refusal.delta":
                        judge.refusal()
            self.token_events += 1
            if self.chunks is not None:
                self.chunk(now)
            if self.output is not None:
                self._capture_delta(kind, obj if obj is not None else loads_object(event.data), self.output)
        elif kind == "response.output_item.added":
            # Only an item that may be a tool call (`..._call` types) is decoded for the judge.
            if self.output is not None or _CALL_ITEM in event.data:
                obj = obj if obj is not None else loads_object(event.data)
                if self.output is not None:
                    self._capture_item(obj, self.output)
                if self.judge is not None and obj is not None:
                    _judge_added(self.judge, obj)
        elif kind in _RESPONSE_TERMINAL or kind in _RESPONSE_IDENTITY or kind == "error":
            obj = obj if obj is not None else loads_object(event.data)
            if obj is None:
                return
            if kind == "error":
                self.error_type = error_type(obj.get("error", obj))
                self.terminal_seen = True
            else:
                response = obj.get("response")
                if isinstance(response, dict):
                    if kind in _RESPONSE_TERMINAL:
                        self.terminal_seen = True
                        self.on_result(response)
                    else:
                        self.identify(response)

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

    def on_result(self, obj: dict[str, Any]) -> None:
        tier = obj.get("service_tier")
        if isinstance(tier, str):  # the final response says how it was served (response.created echoes the ask)
            self.extra["service_tier"] = tier
        self.identify(obj)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = parse_usage(usage)
        output = obj.get("output")
        if self.output is not None and isinstance(output, list) and output:
            self.output.responses_output(output)
        if self.judge is not None and isinstance(output, list):
            _judge(self.judge, output)
        status = obj.get("status")
        if status == "failed" or (obj.get("error") and status != "completed"):
            self.error_type = error_type(obj.get("error"))
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


def _judge(judge: Judge, output: list[Any]) -> None:
    """Feed the judge a final response's output items: messages (text, refusals) and tool calls."""
    for position, item in enumerate(output):
        if isinstance(item, dict):
            _judge_item(judge, position, item)


def _judge_added(judge: Judge, event: dict[str, Any]) -> None:
    """A stream's `response.output_item.added`: a tool call's name (its arguments come whole at the end)."""
    item, at = event.get("item"), event.get("output_index")
    kind = item.get("type") if isinstance(item, dict) else None
    if isinstance(item, dict) and isinstance(kind, str) and kind in _TOOL_ITEMS:
        name = item.get("name") if isinstance(item.get("name"), str) else kind
        judge.tool_call(at if isinstance(at, int) else 0, name, None, json_arguments=kind in _JSON_ARGUMENTS)


def _judge_item(judge: Judge, position: int, item: dict[str, Any]) -> None:
    """One whole output item of a final response."""
    kind = item.get("type")
    if not isinstance(kind, str):
        return
    if kind == "message":
        parts = item.get("content")
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, dict):
                if part.get("type") == "refusal":
                    judge.refusal(isinstance(part.get("refusal"), str) and part["refusal"])
                else:
                    judge.text(0, part.get("text"))
    elif kind in _TOOL_ITEMS:
        name = item.get("name") if isinstance(item.get("name"), str) else kind
        judge.tool_call(position, name, item.get("arguments"), json_arguments=kind in _JSON_ARGUMENTS)
