"""The recorder: prices by the served model, and is the one place that catches telemetry failures."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from llmobs.records import Observation, Outcome, RequestInfo, Timings, Usage, UsageSource
from llmobs.telemetry.recorder import Recorder
from llmobs.telemetry.sinks.prometheus import PrometheusSink

USAGE = Usage(input_tokens=1000, output_tokens=100)


class Prices:
    """$1 per token of the named models; the rest unpriced."""

    def __init__(self, **rates: int) -> None:
        self.rates = rates
        self.asked: list[str | None] = []

    def price(
        self, model: str | None, usage: Usage, *, provider: str | None = None, context: Any = None
    ) -> Decimal | None:
        self.asked.append(model)
        rate = self.rates.get(model or "")
        if rate is None:
            return None
        assert usage.input_tokens is not None and usage.output_tokens is not None
        return Decimal(rate * (usage.input_tokens + usage.output_tokens))


class FailingSink:
    component = "otel"

    def __init__(self) -> None:
        self.calls = 0

    def record(self, obs: Observation, span: object = None) -> None:
        self.calls += 1
        raise RuntimeError("collector exploded")


def obs(model: str = "asked", served: str | None = "served", **kwargs: Any) -> Observation:
    info = RequestInfo(endpoint="chat_completions", operation="chat", model=model)
    kwargs.setdefault("usage", USAGE)
    kwargs.setdefault("usage_source", UsageSource.REPORTED)
    return Observation(info, Outcome.COMPLETED, 200, Timings(0.0, 1.0), response_model=served, **kwargs)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def completed(registry: CollectorRegistry) -> float:
    """llmobs_requests_total for the one completed chat request obs() describes."""
    labels = {"outcome": "completed", "stream": "false", "status_code": "200", "tenant": "", "upstream": ""}
    return sample(registry, "llmobs_requests_total", endpoint="chat_completions", model="asked", **labels)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_the_served_model_is_priced(registry: CollectorRegistry) -> None:
    prices = Prices(asked=1, served=16)
    recorded = Recorder(PrometheusSink(registry), prices).finish(obs())
    assert recorded.cost == Decimal(16 * 1100)
    assert prices.asked == ["served"]


def test_a_served_model_without_a_price_is_unpriced_whatever_was_asked(registry: CollectorRegistry) -> None:
    # Asked for gpt-4o-mini, served tiny-llama by llama-server: a self-hosted model is not gpt-4o-mini.
    prices = Prices(asked=1)
    assert Recorder(PrometheusSink(registry), prices).finish(obs()).cost is None
    assert prices.asked == ["served"]
    assert sample(registry, "llmobs_unpriced_requests_total", model="asked") == 1


def test_the_requested_model_is_priced_when_the_response_names_none(registry: CollectorRegistry) -> None:
    prices = Prices(asked=1, served=16)
    assert Recorder(PrometheusSink(registry), prices).finish(obs(served=None)).cost == Decimal(1100)
    assert prices.asked == ["asked"]


def test_nothing_prices_an_unreported_usage(registry: CollectorRegistry) -> None:
    prices = Prices(asked=1, served=1)
    recorded = Recorder(PrometheusSink(registry), prices).finish(obs(usage=Usage(), usage_source=UsageSource.MISSING))
    assert recorded.cost is None and prices.asked == []


def test_a_failing_sink_is_counted_under_its_component_and_the_others_still_record(
    registry: CollectorRegistry,
) -> None:
    failing = FailingSink()
    recorder = Recorder(PrometheusSink(registry), None, sinks=(failing,))
    recorder.start(obs().request, [], 0.0)
    recorder.finish(obs())
    assert failing.calls == 1
    assert sample(registry, "llmobs_telemetry_errors_total", component="otel") == 1
    assert completed(registry) == 1
    assert sample(registry, "llmobs_requests_in_flight", endpoint="chat_completions") == 0


def test_a_failing_prometheus_record_is_counted_and_leaves_nothing_in_flight(registry: CollectorRegistry) -> None:
    prometheus = PrometheusSink(registry)

    def broken(*args: Any) -> Any:
        raise ValueError("label trouble")

    prometheus._series = broken  # type: ignore[method-assign]  # a fault inside record()
    recorder = Recorder(prometheus, None)
    recorder.start(obs().request, [], 0.0)
    recorder.finish(obs())
    assert sample(registry, "llmobs_telemetry_errors_total", component="prometheus") == 1
    assert sample(registry, "llmobs_requests_in_flight", endpoint="chat_completions") == 0


def test_a_failing_pricer_is_counted_and_tokens_are_still_recorded(registry: CollectorRegistry) -> None:
    class Broken:
        def price(
            self, model: str | None, usage: Usage, *, provider: str | None = None, context: Any = None
        ) -> Decimal | None:
            raise ArithmeticError("bad rate")

    recorded = Recorder(PrometheusSink(registry), Broken()).finish(obs())
    assert recorded.cost is None
    assert sample(registry, "llmobs_telemetry_errors_total", component="pricing") == 1
    assert (
        sample(
            registry,
            "llmobs_tokens_total",
            endpoint="chat_completions",
            model="asked",
            tenant="",
            type="input",
            upstream="",
        )
        == 1000
    )


def test_under_strict_a_failure_is_raised_not_swallowed(registry: CollectorRegistry) -> None:
    recorder = Recorder(PrometheusSink(registry), None, sinks=(FailingSink(),), strict=True)
    with pytest.raises(RuntimeError, match="collector exploded"):
        recorder.finish(obs())


def test_abandon_takes_a_request_out_of_flight(registry: CollectorRegistry) -> None:
    recorder = Recorder(PrometheusSink(registry), None)
    recorder.start(obs().request, [], 0.0)
    assert sample(registry, "llmobs_requests_in_flight", endpoint="chat_completions") == 1
    recorder.abandon(obs().request)
    assert sample(registry, "llmobs_requests_in_flight", endpoint="chat_completions") == 0
    assert completed(registry) == 0
