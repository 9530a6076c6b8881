"""Deterministic rate-limit accounts and the headers OpenAI and Anthropic send about them.

Each simulator instance keeps one account per model (the served model name). Every request
that reaches a handler spends one request; a handler charges the tokens of its usage before
it answers, so the headers of an answer already include that answer's tokens. Nothing ever
refills (no clock is read for the counts), so the numbers depend only on the request sequence:

* ``remaining-requests = max(0, limit_requests - requests so far)``, limits from ``SimConfig``.
* OpenAI ``remaining-tokens = max(0, ratelimit_tokens - (input + output tokens so far))``.
* Anthropic ``input-tokens`` count input + cache-write tokens (cache reads are free, as in
  Anthropic's ITPM rule) against ``ratelimit_tokens``; ``output-tokens`` count output tokens
  against ``ratelimit_output_tokens``; ``tokens-*`` repeats whichever of the two has fewer
  remaining (input on a tie), the "most restrictive limit" of Anthropic's docs.
* Reset: a per-minute window that refills evenly, so resetting ``used`` of ``limit`` takes
  ``60 s * used / limit`` -- OpenAI as a Go duration string (``6ms``, ``1.5s``, ``6m0s``),
  Anthropic as the RFC 3339 UTC time (whole seconds, rounded up) when that has passed.
* ``sim-ratelimit`` answers 429 with ``retry-after: 1`` and remaining requests ``0``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from llmobs.proxy.asgi import Headers

RETRY_AFTER_SECONDS = 1
WINDOW_MS = 60_000


@dataclass
class Spent:
    """What one model has used so far on one simulator instance."""

    requests: int = 0
    input_tokens: int = 0  # Anthropic: input + cache writes
    output_tokens: int = 0
    exhausted: bool = False  # this answer is a 429: report nothing remaining

    def charge(self, input_tokens: int, output_tokens: int) -> None:
        """Count one answer's tokens."""
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens


def go_duration(ms: int) -> str:
    """A duration in milliseconds the way Go prints it: ``0s``, ``120ms``, ``1.5s``, ``6m0s``."""
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    hours, minutes = divmod(minutes, 60)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


def _window(used: int, limit: int) -> int:
    """Milliseconds until `used` of `limit` has refilled (rounded up: integers only, no float error)."""
    return -(-WINDOW_MS * min(used, limit) // limit) if limit > 0 else 0


class RateLimits:
    """Per-model accounts of one simulator instance and the header sets that report them."""

    def __init__(
        self, requests: int, tokens: int, output_tokens: int, now: Callable[[], datetime] | None = None
    ) -> None:
        self.requests = requests
        self.tokens = tokens
        self.output_tokens = output_tokens
        self._now = now or (lambda: datetime.now(UTC))
        self._accounts: dict[str, Spent] = {}

    def spend(self, model: str) -> Spent:
        """Count one request for `model`; the account it returns takes the request's tokens."""
        spent = self._accounts.get(model)
        if spent is None:
            spent = self._accounts[model] = Spent()
        spent.requests += 1
        return spent

    def _remaining_requests(self, spent: Spent) -> int:
        return 0 if spent.exhausted else max(0, self.requests - spent.requests)

    def openai_headers(self, spent: Spent) -> Headers:
        """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``."""
        used_tokens = spent.input_tokens + spent.output_tokens
        reset_requests = RETRY_AFTER_SECONDS * 1000 if spent.exhausted else _window(spent.requests, self.requests)
        values = (
            ("limit-requests", str(self.requests)),
            ("limit-tokens", str(self.tokens)),
            ("remaining-requests", str(self._remaining_requests(spent))),
            ("remaining-tokens", str(max(0, self.tokens - used_tokens))),
            ("reset-requests", go_duration(reset_requests)),
            ("reset-tokens", go_duration(_window(used_tokens, self.tokens))),
        )
        return [(b"x-ratelimit-" + k.encode(), v.encode()) for k, v in values]

    def anthropic_headers(self, spent: Spent) -> Headers:
        """``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}``."""
        now = self._now()
        reset_requests = RETRY_AFTER_SECONDS * 1000 if spent.exhausted else _window(spent.requests, self.requests)
        rows = {
            "requests": (self.requests, self._remaining_requests(spent), reset_requests),
            "input-tokens": (
                self.tokens,
                max(0, self.tokens - spent.input_tokens),
                _window(spent.input_tokens, self.tokens),
            ),
            "output-tokens": (
                self.output_tokens,
                max(0, self.output_tokens - spent.output_tokens),
                _window(spent.output_tokens, self.output_tokens),
            ),
        }
        inputs, outputs = rows["input-tokens"], rows["output-tokens"]
        rows["tokens"] = inputs if inputs[1] <= outputs[1] else outputs
        headers: Headers = []
        for name in ("requests", "tokens", "input-tokens", "output-tokens"):
            limit, remaining, reset = rows[name]
            prefix = b"anthropic-ratelimit-" + name.encode()
            headers.append((prefix + b"-limit", str(limit).encode()))
            headers.append((prefix + b"-remaining", str(remaining).encode()))
            headers.append((prefix + b"-reset", _rfc3339(now, reset).encode()))
        return headers

    def realtime_event_limits(self, spent: Spent) -> list[dict[str, object]]:
        """The ``rate_limits`` list of a Realtime ``rate_limits.updated`` event."""
        used_tokens = spent.input_tokens + spent.output_tokens
        return [
            {
                "name": "requests",
                "limit": self.requests,
                "remaining": self._remaining_requests(spent),
                "reset_seconds": _window(spent.requests, self.requests) / 1000,
            },
            {
                "name": "tokens",
                "limit": self.tokens,
                "remaining": max(0, self.tokens - used_tokens),
                "reset_seconds": _window(used_tokens, self.tokens) / 1000,
            },
        ]


def _rfc3339(now: datetime, ms: int) -> str:
    at = now + timedelta(milliseconds=ms)
    if at.microsecond:
        at = at.replace(microsecond=0) + timedelta(seconds=1)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")
