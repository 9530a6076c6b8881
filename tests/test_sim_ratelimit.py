"""Rate-limit accounting and the OpenAI rate-limit headers of the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import openai
import pytest
from openai import OpenAI

from llmobs.sim import SimConfig, create_app
from llmobs.sim.ratelimit import RateLimits, go_duration
from servers import serve

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "one two three"}]
PROMPT = 3 + 3


@pytest.fixture
def client() -> Iterator[OpenAI]:
    config = SimConfig(output_tokens=4, ratelimit_requests=3, ratelimit_tokens=100)
    with serve(create_app(config)) as server, OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0) as c:
        yield c


def limits(client: OpenAI, model: str) -> dict[str, str]:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    return {k.removeprefix("x-ratelimit-"): v for k, v in raw.headers.items() if k.startswith("x-ratelimit-")}


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (6, "6ms"),
        (120, "120ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (8640, "8.64s"),
        (360_000, "6m0s"),
        (90_500, "1m30.5s"),
        (3_600_000, "1h0m0s"),
    ],
)
def test_go_duration_strings(ms: int, text: str) -> None:
    assert go_duration(ms) == text


def test_remaining_decreases_per_request_and_by_usage(client: OpenAI) -> None:
    first, second = limits(client, "m"), limits(client, "m")
    assert (first["limit-requests"], first["limit-tokens"]) == ("3", "100")
    assert (first["remaining-requests"], second["remaining-requests"]) == ("2", "1")
    assert (first["remaining-tokens"], second["remaining-tokens"]) == (str(100 - 10), str(100 - 20))
    # A per-minute window refilling evenly: 2 of 3 requests take 40 s, 20 of 100 tokens 12 s.
    assert (second["reset-requests"], second["reset-tokens"]) == ("40s", "12s")
    assert limits(client, "other")["remaining-requests"] == "2"  # one account per model


def test_exhausted_limits_stay_at_zero(client: OpenAI) -> None:
    for _ in range(3):
        limits(client, "m")
    last = limits(client, "m")
    assert (last["remaining-requests"], last["reset-requests"]) == (
        "0",
        "1m0s",
    )  # past the limit: still 0, a full minute
    assert (last["remaining-tokens"], last["reset-tokens"]) == ("60", "24s")


def test_sim_ratelimit_is_a_429_with_retry_after(client: OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="sim-ratelimit", messages=MESSAGES)
    headers = info.value.response.headers
    assert headers["retry-after"] == "1" and headers["x-ratelimit-remaining-requests"] == "0"
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "rate_limit_exceeded"


def test_streams_carry_the_headers_with_their_usage_counted(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="s", messages=MESSAGES, stream=True)
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(100 - PROMPT - 4)
    list(raw.parse())


def test_anthropic_reset_is_rfc3339_after_the_window() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, 250_000, tzinfo=UTC)
    limits = RateLimits(requests=10, tokens=1000, output_tokens=100, now=lambda: now)
    spent = limits.spend("m")
    spent.charge(500, 100)
    headers = dict(limits.anthropic_headers(spent))
    assert headers[b"anthropic-ratelimit-requests-reset"] == b"2026-01-02T03:04:12Z"  # +6 s = 11.25 s, rounded up
    assert headers[b"anthropic-ratelimit-input-tokens-reset"] == b"2026-01-02T03:04:36Z"  # +30 s = 35.25 s, rounded up
    assert headers[b"anthropic-ratelimit-output-tokens-remaining"] == b"0"
    assert headers[b"anthropic-ratelimit-tokens-limit"] == b"100"  # output is the most restrictive
