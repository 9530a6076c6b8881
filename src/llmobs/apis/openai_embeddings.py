"""OpenAI embeddings: usage carries prompt tokens only; there are no output tokens (absent, not 0)."""

from __future__ import annotations

import dataclasses
from typing import Any

from llmobs.apis.openai_common import OpenAIAccumulator
from llmobs.records import Observation, Outcome
from llmobs.telemetry import semconv as sc


class EmbeddingsAccumulator(OpenAIAccumulator):
    """Embeddings: an embedding generates no tokens."""

    has_output = False
    terminal_seen = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dimensions: int | None = None  # of the vectors returned, when the request named none

    def on_result(self, obj: dict[str, Any]) -> None:
        super().on_result(obj)
        usage = self.usage
        if usage is not None and usage.input_tokens is not None and usage.output_tokens is None:
            # Priced on input alone: the billable usage is complete without an output count.
            self.usage = dataclasses.replace(usage, pricing=(("input_tokens", usage.input_tokens),))
        if sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT not in self.info.params:
            self.dimensions = dimensions(obj)

    def finish(self, outcome: Outcome, status_code: int, end: float, *, proxy_overhead: float = 0.0) -> Observation:
        obs = super().finish(outcome, status_code, end, proxy_overhead=proxy_overhead)
        if self.dimensions is None:
            return obs
        return dataclasses.replace(obs, attributes={sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT: self.dimensions})


def dimensions(obj: dict[str, Any]) -> int | None:
    """The length of the first vector of a response: a list of floats, or base64 of float32s.

    A request that names no `dimensions` gets the model's default; the response tells it.
    Base64 is measured, never decoded: 4 characters carry 3 bytes, less the `=` padding.
    """
    data = obj.get("data")
    first = data[0] if isinstance(data, list) and data else None
    vector = first.get("embedding") if isinstance(first, dict) else None
    if isinstance(vector, list):
        return len(vector) or None
    if isinstance(vector, str) and vector and len(vector) % 4 == 0:
        padding = 2 if vector.endswith("==") else 1 if vector.endswith("=") else 0
        size = len(vector) // 4 * 3 - padding
        return size // 4 if size % 4 == 0 and size else None
    return None
