"""The SSE decoder, against the specification's examples and awkward chunkings."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from llmobs.sse import Event, SSEDecoder


def decode(*chunks: bytes) -> list[Event]:
    decoder = SSEDecoder()
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events


def dispatched(events: list[Event]) -> list[tuple[str, bytes]]:
    return [(e.event, e.data) for e in events if e.data]


def every_split(stream: bytes) -> list[list[Event]]:
    return [decode(stream[:i], stream[i:]) for i in range(len(stream) + 1)]


def test_spec_example_multiline_data_and_comment() -> None:
    stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"
    assert dispatched(decode(stream)) == [
        ("message", b"first event"),
        ("message", b"second event"),
        ("message", b" third event"),  # only one leading space is removed
    ]


def test_spec_example_data_lines_joined_with_newline() -> None:
    assert dispatched(decode(b"data: YHOO\ndata: +2\ndata: 10\n\n")) == [("message", b"YHOO\n+2\n10")]


def test_empty_data_is_not_dispatched_and_trailing_event_is_dropped() -> None:
    assert dispatched(decode(b"data\n\ndata\ndata\n\ndata:")) == [("message", b"\n")]


def test_named_events_as_the_responses_api_sends_them() -> None:
    stream = b'event: response.created\ndata: {"a":1}\n\nevent: response.completed\ndata: {"b":2}\n\n'
    assert dispatched(decode(stream)) == [("response.created", b'{"a":1}'), ("response.completed", b'{"b":2}')]


def test_all_three_line_endings() -> None:
    for eol in (b"\n", b"\r", b"\r\n"):
        stream = b"data: a" + eol + eol + b"data: b" + eol + eol
        for events in every_split(stream):
            assert dispatched(events) == [("message", b"a"), ("message", b"b")]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    events = decode(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n")
    assert dispatched(events) == [("message", b"a"), ("message", b"b")]


def test_only_cr_and_lf_end_lines_not_other_unicode_breaks() -> None:
    # str.splitlines would split at U+2028 and \x0b; the SSE grammar does not.
    assert dispatched(decode("data: a\u2028b\x0bc\n\n".encode())) == [("message", "a\u2028b\x0bc".encode())]


def test_bom_is_skipped_once() -> None:
    assert dispatched(decode(b"\xef\xbb", b"\xbfdata: x\n\n")) == [("message", b"x")]


def test_raw_bytes_add_up_to_the_input_at_every_split() -> None:
    stream = b': keep-alive\n\ndata: {"x": 1}\r\n\r\nevent: e\ndata: y\n\ndata: [DONE]\n\npartial'
    for i in range(len(stream) + 1):
        decoder = SSEDecoder()
        events = decoder.feed(stream[:i]) + decoder.feed(stream[i:])
        assert b"".join(e.raw for e in events) + decoder.pending == stream


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_arbitrary_bytes_never_raise_and_lose_nothing(chunks: list[bytes]) -> None:
    decoder = SSEDecoder()
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    assert b"".join(e.raw for e in events) + decoder.pending == b"".join(chunks)


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_any_chunking_gives_the_same_events(stream: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=False)]
    assert dispatched(decode(*pieces)) == dispatched(decode(stream))


def test_a_long_unfinished_line_costs_time_linear_in_its_size() -> None:
    """A 16 MiB line fed 16 KiB at a time: copied and searched once, not once per chunk (8 GB)."""
    decoder = SSEDecoder()
    piece = b"x" * 16384
    cpu = time.process_time()
    decoder.feed(b"data: ")
    for _ in range(1024):
        assert decoder.feed(piece) == []
    events = decoder.feed(b"\n\n")
    cpu = time.process_time() - cpu
    assert len(events) == 1 and len(events[0].data) == 16 * 1024 * 1024
    assert cpu < 1.5, f"{cpu:.2f} s"
