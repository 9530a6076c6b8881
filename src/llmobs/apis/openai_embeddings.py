"""OpenAI embeddings: usage carries prompt tokens only; there are no output tokens (absent, not 0)."""

from __future__ import annotations

import dataclasses
from typing import Any

from llmobs.apis.openai_common import OpenAIAccumulator


class EmbeddingsAccumulator(OpenAIAccumulator):
    """Embeddings: an embedding generates no tokens."""

    has_output = False
    terminal_seen = True

    def on_result(self, obj: dict[str, Any]) -> None:
        super().on_result(obj)
        usage = self.usage
        if usage is not None and usage.input_tokens is not None and usage.output_tokens is None:
            # Priced on input alone: the billable usage is complete without an output count.
            self.usage = dataclasses.replace(usage, pricing=(("input_tokens", usage.input_tokens),))
