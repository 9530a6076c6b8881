"""One table: which paths we understand, and how to account for them."""

from __future__ import annotations

from dataclasses import dataclass

from llmobs.apis.accounting import (
    Accumulator,
    ChatAccumulator,
    EmbeddingsAccumulator,
    OtherAccumulator,
    ResponsesAccumulator,
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str  # the `endpoint` label
    operation: str | None  # gen_ai.operation.name
    accumulator: type[Accumulator]
    stream_usage_option: bool = False  # accepts stream_options.include_usage


ENDPOINTS: dict[str, Endpoint] = {
    "chat/completions": Endpoint("chat_completions", "chat", ChatAccumulator, True),
    "completions": Endpoint("completions", "text_completion", ChatAccumulator, True),
    "embeddings": Endpoint("embeddings", "embeddings", EmbeddingsAccumulator),
    "responses": Endpoint("responses", "chat", ResponsesAccumulator),
}
OTHER = Endpoint("other", None, OtherAccumulator)


def classify(method: str, path: str) -> Endpoint:
    """The endpoint of a request, by method and the last path segments (any prefix works)."""
    if method != "POST":
        return OTHER
    head, _, last = path.rstrip("/").rpartition("/")
    if last == "completions" and head.endswith("/chat"):
        return ENDPOINTS["chat/completions"]
    return ENDPOINTS.get(last, OTHER)
