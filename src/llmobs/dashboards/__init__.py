"""The Grafana dashboards, built with grafana-foundation-sdk from the metric table in `metrics`.

Nothing in the proxy's runtime imports this package.
"""

from llmobs.dashboards.build import (
    PanelQuery,
    build_dashboards,
    iter_panels,
    panel_queries,
    render,
    write_dashboards,
)
from llmobs.dashboards.metrics import METRICS, known_series
from llmobs.dashboards.panels import MODEL_UID, OVERVIEW_UID, TENANT_UID
from llmobs.dashboards.promql import FILTERS

__all__ = [
    "FILTERS",
    "METRICS",
    "MODEL_UID",
    "OVERVIEW_UID",
    "TENANT_UID",
    "PanelQuery",
    "build_dashboards",
    "iter_panels",
    "known_series",
    "panel_queries",
    "render",
    "write_dashboards",
]
