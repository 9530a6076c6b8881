"""The Anthropic Messages API observed exactly: the accumulator on real-shaped streams, then the
proxy in front of the simulator, driven by the official `anthropic` SDK.

Token counts follow the simulator's documented rules (sim/anthropic_messages.py): input = words
of `system` + words of each message + 3 per message; `output_tokens` 20 (the session simulator's
default); thinking min(20 // 2, budget); cache_control blocks are writes (5m, or 1h with `ttl`),
reads with `x-sim-cache: read`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import genai_prices
import httpx2 as httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import Proxied
from llmobs.apis.anthropic_messages import ATTR_CACHE_1H, ATTR_CACHE_5M
from llmobs.apis.table import ENDPOINTS, OTHER, classify
from llmobs.attribution import fingerprint
from llmobs.dev.harness import ServerThread
from llmobs.records import Observation, Outcome, RequestInfo, Usage, UsageSource
from observing import sse_observer

MESSAGES = ENDPOINTS["messages"]
MODEL = "claude-haiku-4-5"  # genai-prices: $1 in, $5 out, $0.10 cache read, $1.25 5m write, $2 1h write per MTok
KEY = "sk-ant-test-SECRETkey0123456789abcdefXYZ"

# --- real-shaped frames ---------------------------------------------------------------------


def frame(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


START_USAGE = {
    "input_tokens": 7,
    "cache_creation_input_tokens": 8,
    "cache_read_input_tokens": 100,
    "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 3},
    "output_tokens": 1,
    "service_tier": "standard",
}
MESSAGE_START = frame(
    "message_start",
    message={
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": START_USAGE,
    },
)


def block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return frame("content_block_delta", index=index, delta=delta)


THINKING_STREAM = [
    MESSAGE_START,
    frame("content_block_start", index=0, content_block={"type": "thinking", "thinking": "", "signature": ""}),
    frame("ping"),
    block_delta(0, {"type": "thinking_delta", "thinking": "Let me"}),
    block_delta(0, {"type": "thinking_delta", "thinking": " think"}),
    block_delta(0, {"type": "signature_delta", "signature": "c2ln"}),
    frame("content_block_stop", index=0),
    frame("content_block_start", index=1, content_block={"type": "text", "text": ""}),
    block_delta(1, {"type": "text_delta", "text": "Hel"}),
    block_delta(1, {"type": "text_delta", "text": "lo"}),
    frame("content_block_stop", index=1),
    frame(
        "message_delta",
        delta={"stop_reason": "end_turn", "stop_sequence": None},
        usage={
            "input_tokens": 7,
            "cache_creation_input_tokens": 8,
            "cache_read_input_tokens": 100,
            "output_tokens": 4,
            "output_tokens_details": {"thinking_tokens": 2},
        },
    ),
    frame("message_stop"),
]
WHOLE = b"".join(THINKING_STREAM)


def info(stream: bool = True, capture: bool = False, chunk_times: bool = False) -> RequestInfo:
    return RequestInfo(
        endpoint="messages",
        operation="chat",
        model=MODEL,
        stream=stream,
        provider="anthropic",
        capture_content=capture,
        chunk_times=chunk_times,
    )


def run_stream(
    pieces: list[bytes], *, capture: bool = False, outcome: Outcome = Outcome.COMPLETED, chunk_times: bool = False
) -> Observation:
    """Feed pieces at t = 1, 2, 3, ... through the real observer; finish at t = len + 1."""
    acc = MESSAGES.observe(info(capture=capture, chunk_times=chunk_times), 0.0)
    observer = sse_observer(acc)
    for t, piece in enumerate(pieces, start=1):
        observer.feed(piece, float(t))
    observer.close()
    return acc.finish(outcome, 200, float(len(pieces) + 1))


def run_body(body: bytes, status: int = 200, *, capture: bool = False) -> Observation:
    acc = MESSAGES.observe(info(stream=False, capture=capture), 0.0)
    acc.on_body(body)
    outcome = Outcome.COMPLETED if status < 400 else Outcome.UPSTREAM_ERROR
    return acc.finish(outcome, status, 1.0)


# --- the accumulator ------------------------------------------------------------------------


def test_stream_usage_is_total_input_with_cache_and_cumulative_output() -> None:
    obs = run_stream(THINKING_STREAM)
    # Anthropic's input_tokens (7) leaves out cache reads (100) and writes (8): input is all 115.
    assert obs.usage == Usage(
        input_tokens=115,
        output_tokens=4,
        cache_read_tokens=100,
        cache_write_tokens=8,
        reasoning_tokens=2,
        pricing=(
            ("cache_read_tokens", 100),
            ("cache_write_1h_tokens", 3),
            ("cache_write_5m_tokens", 5),
            ("cache_write_tokens", 8),
            ("input_tokens", 115),
            ("output_reasoning_tokens", 2),
            ("output_tokens", 4),
        ),
    )
    assert obs.usage_source is UsageSource.REPORTED and obs.estimated_output_tokens is None
    assert obs.attributes == {ATTR_CACHE_5M: 5, ATTR_CACHE_1H: 3}
    assert obs.finish_reasons == ("end_turn",)
    assert (obs.response_id, obs.response_model) == ("msg_01", "claude-haiku-4-5-20251001")
    assert obs.outcome is Outcome.COMPLETED and obs.error_type is None


def test_thinking_then_text_timings() -> None:
    obs = run_stream(THINKING_STREAM)
    # Pieces are fed at t = 1, 2, ...: the first thinking_delta is the 4th, the first text_delta the 9th.
    assert obs.timings.first_reasoning == 4.0
    assert obs.timings.first_token == 9.0 and obs.timings.reasoning_end == 9.0
    assert obs.timings.reasoning_duration == 5.0


def test_chunk_instants_are_the_thinking_and_text_deltas() -> None:
    # Not message_start, ping, block starts and stops, the signature, message_delta or message_stop.
    assert run_stream(THINKING_STREAM, chunk_times=True).timings.chunks == (4.0, 5.0, 9.0, 10.0)
    assert run_stream(THINKING_STREAM).timings.chunks == ()


def test_every_byte_split_gives_the_same_observation() -> None:
    whole = run_stream([WHOLE])
    for i in range(len(WHOLE) + 1):
        obs = run_stream([WHOLE[:i], WHOLE[i:]])
        assert (obs.usage, obs.finish_reasons, obs.response_id, obs.attributes, obs.outcome) == (
            whole.usage,
            whole.finish_reasons,
            whole.response_id,
            whole.attributes,
            whole.outcome,
        )


def test_stream_cut_after_message_start_keeps_input_and_estimates_output_apart() -> None:
    obs = run_stream(THINKING_STREAM[:9])  # message_start .. the first text_delta: no message_delta
    assert obs.outcome is Outcome.STREAM_INTERRUPTED
    # message_start's output_tokens (1) is not the output count: unknown, so not priced.
    assert obs.usage == Usage(input_tokens=115, cache_read_tokens=100, cache_write_tokens=8)
    assert obs.usage.pricing == ()
    assert obs.usage_source is UsageSource.REPORTED
    assert obs.estimated_output_tokens == 3  # two thinking deltas and one text delta seen
    assert obs.finish_reasons == ()


def test_stream_cut_after_message_delta_has_the_reported_output() -> None:
    obs = run_stream(THINKING_STREAM[:-1])  # all but message_stop
    assert obs.outcome is Outcome.STREAM_INTERRUPTED
    assert obs.usage.output_tokens == 4 and obs.usage.input_tokens == 115 and obs.usage.pricing
    assert obs.estimated_output_tokens is None


def test_overloaded_error_event_inside_a_stream_is_an_upstream_error_with_its_type() -> None:
    error = frame("error", error={"type": "overloaded_error", "message": "Overloaded"})
    obs = run_stream([*THINKING_STREAM[:9], error])
    assert obs.outcome is Outcome.UPSTREAM_ERROR and obs.error_type == "overloaded_error"
    assert obs.usage.input_tokens == 115 and obs.usage.output_tokens is None


def test_a_tool_call_is_an_answer_but_its_empty_first_piece_is_no_token() -> None:
    stream = [
        MESSAGE_START,
        frame("content_block_start", index=0, content_block={"type": "tool_use", "id": "toolu_1", "name": "f"}),
        block_delta(0, {"type": "input_json_delta", "partial_json": ""}),
        block_delta(0, {"type": "input_json_delta", "partial_json": '{"q": "a'}),
        block_delta(0, {"type": "input_json_delta", "partial_json": '"}'}),
        frame("content_block_stop", index=0),
        frame("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None}, usage={"output_tokens": 2}),
        frame("message_stop"),
    ]
    obs = run_stream(stream)
    assert obs.timings.first_token == 4.0 and obs.timings.first_reasoning is None
    assert obs.finish_reasons == ("tool_use",)
    assert obs.usage.output_tokens == 2 and obs.usage.input_tokens == 115  # message_start's input kept
    cut = run_stream(stream[:5])
    assert cut.estimated_output_tokens == 2
    assert run_stream(stream, chunk_times=True).timings.chunks == (4.0, 5.0)  # the empty piece is no chunk


def test_thinking_text_that_quotes_a_delta_type_is_still_thinking() -> None:
    """The byte check matches quoted JSON strings; a quote inside text is escaped, so it never matches."""
    sneaky = block_delta(0, {"type": "thinking_delta", "thinking": 'the "text_delta" and "input_json_delta" events'})
    obs = run_stream([MESSAGE_START, sneaky])
    assert obs.timings.first_reasoning == 2.0 and obs.timings.first_token is None


def test_frames_without_event_lines_are_read_by_their_type() -> None:
    bare = [re.sub(rb"^event: [a-z_]+\n", b"", piece) for piece in THINKING_STREAM]
    assert not any(piece.startswith(b"event:") for piece in bare)
    obs = run_stream(bare)
    assert obs.usage == run_stream(THINKING_STREAM).usage and obs.finish_reasons == ("end_turn",)
    assert obs.timings.first_token == 9.0 and obs.outcome is Outcome.COMPLETED


def test_every_stop_reason_is_a_finish_reason() -> None:
    for reason in ("end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"):
        delta = frame("message_delta", delta={"stop_reason": reason, "stop_sequence": None}, usage={"output_tokens": 1})
        obs = run_stream([MESSAGE_START, delta, frame("message_stop")])
        assert obs.finish_reasons == (reason,)


MESSAGE_BODY = {
    "id": "msg_02",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": "Hi"}],
    "stop_reason": "max_tokens",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 6,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 5,
        "service_tier": "standard",
    },
}


def test_non_streamed_message() -> None:
    obs = run_body(json.dumps(MESSAGE_BODY).encode())
    assert obs.usage.input_tokens == 16 and obs.usage.cache_read_tokens == 6 and obs.usage.cache_write_tokens == 0
    assert obs.usage.output_tokens == 5 and obs.usage.reasoning_tokens is None  # not reported: not zero
    assert obs.finish_reasons == ("max_tokens",) and obs.response_id == "msg_02"
    assert obs.attributes == {ATTR_CACHE_5M: 0, ATTR_CACHE_1H: 0}


def test_usage_without_the_cache_fields_is_plain_input() -> None:
    body = {**MESSAGE_BODY, "usage": {"input_tokens": 10, "output_tokens": 5}}
    obs = run_body(json.dumps(body).encode())
    assert obs.usage == Usage(input_tokens=10, output_tokens=5, pricing=(("input_tokens", 10), ("output_tokens", 5)))
    assert obs.attributes == {}


def test_error_body_names_the_error_type() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "req_1"}
    obs = run_body(json.dumps(body).encode(), 529)
    assert obs.error_type == "overloaded_error" and obs.usage_source is UsageSource.NOT_APPLICABLE


# --- requests and classification ------------------------------------------------------------


def test_request_fields_become_semconv_params_and_the_body_is_untouched() -> None:
    body = {
        "model": MODEL,
        "max_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["END"],
        "stream": True,
        "service_tier": "auto",  # Anthropic's, not OpenAI's: not an openai.* attribute
        "messages": [{"role": "user", "content": "hi"}],
    }
    raw = json.dumps(body).encode()
    parsed = MESSAGES.parse(raw, inject_usage=True)
    assert parsed.body is raw and not parsed.usage_injected  # Anthropic always sends usage
    assert parsed.model == MODEL and parsed.stream
    assert parsed.params == {
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.top_k": 40,
        "gen_ai.request.stop_sequences": ["END"],
    }
    assert parsed.input_content is None  # capture is opt-in


@pytest.mark.parametrize(
    ("method", "path", "endpoint"),
    [
        ("POST", "/v1/messages", "messages"),
        ("POST", "/anthropic/v1/messages/", "messages"),
        ("POST", "/v1/messages/count_tokens", "messages_count_tokens"),
        ("POST", "/v1/messages/batches", "messages_batches"),
        ("GET", "/v1/messages/batches", "other"),
        ("GET", "/v1/messages/batches/msgbatch_1", "other"),
        ("GET", "/v1/messages/batches/msgbatch_1/results", "other"),
        ("POST", "/v1/messages/batches/msgbatch_1/cancel", "other"),
        ("POST", "/v1/batches", "other"),  # OpenAI's batches are not Anthropic's
        ("POST", "/v1/threads/thread_1/messages", "other"),  # OpenAI Assistants
        ("POST", "/v1/chat/completions", "chat_completions"),
        ("POST", "/v1/responses", "responses"),
    ],
)
def test_classify(method: str, path: str, endpoint: str) -> None:
    assert classify(method, path).name == endpoint


def test_the_anthropic_endpoints_are_anthropic_flavoured() -> None:
    assert {e.name: e.flavor for e in ENDPOINTS.values() if e.name.startswith("messages")} == {
        "messages": "anthropic",
        "messages_count_tokens": "anthropic",
        "messages_batches": "anthropic",
    }
    assert OTHER.flavor == "openai"


# --- content capture (opt-in) ---------------------------------------------------------------


def test_captured_prompt_in_semconv_shape() -> None:
    body = {
        "model": MODEL,
        "max_tokens": 5,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "x"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "rain"}]},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                ],
            },
        ],
    }
    content = MESSAGES.parse(json.dumps(body).encode(), capture_content=True).input_content
    assert content is not None
    assert content.system == ({"type": "text", "content": "be brief"},)
    assert content.messages == (
        {"role": "user", "parts": [{"type": "text", "content": "weather?"}]},
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": "hmm"},
                {"type": "tool_call", "name": "get_weather", "id": "toolu_1", "arguments": '{"city":"Oslo"}'},
            ],
        },
        {
            "role": "user",
            "parts": [{"type": "tool_call_response", "id": "toolu_1", "response": "rain"}, {"type": "image"}],
        },
    )


def test_captured_stream_output_has_reasoning_text_and_a_semconv_finish_reason() -> None:
    obs = run_stream(THINKING_STREAM, capture=True)
    assert obs.output_content is not None
    assert obs.output_content.messages == (
        {
            "role": "assistant",
            "parts": [{"type": "reasoning", "content": "Let me think"}, {"type": "text", "content": "Hello"}],
            "finish_reason": "stop",
        },
    )


def test_captured_tool_call_streamed_and_whole() -> None:
    stream = [
        MESSAGE_START,
        frame("content_block_start", index=0, content_block={"type": "tool_use", "id": "toolu_1", "name": "f"}),
        block_delta(0, {"type": "input_json_delta", "partial_json": ""}),
        block_delta(0, {"type": "input_json_delta", "partial_json": '{"q":'}),
        block_delta(0, {"type": "input_json_delta", "partial_json": '"a"}'}),
        frame("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 2}),
        frame("message_stop"),
    ]
    call = {"type": "tool_call", "name": "f", "id": "toolu_1", "arguments": '{"q":"a"}'}
    expected = ({"role": "assistant", "parts": [call], "finish_reason": "tool_call"},)
    streamed = run_stream(stream, capture=True).output_content
    assert streamed is not None and streamed.messages == expected
    body = {
        **MESSAGE_BODY,
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"q": "a"}}],
        "stop_reason": "tool_use",
    }
    whole = run_body(json.dumps(body).encode(), capture=True).output_content
    assert whole is not None and whole.messages == expected


# --- end to end: the anthropic SDK -> proxy -> simulator ------------------------------------

SYSTEM = "You are terse."  # 3 words
ASK: list[Any] = [{"role": "user", "content": "what is the weather"}]  # 4 words + 3
INPUT = 3 + 4 + 3
CACHED_SYSTEM: list[Any] = [
    {"type": "text", "text": "a b c d e", "cache_control": {"type": "ephemeral"}},  # 5 words, 5-minute write
    {"type": "text", "text": "f g h", "cache_control": {"type": "ephemeral", "ttl": "1h"}},  # 3 words, 1-hour
]
CACHED_INPUT = 5 + 3 + 4 + 3


class Traced:
    """A proxy in front of the session simulator with an in-memory span exporter."""

    def __init__(self, proxy: Proxied, spans: InMemorySpanExporter) -> None:
        self.proxy, self.exporter = proxy, spans
        self.sdk = anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0, timeout=10)

    def spans(self) -> list[ReadableSpan]:
        self.proxy.settle()
        return list(self.exporter.get_finished_spans())

    def span(self) -> dict[str, Any]:
        spans = self.spans()
        assert len(spans) == 1, [s.name for s in spans]
        return dict(spans[0].attributes or {})


@pytest.fixture
def traced(upstream: ServerThread, make_proxy: Any) -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # No provider configured and a localhost upstream: the endpoint's own flavour names it.
    t = Traced(make_proxy(upstream.url, tracer_provider=provider), exporter)
    yield t
    t.sdk.close()


def genai_cost(model: str, usage: anthropic.types.Usage) -> Decimal:
    """genai-prices' own price for what the SDK parsed, built by hand from Anthropic's fields."""
    cache_read = usage.cache_read_input_tokens or 0
    cache_write = usage.cache_creation_input_tokens or 0
    split = usage.cache_creation
    priced = genai_prices.Usage(
        input_tokens=usage.input_tokens + cache_read + cache_write,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=split.ephemeral_1h_input_tokens if split else 0,
        output_tokens=usage.output_tokens,
    )
    return genai_prices.calc_price(priced, model, provider_id="anthropic").total_price


def total_input(usage: Any) -> int:
    return int(usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0))


def test_non_stream_cache_writes_exact_tokens_cost_and_span(traced: Traced) -> None:
    message = traced.sdk.messages.create(model=MODEL, max_tokens=100, system=CACHED_SYSTEM, messages=ASK)
    usage = message.usage
    assert (usage.input_tokens, usage.cache_creation_input_tokens, usage.output_tokens) == (7, 8, 20)
    proxy = traced.proxy
    labels = {"endpoint": "messages", "model": MODEL}
    assert proxy.total("llmobs_tokens_total", **labels, type="input") == CACHED_INPUT == total_input(usage) == 15
    assert proxy.total("llmobs_tokens_total", **labels, type="cache_write") == 8
    assert proxy.total("llmobs_tokens_total", **labels, type="cache_read") == 0
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == 20
    assert proxy.total("llmobs_tokens_total", **labels, type="reasoning") == 0  # not reported: no series
    assert proxy.total("llmobs_finish_reasons_total", **labels, reason="end_turn") == 1
    assert proxy.total("llmobs_requests_total", **labels, stream="false", outcome="completed", status_code="200") == 1
    assert proxy.total("llmobs_requests_total") == 1
    # 7 uncached at $1, 5 written for 5 minutes at $1.25, 3 for an hour at $2, 20 out at $5, per MTok.
    by_hand = (7 * Decimal(1) + 5 * Decimal("1.25") + 3 * Decimal(2) + 20 * Decimal(5)) / 1_000_000
    assert genai_cost(MODEL, usage) == by_hand
    assert proxy.total("llmobs_cost_usd_total", model=MODEL) == pytest.approx(float(by_hand), rel=1e-12)
    assert proxy.total("llmobs_unpriced_requests_total") == 0
    span = traced.span()
    assert span["gen_ai.provider.name"] == "anthropic" and span["gen_ai.operation.name"] == "chat"
    assert span["gen_ai.request.model"] == MODEL and span["gen_ai.request.max_tokens"] == 100
    assert (span["gen_ai.response.id"], span["gen_ai.response.model"]) == (message.id, MODEL)
    assert span["gen_ai.usage.input_tokens"] == 15 and span["gen_ai.usage.output_tokens"] == 20
    assert span["gen_ai.usage.cache_creation.input_tokens"] == 8 and span["gen_ai.usage.cache_read.input_tokens"] == 0
    assert (span[ATTR_CACHE_5M], span[ATTR_CACHE_1H]) == (5, 3)
    assert span["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert span["llmobs.cost_usd"] == pytest.approx(float(by_hand), rel=1e-12)


@pytest.mark.parametrize("stream", [False, True])
def test_fast_mode_is_priced_at_the_fast_rate_the_usage_reports(traced: Traced, stream: bool) -> None:
    model = "claude-opus-5"  # genai-prices: $5 in, $25 out; fast mode $10 and $50 per MTok
    if stream:
        with traced.sdk.messages.stream(model=model, max_tokens=100, messages=ASK, speed="fast") as events:
            usage = events.get_final_message().usage
    else:
        usage = traced.sdk.messages.create(model=model, max_tokens=100, messages=ASK, speed="fast").usage
    assert usage.speed == "fast" and (usage.input_tokens, usage.output_tokens) == (7, 20)
    fast = (7 * Decimal(10) + 20 * Decimal(50)) / 1_000_000
    priced = genai_prices.Usage(input_tokens=7, output_tokens=20)
    found = genai_prices.calc_price(priced, model, provider_id="anthropic", price_context={"speed": "fast"})
    assert found.total_price == fast
    assert traced.proxy.total("llmobs_cost_usd_total", model=model) == pytest.approx(float(fast), rel=1e-12)


def test_sdk_stream_helper_with_cache_reads(traced: Traced) -> None:
    with traced.sdk.messages.stream(
        model=MODEL, max_tokens=100, system=CACHED_SYSTEM, messages=ASK, extra_headers={"x-sim-cache": "read"}
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "".join(f"tok{i} " for i in range(1, 21))
    usage = final.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (7, 8, 20)
    proxy = traced.proxy
    labels = {"endpoint": "messages", "model": MODEL}
    assert proxy.total("llmobs_tokens_total", **labels, type="input") == total_input(usage) == 15
    assert proxy.total("llmobs_tokens_total", **labels, type="cache_read") == 8
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == 20
    assert proxy.total("llmobs_requests_total", **labels, stream="true", outcome="completed") == 1
    assert proxy.total("llmobs_time_to_first_token_seconds_count", **labels) == 1
    assert proxy.total("llmobs_usage_missing_total") == 0 and proxy.total("llmobs_estimated_tokens_total") == 0
    expected = genai_cost(MODEL, usage)
    assert expected == (7 * Decimal(1) + 8 * Decimal("0.1") + 20 * Decimal(5)) / 1_000_000
    assert proxy.total("llmobs_cost_usd_total", model=MODEL) == pytest.approx(float(expected), rel=1e-12)
    span = traced.span()
    assert span["gen_ai.request.stream"] is True and span["gen_ai.usage.cache_read.input_tokens"] == 8
    assert span["gen_ai.response.time_to_first_chunk"] > 0


def test_create_stream_with_thinking_times_the_reasoning(traced: Traced) -> None:
    events = list(
        traced.sdk.messages.create(
            model=MODEL,
            max_tokens=2000,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=ASK,
            stream=True,
        )
    )
    delta = next(e for e in events if e.type == "message_delta")
    start = next(e for e in events if e.type == "message_start")
    assert delta.usage.output_tokens == 30  # 10 thinking + 20 answer
    proxy = traced.proxy
    labels = {"endpoint": "messages", "model": MODEL}
    assert proxy.total("llmobs_tokens_total", **labels, type="input") == total_input(start.message.usage) == 7
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == 30
    assert proxy.total("llmobs_tokens_total", **labels, type="reasoning") == 10
    assert proxy.total("llmobs_reasoning_duration_seconds_count", **labels) == 1
    assert proxy.total("llmobs_time_to_first_token_seconds_count", **labels) == 1
    assert traced.span()["gen_ai.usage.reasoning.output_tokens"] == 10


@pytest.mark.parametrize(
    ("model", "extra", "reason", "output"),
    [
        (MODEL, {"tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}, "tool_use", 20),
        (MODEL, {"stop_sequences": ["tok3"]}, "stop_sequence", 2),
        (MODEL, {"max_tokens": 5}, "max_tokens", 5),
        ("sim-refusal", {}, "refusal", 3),
        ("sim-pause-turn", {}, "pause_turn", 20),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_finish_reasons_and_output_counts(
    traced: Traced, model: str, extra: dict[str, Any], reason: str, output: int, stream: bool
) -> None:
    request: dict[str, Any] = {"model": model, "max_tokens": 100, "messages": ASK, **extra}
    if stream:
        with traced.sdk.messages.stream(**request) as events:
            message = events.get_final_message()
    else:
        message = traced.sdk.messages.create(**request)
    assert message.stop_reason == reason and message.usage.output_tokens == output
    proxy = traced.proxy
    labels = {"endpoint": "messages", "model": model}
    assert proxy.total("llmobs_finish_reasons_total", **labels, reason=reason) == 1
    assert proxy.total("llmobs_finish_reasons_total") == 1
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == output
    assert proxy.total("llmobs_tokens_total", **labels, type="input") == total_input(message.usage) == 7
    assert proxy.total("llmobs_requests_total", outcome="completed", stream=str(stream).lower()) == 1
    assert proxy.total("llmobs_requests_total") == 1


def test_overloaded_mid_stream_is_one_upstream_error_with_the_input_seen(traced: Traced) -> None:
    with pytest.raises(anthropic.APIStatusError) as raised:
        list(traced.sdk.messages.create(model="sim-overloaded", max_tokens=100, messages=ASK, stream=True))
    assert isinstance(raised.value.body, dict) and raised.value.body["error"]["type"] == "overloaded_error"
    proxy = traced.proxy
    labels = {"endpoint": "messages", "model": "sim-overloaded"}
    assert proxy.total("llmobs_requests_total", **labels, outcome="upstream_error", status_code="200") == 1
    assert proxy.total("llmobs_requests_total") == 1
    assert proxy.total("llmobs_tokens_total", **labels, type="input") == INPUT - 3  # no system here
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == 0  # never reported
    assert proxy.total("llmobs_estimated_tokens_total", **labels, type="output") == 3  # FAULT_CHUNKS deltas
    assert proxy.total("llmobs_unpriced_requests_total", model="sim-overloaded") == 1
    assert proxy.total("llmobs_cost_usd_total") == 0
    span = traced.span()
    assert span["error.type"] == "overloaded_error" and span["llmobs.outcome"] == "upstream_error"
    assert span["gen_ai.usage.input_tokens"] == 7 and "gen_ai.usage.output_tokens" not in span
    assert span["llmobs.estimated_output_tokens"] == 3


def test_stream_reset_after_message_start_is_counted_once_with_what_was_seen(traced: Traced) -> None:
    seen: list[str] = []
    with pytest.raises(anthropic.APIConnectionError):  # the connection dropped mid-stream
        with traced.sdk.messages.stream(model="sim-reset", max_tokens=100, messages=ASK) as stream:
            seen.extend(event.type for event in stream)
    assert seen[0] == "message_start" and seen.count("text") == 3  # then the connection dropped
    proxy = traced.proxy
    labels = {"endpoint": "messages", "model": "sim-reset"}
    assert proxy.total("llmobs_requests_total", **labels, outcome="stream_interrupted", status_code="200") == 1
    assert proxy.total("llmobs_requests_total") == 1
    assert proxy.total("llmobs_tokens_total", **labels, type="input") == 7  # message_start reported it
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == 0  # message_delta never came
    assert proxy.total("llmobs_estimated_tokens_total", **labels, type="output") == 3  # the deltas seen
    assert proxy.total("llmobs_unpriced_requests_total", model="sim-reset") == 1
    assert proxy.total("llmobs_cost_usd_total") == 0
    span = traced.span()
    assert span["llmobs.outcome"] == "stream_interrupted" and span["gen_ai.usage.input_tokens"] == 7


def test_non_stream_error_status_has_the_anthropic_error_type(traced: Traced) -> None:
    with pytest.raises(anthropic.APIStatusError) as raised:
        traced.sdk.messages.create(model="sim-error-529", max_tokens=100, messages=ASK)
    assert raised.value.status_code == 529
    proxy = traced.proxy
    assert proxy.total("llmobs_requests_total", outcome="upstream_error", status_code="529") == 1
    assert proxy.total("llmobs_usage_missing_total") == 0 and proxy.total("llmobs_tokens_total") == 0
    assert traced.span()["error.type"] == "overloaded_error"


def test_count_tokens_and_batches_are_their_own_endpoints_never_messages(traced: Traced) -> None:
    counted = traced.sdk.messages.count_tokens(model=MODEL, system=SYSTEM, messages=ASK)
    assert counted.input_tokens == INPUT
    batch = traced.sdk.messages.batches.create(
        requests=[{"custom_id": "a", "params": {"model": MODEL, "max_tokens": 10, "messages": ASK}}]
    )
    traced.sdk.messages.batches.retrieve(batch.id)
    with httpx.Client(timeout=10) as http:
        results = http.get(f"{traced.proxy.url}/v1/messages/batches/{batch.id}/results", headers={"x-api-key": KEY})
    assert results.status_code == 200 and b'"usage"' in results.content  # results hold messages, with usage
    proxy = traced.proxy
    for endpoint, method_count in (("messages_count_tokens", 1), ("messages_batches", 1), ("other", 2)):
        assert proxy.total("llmobs_requests_total", endpoint=endpoint, outcome="completed") == method_count
    assert proxy.total("llmobs_requests_total") == 4
    assert proxy.total("llmobs_requests_total", endpoint="messages") == 0
    assert proxy.total("llmobs_requests_total", endpoint="messages_count_tokens", model=MODEL) == 1  # as asked
    assert proxy.total("llmobs_tokens_total") == 0 and proxy.total("llmobs_usage_missing_total") == 0
    assert proxy.total("llmobs_finish_reasons_total") == 0 and proxy.total("llmobs_unpriced_requests_total") == 0
    assert proxy.total("llmobs_request_duration_seconds_count", endpoint="messages_count_tokens") == 1
    assert traced.spans() == []  # not a GenAI operation: timed and counted, no span


def normalise(body: bytes) -> bytes:
    """Blank out the random ids; everything else (signatures included) is deterministic."""
    return re.sub(rb'"id":"(msg|toolu)_[0-9a-f]+"', rb'"id":"-"', body)


@pytest.mark.parametrize("stream", [False, True])
def test_the_client_gets_the_upstream_bytes(traced: Traced, upstream: ServerThread, stream: bool) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 2000,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "system": CACHED_SYSTEM,
        "messages": ASK,
        "stream": stream,
    }
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "accept-encoding": "identity"}
    with httpx.Client(timeout=10) as http:
        direct = http.post(upstream.url + "/v1/messages", json=body, headers=headers)
        proxied = http.post(traced.proxy.url + "/v1/messages", json=body, headers=headers)
    assert proxied.status_code == direct.status_code == 200
    assert proxied.headers["content-type"] == direct.headers["content-type"]
    assert normalise(direct.content) != direct.content  # the ids really were there to blank
    assert normalise(proxied.content) == normalise(direct.content)
    assert traced.proxy.total("llmobs_requests_total") == 1
    assert traced.proxy.total("llmobs_tokens_total", type="output") == 30
    assert traced.proxy.total("llmobs_finish_reasons_total", reason="tool_use") == 1


# --- secrets --------------------------------------------------------------------------------

UPSTREAM_KEY = "sk-ant-UPSTREAMsecret9876543210fedcbaQ"
NEEDLES = (KEY, KEY[-14:], UPSTREAM_KEY, UPSTREAM_KEY[-14:])


def assert_clean(where: str, haystack: str) -> None:
    for needle in NEEDLES:
        assert needle not in haystack, f"{needle[:6]}... leaked into {where}"


def test_an_x_api_key_is_found_nowhere(
    traced: Traced,
    recording_upstream: tuple[str, list[dict[bytes, bytes]]],
    make_proxy: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sdk, told = traced.sdk, []
    sdk.messages.create(model=MODEL, max_tokens=10, messages=ASK)
    with sdk.messages.stream(model=MODEL, max_tokens=10, messages=ASK) as stream:
        stream.get_final_message()
    sdk.messages.count_tokens(model=MODEL, messages=ASK)
    for call in (
        lambda: sdk.messages.create(model="sim-error-401", max_tokens=10, messages=ASK),
        lambda: list(sdk.messages.create(model="sim-overloaded", max_tokens=10, messages=ASK, stream=True)),
    ):
        with pytest.raises(anthropic.APIStatusError) as raised:
            call()
        told.append(str(raised.value))
    with httpx.Client(timeout=10) as http:
        for path, content in (("/v1/messages", b'{"model": "m", "messages": [}'), ("/v1/unknown", b"{}")):
            told.append(http.post(traced.proxy.url + path, content=content, headers={"x-api-key": KEY}).text)
        # A route with its own key: the upstream gets that key in x-api-key, the client's goes nowhere.
        upstream_url, seen = recording_upstream
        routed = make_proxy(upstream_url.removesuffix("/v1"), provider="anthropic", upstream_api_key=UPSTREAM_KEY)
        body = {"model": MODEL, "max_tokens": 10, "messages": ASK}
        assert http.post(routed.url + "/v1/messages", json=body, headers={"x-api-key": KEY}).status_code == 200
        routed.settle()
        assert seen[-1][b"x-api-key"] == UPSTREAM_KEY.encode()
        scraped = [http.get(traced.proxy.url + "/metrics").text, http.get(routed.url + "/metrics").text]
    spans = traced.spans()
    assert len(spans) == 5 and "llmobs_requests_total" in scraped[0] and caplog.records
    # The tenant is the x-api-key's fingerprint, exactly as from Authorization: never the key.
    tenants = {span.attributes["llmobs.tenant"] for span in spans if span.attributes}
    assert tenants == {fingerprint(KEY)} and fingerprint(KEY).startswith("key-")
    for text in scraped:
        assert_clean("/metrics", text)
    for text in told:
        assert_clean("an error message to the client", text)
    for span in spans:
        assert_clean(f"span {span.name}", repr(dict(span.attributes or {})) + repr(span.events))
    assert_clean("the logs", caplog.text)
