"""The process's own metrics (process_*, python_gc_*, python_info), as prometheus_client exposes them.

One process: its standard collectors on the registry. Several workers (multiprocess mode): those
collectors cannot be merged across processes, so each worker copies their values into gauges
whose files carry its pid (multiprocess mode `all`), refreshed by `refresh()` every few seconds:
/metrics then shows every worker's process metrics, each with a `pid` label. `scrape_registry`
is what /metrics exposes: this process's registry, or the sum over every worker's files, less
the gauges of workers that died.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead


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


def scrape_registry(registry: CollectorRegistry, multiproc_dir: str | None) -> Callable[[], CollectorRegistry]:
    """What /metrics exposes: this process's registry, or the sum over every worker's files."""
    if multiproc_dir is None:
        return lambda: registry

    def collect_all() -> CollectorRegistry:
        forget_dead_workers(multiproc_dir)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=multiproc_dir)  # type: ignore[no-untyped-call]
        return merged

    return collect_all


_LIVE_GAUGES = re.compile(r"gauge_live\w+_(\d+)\.db")


def forget_dead_workers(multiproc_dir: str) -> None:
    """Drop the gauges of workers that died (killed, out of memory) before the supervisor replaced them.

    A live gauge (requests and sessions in flight) sums every worker's file: a dead worker's
    would keep its last value for good. Its counters and histograms stay: what it counted happened.
    Its process metrics stay too, under its pid: prometheus_client reads those files unguarded, so
    removing one under a concurrent scrape would fail that scrape.
    """
    for name in os.listdir(multiproc_dir):
        match = _LIVE_GAUGES.fullmatch(name)
        if match is None or _alive(pid := int(match[1])):
            continue
        with contextlib.suppress(FileNotFoundError):  # another scrape may have been first
            mark_process_dead(pid, multiproc_dir)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
