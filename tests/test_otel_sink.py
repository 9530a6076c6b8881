"""The OpenTelemetry sink: GenAI spans and metrics, OTLP export from the env, and bounded queues."""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry

from llmobs import __version__
from llmobs.records import (
    Observation,
    Outcome,
    RequestInfo,
    Timings,
    Usage,
    UsageSource,
)
from llmobs.telemetry.labels import LabelGuard
from llmobs.telemetry.otel_setup import providers_from_env
from llmobs.telemetry.recorder import Recorder
from llmobs.telemetry.sinks.otel import DURATION_BUCKETS, TOKEN_BUCKETS, OTelSink
from llmobs.telemetry.sinks.prometheus import PrometheusSink
from llmobs.telemetry.sinks.span_queue import BoundedBatchSpanProcessor
from otlp_receiver import OTLPReceiver

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
W3C: TextMapPropagator = TraceContextTextMapPropagator()


class Harness:
    """A sink over in-memory span and metric providers, plus helpers to read what it recorded."""

    def __init__(self, tracer_provider: Any = None, *, with_metrics: bool = True) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = tracer_provider or TracerProvider(resource=Resource.create({"service.name": "t"}))
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader]) if with_metrics else None
        self.sink = OTelSink(
            self.tracer_provider,
            self.meter_provider,
            provider_name="openai",
            server_address="api.example.com",
            server_port=443,
            propagator=W3C,
        )

    def run(self, info: RequestInfo, headers: dict[str, str] | None = None, **obs: Any) -> ReadableSpan | None:
        """One request through start + record; return its finished span, if any."""
        start = time.perf_counter()
        handle = self.sink.start(info, headers or {}, start)
        obs.setdefault("timings", Timings(start=start, end=start + 1.5))
        obs.setdefault("outcome", Outcome.COMPLETED)
        obs.setdefault("status_code", 200)
        self.sink.record(Observation(request=info, **obs), handle)
        finished = self.spans.get_finished_spans()
        return finished[-1] if finished and handle is not None else None

    def all_points(self) -> dict[str, list[Any]]:
        """Every metric's points, from one collection."""
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        for rm in data.resource_metrics if data is not None else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


def chat(model: str | None = "gpt-4o", **kw: Any) -> RequestInfo:
    return RequestInfo(endpoint="chat_completions", operation="chat", model=model, **kw)


@pytest.fixture
def h() -> Harness:
    return Harness()


# -- spans ----------------------------------------------------------------------------------


def test_span_is_a_client_span_named_operation_and_model_with_start_attributes(h: Harness) -> None:
    params = {"gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 100, "gen_ai.request.seed": 7}
    span = h.run(chat(params=params, stream=True, tenant="acme"))
    assert span is not None
    assert span.name == "chat gpt-4o"
    assert span.kind is SpanKind.CLIENT
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o"
    assert attrs["server.address"] == "api.example.com"
    assert attrs["server.port"] == 443
    assert attrs["gen_ai.request.temperature"] == 0.2
    assert attrs["gen_ai.request.max_tokens"] == 100
    assert attrs["gen_ai.request.seed"] == 7
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["openai.api.type"] == "chat_completions"
    assert attrs["llmobs.tenant"] == "acme"


def test_span_without_a_model_is_named_after_the_operation(h: Harness) -> None:
    span = h.run(RequestInfo(endpoint="embeddings", operation="embeddings", model=None))
    assert span is not None
    assert span.name == "embeddings"
    assert "gen_ai.request.model" not in (span.attributes or {})
    assert "openai.api.type" not in (span.attributes or {})
    assert "llmobs.tenant" not in (span.attributes or {})


def test_non_genai_paths_get_no_span_and_no_metrics(h: Harness) -> None:
    info = RequestInfo(endpoint="other", operation=None, model=None)
    assert h.sink.start(info, {}, time.perf_counter()) is None
    h.run(info, usage=Usage(input_tokens=3))
    assert h.spans.get_finished_spans() == ()
    assert h.points("gen_ai.client.operation.duration") == []


def test_only_generation_parameters_reach_the_span_never_content_or_keys(h: Harness) -> None:
    params = {
        "gen_ai.request.stop_sequences": ["\n\n", "END"],
        "gen_ai.request.choice.count": 1,  # conventions: only when not 1
        "gen_ai.input.messages": "the secret prompt",
        "gen_ai.system_instructions": "be nice",
        "authorization": "Bearer sk-secret",
        "gen_ai.request.temperature": {"not": "a scalar"},
    }
    span = h.run(chat(params=params))
    assert span is not None
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.request.stop_sequences"] == ("\n\n", "END")
    for key in params.keys() - {"gen_ai.request.stop_sequences"}:
        assert key not in attrs
    assert not any("secret" in repr(value) for value in attrs.values())


def test_span_is_a_child_of_the_incoming_traceparent(h: Harness) -> None:
    span = h.run(chat(), {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"})
    assert span is not None and span.parent is not None
    assert format(span.context.trace_id, "032x") == CALLER_TRACE
    assert format(span.parent.span_id, "016x") == CALLER_SPAN
    assert span.parent.is_remote
    assert span.context.trace_state.get("vendor") == "abc"


def test_inject_replaces_the_callers_traceparent_with_ours(h: Harness) -> None:
    start = time.perf_counter()
    handle = h.sink.start(chat(), {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"}, start)
    headers = {"Traceparent": TRACEPARENT, "content-type": "application/json"}
    h.sink.inject(handle, headers)
    assert handle is not None
    ours = handle.span.get_span_context()
    assert headers == {
        "content-type": "application/json",
        "traceparent": f"00-{CALLER_TRACE}-{ours.span_id:016x}-01",
        "tracestate": "vendor=abc",
    }


def test_inject_without_a_span_leaves_headers_alone(h: Harness) -> None:
    headers = {"traceparent": TRACEPARENT}
    h.sink.inject(None, headers)
    assert headers == {"traceparent": TRACEPARENT}


def test_span_starts_and_ends_at_the_observed_instants(h: Harness) -> None:
    before = time.time_ns()
    start = time.perf_counter() - 0.25  # the request began a little before start() was called
    handle = h.sink.start(chat(), {}, start)
    h.sink.record(Observation(chat(), Outcome.COMPLETED, 200, Timings(start=start, end=start + 2.5)), handle)
    (span,) = h.spans.get_finished_spans()
    assert span.start_time is not None and span.end_time is not None
    assert span.end_time - span.start_time == pytest.approx(2.5e9, abs=1e3)
    assert abs(span.start_time - (before - 0.25e9)) < 0.05e9


def test_response_usage_and_cost_attributes(h: Harness) -> None:
    start = time.perf_counter()
    span = h.run(
        chat(stream=True),
        timings=Timings(start=start, end=start + 3, first_byte=start + 0.4, first_token=start + 0.5),
        usage=Usage(input_tokens=120, output_tokens=40, cache_read_tokens=100, reasoning_tokens=12),
        usage_source=UsageSource.REPORTED,
        finish_reasons=("stop", "length"),
        response_model="gpt-4o-2024-08-06",
        response_id="chatcmpl-123",
        cost=Decimal("0.00123"),
        extra={"service_tier": "default", "system_fingerprint": "fp_abc"},
    )
    assert span is not None
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.response.id"] == "chatcmpl-123"
    assert attrs["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop", "length")
    assert attrs["gen_ai.usage.input_tokens"] == 120
    assert attrs["gen_ai.usage.output_tokens"] == 40
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 100
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 12
    assert "gen_ai.usage.cache_creation.input_tokens" not in attrs  # not reported is not zero
    # the first output delta, as Prometheus's TTFT: not the first byte (0.4 s, the role-only chunk)
    assert attrs["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.5)
    assert attrs["openai.response.service_tier"] == "default"
    assert attrs["openai.response.system_fingerprint"] == "fp_abc"
    assert attrs["llmobs.cost_usd"] == pytest.approx(0.00123)
    assert attrs["llmobs.outcome"] == "completed"
    assert attrs["llmobs.usage_source"] == "reported"
    assert attrs["http.response.status_code"] == 200
    assert "error.type" not in attrs
    assert span.status.status_code is StatusCode.UNSET

    assert not {k for k in attrs if ".audio." in k or ".image." in k}  # no modality reported


def test_usage_per_modality_where_reported(h: Harness) -> None:
    """Audio and image counts (Realtime, images, transcriptions): the genai repository's names,
    ahead of the pinned package; image output has no semconv name and gets ours."""
    usage = Usage(
        input_tokens=30, output_tokens=50, input_audio_tokens=20, output_audio_tokens=40, input_image_tokens=5
    )
    span = h.run(chat(), usage=usage, usage_source=UsageSource.REPORTED)
    assert span is not None
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.usage.audio.input_tokens"] == 20
    assert attrs["gen_ai.usage.audio.output_tokens"] == 40
    assert attrs["gen_ai.usage.image.input_tokens"] == 5
    assert "llmobs.usage.image.output_tokens" not in attrs  # not reported
    span = h.run(chat(), usage=Usage(input_tokens=9, output_tokens=4160, output_image_tokens=4160))
    assert span is not None and dict(span.attributes or {})["llmobs.usage.image.output_tokens"] == 4160


def test_unpriced_request_has_no_cost_attribute(h: Harness) -> None:
    span = h.run(chat(), cost=None)
    assert span is not None
    assert "llmobs.cost_usd" not in (span.attributes or {})
    assert "gen_ai.response.time_to_first_chunk" not in (span.attributes or {})  # not a stream


@pytest.mark.parametrize(
    ("outcome", "error_type", "expected"),
    [
        (Outcome.UPSTREAM_ERROR, "rate_limit_exceeded", "rate_limit_exceeded"),
        (Outcome.CLIENT_CLOSED, None, "client_closed"),
        (Outcome.UPSTREAM_TIMEOUT, None, "upstream_timeout"),
    ],
)
def test_failures_set_error_type_and_error_status(
    h: Harness, outcome: Outcome, error_type: str | None, expected: str
) -> None:
    span = h.run(chat(), outcome=outcome, error_type=error_type, status_code=429)
    assert span is not None
    assert span.attributes is not None
    assert span.attributes["error.type"] == expected
    assert span.attributes["llmobs.outcome"] == str(outcome)
    assert span.status.status_code is StatusCode.ERROR
    (duration,) = h.points("gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == expected


def test_each_failure_kind_gets_its_own_duration_series(h: Harness) -> None:
    """The attribute cache must key on the error type, not just on the models."""
    for outcome in (Outcome.CLIENT_CLOSED, Outcome.UPSTREAM_TIMEOUT, Outcome.COMPLETED, Outcome.CLIENT_CLOSED):
        h.run(chat(), outcome=outcome)
    counts = {p.attributes.get("error.type"): p.count for p in h.points("gen_ai.client.operation.duration")}
    assert counts == {"client_closed": 2, "upstream_timeout": 1, None: 1}


def test_unsampled_requests_still_propagate_but_export_nothing() -> None:
    h = Harness(TracerProvider(sampler=ALWAYS_OFF))
    handle = h.sink.start(chat(), {}, time.perf_counter())
    headers: dict[str, str] = {}
    h.sink.inject(handle, headers)
    assert int(headers["traceparent"][-2:], 16) & 0x01 == 0  # not sampled
    h.sink.record(Observation(chat(), Outcome.COMPLETED, 200, Timings(0.0, 1.0)), handle)
    assert h.spans.get_finished_spans() == ()


def test_sink_without_providers_does_nothing() -> None:
    sink = OTelSink(None, None, provider_name="openai", server_address="x", server_port=1)
    assert sink.start(chat(), {"traceparent": TRACEPARENT}, time.perf_counter()) is None
    sink.record(Observation(chat(), Outcome.COMPLETED, 200, Timings(0.0, 1.0)), None)


def test_bad_data_is_counted_never_raised_and_the_span_still_ends() -> None:
    h = Harness()
    registry = CollectorRegistry()
    recorder = Recorder(PrometheusSink(registry), None, tracer=h.sink, sinks=(h.sink,))
    start = time.perf_counter()
    handle = recorder.start(chat(params={"gen_ai.request.top_k": object()}), [], start)
    bad = Observation(
        chat(),
        Outcome.COMPLETED,
        200,
        Timings(start=start, end=None),  # type: ignore[arg-type]
        usage=Usage(input_tokens="many"),  # type: ignore[arg-type]
        finish_reasons=(None,),  # type: ignore[arg-type]
        cost=Decimal("NaN"),
        extra={"service_tier": 3},
    )
    recorder.finish(bad, handle)  # the sink raises; the recorder counts it, and traffic never sees it
    assert len(h.spans.get_finished_spans()) == 1
    assert registry.get_sample_value("llmobs_telemetry_errors_total", {"component": "otel"}) == 1


# -- metrics --------------------------------------------------------------------------------


def test_metrics_use_semconv_names_attributes_and_buckets(h: Harness) -> None:
    start = time.perf_counter()
    h.run(
        chat(stream=True, tenant="acme"),
        timings=Timings(start=start, end=start + 2.0, first_byte=start + 0.3, first_token=start + 0.35),
        usage=Usage(input_tokens=50, output_tokens=7, cache_read_tokens=20),
        usage_source=UsageSource.REPORTED,
        response_model="gpt-4o-2024-08-06",
        cost=Decimal("0.5"),
    )
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "server.address": "api.example.com",
        "server.port": 443,
    }
    tokens = {p.attributes["gen_ai.token.type"]: p for p in h.points("gen_ai.client.token.usage")}
    assert set(tokens) == {"input", "output"}
    assert dict(tokens["input"].attributes) == {**base, "gen_ai.token.type": "input"}
    assert (tokens["input"].sum, tokens["output"].sum) == (50, 7)
    assert tuple(tokens["input"].explicit_bounds) == TOKEN_BUCKETS
    assert TOKEN_BUCKETS[-1] == 67108864

    (duration,) = h.points("gen_ai.client.operation.duration")
    assert dict(duration.attributes) == base
    assert duration.sum == pytest.approx(2.0)
    assert tuple(duration.explicit_bounds) == DURATION_BUCKETS
    assert DURATION_BUCKETS[0] == 0.01 and DURATION_BUCKETS[-1] == pytest.approx(81.92)

    (ttfc,) = h.points("gen_ai.client.operation.time_to_first_chunk")
    assert ttfc.sum == pytest.approx(0.35)  # the first output delta, where Prometheus's TTFT is read
    assert tuple(ttfc.explicit_bounds) == DURATION_BUCKETS

    (cost,) = h.points("llmobs.cost")
    assert cost.value == pytest.approx(0.5)
    assert dict(cost.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "llmobs.tenant": "acme",
    }


def test_unreported_usage_records_no_token_points_and_non_streams_no_ttfc(h: Harness) -> None:
    h.run(chat(), usage_source=UsageSource.MISSING, estimated_output_tokens=30)
    assert h.points("gen_ai.client.token.usage") == []
    assert h.points("gen_ai.client.operation.time_to_first_chunk") == []
    assert len(h.points("gen_ai.client.operation.duration")) == 1


def test_time_per_output_chunk_one_point_per_chunk_after_the_first(h: Harness) -> None:
    start = time.perf_counter()
    chunks = (start + 0.3, start + 0.35, start + 0.5, start + 0.5, start + 1.9)  # two in one read: 0 s
    h.run(
        chat(stream=True),
        timings=Timings(start=start, end=start + 2.0, first_token=start + 0.3, chunks=chunks),
        response_model="gpt-4o-2024-08-06",
    )
    (point,) = h.points("gen_ai.client.operation.time_per_output_chunk")
    assert point.count == 4 and point.sum == pytest.approx(1.6)  # last chunk's end - first chunk's end
    assert point.bucket_counts[0] == 1 and point.min == 0  # the two chunks of one read
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    assert "error.type" not in point.attributes and point.attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    # A stream with one chunk has no interval; a non-stream reports none (the conventions: streams only).
    h.run(chat(stream=True), timings=Timings(start=start, end=start + 1, chunks=(start + 0.5,)))
    h.run(chat(model="other"), timings=Timings(start=start, end=start + 1, chunks=chunks))
    (point,) = h.points("gen_ai.client.operation.time_per_output_chunk")
    assert point.count == 4


def test_cost_tenants_are_bounded_like_models() -> None:
    h = Harness()
    h.sink._tenants = LabelGuard(2)
    for tenant in ("a", "b", "c", "d", ""):
        h.run(chat(tenant=tenant), cost=Decimal("1"))
    tenants = {p.attributes.get("llmobs.tenant"): p.value for p in h.points("llmobs.cost")}
    assert tenants == {"a": 1, "b": 1, "other": 2, None: 1}  # no tenant: no attribute


def test_points_carry_exemplars_of_sampled_spans_only(h: Harness) -> None:
    span = h.run(chat(stream=True), usage=Usage(input_tokens=3, output_tokens=2), cost=Decimal("0.1"))
    assert span is not None
    trace_id, span_id = span.context.trace_id, span.context.span_id
    points = h.all_points()  # one collection: collecting hands exemplars out once
    for name in ("gen_ai.client.token.usage", "gen_ai.client.operation.duration", "llmobs.cost"):
        assert points[name], name
        for point in points[name]:
            assert [(e.trace_id, e.span_id) for e in point.exemplars] == [(trace_id, span_id)], name
    unsampled = Harness(TracerProvider(sampler=ALWAYS_OFF))
    unsampled.run(chat(), cost=Decimal("0.1"))
    assert all(not p.exemplars for p in unsampled.points("llmobs.cost"))


def test_metrics_are_recorded_without_tracing() -> None:
    reader = InMemoryMetricReader()
    sink = OTelSink(
        None, MeterProvider(metric_readers=[reader]), provider_name="vllm", server_address="h", server_port=8000
    )
    info = chat()
    assert sink.start(info, {}, 0.0) is None
    for _ in range(3):
        sink.record(Observation(info, Outcome.COMPLETED, 200, Timings(0.0, 1.0), usage=Usage(1, 2)), None)
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = [m for sm in data.resource_metrics[0].scope_metrics for m in sm.metrics if m.name.endswith("duration")]
    (point,) = metric.data.data_points
    assert isinstance(point, HistogramDataPoint) and point.count == 3


# -- providers from the environment ---------------------------------------------------------

OTEL_KEYS = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_METRIC_EXPORT_INTERVAL",
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in OTEL_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")  # only force_flush exports metrics
    return monkeypatch


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as rx:
        yield rx


def record_requests(tracer_provider: Any, meter_provider: Any, n: int, port: int = 443) -> None:
    sink = OTelSink(tracer_provider, meter_provider, provider_name="openai", server_address="up", server_port=port)
    for i in range(n):
        start = time.perf_counter()
        info = chat(stream=True)
        handle = sink.start(info, {"traceparent": TRACEPARENT}, start)
        timings = Timings(start=start, end=start + 1.0, first_byte=start + 0.05, first_token=start + 0.1)
        usage = Usage(input_tokens=10 + i, output_tokens=5)
        sink.record(Observation(info, Outcome.COMPLETED, 200, timings, usage=usage, cost=Decimal("0.01")), handle)


def shutdown(*providers: Any) -> None:
    for provider in providers:
        if provider is not None:
            provider.shutdown()


def test_nothing_is_exported_without_an_endpoint(env: pytest.MonkeyPatch) -> None:
    assert providers_from_env() == (None, None)


def test_sdk_disabled_wins_over_an_endpoint(env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    env.setenv("OTEL_SDK_DISABLED", "true")
    assert providers_from_env() == (None, None)


def test_signal_specific_endpoints_enable_only_that_signal(env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
    tracer_provider, meter_provider = providers_from_env()
    try:
        assert tracer_provider is not None and meter_provider is None
    finally:
        shutdown(tracer_provider)
    env.setenv("OTEL_TRACES_EXPORTER", "none")
    assert providers_from_env() == (None, None)


def test_grpc_without_the_grpc_exporter_names_the_key(env: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None:
        pytest.skip("the grpc exporter is installed")
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL=grpc"):
        providers_from_env()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
        ("OTEL_BSP_SCHEDULE_DELAY", "-1"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
    ],
)
def test_bad_settings_fail_loudly_naming_the_key(env: pytest.MonkeyPatch, key: str, value: str) -> None:
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    env.setenv(key, value)
    with pytest.raises(ValueError, match=key):
        providers_from_env()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_spans_and_metrics_arrive_over_otlp_http(
    env: pytest.MonkeyPatch, receiver: OTLPReceiver, compression: str
) -> None:
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    env.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
    tracer_provider, meter_provider = providers_from_env()
    try:
        record_requests(tracer_provider, meter_provider, 3)
        assert tracer_provider is not None and meter_provider is not None
        assert tracer_provider.force_flush(10_000)
        assert meter_provider.force_flush(10_000)
        spans = receiver.wait_for_spans(3)
        points = receiver.wait_for_metric("gen_ai.client.token.usage")
    finally:
        shutdown(tracer_provider, meter_provider)

    assert len(spans) == 3
    for span in spans:
        assert span.name == "chat gpt-4o"
        assert span.kind is SpanKind.CLIENT
        assert span.trace_id == CALLER_TRACE and span.parent_span_id == CALLER_SPAN
        assert span.attributes["gen_ai.request.stream"] is True
        assert span.attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.1)
        assert span.end_ns - span.start_ns == pytest.approx(1e9, abs=1e3)
        assert span.resource["service.name"] == "llmobs"
        assert span.resource["service.version"] == __version__
        assert span.scope == "llmobs"
    assert sorted(s.attributes["gen_ai.usage.input_tokens"] for s in spans) == [10, 11, 12]

    by_type = {p.attributes["gen_ai.token.type"]: p for p in points}
    assert by_type["input"].type == "histogram"
    assert by_type["input"].count == 3 and by_type["input"].sum == 33
    assert by_type["input"].explicit_bounds == TOKEN_BUCKETS
    assert by_type["input"].unit == "{token}"
    (cost,) = receiver.latest_points("llmobs.cost")
    assert cost.type == "sum" and cost.unit == "{USD}" and cost.value == pytest.approx(0.03)
    # Exemplars: recorded in the request span's context, the SDK's trace_based filter keeps them
    # (each export hands out those of its own interval: look through all of them).
    exemplars = [e for p in receiver.points for e in p.exemplars]
    assert {p.metric for p in receiver.points if p.exemplars} >= {"llmobs.cost", "gen_ai.client.token.usage"}
    assert {e.trace_id for e in exemplars} == {CALLER_TRACE}
    assert {e.span_id for e in exemplars} <= {s.span_id for s in spans}
    (duration,) = receiver.latest_points("gen_ai.client.operation.duration")
    assert duration.explicit_bounds == DURATION_BUCKETS
    if compression == "gzip":
        assert {headers.get("content-encoding") for _, headers in receiver.requests} == {"gzip"}


def test_service_name_and_resource_attributes_come_from_the_env(
    env: pytest.MonkeyPatch, receiver: OTLPReceiver
) -> None:
    env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint + "/v1/traces")
    env.setenv("OTEL_SERVICE_NAME", "gateway")
    env.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
    tracer_provider, meter_provider = providers_from_env()
    assert meter_provider is None
    try:
        record_requests(tracer_provider, None, 1)
        assert tracer_provider is not None and tracer_provider.force_flush(10_000)
        (span,) = receiver.wait_for_spans(1)
    finally:
        shutdown(tracer_provider)
    assert span.resource["service.name"] == "gateway"
    assert span.resource["deployment.environment.name"] == "test"


def test_sampler_comes_from_the_env(env: pytest.MonkeyPatch, receiver: OTLPReceiver) -> None:
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    env.setenv("OTEL_TRACES_SAMPLER", "always_off")
    tracer_provider, meter_provider = providers_from_env()
    try:
        record_requests(tracer_provider, meter_provider, 2)
        assert tracer_provider is not None and tracer_provider.force_flush(10_000)
        assert meter_provider is not None and meter_provider.force_flush(10_000)
        receiver.wait_for_metric("gen_ai.client.operation.duration")
    finally:
        shutdown(tracer_provider, meter_provider)
    assert receiver.spans == []


# -- a slow or absent collector never slows requests down ------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_record_stays_fast_when_the_collector_is_unreachable(env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    env.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    env.setenv("OTEL_BSP_EXPORT_TIMEOUT", "2000")
    failed: list[int] = []
    tracer_provider, meter_provider = providers_from_env(on_export_failed=failed.append)
    try:
        began = time.perf_counter()
        record_requests(tracer_provider, meter_provider, 300)
        elapsed = time.perf_counter() - began
        assert elapsed < 1.0, f"300 requests took {elapsed:.3f}s to record"
        assert tracer_provider is not None
        tracer_provider.force_flush(5_000)
    finally:
        shutdown(tracer_provider, meter_provider)
    assert sum(failed) > 0


def test_a_hung_collector_fills_the_queue_and_drops_are_counted(
    env: pytest.MonkeyPatch, receiver: OTLPReceiver
) -> None:
    receiver.hang()
    env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint + "/v1/traces")
    env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    env.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "10")
    env.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "5")
    env.setenv("OTEL_BSP_EXPORT_TIMEOUT", "1000")
    dropped: list[None] = []
    tracer_provider, _ = providers_from_env(on_span_dropped=lambda: dropped.append(None))
    try:
        record_requests(tracer_provider, None, 5)  # one batch: the worker is now stuck exporting it
        deadline = time.monotonic() + 5
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        began = time.perf_counter()
        record_requests(tracer_provider, None, 100)
        elapsed = time.perf_counter() - began
    finally:
        receiver.release()
        shutdown(tracer_provider)
    assert elapsed < 0.5, f"100 requests took {elapsed:.3f}s to record against a hung collector"
    assert len(dropped) == 90  # 10 fit in the queue while the first batch hangs


class BlockingExporter(SpanExporter):
    """Blocks every export until released; counts what it was given."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.release = threading.Event()
        self.exported: list[int] = []
        self.result = result

    def export(self, spans: Any) -> SpanExportResult:
        self.release.wait(10)
        self.exported.append(len(spans))
        return self.result

    def shutdown(self) -> None:
        self.release.set()


def finished_span(tracer_provider: TracerProvider) -> None:
    tracer_provider.get_tracer("t").start_span("s").end()


def test_processor_drops_new_spans_when_full_and_never_blocks() -> None:
    exporter = BlockingExporter()
    dropped: list[None] = []
    processor = BoundedBatchSpanProcessor(
        exporter,
        max_queue_size=4,
        max_export_batch_size=2,
        schedule_delay=0.01,
        on_dropped=lambda: dropped.append(None),
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    finished_span(provider)
    finished_span(provider)  # a full batch: the worker takes it and blocks in export
    deadline = time.monotonic() + 5
    while processor._queue and time.monotonic() < deadline:
        time.sleep(0.005)
    began = time.perf_counter()
    for _ in range(10):
        finished_span(provider)
    assert time.perf_counter() - began < 0.5
    assert processor.dropped == len(dropped) == 6
    exporter.release.set()
    assert processor.force_flush(5_000)
    assert sum(exporter.exported) == 6
    provider.shutdown()


def test_processor_counts_spans_whose_export_failed() -> None:
    exporter = BlockingExporter(SpanExportResult.FAILURE)
    exporter.release.set()
    failed: list[int] = []
    processor = BoundedBatchSpanProcessor(exporter, max_export_batch_size=3, on_export_failed=failed.append)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for _ in range(7):
        finished_span(provider)
    assert processor.force_flush(5_000)
    assert failed == [3, 3, 1]
    assert processor.export_failed == 7
    provider.shutdown()


def test_processor_shutdown_exports_what_is_queued() -> None:
    exporter = BlockingExporter()
    exporter.release.set()
    processor = BoundedBatchSpanProcessor(exporter, schedule_delay=60)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for _ in range(3):
        finished_span(provider)
    provider.shutdown()
    assert exporter.exported == [3]


def test_processor_restarts_its_worker_in_a_forked_child() -> None:
    exporter = BlockingExporter()
    exporter.release.set()
    processor = BoundedBatchSpanProcessor(exporter, schedule_delay=60)
    processor._after_fork()  # what os.register_at_fork runs in the child
    provider = TracerProvider()
    provider.add_span_processor(processor)
    finished_span(provider)
    assert processor.force_flush(5_000)
    assert exporter.exported == [1]
    provider.shutdown()
