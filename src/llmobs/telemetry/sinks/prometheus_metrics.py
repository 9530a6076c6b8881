"""Every Prometheus metric llmobs exposes, defined once: names, help, labels, units, buckets.

The names, labels and units are public API (the README documents each); the sink in
`prometheus.py` decides what an observation adds to them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from llmobs import __version__
from llmobs.telemetry import names as n


class Metrics:
    """The metric objects on one registry. `who` are the attribution labels (by header name) that
    requests, tokens and cost also carry."""

    def __init__(self, registry: CollectorRegistry, who: tuple[str, ...] = ()) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series only double the output

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, registry=registry, unit=unit_of(name))

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, registry=registry, buckets=buckets, unit=unit_of(name))

        em = ("endpoint", "model")
        self.requests = counter(
            n.REQUESTS,
            "Proxied requests.",
            ("endpoint", "model", "tenant", "stream", "status_code", "outcome", "upstream", *who),
        )
        self.in_flight = Gauge(
            n.REQUESTS_IN_FLIGHT,
            "Requests being proxied now.",
            ("endpoint",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.duration = histogram(
            n.REQUEST_DURATION,
            "Request duration, first request byte to last response byte.",
            ("endpoint", "model", "stream"),
            n.DURATION_BUCKETS,
        )
        self.ttft = histogram(n.TIME_TO_FIRST_TOKEN, "Time to the first generated token (streams).", em, n.TTFT_BUCKETS)
        self.tpot = histogram(
            n.TIME_PER_OUTPUT_TOKEN, "(duration - TTFT) / (output tokens - 1) (streams).", em, n.TIME_PER_TOKEN_BUCKETS
        )
        self.reasoning = histogram(
            n.REASONING_DURATION,
            "Time from the first reasoning delta to the first answer delta (streams).",
            em,
            n.DURATION_BUCKETS,
        )
        self.tokens = counter(
            n.TOKENS,
            "Tokens as the upstream reported them; cache_* and input_* are part of input, reasoning and "
            "output_* of output.",
            ("endpoint", "model", "tenant", "type", "upstream", *who),
        )
        self.audio_seconds = counter(
            n.AUDIO_SECONDS,
            "Seconds of audio the upstream reported (transcriptions, translations).",
            ("endpoint", "model", "tenant", "upstream"),
        )
        self.images = counter(n.IMAGES, "Images the upstream returned.", ("endpoint", "model", "tenant", "upstream"))
        self.estimated_tokens = counter(
            n.ESTIMATED_TOKENS,
            "Tokens estimated by the proxy where the upstream reported none.",
            ("endpoint", "model", "type"),
        )
        self.request_tokens = histogram(
            n.REQUEST_TOKENS, "Reported tokens per request.", ("endpoint", "model", "type"), n.TOKEN_BUCKETS
        )
        self.finish_reasons = counter(
            n.FINISH_REASONS, "Finish reasons, one per choice.", ("endpoint", "model", "reason")
        )
        self.tool_calls = counter(
            n.TOOL_CALLS, "Tool calls the model asked for, by tool name.", ("endpoint", "model", "tool")
        )
        self.request_tools = histogram(n.REQUEST_TOOLS, "Tool definitions offered per request.", em, n.TOOL_BUCKETS)
        self.quality_issues = counter(
            n.QUALITY_ISSUES,
            "Answers judged without a model: invalid_json, empty_answer, refusal.",
            ("endpoint", "model", "issue"),
        )
        self.cost = counter(n.COST_USD, "Cost in US dollars of priced requests.", ("model", "tenant", "upstream", *who))
        self.unpriced = counter(n.UNPRICED_REQUESTS, "Requests with usage that no price covers.", ("model",))
        self.usage_missing = counter(n.USAGE_MISSING, "Successful requests whose response carried no usage.", em)
        self.overhead = histogram(
            n.PROXY_OVERHEAD,
            "Time spent in the proxy itself, not waiting on either side.",
            ("endpoint",),
            n.OVERHEAD_BUCKETS,
        )
        self.telemetry_errors = counter(
            n.TELEMETRY_ERRORS,
            "Failures inside telemetry (accounting, sinks, dropped spans); traffic unaffected.",
            ("component",),
        )
        self.unread_responses = counter(
            n.UNREAD_RESPONSES,
            "Responses relayed but not read for accounting: undecodable_body, body_too_large, event_too_large.",
            ("endpoint", "reason"),
        )
        build = Gauge(n.BUILD_INFO, "llmobs build; always 1.", ("version",), registry=registry, multiprocess_mode="max")
        build.labels(__version__).set(1)
        self.sessions_open = Gauge(
            n.SESSIONS_OPEN,
            "WebSocket sessions being relayed now.",
            ("endpoint",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.sessions = counter(
            n.SESSIONS,
            "Finished WebSocket sessions, by how they closed.",
            ("endpoint", "close_code", "outcome", "upstream"),
        )
        self.session_duration = histogram(
            n.SESSION_DURATION, "WebSocket session duration, upgrade to close.", ("endpoint",), n.SESSION_BUCKETS
        )
        self.frames = counter(n.FRAMES, "WebSocket frames relayed.", ("endpoint", "direction"))
        self.frame_bytes = counter(n.FRAME_BYTES, "WebSocket payload bytes relayed.", ("endpoint", "direction"))
        self.upstream_info = Gauge(
            n.UPSTREAM_INFO,
            "The upstreams behind the proxy; always 1.",
            ("upstream", "provider", "host"),
            registry=registry,
            multiprocess_mode="max",
        )
        self.label_overflow = counter(
            n.LABEL_OVERFLOW,
            "Observations recorded under `other` because their metric had used its series budget.",
            ("metric",),
        )
        # The upstream's own rate-limit figures, as its latest response said: the newest value wins
        # across workers too. `model` as on requests (bounded, folded past the series budget).
        limits = ("upstream", "model", "resource")
        self.ratelimit_limit = Gauge(
            n.RATELIMIT_LIMIT,
            "The upstream's rate limit per resource (requests, tokens, ...), as its latest response said.",
            limits,
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.ratelimit_remaining = Gauge(
            n.RATELIMIT_REMAINING,
            "What the upstream's latest response said remains of its rate limit per resource.",
            limits,
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.ratelimit_reset = Gauge(
            n.RATELIMIT_RESET,
            "Seconds until the upstream's rate limit is back at its limit, as its latest response said.",
            limits,
            registry=registry,
            multiprocess_mode="mostrecent",
            unit=unit_of(n.RATELIMIT_RESET),
        )
        self.budget = Gauge(
            n.BUDGET_USD,
            "Spending budget in US dollars per tenant and period (day, month), from the budget file.",
            ("tenant", "period"),
            registry=registry,
            multiprocess_mode="max",
            unit=unit_of(n.BUDGET_USD),
        )


_UNITS = ("seconds", "bytes", "tokens", "usd")


def unit_of(name: str) -> str:
    """The unit a metric's name ends in (`# UNIT` in the OpenMetrics exposition), or none."""
    return next((unit for unit in _UNITS if name.endswith("_" + unit)), "")
