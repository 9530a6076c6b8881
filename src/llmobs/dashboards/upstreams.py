"""Panels about the upstreams behind one proxy (routes): traffic, errors and spend by upstream and provider."""

from __future__ import annotations

from llmobs.dashboards import metrics as mt
from llmobs.dashboards.measures import ERROR_STEPS, cost, cost_per_hour, error_ratio
from llmobs.dashboards.panels import Column, Panel, grid, query, ts
from llmobs.dashboards.promql import increase_sum, joined, named_empty, rate_sum

DEFAULT = "(default)"  # how panels show the default upstream, whose `upstream` label is empty
LEGEND = "{{upstream}} {{provider}}"


def named(expr: str, info: str = "provider") -> str:
    """`expr`, aggregated by upstream, with the upstream's `info` labels and the default named."""
    return named_empty(joined(expr, mt.UPSTREAM_INFO, "upstream", info), "upstream", DEFAULT)


def upstream_panels() -> list[Panel]:
    """Requests, upstream errors and $/h per upstream, and the table of upstreams."""
    note = f"The default upstream (no route prefix) shows as {DEFAULT}; the provider comes from llmobs_upstream_info."
    return [
        ts(
            "Requests / s by upstream",
            f"Request rate per upstream (route prefix) with its provider, every outcome included. {note}",
            "reqps",
            query(named(rate_sum(mt.REQUESTS, "upstream")), LEGEND),
            stacked=True,
            size=(8, 8),
        ),
        ts(
            "Upstream error ratio by upstream",
            "Share of each upstream's requests that failed on the upstream side (HTTP errors, unreachable, "
            f"timeouts, broken streams): which provider is having a bad day. {note}",
            "percentunit",
            query(named(error_ratio("upstream")), LEGEND),
            thresholds=ERROR_STEPS,
            size=(8, 8),
        ),
        ts(
            "Cost burn by upstream ($/h)",
            f"Spending rate per upstream and provider in dollars per hour, priced requests only. {note}",
            "currencyUSD",
            query(named(cost_per_hour("upstream")), LEGEND),
            stacked=True,
            size=(8, 8),
        ),
        grid(
            "Upstreams (range)",
            "Each upstream that had traffic over the range, with its provider and host (from "
            "llmobs_upstream_info): requests and dollars, most requests first. The default upstream (no "
            f"route prefix) shows as {DEFAULT}.",
            "short",
            {
                "Requests": Column(named(increase_sum(mt.REQUESTS, "upstream"), "provider, host")),
                "Cost ($)": Column(named(cost("upstream"), "provider, host"), "currencyUSD"),
            },
            "upstream, provider, host",
            size=(24, 6),
        ),
    ]
