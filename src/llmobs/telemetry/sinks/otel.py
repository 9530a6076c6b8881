"""OpenTelemetry sink: GenAI client spans and metrics, exported over OTLP when the OTEL_* env asks."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import Counter, Histogram, MeterProvider
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
    set_span_in_context,
)

from llmobs import __version__
from llmobs.records import Content, Observation, Outcome, RequestInfo
from llmobs.telemetry import semconv as sc
from llmobs.telemetry.labels import LabelGuard
from llmobs.telemetry.redaction import Redactor

log = logging.getLogger(__name__)

# Our own names (the GenAI conventions have no cost, tenant or outcome attribute): see semconv.py.
COST_METRIC = sc.COST_METRIC
TOKEN_BUCKETS = sc.TOKEN_BUCKETS
DURATION_BUCKETS = sc.DURATION_BUCKETS

# Request parameters arrive already named with semconv keys; only these families are generation
# parameters. Anything else (messages, keys, user ids) is never put on a span.
_PARAM_PREFIXES = ("gen_ai.request.", "openai.request.")
_PARAM_KEYS = frozenset({sc.GEN_AI_OUTPUT_TYPE, sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT})
_API_TYPES = {"chat_completions": sc.API_TYPE_CHAT_COMPLETIONS, "responses": sc.API_TYPE_RESPONSES}
_ATTR_CACHE_LIMIT = 4096  # request/response models come from clients: keep the cache bounded


@dataclass(slots=True)
class SpanHandle:
    """One request's span, its context for injection, and the clock anchors to end it on time."""

    span: Span
    context: Context
    wall_ns: int  # time.time_ns() ...
    perf: float  # ... and time.perf_counter() read together in start()

    def epoch_ns(self, instant: float) -> int:
        """Convert a perf_counter instant of this request to epoch nanoseconds."""
        return self.wall_ns + int((instant - self.perf) * 1e9)


class OTelSink:
    """Records each observation as a GenAI CLIENT span and GenAI client metrics."""

    component = "otel"

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        *,
        provider_name: str,
        server_address: str,
        server_port: int,
        propagator: TextMapPropagator | None = None,
        redactor: Redactor | None = None,
        max_attribute_values: int = 200,
    ) -> None:
        """`redactor` masks captured content (default: every built-in rule on);
        `max_attribute_values` bounds the distinct models and tenants in metric attributes, as
        max_label_values does for Prometheus labels.
        """
        self._tracer = tracer_provider.get_tracer("llmobs", __version__) if tracer_provider else None
        self._propagator = propagator
        self._static = {
            sc.GEN_AI_PROVIDER_NAME: provider_name,
            sc.SERVER_ADDRESS: server_address,
            sc.SERVER_PORT: server_port,
        }
        self._metrics = _Instruments(meter_provider) if meter_provider else None
        self._attrs: dict[tuple[Any, ...], Any] = {}
        self._redactor = redactor if redactor is not None else Redactor()
        # Client-fed values in metric attributes are bounded like Prometheus labels are.
        self.max_attribute_values = max_attribute_values
        self._models = LabelGuard(max_attribute_values)
        self._response_models = LabelGuard(max_attribute_values)
        self._tenants = LabelGuard(max_attribute_values)

    # -- spans -------------------------------------------------------------------------------

    def start(self, info: RequestInfo, incoming_headers: Mapping[str, str], start: float) -> SpanHandle | None:
        """Start the CLIENT span of a GenAI request as a child of the caller's trace context."""
        if self._tracer is None or info.operation is None:
            return None
        wall_ns, perf = time.time_ns(), time.perf_counter()
        parent = self._textmap().extract(incoming_headers)
        name = f"{info.operation} {info.model}" if info.model else info.operation
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=self._start_attributes(info),
            start_time=wall_ns + int((start - perf) * 1e9),
        )
        return SpanHandle(span, set_span_in_context(span, parent), wall_ns, perf)

    def inject(self, handle: object | None, headers: dict[str, str]) -> None:
        """Write our span's traceparent/tracestate into the upstream request headers."""
        if not isinstance(handle, SpanHandle):
            return
        fresh: dict[str, str] = {}
        self._textmap().inject(fresh, context=handle.context)
        if not fresh:
            return
        # The caller's own traceparent may sit under another spelling: ours replaces it.
        lower = {key.lower() for key in fresh}
        for key in [key for key in headers if key.lower() in lower]:
            del headers[key]
        headers.update(fresh)

    def trace_id(self, handle: object | None) -> str | None:
        """The trace id of a request's span, as exemplars carry it."""
        if not isinstance(handle, SpanHandle):
            return None
        return format(handle.span.get_span_context().trace_id, "032x")

    def record(self, obs: Observation, span: object = None) -> None:
        """Finish the span of `obs` (if any) and record its metrics; raises when either fails.

        Span and metrics are recorded independently: a failure in one leaves the other done.
        Metrics are recorded in the span's context, so that the SDK's exemplar filter (by
        default trace_based: sampled spans only) attaches the request's trace to each point.
        """
        handle = span if isinstance(span, SpanHandle) else None
        try:
            if handle is not None:
                self._finish_span(obs, handle)
        finally:
            if self._metrics is not None and obs.request.operation is not None:
                self._record_metrics(obs, self._metrics, handle.context if handle is not None else None)

    def _textmap(self) -> TextMapPropagator:
        return self._propagator or get_global_textmap()

    def _where(self, info: RequestInfo) -> dict[str, Any]:
        """Provider and server of a request: its route's, else the sink's defaults."""
        if info.provider is None and not info.server_address:
            return self._static
        return {
            sc.GEN_AI_PROVIDER_NAME: info.provider or self._static[sc.GEN_AI_PROVIDER_NAME],
            sc.SERVER_ADDRESS: info.server_address or self._static[sc.SERVER_ADDRESS],
            sc.SERVER_PORT: info.server_port or self._static[sc.SERVER_PORT],
        }

    def _start_attributes(self, info: RequestInfo) -> dict[str, Any]:
        attrs: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: info.operation, **self._where(info)}
        if info.model:
            attrs[sc.GEN_AI_REQUEST_MODEL] = info.model
        for key, value in info.params.items():
            if _is_param(key, value):
                attrs[key] = list(value) if isinstance(value, (list, tuple)) else value
        if info.stream:  # the conventions set it on streamed requests only
            attrs[sc.GEN_AI_REQUEST_STREAM] = True
        api_type = _API_TYPES.get(info.endpoint)
        if api_type:
            attrs[sc.OPENAI_API_TYPE] = api_type
        if info.tenant:
            attrs[sc.TENANT] = info.tenant
        if info.upstream:
            attrs[sc.UPSTREAM] = info.upstream
        for name, value in info.attribution.items():
            attrs[sc.ATTRIBUTION + name] = value
        if info.conversation:
            attrs[sc.GEN_AI_CONVERSATION_ID] = info.conversation
        if info.tool_definitions is not None:
            attrs[sc.REQUEST_TOOL_DEFINITIONS] = info.tool_definitions
        return attrs

    def _finish_span(self, obs: Observation, handle: SpanHandle) -> None:
        span = handle.span
        try:
            if span.is_recording():
                span.set_attributes(_response_attributes(obs))
                if obs.request.capture_content:
                    span.set_attributes(_content_attributes(obs, self._redactor))
                if obs.outcome is not Outcome.COMPLETED:
                    error_type = obs.error_type or str(obs.outcome)
                    span.set_attribute(sc.ERROR_TYPE, error_type)
                    span.set_status(Status(StatusCode.ERROR, error_type))
        finally:
            end = obs.timings.end
            span.end(end_time=handle.epoch_ns(end) if isinstance(end, (int, float)) else None)

    # -- metrics -----------------------------------------------------------------------------

    def _record_metrics(self, obs: Observation, inst: _Instruments, context: Context | None) -> None:
        info = obs.request
        error = None if obs.outcome is Outcome.COMPLETED else obs.error_type or str(obs.outcome)
        model = self._models(info.model) if info.model else None
        response_model = self._response_models(obs.response_model) if obs.response_model else None
        tenant = self._tenants(info.tenant) if info.tenant else None
        key = (
            info.operation, model, response_model, error, info.provider, info.server_address, info.server_port, tenant
        )  # fmt: skip
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = self._attrs_for(info, model, response_model, error, tenant)
            if len(self._attrs) >= _ATTR_CACHE_LIMIT:
                self._attrs.clear()
            self._attrs[key] = attrs
        base, inputs, outputs, with_error, cost_attrs = attrs
        usage = obs.usage
        if usage.input_tokens is not None:
            inst.tokens.record(usage.input_tokens, inputs, context)
        if usage.output_tokens is not None:  # embeddings have none: no point, rather than 0
            inst.tokens.record(usage.output_tokens, outputs, context)
        inst.duration.record(obs.timings.duration, with_error, context)
        ttfc = _time_to_first_chunk(obs)
        if ttfc is not None:
            inst.time_to_first_chunk.record(ttfc, base, context)
        chunks = obs.timings.chunks
        if info.stream and len(chunks) > 1:
            # One point per chunk after the first: from the end of the one before to its own end.
            record = inst.time_per_output_chunk.record
            for previous, current in itertools.pairwise(chunks):
                record(current - previous, base, context)
        if obs.cost is not None and obs.cost >= 0:
            inst.cost.add(float(obs.cost), cost_attrs, context)

    def _attrs_for(
        self, info: RequestInfo, model: str | None, response_model: str | None, error: str | None, tenant: str | None
    ) -> tuple[dict[str, Any], ...]:
        base: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: info.operation, **self._where(info)}
        if model:
            base[sc.GEN_AI_REQUEST_MODEL] = model
        cost_attrs = {key: base[key] for key in base if key not in (sc.SERVER_ADDRESS, sc.SERVER_PORT)}
        if tenant:  # who spends: on cost only, as Prometheus's llmobs_cost_usd_total has it
            cost_attrs[sc.TENANT] = tenant
        if response_model:
            base[sc.GEN_AI_RESPONSE_MODEL] = response_model
        inputs = {**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_INPUT}
        outputs = {**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT}
        with_error = base if error is None else {**base, sc.ERROR_TYPE: error}
        return base, inputs, outputs, with_error, cost_attrs


class _Instruments:
    """The sink's instruments, created once per meter provider with explicit bucket advice.

    Name, unit and description are the pinned package's (its create_* helpers set no buckets).
    """

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter("llmobs", __version__)

        def histogram(spec: sc.Instrument, buckets: tuple[float, ...]) -> Histogram:
            return meter.create_histogram(
                spec.name, unit=spec.unit, description=spec.description, explicit_bucket_boundaries_advisory=buckets
            )

        self.tokens = histogram(sc.TOKEN_USAGE, TOKEN_BUCKETS)
        self.duration = histogram(sc.OPERATION_DURATION, DURATION_BUCKETS)
        self.time_to_first_chunk = histogram(sc.TIME_TO_FIRST_CHUNK, DURATION_BUCKETS)
        self.time_per_output_chunk = histogram(sc.TIME_PER_OUTPUT_CHUNK, DURATION_BUCKETS)
        self.cost: Counter = meter.create_counter(
            COST_METRIC, unit=sc.UNIT_USD, description="Cost of GenAI requests in US dollars, as priced by llmobs."
        )


def _is_param(key: str, value: Any) -> bool:
    if not (key.startswith(_PARAM_PREFIXES) or key in _PARAM_KEYS) or value is None:
        return False
    if key == sc.GEN_AI_REQUEST_CHOICE_COUNT and value == 1:
        return False  # the conventions ask for choice.count only when it is not 1
    if isinstance(value, (str, bool, int, float)):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, (str, bool, int, float)) for v in value)


def _content_attributes(obs: Observation, redactor: Redactor) -> dict[str, Any]:
    """Captured prompt, completion and tools offered as semconv JSON strings, redacted on the way out."""
    attrs: dict[str, Any] = {}
    truncated = False
    for key, content, field in (
        (sc.GEN_AI_INPUT_MESSAGES, obs.request.input_content, "messages"),
        (sc.GEN_AI_SYSTEM_INSTRUCTIONS, obs.request.input_content, "system"),
        (sc.GEN_AI_OUTPUT_MESSAGES, obs.output_content, "messages"),
        (sc.GEN_AI_TOOL_DEFINITIONS, obs.request.input_content, "tools"),
    ):
        value = getattr(content, field) if content is not None else ()
        if value:
            attrs[key] = _json(redactor.redact_value(list(value)))
        truncated = truncated or _truncated(content)
    if truncated:
        attrs[sc.CONTENT_TRUNCATED] = True
    return attrs


def _truncated(content: Content | None) -> bool:
    return content is not None and content.truncated


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate from the client's JSON would fail the export
        text = text.encode(errors="replace").decode()
    return text


def _time_to_first_chunk(obs: Observation) -> float | None:
    """Seconds to the first chunk of output of a stream, as Prometheus's TTFT reads it: the first
    answer delta (the Responses API's first output delta, not response.created), or the first
    reasoning delta when that came first. None for a stream that produced no content."""
    if not obs.request.stream:
        return None
    timings = obs.timings
    candidates = [t for t in (timings.first_token, timings.first_reasoning) if t is not None]
    return min(candidates) - timings.start if candidates else None


def _response_attributes(obs: Observation) -> dict[str, Any]:
    attrs: dict[str, Any] = {sc.OUTCOME: str(obs.outcome), sc.HTTP_RESPONSE_STATUS_CODE: obs.status_code}
    if obs.response_id:
        attrs[sc.GEN_AI_RESPONSE_ID] = obs.response_id
    if obs.response_model:
        attrs[sc.GEN_AI_RESPONSE_MODEL] = obs.response_model
    if obs.finish_reasons:
        attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [str(reason) for reason in obs.finish_reasons]
    usage = obs.usage
    for key, value in (
        (sc.GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens),
        (sc.GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens),
        (sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, usage.cache_read_tokens),
        (sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, usage.cache_write_tokens),
        (sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, usage.reasoning_tokens),
        (sc.GEN_AI_USAGE_AUDIO_INPUT_TOKENS, usage.input_audio_tokens),
        (sc.GEN_AI_USAGE_AUDIO_OUTPUT_TOKENS, usage.output_audio_tokens),
        (sc.GEN_AI_USAGE_IMAGE_INPUT_TOKENS, usage.input_image_tokens),
        (sc.USAGE_IMAGE_OUTPUT_TOKENS, usage.output_image_tokens),
        (sc.ESTIMATED_OUTPUT_TOKENS, obs.estimated_output_tokens),
    ):
        if value is not None:
            attrs[key] = value
    attrs[sc.USAGE_SOURCE] = str(obs.usage_source)
    if obs.tool_calls:
        attrs[sc.TOOL_CALLS] = list(obs.tool_calls)
    quality = obs.quality
    for name, value in (
        ("invalid_json", quality.invalid_json),
        ("empty_answer", quality.empty_answer),
        ("refusal", quality.refusal),
    ):
        if value is not None:
            attrs[sc.QUALITY + name] = value
    attrs.update(obs.attributes)
    ttfc = _time_to_first_chunk(obs)
    if ttfc is not None:
        attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = ttfc
    if obs.cost is not None:
        attrs[sc.COST_USD] = float(obs.cost)
    for key, names in (
        (sc.OPENAI_RESPONSE_SERVICE_TIER, ("service_tier", sc.OPENAI_RESPONSE_SERVICE_TIER)),
        (
            sc.OPENAI_RESPONSE_SYSTEM_FINGERPRINT,
            ("system_fingerprint", sc.OPENAI_RESPONSE_SYSTEM_FINGERPRINT),
        ),
    ):
        value = next((obs.extra[n] for n in names if isinstance(obs.extra.get(n), str)), None)
        if value:
            attrs[key] = value
    return attrs
