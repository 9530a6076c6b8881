"""Shared fixtures: a simulated upstream and a proxy in front of it, on loopback ports."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).parent))

from llmobs.app import LLMObs, create_app
from llmobs.config import Settings
from llmobs.dev.harness import ServerThread, serve
from llmobs.sim import SimConfig
from llmobs.sim import create_app as create_simulator


class Proxied:
    """A running proxy, its app and registry."""

    def __init__(self, server: ServerThread, app: LLMObs, registry: CollectorRegistry) -> None:
        self.server = server
        self.app = app
        self.registry = registry
        self.url = server.url
        self.base_url = server.url + "/v1"

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until no request is in flight: a request is recorded just after its last byte."""
        deadline = time.monotonic() + timeout
        while self.app.proxy.in_flight:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.app.proxy.in_flight} requests still in flight")
            time.sleep(0.005)

    def total(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels`, once traffic has settled."""
        self.settle()
        total = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total


_clients: list[Any] = []


def sdk_client(base_url: str, api_key: str = "sk-test-secret-0123456789", **kwargs: Any) -> Any:
    """An openai SDK client with no retries, closed after the test that made it."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, **kwargs)
    _clients.append(client)
    return client


async def chat_streams(base_url: str, n: int, concurrency: int, **ask: Any) -> list[BaseException | tuple[int, int]]:
    """`n` streamed chats through the async openai SDK, `concurrency` at a time: the (prompt,
    completion) tokens each one's usage chunk reported, or the error it raised."""
    import openai

    gate = asyncio.Semaphore(concurrency)
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=60)

    async def one() -> tuple[int, int]:
        async with gate:
            stream = await client.chat.completions.create(
                messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}, **ask
            )
            usage = (0, 0)
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
            return usage

    try:
        return await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    finally:
        await client.close()


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


@pytest.fixture(scope="session")
def upstream() -> Iterator[ServerThread]:
    with serve(create_simulator(SimConfig())) as server:
        yield server


@pytest.fixture
def recording_upstream() -> Iterator[tuple[str, list[dict[bytes, bytes]]]]:
    """The simulator, noting the headers of each request it gets: (base URL, headers seen)."""
    seen: list[dict[bytes, bytes]] = []
    sim = create_simulator(SimConfig())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(dict(scope["headers"]))
        await sim(scope, receive, send)

    with serve(app) as server:
        yield server.url + "/v1", seen


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., Proxied]]:
    """Start proxies in front of any upstream URL; each with a fresh registry."""
    started: list[ServerThread] = []

    def start(upstream_url: str, **settings: Any) -> Proxied:
        kwargs = {k: settings.pop(k) for k in ("tracer_provider", "meter_provider", "strict") if k in settings}
        kwargs.setdefault("strict", True)  # a telemetry failure fails the test, unless it is the test
        registry = CollectorRegistry()
        app = create_app(
            Settings(upstream_url=upstream_url, **settings), registry=registry, otel_from_env=False, **kwargs
        )
        server = ServerThread(app).start()
        started.append(server)
        return Proxied(server, app, registry)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def proxy(upstream: ServerThread, make_proxy: Callable[..., Proxied]) -> Proxied:
    return make_proxy(upstream.url + "/v1", provider="openai")
