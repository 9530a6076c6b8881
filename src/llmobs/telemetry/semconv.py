"""Every OpenTelemetry name llmobs emits, in one place, from the pinned semantic conventions.

llmobs follows `opentelemetry-semantic-conventions==0.66b2` (VERSION; pyproject.toml pins the
same): its incubating `gen_ai` and `openai` modules carry the GenAI names, which now live in
open-telemetry/semantic-conventions-genai. Each name below is imported from that package, so
a rename in a later version breaks the import, and tests/test_otel_conformance.py checks every
name found in real OTLP exports against the installed package. Other modules take their names
from here, never as string literals.

Three families:

* the pinned package's names (attributes, metrics, well-known values);
* AHEAD_OF_PIN: names the GenAI conventions define after the pin (the per-modality usage
  counts), spelled as the genai repository's registry has them; the conformance test fails
  once the pinned package carries one of them, so that it is imported instead;
* llmobs's own names, for what the conventions have no name for: all start with `llmobs.`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from opentelemetry.metrics import Histogram, Meter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _genai
from opentelemetry.semconv._incubating.attributes import openai_attributes as _openai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as _metrics
from opentelemetry.semconv.attributes import (
    error_attributes,
    http_attributes,
    server_attributes,
    service_attributes,
)

VERSION: Final = "0.66b2"  # the opentelemetry-semantic-conventions release these names come from

# -- attributes: the pinned package ----------------------------------------------------------------

GEN_AI_OPERATION_NAME: Final = _genai.GEN_AI_OPERATION_NAME
GEN_AI_PROVIDER_NAME: Final = _genai.GEN_AI_PROVIDER_NAME
GEN_AI_CONVERSATION_ID: Final = _genai.GEN_AI_CONVERSATION_ID
GEN_AI_OUTPUT_TYPE: Final = _genai.GEN_AI_OUTPUT_TYPE
GEN_AI_EMBEDDINGS_DIMENSION_COUNT: Final = _genai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT

GEN_AI_REQUEST_MODEL: Final = _genai.GEN_AI_REQUEST_MODEL
GEN_AI_REQUEST_STREAM: Final = _genai.GEN_AI_REQUEST_STREAM
GEN_AI_REQUEST_TEMPERATURE: Final = _genai.GEN_AI_REQUEST_TEMPERATURE
GEN_AI_REQUEST_TOP_P: Final = _genai.GEN_AI_REQUEST_TOP_P
GEN_AI_REQUEST_TOP_K: Final = _genai.GEN_AI_REQUEST_TOP_K
GEN_AI_REQUEST_MAX_TOKENS: Final = _genai.GEN_AI_REQUEST_MAX_TOKENS
GEN_AI_REQUEST_FREQUENCY_PENALTY: Final = _genai.GEN_AI_REQUEST_FREQUENCY_PENALTY
GEN_AI_REQUEST_PRESENCE_PENALTY: Final = _genai.GEN_AI_REQUEST_PRESENCE_PENALTY
GEN_AI_REQUEST_SEED: Final = _genai.GEN_AI_REQUEST_SEED
GEN_AI_REQUEST_STOP_SEQUENCES: Final = _genai.GEN_AI_REQUEST_STOP_SEQUENCES
GEN_AI_REQUEST_CHOICE_COUNT: Final = _genai.GEN_AI_REQUEST_CHOICE_COUNT
GEN_AI_REQUEST_ENCODING_FORMATS: Final = _genai.GEN_AI_REQUEST_ENCODING_FORMATS

GEN_AI_RESPONSE_ID: Final = _genai.GEN_AI_RESPONSE_ID
GEN_AI_RESPONSE_MODEL: Final = _genai.GEN_AI_RESPONSE_MODEL
GEN_AI_RESPONSE_FINISH_REASONS: Final = _genai.GEN_AI_RESPONSE_FINISH_REASONS
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = _genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK

GEN_AI_USAGE_INPUT_TOKENS: Final = _genai.GEN_AI_USAGE_INPUT_TOKENS
GEN_AI_USAGE_OUTPUT_TOKENS: Final = _genai.GEN_AI_USAGE_OUTPUT_TOKENS
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = _genai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = _genai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = _genai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
GEN_AI_TOKEN_TYPE: Final = _genai.GEN_AI_TOKEN_TYPE

# Opt-in content (content capture on).
GEN_AI_INPUT_MESSAGES: Final = _genai.GEN_AI_INPUT_MESSAGES
GEN_AI_OUTPUT_MESSAGES: Final = _genai.GEN_AI_OUTPUT_MESSAGES
GEN_AI_SYSTEM_INSTRUCTIONS: Final = _genai.GEN_AI_SYSTEM_INSTRUCTIONS
GEN_AI_TOOL_DEFINITIONS: Final = _genai.GEN_AI_TOOL_DEFINITIONS

OPENAI_API_TYPE: Final = _openai.OPENAI_API_TYPE
OPENAI_REQUEST_SERVICE_TIER: Final = _openai.OPENAI_REQUEST_SERVICE_TIER
OPENAI_RESPONSE_SERVICE_TIER: Final = _openai.OPENAI_RESPONSE_SERVICE_TIER
OPENAI_RESPONSE_SYSTEM_FINGERPRINT: Final = _openai.OPENAI_RESPONSE_SYSTEM_FINGERPRINT

ERROR_TYPE: Final = error_attributes.ERROR_TYPE
HTTP_RESPONSE_STATUS_CODE: Final = http_attributes.HTTP_RESPONSE_STATUS_CODE
SERVER_ADDRESS: Final = server_attributes.SERVER_ADDRESS
SERVER_PORT: Final = server_attributes.SERVER_PORT
SERVICE_NAME: Final = service_attributes.SERVICE_NAME  # resource
SERVICE_VERSION: Final = service_attributes.SERVICE_VERSION  # resource

# Well-known values.
TOKEN_TYPE_INPUT: Final = _genai.GenAiTokenTypeValues.INPUT.value
TOKEN_TYPE_OUTPUT: Final = _genai.GenAiTokenTypeValues.OUTPUT.value
OUTPUT_TYPE_TEXT: Final = _genai.GenAiOutputTypeValues.TEXT.value
OUTPUT_TYPE_JSON: Final = _genai.GenAiOutputTypeValues.JSON.value
OUTPUT_TYPE_IMAGE: Final = _genai.GenAiOutputTypeValues.IMAGE.value
OUTPUT_TYPE_SPEECH: Final = _genai.GenAiOutputTypeValues.SPEECH.value
API_TYPE_CHAT_COMPLETIONS: Final = _openai.OpenaiApiTypeValues.CHAT_COMPLETIONS.value
API_TYPE_RESPONSES: Final = _openai.OpenaiApiTypeValues.RESPONSES.value

# -- metrics: the pinned package ------------------------------------------------------------------

GEN_AI_CLIENT_TOKEN_USAGE: Final = _metrics.GEN_AI_CLIENT_TOKEN_USAGE
GEN_AI_CLIENT_OPERATION_DURATION: Final = _metrics.GEN_AI_CLIENT_OPERATION_DURATION
GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK: Final = _metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK
GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK: Final = _metrics.GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK


@dataclass(frozen=True, slots=True)
class Instrument:
    """A metric as the pinned package defines it: name, unit and description."""

    name: str
    unit: str
    description: str


class _Spec:
    """Stands in for a Meter to read what a pinned `create_*` helper asks for."""

    def create_histogram(self, name: str, unit: str = "", description: str = "", **_: Any) -> Instrument:
        return Instrument(name, unit, description)


def _spec(create: Callable[[Meter], Histogram]) -> Instrument:
    return cast(Instrument, create(cast(Meter, _Spec())))


TOKEN_USAGE: Final = _spec(_metrics.create_gen_ai_client_token_usage)
OPERATION_DURATION: Final = _spec(_metrics.create_gen_ai_client_operation_duration)
TIME_TO_FIRST_CHUNK: Final = _spec(_metrics.create_gen_ai_client_operation_time_to_first_chunk)
TIME_PER_OUTPUT_CHUNK: Final = _spec(_metrics.create_gen_ai_client_operation_time_per_output_chunk)
UNIT_TOKEN: Final = TOKEN_USAGE.unit  # `{token}`: a UCUM annotation
UNIT_SECONDS: Final = OPERATION_DURATION.unit  # `s`
# The buckets the GenAI metric conventions suggest (their docs; the helpers set no bucket advice).
TOKEN_BUCKETS: Final = tuple(float(4**i) for i in range(14))  # 1 .. 67,108,864
DURATION_BUCKETS: Final = tuple(0.01 * 2**i for i in range(14))  # 0.01 .. 81.92 s

# -- ahead of the pin: open-telemetry/semantic-conventions-genai defines these (its attribute
# registry and inference span, docs/registry/attributes/gen-ai.md and docs/gen-ai/gen-ai-spans.md
# at commit 002c8a6): "Recommended when the provider reports it", each a subset of the input or
# output total. Not in 0.66b2. It has no image *output* count there: that one is ours, below.

GEN_AI_USAGE_AUDIO_INPUT_TOKENS: Final = "gen_ai.usage.audio.input_tokens"
GEN_AI_USAGE_AUDIO_OUTPUT_TOKENS: Final = "gen_ai.usage.audio.output_tokens"
GEN_AI_USAGE_IMAGE_INPUT_TOKENS: Final = "gen_ai.usage.image.input_tokens"
AHEAD_OF_PIN: Final = frozenset(
    {GEN_AI_USAGE_AUDIO_INPUT_TOKENS, GEN_AI_USAGE_AUDIO_OUTPUT_TOKENS, GEN_AI_USAGE_IMAGE_INPUT_TOKENS}
)

# -- ours: what the conventions have no name for -------------------------------------------------

PREFIX: Final = "llmobs."
COST_METRIC: Final = "llmobs.cost"  # counter, USD
# Money is no UCUM unit. `{USD}` is an annotation (a UCUM "unity" with a label, as semconv writes
# `{token}`): every backend accepts it and shows the label; a bare `USD` would be read as an
# unknown unit by those that check UCUM.
UNIT_USD: Final = "{USD}"
COST_USD: Final = "llmobs.cost_usd"
TENANT: Final = "llmobs.tenant"
UPSTREAM: Final = "llmobs.upstream"  # the route that served the request, when routes are configured
ATTRIBUTION: Final = "llmobs.attribution."  # + the attribution header's name: user, project, feature...
OUTCOME: Final = "llmobs.outcome"
USAGE_SOURCE: Final = "llmobs.usage_source"
ESTIMATED_OUTPUT_TOKENS: Final = "llmobs.estimated_output_tokens"
CONTENT_TRUNCATED: Final = "llmobs.content.truncated"  # captured content hit the size cap
# The conventions name tool calls only inside the opt-in gen_ai.output.messages (gen_ai.tool.name
# is for a tool's own execute_tool span): the names called get our own attribute; so does the
# number of tools offered, which is no content.
TOOL_CALLS: Final = "llmobs.tool_calls"
REQUEST_TOOL_DEFINITIONS: Final = "llmobs.request.tool_definitions"
QUALITY: Final = "llmobs.quality."  # + invalid_json, empty_answer, refusal
# Anthropic's split of cache writes by lifetime.
USAGE_CACHE_5M: Final = "llmobs.usage.cache_creation.ephemeral_5m_input_tokens"
USAGE_CACHE_1H: Final = "llmobs.usage.cache_creation.ephemeral_1h_input_tokens"
# Image output tokens (GPT image models): named like the genai family above, under our prefix.
USAGE_IMAGE_OUTPUT_TOKENS: Final = "llmobs.usage.image.output_tokens"
