"""Property tests: any chunking of any valid stream gives the same observation, and the same
bytes to the client; the decoder's memory stays bounded on any input."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from llmobs.apis.openai_chat import ChatAccumulator
from llmobs.records import Observation, Outcome, RequestInfo, UsageSource
from llmobs.sse import SSEDecoder
from observing import sse_observer

EOLS = (b"\n", b"\r\n", b"\r")


@st.composite
def chat_streams(draw: Any) -> dict[str, Any]:
    """A chat completions stream as an upstream could send it, and what it reports."""
    n = draw(st.integers(1, 3))
    reasons = [draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"])) for _ in range(n)]
    texts = [draw(st.lists(st.text(min_size=1, max_size=6), max_size=6)) for _ in range(n)]
    thinking = draw(st.lists(st.text(min_size=1, max_size=4), max_size=3))
    usage = draw(
        st.none()
        | st.fixed_dictionaries(
            {
                "prompt_tokens": st.integers(0, 10**6),
                "completion_tokens": st.integers(0, 10**6),
                "completion_tokens_details": st.fixed_dictionaries({"reasoning_tokens": st.integers(0, 1000)}),
            }
        )
    )
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "served"}
    with_null_usage = draw(st.booleans())  # include_usage puts "usage": null on every chunk
    objects: list[dict[str, Any]] = []

    def chunk(choices: list[Any], **extra: Any) -> None:
        obj = {**base, "choices": choices, **extra}
        if with_null_usage and "usage" not in extra:
            obj["usage"] = None
        objects.append(obj)

    for piece in thinking:
        chunk([{"index": 0, "delta": {"reasoning_content": piece}, "finish_reason": None}])
    for index in range(n):
        for piece in texts[index]:
            chunk([{"index": index, "delta": {"content": piece}, "finish_reason": None}])
    for index in range(n):
        chunk([{"index": index, "delta": {}, "finish_reason": reasons[index]}])
    if usage is not None:
        chunk([], usage=usage)
    eol = draw(st.sampled_from(EOLS))
    space = draw(st.sampled_from([b" ", b""]))  # "data:" may come without the space
    wire = b""
    for obj in objects:
        if draw(st.booleans()):
            wire += b": keep-alive" + eol + eol
        wire += b"data:" + space + json.dumps(obj, ensure_ascii=draw(st.booleans())).encode() + eol + eol
    done = draw(st.booleans())
    if done:
        wire += b"data:" + space + b"[DONE]" + eol + eol
    return {
        "wire": wire,
        "usage": usage,
        "reasons": tuple(reasons),
        "done": done,
        "answered": any(texts),
        "thought": bool(thinking),
    }


def chunkings(draw: Any, wire: bytes) -> list[bytes]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(wire)), max_size=12))))
    return [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=False)]


def info(injected: bool = False) -> RequestInfo:
    return RequestInfo(endpoint="chat_completions", operation="chat", model="m", stream=True, usage_injected=injected)


def observe(pieces: list[bytes]) -> Observation:
    acc = ChatAccumulator(info(), 0.0)
    decoder = SSEDecoder(max_event_bytes=1 << 20)
    for i, piece in enumerate(pieces):
        for event in decoder.feed(piece):
            acc.on_event(event, float(i + 1))
    return acc.finish(Outcome.COMPLETED, 200, 100.0)


def untimed(obs: Observation) -> Observation:
    return dataclasses.replace(
        obs, timings=dataclasses.replace(obs.timings, first_token=None, first_reasoning=None, reasoning_end=None)
    )


@settings(max_examples=300, deadline=None)
@given(chat_streams(), st.data())
def test_any_chunking_of_a_chat_stream_gives_the_same_observation(stream: dict[str, Any], data: Any) -> None:
    whole = observe([stream["wire"]])
    pieces = chunkings(data.draw, stream["wire"])
    assert untimed(observe(pieces)) == untimed(whole)
    for i in range(0, len(stream["wire"]) + 1, max(1, len(stream["wire"]) // 7)):
        assert untimed(observe([stream["wire"][:i], stream["wire"][i:]])) == untimed(whole)
    # ... and it is what the upstream said.
    assert whole.finish_reasons == stream["reasons"]
    assert whole.outcome is (Outcome.COMPLETED if stream["done"] else Outcome.STREAM_INTERRUPTED)
    assert (whole.timings.first_token is not None) == stream["answered"]
    assert (whole.timings.first_reasoning is not None) == (stream["thought"])
    if stream["usage"] is None:
        assert whole.usage_source is UsageSource.MISSING and whole.usage.output_tokens is None
    else:
        assert whole.usage_source is UsageSource.REPORTED
        assert whole.usage.input_tokens == stream["usage"]["prompt_tokens"]
        assert whole.usage.output_tokens == stream["usage"]["completion_tokens"]
        assert whole.usage.reasoning_tokens == stream["usage"]["completion_tokens_details"]["reasoning_tokens"]
        assert whole.estimated_output_tokens is None  # estimates never mixed with reported counts


def relay(pieces: list[bytes]) -> tuple[bytes, ChatAccumulator]:
    """What the client receives when the proxy cuts the usage chunk it asked for."""
    acc = ChatAccumulator(info(injected=True), 0.0)
    observer = sse_observer(acc, cut_usage=True)
    out = b"".join(observer.cut(piece, 1.0) for piece in pieces)
    return out + observer.close(), acc


def without_usage_chunk(wire: bytes) -> bytes:
    """The stream as the client would have had it without include_usage."""
    decoder = SSEDecoder()
    out = b""
    for event in decoder.feed(wire):
        obj = json.loads(event.data) if event.data.startswith(b"{") else None
        if obj is not None and obj.get("usage") and not obj.get("choices"):
            continue
        raw = event.raw
        if obj is not None and "usage" in obj and obj["usage"] is None:
            raw = raw.replace(b', "usage": null', b"")
        out += raw
    return out + decoder.pending


@settings(max_examples=300, deadline=None)
@given(chat_streams(), st.data())
def test_any_chunking_gives_the_client_the_same_bytes_less_only_the_usage_chunk(
    stream: dict[str, Any], data: Any
) -> None:
    wire = stream["wire"]
    whole, acc = relay([wire])
    assert whole == without_usage_chunk(wire)
    assert relay(chunkings(data.draw, wire))[0] == whole
    assert relay([wire[i : i + 1] for i in range(len(wire))])[0] == whole  # byte by byte
    if stream["usage"] is not None:
        assert acc.usage is not None and acc.usage.output_tokens == stream["usage"]["completion_tokens"]


@given(st.lists(st.binary(max_size=200), max_size=30), st.integers(1, 256))
def test_decoder_memory_is_bounded_on_any_input(chunks: list[bytes], limit: int) -> None:
    decoder = SSEDecoder(max_event_bytes=limit)
    for chunk in chunks:
        for event in decoder.feed(chunk):
            assert len(event.raw) <= limit + len(chunk) and len(event.data) <= limit + len(chunk)
        assert decoder.pending_size <= limit


@given(chat_streams())
def test_a_bound_above_every_event_changes_nothing(stream: dict[str, Any]) -> None:
    wire = stream["wire"]
    unbounded = SSEDecoder().feed(wire)
    assert SSEDecoder(max_event_bytes=max(len(e.raw) for e in unbounded) + 1).feed(wire) == unbounded


def test_an_event_over_the_bound_is_dropped_whole_and_decoding_resumes() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    events = decoder.feed(b"data: " + b"x" * 150)
    events += decoder.feed(b"x" * 150 + b"\ndata: more\n\ndata: ok\n\n")
    assert [(e.data, e.raw) for e in events] == [(b"", b""), (b"ok", b"data: ok\n\n")]


def test_take_pending_hands_out_bytes_once() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\ndata: b") == []
    assert decoder.take_pending() == b"data: a\ndata: b"
    events = decoder.feed(b"c\n\ndata: d\n\n")
    assert [e.data for e in events] == [b"a\nbc", b"d"]
    assert [e.raw for e in events] == [b"c\n\n", b"data: d\n\n"]


def test_crlf_split_after_a_cut_usage_chunk_leaves_no_stray_lf() -> None:
    """The CR of a blank line ends the usage event; its LF, in the next chunk, goes with it."""
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\r\n\r'
    kept = b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\r\n\r'
    out, acc = relay([kept, b"\n" + usage, b"\ndata: [DONE]\r\n\r\n"])
    assert out == kept + b"\ndata: [DONE]\r\n\r\n"
    assert acc.usage is not None and acc.usage.output_tokens == 2
