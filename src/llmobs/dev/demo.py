"""`llmobs demo`: simulated upstream + proxy + mixed traffic, then a summary read from /metrics.

The proxy has one route, `/anthropic`, to the same simulator: Anthropic's SDK goes through it,
every OpenAI SDK call (chat, Responses, embeddings, images, audio, Realtime) through the default
upstream, so the summary shows requests, tokens and cost per upstream and provider too.
"""

from __future__ import annotations

import base64
import random
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from llmobs.dev.metrics_text import read_metrics
from llmobs.dev.summary import print_summary

DEMO_PRICES = """\
# Prices for the demo's self-hosted models, USD per million tokens.
models:
  local-reasoner:
    input: 0.50
    output: 1.50
    cache_read: 0.05
"""
ANTHROPIC_ROUTE = "/anthropic"
TENANTS = ("team-search", "team-chat", "batch-jobs")
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Summarise the plot of Hamlet in one line please."},
]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
CLAUDE_ASK = [{"role": "user", "content": "Summarise the plot of Hamlet in one line please."}]
# A system prompt marked for Anthropic's prompt cache: the simulator reports its words as cache writes.
CLAUDE_SYSTEM = [{"type": "text", "text": "You are a terse assistant.", "cache_control": {"type": "ephemeral"}}]
WAV = bytes(32_000 * 2)  # two seconds of 16 kHz 16-bit mono silence (whisper-1 bills whole seconds)
SAY = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
PCM_SILENCE = base64.b64encode(bytes(24_000 * 2 // 2)).decode()  # half a second of 24 kHz PCM16 audio
# openai-python's sync Realtime client opens its websockets connection without a context manager,
# which websockets >= 17.1 deprecates: the SDK's warning, nothing a demo user can act on.
SDK_WARNING = r"connect\(\) must be used as a context manager"


@dataclass(frozen=True)
class Clients:
    """One worker's official SDK clients: OpenAI's at the proxy, Anthropic's at its route."""

    openai: Any
    anthropic: Any


Call = Callable[[Clients, dict[str, str]], None]


def _openai_text() -> list[tuple[int, str, Call]]:
    """Chat, Responses, legacy completions and embeddings, with truncation, tools and faults."""

    def chat_stream(c: Clients, h: dict[str, str]) -> None:
        for _ in c.openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=h):
            pass

    def chat(c: Clients, h: dict[str, str]) -> None:
        c.openai.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, prompt_cache_key="demo", extra_headers=h
        )

    def truncated(c: Clients, h: dict[str, str]) -> None:
        for _ in c.openai.chat.completions.create(
            model="gpt-4.1", messages=MESSAGES, max_tokens=8, stream=True, extra_headers=h
        ):
            pass

    def tools(c: Clients, h: dict[str, str]) -> None:
        c.openai.chat.completions.create(model="gpt-4.1", messages=MESSAGES, tools=TOOLS, extra_headers=h)

    def reasoning(c: Clients, h: dict[str, str]) -> None:
        for _ in c.openai.chat.completions.create(
            model="local-reasoner", messages=MESSAGES, stream=True, extra_headers=h
        ):
            pass

    def responses(c: Clients, h: dict[str, str]) -> None:
        for _ in c.openai.responses.create(
            model="gpt-4o-mini", input="Name three rivers.", stream=True, extra_headers=h
        ):
            pass

    def legacy(c: Clients, h: dict[str, str]) -> None:
        c.openai.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Once upon a time", max_tokens=12, extra_headers=h
        )

    def embeddings(c: Clients, h: dict[str, str]) -> None:
        c.openai.embeddings.create(model="text-embedding-3-small", input=["red apples", "green pears"], extra_headers=h)

    def unpriced(c: Clients, h: dict[str, str]) -> None:
        c.openai.chat.completions.create(model="my-finetune-7b", messages=MESSAGES, extra_headers=h)

    def rate_limited(c: Clients, h: dict[str, str]) -> None:
        c.openai.chat.completions.create(model="sim-error-429", messages=MESSAGES, extra_headers=h)

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


def _anthropic() -> list[tuple[int, str, Call]]:
    """Messages through the route: a thinking stream, and a cached system prompt."""

    def thinking(c: Clients, h: dict[str, str]) -> None:
        with c.anthropic.messages.stream(
            model="claude-sonnet-4-6",
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=CLAUDE_ASK,
            extra_headers=h,
        ) as stream:
            for _ in stream:
                pass

    def cached(c: Clients, h: dict[str, str]) -> None:
        c.anthropic.messages.create(
            model="claude-haiku-4-5", max_tokens=256, system=CLAUDE_SYSTEM, messages=CLAUDE_ASK, extra_headers=h
        )

    return [(3, "claude thinking", thinking), (2, "claude cached", cached)]


def _media_and_realtime() -> list[tuple[int, str, Call]]:
    """An image, a transcription, speech, and a spoken Realtime answer."""

    def image(c: Clients, h: dict[str, str]) -> None:
        c.openai.images.generate(model="gpt-image-1", prompt="a lighthouse at dusk", quality="low", extra_headers=h)

    def transcription(c: Clients, h: dict[str, str]) -> None:
        c.openai.audio.transcriptions.create(model="whisper-1", file=("memo.wav", WAV, "audio/wav"), extra_headers=h)

    def speech(c: Clients, h: dict[str, str]) -> None:
        with c.openai.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="The rest is silence.", extra_headers=h
        ) as response:
            response.read()

    def realtime(c: Clients, h: dict[str, str]) -> None:
        with c.openai.realtime.connect(model="gpt-realtime", extra_headers=h) as conn:
            conn.conversation.item.create(item=SAY)
            conn.input_audio_buffer.append(audio=PCM_SILENCE)
            conn.input_audio_buffer.commit()
            conn.response.create(response={"output_modalities": ["audio"]})
            for event in conn:
                if event.type == "response.done":
                    break

    return [(1, "image", image), (1, "transcription", transcription), (1, "speech", speech), (2, "realtime", realtime)]


def _traffic() -> list[tuple[int, str, Call]]:
    """(weight, label, call) for the mixed traffic; each call uses an official SDK."""
    return _openai_text() + _anthropic() + _media_and_realtime()


def _drive(proxy_url: str, duration: float, concurrency: int, progress: Callable[[str, bool], None]) -> None:
    import anthropic
    import openai
    from websockets.exceptions import WebSocketException

    # What a call may raise when the proxy or simulator answers with an error: count it, go on.
    failures = (openai.OpenAIError, anthropic.AnthropicError, WebSocketException)
    traffic = _traffic()
    weights = [w for w, _, _ in traffic]
    deadline = time.monotonic() + duration

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        key = f"sk-demo-{seed % 2}"
        clients = Clients(
            openai.OpenAI(base_url=proxy_url + "/v1", api_key=key, max_retries=0, timeout=30),
            anthropic.Anthropic(base_url=proxy_url + ANTHROPIC_ROUTE, api_key=key, max_retries=0, timeout=30),
        )

        def one(label: str, call: Call) -> None:
            try:
                call(clients, {"x-llmobs-tenant": rng.choice(TENANTS)})
                progress(label, True)
            except failures:
                progress(label, False)

        # Every kind once first, shared out among the workers, so every row of the summary has
        # data however short the run; then the weighted mix until the deadline.
        for _, label, call in traffic[seed::concurrency]:
            one(label, call)
        while time.monotonic() < deadline:
            _, label, call = rng.choices(traffic, weights)[0]
            one(label, call)
        clients.openai.close()
        clients.anthropic.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_demo(duration: float = 15.0, concurrency: int = 4, console: Console | None = None) -> int:
    """Run the tour; return the process exit code."""
    import httpx2 as httpx

    from llmobs.app import create_app
    from llmobs.config import Route, Settings
    from llmobs.dev.harness import serve
    from llmobs.sim import SimConfig
    from llmobs.sim import create_app as create_simulator

    console = console or Console()
    warnings.filterwarnings("ignore", SDK_WARNING, DeprecationWarning)
    with tempfile.TemporaryDirectory() as tmp:
        prices = Path(tmp, "prices.yaml")
        prices.write_text(DEMO_PRICES)
        simulated = SimConfig(ttft=0.08, chunk_gap=0.01, output_tokens=24)
        with serve(create_simulator(simulated)) as upstream:
            route = Route(prefix=ANTHROPIC_ROUTE, url=upstream.url, provider="anthropic")
            settings = Settings(upstream_url=upstream.url + "/v1", provider="openai", price_file=prices, routes=[route])
            with serve(create_app(settings, otel_from_env=False)) as proxy:
                console.print(
                    f"[bold]llmobs demo[/]: simulated upstream {upstream.url}, proxy {proxy.url}/v1 "
                    f"(OpenAI) and {proxy.url}{ANTHROPIC_ROUTE} (Anthropic), {concurrency} clients "
                    f"for {duration:g} s"
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

                    driver = threading.Thread(target=_drive, args=(proxy.url, duration, concurrency, tick))
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
        "on purpose). Point your app at the proxy with OPENAI_BASE_URL (or ANTHROPIC_BASE_URL and a route) to "
        "see your own."
    )
    return 0
