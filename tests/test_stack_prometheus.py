"""The stack, proven: a real Prometheus scrapes a real llmobs, and every dashboard query evaluates.

Prometheus runs with the repository's scrape config (retargeted to the proxy under test, 1 s
interval) and rule files. Traffic comes from the demo's own load generator plus an `audit`
tenant whose every response shows its usage, so totals can be checked against the client.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import random
import re
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from llmobs.app import LLMObs, create_app
from llmobs.config import Settings
from llmobs.dashboards import PanelQuery, build_dashboards, panel_queries
from llmobs.sim import SimConfig
from llmobs.sim import create_app as create_simulator
from prometheus_server import (
    ROOT,
    Prometheus,
    has_values,
    prometheus_binary,
    retargeted_config,
)
from servers import serve

pytestmark = pytest.mark.timeout(300)

PRICES = {"sim-model": (1.0, 2.0), "sim-reasoning": (3.0, 12.0)}  # USD per million: input, output
PRICE_FILE = """models:
  sim-model: {input: 1.0, output: 2.0}
  sim-reasoning: {input: 3.0, output: 12.0}
  sim-embedding: {input: 0.5, output: 0}
"""
AUDIT = "audit"
RATE_INTERVAL = "5s"  # Grafana's floor is 4 x the scrape interval (1 s here)
TRAFFIC_SECONDS = 6.0
# Panels that may rightly be empty after healthy traffic.
MAY_BE_EMPTY = {"Telemetry errors / s by component"}
Usage = dict[str, float]


def load_loadgen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("loadgen", ROOT / "deploy" / "loadgen" / "loadgen.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOADGEN = load_loadgen()


# --- traffic ---------------------------------------------------------------------------------


async def faults(api: openai.AsyncOpenAI) -> None:
    """Failures the demo mix lacks: an upstream 500, an error inside a stream, a dropped stream, no usage."""
    for model, stream in (
        ("sim-error-500", False),
        ("sim-stream-error", True),
        ("sim-reset", True),
        ("sim-no-usage", True),
    ):
        try:
            result = await api.chat.completions.create(
                model=model, messages=LOADGEN.PROMPT, stream=stream, extra_headers={LOADGEN.TENANT_HEADER: "acme"}
            )
            if stream:
                await LOADGEN.drain(result)
        except openai.OpenAIError:
            pass


async def audited(api: openai.AsyncOpenAI, totals: Usage) -> None:
    """Usage-visible requests for the audit tenant; adds what the client saw to `totals`."""
    headers = {LOADGEN.TENANT_HEADER: AUDIT}
    usages = []
    result = await api.chat.completions.create(model="sim-model", messages=LOADGEN.PROMPT, extra_headers=headers)
    usages.append(("sim-model", result.usage))
    result = await api.chat.completions.create(
        model="sim-model", messages=LOADGEN.PROMPT, max_tokens=3, extra_headers=headers
    )
    assert result.choices[0].finish_reason == "length"
    usages.append(("sim-model", result.usage))
    for model in ("sim-model", "sim-reasoning"):
        stream = await api.chat.completions.create(
            model=model,
            messages=LOADGEN.PROMPT,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
        )
        usages.append((model, [c async for c in stream][-1].usage))
    for model, usage in usages:
        assert usage is not None
        price_in, price_out = PRICES[model]
        totals["tokens"] += usage.prompt_tokens + usage.completion_tokens
        totals["cost"] += (usage.prompt_tokens * price_in + usage.completion_tokens * price_out) / 1e6


async def warm_up(base_url: str, totals: Usage) -> None:
    """Every scenario once per tenant, so every series exists before the measured window.

    A counter series appears with its first value already counted, and increase() cannot see
    that first step: the measured traffic must only add to series Prometheus already knows.
    """
    api = LOADGEN.client(base_url)
    for scenario, _ in LOADGEN.SCENARIOS:
        for tenant in LOADGEN.TENANTS:
            await LOADGEN.run_one(api, scenario, tenant)
    await faults(api)
    await audited(api, totals)
    await api.close()


async def measured(base_url: str, totals: Usage) -> None:
    """The demo's random mix for a few seconds, alongside a steady stream of audited requests."""
    random.seed(1234)
    api = LOADGEN.client(base_url)
    deadline = time.monotonic() + TRAFFIC_SECONDS

    async def audit_loop() -> None:
        while time.monotonic() < deadline:
            await audited(api, totals)

    await asyncio.gather(LOADGEN.generate(base_url, 25.0, TRAFFIC_SECONDS), audit_loop(), faults(api))
    await api.close()


# --- the proxy's own view --------------------------------------------------------------------


def settle(app: LLMObs) -> None:
    deadline = time.monotonic() + 10
    while app.proxy.in_flight:
        assert time.monotonic() < deadline, "requests still in flight"
        time.sleep(0.01)


def exposed(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name and all(re.fullmatch(v, s.labels.get(k, "")) for k, v in labels.items())
    )


def wait_scraped(prom: Prometheus, registry: CollectorRegistry) -> None:
    """Until Prometheus holds the proxy's current request count, then two more scrapes."""
    want = exposed(registry, "llmobs_requests_total")
    prom.wait_until(lambda: _scraped_total(prom) == want, 20, f"Prometheus never saw {want} requests")
    time.sleep(2.5)


def _scraped_total(prom: Prometheus) -> float:
    result = prom.query("sum(llmobs_requests_total)")
    return float(result[0]["value"][1]) if result else -1.0


# --- the stack -------------------------------------------------------------------------------


class Stack:
    def __init__(
        self,
        prom: Prometheus,
        app: LLMObs,
        registry: CollectorRegistry,
        start: float,
        end: float,
        audit_window: Usage,
        audit_all: Usage,
        tokens_before: float,
    ) -> None:
        self.prom, self.app, self.registry = prom, app, registry
        self.start, self.end = start, end
        self.audit_window, self.audit_all = audit_window, audit_all
        self.tokens_before = tokens_before

    def substitute(self, expr: str, **variables: str) -> str:
        window = f"{math.ceil(self.end - self.start)}s"
        values = {"__rate_interval": RATE_INTERVAL, "__range": window, **variables}
        return re.sub(r"\$(\w+)", lambda m: values[m.group(1)], expr)

    def run(self, q: PanelQuery, **variables: str) -> list[dict[str, Any]]:
        expr = self.substitute(q.expr, **variables)
        if q.instant:
            return self.prom.query(expr, at=self.end)
        return self.prom.query_range(expr, self.start, self.end, step=1)

    def panel_value(self, filename: str, title: str, **variables: str) -> float:
        (q,) = [q for q in panel_queries(filename, DASHBOARDS[filename]) if q.panel == title]
        (series,) = self.run(q, **variables)
        return float(series["value"][1])


DASHBOARDS = build_dashboards()
ALL = {"model": ".*", "endpoint": ".*", "tenant": ".*"}
ONE = {"model": "sim-model", "endpoint": "chat_completions", "tenant": "acme"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_binary()  # skip or fail before starting anything
    workdir = tmp_path_factory.mktemp("stack")
    price_file = workdir / "prices.yaml"
    price_file.write_text(PRICE_FILE)
    registry = CollectorRegistry()
    with serve(create_simulator(SimConfig(ttft=0.02, chunk_gap=0.001))) as sim:
        settings = Settings(upstream_url=sim.url + "/v1", price_file=price_file)
        app = create_app(
            settings, registry=registry, tracer_provider=TracerProvider(), otel_from_env=False, strict=True
        )
        with serve(app) as proxy:
            target = proxy.url.removeprefix("http://")
            prom = Prometheus(retargeted_config(target), workdir).start()
            try:
                base_url = proxy.url + "/v1"
                audit_all: Usage = {"tokens": 0.0, "cost": 0.0}
                asyncio.run(warm_up(base_url, audit_all))
                settle(app)
                wait_scraped(prom, registry)
                tokens_before = exposed(registry, "llmobs_tokens_total", type="input|output")
                start = time.time()
                audit_window: Usage = {"tokens": 0.0, "cost": 0.0}
                asyncio.run(measured(base_url, audit_window))
                settle(app)
                wait_scraped(prom, registry)
                end = time.time()
                for key in audit_all:
                    audit_all[key] += audit_window[key]
                yield Stack(prom, app, registry, start, end, audit_window, audit_all, tokens_before)
            finally:
                prom.stop()


# --- every query of every dashboard ----------------------------------------------------------


def queries() -> list[PanelQuery]:
    return [q for name, model in DASHBOARDS.items() for q in panel_queries(name, model)]


def test_every_dashboard_query_evaluates_and_every_panel_has_data(stack: Stack) -> None:
    errors, data = [], {}
    for q in queries():
        for variables in (ALL, ONE):
            try:
                result = stack.run(q, **variables)
            except AssertionError as exc:
                errors.append(f"{q.dashboard} / {q.panel}: {exc}")
                continue
            if variables is ALL:
                key = (q.dashboard, q.panel)
                data[key] = data.get(key, False) or has_values(result)
    assert not errors, "\n".join(errors)
    empty = {panel for (dashboard, panel), has in data.items() if not has}
    assert empty <= MAY_BE_EMPTY, f"panels without data: {sorted(empty - MAY_BE_EMPTY)}"


def test_template_variable_queries_return_the_traffic_labels(stack: Stack) -> None:
    variables = {v["name"]: v for v in DASHBOARDS["model.json"]["templating"]["list"] if v["type"] == "query"}
    found = {}
    for name, variable in variables.items():
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
        assert match, variable["query"]
        selector = stack.substitute(match.group(1), **ALL)
        found[name] = set(stack.prom.api(f"label/{match.group(2)}/values", **{"match[]": selector}))
    assert {"sim-model", "sim-reasoning", "sim-embedding"} <= found["model"]
    assert {"chat_completions", "completions", "embeddings", "responses"} <= found["endpoint"]
    assert {"acme", "globex", "initech", AUDIT} <= found["tenant"]


def test_totals_agree_with_what_the_clients_saw(stack: Stack) -> None:
    # Exact: the raw counters Prometheus scraped equal the usage the audit client received.
    tokens = stack.prom.scalar(f'sum(llmobs_tokens_total{{tenant="{AUDIT}", type=~"input|output"}})')
    assert tokens == stack.audit_all["tokens"]
    cost = stack.prom.scalar(f'sum(llmobs_cost_usd_total{{tenant="{AUDIT}"}})')
    assert cost == pytest.approx(stack.audit_all["cost"], rel=1e-9)
    # The dashboards' increase() over the range extrapolates to the window's edges: close, not exact.
    audit = {**ALL, "tenant": AUDIT}
    assert stack.panel_value("model.json", "Tokens (range)", **audit) == pytest.approx(
        stack.audit_window["tokens"], rel=0.15
    )
    assert stack.panel_value("model.json", "Cost (range)", **audit) == pytest.approx(
        stack.audit_window["cost"], rel=0.15
    )
    in_window = exposed(stack.registry, "llmobs_tokens_total", type="input|output") - stack.tokens_before
    assert stack.panel_value("overview.json", "Tokens (range)") == pytest.approx(in_window, rel=0.15)


def test_finish_reasons_and_failures_show_the_traffic_mix(stack: Stack) -> None:
    (q,) = [
        q for q in panel_queries("overview.json", DASHBOARDS["overview.json"]) if q.panel == "Finish reasons (range)"
    ]
    reasons = {s["metric"]["reason"] for s in stack.run(q)}
    assert {"stop", "length", "tool_calls"} <= reasons
    outcomes = {s["metric"]["outcome"] for s in stack.prom.query("sum by (outcome) (llmobs_requests_total)")}
    assert {"completed", "upstream_error", "stream_interrupted"} <= outcomes


def test_latency_exemplars_carry_trace_ids(stack: Stack) -> None:
    expr = stack.substitute("sum by (le) (rate(llmobs_time_to_first_token_seconds_bucket[$__rate_interval]))")
    found = stack.prom.api("query_exemplars", query=expr, start=stack.start - 30, end=stack.end)
    trace_ids = {e["labels"].get("trace_id") for series in found for e in series["exemplars"]}
    assert trace_ids and all(re.fullmatch(r"[0-9a-f]{32}", t or "") for t in trace_ids)


def test_every_rule_evaluates_and_the_unpriced_model_alert_fires(stack: Stack) -> None:
    groups = stack.prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 17
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad
    assert has_values(stack.prom.query("model:llmobs_requests:rate5m"))
    assert has_values(stack.prom.query("llmobs:cost_usd_per_hour:rate1h"))
    firing = stack.prom.query('ALERTS{alertname="LLMObsUnpricedModel", alertstate="firing"}')
    assert {a["metric"]["model"] for a in firing} == {"sim-reasoning-content"}
