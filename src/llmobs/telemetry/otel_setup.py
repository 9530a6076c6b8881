"""OpenTelemetry export set up from the standard OTEL_* environment: OTLP tracer and meter providers."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from llmobs import __version__
from llmobs.telemetry.semconv import SERVICE_NAME, SERVICE_VERSION
from llmobs.telemetry.sinks.span_queue import BoundedBatchSpanProcessor

# -- export: providers from the standard OTEL_* environment ----------------------------------


def providers_from_env(
    on_span_dropped: Callable[[], None] | None = None,
    *,
    on_export_failed: Callable[[int], None] | None = None,
    max_series: int = 2000,
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
    meter_provider = _meter_provider(env, resource, max_series) if metrics else None
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
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over these defaults.
    resource = Resource({SERVICE_VERSION: __version__}).merge(Resource.create())
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
    exporter: SpanExporter = _exporter(env, "TRACES")
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


def _meter_provider(env: Mapping[str, str], resource: Resource, max_series: int) -> SdkMeterProvider:
    exporter: MetricExporter = _exporter(env, "METRICS")
    # Interval and timeout come from OTEL_METRIC_EXPORT_INTERVAL / _TIMEOUT inside the reader.
    # The same bound on series as Prometheus has: past it the SDK folds new attribute sets into
    # one overflow point (otel.metric.overflow=true), so sums stay exact.
    views = [View(instrument_name="*", aggregation_cardinality_limit=max_series)]
    return SdkMeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(exporter)], views=views)


_EXPORTERS = {"TRACES": ("trace_exporter", "OTLPSpanExporter"), "METRICS": ("metric_exporter", "OTLPMetricExporter")}


def _exporter(env: Mapping[str, str], signal: str) -> Any:
    """The OTLP exporter of a signal, over the protocol OTEL_EXPORTER_OTLP_[signal_]PROTOCOL names.

    It reads its endpoint, headers, timeout and compression from os.environ itself.
    """
    module, name = _EXPORTERS[signal]
    kind = "grpc" if _protocol(env, signal) == "grpc" else "http"
    return getattr(importlib.import_module(f"opentelemetry.exporter.otlp.proto.{kind}.{module}"), name)()


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


_SAMPLERS = frozenset(
    {"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
     "parentbased_traceidratio"}
)  # fmt: skip


def check_env(env: Mapping[str, str]) -> None:
    """Reject a bad OTEL_* value at start with one line naming it (ValueError), not a traceback later.

    Checks what this process reads: exporters, protocols, endpoints, timeouts, batch sizes and
    intervals, the sampler and its argument, compression and resource attributes.
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return
    for signal in ("TRACES", "METRICS"):
        _signal_on(env, signal, True)  # raises on an exporter other than otlp or none
        _protocol(env, signal)
        for key in (f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT",):
            _url(env, key)
    _url(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    for key in ("OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_SCHEDULE_DELAY",
                "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_METRIC_EXPORT_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"):  # fmt: skip
        _positive_int(env, key, 1)
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler and sampler not in _SAMPLERS:
        raise ValueError(f"OTEL_TRACES_SAMPLER must be one of {', '.join(sorted(_SAMPLERS))}, got {sampler!r}")
    argument = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if argument and sampler.endswith("traceidratio"):
        try:
            ratio = float(argument)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1, got {argument!r}")
    for key in ("OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION"):  # fmt: skip
        value = env.get(key, "").strip().lower()
        if value and value not in ("gzip", "deflate", "none"):
            raise ValueError(f"{key} must be gzip, deflate or none, got {env[key]!r}")
    attributes = env.get("OTEL_RESOURCE_ATTRIBUTES", "").strip()
    for pair in filter(None, (p.strip() for p in attributes.split(","))):
        if "=" not in pair or not pair.partition("=")[0].strip():
            raise ValueError(f"OTEL_RESOURCE_ATTRIBUTES must be key=value pairs separated by commas, got {pair!r}")


def _url(env: Mapping[str, str], key: str) -> None:
    value = env.get(key, "").strip()
    if value and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname):
        raise ValueError(f"{key} must be an http(s) URL, got {value!r}")
