"""A bound on the series of one metric family: past it, client-fed labels fold into `other`.

Per-label caps (`LabelGuard`) bound each label on its own, but not their product: 200 models
times 200 tenants is 40,000 series in one family. A `Family` holds at most `budget` label sets;
a new one past that has its client-fed labels (model, tenant, attribution...) replaced by
`other`, so sums stay exact while the series count stays bounded. The folded series may add
at most one series per combination of the labels llmobs itself controls (endpoint, type...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from llmobs.telemetry.names import OTHER

log = logging.getLogger("llmobs")


class Family:
    """The label children of one metric, at most `budget` of them (plus the folded ones)."""

    __slots__ = ("name", "metric", "budget", "children", "_fold", "_on_fold")

    def __init__(
        self,
        name: str,
        metric: Any,
        labelnames: Iterable[str],
        foldable: frozenset[str],
        budget: int,
        on_fold: Callable[[str], None],
    ) -> None:
        self.name = name
        self.metric = metric
        self.budget = budget
        self.children: dict[tuple[str, ...], Any] = {}
        self._fold = tuple(label in foldable for label in labelnames)
        self._on_fold = on_fold

    def child(self, values: tuple[str, ...]) -> tuple[Any, bool]:
        """The child for these label values, and whether they were folded to get it."""
        child = self.children.get(values)
        if child is not None:
            return child, False
        folded = False
        if len(self.children) >= self.budget:
            values = tuple(OTHER if fold else value for fold, value in zip(self._fold, values, strict=True))
            folded = True
            self._on_fold(self.name)
            child = self.children.get(values)
            if child is not None:
                return child, True
        child = self.children[values] = self.metric.labels(*values)
        return child, folded
