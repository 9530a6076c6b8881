"""Lines of text for a snapshot: the header, the table and the help line; no terminal involved."""

from __future__ import annotations

from dataclasses import dataclass

from llmobs.top.columns import BY_KEY, NAME, Column, finish_text, sort_rows
from llmobs.top.monitor import Monitor
from llmobs.top.stats import Row, Snapshot
from llmobs.top.view import HELP, View

NAME_WIDTH = (8, 32)  # the name column fits the longest name within these bounds
GAP = "  "


@dataclass(frozen=True)
class Line:
    """One line of the screen; `style` is header, error, title, row or help."""

    text: str
    style: str = "row"


def screen_lines(url: str, monitor: Monitor, view: View) -> list[Line]:
    """The whole screen, top to bottom; the help line goes last."""
    lines = header(url, monitor)
    if monitor.snapshot is not None:
        lines += table(monitor.snapshot, view)
    return [*lines, Line(HELP, "help")]


def header(url: str, monitor: Monitor) -> list[Line]:
    """Where, when, whether the last scrape worked, and the totals."""
    refreshed = f"refreshed {monitor.refreshed}" if monitor.refreshed else "not refreshed yet"
    lines = [
        Line(f"llmobs top  {url}  {refreshed}  {monitor.status}", "error" if monitor.error else "header"),
    ]
    snap = monitor.snapshot
    if snap is None:
        return lines
    lines.append(Line(totals(snap), "header"))
    reasons = finish_text(snap.total.finish)
    lines.append(Line(f"finish reasons  {reasons or '-'}", "header"))
    return lines


def totals(snap: Snapshot) -> str:
    """`requests 1200  req/s 20.0  in flight 3 (chat_completions 3)  errors 0.5%  ...`."""
    t = snap.total
    busy = ", ".join(f"{endpoint} {count:.0f}" for endpoint, count in sorted(snap.in_flight.items()) if count)
    in_flight = f"{sum(snap.in_flight.values()):.0f}" + (f" ({busy})" if busy else "")
    parts = [
        ("requests", f"{t.requests:.0f}"),
        ("req/s", _cell("rps", t)),
        ("in flight", in_flight),
        ("errors", _cell("error_rate", t)),
        ("p50", _cell("p50", t)),
        ("p95", _cell("p95", t)),
        ("ttft p50", _cell("ttft_p50", t)),
        ("ttft p95", _cell("ttft_p95", t)),
        ("tok/s", _cell("tokens_per_s", t)),
        ("$/h", _cell("usd_per_hour", t)),
    ]
    return GAP.join(f"{label} {value}" for label, value in parts)


def table(snap: Snapshot, view: View) -> list[Line]:
    """The caption, the column titles and one line per row, sorted as the view says."""
    rows = snap.by_model if view.by == "model" else snap.by_tenant
    sort = view.sort_column
    order = "descending" if view.descending else "ascending"
    note = "" if view.by == "model" else "  (latency, TTFT and finish reasons are per model only)"
    caption = f"by {view.by}, {len(rows)} rows, sorted by {sort.title} {order}{note}"
    width = max(NAME_WIDTH[0], min(NAME_WIDTH[1], max((len(_name(r)) for r in rows), default=0)))
    titles = [("*" if c is sort else "") + (view.by.upper() if c is NAME else c.title) for c in view.columns]
    lines = [Line(caption, "header"), Line(_join(view.columns, titles, width).rstrip(), "title")]
    for row in sort_rows(rows, sort, view.descending):
        cells = [_name(row) if c is NAME else c.text(c.value(row)) for c in view.columns]
        lines.append(Line(_join(view.columns, cells, width).rstrip()))
    return lines


def _cell(key: str, row: Row) -> str:
    column = BY_KEY[key]
    return column.text(column.value(row))


def _join(columns: tuple[Column, ...], cells: list[str], name_width: int) -> str:
    out = []
    for column, cell in zip(columns, cells, strict=True):
        if column is NAME:
            out.append(cell[:name_width].ljust(name_width))
        elif column.width:
            out.append(cell.rjust(column.width))
        else:
            out.append(GAP + cell)
    return "".join(out)


def _name(row: Row) -> str:
    """The row's name, safe to print: label values come from clients and may hold escape codes."""
    if not row.name:
        return "(none)"
    name = "".join(ch if ch.isprintable() else "?" for ch in row.name)
    return name if len(name) <= NAME_WIDTH[1] else name[: NAME_WIDTH[1] - 1] + "~"
