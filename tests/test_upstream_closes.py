"""An upstream that announces keep-alive, then ends each connection after each stream, as a real
llama-server does (a FIN, then what arrives is read and dropped; see llmobs.sim.connections):
clients get no error the upstream did not give, and every request is counted once. (Before, 7-11%
of llama-server's streams at concurrency 8-16 came back through llmobs as 502; with only a check
before reuse, about 1 in 1,500 still did.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import openai
import pytest

from conftest import Proxied
from llmobs.sim import SimConfig, create_app
from llmobs.sim.connections import closing_protocol
from servers import ServerThread, serve

MakeProxy = Callable[..., Proxied]
OUTPUT_TOKENS = 5
REQUESTS = {1: 60, 8: 240, 64: 384}


@pytest.fixture(scope="module", params=[0.0, 0.005], ids=["closes-at-once", "closes-a-moment-later"])
def closing_upstream(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    sim = create_app(SimConfig(output_tokens=OUTPUT_TOKENS))
    with serve(sim, http=closing_protocol(request.param)) as server:
        yield server


async def streams(base_url: str, n: int, concurrency: int) -> list[BaseException | int]:
    """`n` streamed chats, `concurrency` at a time: the output tokens of each, or its error."""
    gate = asyncio.Semaphore(concurrency)
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=30)

    async def one() -> int:
        async with gate:
            stream = await client.chat.completions.create(
                model="sim-model",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            tokens = 0
            async for chunk in stream:
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
            return tokens

    try:
        return await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    finally:
        await client.close()


@pytest.mark.parametrize("concurrency", [1, 8, 64])
def test_an_upstream_closing_every_kept_alive_connection_gives_clients_no_error(
    closing_upstream: ServerThread, make_proxy: MakeProxy, concurrency: int
) -> None:
    proxy = make_proxy(closing_upstream.url + "/v1", provider="openai")
    n = REQUESTS[concurrency]
    results = asyncio.run(streams(proxy.base_url, n, concurrency))
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert results == [OUTPUT_TOKENS] * n
    assert proxy.total("llmobs_requests_total") == n
    assert proxy.total("llmobs_requests_total", outcome="completed", status_code="200") == n
    assert proxy.total("llmobs_tokens_total", type="output") == n * OUTPUT_TOKENS
