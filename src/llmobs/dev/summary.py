"""The demo's closing summary: readable tables from one scrape of the proxy's own /metrics."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from llmobs.dev.metrics_text import Samples, histogram_quantile

DEFAULT_UPSTREAM = "(default)"  # the empty `upstream` label: the upstream without a route prefix
# Media quantities and the media token types (parts of input or output), as the media table shows them.
MEDIA_COLUMNS = (
    ("images", "llmobs_images_total", None),
    ("audio s", "llmobs_audio_seconds_total", None),
    ("audio in", "llmobs_tokens_total", "input_audio"),
    ("audio out", "llmobs_tokens_total", "output_audio"),
    ("image in", "llmobs_tokens_total", "input_image"),
    ("image out", "llmobs_tokens_total", "output_image"),
)


def print_summary(s: Samples, console: Console) -> None:
    """Every table, in reading order; a table without data is left out."""
    for table in (
        requests(s),
        upstreams(s),
        tokens(s),
        media(s),
        sessions(s),
        frames(s),
        latency(s),
        finish_reasons(s),
    ):
        if table is not None:
            console.print(table)


def _table(
    title: str, keys: tuple[str, ...], *numbers: str, caption: str | None = None, compact: bool = False
) -> Table:
    """A table whose `keys` columns name a row and whose other columns are right-aligned numbers."""
    table = Table(title=title, box=box.SIMPLE_HEAVY, caption=caption, collapse_padding=compact, pad_edge=not compact)
    for column in keys:
        table.add_column(column, no_wrap=True)
    for column in numbers:
        table.add_column(column, justify="right", no_wrap=True)
    return table


def requests(s: Samples) -> Table:
    """Requests by model and endpoint, one column per outcome."""
    counts = s.sum_by("llmobs_requests_total", "model", "endpoint", "outcome")
    outcomes = sorted({o for _, _, o in counts})
    table = _table("Requests by model and endpoint", ("model", "endpoint"), *outcomes)
    for model, endpoint in sorted({(m, e) for m, e, _ in counts}):
        table.add_row(model, endpoint, *(f"{counts.get((model, endpoint, o), 0):g}" for o in outcomes))
    return table


def upstreams(s: Samples) -> Table | None:
    """Requests and cost per upstream with its provider and host; None without routes."""
    info = s.sum_by("llmobs_upstream_info", "upstream", "provider", "host")
    if len(info) < 2:
        return None
    counts = s.sum_by("llmobs_requests_total", "upstream")
    cost = s.sum_by("llmobs_cost_usd_total", "upstream")
    table = _table("Requests and cost by upstream", ("upstream", "provider", "host"), "requests", "USD")
    for upstream, provider, host in sorted(info):
        table.add_row(
            upstream or DEFAULT_UPSTREAM,
            provider or "-",
            host,
            f"{counts.get((upstream,), 0):g}",
            f"{cost.get((upstream,), 0):.6f}",
        )
    return table


def tokens(s: Samples) -> Table:
    """Tokens by type and cost, per model; cache and reasoning are parts, never added."""
    counts = s.sum_by("llmobs_tokens_total", "model", "type")
    cost = s.sum_by("llmobs_cost_usd_total", "model")
    unpriced = s.sum_by("llmobs_unpriced_requests_total", "model")
    kinds = ["input", "cache_read", "output", "reasoning"]
    if any(t == "cache_write" and v for (_, t), v in counts.items()):
        kinds.insert(2, "cache_write")
    table = _table(
        "Tokens as the upstream reported them, and cost",
        ("model",),
        *(kind.replace("_", "\n") for kind in kinds),  # two-line headers keep the table in 80 columns
        "USD",
        caption="cache read/write are part of input; reasoning is part of output",
        compact=True,
    )
    # Models billed by the second or the character have cost and no tokens: they get a row too.
    for model in sorted({m for m, _ in counts} | {m for (m,) in cost} | {m for (m,) in unpriced}):
        price = cost.get((model,))
        price_text = f"{price:.6f}" if price is not None else f"unpriced ×{unpriced.get((model,), 0):g}"
        table.add_row(model, *(f"{counts.get((model, t), 0):,.0f}" for t in kinds), price_text)
    table.add_row(
        "[bold]total",
        *(f"{sum(v for (_, t), v in counts.items() if t == k):,.0f}" for k in kinds),
        f"[bold]{sum(cost.values()):.6f}",
    )
    return table


def media(s: Samples) -> Table | None:
    """Images, audio seconds and audio and image tokens per model, where any was reported."""
    found = {
        name: s.sum_by(metric, "model", "type") if kind else s.sum_by(metric, "model")
        for name, metric, kind in MEDIA_COLUMNS
    }

    def value(name: str, kind: str | None, model: str) -> float:
        return found[name].get((model, kind) if kind else (model,), 0.0)

    columns = [(n, k) for n, _, k in MEDIA_COLUMNS if any(value(n, k, m) for m, *_ in found[n])]
    models = sorted({m for n, k in columns for m, *rest in found[n] if value(n, k, m)})
    if not models:
        return None
    table = _table(
        "Images, audio and their tokens",
        ("model",),
        *(n for n, _ in columns),
        caption="audio/image tokens are part of input/output",
        compact=True,
    )
    for model in models:
        table.add_row(model, *(f"{value(n, k, model):,.4g}" for n, k in columns))
    return table


def sessions(s: Samples) -> Table | None:
    """WebSocket sessions by endpoint and how they closed."""
    closed = s.sum_by("llmobs_websocket_sessions_total", "endpoint", "close_code", "outcome")
    if not closed:
        return None
    table = _table("WebSocket sessions", ("endpoint", "close code", "outcome"), "sessions")
    for (endpoint, code, outcome), count in sorted(closed.items()):
        table.add_row(endpoint, code, outcome, f"{count:g}")
    return table


def frames(s: Samples) -> Table | None:
    """WebSocket frames and payload bytes relayed, by endpoint and direction."""
    counts = s.sum_by("llmobs_websocket_frames_total", "endpoint", "direction")
    if not counts:
        return None
    size = s.sum_by("llmobs_websocket_bytes_total", "endpoint", "direction")
    table = _table("WebSocket frames relayed", ("endpoint", "direction"), "frames", "bytes")
    for key, count in sorted(counts.items()):
        table.add_row(*key, f"{count:,.0f}", f"{size.get(key, 0):,.0f}")
    return table


def latency(s: Samples) -> Table:
    """Duration and TTFT quantiles per model."""
    table = _table("Latency by model (seconds)", ("model",), "p50", "p95", "TTFT p50", "TTFT p95")
    durations = s.buckets("llmobs_request_duration_seconds", "model")
    ttfts = s.buckets("llmobs_time_to_first_token_seconds", "model")

    def q(buckets: dict[Any, list[tuple[float, float]]], key: Any, quantile: float) -> str:
        value = histogram_quantile(quantile, buckets.get(key, []))
        return "-" if value is None else f"{value:.3f}"

    for key in sorted(durations):
        table.add_row(key[0], q(durations, key, 0.5), q(durations, key, 0.95), q(ttfts, key, 0.5), q(ttfts, key, 0.95))
    return table


def finish_reasons(s: Samples) -> Table:
    """Finish reasons, most frequent first."""
    table = _table("Finish reasons (one per choice)", ("reason",), "choices")
    for (reason,), count in sorted(s.sum_by("llmobs_finish_reasons_total", "reason").items(), key=lambda kv: -kv[1]):
        table.add_row(reason, f"{count:g}")
    return table
