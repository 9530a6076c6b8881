"""The series budget: a client choosing every label value it can costs Prometheus a bounded /metrics,
every request is still counted exactly once, and what was folded is counted."""

from __future__ import annotations

import gc
import resource
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Proxied
from llmobs.telemetry.names import OTHER
from servers import ServerThread

BUDGET = 2000  # the default max_series_per_metric
GRID = 200  # 200 x 200 distinct (model, tenant) pairs: the default max_label_values each
USERS = 10_000  # distinct values of an attribution label


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def drive(url: str, requests: list[tuple[str, dict[str, str]]], clients: int = 8) -> None:
    def worker(offset: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for model, headers in requests[offset::clients]:
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
                assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 200

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))


def series_of(text: str) -> dict[str, set[tuple[str, tuple[tuple[str, str], ...]]]]:
    """Per family, its series: (sample name, labels) pairs, each histogram bucket one series."""
    families: dict[str, set[tuple[str, tuple[tuple[str, str], ...]]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            families.setdefault(family.name, set()).add((sample.name, tuple(sorted(sample.labels.items()))))
    return families


@pytest.mark.slow
def test_a_client_choosing_every_label_leaves_each_family_within_its_budget(
    upstream: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(upstream.url + "/v1", provider="openai", attribution_labels=["user"])
    grid = [(f"model-{m}", {"x-llmobs-tenant": f"tenant-{t}"}) for m in range(GRID) for t in range(GRID)]
    users = [("gpt-4o-mini", {"x-llmobs-user": f"user-{u}"}) for u in range(USERS)]
    drive(proxy.url, grid[:5000])  # warm-up: by now every budget is spent
    proxy.settle()
    gc.collect()
    before = rss()
    drive(proxy.url, grid[5000:] + users)
    proxy.settle()
    gc.collect()
    grown = rss() - before
    text = httpx.get(proxy.url + "/metrics", timeout=30).text
    sent = len(grid) + len(users)

    # Every request counted once, whatever labels it ended up under.
    assert proxy.total("llmobs_requests_total") == sent
    assert proxy.total("llmobs_tokens_total", type="output") == sent  # one token each (max_tokens=1)
    # Each family: at most BUDGET series that name a client-fed value; the folded ones (`other`)
    # add one set per combination of the labels llmobs itself sets (for a histogram, a set is a
    # series per bucket, plus sum and count).
    for name, series in series_of(text).items():
        named = {s for s in series if all(v != OTHER for k, v in s[1] if k in ("model", "tenant", "user"))}
        assert len(named) <= BUDGET, (name, len(named))
        assert len(series) <= BUDGET + 400, (name, len(series))
    overflow = {
        s.labels["metric"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "llmobs_label_overflow_total"
    }
    assert overflow.get("llmobs_requests", 0) > 0 and overflow.get("llmobs_tokens", 0) > 0
    users_seen = Counter(dict(labels).get("user") for _, labels in series_of(text)["llmobs_requests"])
    assert len(users_seen) <= 202  # 200 values, `other`, and none
    assert len(text.encode()) < 8 * 1024 * 1024, f"/metrics is {len(text.encode()) / 2**20:.1f} MiB"
    assert grown < 64 * 1024 * 1024, f"RSS grew {grown / 2**20:.0f} MiB after the warm-up"
    print(f"\n/metrics: {len(text.encode()) / 2**20:.2f} MiB for {sent} requests; RSS +{grown / 2**20:.1f} MiB")


def test_overflow_is_counted_and_said_once(
    upstream: ServerThread, make_proxy: Callable[..., Proxied], caplog: Any
) -> None:
    proxy = make_proxy(upstream.url + "/v1", max_series_per_metric=10)
    drive(proxy.url, [(f"m-{i}", {"x-llmobs-tenant": f"t-{i}"}) for i in range(30)], clients=2)
    proxy.settle()
    assert proxy.total("llmobs_requests_total") == 30
    assert proxy.total("llmobs_requests_total", model=OTHER, tenant=OTHER) == 20
    assert proxy.total("llmobs_label_overflow_total", metric="llmobs_requests") == 20
    said = [r for r in caplog.records if "llmobs_requests used its series budget" in r.getMessage()]
    assert len(said) == 1
