"""OpenAI chat completions and legacy completions, streamed or not."""

from __future__ import annotations

import re
from typing import Any

from llmobs.apis.base import error_type, loads_object
from llmobs.apis.content import OutputCapture
from llmobs.apis.openai_common import OpenAIAccumulator, parse_usage
from llmobs.sse import Event
from llmobs.stream_usage import has_usage

# Cheap byte checks, so that the bulk of stream chunks is never JSON-decoded once the
# first token has been seen: only chunks that can carry usage, a finish reason or an
# error are parsed.
_FINISH_SET = re.compile(rb'"finish_reason"\s*:\s*"')
_ERROR_KEY = b'"error"'
_DONE = b"[DONE]"


class ChatAccumulator(OpenAIAccumulator):
    """Chat completions and legacy completions, streamed or not."""

    def on_event(self, event: Event, now: float) -> None:
        data = event.data
        if not data:
            return
        if data == _DONE:
            self.terminal_seen = True
            return
        if self.first_token is not None and self.output is None and not self._worth_parsing(data):
            self.token_events += 1
            return
        obj = loads_object(data)
        if obj is None:
            return
        if obj.get("error"):
            self.error_type = error_type(obj["error"])
            return
        self.identify(obj)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = parse_usage(usage)
        choices = obj.get("choices")
        if isinstance(choices, list) and choices:
            self._deltas(choices, now)
            self.finish_reasons(choices)
            if self.output is not None:
                self._capture(choices, self.output)

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
        if _ERROR_KEY in data or has_usage(data):
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
            self.reasoned(now)
        if answered:
            self.answered(now)
        if answered or reasoned:
            self.token_events += 1
