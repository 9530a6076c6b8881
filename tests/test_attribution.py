"""Attribution: headers on spans (and as labels when asked), never upstream; conversation ids on spans,
never on metrics; key fingerprints shown as team names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import Proxied
from llmobs.apis.request import conversation_of
from llmobs.attribution import TenantMapError, fingerprint, read_tenant_map
from llmobs.config import ConfigError, load_settings

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def traced(make_proxy: Callable[..., Proxied], url: str, **settings: Any) -> tuple[Proxied, InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(spans))
    return make_proxy(url, tracer_provider=tracer, **settings), spans


def only_span(proxy: Proxied, spans: InMemorySpanExporter) -> dict[str, Any]:
    proxy.settle()
    (span,) = spans.get_finished_spans()
    return dict(span.attributes or {})


def test_attribution_headers_land_on_the_span_and_never_upstream(
    recording_upstream: tuple[str, list[dict[bytes, bytes]]], make_proxy: Callable[..., Proxied]
) -> None:
    url, seen = recording_upstream
    proxy, spans = traced(make_proxy, url, attribution_headers=["x-llmobs-user", "x-llmobs-project", "x-team-id"])
    headers = {"x-llmobs-user": "ana", "x-llmobs-project": "search", "x-team-id": "t-7", "x-other": "kept"}
    assert httpx.post(proxy.base_url + "/chat/completions", json=CHAT, headers=headers).status_code == 200
    attrs = only_span(proxy, spans)
    assert attrs["llmobs.attribution.user"] == "ana"
    assert attrs["llmobs.attribution.project"] == "search"
    assert attrs["llmobs.attribution.x_team_id"] == "t-7"  # any header the operator names
    (sent,) = seen
    assert b"x-llmobs-user" not in sent and b"x-team-id" not in sent and sent[b"x-other"] == b"kept"
    labels = {k for family in proxy.registry.collect() for s in family.samples for k in s.labels}
    assert "user" not in labels and "project" not in labels  # not a label unless asked


def test_an_attribution_label_when_asked_within_the_caps(upstream: Any, make_proxy: Callable[..., Proxied]) -> None:
    proxy = make_proxy(upstream.url + "/v1", attribution_labels=["project"], max_label_values=2)
    for project in ("search", "chat", "ads", "search"):
        httpx.post(proxy.base_url + "/chat/completions", json=CHAT, headers={"x-llmobs-project": project})
    httpx.post(proxy.base_url + "/chat/completions", json=CHAT)
    assert proxy.total("llmobs_requests_total", project="search") == 2
    assert proxy.total("llmobs_requests_total", project="other") == 1  # the third value, past the cap
    assert proxy.total("llmobs_requests_total", project="") == 1
    assert proxy.total("llmobs_tokens_total", project="chat", type="output") > 0
    assert proxy.total("llmobs_cost_usd_total", project="search") > 0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"conversation": "conv_1", "prompt_cache_key": "p", "user": "u"}, "conv_1"),
        ({"conversation": {"id": "conv_2"}}, "conv_2"),
        ({"metadata": {"session_id": "s-9"}, "user": "u"}, "s-9"),
        ({"metadata": {"conversation_id": "c-1", "session_id": "s"}}, "c-1"),
        ({"prompt_cache_key": "thread-42", "user": "u"}, "thread-42"),
        ({"user": "end-user-3"}, "end-user-3"),
        ({"user": ""}, None),
        ({"conversation": 5, "metadata": "x"}, None),
    ],
)
def test_the_conversation_comes_from_the_body_in_order(body: dict[str, Any], expected: str | None) -> None:
    assert conversation_of(body) == expected


def test_the_conversation_is_on_the_span_never_on_a_metric(upstream: Any, make_proxy: Callable[..., Proxied]) -> None:
    proxy, spans = traced(make_proxy, upstream.url + "/v1")
    body = {**CHAT, "prompt_cache_key": "from-body"}
    httpx.post(proxy.base_url + "/chat/completions", json=body, headers={"x-llmobs-conversation": "from-header"})
    assert only_span(proxy, spans)["gen_ai.conversation.id"] == "from-header"  # the header wins
    text = httpx.get(proxy.url + "/metrics").text
    assert "from-header" not in text and "from-body" not in text


def test_fingerprints_show_as_team_names(upstream: Any, make_proxy: Callable[..., Proxied], tmp_path: Path) -> None:
    mapping = tmp_path / "tenants.yaml"
    mapping.write_text(f"tenants:\n  {fingerprint('sk-search-team')}: search-team\n")
    proxy = make_proxy(upstream.url + "/v1", tenant_map_file=mapping)
    for key in ("sk-search-team", "sk-unknown"):
        httpx.post(proxy.base_url + "/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})
    assert proxy.total("llmobs_requests_total", tenant="search-team") == 1
    assert proxy.total("llmobs_requests_total", tenant=fingerprint("sk-unknown")) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("teams: {}\n", "single key 'tenants'"),
        ("tenants:\n  search: team\n", "'search' is not a key fingerprint"),
        ("tenants:\n  key-0123456789: ''\n", "1 to 128 characters"),
        ("tenants: [\n", "invalid YAML"),
        ("tenants: key-\n", "'tenants' must map key fingerprints to names"),
        # PyYAML would keep the second line silently: a copied line must not rename a tenant.
        ("tenants:\n  key-0123456789: a\n  key-0123456789: b\n", "duplicate key 'key-0123456789'"),
    ],
)
def test_a_bad_tenant_map_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    with pytest.raises(TenantMapError, match=message):
        read_tenant_map(path)


def test_a_tenant_name_written_as_a_number_keeps_its_text(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  key-0123456789: 007\n  key-abcdefabcd: 1e3\n")
    assert read_tenant_map(path) == {"key-0123456789": "007", "key-abcdefabcd": "1e3"}


def test_attribution_labels_must_name_an_attribution_header() -> None:
    with pytest.raises(ConfigError, match="LLMOBS_ATTRIBUTION_LABELS: 'team' names no attribution header"):
        load_settings(environ={"LLMOBS_ATTRIBUTION_LABELS": "team"})
    with pytest.raises(ConfigError, match="'model' cannot be a label name"):
        load_settings(environ={"LLMOBS_ATTRIBUTION_HEADERS": "x-llmobs-model", "LLMOBS_ATTRIBUTION_LABELS": "model"})
