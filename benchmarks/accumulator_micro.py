"""Micro-benchmark of the accounting hot path: one plain 200-chunk chat stream through ChatAccumulator.

    PYTHONPATH=src python benchmarks/accumulator_micro.py [--repeat 7] [--number 2000]

Feeds the SSE events of a stream as OpenAI sends it (role chunk, 200 content chunks, the
finish chunk, the usage chunk, [DONE]) into a fresh accumulator and finishes it; prints the
best-of-`repeat` time per stream and per chunk, with the per-chunk instants off (no OTel
meter provider) and on. Pure CPU: no sockets, no clock but the timer's.
"""

from __future__ import annotations

import argparse
import dataclasses
import timeit

from llmobs.apis.openai_chat import ChatAccumulator
from llmobs.records import Outcome, RequestInfo
from llmobs.sse import Event

CHUNKS = 200
_HEAD = (
    b'{"id":"chatcmpl-abc123","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
    b'"service_tier":"default","system_fingerprint":"fp_1234","choices":['
)


def _frame(delta: bytes, finish: bytes = b"null") -> Event:
    body = _HEAD + b'{"index":0,"delta":' + delta + b',"logprobs":null,"finish_reason":' + finish + b"}]"
    return Event(body + b',"usage":null}')


def stream() -> list[Event]:
    """The events of one plain chat stream with include_usage."""
    events = [_frame(b'{"role":"assistant","content":""}')]
    events += [_frame(b'{"content":"tok%d "}' % i) for i in range(CHUNKS)]
    events.append(_frame(b"{}", b'"stop"'))
    usage = b'"usage":{"prompt_tokens":7,"completion_tokens":200,"total_tokens":207}}'
    events.append(Event(_HEAD[: _HEAD.index(b'"choices"')] + b'"choices":[],' + usage))
    events.append(Event(b"[DONE]"))
    return events


def run(info: RequestInfo, events: list[Event]) -> None:
    acc = ChatAccumulator(info, 0.0)
    now = 0.0
    for event in events:
        now += 0.001
        acc.on_event(event, now)
    acc.finish(Outcome.COMPLETED, 200, now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    events = stream()
    info = RequestInfo(endpoint="chat_completions", operation="chat", model="gpt-4o-mini", stream=True)
    variants = {"plain": info, "chunk instants on": dataclasses.replace(info, chunk_times=True)}
    for name, variant in variants.items():
        best = min(timeit.repeat(lambda v=variant: run(v, events), repeat=args.repeat, number=args.number))
        per_stream = best / args.number
        per_event = per_stream / len(events)
        print(f"{name:>18}: {per_stream * 1e6:8.1f} us per {CHUNKS}-chunk stream, {per_event * 1e9:6.0f} ns per event")


if __name__ == "__main__":
    main()
