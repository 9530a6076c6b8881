"""Prometheus sink: every metric defined once, on a registry passed in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from .. import __version__
from .. import names as n
from ..records import Observation, UsageSource


class PrometheusSink:
    """Turns observations into Prometheus series. Labels arrive already bounded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        disable_created_metrics()  # `_created` series only double the exposition
        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, registry=registry, buckets=buckets)

        em = ("endpoint", "model")
        self.requests = counter(
            n.REQUESTS, "Proxied requests.", ("endpoint", "model", "tenant", "stream", "status_code", "outcome")
        )
        self.in_flight = Gauge(
            n.REQUESTS_IN_FLIGHT, "Requests being proxied now.", ("endpoint",), registry=registry,
            multiprocess_mode="livesum",
        )
        self.duration = histogram(
            n.REQUEST_DURATION, "Request duration, first request byte to last response byte.",
            ("endpoint", "model", "stream"), n.DURATION_BUCKETS,
        )
        self.ttft = histogram(n.TIME_TO_FIRST_TOKEN, "Time to the first generated token (streams).", em, n.DURATION_BUCKETS)
        self.tpot = histogram(
            n.TIME_PER_OUTPUT_TOKEN, "(duration - TTFT) / (output tokens - 1) (streams).", em, n.TIME_PER_TOKEN_BUCKETS
        )
        self.reasoning = histogram(
            n.REASONING_DURATION, "Time from the first reasoning delta to the first answer delta (streams).",
            em, n.DURATION_BUCKETS,
        )
        self.tokens = counter(
            n.TOKENS, "Tokens as the upstream reported them; cache_* are part of input, reasoning of output.",
            ("endpoint", "model", "tenant", "type"),
        )
        self.estimated_tokens = counter(
            n.ESTIMATED_TOKENS, "Tokens estimated by the proxy where the upstream reported none.",
            ("endpoint", "model", "type"),
        )
        self.request_tokens = histogram(
            n.REQUEST_TOKENS, "Reported tokens per request.", ("endpoint", "model", "type"), n.TOKEN_BUCKETS
        )
        self.finish_reasons = counter(n.FINISH_REASONS, "Finish reasons, one per choice.", ("endpoint", "model", "reason"))
        self.cost = counter(n.COST_USD, "Cost in US dollars of priced requests.", ("model", "tenant"))
        self.unpriced = counter(n.UNPRICED_REQUESTS, "Requests with usage that no price covers.", ("model",))
        self.usage_missing = counter(
            n.USAGE_MISSING, "Successful requests whose response carried no usage.", em
        )
        self.overhead = histogram(
            n.PROXY_OVERHEAD, "Time spent in the proxy itself, not waiting on either side.", ("endpoint",),
            n.OVERHEAD_BUCKETS,
        )
        self.telemetry_errors = counter(
            n.TELEMETRY_ERRORS, "Failures inside telemetry (accounting, sinks, dropped spans); traffic unaffected.",
            ("component",),
        )
        build = Gauge(n.BUILD_INFO, "llmobs build; always 1.", ("version",), registry=registry,
                      multiprocess_mode="max")
        build.labels(__version__).set(1)
        for endpoint in n.ENDPOINTS:  # show zeros from the start
            self.in_flight.labels(endpoint)

    def started(self, endpoint: str) -> None:
        self.in_flight.labels(endpoint).inc()

    def ended(self, endpoint: str) -> None:
        self.in_flight.labels(endpoint).dec()

    def telemetry_error(self, component: str) -> None:
        self.telemetry_errors.labels(component).inc()

    def record(self, obs: Observation, *, model: str, tenant: str, trace_id: str | None = None) -> None:
        """Record one observation; `model` and `tenant` are the guarded label values."""
        info = obs.request
        endpoint = info.endpoint
        stream = "true" if info.stream else "false"
        exemplar = {"trace_id": trace_id} if trace_id else None
        self.requests.labels(endpoint, model, tenant, stream, str(obs.status_code), obs.outcome.value).inc()
        self.duration.labels(endpoint, model, stream).observe(obs.timings.duration, exemplar)
        self.overhead.labels(endpoint).observe(obs.proxy_overhead)
        ttft = obs.timings.time_to_first_token
        if info.stream and ttft is not None:
            self.ttft.labels(endpoint, model).observe(ttft, exemplar)
        tpot = obs.time_per_output_token
        if tpot is not None:
            self.tpot.labels(endpoint, model).observe(tpot)
        reasoning = obs.timings.reasoning_duration
        if reasoning is not None:
            self.reasoning.labels(endpoint, model).observe(reasoning)
        for reason in obs.finish_reasons:
            self.finish_reasons.labels(endpoint, model, reason).inc()
        self._usage(obs, endpoint, model, tenant)

    def _usage(self, obs: Observation, endpoint: str, model: str, tenant: str) -> None:
        if obs.usage_source is UsageSource.MISSING:
            self.usage_missing.labels(endpoint, model).inc()
            if obs.estimated_output_tokens is not None:
                self.estimated_tokens.labels(endpoint, model, "output").inc(obs.estimated_output_tokens)
            return
        if obs.usage_source is not UsageSource.REPORTED:
            return
        usage = obs.usage
        for kind, count in usage.by_type().items():
            self.tokens.labels(endpoint, model, tenant, kind).inc(count)
        if usage.input_tokens is not None:
            self.request_tokens.labels(endpoint, model, "input").observe(usage.input_tokens)
        if usage.output_tokens is not None:
            self.request_tokens.labels(endpoint, model, "output").observe(usage.output_tokens)
        if obs.cost is None:
            self.unpriced.labels(model).inc()
        else:
            self.cost.labels(model, tenant).inc(float(obs.cost))
