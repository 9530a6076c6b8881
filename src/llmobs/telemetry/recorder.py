"""Price an observation and hand it to every sink; telemetry never breaks traffic."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Protocol

from llmobs.records import Observation, RequestInfo, Usage
from llmobs.telemetry.labels import LabelGuard
from llmobs.telemetry.sinks.prometheus import PrometheusSink

log = logging.getLogger("llmobs")


class Pricer(Protocol):
    def price(self, model: str | None, usage: Usage) -> Decimal | None: ...


class Recorder:
    """The end of the pipeline: price, bound labels, record in each sink.

    A failure in pricing or in a sink is logged and counted in
    llmobs_telemetry_errors_total; with `strict` (tests) it is raised instead.
    """

    def __init__(
        self,
        prometheus: PrometheusSink,
        prices: Pricer | None,
        *,
        otel: Any = None,
        max_label_values: int = 200,
        strict: bool = False,
    ) -> None:
        self.prometheus = prometheus
        self.prices = prices
        self.otel = otel
        self.models = LabelGuard(max_label_values)
        self.tenants = LabelGuard(max_label_values)
        self.strict = strict

    def start(self, info: RequestInfo, headers: list[tuple[bytes, bytes]], start: float) -> Any:
        """Note a request as in flight; start its span. Returns the span handle or None."""
        self.prometheus.started(info.endpoint)
        if self.otel is None or info.operation is None:
            return None
        try:
            incoming = {
                k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in (b"traceparent", b"tracestate")
            }
            return self.otel.start(info, incoming, start)
        except Exception:
            self.failed("otel")
            return None

    def inject(self, handle: Any, headers: dict[str, str]) -> None:
        if handle is not None:
            try:
                self.otel.inject(handle, headers)
            except Exception:
                self.failed("otel")

    def finish(self, obs: Observation, handle: Any) -> Observation:
        """Record a finished (and priced) request everywhere."""
        self.prometheus.ended(obs.request.endpoint)
        model = self.models(obs.request.model)
        tenant = self.tenants(obs.request.tenant)
        trace_id = None
        if self.otel is not None and obs.request.operation is not None:
            try:
                self.otel.record(obs, handle)
                if handle is not None:
                    trace_id = format(handle.span.get_span_context().trace_id, "032x")
            except Exception:
                self.failed("otel")
        try:
            self.prometheus.record(obs, model=model, tenant=tenant, trace_id=trace_id)
        except Exception:
            self.failed("prometheus")
        return obs

    def price(self, model: str | None, served: str | None, usage: Usage | None) -> Decimal | None:
        """USD for reported usage: by the requested model, else the served one; None if unpriced."""
        if self.prices is None or usage is None:
            return None
        try:
            cost = self.prices.price(model, usage)
            if cost is None and served and served != model:
                cost = self.prices.price(served, usage)
        except Exception:
            self.failed("pricing")
            return None
        return cost

    def failed(self, component: str) -> None:
        """Log and count a telemetry failure; re-raise it under tests."""
        if self.strict:
            raise
        log.warning("telemetry failure in %s", component, exc_info=True)
        try:
            self.prometheus.telemetry_error(component)
        except Exception:  # pragma: no cover - the counter itself failed; nothing left to do
            pass
