"""What every API adapter shares: the accumulator base and small readers of untrusted JSON.

Accumulators are pure: response bytes and SSE events in, one Observation out. No I/O and
no clock: every method that needs the time is handed `now`. They only observe: what the
client receives is decided elsewhere (stream_usage).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmobs.apis.content import OutputCapture
from llmobs.apis.quality import NOT_JUDGED, Judge
from llmobs.jsonio import loads, too_complex
from llmobs.ratelimits import from_headers
from llmobs.records import (
    CHUNK_INTERVALS,
    Content,
    Observation,
    Outcome,
    Quality,
    RateLimit,
    RequestInfo,
    Timings,
    Usage,
    UsageSource,
)
from llmobs.sse import Event


def count(value: Any) -> int | None:
    """A token count as reported, or None when absent or not a non-negative integer."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def loads_object(data: bytes) -> dict[str, Any] | None:
    """A JSON object, or None for anything else (not JSON, not an object, too costly to decode)."""
    if too_complex(data):
        return None
    try:
        obj = loads(data)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def error_type(error: Any, default: str = "stream_error") -> str:
    """A low-cardinality name for an error object (`code`, else `type`)."""
    if isinstance(error, dict):
        for key in ("code", "type"):
            value = error.get(key)
            if isinstance(value, str) and value and len(value) <= 64:
                return value
    return default


class Accumulator:
    """Collects what one response tells; finishes into an Observation exactly once."""

    has_usage = True  # the endpoint reports usage on success
    reads_body = True  # a non-streamed body is worth buffering for on_body()
    has_output = True  # the endpoint generates text (content capture applies)
    terminal_seen = False  # a stream's own end marker ([DONE], a terminal event) arrived
    unread = False  # the response stopped being read (too large, undecodable): its end marker is unknown
    judges = False  # the endpoint answers in text and tool calls: count the calls, judge the answer
    rate_limits: tuple[RateLimit, ...] = ()  # what the response head said of the provider's limits

    def __init__(self, info: RequestInfo, start: float) -> None:
        self.info = info
        self.start = start
        self.usage: Usage | None = None
        self.reasons: dict[int, str] = {}
        self.response_model: str | None = None
        self.response_id: str | None = None
        self.error_type: str | None = None
        self.first_byte: float | None = None
        self.first_token: float | None = None
        self.first_reasoning: float | None = None
        self.reasoning_end: float | None = None
        self.token_events = 0  # stream chunks that carried generated text; for estimates
        # Arrival instants of output chunks (for time_per_output_chunk), only when asked for.
        self.chunks: list[float] | None = [] if info.chunk_times and info.stream else None
        self.extra: dict[str, Any] = {}
        # Completion text, only when the user opted in: off, nothing is collected or parsed.
        self.output: OutputCapture | None = OutputCapture() if info.capture_content and self.has_output else None
        self.judge: Judge | None = self.new_judge() if self.judges else None
        # Once the answer has begun, a stream's text deltas may be judged by their bytes alone,
        # unless their text is wanted: captured, or judged as JSON.
        self.skims = self.output is None and not info.expects_json

    def new_judge(self) -> Judge:
        """The judge of this endpoint's answers (only called when `judges`)."""
        return Judge(self.info.expects_json)

    # --- feeding -------------------------------------------------------------

    def on_headers(self, headers: Sequence[tuple[bytes, bytes]], wall: float) -> None:
        """The response head arrived: note the provider's rate-limit headers (`wall`: time.time())."""
        self.rate_limits = from_headers(headers, wall)

    def on_first_byte(self, now: float) -> None:
        """The first body byte arrived from upstream."""
        if self.first_byte is None:
            self.first_byte = now

    def on_event(self, event: Event, now: float) -> None:
        """Account one SSE event."""

    def on_unread(self) -> None:
        """The rest of the response goes unread: a stream that ends cleanly is then complete."""
        self.unread = True

    def on_body(self, body: bytes) -> None:
        """Account a whole non-streamed response body."""
        obj = loads_object(body)
        if obj is not None:
            self.terminal_seen = True
            self.on_result(obj)

    def on_result(self, obj: dict[str, Any]) -> None:
        """Account a whole response object (a body, or a stream's final object)."""

    def answered(self, now: float) -> None:
        """A delta of the answer (text, tool call, refusal) arrived."""
        if self.first_token is None:
            self.first_token = now
            if self.first_reasoning is not None:
                self.reasoning_end = now

    def reasoned(self, now: float) -> None:
        """A delta of reasoning arrived."""
        if self.first_reasoning is None and self.first_token is None:
            self.first_reasoning = now

    def chunk(self, now: float) -> None:
        """An event that carried output (text, tool call, reasoning) arrived: note when, bounded.

        Only called when `chunks` is on; a list append, nothing decoded.
        """
        chunks = self.chunks
        if chunks is not None and len(chunks) <= CHUNK_INTERVALS:
            chunks.append(now)

    # --- finishing -----------------------------------------------------------

    def finish(self, outcome: Outcome, status_code: int, end: float, *, proxy_overhead: float = 0.0) -> Observation:
        """The frozen record of this request (not yet priced)."""
        if outcome is Outcome.COMPLETED and self.error_type is not None:
            outcome = Outcome.UPSTREAM_ERROR
        if outcome is Outcome.COMPLETED and self.info.stream and not (self.terminal_seen or self.unread):
            outcome = Outcome.STREAM_INTERRUPTED
        source = UsageSource.NOT_APPLICABLE
        estimated = None
        if self.usage is not None:
            source = UsageSource.REPORTED
        elif self.has_usage and self.info.operation is not None and 200 <= status_code < 300:
            source = UsageSource.MISSING
            if self.info.stream and self.token_events:
                estimated = self.token_events
        error = self.error_type
        if error is None and outcome is not Outcome.COMPLETED:
            error = str(status_code) if outcome is Outcome.UPSTREAM_ERROR else outcome.value
        return Observation(
            request=self.info,
            outcome=outcome,
            status_code=status_code,
            timings=Timings(
                start=self.start,
                end=end,
                first_byte=self.first_byte,
                first_token=self.first_token,
                first_reasoning=self.first_reasoning,
                reasoning_end=self.reasoning_end,
                chunks=tuple(self.chunks) if self.chunks else (),
            ),
            usage=self.usage or Usage(),
            usage_source=source,
            estimated_output_tokens=estimated,
            finish_reasons=tuple(self.reasons[i] for i in sorted(self.reasons)),
            response_model=self.response_model,
            response_id=self.response_id,
            error_type=error,
            proxy_overhead=proxy_overhead,
            rate_limits=self.rate_limits,
            extra=self.extra,
            output_content=self._output_content(outcome),
            tool_calls=self.judge.names() if self.judge is not None else (),
            quality=self._quality(outcome),
        )

    def _quality(self, outcome: Outcome) -> Quality:
        if self.judge is None:
            return NOT_JUDGED
        return self.judge.verdict(outcome is Outcome.COMPLETED, self.reasons.values())

    def _output_content(self, outcome: Outcome) -> Content | None:
        if self.output is None:
            return None
        return self.output.result(self.reasons, failed=outcome is not Outcome.COMPLETED)


class OtherAccumulator(Accumulator):
    """Paths we do not understand: timings and status only."""

    has_usage = False
    has_output = False
    reads_body = False
    terminal_seen = True
