"""llmobs: a transparent observability proxy for OpenAI-compatible LLM APIs."""

from __future__ import annotations

__version__ = "0.1.0"
