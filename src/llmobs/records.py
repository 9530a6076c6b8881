"""Frozen records that flow from accounting to pricing and the sinks."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple


class Outcome(StrEnum):
    """How a proxied request ended; the `outcome` label."""

    COMPLETED = "completed"
    UPSTREAM_ERROR = "upstream_error"  # upstream answered 4xx/5xx, or sent an error inside a stream
    UPSTREAM_UNREACHABLE = "upstream_unreachable"  # connect failed: the proxy answered 502
    UPSTREAM_TIMEOUT = "upstream_timeout"  # no answer in time: the proxy answered 504
    STREAM_INTERRUPTED = "stream_interrupted"  # upstream broke off after the response started
    CLIENT_CLOSED = "client_closed"  # the client went away first
    REJECTED = "rejected"  # the proxy refused the request itself (e.g. 413)


class UsageSource(StrEnum):
    """Where the token counts of an observation come from."""

    REPORTED = "reported"  # the upstream reported usage
    MISSING = "missing"  # usage was expected but never arrived
    NOT_APPLICABLE = "not_applicable"  # the endpoint carries no usage (e.g. /models)


@dataclass(frozen=True, slots=True)
class Usage:
    """What a response used, as the upstream reported it. None means not reported, never zero.

    Token counts follow the OpenTelemetry GenAI conventions, whatever the provider's own
    shape: `input` is all input, cache_read and cache_write included (Anthropic reports them
    apart; they are added back); cache_read, cache_write, input_audio and input_image are
    subsets of input; reasoning, output_audio and output_image are subsets of output.
    `audio_seconds` and `images` are the media quantities some endpoints report instead of
    (or besides) tokens. `pricing` is the usage in genai-prices' own keys when it holds more
    than these fields can say (1-hour vs 5-minute cache writes, audio and image tokens): the
    price is computed from it.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    input_audio_tokens: int | None = None
    input_image_tokens: int | None = None
    output_audio_tokens: int | None = None
    output_image_tokens: int | None = None
    audio_seconds: float | None = None
    images: int | None = None
    pricing: tuple[tuple[str, int | float], ...] = ()

    def by_type(self) -> dict[str, int]:
        """The reported token counts keyed by the `type` label value, skipping unreported ones."""
        pairs = (
            ("input", self.input_tokens),
            ("output", self.output_tokens),
            ("cache_read", self.cache_read_tokens),
            ("cache_write", self.cache_write_tokens),
            ("reasoning", self.reasoning_tokens),
            ("input_audio", self.input_audio_tokens),
            ("input_image", self.input_image_tokens),
            ("output_audio", self.output_audio_tokens),
            ("output_image", self.output_image_tokens),
        )
        return {name: value for name, value in pairs if value is not None}


# Bound on the intervals between output chunks kept per stream (4096 + 1 instants, ~32 KiB as a
# list): enough for all but the longest answers, whose later chunks are left out of the metric.
CHUNK_INTERVALS = 4096


@dataclass(frozen=True, slots=True)
class Timings:
    """Monotonic (perf_counter) instants of one request; None when the moment never came."""

    start: float
    end: float
    first_byte: float | None = None  # first response body byte from upstream
    first_token: float | None = None  # first answer (content/text/tool) delta of a stream
    first_reasoning: float | None = None  # first reasoning delta of a stream
    reasoning_end: float | None = None  # first answer delta after reasoning started
    # When each output chunk of a stream arrived (the first CHUNK_INTERVALS + 1), only when
    # RequestInfo.chunk_times asked for them: gen_ai.client.operation.time_per_output_chunk.
    chunks: tuple[float, ...] = ()

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.start

    @property
    def reasoning_duration(self) -> float | None:
        if self.first_reasoning is None:
            return None
        stop = self.reasoning_end if self.reasoning_end is not None else self.end
        return stop - self.first_reasoning


@dataclass(frozen=True, slots=True)
class Content:
    """Captured prompt or completion text (opt-in), in the GenAI conventions' message shape.

    `messages` follow gen_ai.input.messages / gen_ai.output.messages (role, parts, and
    finish_reason on output); `system` follows gen_ai.system_instructions (a list of parts);
    `tools` (input only) follows gen_ai.tool.definitions. Unredacted: the OTel sink redacts
    just before the text leaves the process. `truncated` says a size cap cut something off.
    """

    messages: tuple[dict[str, Any], ...] = ()
    system: tuple[dict[str, Any], ...] = ()
    truncated: bool = False
    tools: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """What an API adapter read from a request body, and the body to send upstream."""

    model: str | None
    stream: bool
    params: dict[str, Any]
    body: bytes  # what goes upstream
    usage_injected: bool
    input_content: Content | None = None  # the prompt, only when capture was asked for
    conversation: str | None = None  # the body's conversation or session id, if it names one
    tool_definitions: int | None = None  # tools offered (0: none); None when the body was not read
    expects_json: bool = False  # the request asked for JSON output (response_format and the like)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the proxy read from the client's request: the fields we account for, nothing else."""

    endpoint: str  # chat_completions | completions | embeddings | responses | other
    operation: str | None  # GenAI operation name: chat | text_completion | embeddings | None
    model: str | None  # the model the request asked for
    stream: bool = False
    tenant: str = ""
    provider: str | None = None  # gen_ai.provider.name: the upstream's, else the API's own flavor
    pricing_provider: str | None = None  # genai-prices id; None: unknown, priced by model family
    upstream: str = ""  # the route that served it ("" for the default upstream)
    attribution: dict[str, str] = field(default_factory=dict)  # attribution header name -> value
    conversation: str | None = None  # gen_ai.conversation.id: a header, or the body's session fields
    server_address: str = ""  # the upstream's host and port
    server_port: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # generation parameters (semconv names)
    usage_injected: bool = False  # the proxy added stream_options.include_usage
    capture_content: bool = False  # the user opted in to recording prompts and completions
    input_content: Content | None = None  # prompts, only when capture_content is on
    tool_definitions: int | None = None  # tools offered (0: none); None: not an API with tools, or unread
    expects_json: bool = False  # the request asked for JSON output (response_format and the like)
    chunk_times: bool = False  # note when each output chunk arrives (an OTel meter provider is on)


@dataclass(frozen=True, slots=True)
class Quality:
    """Cheap quality signals of one answer, judged without a model. None: not judged.

    Only an answer that ended on its own is judged (completed, and every finish reason a
    natural end: not cut off by a length cap or a filter). `invalid_json`: the answer text of
    a request that asked for JSON, or the arguments of a tool call, do not parse as JSON
    (None when neither applies, or when they were too large to check). `empty_answer`: no
    answer text, tool call or refusal at all. `refusal`: the model refused (OpenAI `refusal`,
    Anthropic `stop_reason: refusal`).
    """

    invalid_json: bool | None = None
    empty_answer: bool | None = None
    refusal: bool | None = None

    def issues(self) -> tuple[str, ...]:
        """The `issue` label values of the signals that are true."""
        if not (self.invalid_json or self.empty_answer or self.refusal):
            return ()  # the common case, on every request: no tuple built
        pairs = (("invalid_json", self.invalid_json), ("empty_answer", self.empty_answer), ("refusal", self.refusal))
        return tuple(name for name, value in pairs if value)


class RateLimit(NamedTuple):  # a tuple: one or more per response, built in a fraction of a dataclass's time
    """One provider rate limit as a response reported it; None where the response did not say.

    `resource` is `requests`, `tokens`, `input_tokens` or `output_tokens`; `reset_seconds` is
    the time until `remaining` is back at `limit`.
    """

    resource: str
    limit: float | None = None
    remaining: float | None = None
    reset_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One finished request: everything the sinks record."""

    request: RequestInfo
    outcome: Outcome
    status_code: int  # what the client got (499 when it left before any response)
    timings: Timings
    usage: Usage = Usage()
    usage_source: UsageSource = UsageSource.NOT_APPLICABLE
    estimated_output_tokens: int | None = None  # only when the output count is missing; never mixed in
    finish_reasons: tuple[str, ...] = ()  # one per choice
    response_model: str | None = None
    response_id: str | None = None
    error_type: str | None = None  # low-cardinality error class, for error.type
    proxy_overhead: float = 0.0  # seconds spent in the proxy itself
    rate_limits: tuple[RateLimit, ...] = ()  # the upstream's rate-limit headers (or Realtime event)
    cost: Decimal | None = None  # USD, set by the recorder; None when the request could not be priced
    trace_id: str | None = None  # the request's span, set by the recorder when tracing
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. service tier, fingerprint
    attributes: dict[str, Any] = field(default_factory=dict)  # more span attributes, named as they go out
    output_content: Content | None = None  # completions, only when capture_content is on
    tool_calls: tuple[str, ...] = ()  # names of the tools the model asked to call, in order
    quality: Quality = Quality()

    @property
    def time_per_output_token(self) -> float | None:
        """(duration − TTFT) / (output tokens − 1) for streams with more than one token."""
        first = self.timings.first_token
        tokens = self.usage.output_tokens
        if tokens is None:
            tokens = self.estimated_output_tokens
        if not self.request.stream or first is None or tokens is None or tokens < 2:
            return None
        return (self.timings.end - first) / (tokens - 1)


@dataclass(frozen=True, slots=True)
class Session:
    """One finished WebSocket session: how long, how it closed, and the frames each way.

    The responses it carried (Realtime `response.done`) are Observations of their own.
    """

    request: RequestInfo
    start: float
    end: float
    close_code: int | None  # the code of the close frame that ended it; None when it was dropped
    outcome: Outcome
    status_code: int  # 101 when the upgrade succeeded, else what the client got
    frames_from_client: int = 0
    bytes_from_client: int = 0
    frames_from_upstream: int = 0
    bytes_from_upstream: int = 0

    @property
    def duration(self) -> float:
        return self.end - self.start
