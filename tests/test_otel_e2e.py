"""Spans and GenAI metrics from the running proxy reach a real OTLP/HTTP receiver."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from conftest import sdk_client
from llmobs.app import create_app
from llmobs.config import Settings
from llmobs.dev.harness import serve
from otlp_receiver import OTLPReceiver

MESSAGES = [{"role": "user", "content": "tell me a story"}]
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "llmobs-test")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
        yield rx


def test_spans_metrics_and_trace_context(receiver: OTLPReceiver, recording_upstream: Any) -> None:
    upstream_url, seen = recording_upstream
    app = create_app(Settings(upstream_url=upstream_url, provider="openai"), registry=CollectorRegistry(), strict=True)
    with serve(app) as proxy:
        sdk = sdk_client(proxy.url + "/v1", api_key="sk-secret-key-123")
        chunks = list(
            sdk.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                temperature=0.5,
                max_tokens=50,
                extra_headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "x-llmobs-tenant": "team-a"},
            )
        )
        assert chunks[-1].choices[0].finish_reason == "stop"
        with pytest.raises(openai.RateLimitError):
            sdk.chat.completions.create(model="sim-error-429", messages=MESSAGES)
        sdk.embeddings.create(model="text-embedding-3-small", input="two words")
        spans = receiver.wait_for_spans(3)
    by_model = {s.attributes["gen_ai.request.model"]: s for s in spans}
    span = by_model["gpt-4o-mini"]
    assert span.name == "chat gpt-4o-mini" and span.kind is SpanKind.CLIENT
    assert span.trace_id == CALLER_TRACE and span.parent_span_id == CALLER_SPAN
    attrs = span.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.temperature"] == 0.5 and attrs["gen_ai.request.max_tokens"] == 50
    assert attrs["gen_ai.usage.input_tokens"] == 7 and attrs["gen_ai.usage.output_tokens"] == 20
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.id"].startswith("chatcmpl-")
    assert attrs["server.address"] == "127.0.0.1" and isinstance(attrs["server.port"], int)
    assert attrs["llmobs.tenant"] == "team-a" and attrs["llmobs.cost_usd"] > 0
    assert 0 < attrs["gen_ai.response.time_to_first_chunk"] < 5
    assert span.resource["service.name"] == "llmobs-test"
    # The upstream got our span's context, not the caller's.
    traceparent = seen[0][b"traceparent"].decode()
    assert traceparent.split("-")[1] == CALLER_TRACE and traceparent.split("-")[2] == span.span_id
    # A failure carries error.type and an error status.
    failed = by_model["sim-error-429"]
    assert failed.status is StatusCode.ERROR and failed.attributes["error.type"]
    assert by_model["text-embedding-3-small"].name == "embeddings text-embedding-3-small"
    # Nothing secret left the process.
    for s in spans:
        assert "sk-secret-key-123" not in repr(s)
    usage = receiver.wait_for_metric("gen_ai.client.token.usage", timeout=10)
    assert usage
    duration = receiver.wait_for_metric("gen_ai.client.operation.duration", timeout=10)
    assert duration[0].explicit_bounds[:3] == (0.01, 0.02, 0.04)


def test_without_an_endpoint_nothing_is_built(monkeypatch: pytest.MonkeyPatch, upstream: Any) -> None:
    for key in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ):
        monkeypatch.delenv(key, raising=False)
    app = create_app(Settings(upstream_url=upstream.url + "/v1"), registry=CollectorRegistry())
    assert app.tracer_provider is None and app.meter_provider is None and app.recorder.tracer is None
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    with serve(app) as proxy:
        response = httpx.post(
            proxy.url + "/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            headers={"traceparent": traceparent},
        )
    assert response.status_code == 200


def test_unreachable_collector_does_not_break_traffic(monkeypatch: pytest.MonkeyPatch, upstream: Any) -> None:
    from llmobs.dev.harness import bound_socket

    dead = bound_socket()  # bound, never listening: exports are refused
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{dead.getsockname()[1]}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    registry = CollectorRegistry()
    app = create_app(Settings(upstream_url=upstream.url + "/v1"), registry=registry)
    with serve(app) as proxy:
        sdk = sdk_client(proxy.url + "/v1", api_key="k")
        for _ in range(20):
            assert sdk.chat.completions.create(model="m", messages=MESSAGES).choices
    dead.close()
    completed = sum(
        s.value
        for f in registry.collect()
        for s in f.samples
        if s.name == "llmobs_requests_total" and s.labels["outcome"] == "completed"
    )
    assert completed == 20
    failed = registry.get_sample_value("llmobs_telemetry_errors_total", {"component": "otel_export_failed"})
    assert failed and failed > 0


def test_a_hung_collector_leaves_request_latency_unchanged(monkeypatch: pytest.MonkeyPatch, upstream: Any) -> None:
    """Interleaved requests through a proxy whose collector hangs and one with OTel off:
    the medians must match within noise, and the spans that did not fit are dropped, counted."""
    import statistics
    import time

    with OTLPReceiver() as rx:
        rx.hang()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
        monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "16")
        monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
        traced_registry = CollectorRegistry()
        traced = create_app(Settings(upstream_url=upstream.url + "/v1"), registry=traced_registry)
        plain = create_app(
            Settings(upstream_url=upstream.url + "/v1"), registry=CollectorRegistry(), otel_from_env=False
        )
        assert traced.tracer_provider is not None
        timings: dict[str, list[float]] = {"traced": [], "plain": []}
        body = {"model": "m", "messages": MESSAGES}
        with serve(traced) as a, serve(plain) as b, httpx.Client(timeout=10) as http:
            for _ in range(150):
                for name, server in (("traced", a), ("plain", b)):
                    started = time.perf_counter()
                    assert http.post(server.url + "/v1/chat/completions", json=body).status_code == 200
                    timings[name].append(time.perf_counter() - started)
            rx.release()
    traced_median = statistics.median(timings["traced"][20:])
    plain_median = statistics.median(timings["plain"][20:])
    assert traced_median <= plain_median * 1.5 + 0.002, (traced_median, plain_median)
    dropped = traced_registry.get_sample_value("llmobs_telemetry_errors_total", {"component": "otel_span_dropped"})
    assert dropped and dropped > 0


def test_a_request_the_proxy_refuses_still_ends_its_span(upstream: Any, make_proxy: Any) -> None:
    """A refused request (here: body over max_body_bytes) is a GenAI operation that failed: its
    span ends, a child of the caller's trace, with error.type `rejected`."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    proxy = make_proxy(upstream.url + "/v1", max_body_bytes=1024, tracer_provider=tracer_provider)
    response = httpx.post(
        proxy.base_url + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x" * 2048}]},
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
    )
    assert response.status_code == 413
    proxy.settle()
    (span,) = spans.get_finished_spans()
    assert span.name == "chat" and span.context.trace_id == int(CALLER_TRACE, 16)
    assert span.attributes is not None and span.attributes["error.type"] == "rejected"
    assert span.status.status_code is StatusCode.ERROR
