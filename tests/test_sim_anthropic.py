"""The simulator speaks the Anthropic Messages API, checked by the official SDK's own parsing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import MessageParam, TextBlockParam, ToolParam

from llmobs.sim import SimConfig, create_app
from servers import ServerThread, serve

SYSTEM = "You are terse."  # 3 words
MESSAGES: list[MessageParam] = [{"role": "user", "content": "what is the weather"}]  # 4 words + 3
INPUT = 3 + 4 + 3
TOOLS: list[ToolParam] = [
    {"name": "get_weather", "input_schema": {"type": "object"}},
    {"name": "get_time", "input_schema": {"type": "object"}},
]
TEXT = "tok1 tok2 tok3 tok4 tok5 "


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerThread]:
    with serve(create_app(SimConfig(output_tokens=5))) as server:
        yield server


@pytest.fixture(scope="module")
def client(srv: ServerThread) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=srv.url, api_key="sk-ant-test", max_retries=0, timeout=5) as c:
        yield c


@pytest.fixture(scope="module")
def http(srv: ServerThread) -> Iterator[httpx2.Client]:
    headers = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
    with httpx2.Client(base_url=srv.url, timeout=5, headers=headers) as c:
        yield c


def events(text: str) -> list[tuple[str, Any]]:
    """(event name, data) of each SSE frame, asserting the framing Anthropic uses."""
    assert text.endswith("\n\n")
    out = []
    for frame in text[:-2].split("\n\n"):
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: "), frame
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == event_line.removeprefix("event: ")
        out.append((data["type"], data))
    return out


def body(model: str = "claude-sim", **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 100, "system": SYSTEM, "messages": MESSAGES, **extra}


# ---------------------------------------------------------------------------- messages


def test_non_stream_message_counts_system_and_three_per_message(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(**body())
    m = raw.parse()
    assert (m.type, m.role, m.model) == ("message", "assistant", "claude-sim")
    assert m.id.startswith("msg_") and m.content[0].type == "text" and m.content[0].text == TEXT
    assert (m.stop_reason, m.stop_sequence) == ("end_turn", None)
    u = m.usage
    assert (u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (
        INPUT,
        5,
        0,
        0,
    )
    assert u.cache_creation is not None and u.cache_creation.ephemeral_5m_input_tokens == 0
    assert u.service_tier == "standard"
    assert raw.headers["request-id"].startswith("req_") and "x-request-id" not in raw.headers


def test_stream_events_in_order_with_cumulative_usage(http: httpx2.Client) -> None:
    r = http.post("/v1/messages", json=body(stream=True))
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    got = events(r.text)
    assert [name for name, _ in got] == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = got[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    # message_start has the input side; output_tokens there is a placeholder 1, as the API sends.
    assert start["usage"] == {
        "input_tokens": INPUT,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 1,
        "service_tier": "standard",
    }
    assert got[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    deltas = [d["delta"] for name, d in got if name == "content_block_delta"]
    assert deltas == [{"type": "text_delta", "text": f"tok{i} "} for i in range(1, 6)]
    delta = got[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {
        "input_tokens": INPUT,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 5,
    }


def test_sdk_stream_final_message_has_the_documented_usage(client: anthropic.Anthropic) -> None:
    with client.messages.stream(**body()) as stream:
        assert "".join(stream.text_stream) == TEXT
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (INPUT, 5)


def test_max_tokens_cap_stops_with_max_tokens(client: anthropic.Anthropic) -> None:
    m = client.messages.create(**body(max_tokens=2))
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 2
    assert m.content[0].type == "text" and m.content[0].text == "tok1 tok2 "


def test_stop_sequence_cuts_before_it_and_names_it(client: anthropic.Anthropic) -> None:
    m = client.messages.create(**body(stop_sequences=["never", "tok3"]))
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", "tok3")
    assert m.content[0].type == "text" and m.content[0].text == "tok1 tok2 " and m.usage.output_tokens == 2


@pytest.mark.parametrize(
    ("model", "reason", "output"), [("sim-pause-turn", "pause_turn", 5), ("sim-refusal", "refusal", 3)]
)
def test_pause_turn_and_refusal_by_model_name(
    client: anthropic.Anthropic, model: str, reason: str, output: int
) -> None:
    m = client.messages.create(**body(model))
    assert m.stop_reason == reason and m.usage.output_tokens == output
    with client.messages.stream(**body(model)) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == reason and final.usage.output_tokens == output
    if reason == "refusal":
        assert m.stop_details is not None and m.stop_details.type == "refusal"
        assert final.stop_details is not None and final.stop_details.type == "refusal"


def test_missing_max_tokens_is_an_anthropic_400(http: httpx2.Client) -> None:
    r = http.post("/v1/messages", json={"model": "m", "messages": MESSAGES})
    assert r.status_code == 400
    assert r.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
        "request_id": r.headers["request-id"],
    }


# ---------------------------------------------------------------------------- cache


def cached_request() -> dict[str, Any]:
    system: list[TextBlockParam] = [{"type": "text", "text": "a b c", "cache_control": {"type": "ephemeral"}}]
    content: list[TextBlockParam] = [
        {"type": "text", "text": "one two three four", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "five"},
    ]
    return body(system=system, messages=[{"role": "user", "content": content}])


CACHED_TOTAL = 3 + (4 + 1) + 3


def test_cache_control_blocks_are_cache_writes_split_by_ttl(client: anthropic.Anthropic) -> None:
    u = client.messages.create(**cached_request()).usage
    assert u.cache_creation_input_tokens == 3 + 4 and u.cache_read_input_tokens == 0
    assert u.cache_creation is not None
    assert (u.cache_creation.ephemeral_5m_input_tokens, u.cache_creation.ephemeral_1h_input_tokens) == (3, 4)
    assert u.input_tokens == CACHED_TOTAL - 7  # Anthropic's input_tokens excludes cache tokens


def test_cache_read_header_turns_the_same_blocks_into_reads(client: anthropic.Anthropic) -> None:
    with client.messages.stream(**cached_request(), extra_headers={"x-sim-cache": "read"}) as stream:
        u = stream.get_final_message().usage
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens, u.input_tokens) == (7, 0, CACHED_TOTAL - 7)


def test_count_tokens_counts_the_whole_input(client: anthropic.Anthropic) -> None:
    assert (
        client.messages.count_tokens(**{k: v for k, v in cached_request().items() if k != "max_tokens"}).input_tokens
        == CACHED_TOTAL
    )


# ---------------------------------------------------------------------------- thinking and tools


def test_thinking_streams_thinking_then_signature_then_text(http: httpx2.Client, client: anthropic.Anthropic) -> None:
    request = body(max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024})
    got = events(http.post("/v1/messages", json=request | {"stream": True}).text)
    block0 = [d["delta"]["type"] for name, d in got if name == "content_block_delta" and d["index"] == 0]
    assert block0 == ["thinking_delta", "thinking_delta", "signature_delta"]
    starts = [d["content_block"] for name, d in got if name == "content_block_start"]
    assert starts == [{"type": "thinking", "thinking": "", "signature": ""}, {"type": "text", "text": ""}]
    assert got[-2][1]["usage"]["output_tokens"] == 2 + 5
    with client.messages.stream(**request) as stream:
        final = stream.get_final_message()
    thinking, text = final.content
    assert thinking.type == "thinking" and thinking.thinking == "think1 think2 " and thinking.signature
    assert text.type == "text" and text.text == TEXT
    assert final.usage.output_tokens == 7
    assert final.usage.output_tokens_details is not None and final.usage.output_tokens_details.thinking_tokens == 2


@pytest.mark.parametrize(
    ("budget", "max_tokens", "message"),
    [
        (1000, 2000, "greater than or equal to 1024"),
        (2000, 2000, "`max_tokens` must be greater than `thinking.budget_tokens`"),
    ],
)
def test_thinking_budget_rules(client: anthropic.Anthropic, budget: int, max_tokens: int, message: str) -> None:
    with pytest.raises(anthropic.BadRequestError, match=message):
        client.messages.create(**body(max_tokens=max_tokens, thinking={"type": "enabled", "budget_tokens": budget}))


def test_tool_use_streams_input_json_after_an_empty_piece(http: httpx2.Client, client: anthropic.Anthropic) -> None:
    got = events(http.post("/v1/messages", json=body(tools=TOOLS, stream=True)).text)
    start = got[1][1]["content_block"]
    assert start["type"] == "tool_use" and start["name"] == "get_weather" and start["input"] == {}
    pieces = [d["delta"]["partial_json"] for name, d in got if name == "content_block_delta"]
    assert pieces[0] == "" and len(pieces) == 1 + 5
    assert json.loads("".join(pieces)) == {"q": TEXT}
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use"
    with client.messages.stream(**body(tools=TOOLS)) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use" and block.input == {"q": TEXT} and block.id.startswith("toolu_")
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 5


def test_tool_choice_names_the_tool_or_turns_tools_off(client: anthropic.Anthropic) -> None:
    chosen = client.messages.create(**body(tools=TOOLS, tool_choice={"type": "tool", "name": "get_time"}))
    assert chosen.content[0].type == "tool_use" and chosen.content[0].name == "get_time"
    off = client.messages.create(**body(tools=TOOLS, tool_choice={"type": "none"}))
    assert off.stop_reason == "end_turn" and off.content[0].type == "text"


# ---------------------------------------------------------------------------- errors and faults


@pytest.mark.parametrize(
    ("status", "error_type", "exception"),
    [
        (400, "invalid_request_error", anthropic.BadRequestError),
        (401, "authentication_error", anthropic.AuthenticationError),
        (403, "permission_error", anthropic.PermissionDeniedError),
        (404, "not_found_error", anthropic.NotFoundError),
        (413, "request_too_large", anthropic.APIStatusError),
        (429, "rate_limit_error", anthropic.RateLimitError),
        (500, "api_error", anthropic.InternalServerError),
        (529, "overloaded_error", anthropic.InternalServerError),
    ],
)
def test_sim_error_status_has_the_anthropic_error_type(
    client: anthropic.Anthropic, status: int, error_type: str, exception: type[Exception]
) -> None:
    with pytest.raises(exception) as info:
        client.messages.create(**body(f"sim-error-{status}"))
    err = info.value
    assert isinstance(err, anthropic.APIStatusError) and err.status_code == status
    assert isinstance(err.body, dict) and err.body["type"] == "error"
    assert err.body["error"]["type"] == error_type and err.body["request_id"] == err.request_id


def test_sim_overloaded_non_stream_is_529(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(**body("sim-overloaded"))


def test_sim_overloaded_stream_sends_deltas_then_an_error_event(
    http: httpx2.Client, client: anthropic.Anthropic
) -> None:
    got = events(http.post("/v1/messages", json=body("sim-overloaded", stream=True)).text)
    assert [d["delta"]["text"] for name, d in got if name == "content_block_delta"] == ["tok1 ", "tok2 ", "tok3 "]
    assert got[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert "message_stop" not in [name for name, _ in got]
    with pytest.raises(anthropic.APIStatusError) as info, client.messages.stream(**body("sim-overloaded")) as stream:
        list(stream)
    assert isinstance(info.value.body, dict) and info.value.body["error"]["type"] == "overloaded_error"


def test_sim_stream_error_is_an_api_error_event(http: httpx2.Client) -> None:
    got = events(http.post("/v1/messages", json=body("sim-stream-error", stream=True)).text)
    assert got[-1][1]["error"]["type"] == "api_error"


def test_sim_reset_drops_the_connection(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIConnectionError), client.messages.stream(**body("sim-reset")) as stream:
        list(stream)
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(**body("sim-reset"))


def test_sim_hang_never_answers(srv: ServerThread) -> None:
    with anthropic.Anthropic(base_url=srv.url, api_key="k", max_retries=0, timeout=0.3) as c:
        with pytest.raises(anthropic.APITimeoutError):
            c.messages.create(**body("sim-hang"))


# ---------------------------------------------------------------------------- rate limits


def limits(headers: Any) -> dict[str, str]:
    return {
        k.removeprefix("anthropic-ratelimit-"): v for k, v in headers.items() if k.startswith("anthropic-ratelimit-")
    }


def test_rate_limit_headers_count_requests_and_tokens_per_model(client: anthropic.Anthropic) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    first = limits(client.messages.with_raw_response.create(**body("rl-anthropic")).headers)
    second = limits(client.messages.with_raw_response.create(**cached_request() | {"model": "rl-anthropic"}).headers)
    other = limits(client.messages.with_raw_response.create(**body("rl-anthropic-other")).headers)
    assert (first["requests-limit"], first["requests-remaining"], second["requests-remaining"]) == (
        "10000",
        "9999",
        "9998",
    )
    assert other["requests-remaining"] == "9999"  # one account per model
    assert first["input-tokens-remaining"] == str(2_000_000 - INPUT)
    # Cache writes count as input; the second request's input is 3 uncached + 7 written.
    assert second["input-tokens-remaining"] == str(2_000_000 - INPUT - CACHED_TOTAL)
    assert second["output-tokens-limit"] == "400000" and second["output-tokens-remaining"] == str(400_000 - 10)
    # "tokens" is the most restrictive of the two: here the output limit, with fewer remaining.
    assert (second["tokens-limit"], second["tokens-remaining"]) == ("400000", second["output-tokens-remaining"])
    for name in ("requests", "tokens", "input-tokens", "output-tokens"):
        reset = datetime.strptime(second[name + "-reset"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert before <= reset <= datetime.now(UTC) + timedelta(seconds=2)


def test_sim_ratelimit_is_a_429_with_retry_after(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(**body("sim-ratelimit"))
    headers = info.value.response.headers
    assert headers["retry-after"] == "1" and headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert isinstance(info.value.body, dict) and info.value.body["error"]["type"] == "rate_limit_error"


# ---------------------------------------------------------------------------- batches


def test_batches_create_retrieve_list_and_results(client: anthropic.Anthropic) -> None:
    requests: list[Any] = [
        {"custom_id": "a", "params": body()},
        {"custom_id": "b", "params": {"model": "m", "messages": MESSAGES}},  # no max_tokens: errored
    ]
    batch = client.messages.batches.create(requests=requests)
    assert batch.type == "message_batch" and batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 2 and batch.results_url is None
    done = client.messages.batches.retrieve(batch.id)
    assert done.processing_status == "ended" and done.ended_at is not None
    assert (done.request_counts.succeeded, done.request_counts.errored, done.request_counts.processing) == (1, 1, 0)
    assert batch.id in [b.id for b in client.messages.batches.list()]
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    ok, failed = results["a"], results["b"]
    assert ok.type == "succeeded" and ok.message.usage.input_tokens == INPUT and ok.message.usage.output_tokens == 5
    assert failed.type == "errored" and failed.error.error.type == "invalid_request_error"


def test_unknown_batch_is_an_anthropic_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.batches.retrieve("msgbatch_nope")
    assert isinstance(info.value.body, dict) and info.value.body["error"]["type"] == "not_found_error"
