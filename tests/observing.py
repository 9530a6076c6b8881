"""The real ResponseObserver over an event stream, as the proxy builds it, failing the test on any error."""

from __future__ import annotations

from llmobs.observe import Accumulator, ResponseObserver


def _failed() -> None:
    raise AssertionError("accounting failed")


def sse_observer(acc: Accumulator, *, cut_usage: bool = False, body_limit: int = 1 << 20) -> ResponseObserver:
    return ResponseObserver(
        acc,
        content_type=b"text/event-stream",
        content_encoding=b"",
        cut_usage=cut_usage,
        body_limit=body_limit,
        on_failure=_failed,
    )
