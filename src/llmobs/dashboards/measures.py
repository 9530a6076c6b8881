"""What several dashboards measure, as PromQL: error ratio, token rates, finish-reason shares, cost."""

from __future__ import annotations

from grafana_foundation_sdk.builders import prometheus as prom

from llmobs.dashboards import metrics as mt
from llmobs.dashboards.metrics import Metric
from llmobs.dashboards.panels import Steps, legend, query
from llmobs.dashboards.promql import RANGE, RATE, increase_sum, per_hour, quantile, rate_sum, ratio, share

# Outcomes that mean the upstream side failed (the `outcome` label; see llmobs.records.Outcome).
UPSTREAM_FAILED = 'outcome=~"upstream_error|upstream_unreachable|upstream_timeout|stream_interrupted"'
IO_TOKENS = 'type=~"input|output"'
REALTIME = 'endpoint="realtime"'  # one Realtime response.done each; the session is in llmobs_websocket_*
MEDIA = 'endpoint=~"images_.+|audio_.+|moderations"'
# Token types that are parts of a whole (README "Prometheus metrics"): shown as shares of it,
# never added to it. cache_* and reasoning have panels of their own; these are the media ones.
MEDIA_PARTS = (
    ("input_audio", "input"),
    ("input_image", "input"),
    ("output_audio", "output"),
    ("output_image", "output"),
)

RATIO_STEPS: Steps = ((None, "green"), (0.05, "yellow"), (0.2, "red"))
ERROR_STEPS: Steps = ((None, "green"), (0.01, "yellow"), (0.05, "red"))
TTFT_STEPS: Steps = ((None, "green"), (2, "yellow"), (5, "red"))  # the TTFT alert fires at 5 s
NONZERO_BAD: Steps = ((None, "green"), (1, "orange"))


def error_ratio(by: str = "", window: str = RATE) -> str:
    """Share of requests that failed on the upstream side."""
    failed = rate_sum(mt.REQUESTS, by, UPSTREAM_FAILED, window=window)
    return share(failed, rate_sum(mt.REQUESTS, by, window=window))


def failed_requests(by: str = "") -> str:
    """Upstream failures over the range."""
    return increase_sum(mt.REQUESTS, by, UPSTREAM_FAILED)


def tokens(token_type: str, by: str = "", window: str = RATE) -> str:
    """Reported tokens of one type per second."""
    return rate_sum(mt.TOKENS, by, f'type="{token_type}"', window=window)


def token_count(token_type: str, by: str = "") -> str:
    """Reported tokens of one type over the range."""
    return increase_sum(mt.TOKENS, by, f'type="{token_type}"')


def token_share(part: str, whole: str, by: str = "", window: str = RATE) -> str:
    """cache_read / input, reasoning / output: 0 where the part was never reported."""
    return share(tokens(part, by, window), tokens(whole, by, window))


def reported_share(part: str, whole: str, by: str = "") -> str:
    """part / whole tokens only where `part` was reported: absent, not 0, for models that never do."""
    return ratio(tokens(part, by), tokens(whole, by))


def finish_share(reason: str, by: str = "") -> str:
    """Share of choices that stopped for `reason`."""
    return share(rate_sum(mt.FINISH_REASONS, by, f'reason="{reason}"'), rate_sum(mt.FINISH_REASONS, by))


def cost_per_hour(by: str = "") -> str:
    """Spending rate in dollars per hour."""
    return per_hour(rate_sum(mt.COST_USD, by))


def cost(by: str = "") -> str:
    """Dollars over the range."""
    return increase_sum(mt.COST_USD, by, window=RANGE)


def percentiles(
    histogram: Metric, qs: tuple[float, ...], by: str = "", *matchers: str, exemplar: bool = False
) -> list[prom.Dataquery]:
    """One target per quantile, legend `p95` (then the `by` labels)."""
    return [
        query(quantile(q, histogram, by, *matchers), f"p{round(q * 100)} {legend(by)}".strip(), exemplar=exemplar)
        for q in qs
    ]
