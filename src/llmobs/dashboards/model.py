"""The model drill-down: one model (or a few) in depth: latency, tokens, finish reasons, tools and answer quality,
media, Realtime, cost."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from llmobs.dashboards import media, ratelimits, realtime, tools
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
    percentiles,
    token_count,
    token_share,
)
from llmobs.dashboards.panels import (
    MODEL_UID,
    TOK_S,
    Column,
    Panel,
    dashboard,
    grid,
    heat,
    query,
    single,
    ts,
    with_rows,
)
from llmobs.dashboards.promql import RANGE, increase_sum, or_zero, quantile, rate_sum

P3 = (0.5, 0.95, 0.99)


def glance() -> list[Panel]:
    """The selection in six numbers."""
    return [
        single(
            "Requests / s",
            "Requests per second for the selected models, every outcome and status included.",
            "reqps",
            rate_sum(mt.REQUESTS),
        ),
        single(
            "Upstream error ratio",
            "Share of the selection's requests that failed on the upstream side (HTTP errors, unreachable, "
            "timeouts, broken streams).",
            "percentunit",
            error_ratio(),
            ERROR_STEPS,
        ),
        single(
            "TTFT p95",
            "95th percentile time to the first streamed token for the selection.",
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
            "Dollars spent on the selection over the dashboard range (priced requests only).",
            "currencyUSD",
            cost(),
            graph=False,
        ),
        single(
            "Cache-hit ratio (range)",
            "cache_read / input tokens over the range: the share of prompt tokens served from the prompt cache.",
            "percentunit",
            token_share("cache_read", "input", window=RANGE),
            graph=False,
        ),
    ]


def traffic() -> list[Panel]:
    """Requests by endpoint and stream, and by outcome."""
    return [
        ts(
            "Requests / s by endpoint and stream",
            "Request rate split by API endpoint and streaming mode.",
            "reqps",
            query(rate_sum(mt.REQUESTS, "endpoint, stream"), "{{endpoint}} stream={{stream}}"),
            stacked=True,
        ),
        ts(
            "Requests / s by outcome and status",
            "Completed versus failed requests, with the HTTP status the client saw.",
            "reqps",
            query(rate_sum(mt.REQUESTS, "outcome, status_code"), "{{outcome}} {{status_code}}"),
            stacked=True,
        ),
    ]


def latency() -> list[Panel]:
    """Duration, TTFT, time per token and reasoning percentiles and spreads."""
    return [
        ts(
            "Request duration",
            "Percentiles of the full request duration, first request byte to last response byte. "
            "Exemplars link to traces.",
            "s",
            *percentiles(mt.REQUEST_DURATION, P3, exemplar=True),
        ),
        ts(
            "Time to first token",
            "Percentiles of the time to the first streamed token. Exemplars link to traces.",
            "s",
            *percentiles(mt.TIME_TO_FIRST_TOKEN, P3, exemplar=True),
            thresholds=TTFT_STEPS,
        ),
        heat(
            "Time to first token distribution",
            "TTFT spread for the selection (streams per bucket), with exemplars.",
            mt.TIME_TO_FIRST_TOKEN,
        ),
        heat(
            "Request duration distribution",
            "Duration spread for the selection (requests per bucket), with exemplars.",
            mt.REQUEST_DURATION,
        ),
        ts(
            "Time per output token",
            "Median and 95th percentile time between output tokens after the first (streams).",
            "s",
            *percentiles(mt.TIME_PER_OUTPUT_TOKEN, (0.5, 0.95)),
            size=(8, 8),
        ),
        ts(
            "Output speed (median)",
            "Tokens per second after the first token: 1 / median time per output token.",
            TOK_S,
            query(f"1 / {quantile(0.5, mt.TIME_PER_OUTPUT_TOKEN)}", "tokens/s"),
            size=(8, 8),
        ),
        ts(
            "Reasoning time",
            "Median and 95th percentile time spent reasoning before the first answer token (streams).",
            "s",
            *percentiles(mt.REASONING_DURATION, (0.5, 0.95)),
            size=(8, 8),
        ),
    ]


def tokens() -> list[Panel]:
    """Token throughput, request sizes, cache and reasoning shares, usage gaps."""
    return [
        ts(
            "Tokens / s by type",
            "Reported token throughput per type; cache_*, input_audio and input_image are part of input, "
            "reasoning, output_audio and output_image part of output: overlapping lines, not stacked.",
            TOK_S,
            query(rate_sum(mt.TOKENS, "type"), "{{type}}"),
            size=(8, 8),
        ),
        ts(
            "Tokens per request",
            "Median and 95th percentile input and output tokens per request, as the upstream reported them.",
            "short",
            *percentiles(mt.REQUEST_TOKENS, (0.5, 0.95), "type"),
            size=(8, 8),
        ),
        ts(
            "Cache-hit and reasoning share",
            "cache_read / input and reasoning / output tokens, per second over the rate window.",
            "percentunit",
            query(token_share("cache_read", "input"), "cache hit"),
            query(token_share("reasoning", "output"), "reasoning share"),
            size=(8, 8),
        ),
        ts(
            "Usage gaps",
            "Responses without a usage report, and output tokens estimated for them (kept apart from reported counts).",
            "cps",
            query(or_zero(rate_sum(mt.USAGE_MISSING)), "usage missing / s"),
            query(or_zero(rate_sum(mt.ESTIMATED_TOKENS)), "estimated tokens / s"),
            thresholds=((None, "green"), (0.001, "orange")),
            size=(24, 6),
        ),
    ]


def finish() -> list[Panel]:
    """Finish reasons and their shares."""
    return [
        ts(
            "Finish reasons / s",
            "Why choices stopped, one count per choice, per second.",
            "cps",
            query(rate_sum(mt.FINISH_REASONS, "reason"), "{{reason}}"),
            stacked=True,
        ),
        ts(
            "Truncation, filter and tool-call ratios",
            "Share of choices stopped by length (truncated), content_filter (blocked) or tool_calls.",
            "percentunit",
            query(finish_share("length"), "length"),
            query(finish_share("content_filter"), "content_filter"),
            query(finish_share("tool_calls"), "tool_calls"),
            thresholds=RATIO_STEPS,
        ),
    ]


def by_tenant() -> list[Panel]:
    """Who spends on the selected models."""
    columns = {
        "Requests": Column(increase_sum(mt.REQUESTS, "tenant")),
        "Input tokens": Column(token_count("input", "tenant")),
        "Output tokens": Column(token_count("output", "tenant")),
        "Cost ($)": Column(cost("tenant"), "currencyUSD"),
    }
    return [
        ts(
            "Cost burn by tenant ($/h)",
            "Dollars per hour per tenant for the selected models. Click a series to open the tenant dashboard.",
            "currencyUSD",
            query(cost_per_hour("tenant"), "{{tenant}}"),
            stacked=True,
            size=(16, 8),
        ),
        single(
            "Unpriced requests (range)",
            "Requests of the selected models that no price covers: their cost is missing from the panels here.",
            "short",
            or_zero(increase_sum(mt.UNPRICED_REQUESTS)),
            NONZERO_BAD,
            size=(8, 8),
            graph=False,
        ),
        grid(
            "Per tenant (range)",
            "Requests, reported tokens and dollars per tenant over the dashboard range. Click a row to open "
            "the tenant dashboard.",
            "short",
            columns,
            "tenant",
        ),
    ]


def media_and_realtime() -> list[Panel]:
    """Images and audio by endpoint, media token shares, Realtime responses and their TTFT."""
    return [
        media.images("endpoint", size=(6, 8)),
        media.audio("endpoint", size=(6, 8)),
        media.token_shares(size=(12, 8)),
        realtime.responses("outcome", size=(12, 8)),
        realtime.ttft(size=(12, 8)),
    ]


def model_drilldown() -> db.Dashboard:
    """One model (or a few) in depth, filtered by job, instance, upstream, endpoint, model and tenant."""
    dash = dashboard(
        MODEL_UID,
        "llmobs / Model drill-down",
        "One model in depth: latency percentiles and distributions, tokens, finish reasons, tool calls and "
        "answer quality, images, audio, Realtime responses and cost.",
    )
    return with_rows(
        dash,
        [
            ("At a glance", glance()),
            ("Traffic", traffic()),
            ("Rate limits", ratelimits.ratelimit_panels()),
            ("Latency", latency()),
            ("Tokens", tokens()),
            ("Why generations stop", finish()),
            ("Tools and answer quality", tools.model_row()),
            ("Media and Realtime", media_and_realtime()),
            ("Cost by tenant", by_tenant()),
        ],
    )
