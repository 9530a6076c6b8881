"""The Grafana dashboards, built with grafana-foundation-sdk from the metric names in telemetry.names."""

from llmobs.dashboards.build import (
    MODEL_UID,
    OVERVIEW_UID,
    PanelQuery,
    build_dashboards,
    known_series,
    panel_queries,
    write_dashboards,
)

__all__ = [
    "MODEL_UID",
    "OVERVIEW_UID",
    "PanelQuery",
    "build_dashboards",
    "known_series",
    "panel_queries",
    "write_dashboards",
]
