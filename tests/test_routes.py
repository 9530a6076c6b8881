"""Several upstreams behind one proxy: longest prefix wins, the prefix is replaced by the route's
path, each route keeps its provider and key, and metrics say which upstream served a request."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx2 as httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from websockets.sync.client import connect

from conftest import Proxied, sdk_client
from llmobs.config import ConfigError, Route, load_settings
from llmobs.sim import SimConfig, create_app
from servers import ServerThread, serve

MESSAGES = [{"role": "user", "content": "hello there"}]


class Seen:
    """A simulator that notes the path and headers of every request it gets."""

    def __init__(self) -> None:
        self.sim = create_app(SimConfig(output_tokens=4))
        self.requests: list[tuple[str, dict[bytes, bytes]]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            self.requests.append((scope["path"], dict(scope["headers"])))
        await self.sim(scope, receive, send)


@pytest.fixture
def two() -> Iterator[tuple[tuple[Seen, ServerThread], tuple[Seen, ServerThread]]]:
    first, second = Seen(), Seen()
    with serve(first) as a, serve(second) as b:
        yield (first, a), (second, b)


def post(url: str, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=headers, timeout=10)


def test_the_longest_prefix_wins_and_is_replaced_by_the_routes_path(
    two: Any, make_proxy: Callable[..., Proxied]
) -> None:
    (default, a), (routed, b) = two
    proxy = make_proxy(
        a.url + "/v1",
        routes=[
            Route(prefix="/team", url=b.url + "/unused"),
            Route(prefix="/team/llm", url=b.url + "/v1"),
        ],
    )
    chat = {"model": "gpt-4o-mini", "messages": MESSAGES}
    assert post(proxy.url, "/team/llm/chat/completions", chat).status_code == 200
    assert post(proxy.url, "/v1/chat/completions", chat).status_code == 200
    post(proxy.url, "/teamx/v1/chat/completions", chat)  # not under /team: the default upstream's
    assert [path for path, _ in routed.requests] == ["/v1/chat/completions"]
    assert [path for path, _ in default.requests] == ["/v1/chat/completions", "/teamx/v1/chat/completions"]
    assert proxy.total("llmobs_requests_total", upstream="/team/llm", endpoint="chat_completions") == 1
    assert proxy.total("llmobs_requests_total", upstream="", endpoint="chat_completions") == 2
    assert proxy.total("llmobs_tokens_total", upstream="/team/llm", type="output") == 4
    hosts = {labels["upstream"]: labels["host"] for labels in info_labels(proxy)}
    assert hosts == {"": "127.0.0.1", "/team": "127.0.0.1", "/team/llm": "127.0.0.1"}


def info_labels(proxy: Proxied) -> list[dict[str, str]]:
    return [s.labels for family in proxy.registry.collect() for s in family.samples if s.name == "llmobs_upstream_info"]


def test_each_route_keeps_its_provider_and_sends_its_own_key(two: Any, make_proxy: Callable[..., Proxied]) -> None:
    (default, a), (routed, b) = two
    spans = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(spans))
    proxy = make_proxy(
        a.url + "/v1",
        provider="openai",
        upstream_api_key="sk-operator-openai",
        routes=[Route(prefix="/anthropic", url=b.url, provider="anthropic", api_key="sk-ant-operator")],
        tracer_provider=tracer,
    )
    sdk_client(proxy.base_url, api_key="sk-client").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    # (a chat completion: the route's mechanics, not the Anthropic API, are under test here)
    body = {"model": "claude-sonnet-4-5", "messages": MESSAGES}
    headers = {"x-api-key": "sk-client-ant", "authorization": "Bearer sk-stray"}
    assert post(proxy.url, "/anthropic/v1/chat/completions", body, **headers).status_code == 200
    proxy.settle()  # a request is recorded (its span ended) just after its last byte
    _, sent_default = default.requests[0]
    _, sent_routed = routed.requests[0]
    assert sent_default[b"authorization"] == b"Bearer sk-operator-openai"
    assert sent_routed[b"x-api-key"] == b"sk-ant-operator"
    assert b"authorization" not in sent_routed  # every client credential goes, not only the one replaced
    providers = {
        span.attributes["llmobs.upstream"] if "llmobs.upstream" in span.attributes else "": (
            span.attributes["gen_ai.provider.name"]
        )
        for span in spans.get_finished_spans()
        if span.attributes
    }
    assert providers == {"": "openai", "/anthropic": "anthropic"}
    assert {labels["upstream"]: labels["provider"] for labels in info_labels(proxy)} == {
        "": "openai",
        "/anthropic": "anthropic",
    }


def test_a_websocket_follows_its_route(two: Any, make_proxy: Callable[..., Proxied]) -> None:
    (default, a), (routed, b) = two
    proxy = make_proxy(a.url + "/v1", routes=[Route(prefix="/rt", url=b.url + "/v1")])
    with connect(proxy.url.replace("http://", "ws://") + "/rt/realtime?model=gpt-realtime") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "session.created"
    assert [path for path, _ in routed.requests] == ["/v1/realtime"] and default.requests == []


def test_routes_from_the_flag_the_environment_and_the_file(tmp_path: Any) -> None:
    flags = load_settings({"routes": ["/a=https://a.example", "/b/=https://b.example/v1"]}, environ={})
    assert [(r.prefix, r.url) for r in flags.routes] == [("/a", "https://a.example"), ("/b", "https://b.example/v1")]
    short = load_settings(environ={"LLMOBS_ROUTES": "/a=https://a.example,/b=http://b:8000"})
    assert [r.prefix for r in short.routes] == ["/a", "/b"]
    as_json = load_settings(environ={"LLMOBS_ROUTES": '[{"prefix": "/a", "url": "https://a.example", "api_key": "k"}]'})
    assert as_json.routes[0].api_key is not None and as_json.routes[0].api_key.get_secret_value() == "k"
    config = tmp_path / "llmobs.yaml"
    config.write_text("routes:\n  - prefix: /anthropic\n    url: https://api.anthropic.com\n    provider: anthropic\n")
    assert load_settings(config_file=str(config), environ={}).routes[0].provider == "anthropic"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/a=localhost:8000", "LLMOBS_ROUTES[0].url: must be an http(s) URL, got 'localhost:8000'"),
        ("a=https://a.example", "must be a path prefix such as /anthropic, got 'a'"),
        ("/a", "a route is prefix=url"),
        ("/a=https://a.example,/a/=https://b.example", "prefix '/a' is given more than once"),
    ],
)
def test_a_bad_route_is_named_at_start(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(environ={"LLMOBS_ROUTES": value})
