"""The dashboards: committed JSON is fresh, panels are complete, queries filter exactly right."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from llmobs.dashboards import (
    FILTERS,
    METRICS,
    MODEL_UID,
    OVERVIEW_UID,
    TENANT_UID,
    build_dashboards,
    iter_panels,
    known_series,
    panel_queries,
    render,
    write_dashboards,
)
from llmobs.dashboards.metrics import BY_SERIES, Kind
from llmobs.telemetry import names as n
from llmobs.telemetry.sinks.prometheus import PrometheusSink

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "dashboards"
CURRENT_TYPES = {"timeseries", "stat", "bargauge", "piechart", "barchart", "heatmap", "table", "row"}
DASHBOARDS = build_dashboards()
METRIC = re.compile(r"\bllmobs_[a-z0-9_]+\b")
# A selector as the dashboards write them: a series name, then its matchers if any.
SELECTOR = re.compile(r"\b(llmobs_[a-z0-9_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
DRILLS = {"model": MODEL_UID, "tenant": TENANT_UID}


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in iter_panels(model) if p["type"] != "row"]


def all_panels() -> list[tuple[str, dict[str, Any]]]:
    return [(name, p) for name, model in DASHBOARDS.items() for p in panels(model)]


def all_exprs() -> list[str]:
    return [q.expr for name, model in DASHBOARDS.items() for q in panel_queries(name, model)]


# An info gauge joined only for its labels: `* on (upstream) group_left(provider) <one per upstream>`.
JOINED_INFO = re.compile(r"group_left\([\w, ]+\) topk by \(\w+\) \(1, max by \([\w, ]+\) \([^()]*\)\)")


def selectors(expr: str) -> list[tuple[str, dict[str, list[str]]]]:
    """(series, {label: ['op value', ...]}) for every series an expression reads.

    A label may have two matchers: a filter, and the value a panel is about (`endpoint="realtime"`).
    """
    found = []
    for series, body in SELECTOR.findall(expr):
        matchers: dict[str, list[str]] = {}
        for label, op, value in MATCHER.findall(body):
            matchers.setdefault(label, []).append(f"{op}{value}")
        found.append((series, matchers))
    return found


def unfiltered(panel: dict[str, Any]) -> set[str]:
    """The filters that some selector of a panel does not apply (info gauges joined for labels aside)."""
    return {
        f
        for t in panel["targets"]
        for _, matchers in selectors(JOINED_INFO.sub("", t["expr"]))
        for f in FILTERS
        if f"=~${f}" not in matchers.get(f, [])
    }


def variables(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in model["templating"]["list"]}


PANEL_IDS = [f"{name}:{p['title']}" for name, p in all_panels()]


# --- the committed files -------------------------------------------------------------------


@pytest.mark.parametrize("filename", sorted(DASHBOARDS))
def test_committed_json_equals_freshly_generated(filename: str) -> None:
    committed = COMMITTED / filename
    assert committed.exists(), f"run: llmobs dashboards --out dashboards/ (missing {filename})"
    assert committed.read_text(encoding="utf-8") == render(DASHBOARDS[filename]), (
        f"dashboards/{filename} is stale: run `llmobs dashboards --out dashboards/` and commit it"
    )


def test_no_stray_committed_dashboards() -> None:
    assert {p.name for p in COMMITTED.glob("*.json")} == set(DASHBOARDS)


def test_write_dashboards_writes_every_dashboard(tmp_path: Path) -> None:
    written = write_dashboards(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(DASHBOARDS)
    for path in written:
        assert path.read_text(encoding="utf-8") == render(DASHBOARDS[path.name])


def test_overview_model_and_tenant_dashboards_exist_with_their_uids() -> None:
    uids = {name: m["uid"] for name, m in DASHBOARDS.items()}
    assert uids == {"overview.json": OVERVIEW_UID, "model.json": MODEL_UID, "tenant.json": TENANT_UID}


# --- the metric table ----------------------------------------------------------------------


def test_metric_table_matches_the_prometheus_sink() -> None:
    registry = CollectorRegistry()
    PrometheusSink(registry)
    defined = {c._name: (c._type, tuple(c._labelnames)) for c in registry._collector_to_names}  # type: ignore[attr-defined]
    assert {m.name: (m.kind.value, m.labels) for m in METRICS} == defined


def test_metric_table_matches_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(llmobs_\w+)` \| (\w+)[^|]* \| ([^|]+) \|", readme, re.M)
    documented = {series: tuple(labels.replace(",", " ").split()) for series, _, labels in rows}
    table = {(m.name if m.kind is not Kind.COUNTER else m.series): m.labels for m in METRICS}
    assert documented == table


def test_metric_table_covers_every_name_constant() -> None:
    constants = {v for k, v in vars(n).items() if k.isupper() and isinstance(v, str) and v.startswith("llmobs_")}
    assert {m.name for m in METRICS} == constants


def test_every_metric_referenced_is_exposed_by_llmobs() -> None:
    variable_queries = [v.get("query", "") for m in DASHBOARDS.values() for v in m["templating"]["list"]]
    used = {name for text in all_exprs() + variable_queries for name in METRIC.findall(str(text))}
    assert used, "no llmobs metric found in the dashboards"
    assert used <= known_series(), f"not exposed by llmobs: {used - known_series()}"


def test_every_metric_is_on_a_dashboard() -> None:
    text = "\n".join(all_exprs())
    for metric in METRICS:
        assert metric.name in text, f"{metric.name} is on no dashboard"


# --- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", sorted(DASHBOARDS))
def test_every_dashboard_has_datasource_then_the_chained_filter_variables(filename: str) -> None:
    found = variables(DASHBOARDS[filename])
    assert list(found) == ["datasource", *FILTERS]
    assert found["datasource"]["type"] == "datasource"
    for i, name in enumerate(FILTERS):
        variable = found[name]
        assert variable["type"] == "query" and variable["multi"] and variable["includeAll"]
        assert variable["allValue"] == ".*" and variable["current"]["value"] == "$__all"
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
        assert match and match.group(2) == name, variable["query"]
        ((series, matchers),) = selectors(match.group(1))
        metric = BY_SERIES[series]
        # Chained: a variable's values depend on every earlier filter its source metric carries.
        assert matchers == {f: [f"=~${f}"] for f in FILTERS[:i] if metric.has(f)}, variable["query"]


@pytest.mark.parametrize(("filename", "panel"), all_panels(), ids=PANEL_IDS)
def test_every_query_applies_exactly_the_filters_its_metric_carries(filename: str, panel: dict[str, Any]) -> None:
    for target in panel["targets"]:
        found = selectors(target["expr"])
        assert found, target["expr"]
        for series, matchers in found:
            metric = BY_SERIES[series]
            for f in FILTERS:
                applied = f"=~${f}" in matchers.get(f, [])
                assert applied == metric.has(f), f"{series}: filter {f} {'missing' if not applied else 'wrong'}"
            for label, found in matchers.items():
                for matcher in found:
                    assert "$" not in matcher or matcher == f"=~${label}", f"{series}: {label}{matcher}"
                # A second matcher on a filtered label narrows within the filter: a fixed value.
                assert len(found) == 1 or (label in FILTERS and len(found) == 2), f"{series}: {label} {found}"


@pytest.mark.parametrize("filename", sorted(DASHBOARDS))
def test_every_variable_a_query_uses_exists_on_its_dashboard(filename: str) -> None:
    names = set(variables(DASHBOARDS[filename]))
    for q in panel_queries(filename, DASHBOARDS[filename]):
        used = set(re.findall(r"\$(\w+)", q.expr)) - {"__rate_interval", "__range"}
        assert used <= names, f"{q.panel}: {used - names}"


@pytest.mark.parametrize(("filename", "panel"), all_panels(), ids=PANEL_IDS)
def test_a_filter_that_cannot_apply_is_named_in_title_and_description(filename: str, panel: dict[str, Any]) -> None:
    missing = unfiltered(panel)
    title, description = panel["title"], panel["description"]
    assert not missing & {"job", "instance"}, "every series has job and instance"
    if not missing:
        assert "·" not in title and "Not filtered" not in description
        return
    marker = title.split(" · ", 1)[1]
    for f in missing:
        assert f"{f}s" in marker, f"title does not say the {f} filter does not apply"
        assert re.search(rf"Not filtered by [^:]*\b{f}\b", description), description


# --- panels --------------------------------------------------------------------------------


@pytest.mark.parametrize(("filename", "panel"), all_panels(), ids=PANEL_IDS)
def test_every_panel_has_unit_thresholds_queries_and_the_datasource(filename: str, panel: dict[str, Any]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults.get("unit"), "no unit"
    assert defaults.get("thresholds", {}).get("steps"), "no thresholds"
    assert panel["targets"], "no query"
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize(("filename", "panel"), all_panels(), ids=PANEL_IDS)
def test_every_panel_description_says_what_it_means_its_unit_and_its_source(
    filename: str, panel: dict[str, Any]
) -> None:
    description = panel.get("description", "")
    meaning = description.split("\n\n", 1)[0]
    assert len(meaning.split()) >= 8, f"trivial description: {meaning!r}"
    assert meaning.rstrip(".") not in panel["title"], "the description only repeats the title"
    assert "**Unit:**" in description and "**Source:**" in description and "**Filters:**" in description
    for series in {s for t in panel["targets"] for s, _ in selectors(t["expr"])}:
        assert f"`{BY_SERIES[series].series}`" in description, f"{series} not named as a source"


def test_no_deprecated_panel_types() -> None:
    types = {p["type"] for model in DASHBOARDS.values() for p in iter_panels(model)}
    assert types <= CURRENT_TYPES, f"deprecated or unknown panel types: {types - CURRENT_TYPES}"
    assert "heatmap" in types  # latency distributions


@pytest.mark.parametrize("filename", sorted(DASHBOARDS))
def test_panel_ids_unique_and_grid_fits(filename: str) -> None:
    model = DASHBOARDS[filename]
    ids = [p["id"] for p in iter_panels(model)]
    assert len(ids) == len(set(ids))
    for p in iter_panels(model):
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]


# --- PromQL shape --------------------------------------------------------------------------


def test_rate_and_increase_windows_are_grafana_intervals() -> None:
    for expr in all_exprs():
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window in ("$__rate_interval", "$__range"), expr


def test_rate_and_increase_are_taken_before_the_sum_across_instances() -> None:
    for expr in all_exprs():
        for match in re.finditer(r"\b(rate|increase)\(", expr):
            before = expr[: match.start()]
            assert re.search(r"sum(?: by \([\w, ]+\) )?\($", before), expr


def test_histogram_quantile_sums_buckets_by_le() -> None:
    quantiles = [e for e in all_exprs() if "histogram_quantile" in e]
    assert quantiles
    for expr in quantiles:
        assert re.search(r"histogram_quantile\([0-9.]+, sum by \(le[,)]", expr), expr
        assert "_bucket" in expr, expr


@pytest.mark.parametrize("histogram", [n.REQUEST_DURATION, n.TIME_TO_FIRST_TOKEN])
def test_latency_and_ttft_panels_show_exemplars(histogram: str) -> None:
    graphs = [p for _, p in all_panels() if p["type"] in ("timeseries", "heatmap")]
    targets = [t for p in graphs for t in p["targets"] if f"{histogram}_bucket" in t["expr"]]
    assert targets
    for target in targets:
        if not target.get("instant"):
            assert target.get("exemplar") is True, target["expr"]


# --- links ---------------------------------------------------------------------------------


def keyed_by(panel: dict[str, Any]) -> set[str]:
    """The drill labels a panel's series or rows are keyed by (its aggregation keeps them)."""
    keys = set()
    for t in panel["targets"]:
        for grouping in re.findall(r"by \(([\w, ]+)\)", t["expr"]):
            keys |= {label.strip() for label in grouping.split(",")}
    return keys & set(DRILLS)


@pytest.mark.parametrize(("filename", "panel"), all_panels(), ids=PANEL_IDS)
def test_panels_keyed_by_model_or_tenant_link_to_that_dashboard(filename: str, panel: dict[str, Any]) -> None:
    links = panel["fieldConfig"]["defaults"].get("links", [])
    assert {label for label, uid in DRILLS.items() for link in links if f"/d/{uid}?" in link["url"]} == keyed_by(panel)
    field = "__data.fields" if panel["type"] == "table" else "__field.labels"
    for label in keyed_by(panel):
        (link,) = [link for link in links if f"/d/{DRILLS[label]}?" in link["url"]]
        url = link["url"]
        assert f"var-{label}=${{{field}.{label}:percentencode}}" in url
        assert "${__url_time_range}" in url
        for kept in ("datasource", "job", "instance"):
            assert f"${{{kept}:queryparam}}" in url
        assert f"${{{label}:queryparam}}" not in url  # the clicked value replaces the current one


@pytest.mark.parametrize("filename", sorted(DASHBOARDS))
def test_dashboards_link_to_each_other_by_tag_keeping_time_and_variables(filename: str) -> None:
    model = DASHBOARDS[filename]
    assert "llmobs" in model["tags"]
    (link,) = model["links"]
    assert link["type"] == "dashboards" and link["tags"] == ["llmobs"]
    assert link["keepTime"] and link["includeVars"]


# --- what each dashboard answers -----------------------------------------------------------


def dashboard_text(filename: str) -> str:
    return "\n".join(q.expr for q in panel_queries(filename, DASHBOARDS[filename]))


def test_overview_answers_the_five_questions() -> None:
    text = dashboard_text("overview.json")
    for needle in (
        "by (model)",
        "by (tenant)",  # traffic per model and tenant
        n.TIME_TO_FIRST_TOKEN,
        n.TIME_PER_OUTPUT_TOKEN,
        n.REASONING_DURATION,  # speed
        'reason="length"',
        'reason="content_filter"',
        'reason="tool_calls"',  # why it stopped
        "* 3600",
        f"increase({n.total(n.COST_USD)}",
        'type="cache_read"',  # cost and caching
        n.PROXY_OVERHEAD,
        n.REQUESTS_IN_FLIGHT,
        'outcome!="completed"',
        n.TELEMETRY_ERRORS,  # health
    ):
        assert needle in text, needle


def test_overview_shows_upstreams_media_and_realtime() -> None:
    rows = [p["title"] for p in DASHBOARDS["overview.json"]["panels"] if p["type"] == "row"]
    assert {"Providers and upstreams", "Media", "Realtime and WebSockets"} <= set(rows)
    text = dashboard_text("overview.json")
    for needle in (
        "sum by (endpoint) (rate(llmobs_requests_total{",  # the new endpoint values
        "group_left(provider)",  # upstreams named by provider
        f"sum by (model) (rate({n.total(n.IMAGES)}",
        f"sum by (model) (rate({n.total(n.AUDIO_SECONDS)}",
        'type="input_audio"',
        'type="output_image"',
        f"sum by (endpoint) ({n.SESSIONS_OPEN}",
        f"sum by (close_code, outcome) (rate({n.total(n.SESSIONS)}",
        n.SESSION_DURATION + "_bucket",
        f"sum by (direction) (rate({n.total(n.FRAMES)}",
        f"sum by (direction) (rate({n.total(n.FRAME_BYTES)}",
        'endpoint="realtime"',
    ):
        assert needle in text, needle


def test_the_provider_join_takes_one_info_series_per_upstream_across_replicas() -> None:
    # The joins that copy labels from the info gauge (a ratio over a coarser total is no join).
    joins = [e for e in all_exprs() if "group_left" in e and n.UPSTREAM_INFO in e]
    assert joins
    for expr in joins:
        # Every replica exports llmobs_upstream_info: reduced to one series per upstream before
        # group_left, else two replicas make "many-to-many matching not allowed".
        for join in re.findall(r"group_left\([\w, ]+\) (.+?\)\))", expr):
            assert re.match(rf"topk by \(upstream\) \(1, max by \(upstream, [\w, ]+\) \({n.UPSTREAM_INFO}\{{", join), (
                join
            )
        assert " or on (upstream) " in expr, "an upstream without info would vanish"


# Token types that are parts of another (README "Prometheus metrics"): adding them double-counts.
PARTS = {"cache_read", "cache_write", "reasoning", "input_audio", "input_image", "output_audio", "output_image"}


@pytest.mark.parametrize(("filename", "panel"), all_panels(), ids=PANEL_IDS)
def test_no_stacked_or_pie_panel_adds_token_types_that_are_parts_of_others(
    filename: str, panel: dict[str, Any]
) -> None:
    stacked = panel["fieldConfig"]["defaults"].get("custom", {}).get("stacking", {}).get("mode", "none") != "none"
    if not (stacked or panel["type"] == "piechart"):
        return
    for target in panel["targets"]:
        for series, matchers in selectors(target["expr"]):
            if series != n.total(n.TOKENS):
                continue
            by_type = re.search(r"by \([\w, ]*\btype\b", target["expr"])
            types = {t for m in matchers.get("type", []) for t in re.sub(r"^=~?", "", m).split("|")}
            assert not by_type or (types and not types & PARTS), f"{panel['title']}: {target['expr']}"


def test_tenant_dashboard_shows_spend_top_models_tokens_errors_and_unpriced() -> None:
    text = dashboard_text("tenant.json")
    cost, tokens, requests = n.total(n.COST_USD), n.total(n.TOKENS), n.total(n.REQUESTS)
    for pattern in (
        rf"sum by \(tenant\) \(increase\({cost}",  # spend over the range
        rf"sum by \(tenant\) \(rate\({cost}.*\* 3600",  # $/h over time
        rf"sum by \(tenant, model\) \(increase\({cost}",  # top models per tenant
        rf"sum by \(tenant, type\) \(rate\({tokens}",  # tokens per tenant by type
        rf"sum by \(tenant\) \(rate\({requests}.*outcome=~",  # error ratio per tenant
        n.total(n.UNPRICED_REQUESTS),
    ):
        assert re.search(pattern, text), pattern
