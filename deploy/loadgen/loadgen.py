"""Demo traffic generator: mixed OpenAI-SDK traffic through llmobs to the simulated upstream.

Runs in the compose `demo` profile (python /opt/loadgen/loadgen.py). Settings come from the
environment: LOADGEN_BASE_URL (default http://llmobs:4000/v1), LOADGEN_RATE (requests per
second, default 5), LOADGEN_DURATION (seconds, 0 = forever). The scenarios use the simulated
upstream's conventions (fault models, `reason` in the model name), so point it at the simulator.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable

import openai

log = logging.getLogger("loadgen")

TENANTS = ("acme", "globex", "initech")
TENANT_HEADER = "x-llmobs-tenant"
PROMPT = [{"role": "user", "content": "Explain observability for LLM traffic in two sentences."}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the docs.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]

Scenario = Callable[[openai.AsyncOpenAI, dict[str, str]], Awaitable[None]]


async def drain(stream: openai.AsyncStream) -> None:  # type: ignore[type-arg]
    async for _ in stream:
        pass


async def chat(client: openai.AsyncOpenAI, headers: dict[str, str]) -> None:
    await client.chat.completions.create(model="sim-model", messages=PROMPT, extra_headers=headers)


async def chat_stream(client: openai.AsyncOpenAI, headers: dict[str, str]) -> None:
    """A stream that did not ask for usage: the proxy injects and strips it."""
    await drain(
        await client.chat.completions.create(model="sim-model", messages=PROMPT, stream=True, extra_headers=headers)
    )


async def chat_stream_usage(client: openai.AsyncOpenAI, headers: dict[str, str]) -> None:
    await drain(
        await client.chat.completions.create(
            model="sim-model",
            messages=PROMPT,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
        )
    )


async def truncated(client: openai.AsyncOpenAI, headers: dict[str, str]) -> None:
    """max_tokens cuts the answer: finish_reason=length."""
    await drain(
        await client.chat.completions.create(
            model="sim-model", messages=PROMPT, stream=True, max_tokens=3, extra_headers=headers
        )
    )


async def tool_call(client: openai.AsyncOpenAI, headers: dict[str, str]) -> None:
    await client.chat.completions.create(model="sim-model", messages=PROMPT, tools=TOOLS, extra_headers=headers)


async def cached(client: openai.AsyncOpenAI, headers: dict[str, str]) -> None:
    """A prompt-cache hit: the simulator reports half the prompt as cached."""
    await client.chat.completions.create(
        model="sim-model", messages=PROMPT, extra_body={"prompt_cache_key": "demo"}, extra_headers=headers
    )


async def reasoning(client: openai.AsyncOpenAI, headers: dict[str, str]) -> None:
    """A reasoning model that streams reasoning_content deltas (and has no price: 'unpriced')."""
    await drain(
        await client.chat.completions.create(
            model="sim-reasoning-content", messages=PROMPT, stream=True, extra_headers=headers
        )
    )


async def reasoning_priced(client: openai.AsyncOpenAI, headers: dict[str, str]) -> None:
    await drain(
        await client.chat.completions.create(model="sim-reasoning", messages=PROMPT, stream=True, extra_headers=headers)
    )


async def responses(client: openai.AsyncOpenAI, headers: dict[str, str]) -> None:
    await drain(
        await client.responses.create(
            model="sim-model", input="Summarise the request.", stream=True, extra_headers=headers
        )
    )


async def completions(client: openai.AsyncOpenAI, headers: dict[str, str]) -> None:
    await client.completions.create(model="sim-model", prompt="Once upon a time", extra_headers=headers)


async def embeddings(client: openai.AsyncOpenAI, headers: dict[str, str]) -> None:
    await client.embeddings.create(model="sim-embedding", input="observability", extra_headers=headers)


async def upstream_error(client: openai.AsyncOpenAI, headers: dict[str, str]) -> None:
    """The simulator answers 429 for this model: an upstream error, passed through."""
    try:
        await client.chat.completions.create(model="sim-error-429", messages=PROMPT, extra_headers=headers)
    except openai.RateLimitError:
        pass


# (scenario, weight): mostly healthy traffic with a few truncations and errors.
SCENARIOS: tuple[tuple[Scenario, int], ...] = (
    (chat, 6),
    (chat_stream, 8),
    (chat_stream_usage, 2),
    (truncated, 2),
    (tool_call, 2),
    (cached, 3),
    (reasoning, 1),
    (reasoning_priced, 2),
    (responses, 2),
    (completions, 1),
    (embeddings, 2),
    (upstream_error, 1),
)


def client(base_url: str) -> openai.AsyncOpenAI:
    # No retries: the errors are the point, and retried 429s would double-count.
    return openai.AsyncOpenAI(base_url=base_url, api_key="demo-key", max_retries=0, timeout=60)


async def run_one(api: openai.AsyncOpenAI, scenario: Scenario, tenant: str) -> None:
    try:
        await scenario(api, {TENANT_HEADER: tenant})
    except openai.OpenAIError as exc:  # keep generating: the dashboards show the failure
        log.warning("%s failed: %s", scenario.__name__, exc)


async def generate(base_url: str, rate: float, duration: float) -> None:
    """Start `rate` requests per second (Poisson arrivals) for `duration` seconds, 0 = forever."""
    api = client(base_url)
    scenarios, weights = zip(*SCENARIOS, strict=False)
    loop = asyncio.get_running_loop()
    stop = loop.time() + duration if duration > 0 else float("inf")
    tasks: set[asyncio.Task[None]] = set()
    while loop.time() < stop:
        scenario = random.choices(scenarios, weights)[0]
        task = asyncio.create_task(run_one(api, scenario, random.choice(TENANTS)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        await asyncio.sleep(random.expovariate(rate))
    await asyncio.gather(*tasks)
    await api.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s loadgen %(message)s")
    base_url = os.environ.get("LOADGEN_BASE_URL", "http://llmobs:4000/v1")
    rate = float(os.environ.get("LOADGEN_RATE", "5"))
    duration = float(os.environ.get("LOADGEN_DURATION", "0"))
    log.info("sending %.1f req/s to %s", rate, base_url)
    asyncio.run(generate(base_url, rate, duration))


if __name__ == "__main__":
    main()
