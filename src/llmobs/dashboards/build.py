"""Every dashboard we ship, as Grafana JSON: build, list the queries, write the files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from llmobs.dashboards.model import model_drilldown
from llmobs.dashboards.overview import overview
from llmobs.dashboards.tenant import tenant_dashboard


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
        "tenant.json": to_json(tenant_dashboard()),
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
