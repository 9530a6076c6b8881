"""PromQL for the dashboards: filtered selectors, sums over instances, quantiles and ratios.

Every selector applies every dashboard filter whose label its metric carries, and only those:
`selector` decides from the metric table, so no query picks its filters by hand. A panel about
one value of a filtered label (Realtime: `endpoint="realtime"`) adds its matcher to the filter's,
so the filter still narrows it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llmobs.dashboards.metrics import TARGET_LABELS, Metric

RATE = "$__rate_interval"
RANGE = "$__range"
# The filter variables every dashboard has, in the order they chain; each is named after its label.
FILTERS = ("job", "instance", "upstream", "endpoint", "model", "tenant")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"')


def filter_matcher(label: str) -> str:
    """`label=~"$label"`: the matcher of one filter variable (multi-value, All = `.*`)."""
    return f'{label}=~"${label}"'


def ignored_filters(metric: Metric) -> list[str]:
    """The filters that cannot narrow `metric`: it has no such label."""
    return [f for f in FILTERS if not metric.has(f)]


def selector(metric: Metric, *matchers: str, filters: Sequence[str] = FILTERS) -> str:
    """`series{...}`: the filters among `filters` that `metric` carries, then `matchers`.

    A matcher on a filtered label narrows within the filter (both apply), never replaces it.
    """
    for matcher in matchers:
        label = _label_of(matcher)
        if not metric.has(label) or label in TARGET_LABELS:
            raise ValueError(f"{metric.name}: matcher {matcher!r} is on no label of its own")
    parts = [filter_matcher(f) for f in filters if metric.has(f)] + list(matchers)
    return f"{metric.series}{{{', '.join(parts)}}}" if parts else metric.series


def _label_of(matcher: str) -> str:
    found = _MATCHER.match(matcher)
    if found is None:
        raise ValueError(f"not a label matcher: {matcher!r}")
    return found.group(1)


def grouping(metric: Metric, by: str) -> str:
    """` by (a, b) ` for an aggregation, after checking that `metric` has every label of `by`."""
    labels = [label.strip() for label in by.split(",") if label.strip()]
    missing = [label for label in labels if not metric.has(label)]
    if missing:
        raise ValueError(f"{metric.name} has no label {missing}")
    return f" by ({', '.join(labels)}) " if labels else ""


def rate_sum(metric: Metric, by: str = "", *matchers: str, window: str = RATE) -> str:
    """`sum by (by) (rate(series{...}[window]))`: per-second, rate before sum, over every instance."""
    return f"sum{grouping(metric, by)}(rate({selector(metric, *matchers)}[{window}]))"


def increase_sum(metric: Metric, by: str = "", *matchers: str, window: str = RANGE) -> str:
    """`sum by (by) (increase(series{...}[window]))`: the count over the window, every instance."""
    return f"sum{grouping(metric, by)}(increase({selector(metric, *matchers)}[{window}]))"


def gauge_sum(metric: Metric, by: str = "", *matchers: str) -> str:
    """`sum by (by) (gauge{...})` across instances."""
    return f"sum{grouping(metric, by)}({selector(metric, *matchers)})"


def gauge_min(metric: Metric, by: str = "", *matchers: str) -> str:
    """`min by (by) (gauge{...})`: the lowest any instance reports (headroom: the tightest)."""
    return f"min{grouping(metric, by)}({selector(metric, *matchers)})"


def gauge_max(metric: Metric, by: str = "", *matchers: str) -> str:
    """`max by (by) (gauge{...})`: one value for a figure every instance reports alike (a limit, a budget)."""
    return f"max{grouping(metric, by)}({selector(metric, *matchers)})"


def count(metric: Metric, by: str = "", *matchers: str) -> str:
    """How many series of `metric` match (for an info gauge: how many processes export it)."""
    return f"count{grouping(metric, by)}({selector(metric, *matchers)})"


def quantile(q: float, histogram: Metric, by: str = "", *matchers: str) -> str:
    """A quantile over buckets summed across instances and every label not in `by`."""
    keep = ", ".join(["le", *[label.strip() for label in by.split(",") if label.strip()]])
    return f"histogram_quantile({q}, {rate_sum(histogram, keep, *matchers)})"


def ratio(numerator: str, denominator: str) -> str:
    """`numerator / denominator`, absent where either side is."""
    return f"{numerator} / {denominator}"


def ratio_on(part: str, whole: str, on: str = "") -> str:
    """`part / whole` where `whole` has fewer labels: each of its series divides every series of
    `part` with the same `on` labels (calls by tool over all calls; issues by model and issue
    over each model's answers)."""
    return f"{part} / on ({on}) group_left () {whole}"


def zero_where(part: str, whole: str) -> str:
    """`part`, with 0 for every series of `whole` that `part` lacks.

    A labelled counter has no series before its first increment, so a selection with traffic
    but no errors (or truncations, or cache hits) would show 'No data' instead of 0.
    """
    return f"({part} or 0 * {whole})"


def share(part: str, whole: str) -> str:
    """`part / whole`, 0 (not absent) where `whole` has series and `part` has none."""
    return f"{zero_where(part, whole)} / {whole}"


def per_hour(expr: str) -> str:
    """A per-second rate as a per-hour one."""
    return f"{expr} * 3600"


def or_zero(expr: str) -> str:
    """Counters with labels appear only after their first increment: show 0, not 'No data'."""
    return f"{expr} or vector(0)"


def else_zero(expr: str) -> str:
    """`expr`, or one 0 when it has no series at all; unlike `or_zero`, never a 0 beside real series."""
    return f"{expr} or on () vector(0)"


def topk(k: int, expr: str) -> str:
    """The `k` largest series of `expr`."""
    return f"topk({k}, {expr})"


def joined(expr: str, info: Metric, on: str, labels: str) -> str:
    """`expr`, aggregated by `on`, with `labels` copied from the info gauge `info`.

    Every replica exports the info gauge, so it is first reduced to one series per `on` value
    (`max` across replicas; `topk` keeps one where replicas disagree, as mid-rollout) for
    `group_left` to match. A series of `expr` with no info (a route just removed) keeps its value.
    """
    one = f"topk by ({on}) (1, max{grouping(info, f'{on}, {labels}')}({selector(info)}))"
    return f"({expr} * on ({on}) group_left({labels}) {one}) or on ({on}) {expr}"


# The info side of `joined`: it names series, it does not count anything.
_JOINED_INFO = re.compile(r" \* on \(\w+\) group_left\([\w, ]+\) topk by \(\w+\) \(1, max by \([\w, ]+\) \([^()]*\)\)")


def counted(expr: str) -> str:
    """`expr` without the info gauges `joined` copies labels from: what its numbers are made of."""
    return _JOINED_INFO.sub("", expr)


def named_empty(expr: str, label: str, name: str) -> str:
    """`expr` with an empty (absent) `label` shown as `name`: the default upstream has no prefix."""
    return f'label_replace({expr}, "{label}", "{name}", "{label}", "")'
