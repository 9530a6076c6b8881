"""`llmobs demo`: simulated upstream + proxy + mixed traffic, then a summary read from /metrics."""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from llmobs.dev.metrics_text import Samples, histogram_quantile, read_metrics

DEMO_PRICES = """\
# Prices for the demo's self-hosted models, USD per million tokens.
models:
  local-reasoner:
    input: 0.50
    output: 1.50
    cache_read: 0.05
"""
TENANTS = ("team-search", "team-chat", "batch-jobs")
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Summarise the plot of Hamlet in one line please."},
]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


def _traffic() -> list[tuple[int, str, Callable[[Any, dict[str, str]], None]]]:
    """(weight, label, call) for the mixed traffic; each call uses the official SDK."""

    def chat_stream(c: Any, h: dict[str, str]) -> None:
        for _ in c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=h):
            pass

    def chat(c: Any, h: dict[str, str]) -> None:
        c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, prompt_cache_key="demo", extra_headers=h)

    def truncated(c: Any, h: dict[str, str]) -> None:
        for _ in c.chat.completions.create(
            model="gpt-4.1", messages=MESSAGES, max_tokens=8, stream=True, extra_headers=h
        ):
            pass

    def tools(c: Any, h: dict[str, str]) -> None:
        c.chat.completions.create(model="gpt-4.1", messages=MESSAGES, tools=TOOLS, extra_headers=h)

    def reasoning(c: Any, h: dict[str, str]) -> None:
        for _ in c.chat.completions.create(model="local-reasoner", messages=MESSAGES, stream=True, extra_headers=h):
            pass

    def responses(c: Any, h: dict[str, str]) -> None:
        for _ in c.responses.create(model="gpt-4o-mini", input="Name three rivers.", stream=True, extra_headers=h):
            pass

    def legacy(c: Any, h: dict[str, str]) -> None:
        c.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon a time", max_tokens=12, extra_headers=h)

    def embeddings(c: Any, h: dict[str, str]) -> None:
        c.embeddings.create(model="text-embedding-3-small", input=["red apples", "green pears"], extra_headers=h)

    def unpriced(c: Any, h: dict[str, str]) -> None:
        c.chat.completions.create(model="my-finetune-7b", messages=MESSAGES, extra_headers=h)

    def rate_limited(c: Any, h: dict[str, str]) -> None:
        c.chat.completions.create(model="sim-error-429", messages=MESSAGES, extra_headers=h)

    return [
        (6, "chat stream", chat_stream),
        (4, "chat", chat),
        (2, "truncated", truncated),
        (2, "tool call", tools),
        (3, "reasoning", reasoning),
        (3, "responses", responses),
        (2, "completions", legacy),
        (2, "embeddings", embeddings),
        (1, "unpriced", unpriced),
        (1, "error 429", rate_limited),
    ]


def _drive(base_url: str, duration: float, concurrency: int, progress: Callable[[str, bool], None]) -> None:
    import openai

    traffic = _traffic()
    weights = [w for w, _, _ in traffic]
    deadline = time.monotonic() + duration

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        client = openai.OpenAI(base_url=base_url, api_key=f"sk-demo-{seed % 2}", max_retries=0, timeout=30)
        while time.monotonic() < deadline:
            _, label, call = rng.choices(traffic, weights)[0]
            headers = {"x-llmobs-tenant": rng.choice(TENANTS)}
            try:
                call(client, headers)
                progress(label, True)
            except openai.APIError:
                progress(label, False)
        client.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_demo(duration: float = 15.0, concurrency: int = 4, console: Console | None = None) -> int:
    """Run the tour; return the process exit code."""
    import httpx2 as httpx

    from llmobs.app import create_app
    from llmobs.config import Settings
    from llmobs.dev.harness import serve
    from llmobs.sim import SimConfig
    from llmobs.sim import create_app as create_simulator

    console = console or Console()
    with tempfile.TemporaryDirectory() as tmp:
        prices = Path(tmp, "prices.yaml")
        prices.write_text(DEMO_PRICES)
        simulated = SimConfig(ttft=0.08, chunk_gap=0.01, output_tokens=24)
        with serve(create_simulator(simulated)) as upstream:
            settings = Settings(upstream_url=upstream.url + "/v1", provider="openai", price_file=prices)
            with serve(create_app(settings, otel_from_env=False)) as proxy:
                console.print(
                    f"[bold]llmobs demo[/]: simulated upstream {upstream.url}/v1, "
                    f"proxy {proxy.url}/v1, {concurrency} clients for {duration:g} s"
                )
                counts: dict[str, int] = defaultdict(int)
                lock = threading.Lock()
                with Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TimeRemainingColumn(),
                    TextColumn("{task.fields[stats]}"),
                    console=console,
                    transient=True,
                ) as bar:
                    task = bar.add_task("traffic", total=duration, stats="")

                    def tick(label: str, ok: bool) -> None:
                        with lock:
                            counts["ok" if ok else "errors"] += 1

                    driver = threading.Thread(target=_drive, args=(proxy.url + "/v1", duration, concurrency, tick))
                    start = time.monotonic()
                    driver.start()
                    while driver.is_alive():
                        driver.join(0.2)
                        bar.update(
                            task,
                            completed=min(time.monotonic() - start, duration),
                            stats=f"{counts['ok']} ok, {counts['errors']} errors",
                        )
                text = httpx.get(proxy.url + "/metrics", timeout=10).text
    samples = read_metrics(text)
    print_summary(samples, console)
    console.print(
        f"\nSent {counts['ok'] + counts['errors']} requests ({counts['errors']} answered with an error, "
        "on purpose). Point your app at the proxy with OPENAI_BASE_URL to see your own."
    )
    return 0


def print_summary(s: Samples, console: Console) -> None:
    """Readable tables from the proxy's own metrics."""
    requests = s.sum_by("llmobs_requests_total", "model", "outcome")
    table = Table(title="Requests by model", box=box.SIMPLE_HEAVY)
    table.add_column("model", no_wrap=True)
    outcomes = sorted({o for _, o in requests})
    for outcome in outcomes:
        table.add_column(outcome, justify="right")
    for model in sorted({m for m, _ in requests}):
        table.add_row(model, *(f"{requests.get((model, o), 0):g}" for o in outcomes))
    console.print(table)

    tokens = s.sum_by("llmobs_tokens_total", "model", "type")
    cost = s.sum_by("llmobs_cost_usd_total", "model")
    unpriced = s.sum_by("llmobs_unpriced_requests_total", "model")
    kinds = ["input", "cache_read", "output", "reasoning"]
    if any(t == "cache_write" and v for (_, t), v in tokens.items()):
        kinds.insert(2, "cache_write")
    table = Table(
        title="Tokens as the upstream reported them, and cost",
        box=box.SIMPLE_HEAVY,
        collapse_padding=True,
        pad_edge=False,
        caption="cache read/write are part of input; reasoning is part of output",
    )
    table.add_column("model", no_wrap=True)
    for column in [*kinds, "USD"]:
        table.add_column(column.replace("_", " "), justify="right", no_wrap=True)
    for model in sorted({m for m, _ in tokens}):
        price = cost.get((model,))
        price_text = f"{price:.6f}" if price is not None else f"unpriced ×{unpriced.get((model,), 0):g}"
        table.add_row(model, *(f"{tokens.get((model, t), 0):,.0f}" for t in kinds), price_text)
    table.add_row(
        "[bold]total",
        *(f"{sum(v for (_, t), v in tokens.items() if t == k):,.0f}" for k in kinds),
        f"[bold]{sum(cost.values()):.6f}",
    )
    console.print(table)

    table = Table(title="Latency by model (seconds)", box=box.SIMPLE_HEAVY)
    table.add_column("model", no_wrap=True)
    for column in ("p50", "p95", "TTFT p50", "TTFT p95"):
        table.add_column(column, justify="right")
    durations = s.buckets("llmobs_request_duration_seconds", "model")
    ttfts = s.buckets("llmobs_time_to_first_token_seconds", "model")

    def q(buckets: dict[Any, list[tuple[float, float]]], key: Any, quantile: float) -> str:
        value = histogram_quantile(quantile, buckets.get(key, []))
        return "-" if value is None else f"{value:.3f}"

    for key in sorted(durations):
        model = key[0]
        table.add_row(model, q(durations, key, 0.5), q(durations, key, 0.95), q(ttfts, key, 0.5), q(ttfts, key, 0.95))
    console.print(table)

    reasons = s.sum_by("llmobs_finish_reasons_total", "reason")
    table = Table(title="Finish reasons (one per choice)", box=box.SIMPLE_HEAVY)
    table.add_column("reason")
    table.add_column("choices", justify="right")
    for (reason,), count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        table.add_row(reason, f"{count:g}")
    console.print(table)
