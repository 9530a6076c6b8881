"""The proxy over real loopback sockets, driven by the official openai SDK and plain HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import time
from decimal import Decimal
from typing import Any

import httpx2 as httpx
import openai
import pytest

from conftest import Proxied, sdk_client
from llmobs.dev.harness import ServerThread, serve
from llmobs.records import RequestInfo, Usage
from llmobs.telemetry.pricing import PriceTable

MESSAGES = [{"role": "user", "content": "say hello to the proxy please"}]  # 6 words + 3 = 9 tokens


def client(base_url: str, **kwargs: Any) -> openai.OpenAI:
    return sdk_client(base_url, **kwargs)  # type: ignore[no-any-return]


def normalise(body: bytes) -> bytes:
    """Blank out what differs between two calls: ids and timestamps."""
    body = re.sub(rb'"(id|item_id|call_id)":"[^"]*"', rb'"\1":"-"', body)
    return re.sub(rb'"(created|created_at|completed_at)":\d+', rb'"\1":0', body)


def raw_post(base_url: str, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    with httpx.Client(timeout=30) as http:
        return http.post(base_url + path, json=body, headers={"authorization": "Bearer sk-x", **headers})


# --- the SDK works unchanged, and /metrics counts exactly -----------------------------------


def test_chat_non_stream_exact_tokens_cost_and_finish(proxy: Proxied) -> None:
    sdk = client(proxy.base_url)
    result = sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, prompt_cache_key="k")
    assert result.choices[0].message.content and result.choices[0].finish_reason == "stop"
    usage = result.usage
    assert usage is not None and usage.prompt_tokens == 9 and usage.completion_tokens == 20
    labels = {"endpoint": "chat_completions", "model": "gpt-4o-mini"}
    assert proxy.total("llmobs_tokens_total", **labels, type="input") == 9
    assert proxy.total("llmobs_tokens_total", **labels, type="cache_read") == 4
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == 20
    assert proxy.total("llmobs_finish_reasons_total", **labels, reason="stop") == 1
    assert proxy.total("llmobs_requests_total", **labels, stream="false", status_code="200", outcome="completed") == 1
    expected = PriceTable.load(provider="openai", price_file=None).price(
        "gpt-4o-mini",
        Usage(input_tokens=9, output_tokens=20, cache_read_tokens=4, cache_write_tokens=None, reasoning_tokens=0),
    )
    assert expected is not None and expected > 0
    assert proxy.total("llmobs_cost_usd_total", model="gpt-4o-mini") == pytest.approx(float(expected), rel=1e-12)
    assert proxy.total("llmobs_unpriced_requests_total") == 0


@pytest.mark.parametrize(("tier", "rate"), [("priority", 2), ("flex", Decimal("0.5")), ("auto", 1)])
def test_the_service_tier_the_response_reports_prices_the_request(proxy: Proxied, tier: str, rate: Decimal) -> None:
    sdk = client(proxy.base_url)
    result = sdk.chat.completions.create(model="gpt-5", messages=MESSAGES, service_tier=tier)  # type: ignore[arg-type]
    assert result.service_tier == (tier if tier != "auto" else "default")
    chunks = list(sdk.chat.completions.create(model="gpt-5", messages=MESSAGES, service_tier=tier, stream=True))  # type: ignore[call-overload]
    assert {c.service_tier for c in chunks} == {result.service_tier}
    usage = Usage(input_tokens=9, output_tokens=20, cache_read_tokens=0, cache_write_tokens=None, reasoning_tokens=0)
    standard = PriceTable.load(provider="openai", price_file=None).price("gpt-5", usage)
    assert standard == (9 * Decimal("1.25") + 20 * Decimal(10)) / 1_000_000
    assert proxy.total("llmobs_cost_usd_total", model="gpt-5") == pytest.approx(float(2 * standard * rate), rel=1e-12)


@pytest.mark.parametrize(  # none of these asks for usage (the openai SDK sends null for stream_options=None)
    "options", [{}, {"stream_options": None}, {"stream_options": {}}, {"stream_options": {"include_usage": False}}]
)
def test_chat_stream_gets_exact_usage_without_seeing_the_usage_chunk(
    proxy: Proxied, upstream: ServerThread, options: dict[str, Any]
) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, **options}
    direct = raw_post(upstream.url + "/v1", "/chat/completions", body)
    proxied = raw_post(proxy.base_url, "/chat/completions", body)
    assert b'"usage"' not in proxied.content
    assert normalise(proxied.content) == normalise(direct.content)
    assert proxy.total("llmobs_tokens_total", type="input") == 9
    assert proxy.total("llmobs_tokens_total", type="output") == 20
    assert proxy.total("llmobs_usage_missing_total") == 0
    assert proxy.total("llmobs_time_to_first_token_seconds_count", model="gpt-4o-mini") == 1
    assert proxy.total("llmobs_time_per_output_token_seconds_count", model="gpt-4o-mini") == 1
    chunks = list(client(proxy.base_url).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"
    assert proxy.total("llmobs_tokens_total", type="output") == 40


def test_client_that_asked_for_usage_keeps_its_usage_chunk(proxy: Proxied, upstream: ServerThread) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    direct = raw_post(upstream.url + "/v1", "/chat/completions", body)
    proxied = raw_post(proxy.base_url, "/chat/completions", body)
    assert normalise(proxied.content) == normalise(direct.content)
    assert proxied.content.count(b'"usage":{') == 1
    assert proxy.total("llmobs_tokens_total", type="output") == 20


def test_injection_off_counts_missing_usage_and_estimates_apart(upstream: ServerThread, make_proxy: Any) -> None:
    proxy = make_proxy(upstream.url + "/v1", inject_stream_usage=False)
    list(client(proxy.base_url).chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert proxy.total("llmobs_tokens_total") == 0
    assert proxy.total("llmobs_usage_missing_total", endpoint="chat_completions", model="m") == 1
    assert proxy.total("llmobs_estimated_tokens_total", type="output") == 20


def test_upstream_that_rejects_stream_options_is_retried_once_and_remembered(
    upstream: ServerThread, make_proxy: Any
) -> None:
    proxy = make_proxy(upstream.url + "/v1")
    sdk = client(proxy.base_url)
    for _ in range(2):
        chunks = list(sdk.chat.completions.create(model="sim-reject-stream-options", messages=MESSAGES, stream=True))
        assert chunks[-1].choices[0].finish_reason == "stop"
    assert proxy.app.proxy.rejects_usage_option
    assert proxy.total("llmobs_requests_total", outcome="completed") == 2
    assert proxy.total("llmobs_usage_missing_total") == 2
    assert proxy.total("llmobs_estimated_tokens_total") == 40


def test_legacy_completions_streamed_and_not(proxy: Proxied) -> None:
    sdk = client(proxy.base_url)
    done = sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="one two three", max_tokens=5)
    assert done.choices[0].finish_reason == "length" and done.usage and done.usage.completion_tokens == 5
    pieces = list(sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="one two three", stream=True))
    assert "".join(p.choices[0].text for p in pieces if p.choices).startswith("tok1")
    labels = {"endpoint": "completions", "model": "gpt-3.5-turbo-instruct"}
    assert proxy.total("llmobs_tokens_total", **labels, type="input") == 6
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == 25
    assert proxy.total("llmobs_finish_reasons_total", **labels, reason="length") == 1
    assert proxy.total("llmobs_finish_reasons_total", **labels, reason="stop") == 1


def test_embeddings_base64_and_float(proxy: Proxied) -> None:
    sdk = client(proxy.base_url)
    result = sdk.embeddings.create(model="text-embedding-3-small", input=["red apple", "pear"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8
    sdk.embeddings.create(model="text-embedding-3-small", input="one", encoding_format="float")
    assert proxy.total("llmobs_tokens_total", endpoint="embeddings", type="input") == 4
    assert proxy.total("llmobs_usage_missing_total") == 0


@pytest.mark.parametrize("stream", [False, True])
def test_responses_api_with_reasoning(proxy: Proxied, stream: bool) -> None:
    sdk = client(proxy.base_url)
    if stream:
        events = list(sdk.responses.create(model="o-reasoner", input="why is the sky blue", stream=True))
        final = events[-1].response  # type: ignore[union-attr]
    else:
        final = sdk.responses.create(model="o-reasoner", input="why is the sky blue")
    assert final.usage is not None
    labels = {"endpoint": "responses", "model": "o-reasoner"}
    assert proxy.total("llmobs_tokens_total", **labels, type="input") == final.usage.input_tokens == 5
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == final.usage.output_tokens
    assert (
        proxy.total("llmobs_tokens_total", **labels, type="reasoning")
        == final.usage.output_tokens_details.reasoning_tokens
        > 0
    )
    assert proxy.total("llmobs_finish_reasons_total", **labels, reason="stop") == 1
    assert proxy.total("llmobs_reasoning_duration_seconds_count", **labels) == (1 if stream else 0)


def test_responses_truncated_and_tool_call(proxy: Proxied) -> None:
    sdk = client(proxy.base_url)
    sdk.responses.create(model="m", input="hi", max_output_tokens=16)
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    list(sdk.responses.create(model="m", input="hi", tools=tools, stream=True))
    assert proxy.total("llmobs_finish_reasons_total", endpoint="responses", reason="length") == 1
    assert proxy.total("llmobs_finish_reasons_total", endpoint="responses", reason="tool_calls") == 1


def test_chat_reasoning_stream_vllm_and_deepseek_styles(proxy: Proxied) -> None:
    sdk = client(proxy.base_url)
    for model in ("sim-reasoning", "sim-reasoning-content"):
        list(sdk.chat.completions.create(model=model, messages=MESSAGES, stream=True))
        assert proxy.total("llmobs_reasoning_duration_seconds_count", model=model) == 1
        assert proxy.total("llmobs_tokens_total", model=model, type="reasoning") == 10


def test_tool_calls_and_n_choices(proxy: Proxied) -> None:
    sdk = client(proxy.base_url)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    list(sdk.chat.completions.create(model="m", messages=MESSAGES, tools=tools, stream=True))
    sdk.chat.completions.create(model="m", messages=MESSAGES, n=3, max_tokens=4)
    assert proxy.total("llmobs_finish_reasons_total", reason="tool_calls") == 1
    assert proxy.total("llmobs_finish_reasons_total", reason="length") == 3
    assert proxy.total("llmobs_tokens_total", type="output") == 20 + 12


def test_other_paths_are_proxied_and_counted_as_other(proxy: Proxied) -> None:
    models = client(proxy.base_url).models.list()
    assert len(models.data) > 0
    assert proxy.total("llmobs_requests_total", endpoint="other", status_code="200") == 1
    assert proxy.total("llmobs_usage_missing_total") == 0


def test_gzip_response_reaches_the_client_intact_and_is_counted(proxy: Proxied, upstream: ServerThread) -> None:
    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    headers = {"content-type": "application/json", "accept-encoding": "gzip"}
    with httpx.Client() as http:
        direct = http.post(upstream.url + "/v1/chat/completions", content=body, headers=headers)
        proxied = http.post(proxy.base_url + "/chat/completions", content=body, headers=headers)
    assert proxied.headers["content-encoding"] == "gzip" == direct.headers["content-encoding"]
    assert normalise(proxied.content) == normalise(direct.content)
    assert proxy.total("llmobs_tokens_total", type="output") == 20


# --- failures ------------------------------------------------------------------------------


def test_upstream_errors_pass_through_untouched(proxy: Proxied, upstream: ServerThread) -> None:
    body = {"model": "sim-error-429", "messages": MESSAGES}
    direct = raw_post(upstream.url + "/v1", "/chat/completions", body)
    proxied = raw_post(proxy.base_url, "/chat/completions", body)
    assert proxied.status_code == 429 and proxied.content == direct.content
    with pytest.raises(openai.RateLimitError):
        client(proxy.base_url).chat.completions.create(model="sim-error-429", messages=MESSAGES)
    assert proxy.total("llmobs_requests_total", status_code="429", outcome="upstream_error") == 2
    assert proxy.total("llmobs_usage_missing_total") == 0


def test_unreachable_upstream_is_a_502_naming_the_proxy(make_proxy: Any) -> None:
    from llmobs.dev.harness import bound_socket

    sock = bound_socket()  # bound, never listening: connections are refused
    port = sock.getsockname()[1]
    proxy = make_proxy(f"http://127.0.0.1:{port}/v1")
    response = raw_post(proxy.base_url, "/chat/completions", {"model": "m", "messages": MESSAGES})
    sock.close()
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_unreachable" and "llmobs proxy" in error["message"]
    assert set(error) >= {"message", "type", "code"}
    with pytest.raises(openai.InternalServerError):
        client(proxy.base_url).chat.completions.create(model="m", messages=MESSAGES)
    assert proxy.total("llmobs_requests_total", status_code="502", outcome="upstream_unreachable") == 2


def test_upstream_timeout_is_a_504(upstream: ServerThread, make_proxy: Any) -> None:
    proxy = make_proxy(upstream.url + "/v1", read_timeout=0.3)
    response = raw_post(proxy.base_url, "/chat/completions", {"model": "sim-hang", "messages": MESSAGES})
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    assert proxy.total("llmobs_requests_total", status_code="504", outcome="upstream_timeout") == 1


def test_error_inside_a_stream_reaches_the_sdk_and_is_counted(proxy: Proxied) -> None:
    with pytest.raises(openai.APIError):
        list(client(proxy.base_url).chat.completions.create(model="sim-stream-error", messages=MESSAGES, stream=True))
    assert proxy.total("llmobs_requests_total", outcome="upstream_error", status_code="200") == 1


def test_upstream_reset_mid_stream_is_interrupted_for_client_and_metrics(proxy: Proxied) -> None:
    with pytest.raises(openai.APIConnectionError):  # the connection dropped mid-stream
        list(client(proxy.base_url).chat.completions.create(model="sim-reset", messages=MESSAGES, stream=True))
    assert proxy.total("llmobs_requests_total", outcome="stream_interrupted") == 1
    assert proxy.total("llmobs_usage_missing_total") == 1
    assert proxy.total("llmobs_estimated_tokens_total") == 3


def test_client_disconnect_mid_stream_is_recorded_and_cancels_upstream(make_proxy: Any) -> None:
    from llmobs.sim import SimConfig, create_app

    events: list[str] = []
    sim = create_app(SimConfig(chunk_gap=0.05, output_tokens=200))

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await sim(scope, receive, send)
        body = await receive()

        async def replay() -> Any:
            return body

        task = asyncio.ensure_future(sim(scope, replay, send))
        message = await receive()  # blocks until the proxy drops the upstream connection
        events.append(message["type"])
        task.cancel()

    with serve(watched) as slow:
        proxy = make_proxy(slow.url + "/v1")
        with httpx.Client(timeout=10) as http:
            with http.stream(
                "POST", proxy.base_url + "/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True}
            ) as response:
                for i, _ in enumerate(response.iter_raw()):
                    if i == 3:
                        break
        wait_for(lambda: proxy.total("llmobs_requests_total") == 1)
        assert proxy.total("llmobs_requests_total", outcome="client_closed", status_code="200") == 1
        assert proxy.total("llmobs_requests_in_flight") == 0
        # 200 tokens at 50 ms would take 10 s; the upstream sees the cancellation long before.
        wait_for(lambda: events == ["http.disconnect"], timeout=3)
        assert proxy.total("llmobs_usage_missing_total") == 1


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_bodies_of_paths_we_do_not_account_are_relayed_not_buffered() -> None:
    from llmobs.apis.base import OtherAccumulator
    from llmobs.observe import ResponseObserver

    info = RequestInfo(endpoint="other", operation=None, model=None)
    observer = ResponseObserver(
        OtherAccumulator(info, 0.0),
        content_type=b"application/octet-stream",
        content_encoding=b"",
        cut_usage=False,
        body_limit=1024,
        on_failure=lambda: None,
    )
    observer.feed(b"x" * 100, 1.0)
    assert observer.body is None
