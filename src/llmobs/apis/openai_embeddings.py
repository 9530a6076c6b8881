"""OpenAI embeddings: usage carries prompt tokens only."""

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
        if self.usage is not None and self.usage.input_tokens is not None and self.usage.output_tokens is None:
            self.usage = dataclasses.replace(self.usage, output_tokens=0)
