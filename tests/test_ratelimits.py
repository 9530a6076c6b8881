"""Rate-limit headroom: the pure parser, the gauges, and the figures the simulator's upstreams send."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest

from conftest import Proxied, sdk_client
from llmobs.config import Route
from llmobs.dev.harness import ServerThread
from llmobs.dev.metrics_text import read_metrics
from llmobs.ratelimits import from_headers, from_realtime, go_duration, number, reset_seconds
from llmobs.records import Observation, Outcome, RateLimit, RequestInfo, Timings
from llmobs.sim import SimConfig
from llmobs.sim import create_app as create_simulator
from llmobs.sim.ratelimit import RateLimits
from llmobs.telemetry.sinks.prometheus import PrometheusSink
from servers import serve

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DATE = format_datetime(datetime.fromtimestamp(NOW, UTC), usegmt=True).encode()  # Thu, 01 Jan 2026 00:00:00 GMT
MESSAGES: list[Any] = [{"role": "user", "content": "one two three"}]


def by_resource(limits: tuple[RateLimit, ...]) -> dict[str, RateLimit]:
    return {limit.resource: limit for limit in limits}


# --- OpenAI-style headers ---------------------------------------------------------------------


def test_openai_headers_as_the_simulator_sends_them() -> None:
    sim = RateLimits(requests=500, tokens=30_000, output_tokens=0)
    spent = sim.spend("gpt")
    spent.charge(1000, 500)
    limits = by_resource(from_headers(sim.openai_headers(spent), NOW))
    assert limits == {
        "requests": RateLimit("requests", limit=500, remaining=499, reset_seconds=0.12),  # 60 s * 1/500
        "tokens": RateLimit("tokens", limit=30_000, remaining=28_500, reset_seconds=3.0),  # 60 s * 1500/30000
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0.0),
        ("0", 0.0),  # Go prints a zero duration as 0s, but parses a bare 0
        ("120ms", 0.12),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("6m0s", 360.0),
        ("1m30.5s", 90.5),
        ("1h2m3.5s", 3723.5),
        ("2m59.56s", 179.56),  # Groq
        ("17ms", 0.017),
        ("250us", 0.00025),
        ("250\u00b5s", 0.00025),  # Go's own micro sign
        ("40ns", 4e-8),
        (".5s", 0.5),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert go_duration(text) == pytest.approx(seconds)
    assert reset_seconds(text.encode(), NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "s", "abc", "1", "1.5", "-1s", "+1s", "1x", "1e3s", "1h-2m", "inf", "nans", "1 s", "1s2", "1,5s", "٣s"],
)
def test_malformed_durations_are_ignored(text: str) -> None:
    assert go_duration(text) is None
    assert reset_seconds(text.encode(), NOW) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"0", 0.0),
        (b"10000", 10_000.0),
        (b" 42 ", 42.0),  # optional whitespace around a header value
        (b"1.5", 1.5),
        (b"9" * 64, float("9" * 64)),  # huge but finite, within the length bound: believed
        (b"-1", None),
        (b"1e5", None),
        (b"inf", None),
        (b"nan", None),
        (b"1_000", None),
        (b"0x10", None),
        (b"", None),
        (b"9" * 65, None),  # past the length bound: not even parsed
        (b"\xff\xfe", None),
        (None, None),
    ],
)
def test_numbers_are_plain_non_negative_and_finite(value: bytes | None, expected: float | None) -> None:
    assert number(value) == expected


def test_header_names_are_case_insensitive_and_nothing_else_is_read() -> None:
    headers = [
        (b"X-RateLimit-Limit-Tokens", b"1000"),
        (b"x-ratelimit-remaining-tokens", b"250"),
        (b"x-ratelimit-limit-tokens_usage_based", b"5"),  # not one of ours
        (b"x-ratelimit-remaining", b"7"),  # a generic gateway header: no resource
        (b"ratelimit-remaining", b"7"),
        (b"retry-after", b"20"),
        (b"x-ratelimit-limit-tokens", b"999"),  # a repeated header: the first one counts
    ]
    assert from_headers(headers, NOW) == (RateLimit("tokens", limit=1000, remaining=250),)


def test_malformed_values_are_ignored_one_by_one_and_never_raise() -> None:
    headers = [
        (b"x-ratelimit-limit-requests", b"-5"),
        (b"x-ratelimit-remaining-requests", b"4"),
        (b"x-ratelimit-reset-requests", b"soon"),
        (b"x-ratelimit-limit-tokens", b"lots"),
        (b"x-ratelimit-remaining-tokens", b"1e400"),
        (b"x-ratelimit-reset-tokens", b"1" * 100 + b"s"),
    ]
    # tokens said nothing believable: it is left out altogether.
    assert from_headers(headers, NOW) == (RateLimit("requests", remaining=4),)
    assert from_headers([], NOW) == ()
    assert from_headers([(b"content-type", b"application/json")], NOW) == ()


# --- Anthropic headers ------------------------------------------------------------------------


def test_anthropic_headers_as_the_simulator_sends_them() -> None:
    at = datetime.fromtimestamp(NOW, UTC)
    sim = RateLimits(requests=50, tokens=40_000, output_tokens=8_000, now=lambda: at)
    spent = sim.spend("claude")
    spent.charge(2000, 400)
    headers = [(b"date", DATE), *sim.anthropic_headers(spent)]
    limits = by_resource(from_headers(headers, wall=0.0))  # the date header, not the wall clock
    # Resets are whole seconds, rounded up: 60 s * 1/50 = 1.2 s -> 2 s; 60 s * 2000/40000 = 3 s.
    assert limits["requests"] == RateLimit("requests", limit=50, remaining=49, reset_seconds=2.0)
    assert limits["input_tokens"] == RateLimit("input_tokens", limit=40_000, remaining=38_000, reset_seconds=3.0)
    assert limits["output_tokens"] == RateLimit("output_tokens", limit=8_000, remaining=7_600, reset_seconds=3.0)
    # tokens repeats the most restrictive of the two: the fewer tokens remaining (output here)
    assert limits["tokens"] == RateLimit("tokens", limit=8_000, remaining=7_600, reset_seconds=3.0)
    assert list(limits) == ["requests", "tokens", "input_tokens", "output_tokens"]


@pytest.mark.parametrize(
    ("reset", "seconds"),
    [
        (b"2026-01-01T00:00:30Z", 30.0),
        (b"2026-01-01T00:00:30.250Z", 30.25),
        (b"2026-01-01T00:00:30.123456789Z", 30.123456),  # nanoseconds: microseconds kept
        (b"2026-01-01T02:00:30+02:00", 30.0),
        (b"2026-01-01t00:00:30z", 30.0),  # RFC 3339 allows lower case
        (b"2025-12-31T23:59:00Z", 0.0),  # already past: the limit is whole now
    ],
)
def test_rfc3339_resets_count_from_the_date_header(reset: bytes, seconds: float) -> None:
    headers = [(b"anthropic-ratelimit-tokens-reset", reset), (b"Date", DATE)]
    assert from_headers(headers, wall=NOW + 500) == (RateLimit("tokens", reset_seconds=pytest.approx(seconds)),)


def test_without_a_usable_date_header_resets_count_from_the_wall_clock() -> None:
    reset = [(b"anthropic-ratelimit-requests-reset", b"2026-01-01T00:01:00Z")]
    assert from_headers(reset, NOW) == (RateLimit("requests", reset_seconds=60.0),)
    for date in (b"yesterday", b"", b"Thu, 01 Jan 2026 00:00:00 GMT" * 4, b"\xff"):
        assert from_headers([*reset, (b"date", date)], NOW) == (RateLimit("requests", reset_seconds=60.0),)


@pytest.mark.parametrize(
    "reset",
    [
        b"2026-13-01T00:00:00Z",  # month 13
        b"2026-01-01T00:00:00",  # no offset: not RFC 3339, and no way to tell the zone
        b"2026-01-01",
        b"tomorrow",
        b"2026-01-01T00:00:00Z trailing",
        b"0000-01-01T00:00:00Z",
    ],
)
def test_malformed_reset_times_are_ignored(reset: bytes) -> None:
    assert from_headers([(b"anthropic-ratelimit-tokens-reset", reset), (b"date", DATE)], NOW) == ()


def test_a_far_reset_time_is_a_large_finite_number() -> None:
    (limit,) = from_headers([(b"anthropic-ratelimit-tokens-reset", b"9999-12-31T23:59:59Z")], NOW)
    assert limit.reset_seconds is not None and math.isfinite(limit.reset_seconds) and limit.reset_seconds > 2.5e11


# --- Realtime ---------------------------------------------------------------------------------


def test_realtime_rate_limits_event_as_the_simulator_sends_it() -> None:
    sim = RateLimits(requests=100, tokens=10_000, output_tokens=0)
    spent = sim.spend("gpt-realtime")
    spent.charge(400, 100)
    assert from_realtime(sim.realtime_event_limits(spent)) == (
        RateLimit("requests", limit=100, remaining=99, reset_seconds=0.6),
        RateLimit("tokens", limit=10_000, remaining=9_500, reset_seconds=3.0),
    )


@pytest.mark.parametrize(
    "event",
    [
        None,
        {"name": "tokens"},
        "tokens",
        [{"name": "tokens", "limit": -1, "remaining": True, "reset_seconds": "1"}],
        [{"name": "tokens", "limit": float("inf"), "remaining": float("nan"), "reset_seconds": 10**400}],
        [{"name": "images", "limit": 5, "remaining": 5, "reset_seconds": 1}],  # not a resource we know
        [{"limit": 5}],
        [{"name": "tokens", "limit": 5}] * 9,  # longer than any real list
    ],
)
def test_malformed_realtime_events_are_ignored(event: Any) -> None:
    assert from_realtime(event) == ()


# --- the sink -----------------------------------------------------------------------------------


def observation(model: str, *limits: RateLimit, upstream: str = "") -> Observation:
    info = RequestInfo(endpoint="chat_completions", operation="chat", model=model, upstream=upstream)
    return Observation(info, Outcome.COMPLETED, 200, Timings(0.0, 1.0), rate_limits=limits)


def gauges(registry: CollectorRegistry, **labels: str) -> dict[tuple[str, str, str, str], float]:
    """(metric, upstream, model, resource) -> value for every rate-limit gauge sample."""
    return {
        (s.name, s.labels["upstream"], s.labels["model"], s.labels["resource"]): s.value
        for family in registry.collect()
        if family.name.startswith("llmobs_ratelimit_")
        for s in family.samples
        if all(s.labels.get(k) == v for k, v in labels.items())
    }


def test_the_sink_sets_each_reported_figure_and_only_those() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(registry)
    sink.record(observation("gpt", RateLimit("tokens", limit=1000, remaining=10), upstream="/openai"))
    sink.record(observation("gpt", RateLimit("tokens", remaining=900, reset_seconds=1.5), upstream="/openai"))
    assert gauges(registry) == {
        ("llmobs_ratelimit_limit", "/openai", "gpt", "tokens"): 1000,  # the second response said no limit
        ("llmobs_ratelimit_remaining", "/openai", "gpt", "tokens"): 900,  # the latest figure wins
        ("llmobs_ratelimit_reset_seconds", "/openai", "gpt", "tokens"): 1.5,
    }
    sink.record(observation("quiet"))  # a response without rate-limit headers sets nothing
    assert not gauges(registry, model="quiet")
    assert "# UNIT llmobs_ratelimit_reset_seconds seconds\n" in generate_latest(registry).decode()


def test_gauges_keep_the_most_recent_value_across_workers() -> None:
    sink = PrometheusSink(CollectorRegistry())
    for gauge in (sink.metrics.ratelimit_limit, sink.metrics.ratelimit_remaining, sink.metrics.ratelimit_reset):
        assert gauge._multiprocess_mode == "mostrecent"


def test_the_model_label_is_bounded_by_the_guard_and_the_series_budget() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(registry, max_label_values=3, max_series=10)
    for i in range(20):
        sink.record(observation(f"m{i}", RateLimit("requests", remaining=i), RateLimit("tokens", remaining=i)))
    models = {model for _, _, model, _ in gauges(registry)}
    assert models == {"m0", "m1", "m2", "other"}  # past max_label_values: other
    registry = CollectorRegistry()
    sink = PrometheusSink(registry, max_label_values=100, max_series=10)
    for i in range(20):
        sink.record(observation(f"m{i}", RateLimit("requests", remaining=i), RateLimit("tokens", remaining=i)))
    remaining = {k: v for k, v in gauges(registry).items() if k[0] == "llmobs_ratelimit_remaining"}
    assert len(remaining) == 10 + 2  # the budget, then one folded series per resource
    assert remaining[("llmobs_ratelimit_remaining", "", "other", "tokens")] == 19
    overflow = registry.get_sample_value("llmobs_label_overflow_total", {"metric": "llmobs_ratelimit_remaining"})
    assert overflow == 2 * (20 - 5)


# --- through a live proxy -----------------------------------------------------------------------


@pytest.fixture
def limited() -> Iterator[ServerThread]:
    """A simulator of its own, so that its rate-limit accounts start at zero for each test."""
    config = SimConfig(output_tokens=4, ratelimit_requests=100, ratelimit_tokens=10_000, ratelimit_output_tokens=900)
    with serve(create_simulator(config)) as server:
        yield server


def value(proxy: Proxied, name: str, **labels: str) -> float | None:
    proxy.settle()
    return proxy.registry.get_sample_value(name, labels)


def expected(headers: Any, resource: str) -> RateLimit:
    """What the client's own copy of the headers says (the proxy passes them through as sent)."""
    return by_resource(from_headers([(k.encode(), v.encode()) for k, v in headers.items()], time.time()))[resource]


def test_openai_answers_set_the_gauges_from_their_headers(
    limited: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(limited.url + "/v1")
    client = sdk_client(proxy.base_url)
    for stream in (False, True):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, stream=stream)
        response = raw.parse()
        if stream:
            for _ in response:  # type: ignore[union-attr]
                pass
        labels = {"upstream": "", "model": "gpt-4o"}
        for resource in ("requests", "tokens"):
            sent = expected(raw.headers, resource)
            assert value(proxy, "llmobs_ratelimit_limit", resource=resource, **labels) == sent.limit
            assert value(proxy, "llmobs_ratelimit_remaining", resource=resource, **labels) == sent.remaining
            assert value(proxy, "llmobs_ratelimit_reset_seconds", resource=resource, **labels) == sent.reset_seconds
    # Two requests spent: the second answer's figures are the ones shown.
    assert value(proxy, "llmobs_ratelimit_remaining", resource="requests", **labels) == 100 - 2
    assert value(proxy, "llmobs_ratelimit_limit", resource="tokens", **labels) == 10_000


def test_a_429_sets_remaining_requests_to_zero_and_counts_by_model(
    limited: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(limited.url + "/v1")
    with pytest.raises(openai.RateLimitError):
        sdk_client(proxy.base_url).chat.completions.create(model="sim-ratelimit", messages=MESSAGES)
    labels = {"upstream": "", "model": "sim-ratelimit"}
    assert value(proxy, "llmobs_ratelimit_remaining", resource="requests", **labels) == 0
    assert value(proxy, "llmobs_ratelimit_reset_seconds", resource="requests", **labels) == 1.0  # retry-after
    assert proxy.total("llmobs_requests_total", model="sim-ratelimit", status_code="429") == 1


def test_anthropic_answers_set_the_gauges_per_route(limited: ServerThread, make_proxy: Callable[..., Proxied]) -> None:
    route = Route(prefix="/anthropic", url=limited.url, provider="anthropic")
    proxy = make_proxy(limited.url + "/v1", routes=[route])
    client = anthropic.Anthropic(base_url=proxy.url + "/anthropic", api_key="sk-ant-test", max_retries=0)
    raw = client.messages.with_raw_response.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
    client.close()
    labels = {"upstream": "/anthropic", "model": "claude-sonnet-4-6"}
    for resource in ("requests", "tokens", "input_tokens", "output_tokens"):
        sent = expected(raw.headers, resource)
        assert sent.limit is not None and sent.remaining is not None and sent.reset_seconds is not None
        assert value(proxy, "llmobs_ratelimit_limit", resource=resource, **labels) == sent.limit
        assert value(proxy, "llmobs_ratelimit_remaining", resource=resource, **labels) == sent.remaining
        reset = value(proxy, "llmobs_ratelimit_reset_seconds", resource=resource, **labels)
        # Counted from the upstream's own date header (whole seconds), never negative.
        assert reset is not None and 0 <= reset <= sent.reset_seconds + 1 and reset <= 61
    assert value(proxy, "llmobs_ratelimit_limit", resource="output_tokens", **labels) == 900
    assert value(proxy, "llmobs_ratelimit_remaining", resource="requests", **labels) == 99


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
def test_a_realtime_session_sets_the_gauges_from_rate_limits_updated(
    limited: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(limited.url + "/v1")
    client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-test", max_retries=0)
    seen: list[Any] = []
    with client.realtime.connect(model="gpt-realtime") as conn:
        assert conn.recv().type == "session.created"
        for _ in range(2):
            conn.response.create(response={"output_modalities": ["text"]})
            for event in conn:
                if event.type == "rate_limits.updated":
                    seen.append({r.name: r for r in event.rate_limits or []})
                if event.type == "response.done":
                    break
    client.close()
    deadline = time.monotonic() + 5
    while proxy.total("llmobs_requests_total", endpoint="realtime") < 2:
        assert time.monotonic() < deadline, "the responses were never recorded"
        time.sleep(0.02)
    labels = {"upstream": "", "model": "gpt-realtime"}
    last = seen[-1]
    assert value(proxy, "llmobs_ratelimit_remaining", resource="requests", **labels) == last["requests"].remaining == 98
    assert value(proxy, "llmobs_ratelimit_limit", resource="tokens", **labels) == last["tokens"].limit == 10_000
    assert value(proxy, "llmobs_ratelimit_remaining", resource="tokens", **labels) == last["tokens"].remaining
    assert value(proxy, "llmobs_ratelimit_reset_seconds", resource="tokens", **labels) == last["tokens"].reset_seconds


def test_the_proxy_bounds_the_model_label_of_the_gauges(
    limited: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(limited.url + "/v1", max_label_values=2)
    client = sdk_client(proxy.base_url)
    for model in ("a", "b", "c", "d"):
        client.chat.completions.create(model=model, messages=MESSAGES)
    proxy.settle()
    assert {model for _, _, model, _ in gauges(proxy.registry)} == {"a", "b", "other"}


def test_several_workers_show_the_newest_figures_and_each_budget_once(
    limited: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_workers import Instance  # `llmobs serve --workers 2` in a subprocess

    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("budgets:\n  acme: {day: 50, month: 1000}\n")
    monkeypatch.setenv("LLMOBS_BUDGET_FILE", str(budgets))
    server = Instance(limited.url + "/v1", tmp_path, workers=2)
    try:
        client = sdk_client(server.url + "/v1")
        for _ in range(6):  # spread over both workers; the simulator counts down one request each
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        metrics = read_metrics(server.metrics())
    finally:
        server.stop()
    remaining = metrics.sum_by("llmobs_ratelimit_remaining", "resource")
    assert remaining[("requests",)] == 100 - 6  # the most recent answer's figure, not a sum or a max
    assert metrics.sum_by("llmobs_budget_usd", "tenant", "period") == {("acme", "day"): 50, ("acme", "month"): 1000}
