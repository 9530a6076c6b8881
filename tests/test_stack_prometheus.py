"""The stack, proven: a real Prometheus scrapes real llmobs proxies, and every dashboard query evaluates.

Prometheus runs with the repository's scrape config (retargeted to the proxies under test, 1 s
interval) and rule files. Two proxies in front of one simulator are scraped as two jobs, so
`job` and `instance` have two values each. Traffic comes from the demo's own load generator on
both, plus an `audit` tenant whose every response shows its usage (totals are checked against
the client), plus drill mixes for one tenant: every kind of request for one model of each API
(chat, Anthropic messages, images, transcriptions, Realtime), so that a dashboard filtered down
to one value of every variable still has data in every panel about that API. The text drills
include tool calls (two tool names on chat), an empty answer and a JSON-mode answer that is not
JSON; beside them, a Responses tool call and a refusal from each text API (model sim-refusal).

A third proxy, scraped as a job of its own, has tight limits (a series budget of 10, bodies of at
most 4 KiB): its traffic folds labels into `other` and leaves responses unread, so that the
proxy-health panels about those have data. Every proxy publishes the same budget file.

The primary proxy has two routes besides its default upstream: `/openai` (the drill mixes of the
OpenAI APIs) and `/anthropic` (Anthropic's SDK). The default upstream's `upstream` label is
empty, which a Grafana variable cannot offer as a value (only All includes it), so every drill
mix goes through a route whose prefix can be picked.
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

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from llmobs.app import LLMObs, create_app
from llmobs.config import Route, Settings
from llmobs.dashboards import FILTERS, PanelQuery, build_dashboards, panel_queries
from llmobs.dashboards.tools import JUDGED, NATURAL_END
from llmobs.sim import SimConfig
from llmobs.sim import create_app as create_simulator
from llmobs.sim.openai_media import AUDIO_BYTES_PER_SECOND
from llmobs.sim.openai_realtime import SILENCE
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
  sim-refusal: {input: 1.0, output: 2.0}
"""
AUDIT = "audit"
CANARY_JOB = "llmobs-canary"  # the second scrape job, one more proxy
TIGHT_JOB = "llmobs-tight"  # the third: label overflow and unread responses
TIGHT_BODY_BYTES = 4096
BUDGETS = {AUDIT: {"day": 0.02, "month": 0.5}, "acme": {"day": 5, "month": 100}, "globex": {"day": 5}}
BUDGET_FILE = "budgets:\n" + "".join(
    f"  {tenant}: {{{', '.join(f'{period}: {usd}' for period, usd in periods.items())}}}\n"
    for tenant, periods in BUDGETS.items()
)
RATE_INTERVAL = "5s"  # Grafana's floor is 4 x the scrape interval (1 s here)
TRAFFIC_SECONDS = 6.0
# Panels that may rightly be empty after healthy traffic (titles without the "· all ..." marker).
MAY_BE_EMPTY = {"Telemetry errors / s by component"}
OPENAI_ROUTE, ANTHROPIC_ROUTE = "/openai", "/anthropic"
CLAUDE = "claude-sonnet-4-6"
REFUSAL = "sim-refusal"  # the simulator refuses (chat, Responses and Anthropic Messages)
# One value of every filter but job and instance (the primary proxy, known at start-up) per drill
# mix, each a strict subset of the traffic: the drill mixes give their model and tenant every
# request kind of their API.
DRILL = {
    "job": "llmobs",
    "upstream": OPENAI_ROUTE,
    "endpoint": "chat_completions",
    "model": "sim-reasoning",
    "tenant": "acme",
}
SELECTIONS = {
    "chat": DRILL,
    "messages": {**DRILL, "upstream": ANTHROPIC_ROUTE, "endpoint": "messages", "model": CLAUDE},
    "images": {**DRILL, "endpoint": "images_generations", "model": "gpt-image-1"},
    "audio": {**DRILL, "endpoint": "audio_transcriptions", "model": "whisper-1"},
    "realtime": {**DRILL, "endpoint": "realtime", "model": "gpt-realtime"},
}
# Text APIs: every panel outside the rows about media and Realtime has data for each of them.
TEXT_SELECTIONS = ("chat", "messages")
# Rows about one kind of API: each of their panels has data for some selection.
API_ROWS = {"Media", "Realtime and WebSockets", "Media and Realtime"}
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
        ("sim-ratelimit", False),  # a 429 with the rate-limit headers saying nothing is left
        ("sim-error-429", False),  # a 429 without them; the random mix may draw none in the window
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


# The simulator calls the first tool offered: with this list first, `weather`; with LOADGEN's, `search`.
WEATHER_FUNCTION: list[Any] = [
    {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}
]
EMPTY_ANSWER = {"x-sim-output-tokens": "0"}  # no text, no tool call, no refusal: empty_answer


async def drill(api: openai.AsyncOpenAI) -> None:
    """Every request kind for the DRILL model and tenant on chat completions: streamed (TTFT,
    reasoning), truncated, tool calls of two tools, a prompt-cache hit, an empty answer, a
    JSON-mode answer that is not JSON (the simulator ignores response_format), and an upstream 400."""
    model, headers = DRILL["model"], {LOADGEN.TENANT_HEADER: DRILL["tenant"]}
    chat = api.chat.completions
    await LOADGEN.drain(await chat.create(model=model, messages=LOADGEN.PROMPT, stream=True, extra_headers=headers))
    await LOADGEN.drain(
        await chat.create(model=model, messages=LOADGEN.PROMPT, stream=True, max_tokens=3, extra_headers=headers)
    )
    await chat.create(model=model, messages=LOADGEN.PROMPT, tools=LOADGEN.TOOLS, extra_headers=headers)
    tools = WEATHER_FUNCTION + LOADGEN.TOOLS
    await chat.create(model=model, messages=LOADGEN.PROMPT, tools=tools, extra_headers=headers)
    await chat.create(model=model, messages=LOADGEN.PROMPT, extra_headers={**headers, **EMPTY_ANSWER})
    json_mode: Any = {"type": "json_object"}
    await chat.create(model=model, messages=LOADGEN.PROMPT, response_format=json_mode, extra_headers=headers)
    await chat.create(
        model=model, messages=LOADGEN.PROMPT, extra_body={"prompt_cache_key": "drill"}, extra_headers=headers
    )
    with pytest.raises(openai.BadRequestError):  # the simulator refuses max_tokens < 0
        await chat.create(model=model, messages=LOADGEN.PROMPT, max_tokens=-1, extra_headers=headers)


ASK: list[Any] = [{"role": "user", "content": "what is the weather"}]
CACHED_SYSTEM: list[Any] = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
WEATHER_TOOL: list[Any] = [{"name": "weather", "input_schema": {"type": "object", "properties": {}}}]
JSON_OUTPUT: Any = {"format": {"type": "json_schema", "schema": {"type": "object"}}}
SEARCH_FUNCTION: list[Any] = [{"type": "function", "name": "search", "parameters": {"type": "object"}, "strict": False}]
WAV = bytes(AUDIO_BYTES_PER_SECOND * 3 // 2)  # 1.5 s of silence, as the simulator counts it
PNG = b"\x89PNG\r\n\x1a\n" + bytes(2000)  # what an edit uploads; the simulator counts its bytes


async def messages_drill(api: anthropic.AsyncAnthropic) -> None:
    """Every Messages request kind for the messages selection: a thinking stream (TTFT, reasoning),
    a prompt-cache read, a max_tokens cut, a tool call, an empty answer, a JSON-mode answer that is
    not JSON (the simulator ignores output_config), and an upstream 400."""
    model, headers = CLAUDE, {LOADGEN.TENANT_HEADER: DRILL["tenant"]}
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    async with api.messages.stream(
        model=model, max_tokens=2048, thinking=thinking, messages=ASK, extra_headers=headers
    ) as stream:
        async for _ in stream:
            pass
    async with api.messages.stream(model=model, max_tokens=3, messages=ASK, extra_headers=headers) as stream:
        async for _ in stream:
            pass
    await api.messages.create(
        model=model, max_tokens=64, system=CACHED_SYSTEM, messages=ASK, extra_headers={**headers, "x-sim-cache": "read"}
    )
    await api.messages.create(model=model, max_tokens=64, tools=WEATHER_TOOL, messages=ASK, extra_headers=headers)
    await api.messages.create(model=model, max_tokens=64, messages=ASK, extra_headers={**headers, **EMPTY_ANSWER})
    await api.messages.create(
        model=model, max_tokens=64, messages=ASK, extra_body={"output_config": JSON_OUTPUT}, extra_headers=headers
    )
    with pytest.raises(anthropic.BadRequestError):  # the simulator refuses a thinking budget under 1024
        await api.messages.create(
            model=model,
            max_tokens=64,
            thinking={"type": "enabled", "budget_tokens": 10},
            messages=ASK,
            extra_headers=headers,
        )


async def answers(api: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic) -> None:
    """Tool calls and refusals beside the text selections: a Responses function call for the DRILL
    model, and a refusal from chat, Responses and Messages (model sim-refusal)."""
    headers = {LOADGEN.TENANT_HEADER: DRILL["tenant"]}
    await api.responses.create(model=DRILL["model"], input="find it", tools=SEARCH_FUNCTION, extra_headers=headers)
    await api.chat.completions.create(model=REFUSAL, messages=LOADGEN.PROMPT, extra_headers=headers)
    await api.responses.create(model=REFUSAL, input="do it", extra_headers=headers)
    await claude.messages.create(model=REFUSAL, max_tokens=64, messages=ASK, extra_headers=headers)


async def media(api: openai.AsyncOpenAI) -> None:
    """Images (generated and edited), transcriptions (billed seconds and tokens), speech and a moderation."""
    headers = {LOADGEN.TENANT_HEADER: DRILL["tenant"]}
    await api.images.generate(model="gpt-image-1", prompt="a red cat", quality="low", extra_headers=headers)
    await api.images.edit(
        model="gpt-image-1", image=("cat.png", PNG, "image/png"), prompt="blue", extra_headers=headers
    )
    for model in ("whisper-1", "gpt-4o-transcribe"):
        await api.audio.transcriptions.create(model=model, file=("a.wav", WAV, "audio/wav"), extra_headers=headers)
    async with api.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Hello there.", extra_headers=headers
    ) as speech:
        await speech.read()
    await api.moderations.create(input="a kind word", extra_headers=headers)


async def realtime(api: openai.AsyncOpenAI) -> None:
    """One Realtime session: spoken input, one spoken answer, a normal close."""
    headers = {LOADGEN.TENANT_HEADER: DRILL["tenant"]}
    async with api.realtime.connect(model="gpt-realtime", extra_headers=headers) as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.input_audio_buffer.append(audio=SILENCE * 3)
        await conn.input_audio_buffer.commit()
        await conn.response.create(response={"output_modalities": ["audio"]})
        async for event in conn:
            if event.type == "response.done":
                break


class Drills:
    """The drill mixes, each through its SDK and the primary proxy's route for its API."""

    def __init__(self, proxy_url: str) -> None:
        self.openai = LOADGEN.client(proxy_url + OPENAI_ROUTE)
        self.anthropic = anthropic.AsyncAnthropic(
            base_url=proxy_url + ANTHROPIC_ROUTE, api_key="demo-key", max_retries=0, timeout=60
        )
        self.mixes = [
            lambda: drill(self.openai),
            lambda: messages_drill(self.anthropic),
            lambda: answers(self.openai, self.anthropic),
            lambda: media(self.openai),
            lambda: realtime(self.openai),
        ]

    async def once(self) -> None:
        for mix in self.mixes:
            await mix()

    async def until(self, deadline: float) -> None:
        """Every mix over and over, side by side, until `deadline`."""

        async def repeat(mix: Any) -> None:
            while time.monotonic() < deadline:
                await mix()

        await asyncio.gather(*(repeat(mix) for mix in self.mixes))

    async def close(self) -> None:
        await self.openai.close()
        await self.anthropic.close()


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
    drills = Drills(base_url.removesuffix("/v1"))
    await drills.once()
    await drills.close()


async def warm_up_canary(base_url: str) -> None:
    """Every scenario once per tenant through the second proxy."""
    api = LOADGEN.client(base_url)
    for scenario, _ in LOADGEN.SCENARIOS:
        for tenant in LOADGEN.TENANTS:
            await LOADGEN.run_one(api, scenario, tenant)
    await api.close()


async def tight(base_url: str, rounds: int = 1, deadline: float = 0.0) -> None:
    """On the tight proxy: more tenants than its series budget (their labels fold into `other`),
    and an answer longer than its max_body_bytes (relayed, not read for accounting)."""
    api = LOADGEN.client(base_url)
    done = 0
    while done < rounds or time.monotonic() < deadline:
        for i in range(12):
            await LOADGEN.run_one(api, LOADGEN.chat, f"team-{i}")
        await api.chat.completions.create(
            model="sim-model",
            messages=LOADGEN.PROMPT,
            extra_headers={LOADGEN.TENANT_HEADER: "acme", "x-sim-output-tokens": str(TIGHT_BODY_BYTES // 4)},
        )
        done += 1
    await api.close()


async def measured(base_url: str, canary_url: str, totals: Usage, tight_url: str) -> None:
    """The demo's random mix for a few seconds on both proxies, alongside steady audited requests
    and drill mixes on the primary."""
    random.seed(1234)
    api = LOADGEN.client(base_url)
    deadline = time.monotonic() + TRAFFIC_SECONDS

    async def audit_loop() -> None:
        while time.monotonic() < deadline:
            await audited(api, totals)

    drills = Drills(base_url.removesuffix("/v1"))
    await asyncio.gather(
        LOADGEN.generate(base_url, 25.0, TRAFFIC_SECONDS),
        LOADGEN.generate(canary_url, 8.0, TRAFFIC_SECONDS),
        audit_loop(),
        drills.until(deadline),
        faults(api),
        tight(tight_url, rounds=0, deadline=deadline),
    )
    await api.close()
    await drills.close()


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
        # Every filter at one value that exists in the data: the primary proxy, a drill mix.
        self.selections = {
            name: {f: grafana_regex(v) for f, v in {**values, "instance": instances["llmobs"]}.items()}
            for name, values in SELECTIONS.items()
        }
        self.one = self.selections["chat"]

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
    budget_file = workdir / "budgets.yaml"
    budget_file.write_text(BUDGET_FILE)
    registries = [CollectorRegistry(), CollectorRegistry(), CollectorRegistry()]
    with serve(create_simulator(SimConfig(ttft=0.02, chunk_gap=0.001))) as sim:
        routes = [
            Route(prefix=OPENAI_ROUTE, url=sim.url + "/v1", provider="openai"),
            Route(prefix=ANTHROPIC_ROUTE, url=sim.url, provider="anthropic"),
        ]
        settings = Settings(upstream_url=sim.url + "/v1", price_file=price_file, budget_file=budget_file)
        tight_settings = settings.model_copy(update={"max_series_per_metric": 10, "max_body_bytes": TIGHT_BODY_BYTES})
        apps = [
            create_app(s, registry=r, tracer_provider=TracerProvider(), otel_from_env=False, strict=True)
            for s, r in zip(
                (settings.model_copy(update={"routes": routes}), settings, tight_settings), registries, strict=True
            )
        ]
        with serve(apps[0]) as proxy, serve(apps[1]) as canary, serve(apps[2]) as tight_proxy:
            instances = {
                "llmobs": proxy.url.removeprefix("http://"),
                CANARY_JOB: canary.url.removeprefix("http://"),
                TIGHT_JOB: tight_proxy.url.removeprefix("http://"),
            }
            config = retargeted_config(
                instances["llmobs"], also={job: instances[job] for job in (CANARY_JOB, TIGHT_JOB)}
            )
            prom = Prometheus(config, workdir).start()
            try:
                base_url, canary_url = proxy.url + "/v1", canary.url + "/v1"
                audit_all: Usage = {"tokens": 0.0, "cost": 0.0}
                asyncio.run(warm_up(base_url, audit_all))
                asyncio.run(warm_up_canary(canary_url))
                asyncio.run(tight(tight_proxy.url + "/v1"))
                settle(*apps)
                wait_scraped(prom, registries)
                tokens_before = exposed(registries, "llmobs_tokens_total", type="input|output")
                start = time.time()
                audit_window: Usage = {"tokens": 0.0, "cost": 0.0}
                asyncio.run(measured(base_url, canary_url, audit_window, tight_proxy.url + "/v1"))
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


def rows(filename: str) -> dict[str, str]:
    """Panel title (without its marker) -> the title of the row it is in."""
    found, row = {}, ""
    for panel in DASHBOARDS[filename]["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
        else:
            assert base_title(panel["title"]) not in found, panel["title"]
            found[base_title(panel["title"])] = row
    return found


ROWS = {(filename, title): row for filename in DASHBOARDS for title, row in rows(filename).items()}


def panels_with_data(stack: Stack, variables: dict[str, str]) -> dict[tuple[str, str], bool]:
    """(dashboard, panel) -> whether any of its queries returned a number; every query must evaluate."""
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
    return data


def empty(data: dict[tuple[str, str], bool]) -> set[str]:
    return {
        f"{dashboard}: {panel}" for (dashboard, panel), has in data.items() if not has and panel not in MAY_BE_EMPTY
    }


def test_every_panel_of_every_dashboard_has_data_with_the_filters_at_all(stack: Stack) -> None:
    assert {q.dashboard for q in queries()} == {"overview.json", "model.json", "tenant.json"}
    missing = empty(panels_with_data(stack, ALL))
    assert not missing, f"panels without data: {sorted(missing)}"


@pytest.mark.parametrize("selection", TEXT_SELECTIONS)
def test_every_panel_has_data_with_every_filter_at_one_value_of_a_text_api(stack: Stack, selection: str) -> None:
    variables = stack.selections[selection]
    assert set(variables) == set(FILTERS)
    data = panels_with_data(stack, variables)
    missing = empty({key: has for key, has in data.items() if ROWS[key] not in API_ROWS})
    assert not missing, f"panels without data: {sorted(missing)}"


def test_every_media_and_realtime_panel_has_data_with_every_filter_at_one_value(stack: Stack) -> None:
    assert all(set(v) == set(FILTERS) for v in stack.selections.values())
    found: dict[tuple[str, str], bool] = {}
    for variables in stack.selections.values():
        for key, has in panels_with_data(stack, variables).items():
            found[key] = found.get(key, False) or has
    missing = empty({key: has for key, has in found.items() if ROWS[key] in API_ROWS})
    assert not missing, f"panels without data for any one value of every filter: {sorted(missing)}"


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
    assert variable_values(stack, filename, "job") == {"llmobs", CANARY_JOB, TIGHT_JOB}
    assert variable_values(stack, filename, "instance") == set(stack.instances.values())
    # The default upstream's label is empty: Prometheus has no such value, only All matches it.
    assert variable_values(stack, filename, "upstream") == {OPENAI_ROUTE, ANTHROPIC_ROUTE}
    models = {"sim-model", "sim-reasoning", "sim-embedding", CLAUDE, "gpt-image-1", "whisper-1", "gpt-realtime"}
    assert models <= variable_values(stack, filename, "model")
    endpoints = {"chat_completions", "completions", "embeddings", "responses", "messages", "realtime"}
    endpoints |= {"images_generations", "images_edits", "audio_transcriptions", "audio_speech", "moderations"}
    assert endpoints <= variable_values(stack, filename, "endpoint")
    assert {"acme", "globex", "initech", AUDIT} <= variable_values(stack, filename, "tenant")


def test_variables_chain_instance_on_job_and_model_on_endpoint(stack: Stack) -> None:
    canary = variable_values(stack, "overview.json", "instance", job=CANARY_JOB)
    assert canary == {stack.instances[CANARY_JOB]}
    assert variable_values(stack, "overview.json", "upstream", job=CANARY_JOB) == set()  # no routes there
    assert variable_values(stack, "overview.json", "endpoint", upstream=ANTHROPIC_ROUTE) == {"messages"}
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


def panel_series(stack: Stack, filename: str, title: str, **variables: str) -> list[dict[str, Any]]:
    """The series of every query of one panel."""
    found = [q for q in panel_queries(filename, DASHBOARDS[filename]) if base_title(q.panel) == title]
    assert found, title
    return [series for q in found for series in stack.run(q, **variables)]


def test_upstreams_are_named_with_their_provider_once_across_replicas(stack: Stack) -> None:
    # Every proxy exports the default upstream's info: the join still finds one provider per upstream.
    assert len(stack.prom.query('llmobs_upstream_info{upstream=""}')) == 3
    for title in ("Requests / s by upstream", "Cost burn by upstream ($/h)"):
        series = panel_series(stack, "overview.json", title)
        named = [(s["metric"].get("upstream"), s["metric"].get("provider")) for s in series]
        assert sorted(named, key=str) == [("(default)", None), (ANTHROPIC_ROUTE, "anthropic"), (OPENAI_ROUTE, "openai")]
    # The table's requests and cost columns: one row per upstream, with its provider and host.
    cells = [s["metric"] for s in panel_series(stack, "overview.json", "Upstreams (range)")]
    assert len(cells) == 2 * 3
    for cell in cells:
        providers = {"(default)": None, ANTHROPIC_ROUTE: "anthropic", OPENAI_ROUTE: "openai"}
        assert cell.get("provider") == providers[cell["upstream"]] and cell["host"] == "127.0.0.1"


def test_realtime_and_media_panels_show_the_sessions_and_media_sent(stack: Stack) -> None:
    closed = panel_series(stack, "overview.json", "Sessions / s by close code and outcome")
    assert {(s["metric"]["close_code"], s["metric"]["outcome"]) for s in closed} == {("1000", "completed")}
    directions = panel_series(stack, "overview.json", "WebSocket bytes / s each way")
    assert {s["metric"]["direction"] for s in directions} == {"from_client", "from_upstream"}
    responses = panel_series(stack, "overview.json", "Realtime responses / s by model")
    assert {s["metric"]["model"] for s in responses} == {"gpt-realtime"}
    shares = {
        s["metric"]["model"]
        for s in panel_series(stack, "overview.json", "Audio and image share of tokens by model")
        if has_values([s])
    }
    # Only models that report audio or image tokens have a share; text models do not dilute it.
    assert shares == {"gpt-realtime", "gpt-image-1", "gpt-4o-transcribe"}
    images = panel_series(stack, "overview.json", "Images / s by model")
    assert {s["metric"]["model"] for s in images} == {"gpt-image-1"}
    audio = panel_series(stack, "overview.json", "Audio seconds / s by model")
    assert {s["metric"]["model"] for s in audio} == {"whisper-1"}


def test_latency_exemplars_carry_trace_ids(stack: Stack) -> None:
    expr = stack.substitute("sum by (le) (rate(llmobs_time_to_first_token_seconds_bucket[$__rate_interval]))")
    found = stack.prom.api("query_exemplars", query=expr, start=stack.start - 30, end=stack.end)
    trace_ids = {e["labels"].get("trace_id") for series in found for e in series["exemplars"]}
    assert trace_ids and all(re.fullmatch(r"[0-9a-f]{32}", t or "") for t in trace_ids)


def test_every_rule_evaluates_and_the_unpriced_model_alert_fires(stack: Stack) -> None:
    groups = stack.prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 25
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad
    assert has_values(stack.prom.query("model:llmobs_requests:rate5m"))
    assert has_values(stack.prom.query("llmobs:cost_usd_per_hour:rate1h"))
    firing = stack.prom.query('ALERTS{alertname="LLMObsUnpricedModel", alertstate="firing"}')
    assert {a["metric"]["model"] for a in firing} == {"sim-reasoning-content"}


def nonzero(series: dict[str, Any]) -> bool:
    return any(float(v) > 0 for _, v in series.get("values") or [series["value"]])


def test_rate_limit_panels_show_the_simulators_headers_and_the_429s(stack: Stack) -> None:
    headroom = panel_series(stack, "overview.json", "Rate-limit headroom by upstream and model")
    seen = {(s["metric"]["upstream"], s["metric"]["model"], s["metric"]["resource"]) for s in headroom}
    # Each API's headers, through its route: OpenAI's two resources, Anthropic's four, Realtime's event.
    assert {("/openai", "sim-reasoning", r) for r in ("requests", "tokens")} <= seen
    assert {("/anthropic", CLAUDE, r) for r in ("requests", "tokens", "input_tokens", "output_tokens")} <= seen
    assert {("/openai", "gpt-realtime", "tokens"), ("(default)", "sim-model", "tokens")} <= seen
    assert all(0 <= float(v) <= 1 for s in headroom for _, v in s["values"])
    # sim-ratelimit's 429 said no request was left.
    assert ("(default)", "sim-ratelimit", "requests") in seen
    assert stack.prom.scalar('max(llmobs_ratelimit_remaining{model="sim-ratelimit", resource="requests"})') == 0
    resets = panel_series(stack, "overview.json", "Rate-limit reset by upstream and model")
    assert resets and all(0 <= float(v) <= 61 for s in resets for _, v in s["values"])
    limited = panel_series(stack, "model.json", "Rate-limited requests (429) / s by model")
    assert {s["metric"]["model"] for s in limited if nonzero(s)} == {"sim-ratelimit", "sim-error-429"}
    assert has_values(stack.prom.query("upstream_model:llmobs_ratelimit_remaining_tokens:ratio"))


@pytest.mark.parametrize(("period", "title"), [("day", "Daily budget used"), ("month", "Monthly budget used")])
def test_budget_panels_show_spend_against_the_budget_file(stack: Stack, period: str, title: str) -> None:
    (panel,) = [p for p in DASHBOARDS["tenant.json"]["panels"] if p["title"].startswith(title)]
    used = {
        s["metric"]["tenant"]: float(s["value"][1])
        for s in panel_series(stack, "tenant.json", base_title(panel["title"]))
    }
    assert set(used) == {tenant for tenant, periods in BUDGETS.items() if period in periods}
    # Over the test's range (the dashboard's own is a day or 30 days): the audit tenant's spend.
    assert used[AUDIT] == pytest.approx(stack.audit_window["cost"] / BUDGETS[AUDIT][period], rel=0.15)
    budgets = stack.prom.query(f'max by (tenant) (llmobs_budget_usd{{period="{period}"}})')
    assert {b["metric"]["tenant"]: float(b["value"][1]) for b in budgets} == {
        tenant: periods[period] for tenant, periods in BUDGETS.items() if period in periods
    }
    assert has_values(stack.prom.query(f'tenant:llmobs_budget_used:ratio{{period="{period}"}}'))


def test_proxy_health_panels_show_unread_responses_and_label_overflow(stack: Stack) -> None:
    unread = panel_series(stack, "overview.json", "Unread responses / s by endpoint and reason")
    # The SDK asks for gzip: the long answer would inflate past max_body_bytes, so it is not read.
    assert {(s["metric"]["endpoint"], s["metric"]["reason"]) for s in unread if nonzero(s)} == {
        ("chat_completions", "undecodable_body")
    }
    overflow = panel_series(stack, "overview.json", "Label overflow / s by metric")
    folded = {s["metric"]["metric"] for s in overflow if nonzero(s)}
    assert {"llmobs_requests", "llmobs_tokens", "llmobs_cost_usd"} <= folded
    # Only the tight proxy folded or skipped anything: the primary's own figures are whole.
    primary = stack.instances["llmobs"]
    assert not stack.prom.query(f'llmobs_label_overflow_total{{instance="{primary}"}}')
    assert panel_series(stack, "overview.json", "Label overflow / s by metric", instance=grafana_regex(primary))


def test_tool_and_quality_panels_show_the_calls_and_issues_sent(stack: Stack) -> None:
    tools = {s["metric"]["tool"] for s in panel_series(stack, "overview.json", "Top tools (range)")}
    assert tools == {"search", "weather"}
    chat = panel_series(stack, "model.json", "Tool calls / s by tool", **stack.selections["chat"])
    assert {s["metric"]["tool"] for s in chat if nonzero(s)} == {"search", "weather"}
    called = stack.prom.query("sum by (endpoint, tool) (llmobs_tool_calls_total)")
    assert {("responses", "search"), ("messages", "weather")} <= {
        (s["metric"]["endpoint"], s["metric"]["tool"]) for s in called
    }
    ratios = panel_series(stack, "overview.json", "Quality issue ratio by issue and model")
    issues = {(s["metric"]["model"], s["metric"]["issue"]) for s in ratios if nonzero(s)}
    drilled = {(m, i) for m in (DRILL["model"], CLAUDE) for i in ("empty_answer", "invalid_json")}
    assert drilled | {(REFUSAL, "refusal")} <= issues
    # A share: never more issues of a kind than judged answers, counted on a proxy whose series are whole.
    # (The tight proxy folds each family's late label sets into `other` on its own; and rate() extrapolates
    # each series on its own, so a model whose every answer has the issue reads about 1, a little either side.)
    primary = stack.instances["llmobs"]
    judged = f'sum by (model) (llmobs_finish_reasons_total{{instance="{primary}",{JUDGED},{NATURAL_END}}})'
    counts = f'sum by (model, issue) (llmobs_quality_issues_total{{instance="{primary}"}})'
    shares = stack.prom.query(f"{counts} / on (model) group_left {judged}")
    assert shares and all(0 < float(s["value"][1]) <= 1 for s in shares)
    refused = stack.prom.query('sum by (endpoint) (llmobs_quality_issues_total{issue="refusal"})')
    assert {s["metric"]["endpoint"] for s in refused} == {"chat_completions", "responses", "messages"}
    # The chat selection offered no tool, one and two: some requests offered tools, not all.
    (offering,) = panel_series(stack, "model.json", "Requests offering tools", **stack.selections["chat"])
    shares = [float(v) for _, v in offering["values"] if not math.isnan(float(v))]
    assert all(0 <= v <= 1 for v in shares) and any(0 < v < 1 for v in shares)
