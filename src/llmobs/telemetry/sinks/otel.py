"""OpenTelemetry sink: GenAI client spans and metrics, exported over OTLP when the OTEL_* env asks."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import Counter, Histogram, MeterProvider
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai
from opentelemetry.semconv._incubating.attributes import (
    openai_attributes as openai_attrs,
)
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.semconv.attributes.server_attributes import (
    SERVER_ADDRESS,
    SERVER_PORT,
)
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
from llmobs.telemetry.labels import LabelGuard
from llmobs.telemetry.redaction import Redactor
from llmobs.telemetry.sinks.span_queue import BoundedBatchSpanProcessor

log = logging.getLogger(__name__)

# Our own names: the GenAI conventions have no cost, tenant or outcome attribute.
COST_METRIC = "llmobs.cost"
ATTR_COST_USD = "llmobs.cost_usd"
ATTR_TENANT = "llmobs.tenant"
ATTR_OUTCOME = "llmobs.outcome"
ATTR_USAGE_SOURCE = "llmobs.usage_source"
ATTR_ESTIMATED_OUTPUT_TOKENS = "llmobs.estimated_output_tokens"
ATTR_CONTENT_TRUNCATED = "llmobs.content.truncated"  # captured content hit the size cap

# Suggested buckets from the GenAI metric conventions; the semconv create_* helpers set none.
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1 .. 67,108,864
DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01 .. 81.92 s

# Request parameters arrive already named with semconv keys; only these families are generation
# parameters. Anything else (messages, keys, user ids) is never put on a span.
_PARAM_PREFIXES = ("gen_ai.request.", "openai.request.")
_PARAM_KEYS = frozenset({genai.GEN_AI_OUTPUT_TYPE, genai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT})
_API_TYPES = {
    "chat_completions": openai_attrs.OpenaiApiTypeValues.CHAT_COMPLETIONS.value,
    "responses": openai_attrs.OpenaiApiTypeValues.RESPONSES.value,
}
_INPUT = genai.GenAiTokenTypeValues.INPUT.value
_OUTPUT = genai.GenAiTokenTypeValues.OUTPUT.value
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

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        *,
        provider_name: str,
        server_address: str,
        server_port: int,
        propagator: TextMapPropagator | None = None,
        strict: bool = False,
        redactor: Redactor | None = None,
        max_attribute_values: int = 200,
    ) -> None:
        """`redactor` masks captured content (default: every built-in rule on);
        `max_attribute_values` bounds the distinct models in metric attributes, as
        max_label_values does for Prometheus labels.
        """
        self._tracer = tracer_provider.get_tracer("llmobs", __version__) if tracer_provider else None
        self._propagator = propagator
        self._strict = strict  # re-raise recording errors (tests) instead of logging them
        self.errors = 0  # recording failures swallowed so far
        self._static = {
            genai.GEN_AI_PROVIDER_NAME: provider_name,
            SERVER_ADDRESS: server_address,
            SERVER_PORT: server_port,
        }
        self._metrics = _Instruments(meter_provider) if meter_provider else None
        self._attrs: dict[tuple[Any, ...], Any] = {}
        self._redactor = redactor if redactor is not None else Redactor()
        # Client-fed values in metric attributes are bounded like Prometheus labels are.
        self.max_attribute_values = max_attribute_values
        self._models = LabelGuard(max_attribute_values)
        self._response_models = LabelGuard(max_attribute_values)

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

    def inject(self, handle: SpanHandle | None, headers: dict[str, str]) -> None:
        """Write our span's traceparent/tracestate into the upstream request headers."""
        if handle is None:
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

    def record(self, obs: Observation, handle: SpanHandle | None) -> None:
        """Finish the span of `obs` (if any) and record its metrics; never raises unless strict."""
        # Span and metrics fail independently, and telemetry never breaks the traffic.
        if handle is not None:
            try:
                self._finish_span(obs, handle)
            except Exception:
                self._failed("span")
                if self._strict:
                    raise
        if self._metrics is not None and obs.request.operation is not None:
            try:
                self._record_metrics(obs, self._metrics)
            except Exception:
                self._failed("metrics")
                if self._strict:
                    raise

    def _failed(self, what: str) -> None:
        self.errors += 1
        log.debug("otel sink failed to record %s", what, exc_info=True)  # noqa: LOG014 - called in handlers

    def _textmap(self) -> TextMapPropagator:
        return self._propagator or get_global_textmap()

    def _start_attributes(self, info: RequestInfo) -> dict[str, Any]:
        attrs: dict[str, Any] = {genai.GEN_AI_OPERATION_NAME: info.operation, **self._static}
        if info.model:
            attrs[genai.GEN_AI_REQUEST_MODEL] = info.model
        for key, value in info.params.items():
            if _is_param(key, value):
                attrs[key] = list(value) if isinstance(value, (list, tuple)) else value
        attrs[genai.GEN_AI_REQUEST_STREAM] = bool(info.stream)
        api_type = _API_TYPES.get(info.endpoint)
        if api_type:
            attrs[openai_attrs.OPENAI_API_TYPE] = api_type
        if info.tenant:
            attrs[ATTR_TENANT] = info.tenant
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
                    span.set_attribute(ERROR_TYPE, error_type)
                    span.set_status(Status(StatusCode.ERROR, error_type))
        finally:
            end = obs.timings.end
            span.end(end_time=handle.epoch_ns(end) if isinstance(end, (int, float)) else None)

    # -- metrics -----------------------------------------------------------------------------

    def _record_metrics(self, obs: Observation, inst: _Instruments) -> None:
        info = obs.request
        error = None if obs.outcome is Outcome.COMPLETED else obs.error_type or str(obs.outcome)
        model = self._models(info.model) if info.model else None
        response_model = self._response_models(obs.response_model) if obs.response_model else None
        key = (info.operation, model, response_model, error)
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = self._attrs_for(info.operation, model, response_model, error)
            if len(self._attrs) >= _ATTR_CACHE_LIMIT:
                self._attrs.clear()
            self._attrs[key] = attrs
        base, inputs, outputs, with_error, cost_attrs = attrs
        usage = obs.usage
        if usage.input_tokens is not None:
            inst.tokens.record(usage.input_tokens, inputs)
        if usage.output_tokens is not None:
            inst.tokens.record(usage.output_tokens, outputs)
        inst.duration.record(obs.timings.duration, with_error)
        ttfc = _time_to_first_chunk(obs)
        if ttfc is not None:
            inst.time_to_first_chunk.record(ttfc, base)
        if obs.cost is not None and obs.cost >= 0:
            inst.cost.add(float(obs.cost), cost_attrs)

    def _attrs_for(
        self, operation: str | None, model: str | None, response_model: str | None, error: str | None
    ) -> tuple[dict[str, Any], ...]:
        base: dict[str, Any] = {genai.GEN_AI_OPERATION_NAME: operation, **self._static}
        if model:
            base[genai.GEN_AI_REQUEST_MODEL] = model
        cost_attrs = {key: base[key] for key in base if key not in (SERVER_ADDRESS, SERVER_PORT)}
        if response_model:
            base[genai.GEN_AI_RESPONSE_MODEL] = response_model
        inputs = {**base, genai.GEN_AI_TOKEN_TYPE: _INPUT}
        outputs = {**base, genai.GEN_AI_TOKEN_TYPE: _OUTPUT}
        with_error = base if error is None else {**base, ERROR_TYPE: error}
        return base, inputs, outputs, with_error, cost_attrs


class _Instruments:
    """The sink's instruments, created once per meter provider with explicit bucket advice."""

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter("llmobs", __version__)
        self.tokens: Histogram = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration: Histogram = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.time_to_first_chunk: Histogram = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.cost: Counter = meter.create_counter(
            COST_METRIC, unit="USD", description="Cost of GenAI requests, as priced by llmobs."
        )


def _is_param(key: str, value: Any) -> bool:
    if not (key.startswith(_PARAM_PREFIXES) or key in _PARAM_KEYS) or value is None:
        return False
    if key == genai.GEN_AI_REQUEST_CHOICE_COUNT and value == 1:
        return False  # the conventions ask for choice.count only when it is not 1
    if isinstance(value, (str, bool, int, float)):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, (str, bool, int, float)) for v in value)


def _content_attributes(obs: Observation, redactor: Redactor) -> dict[str, Any]:
    """Captured prompt and completion as semconv JSON strings, redacted on the way out."""
    attrs: dict[str, Any] = {}
    truncated = False
    for key, content, field in (
        (genai.GEN_AI_INPUT_MESSAGES, obs.request.input_content, "messages"),
        (genai.GEN_AI_SYSTEM_INSTRUCTIONS, obs.request.input_content, "system"),
        (genai.GEN_AI_OUTPUT_MESSAGES, obs.output_content, "messages"),
    ):
        value = getattr(content, field) if content is not None else ()
        if value:
            attrs[key] = _json(redactor.redact_value(list(value)))
        truncated = truncated or _truncated(content)
    if truncated:
        attrs[ATTR_CONTENT_TRUNCATED] = True
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
    """Seconds to the first chunk of a stream: the first body byte, as client instrumentations see it."""
    if not obs.request.stream:
        return None
    timings = obs.timings
    first = timings.first_byte
    if first is None:
        candidates = [t for t in (timings.first_token, timings.first_reasoning) if t is not None]
        first = min(candidates) if candidates else None
    return None if first is None else first - timings.start


def _response_attributes(obs: Observation) -> dict[str, Any]:
    attrs: dict[str, Any] = {ATTR_OUTCOME: str(obs.outcome), HTTP_RESPONSE_STATUS_CODE: obs.status_code}
    if obs.response_id:
        attrs[genai.GEN_AI_RESPONSE_ID] = obs.response_id
    if obs.response_model:
        attrs[genai.GEN_AI_RESPONSE_MODEL] = obs.response_model
    if obs.finish_reasons:
        attrs[genai.GEN_AI_RESPONSE_FINISH_REASONS] = [str(reason) for reason in obs.finish_reasons]
    usage = obs.usage
    for key, value in (
        (genai.GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens),
        (genai.GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens),
        (genai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, usage.cache_read_tokens),
        (genai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, usage.cache_write_tokens),
        (genai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, usage.reasoning_tokens),
        (ATTR_ESTIMATED_OUTPUT_TOKENS, obs.estimated_output_tokens),
    ):
        if value is not None:
            attrs[key] = value
    attrs[ATTR_USAGE_SOURCE] = str(obs.usage_source)
    ttfc = _time_to_first_chunk(obs)
    if ttfc is not None:
        attrs[genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = ttfc
    if obs.cost is not None:
        attrs[ATTR_COST_USD] = float(obs.cost)
    for key, names in (
        (openai_attrs.OPENAI_RESPONSE_SERVICE_TIER, ("service_tier", openai_attrs.OPENAI_RESPONSE_SERVICE_TIER)),
        (
            openai_attrs.OPENAI_RESPONSE_SYSTEM_FINGERPRINT,
            ("system_fingerprint", openai_attrs.OPENAI_RESPONSE_SYSTEM_FINGERPRINT),
        ),
    ):
        value = next((obs.extra[n] for n in names if isinstance(obs.extra.get(n), str)), None)
        if value:
            attrs[key] = value
    return attrs


# -- export: providers from the standard OTEL_* environment ----------------------------------


def providers_from_env(
    on_span_dropped: Callable[[], None] | None = None,
    *,
    on_export_failed: Callable[[int], None] | None = None,
) -> tuple[SdkTracerProvider | None, SdkMeterProvider | None]:
    """Build OTLP-exporting tracer and meter providers from the standard OTEL_* env, or (None, None).

    Export is on only when an OTLP endpoint is configured and OTEL_SDK_DISABLED is not true,
    so that by default nothing is exported and nothing slows down. `on_span_dropped` is called
    once per span dropped because the export queue was full (on the recording thread);
    `on_export_failed(n)` once per failed export batch of n spans (on the export thread).
    The exporters themselves read their endpoint, headers, timeout and compression from os.environ.
    """
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None, None
    base = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())
    traces = _signal_on(env, "TRACES", base)
    metrics = _signal_on(env, "METRICS", base)
    if not (traces or metrics):
        return None, None
    resource = _resource()
    tracer_provider = _tracer_provider(env, resource, on_span_dropped, on_export_failed) if traces else None
    meter_provider = _meter_provider(env, resource) if metrics else None
    return tracer_provider, meter_provider


def _signal_on(env: Mapping[str, str], signal: str, base_endpoint: bool) -> bool:
    exporter_key = f"OTEL_{signal}_EXPORTER"
    exporters = {name.strip().lower() for name in env.get(exporter_key, "otlp").split(",") if name.strip()}
    if exporters <= {"none"}:
        return False
    if exporters - {"otlp", "none"}:
        raise ValueError(f"{exporter_key} supports only 'otlp' or 'none' here, got {env[exporter_key]!r}")
    return base_endpoint or bool(env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip())


def _resource() -> Resource:
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "llmobs"}))
    return resource


def _protocol(env: Mapping[str, str], signal: str) -> str:
    key = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
    if not env.get(key, "").strip():
        key = "OTEL_EXPORTER_OTLP_PROTOCOL"
    protocol = env.get(key, "").strip().lower() or "http/protobuf"
    if protocol not in ("http/protobuf", "grpc"):
        raise ValueError(f"{key} must be 'http/protobuf' or 'grpc', got {env[key]!r}")
    if protocol == "grpc":
        try:
            import opentelemetry.exporter.otlp.proto.grpc  # type: ignore[import-not-found,unused-ignore] # noqa: F401
        except ImportError:
            raise ValueError(
                f"{key}=grpc needs the opentelemetry-exporter-otlp-proto-grpc package, which is not "
                "installed; install it or use http/protobuf"
            ) from None
    return protocol


def _tracer_provider(
    env: Mapping[str, str],
    resource: Resource,
    on_dropped: Callable[[], None] | None,
    on_export_failed: Callable[[int], None] | None,
) -> SdkTracerProvider:
    exporter: SpanExporter
    if _protocol(env, "TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter as GrpcSpanExporter,
        )

        exporter = GrpcSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        exporter = OTLPSpanExporter()
    processor = BoundedBatchSpanProcessor(
        exporter,
        max_queue_size=_positive_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048),
        max_export_batch_size=_positive_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
        schedule_delay=_positive_int(env, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
        export_timeout=_positive_int(env, "OTEL_BSP_EXPORT_TIMEOUT", 30000) / 1000,
        on_dropped=on_dropped,
        on_export_failed=on_export_failed,
    )
    provider = SdkTracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER, as the SDK does
    provider.add_span_processor(processor)
    return provider


def _meter_provider(env: Mapping[str, str], resource: Resource) -> SdkMeterProvider:
    exporter: MetricExporter
    if _protocol(env, "METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPMetricExporter as GrpcMetricExporter,
        )

        exporter = GrpcMetricExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter,
        )

        exporter = OTLPMetricExporter()
    # Interval and timeout come from OTEL_METRIC_EXPORT_INTERVAL / _TIMEOUT inside the reader.
    return SdkMeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(exporter)])


def _positive_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{key} must be a positive integer, got {raw!r}")
    return value
