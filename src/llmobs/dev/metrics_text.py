"""Read Prometheus text exposition back; the reader lives in `llmobs.top.samples`, which the runtime may import."""

from __future__ import annotations

from llmobs.top.samples import Sample, Samples, histogram_quantile, read_metrics

__all__ = ["Sample", "Samples", "histogram_quantile", "read_metrics"]
