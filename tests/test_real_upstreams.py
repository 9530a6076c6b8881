"""In front of servers nobody on this project wrote: llama.cpp's llama-server and llama-cpp-python,
built offline with a tiny model by ../shared/real-upstreams/llamacpp/setup.sh (about 7 minutes,
once). Our simulator agrees with us; these may not. Each test pins a behaviour a real server
showed: llama-server ends a stream's connection while announcing keep-alive, sends a usage chunk
per choice, and reports its own model name; llama-cpp-python mirrors each tool call in the legacy
`function_call`.

Run with `python -m pytest -m real` (CI does, after setup.sh); LLAMACPP_ROOT says where setup.sh
built (default /tmp/llamacpp).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from conftest import Proxied, chat_streams, sdk_client
from servers import free_port

pytestmark = pytest.mark.real

ROOT = Path(os.environ.get("LLAMACPP_ROOT", "/tmp/llamacpp"))
SERVE = Path(__file__).resolve().parents[2] / "shared" / "real-upstreams" / "llamacpp" / "serve.sh"
MakeProxy = Callable[..., Proxied]
HI = [{"role": "user", "content": "hi"}]


def start(impl: str) -> Iterator[str]:
    """Run `serve.sh` with IMPL=`impl` on a free loopback port until the block ends: its /v1 URL."""
    if not SERVE.exists() or not (ROOT / "build" / "bin" / "llama-server").exists():
        pytest.fail(f"no real upstream: run {SERVE.parent / 'setup.sh'} first (LLAMACPP_ROOT={ROOT})")
    port = free_port()
    log = (ROOT / "logs").joinpath(f"test-{impl}.log").open("wb")
    server = subprocess.Popen(
        ["bash", str(SERVE), str(port)], env={**os.environ, "IMPL": impl}, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{impl} did not start; see {log.name}")
            time.sleep(0.2)
        yield url + "/v1"
    finally:
        server.terminate()
        server.wait(10)
        log.close()


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    yield from start("llama-server")


@pytest.fixture(scope="module")
def llama_cpp_python() -> Iterator[str]:
    yield from start("llama-cpp-python")


@pytest.mark.parametrize("concurrency", [1, 16, 64])
def test_llama_server_streams_through_llmobs_get_no_error_it_did_not_give(
    llama_server: str, make_proxy: MakeProxy, concurrency: int
) -> None:
    # It answers a stream with keep-alive announced, then shuts the connection down and drains it.
    proxy = make_proxy(llama_server)
    results = asyncio.run(chat_streams(proxy.base_url, 400, concurrency, model="tiny-llama", max_tokens=8))
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    usages = [r for r in results if not isinstance(r, BaseException)]
    assert proxy.total("llmobs_requests_total", outcome="completed", status_code="200") == 400
    assert proxy.total("llmobs_tokens_total", type="input") == sum(prompt for prompt, _ in usages)
    assert proxy.total("llmobs_tokens_total", type="output") == sum(out for _, out in usages)


def test_llama_server_per_choice_usage_chunks_are_added_up(llama_server: str, make_proxy: MakeProxy) -> None:
    proxy = make_proxy(llama_server)
    stream = sdk_client(proxy.base_url).chat.completions.create(
        model="tiny-llama", messages=HI, n=3, max_tokens=8, stream=True, stream_options={"include_usage": True}
    )
    usages = [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in stream if c.usage is not None]
    assert len(usages) == 3  # one per choice, each with the whole prompt
    assert len({prompt for prompt, _ in usages}) == 1
    assert proxy.total("llmobs_tokens_total", type="output") == sum(out for _, out in usages)
    assert proxy.total("llmobs_tokens_total", type="input") == usages[0][0]  # the prompt, once


def test_llama_server_is_priced_as_the_model_it_served_not_the_one_asked_for(
    llama_server: str, make_proxy: MakeProxy
) -> None:
    proxy = make_proxy(llama_server, provider="openai")
    reply = sdk_client(proxy.base_url).chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=4)
    assert reply.model == "tiny-llama" and reply.usage is not None
    assert proxy.total("llmobs_unpriced_requests_total", model="gpt-4o-mini") == 1
    assert proxy.total("llmobs_cost_usd_total") == 0


def test_llama_cpp_python_tool_call_mirrored_in_function_call_counts_once(
    llama_cpp_python: str, make_proxy: MakeProxy
) -> None:
    proxy = make_proxy(llama_cpp_python)
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    ask = {"model": "tiny-llama", "messages": HI, "max_tokens": 8, "tools": [tool], "tool_choice": {
        "type": "function", "function": {"name": "lookup"}}}  # fmt: skip
    client = sdk_client(proxy.base_url)
    whole = client.chat.completions.create(**ask)  # type: ignore[call-overload]
    message = whole.choices[0].message
    assert message.tool_calls and message.function_call  # the same call, twice on the wire
    chunks = list(client.chat.completions.create(**ask, stream=True))  # type: ignore[call-overload]
    assert any(c.choices and c.choices[0].delta.function_call and c.choices[0].delta.tool_calls for c in chunks)
    assert proxy.total("llmobs_tool_calls_total", tool="lookup") == 2  # one per request
    assert proxy.total("llmobs_tool_calls_total") == 2
