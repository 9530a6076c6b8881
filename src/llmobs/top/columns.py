"""The table's columns, defined once: title, width, value, text, and how rows sort by them."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

from llmobs.top.stats import Row

Value = float | str | None


@dataclass(frozen=True)
class Column:
    """One column; `per_model` ones have no tenant label behind them, so the tenant view omits them."""

    key: str
    title: str
    width: int
    value: Callable[[Row], Value]
    text: Callable[[Value], str]
    per_model: bool = False
    sortable: bool = True


def _count(v: Value) -> str:
    return "-" if v is None else f"{v:.0f}"


def _rate(v: Value) -> str:
    return "-" if v is None else f"{v:.1f}"


def _percent(v: Value) -> str:
    return "-" if not isinstance(v, float) else f"{v * 100:.1f}%"


def _seconds(v: Value) -> str:
    if not isinstance(v, float):
        return "-"
    if v < 1:
        return f"{v * 1000:.0f}ms"
    return f"{v:.2f}s" if v < 100 else f"{v:.0f}s"


def _usd(v: Value) -> str:
    if not isinstance(v, float):
        return "-"
    return f"{v:.4f}" if v < 1 else f"{v:.2f}"


def _text(v: Value) -> str:
    return "" if v is None else str(v)


def finish_text(finish: tuple[tuple[str, float], ...]) -> str:
    """`stop 80% length 20%`."""
    return " ".join(f"{reason} {share * 100:.0f}%" for reason, share in finish)


NAME = Column("name", "NAME", 0, operator.attrgetter("name"), _text)
COLUMNS: tuple[Column, ...] = (
    NAME,
    Column("requests", "REQS", 9, operator.attrgetter("requests"), _count),
    Column("rps", "REQ/S", 9, operator.attrgetter("rps"), _rate),
    Column("error_rate", "ERR%", 8, operator.attrgetter("error_rate"), _percent),
    Column("p50", "P50", 8, operator.attrgetter("p50"), _seconds, per_model=True),
    Column("p95", "P95", 8, operator.attrgetter("p95"), _seconds, per_model=True),
    Column("ttft_p50", "TTFT50", 8, operator.attrgetter("ttft_p50"), _seconds, per_model=True),
    Column("ttft_p95", "TTFT95", 8, operator.attrgetter("ttft_p95"), _seconds, per_model=True),
    Column("tokens_per_s", "TOK/S", 10, operator.attrgetter("tokens_per_s"), _rate),
    Column("usd_per_hour", "$/H", 9, operator.attrgetter("usd_per_hour"), _usd),
    Column("finish", "FINISH", 0, lambda row: finish_text(row.finish), _text, per_model=True, sortable=False),
)
BY_KEY = {column.key: column for column in COLUMNS}


def columns_for(by: str) -> tuple[Column, ...]:
    """The columns of the by-model or by-tenant view."""
    return COLUMNS if by == "model" else tuple(c for c in COLUMNS if not c.per_model)


def sort_rows(rows: tuple[Row, ...], column: Column, descending: bool) -> list[Row]:
    """Rows ordered by `column`; rows without a value go last either way, ties by name."""
    keyed = [(_sort_key(column.value(row)), row) for row in sorted(rows, key=operator.attrgetter("name"))]
    known = [(key, row) for key, row in keyed if key is not None]
    known.sort(key=operator.itemgetter(0), reverse=descending)  # stable: ties keep the name order
    return [row for _, row in known] + [row for key, row in keyed if key is None]


def _sort_key(value: Value) -> tuple[float, str] | None:
    """Figures sort by number, names by text; an unknown value has no place in the order."""
    if value is None:
        return None
    return (0.0, value) if isinstance(value, str) else (value, "")
