"""Grafana dashboards as code, built with grafana-foundation-sdk from the metric-name constants."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, heatmap, piechart, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import piechart as pcm
from grafana_foundation_sdk.models import prometheus as pm

from llmobs.telemetry import names as n

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["llmobs"]
OVERVIEW_UID = "llmobs-overview"
MODEL_UID = "llmobs-model"
# Outcomes that mean the upstream side failed (the `outcome` label; see llmobs.records.Outcome).
UPSTREAM_FAILED = 'outcome=~"upstream_error|upstream_unreachable|upstream_timeout|stream_interrupted"'
RATE = "$__rate_interval"
RANGE = "$__range"

Panel = Any  # a grafana-foundation-sdk panel builder; the SDK has no common base for them


# --- PromQL ---------------------------------------------------------------------------------


def counter(name: str) -> str:
    """The exposed series of a counter."""
    return n.total(name)


def bucket(name: str) -> str:
    """The bucket series of a histogram."""
    return name + "_bucket"


HISTOGRAMS = (
    n.REQUEST_DURATION,
    n.TIME_TO_FIRST_TOKEN,
    n.TIME_PER_OUTPUT_TOKEN,
    n.REASONING_DURATION,
    n.REQUEST_TOKENS,
    n.PROXY_OVERHEAD,
)
GAUGES = (n.REQUESTS_IN_FLIGHT, n.BUILD_INFO)
COUNTERS = (
    n.REQUESTS,
    n.TOKENS,
    n.ESTIMATED_TOKENS,
    n.FINISH_REASONS,
    n.COST_USD,
    n.UNPRICED_REQUESTS,
    n.USAGE_MISSING,
    n.TELEMETRY_ERRORS,
)


def known_series() -> frozenset[str]:
    """Every series name llmobs exposes, as PromQL sees it (counters with _total, histogram parts)."""
    return frozenset(
        [counter(c) for c in COUNTERS]
        + list(GAUGES)
        + [h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")]
    )


def sel(series: str, matchers: str = "") -> str:
    """`series{matchers}`, with no braces when there is nothing to match."""
    return f"{series}{{{matchers}}}" if matchers else series


def join(*matchers: str) -> str:
    """Matchers joined with commas, empty ones dropped."""
    return ", ".join(m for m in matchers if m)


def rate_sum(series: str, by: str = "", matchers: str = "", window: str = RATE) -> str:
    """`sum by (by) (rate(series{matchers}[window]))`."""
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}(rate({sel(series, matchers)}[{window}]))"


def increase_sum(series: str, by: str = "", matchers: str = "", window: str = RANGE) -> str:
    """`sum by (by) (increase(series{matchers}[window]))`."""
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}(increase({sel(series, matchers)}[{window}]))"


def quantile(q: float, histogram: str, by: str = "", matchers: str = "") -> str:
    """A quantile over buckets summed across instances and the labels not in `by`."""
    keep = join("le", by)
    return f"histogram_quantile({q}, {rate_sum(bucket(histogram), keep, matchers)})"


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator} / {denominator}"


def tokens(token_type: str, by: str = "", matchers: str = "", window: str = RATE) -> str:
    return rate_sum(counter(n.TOKENS), by, join(f'type="{token_type}"', matchers), window)


def finish_ratio(reason: str, by: str = "", matchers: str = "") -> str:
    series = counter(n.FINISH_REASONS)
    return ratio(rate_sum(series, by, join(f'reason="{reason}"', matchers)), rate_sum(series, by, matchers))


# --- panels ---------------------------------------------------------------------------------


def query(
    expr: str, legend: str = "", *, instant: bool = False, exemplar: bool = False, fmt: pm.PromQueryFormat | None = None
) -> prom.Dataquery:
    """One Prometheus target."""
    q = prom.Dataquery().expr(expr).legend_format(legend or "__auto")
    q = q.instant() if instant else q.range()
    if exemplar:
        q = q.exemplar(True)
    if fmt is not None:
        q = q.format(fmt)
    return q


def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (from -infinity)."""
    return (
        db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps([dm.Threshold(value=v, color=c) for v, c in pairs])
    )


NEUTRAL = ((None, "green"),)


def decorate(
    panel: Panel,
    title: str,
    description: str,
    unit: str,
    targets: list[prom.Dataquery],
    thresholds: tuple[tuple[float | None, str], ...],
    size: tuple[int, int],
) -> Panel:
    """What every panel carries: title, description, unit, thresholds, datasource, targets."""
    for i, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + i)))
    return (
        panel.title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .thresholds(steps(*thresholds))
        .span(size[0])
        .height(size[1])
    )


def ts(
    title: str,
    description: str,
    unit: str,
    *targets: prom.Dataquery,
    thresholds: tuple[tuple[float | None, str], ...] = NEUTRAL,
    size: tuple[int, int] = (12, 8),
    stacked: bool = False,
    min_val: float | None = 0,
) -> Panel:
    """A time series panel."""
    panel = (
        timeseries.Panel()
        .fill_opacity(10)
        .line_width(1)
        .show_points(cm.VisibilityMode.NEVER)
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    if stacked:
        panel = panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    if min_val is not None:
        panel = panel.min(min_val)
    if thresholds is not NEUTRAL:
        panel = panel.thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.LINE))
    return decorate(panel, title, description, unit, list(targets), thresholds, size)


def single(
    title: str,
    description: str,
    unit: str,
    expr: str,
    thresholds: tuple[tuple[float | None, str], ...] = NEUTRAL,
    size: tuple[int, int] = (4, 4),
    graph: bool = True,
) -> Panel:
    """A stat panel showing the last value of one expression."""
    panel = (
        stat.Panel()
        .color_mode(cm.BigValueColorMode.VALUE)
        .graph_mode(cm.BigValueGraphMode.AREA if graph else cm.BigValueGraphMode.NONE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    return decorate(panel, title, description, unit, [query(expr, instant=not graph)], thresholds, size)


def bars(
    title: str,
    description: str,
    unit: str,
    expr: str,
    legend: str,
    thresholds: tuple[tuple[float | None, str], ...] = NEUTRAL,
    size: tuple[int, int] = (8, 8),
) -> Panel:
    """A horizontal bar gauge ranking series by their value over the range."""
    panel = (
        bargauge.Panel()
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .min(0)
    )
    return decorate(panel, title, description, unit, [query(expr, legend, instant=True)], thresholds, size)


def pie(title: str, description: str, unit: str, expr: str, legend: str, size: tuple[int, int] = (8, 8)) -> Panel:
    """A donut of shares over the range."""
    panel = (
        piechart.Panel()
        .pie_type(pcm.PieChartType.DONUT)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .legend(
            piechart.PieChartLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.RIGHT)
            .values([pcm.PieChartLegendValues.PERCENT])
        )
    )
    return decorate(panel, title, description, unit, [query(expr, legend, instant=True)], NEUTRAL, size)


def heat(title: str, description: str, histogram: str, matchers: str = "", size: tuple[int, int] = (12, 8)) -> Panel:
    """A latency heatmap from pre-bucketed data, with exemplars (trace links) on top."""
    expr = f"sum by (le) (increase({sel(bucket(histogram), matchers)}[{RATE}]))"
    target = query(expr, "{{le}}", exemplar=True, fmt=pm.PromQueryFormat.HEATMAP)
    panel = (
        heatmap.Panel()
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit("s"))
        .cell_values(heatmap.CellValues().unit("short"))
        .show_legend()
        .show_tooltip()
        .color(
            heatmap.HeatmapColorOptions()
            .mode(hm.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .steps(64)
            .exponent(0.5)
            .fill("dark-orange")
            .reverse(False)
        )
        .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.LE))
    )
    return decorate(panel, title, description, "s", [target], NEUTRAL, size)


def grid(
    title: str, description: str, unit: str, columns: dict[str, str], by: str, size: tuple[int, int] = (24, 8)
) -> Panel:
    """A table: one row per `by` value, one column per instant query, merged."""
    targets = [query(expr, col, instant=True, fmt=pm.PromQueryFormat.TABLE) for col, expr in columns.items()]
    renames = {f"Value #{chr(ord('A') + i)}": col for i, col in enumerate(columns)}
    panel = (
        table.Panel()
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "renameByName": renames,
                },
            )
        )
        .sort_by([cb.TableSortByFieldState().display_name(next(iter(columns))).desc(True)])
    )
    return decorate(panel, title, description, unit, targets, NEUTRAL, size)


def row(title: str) -> db.Row:
    return db.Row(title)


def dashboard(uid: str, title: str, description: str) -> db.Dashboard:
    """The shared frame: tags, time, refresh, a datasource variable, links to the sibling dashboards."""
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .editable()
        .link(
            db.DashboardLink("llmobs")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
        )
        .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )


# --- the overview ---------------------------------------------------------------------------

REQS = counter(n.REQUESTS)
TOKS = counter(n.TOKENS)
COST = counter(n.COST_USD)
FINISH = counter(n.FINISH_REASONS)
IO_TOKENS = 'type=~"input|output"'
TOK_S = "suffix: tok/s"
RATIO_STEPS = ((None, "green"), (0.05, "yellow"), (0.2, "red"))
ERROR_STEPS = ((None, "green"), (0.01, "yellow"), (0.05, "red"))
TTFT_STEPS = ((None, "green"), (2, "yellow"), (5, "red"))  # the TTFT alert fires at 5 s
NONZERO_BAD = ((None, "green"), (1, "orange"))


def error_ratio(matchers: str = "") -> str:
    return ratio(rate_sum(REQS, "", join(UPSTREAM_FAILED, matchers)), rate_sum(REQS, "", matchers))


def per_hour(expr: str) -> str:
    return f"{expr} * 3600"


def or_zero(expr: str) -> str:
    """Counters with labels appear only after their first increment: show 0, not 'No data'."""
    return f"{expr} or vector(0)"


def overview_glance() -> list[Panel]:
    return [
        single("Requests / s", "All requests through the proxy, every model and tenant.", "reqps", rate_sum(REQS)),
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
            quantile(0.95, n.TIME_TO_FIRST_TOKEN),
            TTFT_STEPS,
        ),
        single(
            "Tokens (range)",
            "Input plus output tokens the upstream reported over the dashboard range.",
            "short",
            increase_sum(TOKS, matchers=IO_TOKENS),
            graph=False,
        ),
        single(
            "Cost (range)",
            "Dollars spent over the dashboard range, priced per model. Unpriced requests "
            "are not in here: see 'Unpriced requests'.",
            "currencyUSD",
            increase_sum(COST),
            graph=False,
        ),
        single(
            "Cost burn ($/h)", "Current spending rate in dollars per hour.", "currencyUSD", per_hour(rate_sum(COST))
        ),
    ]


def overview_traffic() -> list[Panel]:
    return [
        ts(
            "Requests / s by model",
            "Request rate per requested model; 'other' collects models past the label budget.",
            "reqps",
            query(rate_sum(REQS, "model"), "{{model}}"),
            stacked=True,
        ),
        ts(
            "Requests / s by tenant",
            "Request rate per tenant (the tenant header, else an API-key "
            "fingerprint). Spot the tenant that drives a spike.",
            "reqps",
            query(rate_sum(REQS, "tenant"), "{{tenant}}"),
            stacked=True,
        ),
        ts(
            "Tokens / s by type",
            "Reported token throughput. cache_read and cache_write are part of input; reasoning is part of output.",
            TOK_S,
            query(rate_sum(TOKS, "type"), "{{type}}"),
        ),
        bars(
            "Top tenants by tokens (range)",
            "Input plus output tokens per tenant over the range: who uses the most.",
            "short",
            f"topk(10, {increase_sum(TOKS, 'tenant', IO_TOKENS)})",
            "{{tenant}}",
        ),
    ]


def overview_latency() -> list[Panel]:
    return [
        ts(
            "Request duration p95 by model",
            "95th percentile of the full request duration, from the request "
            "to the last byte. Click an exemplar to open its trace.",
            "s",
            query(quantile(0.95, n.REQUEST_DURATION, "model"), "{{model}}", exemplar=True),
        ),
        ts(
            "Time to first token p95 by model",
            "95th percentile time to the first streamed token. Click an exemplar to open the trace of a slow request.",
            "s",
            query(quantile(0.95, n.TIME_TO_FIRST_TOKEN, "model"), "{{model}}", exemplar=True),
            thresholds=TTFT_STEPS,
        ),
        heat(
            "Time to first token distribution",
            "How TTFT is spread across streams; dots are exemplars linking to traces.",
            n.TIME_TO_FIRST_TOKEN,
        ),
        heat(
            "Request duration distribution",
            "How request durations are spread; long tails here are usually reasoning models or long generations.",
            n.REQUEST_DURATION,
        ),
        ts(
            "Time per output token p50 by model",
            "Median time between output tokens after the first one "
            "(1 / this = tokens per second). Rising values mean a saturated upstream.",
            "s",
            query(quantile(0.5, n.TIME_PER_OUTPUT_TOKEN, "model"), "{{model}}"),
        ),
        ts(
            "Reasoning time p95 by model",
            "95th percentile time models spend reasoning before the first "
            "answer token (servers that stream reasoning deltas).",
            "s",
            query(quantile(0.95, n.REASONING_DURATION, "model"), "{{model}}"),
        ),
    ]


def overview_finish() -> list[Panel]:
    return [
        pie(
            "Finish reasons (range)",
            "Why generations stopped over the range. 'length' means cut off by max_tokens: the answer is incomplete.",
            "short",
            increase_sum(FINISH, "reason"),
            "{{reason}}",
        ),
        ts(
            "Truncation, filter and tool-call ratios",
            "Share of choices that stopped on length (truncated), "
            "content_filter (blocked) or tool_calls (the model asked for a tool).",
            "percentunit",
            query(finish_ratio("length"), "length"),
            query(finish_ratio("content_filter"), "content_filter"),
            query(finish_ratio("tool_calls"), "tool_calls"),
            thresholds=RATIO_STEPS,
            size=(8, 8),
        ),
        ts(
            "Length truncation ratio by model",
            "Share of choices cut off by max_tokens, per model. A rise usually follows a prompt or max_tokens change.",
            "percentunit",
            query(finish_ratio("length", "model"), "{{model}}"),
            thresholds=RATIO_STEPS,
            size=(8, 8),
        ),
    ]


def overview_cost() -> list[Panel]:
    return [
        ts(
            "Cost burn by model ($/h)",
            "Spending rate per model in dollars per hour.",
            "currencyUSD",
            query(per_hour(rate_sum(COST, "model")), "{{model}}"),
            stacked=True,
        ),
        bars(
            "Cost by tenant (range)",
            "Dollars per tenant over the dashboard range (top 10).",
            "currencyUSD",
            f"topk(10, {increase_sum(COST, 'tenant')})",
            "{{tenant}}",
            size=(12, 8),
        ),
        ts(
            "Cache-hit ratio by model",
            "cache_read / input tokens: the share of prompt tokens served from "
            "the provider's prompt cache, billed at the cheaper cache-read price.",
            "percentunit",
            query(ratio(tokens("cache_read", "model"), tokens("input", "model")), "{{model}}"),
            thresholds=((None, "orange"), (0.2, "green")),
        ),
        ts(
            "Reasoning share of output tokens",
            "reasoning / output tokens per model: the part of the output bill the user never sees.",
            "percentunit",
            query(ratio(tokens("reasoning", "model"), tokens("output", "model")), "{{model}}"),
        ),
        single(
            "Cached input tokens (range)",
            "Prompt tokens read from cache over the range; each one is "
            "billed at the cache-read price instead of the input price.",
            "short",
            increase_sum(TOKS, matchers='type="cache_read"'),
            graph=False,
        ),
        single(
            "Unpriced requests (range)",
            "Requests no price covers: their cost is missing, not zero. Add the model to the price file.",
            "short",
            or_zero(increase_sum(counter(n.UNPRICED_REQUESTS))),
            NONZERO_BAD,
            graph=False,
        ),
        single(
            "Usage missing (range)",
            "Successful responses that carried no usage report: their tokens and cost are not counted.",
            "short",
            or_zero(increase_sum(counter(n.USAGE_MISSING))),
            NONZERO_BAD,
            graph=False,
        ),
        single(
            "Estimated tokens (range)",
            "Output tokens estimated for streams without usage; kept apart from reported counts.",
            "short",
            or_zero(increase_sum(counter(n.ESTIMATED_TOKENS))),
            NONZERO_BAD,
            graph=False,
        ),
    ]


def overview_health() -> list[Panel]:
    return [
        single(
            "Replicas reporting",
            "Proxy processes Prometheus currently scrapes (one build_info series each).",
            "short",
            f"count({n.BUILD_INFO})",
            ((None, "red"), (1, "green")),
            (6, 4),
            graph=False,
        ),
        single(
            "In flight",
            "Requests the proxy is relaying right now, all replicas.",
            "short",
            f"sum({n.REQUESTS_IN_FLIGHT})",
            size=(6, 4),
        ),
        single(
            "Telemetry errors (range)",
            "Failures inside accounting or sinks. Traffic is unaffected, but metrics may be incomplete.",
            "short",
            or_zero(increase_sum(counter(n.TELEMETRY_ERRORS))),
            ((None, "green"), (1, "red")),
            (6, 4),
            graph=False,
        ),
        single(
            "Proxy overhead p99",
            "99th percentile of time spent inside the proxy itself.",
            "s",
            quantile(0.99, n.PROXY_OVERHEAD),
            ((None, "green"), (0.005, "yellow"), (0.05, "red")),
            (6, 4),
        ),
        ts(
            "Proxy overhead",
            "Time spent in the proxy itself, not waiting on the client or the upstream.",
            "s",
            query(quantile(0.5, n.PROXY_OVERHEAD), "p50"),
            query(quantile(0.99, n.PROXY_OVERHEAD), "p99"),
            thresholds=((None, "green"), (0.05, "red")),
            size=(8, 8),
        ),
        ts(
            "In flight by endpoint",
            "Concurrent requests per endpoint; a climb with flat traffic means a slow upstream.",
            "short",
            query(f"sum by (endpoint) ({n.REQUESTS_IN_FLIGHT})", "{{endpoint}}"),
            size=(8, 8),
        ),
        ts(
            "Failed requests by outcome",
            "Requests that did not complete, by outcome and HTTP status "
            "(502 unreachable, 504 timeout, upstream 4xx/5xx, client_closed).",
            "reqps",
            query(rate_sum(REQS, "outcome, status_code", 'outcome!="completed"'), "{{outcome}} {{status_code}}"),
            size=(8, 8),
        ),
        ts(
            "Telemetry errors / s by component",
            "Failures inside telemetry per component; should stay at zero.",
            "short",
            query(rate_sum(counter(n.TELEMETRY_ERRORS), "component"), "{{component}}"),
            thresholds=((None, "green"), (0.001, "red")),
            size=(24, 6),
        ),
    ]


def with_rows(dash: db.Dashboard, sections: list[tuple[str, list[Panel]]]) -> db.Dashboard:
    for title, panels in sections:
        dash = dash.with_row(row(title))
        for panel in panels:
            dash = dash.with_panel(panel)
    return dash


def overview() -> db.Dashboard:
    """Traffic, speed, finish reasons, cost and proxy health at a glance: the home dashboard."""
    dash = dashboard(
        OVERVIEW_UID,
        "llmobs / Overview",
        "LLM traffic through llmobs: who, how fast, why it stopped, what it costs, and whether the proxy is healthy.",
    )
    return with_rows(
        dash,
        [
            ("At a glance", overview_glance()),
            ("Traffic", overview_traffic()),
            ("Latency", overview_latency()),
            ("Why generations stop", overview_finish()),
            ("Cost and caching", overview_cost()),
            ("Proxy health", overview_health()),
        ],
    )


# --- the per-model drill-down ----------------------------------------------------------------

# Each metric carries a subset of (model, endpoint, tenant): filter on what it has.
M = 'model=~"$model", endpoint=~"$endpoint"'
MT = join(M, 'tenant=~"$tenant"')
MC = 'model=~"$model", tenant=~"$tenant"'


def variable(name: str, label: str, query_text: str) -> db.QueryVariable:
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query_text)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )


def model_glance() -> list[Panel]:
    return [
        single("Requests / s", "Request rate for the selection.", "reqps", rate_sum(REQS, "", MT)),
        single(
            "Upstream error ratio",
            "Share of the selection's requests that failed upstream.",
            "percentunit",
            error_ratio(MT),
            ERROR_STEPS,
        ),
        single(
            "TTFT p95",
            "95th percentile time to first token (streams; tenant filter does not apply).",
            "s",
            quantile(0.95, n.TIME_TO_FIRST_TOKEN, "", M),
            TTFT_STEPS,
        ),
        single(
            "Tokens (range)",
            "Input plus output tokens over the range.",
            "short",
            increase_sum(TOKS, "", join(IO_TOKENS, MT)),
            graph=False,
        ),
        single(
            "Cost (range)",
            "Dollars over the range (endpoint filter does not apply).",
            "currencyUSD",
            increase_sum(COST, "", MC),
            graph=False,
        ),
        single(
            "Cache-hit ratio (range)",
            "cache_read / input tokens over the range.",
            "percentunit",
            ratio(tokens("cache_read", "", MT, RANGE), tokens("input", "", MT, RANGE)),
            graph=False,
        ),
    ]


def model_traffic() -> list[Panel]:
    return [
        ts(
            "Requests / s by endpoint and stream",
            "Request rate split by API and streaming mode.",
            "reqps",
            query(rate_sum(REQS, "endpoint, stream", MT), "{{endpoint}} stream={{stream}}"),
            stacked=True,
        ),
        ts(
            "Requests / s by outcome and status",
            "Completed versus failed requests, with the HTTP status the client saw.",
            "reqps",
            query(rate_sum(REQS, "outcome, status_code", MT), "{{outcome}} {{status_code}}"),
            stacked=True,
        ),
    ]


def percentiles(histogram: str, matchers: str, qs: tuple[float, ...], exemplar: bool = False) -> list[prom.Dataquery]:
    return [query(quantile(q, histogram, "", matchers), f"p{round(q * 100)}", exemplar=exemplar) for q in qs]


def model_latency() -> list[Panel]:
    p3 = (0.5, 0.95, 0.99)
    return [
        ts(
            "Request duration",
            "Percentiles of the full request duration. Exemplars link to traces.",
            "s",
            *percentiles(n.REQUEST_DURATION, M, p3, exemplar=True),
        ),
        ts(
            "Time to first token",
            "Percentiles of time to the first streamed token. Exemplars link to traces.",
            "s",
            *percentiles(n.TIME_TO_FIRST_TOKEN, M, p3, exemplar=True),
            thresholds=TTFT_STEPS,
        ),
        heat(
            "Time to first token distribution",
            "TTFT spread for the selection, with exemplars.",
            n.TIME_TO_FIRST_TOKEN,
            M,
        ),
        heat(
            "Request duration distribution", "Duration spread for the selection, with exemplars.", n.REQUEST_DURATION, M
        ),
        ts(
            "Time per output token",
            "Time between output tokens after the first (streams).",
            "s",
            *percentiles(n.TIME_PER_OUTPUT_TOKEN, M, (0.5, 0.95)),
            size=(8, 8),
        ),
        ts(
            "Output speed (median)",
            "Tokens per second after the first token: 1 / median time per output token.",
            TOK_S,
            query(f"1 / {quantile(0.5, n.TIME_PER_OUTPUT_TOKEN, '', M)}", "tokens/s"),
            size=(8, 8),
        ),
        ts(
            "Reasoning time",
            "Time spent reasoning before the first answer token.",
            "s",
            *percentiles(n.REASONING_DURATION, M, (0.5, 0.95)),
            size=(8, 8),
        ),
    ]


def request_size(q: float) -> str:
    return f"histogram_quantile({q}, {rate_sum(bucket(n.REQUEST_TOKENS), 'le, type', M)})"


def model_tokens() -> list[Panel]:
    return [
        ts(
            "Tokens / s by type",
            "Reported token throughput; cache_* are part of input, reasoning part of output.",
            TOK_S,
            query(rate_sum(TOKS, "type", MT), "{{type}}"),
            size=(8, 8),
        ),
        ts(
            "Tokens per request",
            "Median and p95 input and output tokens per request.",
            "short",
            query(request_size(0.5), "p50 {{type}}"),
            query(request_size(0.95), "p95 {{type}}"),
            size=(8, 8),
        ),
        ts(
            "Cache-hit and reasoning share",
            "cache_read / input and reasoning / output tokens.",
            "percentunit",
            query(ratio(tokens("cache_read", "", MT), tokens("input", "", MT)), "cache hit"),
            query(ratio(tokens("reasoning", "", MT), tokens("output", "", MT)), "reasoning share"),
            size=(8, 8),
        ),
        ts(
            "Usage gaps",
            "Responses without a usage report, and output tokens estimated for them (kept apart from reported counts).",
            "short",
            query(or_zero(rate_sum(counter(n.USAGE_MISSING), "", M)), "usage missing / s"),
            query(or_zero(rate_sum(counter(n.ESTIMATED_TOKENS), "", M)), "estimated tokens / s"),
            thresholds=((None, "green"), (0.001, "orange")),
            size=(24, 6),
        ),
    ]


def model_finish() -> list[Panel]:
    return [
        ts(
            "Finish reasons / s",
            "Why choices stopped, per second.",
            "short",
            query(rate_sum(FINISH, "reason", M), "{{reason}}"),
            stacked=True,
        ),
        ts(
            "Truncation, filter and tool-call ratios",
            "Share of choices stopped by length, content_filter or tool_calls.",
            "percentunit",
            query(finish_ratio("length", "", M), "length"),
            query(finish_ratio("content_filter", "", M), "content_filter"),
            query(finish_ratio("tool_calls", "", M), "tool_calls"),
            thresholds=RATIO_STEPS,
        ),
    ]


def model_cost() -> list[Panel]:
    columns = {
        "Requests": increase_sum(REQS, "tenant", MT),
        "Input tokens": increase_sum(TOKS, "tenant", join('type="input"', MT)),
        "Output tokens": increase_sum(TOKS, "tenant", join('type="output"', MT)),
        "Cost ($)": increase_sum(COST, "tenant", MC),
    }
    return [
        ts(
            "Cost burn by tenant ($/h)",
            "Dollars per hour per tenant for the selected models.",
            "currencyUSD",
            query(per_hour(rate_sum(COST, "tenant", MC)), "{{tenant}}"),
            stacked=True,
            size=(16, 8),
        ),
        single(
            "Unpriced requests (range)",
            "Requests of the selected models that no price covers.",
            "short",
            or_zero(increase_sum(counter(n.UNPRICED_REQUESTS), "", 'model=~"$model"')),
            NONZERO_BAD,
            size=(8, 8),
            graph=False,
        ),
        grid(
            "Per tenant (range)",
            "Requests, tokens and dollars per tenant over the dashboard range.",
            "short",
            columns,
            "tenant",
        ),
    ]


def model_drilldown() -> db.Dashboard:
    """One model (or a few) in depth, filtered by model, endpoint and tenant."""
    dash = (
        dashboard(
            MODEL_UID,
            "llmobs / Model drill-down",
            "One model in depth: latency percentiles and "
            "distributions, tokens, finish reasons and cost, filtered by endpoint and tenant.",
        )
        .with_variable(variable("model", "Model", f"label_values({REQS}, model)"))
        .with_variable(variable("endpoint", "Endpoint", f'label_values({REQS}{{model=~"$model"}}, endpoint)'))
        .with_variable(variable("tenant", "Tenant", f'label_values({REQS}{{model=~"$model"}}, tenant)'))
    )
    return with_rows(
        dash,
        [
            ("At a glance", model_glance()),
            ("Traffic", model_traffic()),
            ("Latency", model_latency()),
            ("Tokens", model_tokens()),
            ("Why generations stop", model_finish()),
            ("Cost by tenant", model_cost()),
        ],
    )


# --- serialisation --------------------------------------------------------------------------


def to_json(builder: db.Dashboard) -> dict[str, Any]:
    """The dashboard's JSON model, with stable panel ids assigned in layout order."""
    model: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for i, panel in enumerate(iter_panels(model), start=1):
        panel["id"] = i
    return model


def iter_panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, with the panels nested in collapsed rows."""
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel, as Grafana would send it."""

    dashboard: str
    panel: str
    panel_type: str
    expr: str
    instant: bool


def panel_queries(filename: str, model: dict[str, Any]) -> list[PanelQuery]:
    """Every Prometheus expression of a dashboard."""
    return [
        PanelQuery(filename, p["title"], p["type"], t["expr"], bool(t.get("instant")))
        for p in iter_panels(model)
        if p["type"] != "row"
        for t in p.get("targets", [])
    ]


def build_dashboards() -> dict[str, dict[str, Any]]:
    """Filename -> Grafana JSON model, for every dashboard we ship."""
    return {
        "overview.json": to_json(overview()),
        "model.json": to_json(model_drilldown()),
    }


def render(model: dict[str, Any]) -> str:
    """The committed text of a dashboard: stable key order, trailing newline."""
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def write_dashboards(out_dir: Path | str) -> list[Path]:
    """Write every dashboard as JSON into `out_dir`; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, model in build_dashboards().items():
        path = out_dir / filename
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written
