"""What the user chose to see (by model or tenant, sort column and order), and the keys that change it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmobs.top.columns import BY_KEY, Column, columns_for

HELP = "q quit  m/t/tab by model/tenant  </> or arrows: sort column  r reverse order"
QUIT = frozenset({"q", "Q"})


@dataclass(frozen=True)
class View:
    """Grouping and sort order; text columns start ascending, figures descending."""

    by: str = "model"
    sort: str = "rps"
    descending: bool = True

    @property
    def columns(self) -> tuple[Column, ...]:
        return columns_for(self.by)

    @property
    def sort_column(self) -> Column:
        return BY_KEY[self.sort]

    def on_key(self, key: str) -> View | None:
        """The view after `key` (`left`, `right`, `tab` or a character); None means quit."""
        if key in QUIT:
            return None
        if key == "m":
            return self._by("model")
        if key == "t":
            return self._by("tenant")
        if key == "tab":
            return self._by("tenant" if self.by == "model" else "model")
        if key in ("<", ",", "left"):
            return self._move(-1)
        if key in (">", ".", "right"):
            return self._move(1)
        if key == "r":
            return replace(self, descending=not self.descending)
        return self

    def _by(self, by: str) -> View:
        view = replace(self, by=by)
        if view.sort_column not in view.columns:  # latency and TTFT have no tenant label
            return replace(view, sort="rps", descending=True)
        return view

    def _move(self, step: int) -> View:
        sortable = [c for c in self.columns if c.sortable]
        column = sortable[(sortable.index(self.sort_column) + step) % len(sortable)]
        return replace(self, sort=column.key, descending=column.key != "name")
