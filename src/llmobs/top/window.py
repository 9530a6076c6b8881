"""The window between two scrapes: how much each counter and histogram grew."""

from __future__ import annotations

from dataclasses import dataclass

from llmobs.top.samples import Sample, Samples

_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")

Key = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Window:
    """Increases over `seconds`; `reset` when some series went back (the proxy restarted)."""

    samples: Samples
    seconds: float
    reset: bool


def window(before: Samples, after: Samples, seconds: float) -> Window:
    """The increase of every counter and histogram series from `before` to `after`.

    A series that went back restarted from zero, so its increase is its new value, as in
    PromQL's `increase()`. A histogram restarts as a whole: when any of its buckets, its count
    or its sum went back, all of them count from zero. A series absent before counts from zero
    too: llmobs creates a series at its first observation.
    """
    old = {_key(s): s.value for s in before.samples if _cumulative(s)}
    new = [s for s in after.samples if _cumulative(s)]
    restarted = {_series(s) for s in new if s.value < old.get(_key(s), 0.0)}
    grown = [
        Sample(s.name, s.labels, s.value if _series(s) in restarted else s.value - old.get(_key(s), 0.0), s.kind)
        for s in new
    ]
    return Window(Samples(grown), seconds, bool(restarted))


def _cumulative(sample: Sample) -> bool:
    return sample.kind in ("counter", "histogram")


def _key(sample: Sample) -> Key:
    return sample.name, tuple(sorted(sample.labels.items()))


def _series(sample: Sample) -> Key:
    """The series a sample belongs to: a histogram's buckets, count and sum are one."""
    if sample.kind != "histogram":
        return _key(sample)
    name = next((sample.name.removesuffix(s) for s in _HISTOGRAM_SUFFIXES if sample.name.endswith(s)), sample.name)
    return name, tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
