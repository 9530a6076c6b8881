"""What the OpenAI-shaped APIs share: the usage object, identity fields, finish reasons."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llmobs.apis.base import Accumulator, count, error_type
from llmobs.records import Usage


def _details(usage: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        value = usage.get(key)
        if isinstance(value, dict):
            return value
    return {}


def parse_usage(usage: dict[str, Any]) -> Usage:
    """Read an OpenAI `usage` object, chat/completions or Responses shape."""
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        input_tokens = count(usage.get("prompt_tokens"))
        output_tokens = count(usage.get("completion_tokens"))
    else:
        input_tokens = count(usage.get("input_tokens"))
        output_tokens = count(usage.get("output_tokens"))
    prompt = _details(usage, "prompt_tokens_details", "input_tokens_details")
    completion = _details(usage, "completion_tokens_details", "output_tokens_details")
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=count(prompt.get("cached_tokens")),
        cache_write_tokens=count(prompt.get("cache_write_tokens")),
        reasoning_tokens=count(completion.get("reasoning_tokens")),
    )


def add_output(earlier: Usage, more: Usage) -> Usage:
    """Two choices' usage as one: outputs added, the prompt (shared by every choice) taken once."""
    return replace(
        earlier,
        output_tokens=_add(earlier.output_tokens, more.output_tokens),
        reasoning_tokens=_add(earlier.reasoning_tokens, more.reasoning_tokens),
    )


def _add(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b


class OpenAIAccumulator(Accumulator):
    """An OpenAI-shaped result: id, model, fingerprint, tier, usage, choices."""

    def on_result(self, obj: dict[str, Any]) -> None:
        self.identify(obj)
        if obj.get("error"):
            self.error_type = error_type(obj["error"])
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = parse_usage(usage)
        choices = obj.get("choices")
        if isinstance(choices, list):
            self.finish_reasons(choices)
            if self.output is not None:
                self.output.chat_choices(choices)

    def identify(self, obj: dict[str, Any]) -> None:
        # Azure starts a stream with a content-filter chunk whose id and model are empty.
        if self.response_id is None and isinstance(obj.get("id"), str) and obj["id"]:
            self.response_id = obj["id"]
        if self.response_model is None and isinstance(obj.get("model"), str) and obj["model"]:
            self.response_model = obj["model"]
        for key in ("system_fingerprint", "service_tier"):
            value = obj.get(key)
            if isinstance(value, str) and key not in self.extra:
                self.extra[key] = value

    def finish_reasons(self, choices: list[Any]) -> None:
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                index = choice.get("index")
                self.reasons[index if isinstance(index, int) else position] = reason
