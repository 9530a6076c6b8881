"""Panels about the upstreams' rate limits: headroom, time to reset, and the 429s that say it ran out."""

from __future__ import annotations

from llmobs.dashboards import metrics as mt
from llmobs.dashboards.panels import Panel, Steps, query, ts
from llmobs.dashboards.promql import gauge_max, gauge_min, named_empty, rate_sum, ratio, zero_where
from llmobs.dashboards.upstreams import DEFAULT

Size = tuple[int, int]
BY = "upstream, model, resource"
LEGEND = "{{upstream}} {{model}} {{resource}}"
RATE_LIMITED = 'status_code="429"'
# The LLMRateLimitHeadroomLow alert fires under 10% of the token limit.
HEADROOM_STEPS: Steps = ((None, "red"), (0.1, "orange"), (0.25, "green"))
LATEST = (
    "Figures are what the upstream's latest response for that model said (OpenAI-style x-ratelimit-* or "
    "anthropic-ratelimit-* headers, Realtime rate_limits.updated); a model without traffic keeps its last ones."
)


def headroom(size: Size = (8, 8)) -> Panel:
    """Remaining / limit per upstream, model and resource."""
    remaining = gauge_min(mt.RATELIMIT_REMAINING, BY)
    return ts(
        "Rate-limit headroom by upstream and model",
        "Share of each provider rate limit (requests, tokens, and Anthropic's input and output tokens) still "
        f"left, the tightest any replica saw. Near 0 the next requests get 429. {LATEST} The default upstream "
        f"shows as {DEFAULT}.",
        "percentunit",
        query(named_empty(ratio(remaining, gauge_max(mt.RATELIMIT_LIMIT, BY)), "upstream", DEFAULT), LEGEND),
        thresholds=HEADROOM_STEPS,
        size=size,
    )


def rate_limited(size: Size = (8, 8)) -> Panel:
    """429 answers per second by model; 0 for models with traffic and none."""
    return ts(
        "Rate-limited requests (429) / s by model",
        "Requests the upstream answered with HTTP 429 (rate limit or quota reached), per requested model; 0 "
        "for models with traffic and no 429. SDKs retry 429s, so one user call may count more than once.",
        "reqps",
        query(zero_where(rate_sum(mt.REQUESTS, "model", RATE_LIMITED), rate_sum(mt.REQUESTS, "model")), "{{model}}"),
        thresholds=((None, "green"), (0.001, "orange")),
        size=size,
    )


def reset(size: Size = (8, 8)) -> Panel:
    """Seconds until each limit is whole again."""
    return ts(
        "Rate-limit reset by upstream and model",
        "Seconds until each provider rate limit is back at its full size, the longest any replica saw: how "
        f"long a client that hit it would wait. {LATEST}",
        "s",
        query(named_empty(gauge_max(mt.RATELIMIT_RESET, BY), "upstream", DEFAULT), LEGEND),
        size=size,
    )


def ratelimit_panels() -> list[Panel]:
    """The row the overview and the model drill-down share."""
    return [headroom(), rate_limited(), reset()]
