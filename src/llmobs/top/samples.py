"""Read Prometheus text exposition back: sums by label and histogram quantiles."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    """One line of the exposition; `kind` is its family's type (counter, gauge, histogram, ...)."""

    name: str
    labels: dict[str, str]
    value: float
    kind: str = "untyped"


class Samples:
    """All samples of one scrape."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def sum_by(self, name: str, *labels: str) -> dict[tuple[str, ...], float]:
        """Like PromQL `sum by (labels) (name)`."""
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for s in self.samples:
            if s.name == name:
                out[tuple(s.labels.get(label, "") for label in labels)] += s.value
        return dict(out)

    def buckets(self, histogram: str, *labels: str) -> dict[tuple[str, ...], list[tuple[float, float]]]:
        """Summed cumulative buckets `(le, count)` per label set, ascending by le."""
        sums = self.sum_by_le(histogram, *labels)
        grouped: dict[tuple[str, ...], list[tuple[float, float]]] = defaultdict(list)
        for (*key, le), count in sums.items():
            grouped[tuple(key)].append((float(le), count))
        return {key: sorted(value) for key, value in grouped.items()}

    def sum_by_le(self, histogram: str, *labels: str) -> dict[tuple[str, ...], float]:
        """Summed `_bucket` samples per label set and `le`."""
        return self.sum_by(histogram + "_bucket", *labels, "le")


def read_metrics(text: str) -> Samples:
    """Parse a /metrics page."""
    samples = [
        Sample(s.name, dict(s.labels), s.value, family.type)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    return Samples(samples)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """PromQL's histogram_quantile over cumulative `(le, count)` buckets; None without data."""
    if not buckets or buckets[-1][1] == 0 or not math.isinf(buckets[-1][0]):
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # the highest finite bucket bound, as Prometheus does
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return None
