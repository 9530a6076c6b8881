"""The end of the pipeline: price, then record in every sink; telemetry never breaks traffic."""

from __future__ import annotations

import dataclasses
import logging
import operator
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Protocol

from llmobs.records import Observation, RequestInfo, Session, Usage, UsageSource
from llmobs.telemetry.pricing import PRICE_CONTEXT_KEYS
from llmobs.telemetry.sinks import Sink
from llmobs.telemetry.sinks.prometheus import PrometheusSink

log = logging.getLogger("llmobs")

_TRACE_HEADERS = (b"traceparent", b"tracestate")


class Pricer(Protocol):
    def price(
        self, model: str | None, usage: Usage, *, provider: str | None, context: Mapping[str, str] | None = None
    ) -> Decimal | None: ...


class Tracer(Protocol):
    """The sink that starts a span per request and propagates its context upstream."""

    def start(self, info: RequestInfo, incoming_headers: Mapping[str, str], start: float) -> object | None: ...

    def inject(self, handle: object | None, headers: dict[str, str]) -> None: ...

    def trace_id(self, handle: object | None) -> str | None: ...


def plausible(usage: Usage, bound: int) -> bool:
    """Every count and quantity finite, non-negative and within `bound` (tokens, seconds, images)."""
    for value in _quantities(usage):
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= bound):
            return False  # NaN fails the comparison too
    return all(isinstance(v, (int, float)) and 0 <= v <= bound for _, v in usage.pricing)


_quantities = operator.attrgetter(
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
    "input_audio_tokens", "input_image_tokens", "output_audio_tokens", "output_image_tokens",
    "audio_seconds", "images",
)  # fmt: skip
_last_warning = 0.0


def _warn_once_a_minute(message: str, *args: object) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= 60.0:
        _last_warning = now
        log.warning(message, *args)


class Recorder:
    """Prices observations and hands them to each sink.

    This is the one place that catches telemetry failures: pricing, accounting (reported
    by the proxy through `failed`) and every sink's. Each is logged and counted in
    llmobs_telemetry_errors_total{component}; with `strict` (tests) it is raised instead.
    """

    def __init__(
        self,
        prometheus: PrometheusSink,
        prices: Pricer | None,
        *,
        tracer: Tracer | None = None,
        sinks: tuple[Sink, ...] = (),
        strict: bool = False,
        max_tokens: int = 1_000_000_000,
    ) -> None:
        self.prometheus = prometheus
        self.prices = prices
        self.tracer = tracer
        self.sinks: tuple[Sink, ...] = (prometheus, *sinks)
        self.strict = strict
        self.max_tokens = max_tokens  # usage past this, per request, is not believed

    def start(self, info: RequestInfo, headers: list[tuple[bytes, bytes]], start: float) -> object | None:
        """Note a request as in flight; start its span. Returns the span handle or None."""
        self.prometheus.started(info.endpoint)
        if self.tracer is None or info.operation is None:
            return None
        try:
            incoming = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _TRACE_HEADERS}
            return self.tracer.start(info, incoming, start)
        except Exception:  # noqa: BLE001 - telemetry never breaks traffic; counted
            self.failed("otel")
            return None

    def inject(self, handle: object | None, headers: dict[str, str]) -> None:
        """Write the request span's trace context into the upstream request headers."""
        if handle is not None and self.tracer is not None:
            try:
                self.tracer.inject(handle, headers)
            except Exception:  # noqa: BLE001 - telemetry never breaks traffic; counted
                self.failed("otel")

    def finish(self, obs: Observation, handle: object | None = None) -> Observation:
        """Price a finished request and record it everywhere; returns what was recorded."""
        if obs.usage_source is UsageSource.REPORTED and not plausible(obs.usage, self.max_tokens):
            # 2**64 input tokens would add trillions of dollars for good: such usage is missing.
            _warn_once_a_minute(
                "usage past max_tokens_per_request treated as missing (endpoint %s)", obs.request.endpoint
            )
            obs = dataclasses.replace(
                obs, usage=Usage(), usage_source=UsageSource.MISSING, estimated_output_tokens=None
            )
        reported = obs.usage if obs.usage_source is UsageSource.REPORTED else None
        context = {key: obs.extra[key] for key in PRICE_CONTEXT_KEYS if isinstance(obs.extra.get(key), str)}
        cost = self.price(obs.request.model, obs.response_model, reported, obs.request.pricing_provider, context)
        trace_id = self.tracer.trace_id(handle) if self.tracer is not None and handle is not None else None
        if cost is not None or trace_id is not None:
            obs = dataclasses.replace(obs, cost=cost, trace_id=trace_id)
        for sink in self.sinks:
            try:
                sink.record(obs, handle)
            except Exception:  # noqa: BLE001 - telemetry never breaks traffic; counted
                self.failed(sink.component)
        return obs

    def start_session(self, info: RequestInfo) -> None:
        """Note a WebSocket session as open."""
        self.prometheus.session_started(info.endpoint)

    def finish_session(self, session: Session) -> None:
        """Record a finished WebSocket session (its responses were recorded as they ended)."""
        try:
            self.prometheus.record_session(session)
        except Exception:  # noqa: BLE001 - telemetry never breaks traffic; counted
            self.failed("prometheus")

    def abandon(self, info: RequestInfo) -> None:
        """A request whose observation could not be made is no longer in flight."""
        self.prometheus.ended(info.endpoint)

    def price(
        self,
        model: str | None,
        served: str | None,
        usage: Usage | None,
        provider: str | None = None,
        context: Mapping[str, str] | None = None,
    ) -> Decimal | None:
        """USD for reported usage by the model that answered; None if unpriced.

        The model that answered is the one billed: a request for one model served by another
        (an alias, a gateway's fallback, a self-hosted model behind a borrowed name) costs what
        the served model costs, in the tier (or speed) the response says it was served in
        (`context`), and is unpriced when that model has no price. The requested model is
        priced only when the response names none.
        """
        if self.prices is None or usage is None:
            return None
        try:
            cost = self.prices.price(served or model, usage, provider=provider, context=context)
        except Exception:  # noqa: BLE001 - telemetry never breaks traffic; counted
            self.failed("pricing")
            return None
        return cost

    def skipped(self, endpoint: str, reason: str) -> None:
        """A response llmobs would not read (too large, undecodable): counted, never raised."""
        try:
            self.prometheus.unread(endpoint, reason)
        except Exception:
            log.debug("cannot count a skipped response", exc_info=True)

    def failed(self, component: str) -> None:
        """Log and count a telemetry failure; re-raise it under tests. Call it from `except`."""
        if self.strict:
            raise  # always called from an except block
        log.warning("telemetry failure in %s", component, exc_info=True)  # noqa: LOG014 - called from except
        try:
            self.prometheus.telemetry_error(component)
        except Exception:
            log.debug("cannot count a telemetry failure", exc_info=True)
