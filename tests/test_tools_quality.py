"""Tool calls and cheap quality signals (invalid JSON, empty answers, refusals), streamed and not.

First the accumulators on real-shaped streams, split at every byte boundary; then end to end:
the official `openai` and `anthropic` SDKs through a live proxy in front of the simulator
(its rules: sim/openai_chat.py, sim/openai_responses.py, sim/anthropic_messages.py), or in
front of a raw upstream for what the simulator cannot send (parallel calls, broken arguments).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import Proxied, sdk_client
from fault_upstream import Conn, FaultUpstream, RawRequest, fault_upstream, http_response
from llmobs.apis import openai_chat
from llmobs.apis.anthropic_messages import parse_request
from llmobs.apis.quality import Judge, parses
from llmobs.apis.request import parse_body
from llmobs.apis.table import ENDPOINTS
from llmobs.dev.harness import ServerThread
from llmobs.records import Observation, Outcome, Quality, RequestInfo
from observing import sse_observer

# --- real-shaped wire data ------------------------------------------------------------------


def sse(*objects: Any, names: bool = False) -> bytes:
    """Frame objects as SSE events (`event:` lines from their `type` when `names`)."""
    out = b""
    for obj in objects:
        if names:
            out += f"event: {obj['type']}\n".encode()
        data = obj if isinstance(obj, str) else json.dumps(obj)
        out += f"data: {data}\n\n".encode()
    return out


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


USAGE_CHUNK = {**chunk(), "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}}


def call_opening(at: int, call_id: str, name: str) -> dict[str, Any]:
    return {"index": at, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}


def call_piece(at: int, arguments: str) -> dict[str, Any]:
    return {"index": at, "function": {"arguments": arguments}}


def parallel_calls(weather_args: tuple[str, str] = ('{"city": ', '"Paris"}')) -> bytes:
    """Two parallel tool calls, as OpenAI streams them: an opening, then argument pieces, per call."""
    return sse(
        chunk({"role": "assistant", "content": None, "tool_calls": [call_opening(0, "call_a", "get_weather")]}),
        chunk({"tool_calls": [call_piece(0, weather_args[0])]}),
        chunk({"tool_calls": [call_piece(0, weather_args[1])]}),
        chunk({"tool_calls": [call_opening(1, "call_b", "get_time")]}),
        chunk({"tool_calls": [call_piece(1, '{"tz": "CET"}')]}),
        chunk({}, "tool_calls"),
        USAGE_CHUNK,
        "[DONE]",
    )


def text_stream(*pieces: str, finish: str = "stop") -> bytes:
    return sse(
        chunk({"role": "assistant", "content": "", "refusal": None}),
        *(chunk({"content": piece}) for piece in pieces),
        chunk({}, finish),
        USAGE_CHUNK,
        "[DONE]",
    )


def chat_body(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
    }


def tool_calls_message(*calls: tuple[str, str]) -> dict[str, Any]:
    return {
        "content": None,
        "refusal": None,
        "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
            for i, (name, arguments) in enumerate(calls)
        ],
    }


# --- feeding accumulators -------------------------------------------------------------------


def request(endpoint: str = "chat_completions", *, stream: bool = True, json_: bool = False) -> RequestInfo:
    spec = next(e for e in ENDPOINTS.values() if e.name == endpoint)
    return RequestInfo(endpoint=endpoint, operation=spec.operation, model="m", stream=stream, expects_json=json_)


def observe(info: RequestInfo, pieces: list[bytes], outcome: Outcome = Outcome.COMPLETED) -> Observation:
    spec = next(e for e in ENDPOINTS.values() if e.name == info.endpoint)
    acc = spec.observe(info, 0.0)
    observer = sse_observer(acc)
    for t, piece in enumerate(pieces, start=1):
        observer.feed(piece, float(t))
    observer.close()
    return acc.finish(outcome, 200, float(len(pieces) + 1))


def observe_body(info: RequestInfo, body: dict[str, Any]) -> Observation:
    spec = next(e for e in ENDPOINTS.values() if e.name == info.endpoint)
    acc = spec.observe(info, 0.0)
    acc.on_body(json.dumps(body).encode())
    return acc.finish(Outcome.COMPLETED, 200, 1.0)


def every_split(info: RequestInfo, stream: bytes) -> Iterator[Observation]:
    """The stream whole, then cut in two at every byte boundary."""
    yield observe(info, [stream])
    for i in range(len(stream) + 1):
        yield observe(info, [stream[:i], stream[i:]])


FINE = Quality(invalid_json=None, empty_answer=False, refusal=False)

# --- chat completions: accumulator ----------------------------------------------------------


def test_chat_parallel_tool_calls_are_named_in_order_at_every_split() -> None:
    for obs in every_split(request(), parallel_calls()):
        assert obs.tool_calls == ("get_weather", "get_time")
        assert obs.quality == Quality(invalid_json=False, empty_answer=False, refusal=False)


def test_chat_tool_call_with_broken_arguments_is_invalid_json_at_every_split() -> None:
    for obs in every_split(request(), parallel_calls(('{"city": ', '"Paris"'))):  # never closed
        assert obs.tool_calls == ("get_weather", "get_time")
        assert obs.quality.invalid_json is True


def test_chat_tool_calls_in_a_whole_body() -> None:
    obs = observe_body(
        request(stream=False),
        chat_body(tool_calls_message(("get_weather", '{"city": "Paris"}'), ("get_time", "{}")), "tool_calls"),
    )
    assert obs.tool_calls == ("get_weather", "get_time")
    assert obs.quality == Quality(invalid_json=False, empty_answer=False, refusal=False)
    broken = observe_body(request(stream=False), chat_body(tool_calls_message(("f", "{'a': 1}")), "tool_calls"))
    assert broken.tool_calls == ("f",) and broken.quality.invalid_json is True


def test_chat_custom_tool_input_is_free_form_and_the_legacy_function_call_counts() -> None:
    call = {"id": "c", "type": "custom", "custom": {"name": "sh", "input": "ls -l"}}
    custom = {"content": None, "tool_calls": [call]}
    obs = observe_body(request(stream=False), chat_body(custom, "tool_calls"))
    assert obs.tool_calls == ("sh",) and obs.quality.invalid_json is None  # not JSON, and not meant to be
    legacy = {"content": None, "function_call": {"name": "lookup", "arguments": '{"q": 1'}}
    obs = observe_body(request(stream=False), chat_body(legacy, "function_call"))
    assert obs.tool_calls == ("lookup",) and obs.quality.invalid_json is True


def mirrored(arguments: str, *, opening: bool) -> dict[str, Any]:
    """A delta as llama-cpp-python streams a tool call: in `tool_calls` and in the legacy
    `function_call` mirror alike, the name on every piece (llama_chat_format.py)."""
    call = {"index": 0, "id": "call__0_lookup_cmpl-1", "type": "function"}
    function = {"name": "lookup", "arguments": arguments}
    return {"role": "assistant" if opening else None, "content": None, "function_call": function,
            "tool_calls": [{**call, "function": function}]}  # fmt: skip


def test_chat_a_tool_call_mirrored_in_the_legacy_function_call_counts_once() -> None:
    stream = sse(
        chunk(mirrored('{"q": ', opening=True)),
        chunk(mirrored('"x"}', opening=False)),
        chunk({}, "tool_calls"),
        USAGE_CHUNK,
        "[DONE]",
    )
    for obs in every_split(request(), stream):
        assert obs.tool_calls == ("lookup",) and obs.quality.invalid_json is False
    whole = mirrored('{"q": "x"}', opening=True)
    obs = observe_body(request(stream=False), chat_body(whole, "tool_calls"))
    assert obs.tool_calls == ("lookup",) and obs.quality.invalid_json is False


def test_chat_without_tools_or_json_judges_only_empty_and_refusal() -> None:
    for obs in every_split(request(), text_stream("Hel", "lo")):
        assert obs.tool_calls == () and obs.quality == FINE


def test_chat_json_mode_judges_the_answer_text_at_every_split() -> None:
    good = text_stream('{"answer"', ": 42", "}")
    for obs in every_split(request(json_=True), good):
        assert obs.quality == Quality(invalid_json=False, empty_answer=False, refusal=False)
    for obs in every_split(request(json_=True), text_stream("Sure! ", "{}")):
        assert obs.quality.invalid_json is True
    # The same text without JSON asked for is not judged.
    assert observe(request(), [text_stream("Sure! ", "{}")]).quality.invalid_json is None


def test_chat_json_mode_judges_each_choice_alone() -> None:
    stream = sse(
        chunk({"content": '{"a": 1}'}, index=0),
        chunk({"content": '{"b": 2}'}, index=1),
        chunk({}, "stop", index=0),
        chunk({}, "stop", index=1),
        "[DONE]",
    )
    assert observe(request(json_=True), [stream]).quality.invalid_json is False  # joined, they would not parse
    body = chat_body({"content": "{}"})
    body["choices"].append({"index": 1, "message": {"role": "assistant", "content": "{"}, "finish_reason": "stop"})
    assert observe_body(request(stream=False, json_=True), body).quality.invalid_json is True


def test_chat_empty_answer_and_refusal_at_every_split() -> None:
    for obs in every_split(request(), text_stream()):
        assert obs.quality == Quality(invalid_json=None, empty_answer=True, refusal=False)
    refusal = sse(
        chunk({"role": "assistant", "content": None, "refusal": ""}),
        chunk({"refusal": "I can't"}),
        chunk({"refusal": " help with that."}),
        chunk({}, "stop"),
        "[DONE]",
    )
    for obs in every_split(request(json_=True), refusal):  # a refusal is not judged as JSON
        assert obs.quality == Quality(invalid_json=None, empty_answer=None, refusal=True)
    body = chat_body({"content": None, "refusal": "I can't help with that."})
    assert observe_body(request(stream=False), body).quality.refusal is True
    assert observe_body(request(stream=False), chat_body({"content": ""})).quality.empty_answer is True


def test_a_cut_or_failed_answer_is_not_judged() -> None:
    cut = observe(request(json_=True), [text_stream('{"a": ', finish="length")])
    assert cut.quality == Quality() and cut.finish_reasons == ("length",)
    interrupted = sse(  # broken off mid-arguments: no finish reason, no [DONE]
        chunk({"role": "assistant", "content": None, "tool_calls": [call_opening(0, "call_a", "get_weather")]}),
        chunk({"tool_calls": [call_piece(0, '{"city": ')]}),
    )
    obs = observe(request(), [interrupted])
    assert obs.outcome is Outcome.STREAM_INTERRUPTED and obs.quality == Quality()
    assert obs.tool_calls == ("get_weather",)  # the calls asked for are still counted
    failed = observe(request(), [text_stream()], outcome=Outcome.CLIENT_CLOSED)
    assert failed.quality == Quality()


def test_legacy_completions_cannot_refuse() -> None:
    info = request("completions")
    choice = {"text": "", "index": 0, "finish_reason": "stop"}
    stream = sse({"id": "c", "object": "text_completion", "choices": [choice]})
    obs = observe(info, [stream + b"data: [DONE]\n\n"])
    assert obs.quality == Quality(invalid_json=None, empty_answer=True, refusal=None)


def test_plain_content_chunks_are_never_decoded_after_the_first_token(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[bytes] = []
    real = openai_chat.loads_object

    def counting(data: bytes) -> Any:
        decoded.append(data)
        return real(data)

    monkeypatch.setattr(openai_chat, "loads_object", counting)
    pieces = [f"tok{i} " for i in range(50)]
    obs = observe(request(), [text_stream(*pieces)])
    assert obs.quality == FINE
    assert len(decoded) == 4  # role, first token, finish, usage: 49 content chunks skipped
    decoded.clear()
    observe(request(json_=True), [text_stream(*pieces)])
    assert len(decoded) == 53  # asked for JSON: every chunk's text is wanted
    decoded.clear()
    observe(request(), [parallel_calls()])
    assert len(decoded) == 7  # every chunk of a tool call carries its name or arguments
    decoded.clear()
    # LiteLLM-style deltas name every field, null or not: `"tool_calls": null` is no tool call.
    nulls = {"role": None, "function_call": None, "tool_calls": None}
    observe(
        request(),
        [text_stream(*pieces).replace(b'{"content": ', b"{" + json.dumps(nulls)[1:-1].encode() + b', "content": ')],
    )
    assert len(decoded) == 4


# --- Responses API: accumulator -------------------------------------------------------------


def function_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": "fc_" + call_id, "type": "function_call", "status": "completed", "arguments": arguments,
            "call_id": call_id, "name": name}  # fmt: skip


def message(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": list(parts)}


def response(*output: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    usage = {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}
    return {"id": "resp_1", "object": "response", "status": status, "model": "gpt-4o", "output": list(output),
            "usage": usage}  # fmt: skip


def responses_stream(final: dict[str, Any]) -> bytes:
    """created, one delta per output item (arguments or text), then the terminal event with the final response."""
    events: list[dict[str, Any]] = [{"type": "response.created", "response": {**final, "status": "in_progress"}}]
    for index, item in enumerate(final["output"]):
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        if item["type"] == "function_call":
            kind, delta = "response.function_call_arguments.delta", item["arguments"]
        else:
            kind, delta = "response.output_text.delta", item["content"][0].get("text", "")
        events.append({"type": kind, "item_id": item["id"], "output_index": index, "delta": delta})
    events.append({"type": f"response.{final['status']}", "response": final})
    return sse(*events, names=True)


TWO_CALLS = response(function_call("a", "get_weather", '{"city": "Paris"}'), function_call("b", "get_time", "{}"))


def test_responses_tool_calls_streamed_at_every_split_and_whole() -> None:
    for obs in every_split(request("responses"), responses_stream(TWO_CALLS)):
        assert obs.tool_calls == ("get_weather", "get_time")
        assert obs.quality == Quality(invalid_json=False, empty_answer=False, refusal=False)
    whole = observe_body(request("responses", stream=False), TWO_CALLS)
    assert whole.tool_calls == ("get_weather", "get_time") and whole.quality.invalid_json is False


def test_responses_stream_whose_final_output_is_left_out_still_names_its_calls() -> None:
    stream = responses_stream(TWO_CALLS).replace(json.dumps(TWO_CALLS).encode(), json.dumps(response()).encode())
    assert b"get_time" in stream and json.dumps(response()).encode() in stream
    for obs in every_split(request("responses"), stream):
        assert obs.tool_calls == ("get_weather", "get_time")
        assert obs.quality == Quality(invalid_json=False, empty_answer=False, refusal=False)
    text = response(message({"type": "output_text", "text": "Hello", "annotations": []}))
    stream = responses_stream(text).replace(json.dumps(text).encode(), json.dumps(response()).encode())
    assert observe(request("responses"), [stream]).quality.empty_answer is False  # its delta told


def test_responses_broken_arguments_json_mode_refusal_and_empty() -> None:
    broken = response(function_call("a", "f", '{"x": '))
    assert observe(request("responses"), [responses_stream(broken)]).quality.invalid_json is True
    text = response(message({"type": "output_text", "text": "not json", "annotations": []}))
    assert observe_body(request("responses", stream=False, json_=True), text).quality.invalid_json is True
    assert observe_body(request("responses", stream=False), text).quality == FINE
    refused = response(message({"type": "refusal", "refusal": "I can't help with that."}))
    assert observe_body(request("responses", stream=False), refused).quality.refusal is True
    empty = response(message({"type": "output_text", "text": "", "annotations": []}))
    for obs in every_split(request("responses"), responses_stream(empty)):
        assert obs.quality == Quality(invalid_json=None, empty_answer=True, refusal=False)
    cut = response(message({"type": "output_text", "text": "", "annotations": []}), status="incomplete")
    assert observe_body(request("responses", stream=False), cut).quality == Quality()


# --- Anthropic Messages: accumulator --------------------------------------------------------


def frame(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


def anthropic_stream(blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]], stop: str) -> bytes:
    usage = {"input_tokens": 7, "output_tokens": 1}
    events = [frame("message_start", message={"id": "msg_1", "type": "message", "role": "assistant",
                                              "model": "claude-haiku-4-5", "content": [], "usage": usage})]  # fmt: skip
    for index, (start, deltas) in enumerate(blocks):
        events.append(frame("content_block_start", index=index, content_block=start))
        events.extend(frame("content_block_delta", index=index, delta=delta) for delta in deltas)
        events.append(frame("content_block_stop", index=index))
    events.append(frame("message_delta", delta={"stop_reason": stop}, usage={"output_tokens": 9}))
    events.append(frame("message_stop"))
    return sse(*events, names=True)


def tool_use(name: str, *pieces: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    start = {"type": "tool_use", "id": "toolu_" + name, "name": name, "input": {}}
    deltas = [{"type": "input_json_delta", "partial_json": ""}]  # sent first, as the API does
    return start, deltas + [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]


def text_block(*pieces: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return {"type": "text", "text": ""}, [{"type": "text_delta", "text": piece} for piece in pieces]


def test_anthropic_tool_use_streamed_at_every_split() -> None:
    stream = anthropic_stream([text_block("Let me look."), tool_use("get_weather", '{"city": ', '"Paris"}'),
                               tool_use("get_time")], "tool_use")  # fmt: skip
    for obs in every_split(request("messages"), stream):
        assert obs.tool_calls == ("get_weather", "get_time")  # get_time's input is empty: {}
        assert obs.quality == Quality(invalid_json=False, empty_answer=False, refusal=False)
    broken = anthropic_stream([tool_use("get_weather", '{"city": ', '"Paris"')], "tool_use")
    for obs in every_split(request("messages"), broken):
        assert obs.tool_calls == ("get_weather",) and obs.quality.invalid_json is True


def test_anthropic_whole_message_tool_use_json_mode_refusal_and_empty() -> None:
    def body(content: list[dict[str, Any]], stop: str) -> dict[str, Any]:
        return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
                "content": content, "stop_reason": stop, "usage": {"input_tokens": 7, "output_tokens": 9}}  # fmt: skip

    tools = body([{"type": "tool_use", "id": "t", "name": "get_weather", "input": {"city": "Paris"}}], "tool_use")
    obs = observe_body(request("messages", stream=False), tools)
    assert obs.tool_calls == ("get_weather",) and obs.quality.invalid_json is False  # its input is an object
    text = body([{"type": "text", "text": '{"a": 1}'}], "end_turn")
    assert observe_body(request("messages", stream=False, json_=True), text).quality.invalid_json is False
    bad = body([{"type": "text", "text": "Here: {"}], "end_turn")
    assert observe_body(request("messages", stream=False, json_=True), bad).quality.invalid_json is True
    refused = body([{"type": "text", "text": "I"}], "refusal")
    assert observe_body(request("messages", stream=False), refused).quality == Quality(refusal=True)
    empty = body([{"type": "text", "text": ""}], "end_turn")
    assert observe_body(request("messages", stream=False), empty).quality.empty_answer is True
    paused = body([], "pause_turn")
    assert observe_body(request("messages", stream=False), paused).quality == Quality()


def test_anthropic_stream_json_mode_empty_and_refusal_at_every_split() -> None:
    for obs in every_split(request("messages", json_=True), anthropic_stream([text_block('{"a"', ": 1}")], "end_turn")):
        assert obs.quality == Quality(invalid_json=False, empty_answer=False, refusal=False)
    for obs in every_split(request("messages", json_=True), anthropic_stream([text_block("No", "pe")], "end_turn")):
        assert obs.quality.invalid_json is True
    for obs in every_split(request("messages"), anthropic_stream([text_block("")], "end_turn")):
        assert obs.quality == Quality(invalid_json=None, empty_answer=True, refusal=False)
    for obs in every_split(request("messages"), anthropic_stream([text_block("I")], "refusal")):
        assert obs.quality == Quality(refusal=True)


# --- the judge and the request side ---------------------------------------------------------


def test_past_the_budget_json_is_not_judged_and_no_new_call_is_kept() -> None:
    judge = Judge(expects_json=True, limit=100)
    judge.text(0, '{"a": "' + "x" * 200 + '"}')
    assert judge.verdict(True, ["stop"]) == Quality(invalid_json=None, empty_answer=False, refusal=False)
    judge = Judge(expects_json=False, limit=100)
    judge.tool_call(0, "f", "{}")
    judge.tool_call(1, "g" * 100, "{}")
    judge.tool_call(2, "h", "{}")
    assert judge.names() == ("f",) and judge.verdict(True, ["tool_calls"]).invalid_json is None


def test_parses_any_json_value_and_surrogate_halves() -> None:
    assert parses('{"a": [1, 2]}') and parses("3") and parses('"x"') and parses("")
    assert not parses("{") and not parses("NaN-ish") and not parses("{'a': 1}")
    assert parses('"\ud83d' + '\ude00"')  # an emoji whose halves came in two pieces


def test_chat_and_responses_requests_say_their_tools_and_json() -> None:
    tools = [{"type": "function", "function": {"name": n}} for n in ("a", "b", "c")]
    body = {"model": "m", "messages": [], "tools": tools, "functions": [{"name": "d"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}  # fmt: skip
    parsed = parse_body("chat_completions", json.dumps(body).encode())
    assert (parsed.tool_definitions, parsed.expects_json) == (4, True)
    assert parsed.params["gen_ai.output.type"] == "json"
    plain = parse_body("chat_completions", b'{"model": "m", "response_format": {"type": "text"}}')
    assert (plain.tool_definitions, plain.expects_json) == (0, False) and "gen_ai.output.type" not in plain.params
    responses = parse_body("responses", b'{"model": "m", "tools": [{}], "text": {"format": {"type": "json_object"}}}')
    assert (responses.tool_definitions, responses.expects_json) == (1, True)
    odd = parse_body("chat_completions", b'{"model": "m", "tools": {}, "response_format": {"type": ["json_object"]}}')
    assert (odd.tool_definitions, odd.expects_json) == (0, False)
    assert parse_body("embeddings", b'{"model": "m", "input": "x"}').tool_definitions is None
    assert parse_body("chat_completions", b"not json").tool_definitions is None  # unread: unknown, not 0


def test_anthropic_requests_say_their_tools_and_json() -> None:
    ga = parse_request(b'{"model": "m", "tools": [{}, {}], "output_config": {"format": {"type": "json_schema"}}}')
    assert (ga.tool_definitions, ga.expects_json) == (2, True)
    beta = parse_request(b'{"model": "m", "output_format": {"type": "json_schema", "schema": {}}}')
    assert (beta.tool_definitions, beta.expects_json) == (0, True)
    assert parse_request(b"[]").tool_definitions is None


# --- end to end -----------------------------------------------------------------------------

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
ASK = [{"role": "user", "content": "weather in Paris?"}]
MODEL = "gpt-4o-mini"
CHAT = {"endpoint": "chat_completions", "model": MODEL}


class Traced:
    """A proxy with an in-memory span exporter, and SDK clients pointed at it."""

    def __init__(self, proxy: Proxied, exporter: InMemorySpanExporter) -> None:
        self.proxy, self.exporter = proxy, exporter
        self.openai = sdk_client(proxy.base_url)
        self.anthropic = anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-test", max_retries=0, timeout=10)

    def total(self, name: str, **labels: str) -> float:
        return self.proxy.total(name, **labels)

    def issues(self) -> dict[str, float]:
        """llmobs_quality_issues_total by issue, non-zero only."""
        return {
            issue: value
            for issue in ("invalid_json", "empty_answer", "refusal")
            if (value := self.total("llmobs_quality_issues_total", issue=issue))
        }

    def span(self) -> dict[str, Any]:
        self.proxy.settle()
        spans = self.exporter.get_finished_spans()
        assert len(spans) == 1, [s.name for s in spans]
        return dict(spans[0].attributes or {})


@pytest.fixture
def make_traced(make_proxy: Callable[..., Proxied]) -> Iterator[Callable[..., Traced]]:
    made: list[Traced] = []

    def make(url: str, **settings: Any) -> Traced:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        made.append(Traced(make_proxy(url, tracer_provider=provider, **settings), exporter))
        return made[-1]

    yield make
    for traced in made:
        traced.anthropic.close()


@pytest.fixture
def traced(upstream: ServerThread, make_traced: Callable[..., Traced]) -> Traced:
    return make_traced(upstream.url)


def chat(traced: Traced, stream: bool, **kwargs: Any) -> Any:
    """One chat completion through the proxy; a stream is read to its end and its chunks returned."""
    kwargs = {"model": MODEL, "messages": ASK, **kwargs}
    if not stream:
        return traced.openai.chat.completions.create(**kwargs)
    return list(traced.openai.chat.completions.create(stream=True, **kwargs))


@pytest.mark.parametrize("stream", [False, True])
def test_e2e_chat_tool_call_counted_with_the_tools_offered(traced: Traced, stream: bool) -> None:
    chat(traced, stream, tools=[WEATHER, TIME])  # the simulator calls the first tool
    assert traced.total("llmobs_tool_calls_total", **CHAT, tool="get_weather") == 1
    assert traced.total("llmobs_tool_calls_total") == 1
    assert traced.total("llmobs_request_tools_count", **CHAT) == 1
    assert traced.total("llmobs_request_tools_sum", **CHAT) == 2
    assert traced.total("llmobs_request_tools_bucket", **CHAT, le="1.0") == 0
    assert traced.total("llmobs_request_tools_bucket", **CHAT, le="2.0") == 1
    assert traced.issues() == {}
    span = traced.span()
    assert span["llmobs.tool_calls"] == ("get_weather",)
    assert span["llmobs.request.tool_definitions"] == 2
    assert span["llmobs.quality.invalid_json"] is False  # the call's arguments parsed
    assert span["llmobs.quality.empty_answer"] is False and span["llmobs.quality.refusal"] is False


@pytest.mark.parametrize("stream", [False, True])
def test_e2e_chat_without_tools_offers_zero_and_judges_no_json(traced: Traced, stream: bool) -> None:
    chat(traced, stream)
    assert traced.total("llmobs_request_tools_bucket", le="0.0") == 1
    assert traced.total("llmobs_tool_calls_total") == 0
    span = traced.span()
    assert span["llmobs.request.tool_definitions"] == 0 and "llmobs.tool_calls" not in span
    assert "llmobs.quality.invalid_json" not in span and span["llmobs.quality.empty_answer"] is False


@pytest.mark.parametrize("stream", [False, True])
def test_e2e_json_mode_whose_answer_is_not_json(traced: Traced, stream: bool) -> None:
    chat(traced, stream, response_format={"type": "json_object"})  # the simulator answers "tok1 tok2 ..."
    assert traced.total("llmobs_quality_issues_total", **CHAT, issue="invalid_json") == 1
    assert traced.issues() == {"invalid_json": 1}
    span = traced.span()
    assert span["llmobs.quality.invalid_json"] is True and span["gen_ai.output.type"] == "json"


@pytest.mark.parametrize("stream", [False, True])
def test_e2e_chat_empty_answer_and_refusal(traced: Traced, stream: bool) -> None:
    answer = chat(traced, stream, extra_headers={"x-sim-output-tokens": "0"})
    if not stream:
        assert answer.choices[0].message.content == ""
    assert traced.issues() == {"empty_answer": 1}
    assert traced.span()["llmobs.quality.empty_answer"] is True
    traced.exporter.clear()
    answer = chat(traced, stream, model="sim-refusal")
    if not stream:
        assert answer.choices[0].message.refusal == "tok1 tok2 tok3 "
    else:
        assert "".join(c.choices[0].delta.refusal or "" for c in answer if c.choices) == "tok1 tok2 tok3 "
    assert traced.total("llmobs_quality_issues_total", model="sim-refusal", issue="refusal") == 1
    span = traced.span()
    assert span["llmobs.quality.refusal"] is True and "llmobs.quality.empty_answer" not in span


def test_e2e_a_cut_answer_is_not_judged(traced: Traced) -> None:
    chat(traced, True, response_format={"type": "json_object"}, max_tokens=3)
    assert traced.total("llmobs_finish_reasons_total", reason="length") == 1
    assert traced.issues() == {}
    assert not any(key.startswith("llmobs.quality.") for key in traced.span())


@pytest.mark.parametrize("stream", [False, True])
def test_e2e_responses_tool_call_json_mode_empty_and_refusal(traced: Traced, stream: bool) -> None:
    sdk = traced.openai.responses
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]

    def create(**kwargs: Any) -> None:
        kwargs = {"model": MODEL, "input": "weather in Paris?", **kwargs}
        if stream:
            with sdk.stream(**kwargs) as events:
                events.get_final_response()
        else:
            sdk.create(**kwargs)

    create(tools=tools)
    assert traced.total("llmobs_tool_calls_total", endpoint="responses", model=MODEL, tool="get_weather") == 1
    assert traced.total("llmobs_request_tools_sum", endpoint="responses") == 1
    create(text={"format": {"type": "json_object"}})
    create(extra_headers={"x-sim-output-tokens": "0"})
    create(model="sim-refusal")
    assert traced.issues() == {"invalid_json": 1, "empty_answer": 1, "refusal": 1}
    assert traced.total("llmobs_quality_issues_total", model="sim-refusal", issue="refusal") == 1


@pytest.mark.parametrize("stream", [False, True])
def test_e2e_anthropic_tool_use_json_mode_empty_and_refusal(traced: Traced, stream: bool) -> None:
    def create(**kwargs: Any) -> anthropic.types.Message:
        kwargs = {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": ASK, **kwargs}
        if stream:
            with traced.anthropic.messages.stream(**kwargs) as events:
                return events.get_final_message()
        return traced.anthropic.messages.create(**kwargs)

    tools: Any = [{"name": "get_weather", "input_schema": {"type": "object"}}, {"name": "get_time", "input_schema": {}}]
    assert create(tools=tools).stop_reason == "tool_use"
    labels = {"endpoint": "messages", "model": "claude-haiku-4-5"}
    assert traced.total("llmobs_tool_calls_total", **labels, tool="get_weather") == 1
    assert traced.total("llmobs_request_tools_sum", **labels) == 2
    span = traced.span()
    assert span["llmobs.tool_calls"] == ("get_weather",) and span["llmobs.quality.invalid_json"] is False
    create(extra_body={"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}})
    create(extra_headers={"x-sim-output-tokens": "0"})
    assert create(model="sim-refusal").stop_reason == "refusal"
    assert traced.issues() == {"invalid_json": 1, "empty_answer": 1, "refusal": 1}


def test_e2e_tool_names_are_bounded_like_models(upstream: ServerThread, make_traced: Callable[..., Traced]) -> None:
    traced = make_traced(upstream.url, max_label_values=2)
    long_name = "t" * 129
    for name in ("alpha", "beta", "gamma", "alpha", long_name):
        tool = {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
        chat(traced, True, tools=[tool])
    counts = {tool: traced.total("llmobs_tool_calls_total", tool=tool) for tool in ("alpha", "beta", "gamma", "other")}
    assert counts == {"alpha": 2, "beta": 1, "gamma": 0, "other": 2}
    assert traced.total("llmobs_tool_calls_total", tool=long_name) == 0
    spans = traced.exporter.get_finished_spans()
    assert [s.attributes["llmobs.tool_calls"] for s in spans if s.attributes] == [
        ("alpha",), ("beta",), ("gamma",), ("alpha",), (long_name,)
    ]  # fmt: skip  # spans carry the names as they are


# --- end to end, from a raw upstream: what the simulator never sends ------------------------


def raw_upstream(body: bytes, stream: bytes) -> Callable[[RawRequest, Conn], Any]:
    async def answer(request: RawRequest, conn: Conn) -> None:
        if request.json().get("stream") is True:
            head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: "
            await conn.send(head + str(len(stream)).encode() + b"\r\n\r\n" + stream)
        else:
            await conn.send(http_response(200, body))

    return answer


@pytest.fixture
def parallel() -> Iterator[FaultUpstream]:
    body = chat_body(tool_calls_message(("get_weather", '{"city": "Paris"}'), ("get_time", "{}")), "tool_calls")
    with fault_upstream(raw_upstream(json.dumps(body).encode(), parallel_calls())) as server:
        yield server


@pytest.fixture
def broken() -> Iterator[FaultUpstream]:
    body = chat_body(tool_calls_message(("get_weather", '{"city": "Par')), "tool_calls")
    with fault_upstream(raw_upstream(json.dumps(body).encode(), parallel_calls(('{"city": ', "Paris}")))) as server:
        yield server


@pytest.mark.parametrize("stream", [False, True])
def test_e2e_parallel_tool_calls_each_counted(
    parallel: FaultUpstream, make_traced: Callable[..., Traced], stream: bool
) -> None:
    traced = make_traced(parallel.url + "/v1", inject_stream_usage=False)
    answer = chat(traced, stream, tools=[WEATHER, TIME])
    if stream:
        names = [c.function.name for chunk in answer if chunk.choices for c in chunk.choices[0].delta.tool_calls or ()]
    else:
        names = [c.function.name for c in answer.choices[0].message.tool_calls]
    assert [name for name in names if name] == ["get_weather", "get_time"]  # what the client saw
    for tool in ("get_weather", "get_time"):
        assert traced.total("llmobs_tool_calls_total", **CHAT, tool=tool) == 1
    assert traced.total("llmobs_tool_calls_total") == 2
    assert traced.issues() == {}
    span = traced.span()
    assert span["llmobs.tool_calls"] == ("get_weather", "get_time") and span["llmobs.quality.invalid_json"] is False


@pytest.mark.parametrize("stream", [False, True])
def test_e2e_tool_call_with_broken_arguments_is_invalid_json(
    broken: FaultUpstream, make_traced: Callable[..., Traced], stream: bool
) -> None:
    traced = make_traced(broken.url + "/v1", inject_stream_usage=False)
    chat(traced, stream, tools=[WEATHER, TIME])
    assert traced.total("llmobs_quality_issues_total", **CHAT, issue="invalid_json") == 1
    assert traced.issues() == {"invalid_json": 1}
    assert traced.span()["llmobs.quality.invalid_json"] is True
