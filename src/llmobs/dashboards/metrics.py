"""The metrics the dashboards may query: one row per metric, its kind, labels and unit."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from llmobs.telemetry import names as n


class Kind(Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


# Labels Prometheus adds to every series from the scrape target, whatever the metric.
TARGET_LABELS = ("job", "instance")
HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class Metric:
    """One metric as the Prometheus sink defines it (`name` without `_total`) and what it measures."""

    name: str
    kind: Kind
    labels: tuple[str, ...]  # the sink's own labels, in its order
    unit: str  # what one unit of the value is, for panel descriptions
    noun: str  # what it counts or measures, in two words at most, for panel titles

    @property
    def series(self) -> str:
        """The series PromQL selects: counters end in `_total`, histograms are read through `_bucket`."""
        if self.kind is Kind.COUNTER:
            return n.total(self.name)
        if self.kind is Kind.HISTOGRAM:
            return self.name + "_bucket"
        return self.name

    @property
    def exposed(self) -> tuple[str, ...]:
        """Every series name this metric appears under on /metrics."""
        if self.kind is Kind.HISTOGRAM:
            return tuple(self.name + part for part in HISTOGRAM_PARTS)
        return (self.series,)

    def has(self, label: str) -> bool:
        """Whether a series of this metric carries `label` once Prometheus has scraped it."""
        return label in self.labels or label in TARGET_LABELS or (label == "le" and self.kind is Kind.HISTOGRAM)


def _m(name: str, kind: Kind, labels: str, unit: str, noun: str) -> Metric:
    return Metric(name, kind, tuple(labels.split()), unit, noun)


C, G, H = Kind.COUNTER, Kind.GAUGE, Kind.HISTOGRAM

# Must match llmobs.telemetry.sinks.prometheus_metrics and README "Prometheus metrics" (tests check both).
REQUESTS = _m(n.REQUESTS, C, "endpoint model tenant stream status_code outcome upstream", "requests", "requests")
REQUESTS_IN_FLIGHT = _m(n.REQUESTS_IN_FLIGHT, G, "endpoint", "requests", "in flight")
REQUEST_DURATION = _m(n.REQUEST_DURATION, H, "endpoint model stream", "seconds", "duration")
TIME_TO_FIRST_TOKEN = _m(n.TIME_TO_FIRST_TOKEN, H, "endpoint model", "seconds", "TTFT")
TIME_PER_OUTPUT_TOKEN = _m(n.TIME_PER_OUTPUT_TOKEN, H, "endpoint model", "seconds", "time per token")
REASONING_DURATION = _m(n.REASONING_DURATION, H, "endpoint model", "seconds", "reasoning time")
TOKENS = _m(n.TOKENS, C, "endpoint model tenant type upstream", "tokens", "tokens")
AUDIO_SECONDS = _m(n.AUDIO_SECONDS, C, "endpoint model tenant upstream", "seconds of audio", "audio")
IMAGES = _m(n.IMAGES, C, "endpoint model tenant upstream", "images", "images")
ESTIMATED_TOKENS = _m(n.ESTIMATED_TOKENS, C, "endpoint model type", "tokens", "estimated tokens")
REQUEST_TOKENS = _m(n.REQUEST_TOKENS, H, "endpoint model type", "tokens per request", "request size")
FINISH_REASONS = _m(n.FINISH_REASONS, C, "endpoint model reason", "choices", "finish reasons")
TOOL_CALLS = _m(n.TOOL_CALLS, C, "endpoint model tool", "tool calls", "tool calls")
REQUEST_TOOLS = _m(n.REQUEST_TOOLS, H, "endpoint model", "tools offered per request", "tools offered")
QUALITY_ISSUES = _m(n.QUALITY_ISSUES, C, "endpoint model issue", "answers", "quality issues")
COST_USD = _m(n.COST_USD, C, "model tenant upstream", "US dollars", "cost")
UNPRICED_REQUESTS = _m(n.UNPRICED_REQUESTS, C, "model", "requests", "unpriced")
USAGE_MISSING = _m(n.USAGE_MISSING, C, "endpoint model", "requests", "usage missing")
PROXY_OVERHEAD = _m(n.PROXY_OVERHEAD, H, "endpoint", "seconds", "overhead")
TELEMETRY_ERRORS = _m(n.TELEMETRY_ERRORS, C, "component", "failures", "telemetry errors")
UNREAD_RESPONSES = _m(n.UNREAD_RESPONSES, C, "endpoint reason", "responses", "unread responses")
LABEL_OVERFLOW = _m(n.LABEL_OVERFLOW, C, "metric", "observations", "folded labels")
BUILD_INFO = _m(n.BUILD_INFO, G, "version", "1 per process", "replicas")
UPSTREAM_INFO = _m(n.UPSTREAM_INFO, G, "upstream provider host", "1 per upstream", "upstreams")
SESSIONS_OPEN = _m(n.SESSIONS_OPEN, G, "endpoint", "sessions", "open sessions")
SESSIONS = _m(n.SESSIONS, C, "endpoint close_code outcome upstream", "sessions", "sessions")
SESSION_DURATION = _m(n.SESSION_DURATION, H, "endpoint", "seconds", "session length")
FRAMES = _m(n.FRAMES, C, "endpoint direction", "frames", "frames")
FRAME_BYTES = _m(n.FRAME_BYTES, C, "endpoint direction", "bytes", "frame bytes")
RATELIMIT_LIMIT = _m(n.RATELIMIT_LIMIT, G, "upstream model resource", "requests or tokens", "rate limit")
RATELIMIT_REMAINING = _m(n.RATELIMIT_REMAINING, G, "upstream model resource", "requests or tokens", "headroom")
RATELIMIT_RESET = _m(n.RATELIMIT_RESET, G, "upstream model resource", "seconds", "limit reset")
BUDGET_USD = _m(n.BUDGET_USD, G, "tenant period", "US dollars", "budget")

METRICS: tuple[Metric, ...] = (
    REQUESTS,
    REQUESTS_IN_FLIGHT,
    REQUEST_DURATION,
    TIME_TO_FIRST_TOKEN,
    TIME_PER_OUTPUT_TOKEN,
    REASONING_DURATION,
    TOKENS,
    AUDIO_SECONDS,
    IMAGES,
    ESTIMATED_TOKENS,
    REQUEST_TOKENS,
    FINISH_REASONS,
    TOOL_CALLS,
    REQUEST_TOOLS,
    QUALITY_ISSUES,
    COST_USD,
    UNPRICED_REQUESTS,
    USAGE_MISSING,
    PROXY_OVERHEAD,
    TELEMETRY_ERRORS,
    UNREAD_RESPONSES,
    LABEL_OVERFLOW,
    BUILD_INFO,
    UPSTREAM_INFO,
    SESSIONS_OPEN,
    SESSIONS,
    SESSION_DURATION,
    FRAMES,
    FRAME_BYTES,
    RATELIMIT_LIMIT,
    RATELIMIT_REMAINING,
    RATELIMIT_RESET,
    BUDGET_USD,
)
BY_SERIES = {series: metric for metric in METRICS for series in metric.exposed}
_SERIES_NAME = re.compile(r"\bllmobs_[a-z0-9_]+\b")


def known_series() -> frozenset[str]:
    """Every series name llmobs exposes, as PromQL sees it (counters with _total, histogram parts)."""
    return frozenset(BY_SERIES)


def metrics_in(exprs: Iterable[str]) -> list[Metric]:
    """The metrics some PromQL expressions read, in first-use order; an unknown name is an error."""
    found: dict[str, Metric] = {}
    for expr in exprs:
        for name in _SERIES_NAME.findall(expr):
            metric = BY_SERIES.get(name)
            if metric is None:
                raise KeyError(f"{name} is not a series llmobs exposes")
            found.setdefault(metric.name, metric)
    return list(found.values())
