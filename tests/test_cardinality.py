"""Cardinality attacks: 10,000 distinct model names and tenants leave metrics bounded and memory flat."""

from __future__ import annotations

import gc
import resource
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2 as httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

from llmobs.dev.harness import ServerThread
from llmobs.telemetry.names import OTHER

LIMIT = 50  # max_label_values
TOTAL = 10_000
WARM_UP = 1_000  # by then every budget is spent; after it nothing may grow
MEMORY_SLACK = 16 * 1024 * 1024  # bytes of RSS; unbounded labels grow it by ~100 MB here


@pytest.fixture
def attacked(upstream: ServerThread, make_proxy: Callable[..., Any]) -> Iterator[tuple[Any, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    proxy = make_proxy(upstream.url + "/v1", provider="openai", max_label_values=LIMIT, meter_provider=meter_provider)
    yield proxy, reader  # the app shuts the meter provider down


def flood(url: str, start: int, stop: int, clients: int = 8) -> None:
    """Requests start..stop-1, each with a new model name and tenant, from a few concurrent clients."""

    def worker(offset: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(start + offset, stop, clients):
                send(client, i)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))


def send(client: httpx.Client, i: int) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={"model": f"attacker-model-{i}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        headers={"x-llmobs-tenant": f"tenant-{i}"},
    )
    assert response.status_code == 200


def rss() -> int:
    """Resident set size of this process (the proxy runs in it), in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def series(text: str) -> list[dict[str, str]]:
    """The label sets of every sample in a /metrics text."""
    return [sample.labels for family in text_string_to_metric_families(text) for sample in family.samples]


def otel_attribute_values(reader: InMemoryMetricReader, key: str) -> set[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        point.attributes.get(key)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
        if point.attributes and key in point.attributes
    }


@pytest.mark.slow
def test_ten_thousand_models_and_tenants_stay_bounded(attacked: tuple[Any, InMemoryMetricReader]) -> None:
    proxy, reader = attacked
    flood(proxy.url, 0, WARM_UP)
    proxy.settle()
    after_warm_up = httpx.get(proxy.url + "/metrics", timeout=30).text
    otel_after_warm_up = otel_attribute_values(reader, "gen_ai.request.model")
    gc.collect()
    baseline = rss()
    flood(proxy.url, WARM_UP, TOTAL)
    proxy.settle()
    gc.collect()
    grown = rss() - baseline
    text = httpx.get(proxy.url + "/metrics", timeout=30).text
    labels = series(text)

    # Every request is counted, under bounded labels.
    assert proxy.total("llmobs_requests_total") == TOTAL
    models = {s["model"] for s in labels if "model" in s}
    tenants = {s["tenant"] for s in labels if "tenant" in s}
    assert len(models - {OTHER, ""}) <= LIMIT and OTHER in models
    assert len(tenants - {OTHER, ""}) <= LIMIT and OTHER in tenants
    # Once the budgets were spent, 9,000 more new names added not one series.
    assert len(labels) == len(series(after_warm_up))
    assert len(text) < 1.05 * len(after_warm_up)  # the values grew longer, nothing else

    # The OTel metrics are bounded the same way, request and response model alike.
    bound = proxy.app.recorder.tracer.max_attribute_values
    for key in ("gen_ai.request.model", "gen_ai.response.model"):
        values = otel_attribute_values(reader, key)
        assert len(values - {OTHER}) <= bound and OTHER in values, key
    assert otel_attribute_values(reader, "gen_ai.request.model") == otel_after_warm_up

    # And memory is flat: what the last 9,000 requests left behind is small and fixed.
    assert grown < MEMORY_SLACK, f"memory grew by {grown / 1e6:.1f} MB over {TOTAL - WARM_UP} requests"


def test_max_label_values_reaches_the_otel_sink(upstream: ServerThread, make_proxy: Callable[..., Any]) -> None:
    proxy = make_proxy(upstream.url + "/v1", max_label_values=7, meter_provider=MeterProvider())
    assert proxy.app.recorder.tracer.max_attribute_values == 7
