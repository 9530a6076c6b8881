"""A tiny real OTLP/HTTP receiver for tests: decodes spans and metric points as plain Python values."""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.trace import SpanKind, StatusCode


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector saw it."""

    name: str
    kind: SpanKind
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str | None
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: StatusCode
    status_message: str
    resource: dict[str, Any]
    scope: str


@dataclass(frozen=True)
class ReceivedExemplar:
    """One exemplar of a data point: the measurement and the trace it was recorded in."""

    value: float
    trace_id: str  # 32 hex digits, "" when none
    span_id: str  # 16 hex digits, "" when none


@dataclass(frozen=True)
class ReceivedPoint:
    """One data point of one metric in one export."""

    metric: str
    unit: str
    type: str  # histogram | sum | gauge | exponential_histogram | summary
    attributes: dict[str, Any]
    resource: dict[str, Any]
    value: float | None = None  # sum and gauge
    count: int | None = None  # histogram
    sum: float | None = None  # histogram
    bucket_counts: tuple[int, ...] = ()
    explicit_bounds: tuple[float, ...] = ()
    exemplars: tuple[ReceivedExemplar, ...] = ()
    description: str = ""


@dataclass
class _State:
    spans: list[ReceivedSpan] = field(default_factory=list)
    points: list[ReceivedPoint] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, headers)


class OTLPReceiver:
    """OTLP/HTTP (protobuf, optionally gzip/deflate) on 127.0.0.1:<ephemeral>, in a thread.

    `status` makes every export answer with that HTTP status; `hang()` makes exports block
    until `release()` (or the receiver closes), to play a stuck collector.
    """

    def __init__(self, *, status: int = 200) -> None:
        self.status = status
        self._state = _State()
        self._cond = threading.Condition()
        self._hang = threading.Event()
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"  # for OTEL_EXPORTER_OTLP_ENDPOINT
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="otlp-receiver", daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def hang(self) -> None:
        """Make exports block (without answering) until release()."""
        self._released.clear()
        self._hang.set()

    def release(self) -> None:
        self._hang.clear()
        self._released.set()

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._cond:
            self._state = _State()

    # -- reading -----------------------------------------------------------------------------

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._cond:
            return list(self._state.spans)

    @property
    def points(self) -> list[ReceivedPoint]:
        with self._cond:
            return list(self._state.points)

    @property
    def requests(self) -> list[tuple[str, dict[str, str]]]:
        """(path, lower-cased headers) of every export request received, answered or not."""
        with self._cond:
            return list(self._state.requests)

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Wait until at least n spans arrived; return them all. Raises TimeoutError otherwise."""
        self._wait(lambda: len(self._state.spans) >= n, timeout, f"{n} spans")
        return self.spans

    def wait_for_metric(
        self,
        name: str,
        timeout: float = 10.0,
        predicate: Callable[[list[ReceivedPoint]], bool] = bool,
    ) -> list[ReceivedPoint]:
        """Wait until the latest points of metric `name` satisfy `predicate`; return them."""
        self._wait(lambda: predicate(self._latest(name)), timeout, f"metric {name}")
        with self._cond:
            return self._latest(name)

    def latest_points(self, name: str) -> list[ReceivedPoint]:
        """The last point received per attribute set of metric `name`."""
        with self._cond:
            return self._latest(name)

    def _latest(self, name: str) -> list[ReceivedPoint]:
        latest: dict[tuple[tuple[str, str], ...], ReceivedPoint] = {}
        for point in self._state.points:
            if point.metric == name:
                latest[tuple(sorted((k, repr(v)) for k, v in point.attributes.items()))] = point
        return list(latest.values())

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not ready():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"OTLP receiver: no {what} within {timeout}s")
                self._cond.wait(remaining)

    # -- receiving ---------------------------------------------------------------------------

    def _receive(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        with self._cond:
            self._state.requests.append((path, headers))
        if self._hang.is_set():
            self._released.wait()
        if self.status != 200:
            return self.status, b""
        body = _decompress(body, headers.get("content-encoding", ""))
        if path == "/v1/traces":
            spans = list(_decode_spans(body))
            with self._cond:
                self._state.spans.extend(spans)
                self._cond.notify_all()
            return 200, ExportTraceServiceResponse().SerializeToString()
        if path == "/v1/metrics":
            points = list(_decode_points(body))
            with self._cond:
                self._state.points.extend(points)
                self._cond.notify_all()
            return 200, ExportMetricsServiceResponse().SerializeToString()
        return 404, b""

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                status, payload = receiver._receive(self.path, headers, body)
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def value_of(value: AnyValue) -> Any:
    """An OTLP AnyValue as a plain Python value."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, which)


def attributes_of(pairs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    return {pair.key: value_of(pair.value) for pair in pairs}


def _decode_spans(body: bytes) -> Iterator[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    for resource_spans in request.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ReceivedSpan(
                    name=span.name,
                    kind=SpanKind(max(span.kind - 1, 0)),  # proto kinds start at UNSPECIFIED=0
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex() or None,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    attributes=attributes_of(span.attributes),
                    status=StatusCode(span.status.code),
                    status_message=span.status.message,
                    resource=resource,
                    scope=scope_spans.scope.name,
                )


def _decode_points(body: bytes) -> Iterator[ReceivedPoint]:
    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    for resource_metrics in request.resource_metrics:
        resource = attributes_of(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                yield from _metric_points(metric, resource)


def _metric_points(metric: Any, resource: dict[str, Any]) -> Iterator[ReceivedPoint]:
    kind = metric.WhichOneof("data")
    common = {
        "metric": metric.name,
        "unit": metric.unit,
        "type": kind,
        "resource": resource,
        "description": metric.description,
    }
    for point in getattr(metric, kind).data_points:
        attrs = attributes_of(point.attributes)
        exemplars = tuple(_exemplar(e) for e in getattr(point, "exemplars", ()))
        if kind == "histogram":
            yield ReceivedPoint(
                **common,
                attributes=attrs,
                count=point.count,
                sum=point.sum,
                bucket_counts=tuple(point.bucket_counts),
                explicit_bounds=tuple(point.explicit_bounds),
                exemplars=exemplars,
            )
        elif kind in ("sum", "gauge"):
            number = point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
            yield ReceivedPoint(**common, attributes=attrs, value=number, exemplars=exemplars)
        else:
            yield ReceivedPoint(**common, attributes=attrs, count=point.count, sum=point.sum)


def _exemplar(exemplar: Any) -> ReceivedExemplar:
    value = exemplar.as_double if exemplar.WhichOneof("value") == "as_double" else exemplar.as_int
    return ReceivedExemplar(value=value, trace_id=exemplar.trace_id.hex(), span_id=exemplar.span_id.hex())
