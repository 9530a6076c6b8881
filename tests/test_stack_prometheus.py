"""The stack, proven: a real Prometheus scrapes real llmobs proxies, and every dashboard query evaluates.

Prometheus runs with the repository's scrape config (retargeted to the proxies under test, 1 s
interval) and rule files. Two proxies in front of one simulator are scraped as two jobs, so
`job` and `instance` have two values each. Traffic comes from the demo's own load generator on
both, plus an `audit` tenant whose every response shows its usage (totals are checked against
the client), plus a `drill` mix: every kind of request for one model and tenant, so that a
dashboard filtered down to one value of every variable still has data in every panel.
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
from llmobs.dashboards import FILTERS, PanelQuery, build_dashboards, panel_queries
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
CANARY_JOB = "llmobs-canary"  # the second scrape job, one more proxy
RATE_INTERVAL = "5s"  # Grafana's floor is 4 x the scrape interval (1 s here)
TRAFFIC_SECONDS = 6.0
# Panels that may rightly be empty after healthy traffic (titles without the "· all ..." marker).
MAY_BE_EMPTY = {"Telemetry errors / s by component"}
# One value of every filter, each a strict subset of the traffic. The drill mix gives this
# model and tenant every request kind; the instance is the primary proxy's, known at start-up.
DRILL = {"job": "llmobs", "endpoint": "chat_completions", "model": "sim-reasoning", "tenant": "acme"}
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


async def drill(api: openai.AsyncOpenAI) -> None:
    """Every request kind for the DRILL model and tenant on chat completions: streamed (TTFT,
    reasoning), truncated, a tool call, a prompt-cache hit, and an upstream 400."""
    model, headers = DRILL["model"], {LOADGEN.TENANT_HEADER: DRILL["tenant"]}
    chat = api.chat.completions
    await LOADGEN.drain(await chat.create(model=model, messages=LOADGEN.PROMPT, stream=True, extra_headers=headers))
    await LOADGEN.drain(
        await chat.create(model=model, messages=LOADGEN.PROMPT, stream=True, max_tokens=3, extra_headers=headers)
    )
    await chat.create(model=model, messages=LOADGEN.PROMPT, tools=LOADGEN.TOOLS, extra_headers=headers)
    await chat.create(
        model=model, messages=LOADGEN.PROMPT, extra_body={"prompt_cache_key": "drill"}, extra_headers=headers
    )
    with pytest.raises(openai.BadRequestError):  # the simulator refuses max_tokens < 0
        await chat.create(model=model, messages=LOADGEN.PROMPT, max_tokens=-1, extra_headers=headers)


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
    await drill(api)
    await api.close()


async def warm_up_canary(base_url: str) -> None:
    """Every scenario once per tenant through the second proxy."""
    api = LOADGEN.client(base_url)
    for scenario, _ in LOADGEN.SCENARIOS:
        for tenant in LOADGEN.TENANTS:
            await LOADGEN.run_one(api, scenario, tenant)
    await api.close()


async def measured(base_url: str, canary_url: str, totals: Usage) -> None:
    """The demo's random mix for a few seconds on both proxies, alongside steady audited and
    drill requests on the primary."""
    random.seed(1234)
    api = LOADGEN.client(base_url)
    deadline = time.monotonic() + TRAFFIC_SECONDS

    async def audit_loop() -> None:
        while time.monotonic() < deadline:
            await audited(api, totals)

    async def drill_loop() -> None:
        while time.monotonic() < deadline:
            await drill(api)

    await asyncio.gather(
        LOADGEN.generate(base_url, 25.0, TRAFFIC_SECONDS),
        LOADGEN.generate(canary_url, 8.0, TRAFFIC_SECONDS),
        audit_loop(),
        drill_loop(),
        faults(api),
    )
    await api.close()


# --- the proxy's own view --------------------------------------------------------------------


def settle(*apps: LLMObs) -> None:
    deadline = time.monotonic() + 10
    while any(app.proxy.in_flight for app in apps):
        assert time.monotonic() < deadline, "requests still in flight"
        time.sleep(0.01)


def exposed(registries: list[CollectorRegistry], name: str, **labels: str) -> float:
    return sum(
        s.value
        for registry in registries
        for family in registry.collect()
        for s in family.samples
        if s.name == name and all(re.fullmatch(v, s.labels.get(k, "")) for k, v in labels.items())
    )


def wait_scraped(prom: Prometheus, registries: list[CollectorRegistry]) -> None:
    """Until Prometheus holds the proxies' current request count, then two more scrapes."""
    want = exposed(registries, "llmobs_requests_total")
    prom.wait_until(lambda: _scraped_total(prom) == want, 20, f"Prometheus never saw {want} requests")
    time.sleep(2.5)


def _scraped_total(prom: Prometheus) -> float:
    result = prom.query("sum(llmobs_requests_total)")
    return float(result[0]["value"][1]) if result else -1.0


# --- the stack -------------------------------------------------------------------------------


def grafana_regex(value: str) -> str:
    """A selected value as Grafana's Prometheus datasource puts it into `=~"..."`: regex-escaped."""
    return re.sub(r"[\\^$*+?.()|\[\]{}]", lambda m: "\\\\" + m.group(0), value)


def base_title(title: str) -> str:
    """A panel title without its "· all tenants" marker."""
    return title.split(" · ", 1)[0]


class Stack:
    def __init__(
        self,
        prom: Prometheus,
        registries: list[CollectorRegistry],
        instances: dict[str, str],
        start: float,
        end: float,
        audit_window: Usage,
        audit_all: Usage,
        tokens_before: float,
    ) -> None:
        self.prom, self.registries, self.instances = prom, registries, instances
        self.start, self.end = start, end
        self.audit_window, self.audit_all = audit_window, audit_all
        self.tokens_before = tokens_before
        # Every filter at one value that exists in the data: the primary proxy, the drill mix.
        self.one = {f: grafana_regex(v) for f, v in {**DRILL, "instance": instances["llmobs"]}.items()}

    def substitute(self, expr: str, **variables: str) -> str:
        """`expr` as Grafana sends it: intervals filled in, unset filter variables at All (`.*`)."""
        window = f"{math.ceil(self.end - self.start)}s"
        values = {"__rate_interval": RATE_INTERVAL, "__range": window, **ALL, **variables}
        return re.sub(r"\$(\w+)", lambda m: values[m.group(1)], expr)

    def run(self, q: PanelQuery, **variables: str) -> list[dict[str, Any]]:
        expr = self.substitute(q.expr, **variables)
        if q.instant:
            return self.prom.query(expr, at=self.end)
        return self.prom.query_range(expr, self.start, self.end, step=1)

    def panel_value(self, filename: str, title: str, **variables: str) -> float:
        (q,) = [q for q in panel_queries(filename, DASHBOARDS[filename]) if base_title(q.panel) == title]
        (series,) = self.run(q, **variables)
        return float(series["value"][1])


DASHBOARDS = build_dashboards()
ALL = dict.fromkeys(FILTERS, ".*")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_binary()  # skip or fail before starting anything
    workdir = tmp_path_factory.mktemp("stack")
    price_file = workdir / "prices.yaml"
    price_file.write_text(PRICE_FILE)
    registries = [CollectorRegistry(), CollectorRegistry()]
    with serve(create_simulator(SimConfig(ttft=0.02, chunk_gap=0.001))) as sim:
        settings = Settings(upstream_url=sim.url + "/v1", price_file=price_file)
        apps = [
            create_app(settings, registry=r, tracer_provider=TracerProvider(), otel_from_env=False, strict=True)
            for r in registries
        ]
        with serve(apps[0]) as proxy, serve(apps[1]) as canary:
            instances = {"llmobs": proxy.url.removeprefix("http://"), CANARY_JOB: canary.url.removeprefix("http://")}
            config = retargeted_config(instances["llmobs"], also={CANARY_JOB: instances[CANARY_JOB]})
            prom = Prometheus(config, workdir).start()
            try:
                base_url, canary_url = proxy.url + "/v1", canary.url + "/v1"
                audit_all: Usage = {"tokens": 0.0, "cost": 0.0}
                asyncio.run(warm_up(base_url, audit_all))
                asyncio.run(warm_up_canary(canary_url))
                settle(*apps)
                wait_scraped(prom, registries)
                tokens_before = exposed(registries, "llmobs_tokens_total", type="input|output")
                start = time.time()
                audit_window: Usage = {"tokens": 0.0, "cost": 0.0}
                asyncio.run(measured(base_url, canary_url, audit_window))
                settle(*apps)
                wait_scraped(prom, registries)
                end = time.time()
                for key in audit_all:
                    audit_all[key] += audit_window[key]
                yield Stack(prom, registries, instances, start, end, audit_window, audit_all, tokens_before)
            finally:
                prom.stop()


# --- every query of every dashboard, unfiltered and filtered ----------------------------------


def queries() -> list[PanelQuery]:
    return [q for name, model in DASHBOARDS.items() for q in panel_queries(name, model)]


def evaluate_every_panel(stack: Stack, variables: dict[str, str]) -> None:
    errors, data = [], {}
    for q in queries():
        try:
            result = stack.run(q, **variables)
        except AssertionError as exc:
            errors.append(f"{q.dashboard} / {q.panel}: {exc}")
            continue
        key = (q.dashboard, base_title(q.panel))
        data[key] = data.get(key, False) or has_values(result)
    assert not errors, "\n".join(errors)
    empty = {
        f"{dashboard}: {panel}" for (dashboard, panel), has in data.items() if not has and panel not in MAY_BE_EMPTY
    }
    assert not empty, f"panels without data: {sorted(empty)}"


def test_every_panel_of_every_dashboard_has_data_with_the_filters_at_all(stack: Stack) -> None:
    assert {q.dashboard for q in queries()} == {"overview.json", "model.json", "tenant.json"}
    evaluate_every_panel(stack, ALL)


def test_every_panel_of_every_dashboard_has_data_with_every_filter_at_one_value(stack: Stack) -> None:
    assert set(stack.one) == set(FILTERS)
    evaluate_every_panel(stack, stack.one)


@pytest.mark.parametrize("label", FILTERS)
def test_each_filter_narrows_the_totals(stack: Stack, label: str) -> None:
    everything = stack.panel_value("overview.json", "Tokens (range)")
    narrowed = stack.panel_value("overview.json", "Tokens (range)", **{label: stack.one[label]})
    assert 0 < narrowed < everything
    assert stack.panel_value("tenant.json", "Spend (range)", **stack.one) < stack.panel_value(
        "tenant.json", "Spend (range)"
    )


def variable_values(stack: Stack, filename: str, name: str, **variables: str) -> set[str]:
    """What Grafana would offer for a variable, given the values of the ones before it."""
    (variable,) = [v for v in DASHBOARDS[filename]["templating"]["list"] if v["name"] == name]
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
    assert match, variable["query"]
    selector = stack.substitute(match.group(1), **variables)
    return set(stack.prom.api(f"label/{match.group(2)}/values", **{"match[]": selector}))


@pytest.mark.parametrize("filename", sorted(DASHBOARDS))
def test_template_variable_queries_return_the_traffic_labels(stack: Stack, filename: str) -> None:
    assert variable_values(stack, filename, "job") == {"llmobs", CANARY_JOB}
    assert variable_values(stack, filename, "instance") == set(stack.instances.values())
    assert {"sim-model", "sim-reasoning", "sim-embedding"} <= variable_values(stack, filename, "model")
    assert {"chat_completions", "completions", "embeddings", "responses"} <= variable_values(
        stack, filename, "endpoint"
    )
    assert {"acme", "globex", "initech", AUDIT} <= variable_values(stack, filename, "tenant")


def test_variables_chain_instance_on_job_and_model_on_endpoint(stack: Stack) -> None:
    canary = variable_values(stack, "overview.json", "instance", job=CANARY_JOB)
    assert canary == {stack.instances[CANARY_JOB]}
    embedding = variable_values(stack, "overview.json", "model", endpoint="embeddings")
    assert embedding == {"sim-embedding"}
    # The audit tenant only uses the primary proxy.
    assert AUDIT not in variable_values(stack, "overview.json", "tenant", job=CANARY_JOB)
    assert AUDIT in variable_values(stack, "overview.json", "tenant", job="llmobs")


def test_totals_agree_with_what_the_clients_saw(stack: Stack) -> None:
    # Exact: the raw counters Prometheus scraped equal the usage the audit client received.
    tokens = stack.prom.scalar(f'sum(llmobs_tokens_total{{tenant="{AUDIT}", type=~"input|output"}})')
    assert tokens == stack.audit_all["tokens"]
    cost = stack.prom.scalar(f'sum(llmobs_cost_usd_total{{tenant="{AUDIT}"}})')
    assert cost == pytest.approx(stack.audit_all["cost"], rel=1e-9)
    # The dashboards' increase() over the range extrapolates to the window's edges: close, not exact.
    audit = {"tenant": AUDIT}
    assert stack.panel_value("model.json", "Tokens (range)", **audit) == pytest.approx(
        stack.audit_window["tokens"], rel=0.15
    )
    assert stack.panel_value("model.json", "Cost (range)", **audit) == pytest.approx(
        stack.audit_window["cost"], rel=0.15
    )
    in_window = exposed(stack.registries, "llmobs_tokens_total", type="input|output") - stack.tokens_before
    assert stack.panel_value("overview.json", "Tokens (range)") == pytest.approx(in_window, rel=0.15)


def test_finish_reasons_and_failures_show_the_traffic_mix(stack: Stack) -> None:
    (q,) = [
        q
        for q in panel_queries("overview.json", DASHBOARDS["overview.json"])
        if base_title(q.panel) == "Finish reasons (range)"
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
