"""Telemetry failures are counted by component and never reach the client's response."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from conftest import Proxied, sdk_client
from llmobs.runner import ServerThread
from llmobs.telemetry.sinks.span_queue import BoundedBatchSpanProcessor


def ask(proxy: Proxied, stream: bool = False) -> str:
    client = sdk_client(proxy.base_url)
    messages = [{"role": "user", "content": "hello there"}]
    if stream:
        chunks = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return str(client.chat.completions.create(model="gpt-4o-mini", messages=messages).choices[0].message.content)


def errors(proxy: Proxied, component: str) -> float:
    return proxy.total("llmobs_telemetry_errors_total", component=component)


def test_a_failing_otel_sink_is_counted_as_otel(upstream: ServerThread, make_proxy: Callable[..., Proxied]) -> None:
    proxy = make_proxy(upstream.url + "/v1", provider="openai", tracer_provider=TracerProvider(), strict=False)
    sink: Any = proxy.app.recorder.tracer

    def explode(*args: Any) -> None:
        raise RuntimeError("span attributes exploded")

    sink._finish_span = explode  # a fault inside OTelSink.record
    assert ask(proxy) == ask(proxy, stream=True) != ""
    assert errors(proxy, "otel") == 2
    assert proxy.total("llmobs_requests_total", outcome="completed") == 2  # Prometheus still recorded both


def test_a_failing_prometheus_record_is_counted_as_prometheus(
    upstream: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(upstream.url + "/v1", provider="openai", strict=False)

    def explode(*args: Any) -> None:
        raise ValueError("label trouble")

    proxy.app.prometheus._series = explode  # type: ignore[method-assign]  # a fault inside PrometheusSink.record
    assert ask(proxy, stream=True) != "" and ask(proxy) != ""
    assert errors(proxy, "prometheus") == 2
    assert proxy.total("llmobs_requests_in_flight") == 0


class RefusingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE


def test_a_failing_span_export_is_counted_as_otel_export_failed(
    upstream: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    provider = TracerProvider()
    proxy = make_proxy(upstream.url + "/v1", provider="openai", tracer_provider=provider, strict=False)
    prometheus = proxy.app.prometheus
    processor = BoundedBatchSpanProcessor(
        RefusingExporter(),
        schedule_delay=0.05,
        on_export_failed=lambda n: prometheus.telemetry_error("otel_export_failed", n),
    )
    provider.add_span_processor(processor)
    assert ask(proxy) != "" and ask(proxy, stream=True) != ""
    processor.force_flush()
    assert errors(proxy, "otel_export_failed") == 2
    assert proxy.total("llmobs_requests_total", outcome="completed") == 2
