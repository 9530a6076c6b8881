"""What /metrics exposes besides llmobs's own: process and runtime metrics, units, fine TTFT buckets."""

from __future__ import annotations

from collections.abc import Callable

import httpx2 as httpx

from conftest import Proxied, sdk_client
from servers import ServerThread


def test_process_and_runtime_metrics_are_exposed(upstream: ServerThread, make_proxy: Callable[..., Proxied]) -> None:
    proxy = make_proxy(upstream.url + "/v1")
    text = httpx.get(proxy.url + "/metrics").text
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                 "python_gc_objects_collected_total", "python_info"):  # fmt: skip
        assert f"\n{name}" in text, name


def test_openmetrics_carries_units(upstream: ServerThread, make_proxy: Callable[..., Proxied]) -> None:
    proxy = make_proxy(upstream.url + "/v1", provider="openai")
    sdk_client(proxy.base_url).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    proxy.settle()
    text = httpx.get(proxy.url + "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}).text
    units = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# UNIT")}
    assert units["llmobs_request_duration_seconds"] == "seconds"
    assert units["llmobs_tokens"] == "tokens"
    assert units["llmobs_cost_usd"] == "usd"
    assert text.rstrip().endswith("# EOF")


def test_ttft_buckets_are_fine_below_five_seconds(upstream: ServerThread, make_proxy: Callable[..., Proxied]) -> None:
    proxy = make_proxy(upstream.url + "/v1")
    chunks = sdk_client(proxy.base_url).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert list(chunks)
    proxy.settle()
    bounds = sorted(
        float(line.split('le="')[1].split('"')[0].replace("+Inf", "inf"))
        for line in httpx.get(proxy.url + "/metrics").text.splitlines()
        if line.startswith("llmobs_time_to_first_token_seconds_bucket")
    )
    below_five = [b for b in bounds if b <= 5]
    assert len(below_five) >= 20 and {0.3, 0.4, 0.6, 0.75, 1.5, 2.0, 3.0, 4.0} <= set(below_five)
