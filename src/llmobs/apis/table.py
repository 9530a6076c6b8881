"""One table: which paths we understand, and the adapter that accounts for each."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from llmobs.apis.anthropic_messages import MessagesAccumulator, parse_request
from llmobs.apis.base import Accumulator, OtherAccumulator
from llmobs.apis.openai_chat import ChatAccumulator
from llmobs.apis.openai_embeddings import EmbeddingsAccumulator
from llmobs.apis.openai_media import (
    ImagesAccumulator,
    ModerationsAccumulator,
    SpeechAccumulator,
    TranscriptionAccumulator,
    TranslationAccumulator,
    read_audio_text,
    read_images,
    read_model,
    read_speech,
)
from llmobs.apis.openai_realtime import RealtimeAdapter
from llmobs.apis.openai_responses import ResponsesAccumulator
from llmobs.apis.request import parse_body
from llmobs.records import ParsedBody, RequestInfo


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One API's adapter: its labels, how to read a request, how to account a response."""

    name: str  # the `endpoint` label
    operation: str | None  # gen_ai.operation.name
    accumulator: type[Accumulator]
    stream_usage_option: bool = False  # accepts stream_options.include_usage
    flavor: str = "openai"
    reader: Callable[[bytes, bytes], ParsedBody] | None = None  # (body, content type); None: JSON chat-like

    def parse(
        self,
        body: bytes,
        *,
        path: str = "",
        content_type: bytes = b"",
        inject_usage: bool = False,
        capture_content: bool = False,
    ) -> ParsedBody:
        """The fields we account for; the body to send (include_usage added when asked).

        An Azure OpenAI request names no model in its body: its deployment (from the path)
        stands in, until the response names the model that served it.
        """
        if self.operation is None:
            return ParsedBody(None, False, {}, body, False)
        if self.reader is not None:
            parsed = self.reader(body, content_type)
        else:
            parsed = parse_body(
                self.name,
                body,
                stream_usage_option=self.stream_usage_option,
                inject_usage=inject_usage,
                capture_content=capture_content,
            )
        if parsed.model is None and (deployment := azure_deployment(path)):
            parsed = dataclasses.replace(parsed, model=deployment)
        return parsed

    def observe(self, info: RequestInfo, start: float) -> Accumulator:
        """A fresh accumulator for one response."""
        return self.accumulator(info, start)


@dataclass(frozen=True, slots=True)
class AnthropicEndpoint(Endpoint):
    """An Anthropic API: its own request shape (`stop_sequences`; usage always sent, never injected)."""

    flavor: str = "anthropic"

    def parse(
        self,
        body: bytes,
        *,
        path: str = "",
        content_type: bytes = b"",
        inject_usage: bool = False,
        capture_content: bool = False,
    ) -> ParsedBody:
        """Model, stream and parameters; the body goes upstream as it came."""
        if self.operation is None:
            return self.reader(body, content_type) if self.reader else ParsedBody(None, False, {}, body, False)
        return parse_request(body, capture_content=capture_content)


ENDPOINTS: dict[str, Endpoint] = {
    "chat/completions": Endpoint("chat_completions", "chat", ChatAccumulator, True),
    "completions": Endpoint("completions", "text_completion", ChatAccumulator, True),
    "embeddings": Endpoint("embeddings", "embeddings", EmbeddingsAccumulator),
    "responses": Endpoint("responses", "chat", ResponsesAccumulator),
    "messages": AnthropicEndpoint("messages", "chat", MessagesAccumulator),
    "messages/count_tokens": AnthropicEndpoint("messages_count_tokens", None, OtherAccumulator, reader=read_model),
    "messages/batches": AnthropicEndpoint("messages_batches", None, OtherAccumulator),
    # Media: generate_content is semconv's multimodal generation; moderation has no semconv value.
    "images/generations": Endpoint("images_generations", "generate_content", ImagesAccumulator, reader=read_images),
    "images/edits": Endpoint("images_edits", "generate_content", ImagesAccumulator, reader=read_images),
    "audio/transcriptions": Endpoint(
        "audio_transcriptions", "generate_content", TranscriptionAccumulator, reader=read_audio_text
    ),
    "audio/translations": Endpoint(
        "audio_translations", "generate_content", TranslationAccumulator, reader=read_audio_text
    ),
    "audio/speech": Endpoint("audio_speech", "generate_content", SpeechAccumulator, reader=read_speech),
    "moderations": Endpoint("moderations", "moderation", ModerationsAccumulator, reader=read_model),
}
# Last segments that name an API only with the one before them (`images/edits`, not `/v1/edits`).
_TWO_SEGMENTS = frozenset({"generations", "edits", "transcriptions", "translations", "speech"})
OTHER = Endpoint("other", None, OtherAccumulator)


_DEPLOYMENT = re.compile(r"/deployments/([^/]{1,256})/")


def azure_deployment(path: str) -> str | None:
    """The deployment of an Azure OpenAI path (`/openai/deployments/{deployment}/...`), if any."""
    match = _DEPLOYMENT.search(path)
    return unquote(match.group(1)) if match else None


REALTIME = RealtimeAdapter()


def classify_websocket(path: str) -> RealtimeAdapter | None:
    """The API of an upgraded connection, by its last path segment; None: relayed, not understood."""
    return REALTIME if path.rstrip("/").rpartition("/")[2] == "realtime" else None


def classify(method: str, path: str) -> Endpoint:
    """The endpoint of a request, by method and the last path segments (any prefix works)."""
    if method != "POST":
        return OTHER
    head, _, last = path.rstrip("/").rpartition("/")
    if last == "completions" and head.endswith("/chat"):
        return ENDPOINTS["chat/completions"]
    if last in _TWO_SEGMENTS:
        return ENDPOINTS.get(head.rpartition("/")[2] + "/" + last, OTHER)
    endpoint = ENDPOINTS.get(last)
    if endpoint is not None:
        # OpenAI's Assistants API has `/threads/{id}/messages`: not Anthropic's.
        return OTHER if last == "messages" and "/threads/" in head else endpoint
    # Two-segment rows (`messages/count_tokens`): only a miss pays for this.
    return ENDPOINTS.get(head.rpartition("/")[2] + "/" + last, OTHER)
