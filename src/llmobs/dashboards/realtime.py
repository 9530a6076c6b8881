"""Panels about WebSocket sessions and the Realtime API: sessions, frames, bytes, responses and TTFT."""

from __future__ import annotations

from llmobs.dashboards import metrics as mt
from llmobs.dashboards.measures import REALTIME, TTFT_STEPS, percentiles
from llmobs.dashboards.panels import Panel, legend, query, ts
from llmobs.dashboards.promql import gauge_sum, rate_sum

Size = tuple[int, int]
P2 = (0.5, 0.95)


def sessions_open(size: Size = (8, 8)) -> Panel:
    """WebSocket sessions being relayed now."""
    return ts(
        "Open WebSocket sessions",
        "WebSocket sessions the proxy is relaying right now, per endpoint (realtime, or other for any other "
        "path), summed over the selected replicas.",
        "short",
        query(gauge_sum(mt.SESSIONS_OPEN, "endpoint"), "{{endpoint}}"),
        size=size,
    )


def sessions_closed(size: Size = (8, 8)) -> Panel:
    """Finished sessions per second by close code and outcome."""
    return ts(
        "Sessions / s by close code and outcome",
        "WebSocket sessions ending per second, by the close frame's code (none: a side dropped without one) "
        "and outcome. 1000 completed is a normal close; 1006 or stream_interrupted means a dropped upstream.",
        "cps",
        query(rate_sum(mt.SESSIONS, "close_code, outcome"), "{{close_code}} {{outcome}}"),
        stacked=True,
        size=size,
    )


def session_duration(size: Size = (8, 8)) -> Panel:
    """Session length percentiles."""
    return ts(
        "Session duration",
        "Median and 95th percentile time from the WebSocket upgrade to the close, over the sessions that "
        "ended in the rate window (buckets from 1 s to 4 h).",
        "s",
        *percentiles(mt.SESSION_DURATION, P2),
        size=size,
    )


def frames(size: Size = (6, 8)) -> Panel:
    """Frames relayed per second, each way."""
    return ts(
        "WebSocket frames / s each way",
        "Frames the proxy relayed per second, from the client to the upstream and back, text and binary.",
        "cps",
        query(rate_sum(mt.FRAMES, "direction"), "{{direction}}"),
        size=size,
    )


def frame_bytes(size: Size = (6, 8)) -> Panel:
    """Payload bytes relayed per second, each way."""
    return ts(
        "WebSocket bytes / s each way",
        "Frame payload bytes the proxy relayed per second in each direction; Realtime audio makes the "
        "upstream side heavy.",
        "Bps",
        query(rate_sum(mt.FRAME_BYTES, "direction"), "{{direction}}"),
        size=size,
    )


def responses(by: str, size: Size = (6, 8)) -> Panel:
    """Realtime responses (one per response.done) per second, split by `by`."""
    return ts(
        f"Realtime responses / s by {by}",
        "Realtime API responses per second: each response.done in a session is one request with its own "
        "usage and cost (endpoint realtime); the session itself is in the WebSocket panels.",
        "reqps",
        query(rate_sum(mt.REQUESTS, by, REALTIME), legend(by)),
        stacked=True,
        size=size,
    )


def ttft(size: Size = (6, 8)) -> Panel:
    """Time to first token of Realtime responses."""
    return ts(
        "Realtime time to first token",
        "Median and 95th percentile time from the upstream's response.created to that response's first "
        "output delta (text, transcript, audio or tool arguments). Exemplars link to traces.",
        "s",
        *percentiles(mt.TIME_TO_FIRST_TOKEN, P2, "", REALTIME, exemplar=True),
        thresholds=TTFT_STEPS,
        size=size,
    )


def realtime_panels() -> list[Panel]:
    """The overview's row: sessions, their length, frames and bytes, responses and TTFT."""
    return [
        sessions_open(),
        sessions_closed(),
        session_duration(),
        frames(),
        frame_bytes(),
        responses("model"),
        ttft(),
    ]
