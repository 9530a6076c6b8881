"""The simulated upstream speaks the OpenAI wire format, with predictable token counts."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from openai.types.responses import FunctionToolParam

from llmobs.sim import SimConfig, create_app
from servers import ServerThread, serve

TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
]
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},  # 3 words + 3
    {"role": "user", "content": [{"type": "text", "text": "what is the weather"}]},  # 4 words + 3
]
PROMPT_TOKENS = 3 + 3 + 4 + 3


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerThread]:
    with serve(create_app(SimConfig(output_tokens=5))) as server:
        yield server


@pytest.fixture(scope="module")
def client(srv: ServerThread) -> Iterator[OpenAI]:
    with OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=5) as c:
        yield c


@pytest.fixture(scope="module")
def http(srv: ServerThread) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=srv.url, timeout=5) as c:
        yield c


def sse_frames(text: str) -> list[str]:
    """Split an SSE body into frames, asserting every frame ends with a blank line."""
    assert text.endswith("\n\n")
    return text[:-2].split("\n\n")


def data_of(frames: list[str]) -> list[Any]:
    out: list[Any] = []
    for frame in frames:
        assert frame.startswith("data: "), frame
        payload = frame[len("data: ") :]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def raw(url: str, body: Any, headers: dict[str, str] | None = None, method: str = "POST") -> tuple[int, Any, bytes]:
    """One request with urllib, which (unlike httpx) leaves content-encoding alone."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


# ---------------------------------------------------------------------------- chat


def test_chat_non_stream_counts_words_plus_three_per_message(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert r.object == "chat.completion"
    assert r.choices[0].message.content == "tok1 tok2 tok3 tok4 tok5 "
    assert r.choices[0].finish_reason == "stop"
    assert r.system_fingerprint and r.service_tier == "default"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        PROMPT_TOKENS,
        5,
        PROMPT_TOKENS + 5,
    )
    assert r.usage.prompt_tokens_details and r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.usage.completion_tokens_details and r.usage.completion_tokens_details.reasoning_tokens == 0


def test_chat_stream_with_sdk(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok1 tok2 tok3 tok4 tok5 "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == PROMPT_TOKENS and chunks[-1].usage.completion_tokens == 5
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1


def test_chat_stream_wire_format_with_include_usage(http: httpx2.Client) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    r = http.post("/v1/chat/completions", json=body, headers={"accept-encoding": "gzip"})
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert "content-encoding" not in r.headers  # streams are never compressed
    assert r.headers["x-request-id"]
    frames = sse_frames(r.text)
    assert frames[-1] == "data: [DONE]"
    chunks = data_of(frames[:-1])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"] for c in chunks[1:6]] == [{"content": f"tok{i} "} for i in range(1, 6)]
    assert chunks[6]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:6])
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == PROMPT_TOKENS and last["usage"]["total_tokens"] == PROMPT_TOKENS + 5


def test_chat_stream_without_include_usage_has_no_usage_key(http: httpx2.Client) -> None:
    r = http.post("/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True})
    chunks = data_of(sse_frames(r.text))
    assert chunks[-1] == "[DONE]"
    assert all("usage" not in c for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_max_tokens_truncates_with_length(client: OpenAI) -> None:
    r = client.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=2)
    assert r.choices[0].message.content == "tok1 tok2 "
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 2


def test_output_tokens_header_overrides_config(client: OpenAI) -> None:
    r = client.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-sim-output-tokens": "12"})
    assert r.usage is not None and r.usage.completion_tokens == 12
    assert r.choices[0].message.content is not None and r.choices[0].message.content.endswith("tok12 ")


def test_prompt_cache_key_reports_half_the_prompt_as_cached(client: OpenAI) -> None:
    r = client.chat.completions.create(model="m", messages=MESSAGES, prompt_cache_key="conv-1")
    assert r.usage and r.usage.prompt_tokens_details
    assert r.usage.prompt_tokens_details.cached_tokens == PROMPT_TOKENS // 2
    assert r.usage.prompt_tokens_details.cache_write_tokens is None


def test_prompt_cache_key_starting_with_write_reports_cache_writes(client: OpenAI) -> None:
    r = client.chat.completions.create(model="m", messages=MESSAGES, prompt_cache_key="write-1")
    assert r.usage and r.usage.prompt_tokens_details
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.usage.prompt_tokens_details.cache_write_tokens == PROMPT_TOKENS // 2


def test_vllm_reasoning_models_stream_delta_reasoning(http: httpx2.Client) -> None:
    body = {
        "model": "qwen-reason",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = data_of(sse_frames(http.post("/v1/chat/completions", json=body).text))[:-1]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert [d["reasoning"] for d in deltas if "reasoning" in d] == ["think1 ", "think2 "]
    assert not any("reasoning_content" in d for d in deltas)
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 2 + 5
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 2


def test_deepseek_reasoning_models_stream_reasoning_content(http: httpx2.Client) -> None:
    body = {"model": "deepseek-reasoning-content", "messages": MESSAGES, "stream": True}
    chunks = data_of(sse_frames(http.post("/v1/chat/completions", json=body).text))[:-1]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert [d["reasoning_content"] for d in deltas if "reasoning_content" in d] == ["think1 ", "think2 "]
    # reasoning comes before the answer
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert all("reasoning_content" not in d for d in deltas[first_content:])


def test_noreasoncount_models_omit_completion_details(client: OpenAI) -> None:
    r = client.chat.completions.create(model="reason-noreasoncount", messages=MESSAGES)
    assert r.usage is not None and r.usage.completion_tokens == 7
    assert r.usage.completion_tokens_details is None
    assert r.choices[0].message.model_extra == {"reasoning": "think1 think2 "}


def test_max_tokens_cap_counts_reasoning_first(client: OpenAI) -> None:
    r = client.chat.completions.create(model="o-reason", messages=MESSAGES, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == "tok1 "
    assert r.usage and r.usage.completion_tokens_details
    assert (r.usage.completion_tokens, r.usage.completion_tokens_details.reasoning_tokens) == (3, 2)


def test_tool_call_streamed_in_pieces_is_parsed_by_sdk(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS, stream=True)
    chunks = list(stream)
    pieces = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    assert len(pieces) == 6  # header + one piece per token
    assert pieces[0][0].id and pieces[0][0].function and pieces[0][0].function.name == "get_weather"
    args = "".join(p[0].function.arguments or "" for p in pieces if p[0].function)
    assert json.loads(args) == {"q": "tok1 tok2 tok3 tok4 tok5 "}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_call_non_stream(client: OpenAI) -> None:
    r = client.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and msg.content is None
    assert msg.tool_calls and msg.tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(msg.tool_calls[0].function.arguments)["q"].startswith("tok1")  # type: ignore[union-attr]


def test_n_choices_each_finish_and_usage_counts_all(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, n=3, stream=True, stream_options={"include_usage": True}
        )
    )
    finishes = {
        c.choices[0].index: c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    }
    assert finishes == {0: "stop", 1: "stop", 2: "stop"}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 15
    r = client.chat.completions.create(model="m", messages=MESSAGES, n=2)
    assert [c.index for c in r.choices] == [0, 1] and r.usage and r.usage.completion_tokens == 10


# ---------------------------------------------------------------------------- legacy completions


def test_legacy_completions(client: OpenAI) -> None:
    r = client.completions.create(model="m", prompt="one two three")
    assert r.object == "text_completion" and r.choices[0].text == "tok1 tok2 tok3 tok4 tok5 "
    assert r.usage and (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 5)
    chunks = list(
        client.completions.create(
            model="m",
            prompt=["one two", "three"],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "tok1 tok2 tok3 tok4 "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 4)


def test_legacy_stream_wire_format(http: httpx2.Client) -> None:
    r = http.post("/v1/completions", json={"model": "m", "prompt": [1, 2, 3, 4], "stream": True})
    chunks = data_of(sse_frames(r.text))
    assert chunks[-1] == "[DONE]"
    assert all(c["object"] == "text_completion" and "usage" not in c for c in chunks[:-1])
    assert chunks[-2]["choices"] == [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}]


# ---------------------------------------------------------------------------- embeddings


def test_embeddings_base64_and_float_agree(client: OpenAI) -> None:
    r = client.embeddings.create(model="e", input=["hello world", "again"])  # SDK asks for base64
    floats = client.embeddings.create(model="e", input=["hello world", "again"], encoding_format="float")
    assert [d.embedding for d in r.data] == [d.embedding for d in floats.data]
    assert len(r.data) == 2 and len(r.data[0].embedding) == 8
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (3, 3)
    tokens = client.embeddings.create(model="e", input=[[1, 2, 3], [4]], dimensions=4)
    assert tokens.usage.prompt_tokens == 4 and len(tokens.data[1].embedding) == 4


# ---------------------------------------------------------------------------- responses


def test_responses_non_stream(client: OpenAI) -> None:
    r = client.responses.create(
        model="m",
        instructions="be brief",
        input=[{"role": "user", "content": "hi there"}],
        prompt_cache_key="k",
    )
    assert r.status == "completed" and r.output_text == "tok1 tok2 tok3 tok4 tok5 "
    assert r.usage is not None
    assert r.usage.input_tokens == 2 + 2 + 3 and r.usage.output_tokens == 5 and r.usage.total_tokens == 12
    assert r.usage.input_tokens_details.cached_tokens == 3


def test_responses_incomplete_on_max_output_tokens(client: OpenAI) -> None:
    r = client.responses.create(model="m", input="hi", max_output_tokens=2)
    assert r.status == "incomplete" and r.incomplete_details and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "tok1 tok2 " and r.usage and r.usage.output_tokens == 2


def test_responses_stream_event_sequence(http: httpx2.Client, client: OpenAI) -> None:
    text = http.post("/v1/responses", json={"model": "m", "input": "hi", "stream": True}).text
    frames = sse_frames(text)
    types = []
    for i, frame in enumerate(frames):
        event, data = frame.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert event == "event: " + payload["type"] and payload["sequence_number"] == i
        types.append(payload["type"])
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 5,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    events = list(client.responses.create(model="m", input="hi", stream=True))
    final = events[-1]
    assert final.type == "response.completed" and final.response.usage is not None
    assert (final.response.usage.input_tokens, final.response.usage.output_tokens) == (1, 5)


def test_responses_reasoning_summary_and_reasoning_tokens(client: OpenAI) -> None:
    events = list(client.responses.create(model="o-reason", input="hi", stream=True))
    deltas = [e.delta for e in events if e.type == "response.reasoning_summary_text.delta"]
    assert deltas == ["think1 ", "think2 "]
    final = events[-1]
    assert final.type == "response.completed" and final.response.usage is not None
    assert final.response.usage.output_tokens == 7
    assert final.response.usage.output_tokens_details.reasoning_tokens == 2


def test_responses_function_call(client: OpenAI) -> None:
    tools: list[FunctionToolParam] = [
        {"type": "function", "name": "lookup", "parameters": {"type": "object"}, "strict": False}
    ]
    events = list(client.responses.create(model="m", input="hi", tools=tools, stream=True))
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"q": "tok1 tok2 tok3 tok4 tok5 "}
    final = events[-1]
    assert final.type == "response.completed"
    item = final.response.output[0]
    assert item.type == "function_call" and item.name == "lookup" and item.arguments == args


def test_responses_incomplete_stream_ends_with_response_incomplete(client: OpenAI) -> None:
    events = list(client.responses.create(model="m", input="hi", stream=True, max_output_tokens=1))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details is not None


# ---------------------------------------------------------------------------- plumbing


def test_models_list(client: OpenAI) -> None:
    assert "sim-model" in [m.id for m in client.models.list()]


def test_unknown_path_is_404_with_openai_error_body(srv: ServerThread) -> None:
    status, _, body = raw(srv.url + "/v1/nope", {"model": "m"})
    assert status == 404
    assert json.loads(body) == {
        "error": {
            "message": "Invalid URL (POST /v1/nope)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    status, _, _ = raw(srv.url + "/v1/chat/completions", None, method="GET")
    assert status == 404


def test_bad_json_is_400_with_error_body(srv: ServerThread) -> None:
    status, headers, body = raw(srv.url + "/v1/chat/completions", b"{not json", {"content-type": "application/json"})
    assert status == 400 and headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and set(error) == {"message", "type", "param", "code"}


def test_non_stream_json_is_gzipped_when_accepted(srv: ServerThread) -> None:
    body = {"model": "m", "messages": MESSAGES}
    status, headers, data = raw(srv.url + "/v1/chat/completions", body, {"accept-encoding": "gzip, deflate"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(data)
    assert json.loads(gzip.decompress(data))["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert headers["x-request-id"]
    _, headers, data = raw(srv.url + "/v1/chat/completions", body)
    assert headers["content-encoding"] is None and json.loads(data)["object"] == "chat.completion"


def test_lifespan_is_answered() -> None:
    app = create_app()
    sent: list[Any] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message)

    async def main() -> None:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    asyncio.run(main())
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_ttft_and_chunk_gap_timing() -> None:
    with serve(create_app(SimConfig(ttft=0.2, chunk_gap=0.05, output_tokens=3))) as server:
        body = {"model": "m", "messages": MESSAGES, "stream": True}
        with httpx2.Client(timeout=5) as http:
            t0 = time.perf_counter()
            with http.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
                headers_at = time.perf_counter() - t0
                arrivals = []
                for chunk in r.iter_text():
                    if '"content":"tok' in chunk:
                        arrivals.append(time.perf_counter() - t0)
    # Server sleeps are lower bounds and client-side delays only add to them, so these
    # hold on a loaded machine too (a gap between two arrivals can shrink; the total cannot).
    assert arrivals[0] - headers_at >= 0.1  # headers go out before the model "thinks"
    assert arrivals[0] >= 0.18
    assert len(arrivals) == 3 and arrivals[-1] >= 0.2 + 2 * 0.05 - 0.01


# ---------------------------------------------------------------------------- fault models


def test_sim_error_status_with_openai_body(client: OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="sim-error-429", messages=MESSAGES)
    assert info.value.status_code == 429
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="sim-error-500", input="x")


def test_sim_error_empty_body(srv: ServerThread) -> None:
    status, _, body = raw(srv.url + "/v1/chat/completions", {"model": "sim-error-503-empty", "messages": []})
    assert (status, body) == (503, b"")


def test_sim_stream_error_sends_error_payload_mid_stream(http: httpx2.Client, client: OpenAI) -> None:
    body = {
        "model": "sim-stream-error",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = data_of(sse_frames(http.post("/v1/chat/completions", json=body).text))
    assert "[DONE]" not in chunks
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]] == ["tok1 ", "tok2 ", "tok3 "]
    assert set(chunks[-1]) == {"error"} and chunks[-1]["error"]["type"] == "server_error"
    with pytest.raises(openai.APIError, match="mid-stream"):
        list(client.chat.completions.create(model="sim-stream-error", messages=MESSAGES, stream=True))


def test_sim_stream_error_on_responses_ends_with_response_failed(client: OpenAI) -> None:
    events = list(client.responses.create(model="sim-stream-error", input="hi", stream=True))
    assert [e.type for e in events].count("response.output_text.delta") == 3
    assert events[-1].type == "response.failed" and events[-1].response.error is not None


def test_sim_no_usage_ignores_include_usage(http: httpx2.Client, client: OpenAI) -> None:
    body = {
        "model": "sim-no-usage",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = data_of(sse_frames(http.post("/v1/chat/completions", json=body).text))
    assert chunks[-1] == "[DONE]" and all("usage" not in c and c["choices"] for c in chunks[:-1])
    r = client.chat.completions.create(model="sim-no-usage", messages=MESSAGES)
    assert r.usage is None


def test_sim_reject_stream_options(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="sim-reject-stream-options",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "stream_options"
    ok = list(client.chat.completions.create(model="sim-reject-stream-options", messages=MESSAGES, stream=True))
    assert ok[-1].choices[0].finish_reason == "stop"


def test_stream_options_without_stream_is_rejected_like_openai(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=MESSAGES, stream_options={"include_usage": True})
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "stream_options"


def test_sim_hang_never_answers(srv: ServerThread) -> None:
    c = OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=0.3)
    with c, pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(model="sim-hang", messages=MESSAGES)


def test_sim_reset_breaks_the_stream(http: httpx2.Client, client: OpenAI) -> None:
    seen: list[bytes] = []
    body = {"model": "sim-reset", "messages": MESSAGES, "stream": True}
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        http.stream("POST", "/v1/chat/completions", json=body) as r,
    ):
        seen.extend(r.iter_raw())
    assert b"tok3 " in b"".join(seen) and b"[DONE]" not in b"".join(seen)
    with pytest.raises(openai.APIConnectionError):
        list(client.chat.completions.create(model="sim-reset", messages=MESSAGES, stream=True))
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="sim-reset", messages=MESSAGES)
