"""The dashboards: committed JSON is fresh, panels are complete, queries use only real metrics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from llmobs.dashboards.build import (
    COUNTERS,
    GAUGES,
    HISTOGRAMS,
    build_dashboards,
    iter_panels,
    known_series,
    panel_queries,
    render,
    write_dashboards,
)
from llmobs.telemetry import names as n

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "dashboards"
CURRENT_TYPES = {"timeseries", "stat", "bargauge", "piechart", "barchart", "heatmap", "table", "row"}
DASHBOARDS = build_dashboards()
METRIC = re.compile(r"\bllmobs_[a-z0-9_]+\b")


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in iter_panels(model) if p["type"] != "row"]


def all_panels() -> list[tuple[str, dict[str, Any]]]:
    return [(name, p) for name, model in DASHBOARDS.items() for p in panels(model)]


def all_exprs() -> list[str]:
    return [q.expr for name, model in DASHBOARDS.items() for q in panel_queries(name, model)]


PANEL_IDS = [f"{name}:{p['title']}" for name, p in all_panels()]


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


def test_overview_and_model_drilldown_exist() -> None:
    assert {"overview.json", "model.json"} <= set(DASHBOARDS)
    uids = [m["uid"] for m in DASHBOARDS.values()]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize(("filename", "panel"), all_panels(), ids=PANEL_IDS)
def test_every_panel_has_unit_description_thresholds_and_queries(filename: str, panel: dict[str, Any]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults.get("unit"), "no unit"
    assert panel.get("description", "").strip(), "no description"
    assert defaults.get("thresholds", {}).get("steps"), "no thresholds"
    assert panel["targets"], "no query"
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_no_deprecated_panel_types() -> None:
    types = {p["type"] for model in DASHBOARDS.values() for p in iter_panels(model)}
    assert types <= CURRENT_TYPES, f"deprecated or unknown panel types: {types - CURRENT_TYPES}"
    assert "heatmap" in types  # latency distributions


def test_every_metric_referenced_is_exposed_by_llmobs() -> None:
    variable_queries = [v.get("query", "") for m in DASHBOARDS.values() for v in m["templating"]["list"]]
    used = {name for text in all_exprs() + variable_queries for name in METRIC.findall(str(text))}
    assert used, "no llmobs metric found in the dashboards"
    assert used <= known_series(), f"not exposed by llmobs: {used - known_series()}"


def test_metric_kinds_cover_every_name_constant() -> None:
    constants = {v for k, v in vars(n).items() if k.isupper() and isinstance(v, str) and v.startswith("llmobs_")}
    assert set(COUNTERS) | set(GAUGES) | set(HISTOGRAMS) == constants


def test_every_metric_name_constant_is_on_a_dashboard() -> None:
    text = "\n".join(all_exprs())
    for name in set(COUNTERS) | set(GAUGES) | set(HISTOGRAMS):
        assert name in text, f"{name} is on no dashboard"


def test_rate_and_increase_windows_are_grafana_intervals() -> None:
    for expr in all_exprs():
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window in ("$__rate_interval", "$__range"), expr


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


def test_model_drilldown_has_datasource_model_endpoint_tenant_variables() -> None:
    variables = {v["name"]: v for v in DASHBOARDS["model.json"]["templating"]["list"]}
    assert set(variables) == {"datasource", "model", "endpoint", "tenant"}
    assert variables["datasource"]["type"] == "datasource"
    for name in ("model", "endpoint", "tenant"):
        assert f"label_values({n.total(n.REQUESTS)}" in variables[name]["query"]
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"


def test_model_drilldown_queries_honour_the_model_variable() -> None:
    for q in panel_queries("model.json", DASHBOARDS["model.json"]):
        assert "$model" in q.expr, f"{q.panel}: {q.expr}"


def test_overview_answers_the_five_questions() -> None:
    text = "\n".join(q.expr for q in panel_queries("overview.json", DASHBOARDS["overview.json"]))
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


@pytest.mark.parametrize("filename", sorted(DASHBOARDS))
def test_panel_ids_unique_and_grid_fits(filename: str) -> None:
    model = DASHBOARDS[filename]
    ids = [p["id"] for p in iter_panels(model)]
    assert len(ids) == len(set(ids))
    for p in iter_panels(model):
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
