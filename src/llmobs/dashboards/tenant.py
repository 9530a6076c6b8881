"""The tenant dashboard: who spends what, on which models, with how many tokens and errors."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from llmobs.dashboards import media, realtime
from llmobs.dashboards import metrics as mt
from llmobs.dashboards.measures import (
    ERROR_STEPS,
    IO_TOKENS,
    NONZERO_BAD,
    UPSTREAM_FAILED,
    cost,
    cost_per_hour,
    error_ratio,
    failed_requests,
    token_count,
)
from llmobs.dashboards.panels import (
    TENANT_UID,
    TOK_S,
    Column,
    Panel,
    bars,
    dashboard,
    grid,
    query,
    single,
    ts,
    with_rows,
)
from llmobs.dashboards.promql import RANGE, gauge_max, increase_sum, or_zero, rate_sum, ratio, topk, zero_where

# The budget alerts: LLMBudget80PercentUsed, then LLMBudgetExceeded.
BUDGET_STEPS = ((None, "green"), (0.8, "orange"), (1, "red"))
# A budget's rolling window (deploy/prometheus/rules.yml): each panel shows its own, whatever the range.
BUDGET_WINDOWS = {"day": ("Daily", "24h", "24 hours"), "month": ("Monthly", "30d", "30 days")}
TOKEN_COLUMNS = {"Input": "input", "Output": "output", "Cache read": "cache_read", "Cache write": "cache_write"}


def glance() -> list[Panel]:
    """The selected tenants in six numbers."""
    return [
        single(
            "Spend (range)",
            "Dollars the selected tenants spent over the dashboard range (priced requests only).",
            "currencyUSD",
            cost(),
            graph=False,
        ),
        single(
            "Spend burn ($/h)",
            "Current spending rate of the selection in dollars per hour.",
            "currencyUSD",
            cost_per_hour(),
        ),
        single(
            "Requests / s",
            "Requests per second from the selected tenants, every outcome and status included.",
            "reqps",
            rate_sum(mt.REQUESTS),
        ),
        single(
            "Upstream error ratio",
            "Share of the selected tenants' requests that failed on the upstream side.",
            "percentunit",
            error_ratio(),
            ERROR_STEPS,
        ),
        single(
            "Tokens (range)",
            "Input plus output tokens the upstream reported for the selection over the range.",
            "short",
            increase_sum(mt.TOKENS, "", IO_TOKENS),
            graph=False,
        ),
        single(
            "Unpriced requests (range)",
            "For context: requests of the selected models that no price covers. Their cost is missing from "
            "every spend panel here, and this count cannot be split by tenant.",
            "short",
            or_zero(increase_sum(mt.UNPRICED_REQUESTS)),
            NONZERO_BAD,
            graph=False,
        ),
    ]


def tenants() -> list[Panel]:
    """One row per tenant: spend, requests, failures, tokens."""
    all_requests = increase_sum(mt.REQUESTS, "tenant")
    columns = {
        "Cost ($)": Column(cost("tenant"), "currencyUSD"),
        "Requests": Column(all_requests),
        "Upstream failures": Column(zero_where(failed_requests("tenant"), all_requests)),
        "Error ratio": Column(error_ratio("tenant", RANGE), "percentunit"),
        "Input tokens": Column(token_count("input", "tenant")),
        "Output tokens": Column(token_count("output", "tenant")),
    }
    return [
        grid(
            "Tenants (range)",
            "Spend, requests, upstream failures and reported tokens per tenant over the dashboard range, "
            "most expensive first. Click a row to narrow this dashboard to that tenant.",
            "short",
            columns,
            "tenant",
        ),
    ]


def spend() -> list[Panel]:
    """Spend per tenant over time and over the range."""
    return [
        ts(
            "Spend burn by tenant ($/h)",
            "Dollars per hour per tenant over time: when a tenant's spending took off.",
            "currencyUSD",
            query(cost_per_hour("tenant"), "{{tenant}}"),
            stacked=True,
        ),
        bars(
            "Spend by tenant (range)",
            "Dollars per tenant over the dashboard range, top 10.",
            "currencyUSD",
            topk(10, cost("tenant")),
            "{{tenant}}",
            size=(12, 8),
        ),
    ]


def budget_used(period: str) -> Panel:
    """Spend over the period's rolling window as a share of each tenant's budget for it."""
    name, window, words = BUDGET_WINDOWS[period]
    used = ratio(cost("tenant"), gauge_max(mt.BUDGET_USD, "tenant", f'period="{period}"'))
    return bars(
        f"{name} budget used (last {words})",
        f"Dollars each tenant spent over the last {words} (this panel's own time range, the rolling window "
        f"of the budget alerts) as a share of its {name.lower()} budget from the budget file: 80% raises "
        "LLMBudget80PercentUsed, 100% LLMBudgetExceeded. Tenants without a budget are not shown. llmobs only "
        "observes: nothing is blocked.",
        "percentunit",
        used,
        "{{tenant}}",
        BUDGET_STEPS,
        size=(12, 8),
    ).time_from(window)


def budgets() -> list[Panel]:
    """Spend against the budget file, per tenant and period."""
    return [budget_used("day"), budget_used("month")]


def models() -> list[Panel]:
    """Which models each tenant spends on."""
    columns = {
        "Cost ($)": Column(cost("tenant, model"), "currencyUSD"),
        "Requests": Column(increase_sum(mt.REQUESTS, "tenant, model")),
        "Input tokens": Column(token_count("input", "tenant, model")),
        "Output tokens": Column(token_count("output", "tenant, model")),
    }
    return [
        grid(
            "Top models per tenant (range)",
            "Each tenant's models by spend over the dashboard range, with their requests and reported "
            "tokens. Click a row to open the model drill-down or the tenant.",
            "short",
            columns,
            "tenant, model",
            size=(16, 8),
        ),
        bars(
            "Spend by model (range)",
            "Dollars per model over the dashboard range for the selected tenants, top 10. Click a bar to open "
            "the model drill-down.",
            "currencyUSD",
            topk(10, cost("model")),
            "{{model}}",
        ),
    ]


def tokens() -> list[Panel]:
    """Tokens per tenant by type."""
    columns = {name: Column(token_count(kind, "tenant")) for name, kind in TOKEN_COLUMNS.items()}
    columns["Reasoning"] = Column(token_count("reasoning", "tenant"))
    return [
        ts(
            "Tokens / s per tenant by type",
            "Reported token throughput per tenant and token type. cache_*, input_audio and input_image are "
            "part of input; reasoning, output_audio and output_image part of output: do not add them up.",
            TOK_S,
            query(rate_sum(mt.TOKENS, "tenant, type"), "{{tenant}} {{type}}"),
        ),
        grid(
            "Tokens per tenant by type (range)",
            "Reported tokens per tenant and type over the dashboard range, by input tokens. A type the upstream "
            "never reported is empty, not zero.",
            "short",
            columns,
            "tenant",
            size=(12, 8),
        ),
    ]


def errors() -> list[Panel]:
    """Requests and upstream errors per tenant."""
    return [
        ts(
            "Requests / s by tenant",
            "Request rate per tenant, every outcome included. Click a series to narrow this dashboard to it.",
            "reqps",
            query(rate_sum(mt.REQUESTS, "tenant"), "{{tenant}}"),
            stacked=True,
            size=(8, 8),
        ),
        ts(
            "Upstream error ratio by tenant",
            "Share of each tenant's requests that failed on the upstream side (HTTP errors, unreachable, "
            "timeouts, broken streams).",
            "percentunit",
            query(error_ratio("tenant"), "{{tenant}}"),
            thresholds=ERROR_STEPS,
            size=(8, 8),
        ),
        ts(
            "Failed requests / s by tenant and outcome",
            "Requests that failed upstream, per tenant, outcome and the HTTP status the client saw.",
            "reqps",
            query(
                rate_sum(mt.REQUESTS, "tenant, outcome, status_code", UPSTREAM_FAILED),
                "{{tenant}} {{outcome}} {{status_code}}",
            ),
            size=(8, 8),
        ),
    ]


def media_and_realtime() -> list[Panel]:
    """Images, audio seconds and Realtime responses per tenant, and media totals per tenant."""
    return [
        media.images("tenant"),
        media.audio("tenant"),
        realtime.responses("tenant", size=(8, 8)),
        media.per_tenant(),
    ]


def tenant_dashboard() -> db.Dashboard:
    """Spend, top models, tokens and errors per tenant."""
    dash = dashboard(
        TENANT_UID,
        "llmobs / Tenants",
        "Per-tenant cost: spend over the range and per hour, each tenant's top models, tokens by type, "
        "images, audio and Realtime responses, requests and upstream errors.",
    )
    return with_rows(
        dash,
        [
            ("At a glance", glance()),
            ("Tenants", tenants()),
            ("Spend", spend()),
            ("Budgets", budgets()),
            ("Top models", models()),
            ("Tokens", tokens()),
            ("Media and Realtime", media_and_realtime()),
            ("Requests and errors", errors()),
        ],
    )
