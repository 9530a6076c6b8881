"""What the view shows: figures per model, per tenant and in all, from one scrape and its window."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from llmobs.telemetry import names as n
from llmobs.top.samples import Samples, histogram_quantile
from llmobs.top.window import Window

REQUESTS = n.total(n.REQUESTS)
TOKENS = n.total(n.TOKENS)
COST = n.total(n.COST_USD)
FINISH_REASONS = n.total(n.FINISH_REASONS)
# cache_read/cache_write are part of input and reasoning of output: adding them would count twice.
COUNTED_TOKEN_TYPES = ("input", "output")
TOP_FINISH_REASONS = 3


@dataclass(frozen=True)
class Row:
    """One model, one tenant, or all traffic. Rates are over the window; None is unknown."""

    name: str
    requests: float  # since the proxy started
    rps: float | None = None
    error_rate: float | None = None  # share of the window's requests whose outcome is not `completed`
    p50: float | None = None
    p95: float | None = None
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    tokens_per_s: float | None = None  # input + output; None when no usage was ever reported
    usd_per_hour: float | None = None  # None when no request was ever priced
    finish: tuple[tuple[str, float], ...] = ()  # (reason, share of the window's reasons), most frequent first


@dataclass(frozen=True)
class Snapshot:
    """Everything one refresh shows. `seconds` is None until a second scrape gives a window."""

    total: Row
    in_flight: dict[str, float]
    by_model: tuple[Row, ...]
    by_tenant: tuple[Row, ...]
    seconds: float | None = None
    reset: bool = False


def snapshot(scrape: Samples, win: Window | None = None) -> Snapshot:
    """The figures of the latest `scrape`, with rates and quantiles over `win` when there is one."""
    in_flight = {key[0]: value for key, value in scrape.sum_by(n.REQUESTS_IN_FLIGHT, "endpoint").items()}
    return Snapshot(
        total=_Grouping(scrape, win, ()).row(()),
        in_flight=in_flight,
        by_model=_Grouping(scrape, win, ("model",)).rows(),
        by_tenant=_Grouping(scrape, win, ("tenant",), per_model=False).rows(),
        seconds=win.seconds if win else None,
        reset=win.reset if win else False,
    )


Key = tuple[str, ...]


class _Grouping:
    """Rows grouped by the labels `by` (none: one row for all traffic). Latency, TTFT and finish
    reasons carry no tenant label, so tenant rows have none (`per_model=False`).

    Every sum is taken once here: a row per model must not walk the whole scrape again.
    """

    def __init__(self, scrape: Samples, win: Window | None, by: Key, *, per_model: bool = True) -> None:
        self.win = win
        self.per_model = per_model
        self.requests = scrape.sum_by(REQUESTS, *by)
        self.reported = set(_nested(scrape.sum_by(TOKENS, *by, "type")))
        self.priced = set(scrape.sum_by(COST, *by))
        self.keys = set(self.requests) | self.reported | self.priced
        if per_model:
            self.keys |= set(_nested(scrape.sum_by_le(n.REQUEST_DURATION, *by)))
            self.keys |= set(_nested(scrape.sum_by(FINISH_REASONS, *by, "reason")))
        grown = win.samples if win else Samples([])
        self.outcomes = _nested(grown.sum_by(REQUESTS, *by, "outcome"))
        self.tokens = _nested(grown.sum_by(TOKENS, *by, "type"))
        self.cost = grown.sum_by(COST, *by)
        self.duration = grown.buckets(n.REQUEST_DURATION, *by) if per_model else {}
        self.ttft = grown.buckets(n.TIME_TO_FIRST_TOKEN, *by) if per_model else {}
        self.finish = _nested(grown.sum_by(FINISH_REASONS, *by, "reason")) if per_model else {}

    def rows(self) -> tuple[Row, ...]:
        return tuple(self.row(key) for key in sorted(self.keys))

    def row(self, key: Key) -> Row:
        name = key[0] if key else "all"
        requests = self.requests.get(key, 0.0)
        if self.win is None:
            return Row(name, requests)
        seconds = self.win.seconds
        outcomes = self.outcomes.get(key, {})
        count = sum(outcomes.values())
        errors = sum(v for outcome, v in outcomes.items() if outcome != "completed")
        tokens = self.tokens.get(key, {})
        duration = self.duration.get(key, [])
        ttft = self.ttft.get(key, [])
        return Row(
            name,
            requests,
            rps=count / seconds,
            error_rate=errors / count if count else None,
            p50=histogram_quantile(0.5, duration),
            p95=histogram_quantile(0.95, duration),
            ttft_p50=histogram_quantile(0.5, ttft),
            ttft_p95=histogram_quantile(0.95, ttft),
            tokens_per_s=sum(tokens.get(t, 0.0) for t in COUNTED_TOKEN_TYPES) / seconds
            if key in self.reported
            else None,
            usd_per_hour=self.cost.get(key, 0.0) / seconds * 3600 if key in self.priced else None,
            finish=_shares(self.finish.get(key, {})),
        )


def _nested(sums: dict[Key, float]) -> dict[Key, dict[str, float]]:
    """Sums keyed by their leading labels, then by their last label."""
    out: dict[Key, dict[str, float]] = defaultdict(dict)
    for labels, value in sums.items():
        out[labels[:-1]][labels[-1]] = value
    return dict(out)


def _shares(counts: dict[str, float]) -> tuple[tuple[str, float], ...]:
    """The most frequent finish reasons and their shares."""
    total = sum(counts.values())
    ranked = sorted((-v, reason) for reason, v in counts.items() if v > 0)
    return tuple((reason, -v / total) for v, reason in ranked[:TOP_FINISH_REASONS])
