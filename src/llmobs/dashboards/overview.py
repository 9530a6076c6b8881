"""The overview: traffic, upstreams, speed, finish reasons, tools, cost, media, Realtime and proxy health at a glance.

The home dashboard.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from llmobs.dashboards import media, tools
from llmobs.dashboards import metrics as mt
from llmobs.dashboards.measures import (
    ERROR_STEPS,
    IO_TOKENS,
    NONZERO_BAD,
    RATIO_STEPS,
    TTFT_STEPS,
    cost,
    cost_per_hour,
    error_ratio,
    finish_share,
    token_count,
    token_share,
)
from llmobs.dashboards.panels import (
    OVERVIEW_UID,
    TOK_S,
    Panel,
    bars,
    dashboard,
    heat,
    pie,
    query,
    single,
    ts,
    with_rows,
)
from llmobs.dashboards.promql import count, else_zero, gauge_sum, increase_sum, or_zero, quantile, rate_sum, topk
from llmobs.dashboards.ratelimits import ratelimit_panels
from llmobs.dashboards.realtime import realtime_panels
from llmobs.dashboards.upstreams import upstream_panels


def glance() -> list[Panel]:
    """Requests, errors, TTFT, tokens and cost in six numbers."""
    return [
        single(
            "Requests / s",
            "Requests through the proxy per second, for the selected jobs, instances, endpoints, models and tenants.",
            "reqps",
            rate_sum(mt.REQUESTS),
        ),
        single(
            "Upstream error ratio",
            "Share of requests that failed on the upstream side (HTTP errors, "
            "unreachable, timeouts, broken streams). Client cancellations are not counted.",
            "percentunit",
            error_ratio(),
            ERROR_STEPS,
        ),
        single(
            "TTFT p95",
            "95th percentile time to first token over streams: what users feel as 'it hangs'.",
            "s",
            quantile(0.95, mt.TIME_TO_FIRST_TOKEN),
            TTFT_STEPS,
        ),
        single(
            "Tokens (range)",
            "Input plus output tokens the upstream reported over the dashboard range.",
            "short",
            increase_sum(mt.TOKENS, "", IO_TOKENS),
            graph=False,
        ),
        single(
            "Cost (range)",
            "Dollars spent over the dashboard range, priced per model. Unpriced requests "
            "are not in here: see 'Unpriced requests'.",
            "currencyUSD",
            cost(),
            graph=False,
        ),
        single(
            "Cost burn ($/h)",
            "Current spending rate in dollars per hour, at the prices of the price file.",
            "currencyUSD",
            cost_per_hour(),
        ),
    ]


def traffic() -> list[Panel]:
    """Who sends what: requests by model, tenant and endpoint, tokens by type."""
    return [
        ts(
            "Requests / s by model",
            "Request rate per requested model; 'other' collects models past the label budget. "
            "Click a series to open the model drill-down.",
            "reqps",
            query(rate_sum(mt.REQUESTS, "model"), "{{model}}"),
            stacked=True,
            size=(8, 8),
        ),
        ts(
            "Requests / s by tenant",
            "Request rate per tenant (the tenant header, else an API-key fingerprint). "
            "Spot the tenant that drives a spike; click it to open its tenant dashboard.",
            "reqps",
            query(rate_sum(mt.REQUESTS, "tenant"), "{{tenant}}"),
            stacked=True,
            size=(8, 8),
        ),
        ts(
            "Requests / s by endpoint",
            "Request rate per API endpoint: OpenAI text, media and realtime (one per Realtime response), "
            "Anthropic messages, and other for unknown paths.",
            "reqps",
            query(rate_sum(mt.REQUESTS, "endpoint"), "{{endpoint}}"),
            stacked=True,
            size=(8, 8),
        ),
        ts(
            "Tokens / s by type",
            "Reported token throughput per type. cache_read, cache_write, input_audio and input_image are part "
            "of input; reasoning, output_audio and output_image are part of output: the lines overlap, so they "
            "are not stacked.",
            TOK_S,
            query(rate_sum(mt.TOKENS, "type"), "{{type}}"),
            size=(16, 8),
        ),
        bars(
            "Top tenants by tokens (range)",
            "Input plus output tokens per tenant over the range: who uses the most (top 10).",
            "short",
            topk(10, increase_sum(mt.TOKENS, "tenant", IO_TOKENS)),
            "{{tenant}}",
        ),
    ]


def latency() -> list[Panel]:
    """How fast: duration, TTFT, time per token and reasoning time."""
    return [
        ts(
            "Request duration p95 by model",
            "95th percentile of the full request duration, from the request "
            "to the last byte. Click an exemplar to open its trace.",
            "s",
            query(quantile(0.95, mt.REQUEST_DURATION, "model"), "{{model}}", exemplar=True),
        ),
        ts(
            "Time to first token p95 by model",
            "95th percentile time to the first streamed token. Click an exemplar to open the trace of a slow request.",
            "s",
            query(quantile(0.95, mt.TIME_TO_FIRST_TOKEN, "model"), "{{model}}", exemplar=True),
            thresholds=TTFT_STEPS,
        ),
        heat(
            "Time to first token distribution",
            "How TTFT is spread across streams (requests per bucket); dots are exemplars linking to traces.",
            mt.TIME_TO_FIRST_TOKEN,
        ),
        heat(
            "Request duration distribution",
            "How request durations are spread (requests per bucket); long tails here are usually reasoning "
            "models or long generations.",
            mt.REQUEST_DURATION,
        ),
        ts(
            "Time per output token p50 by model",
            "Median time between output tokens after the first one "
            "(1 / this = tokens per second). Rising values mean a saturated upstream.",
            "s",
            query(quantile(0.5, mt.TIME_PER_OUTPUT_TOKEN, "model"), "{{model}}"),
        ),
        ts(
            "Reasoning time p95 by model",
            "95th percentile time models spend reasoning before the first "
            "answer token (servers that stream reasoning deltas).",
            "s",
            query(quantile(0.95, mt.REASONING_DURATION, "model"), "{{model}}"),
        ),
    ]


def finish() -> list[Panel]:
    """Why generations stop: finish reasons and their shares."""
    return [
        pie(
            "Finish reasons (range)",
            "Why generations stopped over the range, one count per choice. 'length' means cut off by "
            "max_tokens: the answer is incomplete.",
            "short",
            increase_sum(mt.FINISH_REASONS, "reason"),
            "{{reason}}",
        ),
        ts(
            "Truncation, filter and tool-call ratios",
            "Share of choices that stopped on length (truncated), "
            "content_filter (blocked) or tool_calls (the model asked for a tool).",
            "percentunit",
            query(finish_share("length"), "length"),
            query(finish_share("content_filter"), "content_filter"),
            query(finish_share("tool_calls"), "tool_calls"),
            thresholds=RATIO_STEPS,
            size=(8, 8),
        ),
        ts(
            "Length truncation ratio by model",
            "Share of choices cut off by max_tokens, per model. A rise usually follows a prompt or max_tokens change.",
            "percentunit",
            query(finish_share("length", "model"), "{{model}}"),
            thresholds=RATIO_STEPS,
            size=(8, 8),
        ),
    ]


def spend() -> list[Panel]:
    """What it costs: burn, cost per tenant, caching and accounting gaps."""
    return [
        ts(
            "Cost burn by model ($/h)",
            "Spending rate per model in dollars per hour. Click a series to open the model drill-down.",
            "currencyUSD",
            query(cost_per_hour("model"), "{{model}}"),
            stacked=True,
        ),
        bars(
            "Cost by tenant (range)",
            "Dollars per tenant over the dashboard range (top 10). Click a bar to open the tenant dashboard.",
            "currencyUSD",
            topk(10, cost("tenant")),
            "{{tenant}}",
            size=(12, 8),
        ),
        ts(
            "Cache-hit ratio by model",
            "cache_read / input tokens: the share of prompt tokens served from "
            "the provider's prompt cache, billed at the cheaper cache-read price.",
            "percentunit",
            query(token_share("cache_read", "input", "model"), "{{model}}"),
            thresholds=((None, "orange"), (0.2, "green")),
        ),
        ts(
            "Reasoning share of output tokens",
            "reasoning / output tokens per model: the part of the output bill the user never sees.",
            "percentunit",
            query(token_share("reasoning", "output", "model"), "{{model}}"),
        ),
        single(
            "Cached input tokens (range)",
            "Prompt tokens read from cache over the range; each one is "
            "billed at the cache-read price instead of the input price.",
            "short",
            token_count("cache_read"),
            graph=False,
        ),
        single(
            "Unpriced requests (range)",
            "Requests no price covers: their cost is missing, not zero. Add the model to the price file.",
            "short",
            or_zero(increase_sum(mt.UNPRICED_REQUESTS)),
            NONZERO_BAD,
            graph=False,
        ),
        single(
            "Usage missing (range)",
            "Successful responses that carried no usage report: their tokens and cost are not counted.",
            "short",
            or_zero(increase_sum(mt.USAGE_MISSING)),
            NONZERO_BAD,
            graph=False,
        ),
        single(
            "Estimated tokens (range)",
            "Output tokens the proxy estimated for streams without usage; kept apart from reported counts.",
            "short",
            or_zero(increase_sum(mt.ESTIMATED_TOKENS)),
            NONZERO_BAD,
            graph=False,
        ),
    ]


def health() -> list[Panel]:
    """Whether the proxy itself is healthy: replicas, in flight, overhead, failures."""
    return [
        single(
            "Replicas reporting",
            "llmobs processes Prometheus currently scrapes in the selected jobs and instances (one build_info "
            "series each).",
            "short",
            count(mt.BUILD_INFO),
            ((None, "red"), (1, "green")),
            (6, 4),
            graph=False,
        ),
        single(
            "In flight",
            "Requests the proxy is relaying right now, summed over the selected replicas.",
            "short",
            gauge_sum(mt.REQUESTS_IN_FLIGHT),
            size=(6, 4),
        ),
        single(
            "Telemetry errors (range)",
            "Failures inside accounting or sinks. Traffic is unaffected, but metrics may be incomplete.",
            "short",
            or_zero(increase_sum(mt.TELEMETRY_ERRORS)),
            ((None, "green"), (1, "red")),
            (6, 4),
            graph=False,
        ),
        single(
            "Proxy overhead p99",
            "99th percentile of time spent inside the proxy itself, neither waiting on the client nor the upstream.",
            "s",
            quantile(0.99, mt.PROXY_OVERHEAD),
            ((None, "green"), (0.005, "yellow"), (0.05, "red")),
            (6, 4),
        ),
        ts(
            "Proxy overhead",
            "Median and 99th percentile time spent in the proxy itself, not waiting on the client or the upstream.",
            "s",
            query(quantile(0.5, mt.PROXY_OVERHEAD), "p50"),
            query(quantile(0.99, mt.PROXY_OVERHEAD), "p99"),
            thresholds=((None, "green"), (0.05, "red")),
            size=(8, 8),
        ),
        ts(
            "In flight by endpoint",
            "Concurrent requests per endpoint; a climb with flat traffic means a slow upstream.",
            "short",
            query(gauge_sum(mt.REQUESTS_IN_FLIGHT, "endpoint"), "{{endpoint}}"),
            size=(8, 8),
        ),
        ts(
            "Failed requests by outcome",
            "Requests that did not complete, by outcome and HTTP status "
            "(502 unreachable, 504 timeout, upstream 4xx/5xx, client_closed).",
            "reqps",
            query(rate_sum(mt.REQUESTS, "outcome, status_code", 'outcome!="completed"'), "{{outcome}} {{status_code}}"),
            size=(8, 8),
        ),
        ts(
            "Telemetry errors / s by component",
            "Failures inside telemetry per component (accounting, pricing, sinks, dropped spans); should stay at zero.",
            "cps",
            query(rate_sum(mt.TELEMETRY_ERRORS, "component"), "{{component}}"),
            thresholds=((None, "green"), (0.001, "red")),
            size=(24, 6),
        ),
        ts(
            "Unread responses / s by endpoint and reason",
            "Responses relayed to the client but not read for accounting, so their usage and cost are missing: "
            "undecodable_body (corrupt or bomb-sized compression), body_too_large (max_body_bytes, or the "
            "buffered-bytes budget), event_too_large (one SSE event over max_event_bytes).",
            "reqps",
            query(else_zero(rate_sum(mt.UNREAD_RESPONSES, "endpoint, reason")), "{{endpoint}} {{reason}}"),
            thresholds=((None, "green"), (0.001, "orange")),
            size=(12, 6),
        ),
        ts(
            "Label overflow / s by metric",
            "Observations recorded with their model, tenant and attribution labels folded into 'other' because "
            "their metric family had used its series budget (max_series_per_metric): sums stay exact, the split "
            "by model or tenant does not.",
            "cps",
            query(else_zero(rate_sum(mt.LABEL_OVERFLOW, "metric")), "{{metric}}"),
            thresholds=((None, "green"), (0.001, "orange")),
            size=(12, 6),
        ),
    ]


def media_row() -> list[Panel]:
    """Images and audio by model, the media endpoints, media token shares."""
    return [
        media.images("model", size=(6, 8)),
        media.audio("model", size=(6, 8)),
        media.media_requests(size=(6, 8)),
        media.token_shares(size=(6, 8)),
    ]


def overview() -> db.Dashboard:
    """Traffic, upstreams, speed, finish reasons, tools, cost, media, Realtime and proxy health: the home dashboard."""
    dash = dashboard(
        OVERVIEW_UID,
        "llmobs / Overview",
        "LLM traffic through llmobs: who, through which upstream, how fast, why it stopped, which tools it "
        "called and how good the answers look, what it costs, "
        "images, audio and Realtime sessions, and whether the proxy is healthy.",
    )
    return with_rows(
        dash,
        [
            ("At a glance", glance()),
            ("Traffic", traffic()),
            ("Providers and upstreams", upstream_panels()),
            ("Rate limits", ratelimit_panels()),
            ("Latency", latency()),
            ("Why generations stop", finish()),
            ("Tools and answer quality", tools.overview_row()),
            ("Cost and caching", spend()),
            ("Media", media_row()),
            ("Realtime and WebSockets", realtime_panels()),
            ("Proxy health", health()),
        ],
    )
