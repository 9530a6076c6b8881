"""The process's own metrics (process_*, python_gc_*, python_info), as prometheus_client exposes them.

One process: its standard collectors on the registry. Several workers (multiprocess mode): those
collectors cannot be merged across processes, so each worker copies their values into gauges
whose files carry its pid (multiprocess mode `all`), refreshed by `refresh()` every few seconds:
/metrics then shows every worker's process metrics, each with a `pid` label.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge, GCCollector, PlatformCollector, ProcessCollector


class ProcessMetrics:
    """Registers the process collectors, or mirrors them per worker in multiprocess mode."""

    def __init__(self, registry: CollectorRegistry, *, multiprocess: bool) -> None:
        self.multiprocess = multiprocess
        self._sources: list[Any] = []
        self._gauges: dict[str, Gauge] = {}
        if not multiprocess:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
            return
        scratch = CollectorRegistry()  # registered nowhere that is exposed: read by hand below
        self._sources = [ProcessCollector(registry=scratch), GCCollector(registry=scratch)]
        self.refresh()

    def refresh(self) -> None:
        """Copy this worker's current values into its gauges (multiprocess mode only)."""
        for source in self._sources:
            for family in source.collect():
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    gauge = self._gauges.get(sample.name)
                    if gauge is None:
                        gauge = self._gauges[sample.name] = Gauge(
                            sample.name, family.documentation, sorted(sample.labels), registry=None,
                            multiprocess_mode="all",
                        )  # fmt: skip
                    target = gauge.labels(**sample.labels) if sample.labels else gauge
                    target.set(sample.value)
