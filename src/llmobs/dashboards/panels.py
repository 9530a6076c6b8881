"""Panel builders and the shared dashboard frame: filter variables, links, descriptions.

Every panel is finished by `decorate`, which reads the metrics its queries use and so can
say, in the title and the description, which filters do not apply to it, and can add the
drill-down links its series keys (model, tenant) call for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import bargauge, heatmap, piechart, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import piechart as pcm
from grafana_foundation_sdk.models import prometheus as pm

from llmobs.dashboards import metrics as mt
from llmobs.dashboards.metrics import Metric, metrics_in
from llmobs.dashboards.promql import FILTERS, RATE, counted, ignored_filters, increase_sum, selector

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["llmobs"]
OVERVIEW_UID = "llmobs-overview"
MODEL_UID = "llmobs-model"
TENANT_UID = "llmobs-tenant"
TOK_S = "suffix: tok/s"
IMAGES_S = "suffix: images/s"
AUDIO_S = "suffix: audio s/s"
# Grafana unit id -> what the number is, for descriptions. A unit missing here fails the build.
UNITS = {
    "reqps": "requests per second",
    "s": "seconds",
    "percentunit": "a share, shown as a percentage",
    "currencyUSD": "US dollars",
    "short": "a plain count",
    "cps": "events per second",
    "Bps": "bytes per second",
    TOK_S: "tokens per second",
    IMAGES_S: "images per second",
    AUDIO_S: "seconds of audio per second of wall-clock time",
}

Panel = Any  # a grafana-foundation-sdk panel builder; the SDK has no common base for them
Steps = tuple[tuple[float | None, str], ...]
NEUTRAL: Steps = ((None, "green"),)


# --- queries and thresholds -------------------------------------------------------------------


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


# --- drill-down links -------------------------------------------------------------------------


@dataclass(frozen=True)
class Drill:
    """A dashboard that a series keyed by `label` opens, with that value selected."""

    uid: str
    label: str
    name: str


# Series keyed by one of these labels link to the dashboard about that value.
DRILLS = {d.label: d for d in (Drill(MODEL_UID, "model", "Model drill-down"), Drill(TENANT_UID, "tenant", "Tenant"))}


def data_link(drill: Drill, *, table_row: bool) -> db.DashboardLink:
    """A data link to `drill` for the clicked series (or table row), keeping time range and filters."""
    field = f"__data.fields.{drill.label}" if table_row else f"__field.labels.{drill.label}"
    kept = [f"${{{v}:queryparam}}" for v in ("datasource", *FILTERS) if v != drill.label]
    url = f"/d/{drill.uid}?${{__url_time_range}}&{'&'.join(kept)}&var-{drill.label}=${{{field}:percentencode}}"
    return db.DashboardLink(f"{drill.name}: ${{{field}}}").url(url)


def legend(by: str) -> str:
    """`{{a}} {{b}}`: a legend naming a series by the labels of `by` ("a, b")."""
    return " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",") if label.strip())


def legend_keys(targets: Iterable[prom.Dataquery]) -> set[str]:
    """The labels the series of some targets are keyed by, read from their legends."""
    return {key for t in targets for key in re.findall(r"\{\{\s*(\w+)\s*\}\}", t.build().legend_format or "")}


# --- what every panel carries -----------------------------------------------------------------


def filter_note(used: list[Metric]) -> tuple[str, str]:
    """(title suffix, description line) naming the filters that cannot narrow this panel, and why.

    The suffix reads `· all tenants` when no metric of the panel has the label, and
    `· cost: all endpoints` when only some do (a table mixing cost with requests).
    """
    ignored = [f for f in FILTERS if any(not m.has(f) for m in used)]
    if not ignored:
        return "", f"**Filters:** {_and(list(FILTERS))} all apply."
    lacking = {f: [m for m in used if not m.has(f)] for f in ignored}
    whole = [f for f in ignored if len(lacking[f]) == len(used)]
    parts = ["all " + _and([f + "s" for f in whole])] if whole else []
    parts += [f"{_and([m.noun for m in lacking[f]])}: all {f}s" for f in ignored if f not in whole]
    why = " ".join(f"`{m.series}` has no {_and(ignored_filters(m), 'or')} label." for m in used if ignored_filters(m))
    applied = _and([f for f in FILTERS if f not in ignored])
    return " · " + "; ".join(parts), f"**Filters:** {applied} apply. **Not filtered by {_and(ignored)}:** {why}"


def _and(words: list[str], conjunction: str = "and") -> str:
    """`a`, `a and b`, `a, b and c`."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def source_note(used: list[Metric], unit: str, column_units: dict[str, str]) -> str:
    """Where the number comes from and what unit it is in (per column where a table's differ)."""
    units = UNITS[unit] + "".join(f"; {name}: {UNITS[u]}" for name, u in column_units.items())
    sources = "; ".join(f"`{m.series}` ({m.kind.value} of {m.unit}; labels {', '.join(m.labels)})" for m in used)
    return f"**Unit:** {units}. **Source:** {sources}, as Prometheus scraped it from every selected llmobs instance."


def decorate(
    panel: Panel,
    title: str,
    description: str,
    unit: str,
    targets: list[prom.Dataquery],
    thresholds: Steps,
    size: tuple[int, int],
    row_keys: Iterable[str] = (),
    column_units: dict[str, str] | None = None,
) -> Panel:
    """What every panel carries: title, description, unit, thresholds, datasource, targets, links.

    `row_keys` are the labels a table's rows are keyed by; other panels are keyed by their legends.
    """
    exprs = [t.build().expr for t in targets]
    used = metrics_in(exprs)
    # A filter that cannot narrow an info gauge joined for its labels narrows nothing: not noted.
    suffix, filters = filter_note(metrics_in(counted(e) for e in exprs))
    row_keys = set(row_keys)
    keyed = sorted((legend_keys(targets) | row_keys) & set(DRILLS))
    if keyed:
        links = [data_link(DRILLS[k], table_row=bool(row_keys)) for k in keyed]
        panel = panel.data_links(links)
    for i, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + i)))
    return (
        panel.title(title + suffix)
        .description(f"{description}\n\n{source_note(used, unit, column_units or {})}\n\n{filters}")
        .unit(unit)
        .datasource(DATASOURCE)
        .thresholds(steps(*thresholds))
        .span(size[0])
        .height(size[1])
    )


# --- panel kinds ------------------------------------------------------------------------------


def ts(
    title: str,
    description: str,
    unit: str,
    *targets: prom.Dataquery,
    thresholds: Steps = NEUTRAL,
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
    thresholds: Steps = NEUTRAL,
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
    thresholds: Steps = NEUTRAL,
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


def heat(title: str, description: str, histogram: Metric, size: tuple[int, int] = (12, 8)) -> Panel:
    """A latency heatmap from pre-bucketed data, with exemplars (trace links) on top."""
    target = query(increase_sum(histogram, "le", window=RATE), "{{le}}", exemplar=True, fmt=pm.PromQueryFormat.HEATMAP)
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


@dataclass(frozen=True)
class Column:
    """One column of a grid: an instant query per row key, and the column's unit."""

    expr: str
    unit: str = "short"


def grid(
    title: str, description: str, unit: str, columns: dict[str, Column], by: str, size: tuple[int, int] = (24, 8)
) -> Panel:
    """A table: one row per `by` value, one column per instant query, merged, sorted by the first."""
    targets = [query(c.expr, name, instant=True, fmt=pm.PromQueryFormat.TABLE) for name, c in columns.items()]
    renames = {f"Value #{chr(ord('A') + i)}": name for i, name in enumerate(columns)}
    panel = (
        table.Panel()
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize", options={"excludeByName": {"Time": True}, "renameByName": renames}
            )
        )
        .sort_by([cb.TableSortByFieldState().display_name(next(iter(columns))).desc(True)])
    )
    column_units = {name: c.unit for name, c in columns.items() if c.unit != unit}
    for name, column_unit in column_units.items():
        panel = panel.override_by_name(name, [dm.DynamicConfigValue(id_val="unit", value=column_unit)])
    keys = [label.strip() for label in by.split(",")]
    return decorate(panel, title, description, unit, targets, NEUTRAL, size, keys, column_units)


# --- the dashboard frame ----------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    """A filter variable: which metric lists its values, and what a user should know about it."""

    label: str
    title: str
    source: Metric
    note: str


VARIABLES = {
    v.label: v
    for v in (
        Variable("job", "Job", mt.BUILD_INFO, "Prometheus scrape job of the llmobs processes."),
        Variable("instance", "Instance", mt.BUILD_INFO, "One llmobs process (scrape target) of the selected jobs."),
        Variable(
            "upstream",
            "Upstream",
            mt.REQUESTS,
            "Route prefix the request went through (llmobs_upstream_info names its provider and host). The "
            "default upstream has no prefix, so only All includes it. Latency histograms have no upstream "
            "label: panels say so.",
        ),
        Variable("endpoint", "Endpoint", mt.REQUESTS, "API endpoint. Cost has no endpoint label: cost panels say so."),
        Variable("model", "Model", mt.REQUESTS, "Requested model, as the client named it."),
        Variable("tenant", "Tenant", mt.REQUESTS, "Tenant. Latency histograms have no tenant label: panels say so."),
    )
}


def filter_variable(v: Variable) -> db.QueryVariable:
    """A multi-value variable with All, whose values depend on the filters before it."""
    earlier = FILTERS[: FILTERS.index(v.label)]
    return (
        db.QueryVariable(v.label)
        .label(v.title)
        .description(v.note)
        .datasource(DATASOURCE)
        .query(f"label_values({selector(v.source, filters=earlier)}, {v.label})")
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )


def dashboard(uid: str, title: str, description: str) -> db.Dashboard:
    """The shared frame: tags, time, refresh, the datasource and filter variables, sibling links."""
    dash = (
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
            .include_vars(True)
            .keep_time(True)
        )
        .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    for label in FILTERS:
        dash = dash.with_variable(filter_variable(VARIABLES[label]))
    return dash


def with_rows(dash: db.Dashboard, sections: list[tuple[str, list[Panel]]]) -> db.Dashboard:
    """Each section as a row followed by its panels."""
    for title, panels in sections:
        dash = dash.with_row(db.Row(title))
        for panel in panels:
            dash = dash.with_panel(panel)
    return dash
