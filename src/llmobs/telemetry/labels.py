"""Cardinality guard for label values that come from client input."""

from __future__ import annotations

from llmobs.telemetry.names import OTHER


class LabelGuard:
    """Admits up to `limit` distinct values; every later new value becomes `other`."""

    __slots__ = ("limit", "_seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if value is None:
            return ""
        if value in self._seen:
            return value
        if len(self._seen) < self.limit and len(value) <= 128:
            self._seen.add(value)
            return value
        return OTHER
