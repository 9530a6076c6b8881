"""Opt-in content capture: prompts and completions in the GenAI message shape, bounded, redacted on spans."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmobs.apis.base import Accumulator
from llmobs.apis.content import MAX_CHARS, OutputCapture, input_content
from llmobs.apis.table import ENDPOINTS, Endpoint
from llmobs.records import Content, Observation, Outcome, RequestInfo, Timings
from llmobs.sse import SSEDecoder
from llmobs.telemetry.redaction import Redactor
from llmobs.telemetry.sinks.otel import OTelSink

CHAT = ENDPOINTS["chat/completions"]
LEGACY = ENDPOINTS["completions"]
RESPONSES = ENDPOINTS["responses"]
EMBEDDINGS = ENDPOINTS["embeddings"]


def body(**obj: Any) -> bytes:
    return json.dumps(obj).encode()


def text(content: str) -> dict[str, Any]:
    return {"type": "text", "content": content}


# -- input: request.parse_body -------------------------------------------------------------------


def test_off_by_default_nothing_is_read() -> None:
    parsed = CHAT.parse(body(model="m", messages=[{"role": "user", "content": "hi"}]), inject_usage=False)
    assert parsed.input_content is None


def test_chat_messages_in_semconv_shape() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "name": "ann",
            "content": [
                {"type": "text", "text": "what is in"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": '{"q":"cat"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
    ]
    parsed = CHAT.parse(body(model="m", messages=messages), inject_usage=False, capture_content=True)
    assert parsed.input_content == Content(
        messages=(
            {"role": "system", "parts": [text("be brief")]},
            {
                "role": "user",
                "name": "ann",
                "parts": [
                    text("what is in"),
                    {"type": "uri", "modality": "image", "uri": "https://example.com/cat.png"},
                    {"type": "image_url"},  # inline data is not captured
                ],
            },
            {
                "role": "assistant",
                "parts": [{"type": "tool_call", "id": "call_1", "name": "look", "arguments": '{"q":"cat"}'}],
            },
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "a cat"}]},
        )
    )


def test_legacy_prompt_strings_but_not_token_ids() -> None:
    parsed = LEGACY.parse(body(model="m", prompt=["one", "two"]), inject_usage=False, capture_content=True)
    assert parsed.input_content == Content(
        messages=(
            {"role": "user", "parts": [text("one")]},
            {"role": "user", "parts": [text("two")]},
        )
    )
    tokens = LEGACY.parse(body(model="m", prompt=[1, 2, 3]), inject_usage=False, capture_content=True)
    assert tokens.input_content == Content()


def test_responses_instructions_are_system_instructions() -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "reasoning", "summary": []},  # not a message
    ]
    parsed = RESPONSES.parse(
        body(model="m", instructions="be kind", input=items), inject_usage=False, capture_content=True
    )
    assert parsed.input_content == Content(
        messages=(
            {"role": "user", "parts": [text("weather?")]},
            {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "weather", "arguments": "{}"}]},
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "sunny"}]},
        ),
        system=(text("be kind"),),
    )
    plain = RESPONSES.parse(body(model="m", input="hello"), inject_usage=False, capture_content=True)
    assert plain.input_content == Content(messages=({"role": "user", "parts": [text("hello")]},))


def test_embeddings_and_unreadable_bodies_capture_nothing() -> None:
    assert EMBEDDINGS.parse(body(model="m", input="x"), inject_usage=False, capture_content=True).input_content is None
    assert CHAT.parse(b"not json", inject_usage=False, capture_content=True).input_content is None


@pytest.mark.parametrize(
    "messages",
    [
        "a string",
        [None, 3, "x", {"role": 7, "content": {"no": "list"}}],
        [{"content": [None, {"type": 3}]}],
    ],
)
def test_wrong_types_never_raise(messages: Any) -> None:
    parsed = CHAT.parse(body(model="m", messages=messages), inject_usage=False, capture_content=True)
    assert parsed.input_content is not None


def test_input_is_bounded_and_says_so() -> None:
    huge = "x" * (MAX_CHARS * 2)
    content = input_content("chat_completions", {"messages": [{"role": "user", "content": huge}] * 3})
    assert content is not None and content.truncated
    assert sum(len(p["content"]) for m in content.messages for p in m["parts"]) <= MAX_CHARS
    many = input_content("chat_completions", {"messages": [{"role": "user", "content": ""}] * 100_000})
    assert many is not None and many.truncated and len(many.messages) < 10_000


# -- input: the tools offered (gen_ai.tool.definitions) ------------------------------------------

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_chat_tools_and_legacy_functions_as_tool_definitions() -> None:
    tools = [
        {"type": "function", "function": {"name": "weather", "description": "Now", "parameters": WEATHER_SCHEMA}},
        {"type": "custom", "custom": {"name": "sql", "description": "free-form", "format": {"type": "text"}}},
        {"type": "function", "function": {"description": "no name"}},  # not a tool: skipped
        "garbage",
    ]
    functions = [{"name": "legacy", "parameters": {"type": "object"}}]
    parsed = CHAT.parse(body(model="m", messages=[], tools=tools, functions=functions), capture_content=True)
    assert parsed.input_content is not None
    assert parsed.input_content.tools == (
        {"type": "function", "name": "weather", "description": "Now", "parameters": WEATHER_SCHEMA},
        {"type": "custom", "name": "sql"},
        {"type": "function", "name": "legacy", "parameters": {"type": "object"}},
    )
    off = CHAT.parse(body(model="m", messages=[], tools=tools))
    assert off.input_content is None and off.tool_definitions == 4  # the count is no content: always there


def test_responses_and_anthropic_tools_as_tool_definitions() -> None:
    tools = [{"type": "function", "name": "weather", "parameters": WEATHER_SCHEMA}, {"type": "web_search"}]
    parsed = RESPONSES.parse(body(model="m", input="hi", tools=tools), capture_content=True)
    assert parsed.input_content is not None
    assert parsed.input_content.tools == (
        {"type": "function", "name": "weather", "parameters": WEATHER_SCHEMA},
        {"type": "web_search", "name": "web_search"},  # a built-in has no name of its own
    )
    tools = [
        {"name": "weather", "description": "Now", "input_schema": WEATHER_SCHEMA},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ]
    messages = ENDPOINTS["messages"].parse(
        body(model="m", max_tokens=9, messages=[], tools=tools), capture_content=True
    )
    assert messages.input_content is not None
    assert messages.input_content.tools == (
        {"type": "function", "name": "weather", "description": "Now", "parameters": WEATHER_SCHEMA},
        {"type": "web_search_20250305", "name": "web_search"},
    )


def test_tool_definitions_are_bounded_apart_from_messages() -> None:
    huge = {"type": "object", "description": "x" * MAX_CHARS}
    tools = [
        {"type": "function", "function": {"name": "big", "parameters": huge}},
        {"type": "function", "function": {"name": "long", "description": "d" * (MAX_CHARS + 10)}},
    ]
    parsed = CHAT.parse(
        body(model="m", messages=[{"role": "user", "content": "hi"}], tools=tools), capture_content=True
    )
    content = parsed.input_content
    assert content is not None and content.truncated
    assert content.messages == ({"role": "user", "parts": [text("hi")]},)  # the messages keep their budget
    big, long = content.tools
    assert big == {"type": "function", "name": "big"}  # a schema is whole or absent, never cut
    assert long["name"] == "long" and len(long["description"]) < MAX_CHARS


# -- output: accumulators ------------------------------------------------------------------------


def info(endpoint: Endpoint, *, capture: bool = True, stream: bool = True) -> RequestInfo:
    return RequestInfo(
        endpoint=endpoint.name, operation=endpoint.operation, model="m", stream=stream, capture_content=capture
    )


def stream(endpoint: Endpoint, payloads: list[Any], *, capture: bool = True, done: bool = True) -> Observation:
    raw = b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads)
    if done:
        raw += b"data: [DONE]\n\n"
    acc: Accumulator = endpoint.accumulator(info(endpoint, capture=capture), 0.0)
    decoder = SSEDecoder()
    for event in decoder.feed(raw):
        acc.on_event(event, 1.0)
    return acc.finish(Outcome.COMPLETED, 200, 2.0)


def chunk(index: int = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"id": "c", "model": "m", "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def test_capture_off_collects_nothing() -> None:
    obs = stream(CHAT, [chunk(content="hi"), chunk(finish="stop")], capture=False)
    assert obs.output_content is None


def test_chat_stream_text_reasoning_and_choices() -> None:
    obs = stream(
        CHAT,
        [
            chunk(reasoning_content="thinking "),
            chunk(reasoning_content="hard"),
            chunk(content="Hel"),
            chunk(content="lo"),
            chunk(index=1, content="Hi"),
            chunk(finish="stop"),
            chunk(index=1, finish="length"),
        ],
    )
    assert obs.output_content == Content(
        messages=(
            {
                "role": "assistant",
                "parts": [{"type": "reasoning", "content": "thinking hard"}, text("Hello")],
                "finish_reason": "stop",
            },
            {"role": "assistant", "parts": [text("Hi")], "finish_reason": "length"},
        )
    )
    assert obs.finish_reasons == ("stop", "length")  # accounting unchanged


def test_chat_stream_tool_call_pieces_join() -> None:
    obs = stream(
        CHAT,
        [
            chunk(
                tool_calls=[
                    {"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": ""}}
                ]
            ),
            chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"a":'}}]),
            chunk(tool_calls=[{"index": 0, "function": {"arguments": "1}"}}]),
            chunk(finish="tool_calls"),
        ],
    )
    assert obs.output_content is not None
    assert obs.output_content.messages == (
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "call_9", "name": "f", "arguments": '{"a":1}'}],
            "finish_reason": "tool_call",  # the conventions' name for OpenAI's tool_calls
        },
    )


def test_interrupted_stream_keeps_partial_text_with_error_reason() -> None:
    obs = stream(CHAT, [chunk(content="partial")], done=False)
    assert obs.outcome is Outcome.STREAM_INTERRUPTED
    assert obs.output_content is not None
    assert obs.output_content.messages[0] == {"role": "assistant", "parts": [text("partial")], "finish_reason": "error"}


def test_legacy_completions_stream_text() -> None:
    payloads = [{"id": "c", "choices": [{"index": 0, "text": t, "finish_reason": None}]} for t in ("a ", "b")]
    payloads.append({"id": "c", "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
    obs = stream(LEGACY, payloads)
    assert obs.output_content is not None
    assert obs.output_content.messages[0]["parts"] == [text("a b")]


def test_non_streamed_chat_body() -> None:
    acc = CHAT.accumulator(info(CHAT, stream=False), 0.0)
    acc.on_body(
        body(
            id="x",
            model="m",
            choices=[
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Done.",
                        "tool_calls": [{"id": "t", "type": "function", "function": {"name": "g", "arguments": "{}"}}],
                    },
                    "finish_reason": "tool_calls",
                },
            ],
        )
    )
    obs = acc.finish(Outcome.COMPLETED, 200, 1.0)
    assert obs.output_content == Content(
        messages=(
            {
                "role": "assistant",
                "parts": [text("Done."), {"type": "tool_call", "id": "t", "name": "g", "arguments": "{}"}],
                "finish_reason": "tool_call",
            },
        )
    )


def test_responses_stream_deltas_then_final_output_wins() -> None:
    events = [
        {"type": "response.created", "response": {"id": "r", "model": "m"}},
        {"type": "response.output_text.delta", "delta": "Hel"},
        {"type": "response.output_text.delta", "delta": "lo"},
        {
            "type": "response.completed",
            "response": {
                "id": "r",
                "status": "completed",
                "output": [
                    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "why"}]},
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
                ],
                "usage": {"input_tokens": 1, "output_tokens": 2},
            },
        },
    ]
    obs = stream(RESPONSES, events, done=False)
    assert obs.output_content == Content(
        messages=(
            {
                "role": "assistant",
                "parts": [{"type": "reasoning", "content": "why"}, text("Hello")],
                "finish_reason": "stop",
            },
        )
    )


def test_responses_interrupted_stream_keeps_deltas_and_tool_calls() -> None:
    events = [
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"type": "function_call", "call_id": "c1", "name": "f", "arguments": ""},
        },
        {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": "{}"},
        {"type": "response.output_text.delta", "delta": "so far"},
    ]
    obs = stream(RESPONSES, events, done=False)
    assert obs.output_content is not None
    assert obs.output_content.messages[0]["parts"] == [
        text("so far"),
        {"type": "tool_call", "id": "c1", "name": "f", "arguments": "{}"},
    ]


def test_output_is_bounded_and_says_so() -> None:
    capture = OutputCapture(limit=10)
    for _ in range(5):
        capture.text(0, "abcdef")
    result = capture.result({0: "stop"}, failed=False)
    assert result.truncated and result.messages[0]["parts"] == [text("abcdefabcd")]


def test_embeddings_never_capture_output() -> None:
    acc = EMBEDDINGS.accumulator(info(EMBEDDINGS, stream=False), 0.0)
    acc.on_body(body(data=[], usage={"prompt_tokens": 1, "total_tokens": 1}))
    assert acc.finish(Outcome.COMPLETED, 200, 1.0).output_content is None


# -- the OTel sink: attributes, redaction, never on metrics -----------------------------------------


class Sink:
    def __init__(self, redactor: Redactor | None = None) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.sink = OTelSink(
            tracer_provider,
            MeterProvider(metric_readers=[self.reader]),
            provider_name="openai",
            server_address="h",
            server_port=1,
            redactor=redactor,
        )

    def run(self, request: RequestInfo, output: Content | None) -> dict[str, Any]:
        start = time.perf_counter()
        handle = self.sink.start(request, {}, start)
        obs = Observation(
            request=request,
            outcome=Outcome.COMPLETED,
            status_code=200,
            timings=Timings(start=start, end=start + 1),
            output_content=output,
        )
        self.sink.record(obs, handle)
        return dict(self.spans.get_finished_spans()[-1].attributes or {})


PROMPT = Content(
    messages=({"role": "user", "parts": [text("I am ann@example.com, key sk-abcdefghijklmnopqrstuv")]},),
    system=(text("card 4111 1111 1111 1111"),),
)
ANSWER = Content(messages=({"role": "assistant", "parts": [text("call +1 555 123 4567")], "finish_reason": "stop"},))


def captured(capture: bool = True, content: Content | None = PROMPT) -> RequestInfo:
    return RequestInfo(
        endpoint="responses", operation="chat", model="m", capture_content=capture, input_content=content
    )


def test_span_carries_redacted_semconv_json() -> None:
    attrs = Sink().run(captured(), ANSWER)
    assert json.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [text("I am [REDACTED:email], key [REDACTED:api_key]")]}
    ]
    assert json.loads(attrs["gen_ai.system_instructions"]) == [text("card [REDACTED:card_number]")]
    assert json.loads(attrs["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [text("call [REDACTED:phone]")], "finish_reason": "stop"}
    ]
    assert "llmobs.content.truncated" not in attrs


def test_tool_definitions_on_the_span_redacted_only_with_capture() -> None:
    tools = ({"type": "function", "name": "mail", "description": "writes to ann@example.com"},)
    prompt = Content(messages=PROMPT.messages, tools=tools)
    attrs = Sink().run(captured(content=prompt), ANSWER)
    assert json.loads(attrs["gen_ai.tool.definitions"]) == [
        {"type": "function", "name": "mail", "description": "writes to [REDACTED:email]"}
    ]
    assert "gen_ai.tool.definitions" not in Sink().run(captured(capture=False, content=prompt), ANSWER)


def test_redaction_can_be_turned_off_or_extended() -> None:
    attrs = Sink(Redactor(enabled=False)).run(captured(), ANSWER)
    assert "ann@example.com" in attrs["gen_ai.input.messages"]
    extra = Sink(Redactor(extra_patterns=[r"\d{3} \d{4}"], kinds=["email"])).run(captured(), ANSWER)
    assert "+1 555 [REDACTED:custom]" in extra["gen_ai.output.messages"]


def test_no_capture_flag_no_content_attributes() -> None:
    attrs = Sink().run(captured(capture=False), ANSWER)
    assert not any(key.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system", "gen_ai.tool")) for key in attrs)


def test_truncation_is_noted_on_the_span() -> None:
    cut = Content(messages=PROMPT.messages, truncated=True)
    assert Sink().run(captured(content=cut), None)["llmobs.content.truncated"] is True


def test_content_never_reaches_metrics() -> None:
    sink = Sink()
    sink.run(captured(), ANSWER)
    data = sink.reader.get_metrics_data()
    assert data is not None
    text_of_metrics = repr(data.to_json())
    for needle in ("ann@example.com", "REDACTED", "I am", "555 123"):
        assert needle not in text_of_metrics


def test_lone_surrogates_do_not_break_export() -> None:
    broken = Content(messages=({"role": "user", "parts": [text("bad \ud800 char")]},))
    attrs = Sink().run(captured(content=broken), None)
    attrs["gen_ai.input.messages"].encode()  # encodable, so the exporter can send it
