"""Accumulators: real-shaped bodies and streams in, one exact Observation out."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from llmobs.apis.openai_common import parse_usage
from llmobs.apis.table import ENDPOINTS, OTHER, classify
from llmobs.records import CHUNK_INTERVALS, Outcome, RequestInfo, Usage, UsageSource
from llmobs.sse import Event
from llmobs.telemetry.pricing import PriceTable
from observing import sse_observer


def sse(*payloads: Any, event_names: bool = False) -> bytes:
    out = b""
    for payload in payloads:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        if event_names and isinstance(payload, dict):
            out += f"event: {payload['type']}\n".encode()
        out += f"data: {data}\n\n".encode()
    return out


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, index: int = 0, **extra: Any
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_1",
        "service_tier": "default",
        "choices": [{"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 3,
    "total_tokens": 1203,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
CHAT_STREAM = sse(
    chunk({"role": "assistant", "content": "", "refusal": None}, usage=None),
    chunk({"content": "Hel"}, usage=None),
    chunk({"content": "lo"}, usage=None),
    chunk({"content": "!"}, usage=None),
    chunk({}, "stop", usage=None),
    {**chunk(), "choices": [], "usage": USAGE},
    "[DONE]",
)


def info(endpoint: str = "chat_completions", stream: bool = True, model: str = "gpt-4o") -> RequestInfo:
    spec = next(e for e in [*ENDPOINTS.values(), OTHER] if e.name == endpoint)
    return RequestInfo(endpoint=endpoint, operation=spec.operation, model=model, stream=stream)


def run_stream(request: RequestInfo, pieces: list[bytes], *, strip: bool = False) -> tuple[Any, bytes]:
    """Feed pieces at t = 1, 2, 3, ...; return the observation and the relayed bytes."""
    spec = next(e for e in [*ENDPOINTS.values(), OTHER] if e.name == request.endpoint)
    acc = spec.observe(request, 0.0)
    observer = sse_observer(acc, cut_usage=strip)
    relayed = b""
    for t, piece in enumerate(pieces, start=1):
        if observer.cutting:
            relayed += observer.cut(piece, float(t))
        else:
            relayed += piece
            observer.feed(piece, float(t))
    relayed += observer.close()
    return acc.finish(Outcome.COMPLETED, 200, float(len(pieces) + 1)), relayed


def events_of(stream: bytes) -> list[bytes]:
    """The stream cut at event boundaries: one piece per event, as a server sends them."""
    return [piece + b"\n\n" for piece in stream.split(b"\n\n") if piece]


def test_chat_stream_exact_usage_finish_and_timings() -> None:
    obs, relayed = run_stream(info(), events_of(CHAT_STREAM))
    assert obs.usage == Usage(input_tokens=1200, output_tokens=3, cache_read_tokens=1024, reasoning_tokens=0)
    assert obs.usage_source is UsageSource.REPORTED
    assert obs.finish_reasons == ("stop",)
    assert obs.timings.first_token == 2.0  # the role-only chunk is not a token
    assert obs.response_model == "gpt-4o-2024-08-06" and obs.response_id == "chatcmpl-1"
    assert obs.extra == {"system_fingerprint": "fp_1", "service_tier": "default"}
    assert obs.outcome is Outcome.COMPLETED
    assert relayed == CHAT_STREAM


def test_injected_usage_chunk_is_removed_and_nothing_else() -> None:
    obs, relayed = run_stream(info(), events_of(CHAT_STREAM), strip=True)
    usage_event = sse({**chunk(), "choices": [], "usage": USAGE})
    # Both things include_usage added go: the usage chunk, and the null usage of every other chunk.
    assert relayed == CHAT_STREAM.replace(usage_event, b"").replace(b', "usage": null', b"")
    assert obs.usage.input_tokens == 1200


@pytest.mark.parametrize("strip", [False, True])
def test_every_byte_split_gives_the_same_observation(strip: bool) -> None:
    whole, whole_relayed = run_stream(info(), [CHAT_STREAM], strip=strip)
    for i in range(len(CHAT_STREAM) + 1):
        obs, relayed = run_stream(info(), [CHAT_STREAM[:i], CHAT_STREAM[i:]], strip=strip)
        assert (obs.usage, obs.finish_reasons, obs.response_id) == (
            whole.usage,
            whole.finish_reasons,
            whole.response_id,
        )
        assert relayed == whole_relayed


def test_stream_without_usage_is_missing_and_estimated_apart() -> None:
    stream = CHAT_STREAM.replace(sse({**chunk(), "choices": [], "usage": USAGE}), b"").replace(b', "usage": null', b"")
    obs, _ = run_stream(info(), events_of(stream))
    assert obs.usage == Usage() and obs.usage_source is UsageSource.MISSING
    assert obs.estimated_output_tokens == 3


def test_reasoning_content_deepseek_style() -> None:
    stream = sse(
        chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
        chunk({"reasoning_content": "Let me"}),
        chunk({"reasoning_content": " think"}),
        chunk({"content": "42"}),
        chunk({}, "stop"),
        "[DONE]",
    )
    obs, _ = run_stream(info(), events_of(stream))
    assert obs.timings.first_reasoning == 2.0
    assert obs.timings.first_token == 4.0 and obs.timings.reasoning_end == 4.0
    assert obs.timings.reasoning_duration == 2.0


def test_vllm_sends_reasoning_instead_of_reasoning_content() -> None:
    stream = sse(
        chunk({"role": "assistant"}), chunk({"reasoning": "hmm"}), chunk({"content": "ok"}), chunk({}, "stop"), "[DONE]"
    )
    obs, _ = run_stream(info(), events_of(stream))
    assert (obs.timings.first_reasoning, obs.timings.first_token) == (2.0, 3.0)


def test_each_choice_finish_reason_counts_once() -> None:
    stream = sse(
        chunk({"content": "a"}, index=0),
        chunk({"content": "b"}, index=1),
        chunk({}, "length", index=1),
        chunk({}, "tool_calls", index=0),
        "[DONE]",
    )
    obs, _ = run_stream(info(), events_of(stream))
    assert obs.finish_reasons == ("tool_calls", "length")


def usage_chunk(prompt: int, completion: int, *, cached: int = 0) -> dict[str, Any]:
    """A usage-only chunk as llama-server sends it (its `timings` left out)."""
    usage = {"completion_tokens": completion, "prompt_tokens": prompt, "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip
    return {**chunk(), "choices": [], "usage": usage}


def choices(n: int) -> RequestInfo:
    return dataclasses.replace(info(), params={"gen_ai.request.choice.count": n})


# llama-server with n=3: each choice's finish is followed by a usage chunk of its own, each with
# the whole prompt (captured from llama.cpp 0c1e57098; the run saw (24,5) (24,6) (24,6)).
PER_CHOICE = sse(
    chunk({"content": "a"}, index=0),
    chunk({"content": "b"}, index=1),
    chunk({"content": "c"}, index=2),
    chunk({}, "length", index=1),
    usage_chunk(24, 5, cached=8),
    chunk({}, "length", index=2),
    usage_chunk(24, 6, cached=8),
    chunk({}, "stop", index=0),
    usage_chunk(24, 6, cached=8),
    "[DONE]",
)


def test_llama_server_per_choice_usage_chunks_add_their_output_and_count_the_prompt_once() -> None:
    whole, _ = run_stream(choices(3), [PER_CHOICE])
    assert whole.usage == Usage(input_tokens=24, output_tokens=17, cache_read_tokens=8)
    for i in range(len(PER_CHOICE) + 1):
        obs, _ = run_stream(choices(3), [PER_CHOICE[:i], PER_CHOICE[i:]])
        assert obs.usage == whole.usage


def test_a_repeated_usage_chunk_or_a_running_total_is_not_added_up() -> None:
    # The same total twice, with no choice finishing in between: the last one stands.
    repeated = sse(chunk({"content": "a"}), chunk({}, "stop"), usage_chunk(24, 5), usage_chunk(24, 5), "[DONE]")
    assert run_stream(choices(2), events_of(repeated))[0].usage.output_tokens == 5
    # n=1: a second usage chunk after the finish is a repeat, whatever came between.
    assert run_stream(info(), events_of(repeated))[0].usage.output_tokens == 5
    # vLLM's continuous_usage_stats: a running total on every content chunk, then the final total.
    running = sse(
        chunk({"content": "a"}, index=0, usage={"prompt_tokens": 24, "completion_tokens": 1, "total_tokens": 25}),
        chunk({"content": "b"}, index=1, usage={"prompt_tokens": 24, "completion_tokens": 2, "total_tokens": 26}),
        chunk({}, "stop", index=0, usage={"prompt_tokens": 24, "completion_tokens": 2, "total_tokens": 26}),
        chunk({}, "stop", index=1, usage={"prompt_tokens": 24, "completion_tokens": 2, "total_tokens": 26}),
        usage_chunk(24, 2),
        "[DONE]",
    )
    assert run_stream(choices(2), events_of(running))[0].usage == Usage(
        input_tokens=24, output_tokens=2, cache_read_tokens=0
    )


def test_error_object_inside_a_stream_is_an_upstream_error() -> None:
    stream = sse(chunk({"content": "a"}), {"error": {"message": "overloaded", "type": "server_error", "code": None}})
    obs, _ = run_stream(info(), events_of(stream))
    assert obs.outcome is Outcome.UPSTREAM_ERROR and obs.error_type == "server_error"


def test_stream_cut_before_done_is_interrupted() -> None:
    obs, _ = run_stream(info(), events_of(CHAT_STREAM)[:3])
    assert obs.outcome is Outcome.STREAM_INTERRUPTED
    assert obs.usage_source is UsageSource.MISSING and obs.estimated_output_tokens == 2


def test_legacy_completions_stream() -> None:
    def text(t: str, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "gpt-3.5-turbo-instruct",
            "choices": [{"index": 0, "text": t, "logprobs": None, "finish_reason": finish}],
        }

    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    stream = sse(text("Hi"), text(" there", "length"), {**text(""), "choices": [], "usage": usage}, "[DONE]")
    obs, _ = run_stream(info("completions"), events_of(stream))
    assert obs.usage == Usage(input_tokens=5, output_tokens=2)
    assert obs.finish_reasons == ("length",) and obs.timings.first_token == 1.0


RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "model": "o4-mini-2025-04-16",
    "status": "completed",
    "output": [{"type": "reasoning", "summary": []}, {"type": "message", "content": []}],
    "usage": {
        "input_tokens": 50,
        "input_tokens_details": {"cached_tokens": 10},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 80,
    },
}


def responses_stream(final: dict[str, Any], kind: str = "response.completed") -> bytes:
    created = {**final, "status": "in_progress", "usage": None, "output": []}
    return sse(
        {"type": "response.created", "sequence_number": 0, "response": created},
        {"type": "response.reasoning_summary_text.delta", "sequence_number": 1, "delta": "Hm"},
        {"type": "response.output_text.delta", "sequence_number": 2, "delta": "Hi"},
        {"type": "response.output_text.delta", "sequence_number": 3, "delta": "!"},
        {"type": kind, "sequence_number": 4, "response": final},
        event_names=True,
    )


@pytest.mark.parametrize("event_names", [True, False])
def test_responses_stream(event_names: bool) -> None:
    stream = responses_stream(RESPONSE)
    if not event_names:
        stream = b"".join(line + b"\n" for line in stream.split(b"\n")[:-1] if not line.startswith(b"event:"))
    obs, _ = run_stream(info("responses"), events_of(stream))
    assert obs.usage == Usage(input_tokens=50, output_tokens=30, cache_read_tokens=10, reasoning_tokens=20)
    assert obs.finish_reasons == ("stop",)
    assert (obs.timings.first_reasoning, obs.timings.first_token) == (2.0, 3.0)
    assert obs.response_id == "resp_1" and obs.outcome is Outcome.COMPLETED


# -- output chunk instants (gen_ai.client.operation.time_per_output_chunk) --------------------


def timed(request: RequestInfo) -> RequestInfo:
    return dataclasses.replace(request, chunk_times=True)


def test_chat_chunk_instants_are_the_output_events_only() -> None:
    stream = sse(
        chunk({"role": "assistant", "content": ""}),  # t=1: no output
        chunk({"reasoning_content": "hm"}),  # t=2: reasoning is output
        chunk({"content": "Hel"}),  # t=3
        chunk({"content": "lo"}),  # t=4: skimmed, never decoded, still an instant
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),  # t=5
        chunk({}, "stop"),  # t=6: no output
        {**chunk(), "choices": [], "usage": USAGE},
        "[DONE]",
    )
    obs, _ = run_stream(timed(info()), events_of(stream))
    assert obs.timings.chunks == (2.0, 3.0, 4.0, 5.0)
    plain, _ = run_stream(info(), events_of(stream))
    assert plain.timings.chunks == ()  # no OTel meter: nothing noted
    whole, _ = run_stream(timed(info(stream=False)), [json.dumps({"choices": []}).encode()])
    assert whole.timings.chunks == ()


def test_chunk_instants_are_bounded() -> None:
    acc = ENDPOINTS["chat/completions"].observe(timed(info()), 0.0)
    for t in range(CHUNK_INTERVALS + 100):
        acc.on_event(Event(json.dumps(chunk({"content": "x"})).encode()), float(t))
    obs = acc.finish(Outcome.COMPLETED, 200, 1e9)
    assert len(obs.timings.chunks) == CHUNK_INTERVALS + 1 and obs.timings.chunks[-1] == CHUNK_INTERVALS
    assert acc.token_events == CHUNK_INTERVALS + 100  # the estimate still counts them all


def test_responses_chunk_instants_start_at_the_first_output_delta() -> None:
    obs, _ = run_stream(timed(info("responses")), events_of(responses_stream(RESPONSE)))
    assert obs.timings.chunks == (2.0, 3.0, 4.0)  # reasoning, text, text: not created, not completed


def test_responses_incomplete_max_output_tokens_is_length() -> None:
    final = {**RESPONSE, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    obs, _ = run_stream(info("responses"), events_of(responses_stream(final, "response.incomplete")))
    assert obs.finish_reasons == ("length",)


def test_responses_function_call_is_tool_calls_and_content_filter_maps() -> None:
    acc = ENDPOINTS["responses"].accumulator(info("responses", stream=False), 0.0)
    acc.on_body(json.dumps({**RESPONSE, "output": [{"type": "function_call", "name": "f"}]}).encode())
    assert acc.finish(Outcome.COMPLETED, 200, 1.0).finish_reasons == ("tool_calls",)
    acc = ENDPOINTS["responses"].accumulator(info("responses", stream=False), 0.0)
    acc.on_body(
        json.dumps({**RESPONSE, "status": "incomplete", "incomplete_details": {"reason": "content_filter"}}).encode()
    )
    assert acc.finish(Outcome.COMPLETED, 200, 1.0).finish_reasons == ("content_filter",)


def test_non_streamed_chat_body() -> None:
    body = {
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "y"}, "finish_reason": "length"},
        ],
        "usage": {**USAGE, "prompt_tokens_details": None, "completion_tokens_details": None},
    }
    acc = ENDPOINTS["chat/completions"].accumulator(info(stream=False), 0.0)
    acc.on_body(json.dumps(body).encode())
    obs = acc.finish(Outcome.COMPLETED, 200, 1.0)
    assert obs.usage == Usage(input_tokens=1200, output_tokens=3)  # null details: not reported, not zero
    assert obs.finish_reasons == ("stop", "length") and obs.timings.first_token is None


def test_embeddings_usage_has_input_only() -> None:
    acc = ENDPOINTS["embeddings"].accumulator(info("embeddings", stream=False), 0.0)
    acc.on_body(
        b'{"object":"list","data":[],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}'
    )
    usage = acc.finish(Outcome.COMPLETED, 200, 1.0).usage
    # An embedding generates nothing: output is absent, not 0 (issue 12), and input alone is billed.
    assert usage.input_tokens == 8 and usage.output_tokens is None
    assert usage.pricing == (("input_tokens", 8),)
    cost = PriceTable.load(provider="openai", price_file=None).price("text-embedding-3-small", usage)
    assert cost is not None and cost > 0


@pytest.mark.parametrize(
    ("embedding", "dims"),
    [
        ([0.5, -0.25, 0.0], 3),
        ("AAAAAAAAgD8AAAAA", 3),  # base64 of three float32s: measured, never decoded
        ("AAAAAAAAgD8=", 2),  # 9 bytes less one of padding
        ("AAAAAAA=", None),  # 5 bytes: not whole float32s
        ([], None),
        (None, None),
    ],
)
def test_embeddings_dimension_count_from_the_vectors_returned(embedding: Any, dims: int | None) -> None:
    acc = ENDPOINTS["embeddings"].accumulator(info("embeddings", stream=False), 0.0)
    acc.on_body(json.dumps({"data": [{"embedding": embedding}], "usage": {"prompt_tokens": 1}}).encode())
    attributes = acc.finish(Outcome.COMPLETED, 200, 1.0).attributes
    assert attributes == ({"gen_ai.embeddings.dimension.count": dims} if dims else {})


def test_embeddings_dimension_count_asked_for_is_not_measured_again() -> None:
    asked = dataclasses.replace(info("embeddings", stream=False), params={"gen_ai.embeddings.dimension.count": 2})
    acc = ENDPOINTS["embeddings"].accumulator(asked, 0.0)
    acc.on_body(b'{"data":[{"embedding":[0.5,0.25]}],"usage":{"prompt_tokens":1}}')
    assert acc.finish(Outcome.COMPLETED, 200, 1.0).attributes == {}  # the span has it from the request


def test_cache_write_tokens_and_garbage_counts() -> None:
    usage = parse_usage(
        {"prompt_tokens": 10, "completion_tokens": True, "prompt_tokens_details": {"cache_write_tokens": 4}}
    )
    assert usage == Usage(input_tokens=10, cache_write_tokens=4)


def test_unparseable_body_leaves_usage_missing() -> None:
    acc = ENDPOINTS["chat/completions"].accumulator(info(stream=False), 0.0)
    acc.on_body(b"<html>bad gateway</html>")
    assert acc.finish(Outcome.COMPLETED, 200, 1.0).usage_source is UsageSource.MISSING


@pytest.mark.parametrize(
    ("method", "path", "endpoint"),
    [
        ("POST", "/v1/chat/completions", "chat_completions"),
        ("POST", "/v1/completions", "completions"),
        ("POST", "/openai/deployments/x/chat/completions/", "chat_completions"),
        ("POST", "/v1/embeddings", "embeddings"),
        ("POST", "/v1/responses", "responses"),
        ("GET", "/v1/responses", "other"),
        ("POST", "/v1/responses/resp_1/cancel", "other"),
        ("GET", "/v1/models", "other"),
        ("POST", "/v1/files", "other"),
    ],
)
def test_classify(method: str, path: str, endpoint: str) -> None:
    assert classify(method, path).name == endpoint


def test_a_responses_stream_is_priced_by_the_tier_its_final_response_reports() -> None:
    """response.created echoes the tier asked for; response.completed says the one that served."""
    acc = ENDPOINTS["responses"].observe(info("responses", model="gpt-5"), 0.0)
    created = {"id": "resp_1", "model": "gpt-5", "status": "in_progress", "service_tier": "auto"}
    usage = {"input_tokens": 9, "output_tokens": 20, "total_tokens": 29}
    completed = {**created, "status": "completed", "service_tier": "priority", "output": [], "usage": usage}
    for kind, response in (("response.created", created), ("response.completed", completed)):
        acc.on_event(Event(json.dumps({"type": kind, "response": response}).encode(), kind), 1.0)
    assert acc.finish(Outcome.COMPLETED, 200, 2.0).extra["service_tier"] == "priority"
