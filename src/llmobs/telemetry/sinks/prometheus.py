"""Prometheus sink: what an observation adds to the metrics of `prometheus_metrics.py`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from llmobs.records import Observation, Session, UsageSource
from llmobs.telemetry import names as n
from llmobs.telemetry.labels import LabelGuard
from llmobs.telemetry.series import Family
from llmobs.telemetry.sinks.prometheus_metrics import Metrics

log = logging.getLogger("llmobs")


class PrometheusSink:
    """Turns observations into Prometheus series. Labels arrive already bounded."""

    component = "prometheus"

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        max_label_values: int = 200,
        max_series: int = 2000,
        attribution_labels: tuple[str, ...] = (),
    ) -> None:
        """`max_label_values` caps each client-fed label; `max_series` caps each per-request family's
        label sets (later ones fold into `other`); `attribution_labels` are the attribution
        headers (by name) that also become labels of requests, tokens and cost."""
        # Client-fed label values are bounded: later new values become `other`.
        self.models = LabelGuard(max_label_values)
        self.tenants = LabelGuard(max_label_values)
        self.reasons = LabelGuard(max_label_values)
        self.attribution_labels = attribution_labels
        self.attributions = {name: LabelGuard(max_label_values) for name in attribution_labels}
        who = attribution_labels  # the "who spent what" families carry them
        self.tools = LabelGuard(max_label_values)  # tool names: the client defines them, the model picks
        self.metrics = metrics = Metrics(registry, who)
        self._in_flight = {endpoint: metrics.in_flight.labels(endpoint) for endpoint in n.ENDPOINTS}
        self._warned: set[str] = set()
        self.labels = {**_LABELS, **{metric: (*_LABELS[metric], *who) for metric in _WHO}}
        foldable = frozenset({"model", "tenant", *who})
        self.families = {
            metric: Family(
                getattr(metrics, metric)._name, getattr(metrics, metric), names,
                foldable | ({"extra"} if metric in _FOLDED_EXTRA else frozenset()),
                label_sets(getattr(metrics, metric), max_series), self._folded,
            )
            for metric, names in {**self.labels, "requests": _REQUEST_LABELS + who}.items()
        }  # fmt: skip
        self._bound: dict[tuple[str, str, str, bool, str, tuple[str, ...]], _Series] = {}

    def started(self, endpoint: str) -> None:
        self._gauge(endpoint).inc()

    def ended(self, endpoint: str) -> None:
        self._gauge(endpoint).dec()

    def _gauge(self, endpoint: str) -> Any:
        gauge = self._in_flight.get(endpoint)
        if gauge is None:
            gauge = self._in_flight[endpoint] = self.metrics.in_flight.labels(endpoint)
        return gauge

    def upstream(self, name: str, provider: str | None, host: str) -> None:
        """Declare an upstream (route) behind the proxy, for dashboards to split by provider."""
        self.metrics.upstream_info.labels(name, provider or "", host).set(1)

    def budgets(self, budgets: Mapping[str, Mapping[str, Decimal]]) -> None:
        """Publish the budget file: USD per tenant (as the `tenant` label shows it) and period."""
        for tenant, periods in budgets.items():
            for period, usd in periods.items():
                self.metrics.budget.labels(tenant, period).set(float(usd))

    def session_started(self, endpoint: str) -> None:
        self.metrics.sessions_open.labels(endpoint).inc()

    def record_session(self, session: Session) -> None:
        """Record a finished WebSocket session (no longer open)."""
        endpoint = session.request.endpoint
        self.metrics.sessions_open.labels(endpoint).dec()
        code = close_code_label(session.close_code)
        self.metrics.sessions.labels(endpoint, code, session.outcome.value, session.request.upstream).inc()
        self.metrics.session_duration.labels(endpoint).observe(session.duration)
        for direction, frames, size in (
            ("from_client", session.frames_from_client, session.bytes_from_client),
            ("from_upstream", session.frames_from_upstream, session.bytes_from_upstream),
        ):
            if frames:
                self.metrics.frames.labels(endpoint, direction).inc(frames)
                self.metrics.frame_bytes.labels(endpoint, direction).inc(size)

    def unread(self, endpoint: str, reason: str) -> None:
        self.metrics.unread_responses.labels(endpoint, reason).inc()

    def telemetry_error(self, component: str, count: int = 1) -> None:
        self.metrics.telemetry_errors.labels(component).inc(count)

    def record(self, obs: Observation, span: object = None) -> None:
        """Record one observation (its request is no longer in flight), all of it or none of it.

        Every series is bound and every value computed first; only then is anything added, so a
        failure part-way (a label, a value) never leaves a request half-counted.
        """
        info = obs.request
        self.ended(info.endpoint)
        operations = self._operations(obs)
        for apply, value, exemplar in operations:
            apply(value, exemplar)

    def _operations(self, obs: Observation) -> list[tuple[Any, float, dict[str, str] | None]]:
        info = obs.request
        # A request that names no model (Azure, a body we could not read) goes by the served one.
        model = self.models(info.model or obs.response_model)
        tenant = self.tenants(info.tenant)
        who = tuple(self.attributions[name](info.attribution.get(name)) for name in self.attribution_labels)
        series = self._series(info.endpoint, model, tenant, info.stream, info.upstream, who)
        exemplar = {"trace_id": obs.trace_id} if obs.trace_id else None
        stream = "true" if info.stream else "false"
        values = (info.endpoint, model, tenant, stream, str(obs.status_code), obs.outcome.value, info.upstream)
        requests, _ = self.families["requests"].child(values + series.who)
        ops: list[tuple[Any, float, dict[str, str] | None]] = [
            (requests.inc, 1, None),
            (series.get("duration").observe, obs.timings.duration, exemplar),
            (series.get("overhead").observe, obs.proxy_overhead, None),
        ]
        ttft = obs.timings.time_to_first_token
        if info.stream and ttft is not None:
            ops.append((series.get("ttft").observe, ttft, exemplar))
        tpot = obs.time_per_output_token
        if tpot is not None:
            ops.append((series.get("tpot").observe, tpot, None))
        reasoning = obs.timings.reasoning_duration
        if reasoning is not None:
            ops.append((series.get("reasoning").observe, reasoning, None))
        for reason in obs.finish_reasons:  # the upstream names them: bounded like model and tenant
            ops.append((series.get("finish_reasons", self.reasons(reason)).inc, 1, None))
        for tool in obs.tool_calls:
            ops.append((series.get("tool_calls", self.tools(tool)).inc, 1, None))
        if info.tool_definitions is not None:
            ops.append((series.get("request_tools").observe, info.tool_definitions, None))
        for issue in obs.quality.issues():
            ops.append((series.get("quality_issues", issue).inc, 1, None))
        self._usage(obs, series, ops)
        self._rate_limits(obs, series, ops)
        return ops

    def _rate_limits(
        self, obs: Observation, series: _Series, ops: list[tuple[Any, float, dict[str, str] | None]]
    ) -> None:
        for limit in obs.rate_limits:
            for metric, value in (
                ("ratelimit_limit", limit.limit),
                ("ratelimit_remaining", limit.remaining),
                ("ratelimit_reset", limit.reset_seconds),
            ):
                if value is not None:
                    ops.append((_setter(series.get(metric, limit.resource)), value, None))

    def _usage(self, obs: Observation, series: _Series, ops: list[tuple[Any, float, dict[str, str] | None]]) -> None:
        if obs.usage_source is UsageSource.MISSING:
            ops.append((series.get("usage_missing").inc, 1, None))
            if obs.estimated_output_tokens is not None:
                ops.append((series.get("estimated_tokens", "output").inc, obs.estimated_output_tokens, None))
            return
        if obs.usage_source is not UsageSource.REPORTED:
            return
        usage = obs.usage
        if obs.estimated_output_tokens is not None:  # reported input, output cut off (Anthropic streams)
            ops.append((series.get("estimated_tokens", "output").inc, obs.estimated_output_tokens, None))
        for kind, count in usage.by_type().items():
            ops.append((series.get("tokens", kind).inc, count, None))
        if usage.input_tokens is not None:
            ops.append((series.get("request_tokens", "input").observe, usage.input_tokens, None))
        if usage.output_tokens is not None:
            ops.append((series.get("request_tokens", "output").observe, usage.output_tokens, None))
        if usage.audio_seconds is not None:
            ops.append((series.get("audio_seconds").inc, usage.audio_seconds, None))
        if usage.images is not None:
            ops.append((series.get("images").inc, usage.images, None))
        if obs.cost is None:
            ops.append((series.get("unpriced").inc, 1, None))
        else:
            ops.append((series.get("cost").inc, float(obs.cost), None))

    def _series(
        self, endpoint: str, model: str, tenant: str, stream: bool, upstream: str, who: tuple[str, ...]
    ) -> _Series:
        key = (endpoint, model, tenant, stream, upstream, who)
        series = self._bound.get(key)
        if series is None:
            if len(self._bound) >= _SERIES_CACHE:  # clients choose the keys: the cache stays bounded
                self._bound.clear()
            series = self._bound[key] = _Series(self, endpoint, model, tenant, stream, upstream, who)
        return series

    def _folded(self, metric: str) -> None:
        self.metrics.label_overflow.labels(metric).inc()
        if metric not in self._warned:
            self._warned.add(metric)
            log.warning("%s used its series budget: new label sets are recorded as `other`", metric)


def label_sets(metric: Any, max_series: int) -> int:
    """How many label sets fit in `max_series` series: a histogram's set is a series per bucket,
    plus _sum and _count; a counter's, one."""
    if isinstance(metric, Histogram):
        return max(10, max_series // (len(metric._upper_bounds) + 2))
    return max_series


def close_code_label(code: int | None) -> str:
    """A bounded `close_code` value: the RFC 6455 codes as they are, application codes by range."""
    if code is None:
        return "none"  # dropped without a close frame (a 1006 to the other side)
    if 1000 <= code <= 1015:
        return str(code)
    if 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return "invalid"


_SERIES_CACHE = 10_000  # bound label-child caches kept per (endpoint, model, tenant, ...) key
_REQUEST_LABELS = ("endpoint", "model", "tenant", "stream", "status_code", "outcome", "upstream")
_WHO = ("tokens", "cost")  # with requests: the families that carry the attribution labels
_FOLDED_EXTRA = frozenset({"finish_reasons", "tool_calls"})  # their own label (reason, tool) is fed too


# The labels each per-request metric takes, in order; "extra" is the metric's own last label
# (token type, finish reason, tool name, quality issue, rate-limit resource).
_LABELS: dict[str, tuple[str, ...]] = {
    "duration": ("endpoint", "model", "stream"),
    "overhead": ("endpoint",),
    "ttft": ("endpoint", "model"),
    "tpot": ("endpoint", "model"),
    "reasoning": ("endpoint", "model"),
    "usage_missing": ("endpoint", "model"),
    "estimated_tokens": ("endpoint", "model", "extra"),
    "request_tokens": ("endpoint", "model", "extra"),
    "tokens": ("endpoint", "model", "tenant", "extra", "upstream"),
    "audio_seconds": ("endpoint", "model", "tenant", "upstream"),
    "images": ("endpoint", "model", "tenant", "upstream"),
    "finish_reasons": ("endpoint", "model", "extra"),
    "tool_calls": ("endpoint", "model", "extra"),
    "request_tools": ("endpoint", "model"),
    "quality_issues": ("endpoint", "model", "extra"),
    "cost": ("model", "tenant", "upstream"),
    "unpriced": ("model",),
    "ratelimit_limit": ("upstream", "model", "extra"),
    "ratelimit_remaining": ("upstream", "model", "extra"),
    "ratelimit_reset": ("upstream", "model", "extra"),
}


def _setter(gauge: Any) -> Any:
    """`gauge.set` in the shape of the other operations: (value, exemplar)."""
    return lambda value, exemplar: gauge.set(value)


class _Series:
    """Label children of one (endpoint, model, tenant, stream, upstream, attribution), bound on first
    use: `.labels()` costs microseconds and a request touches a dozen series. Binding lazily keeps
    a series from existing before it has data, so an unpriced model never shows a $0 cost series."""

    __slots__ = ("_sink", "_labels", "_children", "who")

    def __init__(
        self,
        sink: PrometheusSink,
        endpoint: str,
        model: str,
        tenant: str,
        stream: bool,
        upstream: str,
        who: tuple[str, ...],
    ) -> None:
        self._sink = sink
        self.who = who
        stream_label = "true" if stream else "false"
        self._labels = {
            "endpoint": endpoint,
            "model": model,
            "tenant": tenant,
            "stream": stream_label,
            "upstream": upstream,
            **dict(zip(sink.attribution_labels, who, strict=True)),
        }
        self._children: dict[tuple[str, str], tuple[Any, bool]] = {}

    def get(self, metric: str, extra: str = "") -> Any:
        """The child of the sink's `metric` attribute for this series (and `extra`)."""
        found = self._children.get((metric, extra))
        if found is None:
            values = {**self._labels, "extra": extra}
            labels = tuple(values[name] for name in self._sink.labels[metric])
            found = self._children[(metric, extra)] = self._sink.families[metric].child(labels)
        elif found[1]:
            self._sink._folded(self._sink.families[metric].name)
        return found[0]
