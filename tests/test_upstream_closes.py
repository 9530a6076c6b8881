"""An upstream that announces keep-alive, then ends each connection after each stream, as a real
llama-server does (a FIN, then what arrives is read and dropped; see llmobs.sim.connections):
clients get no error the upstream did not give, and every request is counted once. (Before, 7-11%
of llama-server's streams at concurrency 8-16 came back through llmobs as 502; with only a check
before reuse, about 1 in 1,500 still did.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from conftest import Proxied, chat_streams
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


@pytest.mark.parametrize("concurrency", [1, 8, 64])
def test_an_upstream_closing_every_kept_alive_connection_gives_clients_no_error(
    closing_upstream: ServerThread, make_proxy: MakeProxy, concurrency: int
) -> None:
    proxy = make_proxy(closing_upstream.url + "/v1", provider="openai")
    n = REQUESTS[concurrency]
    results = asyncio.run(chat_streams(proxy.base_url, n, concurrency, model="sim-model"))
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert [completion for _, completion in results] == [OUTPUT_TOKENS] * n
    assert proxy.total("llmobs_requests_total") == n
    assert proxy.total("llmobs_requests_total", outcome="completed", status_code="200") == n
    assert proxy.total("llmobs_tokens_total", type="output") == n * OUTPUT_TOKENS
