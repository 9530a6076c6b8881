"""OpenAI Responses API (``Response`` and its stream events, ``event:`` + ``data:`` frames).

Rules, on top of the token rule in ``sim/common.py``:

* Input tokens = the words of ``instructions`` and ``input`` (a string, or items whose
  ``content``/``text`` and, for ``function_call_output`` items, ``output`` are counted) plus
  **3 per input item that has a ``role``**.
* Output as for chat (see ``sim/openai_chat.py``): ``reason`` models first produce
  ``output_tokens // 2`` reasoning tokens, sent as a reasoning summary; ``max_output_tokens``
  caps both; a cut answer ends ``status: incomplete``, ``incomplete_details.reason =
  "max_output_tokens"`` (``response.incomplete``). ``prompt_cache_key`` as for chat.
* ``tools`` make the answer a ``function_call`` of the first tool, by its ``name``.
* ``text.format`` is not honoured: a JSON-mode request gets the usual ``tok1 tok2 ...`` text.
* Model ``sim-refusal``: the message's one content part is ``{"type": "refusal", "refusal":
  ...}`` of at most ``FAULT_CHUNKS`` tokens (streamed as ``response.refusal.delta`` events, then
  ``response.refusal.done``); status ``completed``.
* Streams: ``response.created`` and ``response.in_progress`` at once, ``ttft``, then the output
  items with ``chunk_gap`` between token deltas, then ``response.completed`` (or
  ``.incomplete``) carrying the usage. ``sequence_number`` counts from 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llmobs.proxy.asgi import Send
from llmobs.sim.common import (
    FAULT_CHUNKS,
    Call,
    Plan,
    Stream,
    arg_pieces,
    dumps,
    make_plan,
    messages_tokens,
    new_id,
    send_json,
    service_tier,
    tokens,
    words,
)
from llmobs.sim.openai_chat import STREAM_ERROR


def responses_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of a Responses request: instructions + input words + 3 per message."""
    return words(body.get("instructions")) + messages_tokens(body.get("input"))


def responses_usage(p: Plan) -> dict[str, Any]:
    """The ``usage`` object of a Response."""
    usage: dict[str, Any] = {
        "input_tokens": p.prompt,
        "input_tokens_details": {"cached_tokens": p.cached, "cache_write_tokens": p.cache_write},
        "output_tokens": p.output,
        "output_tokens_details": {"reasoning_tokens": p.reasoning},
        "total_tokens": p.prompt + p.output,
    }
    if not p.report_reasoning:
        del usage["output_tokens_details"]
    return usage


class _Seq:
    """Responses stream event writer with its running sequence_number."""

    def __init__(self) -> None:
        self.n = 0

    def event(self, type_: str, **fields: Any) -> str:
        data = dumps({"type": type_, "sequence_number": self.n, **fields})
        self.n += 1
        return f"event: {type_}\ndata: {data}\n\n"

    def delta(self, type_: str, ids: str, delta: str) -> str:
        # Hot path: `ids` is the pre-encoded item_id/output_index(/content_index) part.
        frame = f'event: {type_}\ndata: {{"type":"{type_}","sequence_number":{self.n},{ids},"delta":"{delta}"'
        self.n += 1
        return frame + (',"logprobs":[]}\n\n' if type_ == "response.output_text.delta" else "}\n\n")


@dataclass(frozen=True)
class _ResponseItems:
    """The output items of one Responses call, in their final state."""

    reasoning: dict[str, Any] | None
    main: dict[str, Any]


def _response_items(p: Plan) -> _ResponseItems:
    status = "incomplete" if p.truncated else "completed"
    reasoning: dict[str, Any] | None = None
    if p.reasoning_field:
        summary = [{"type": "summary_text", "text": "".join(tokens(p.reasoning, "think"))}]
        reasoning = {"id": new_id("rs_"), "type": "reasoning", "summary": summary}
    main: dict[str, Any]
    if p.tool:
        main = {
            "id": new_id("fc_"),
            "type": "function_call",
            "status": status,
            "arguments": "".join(arg_pieces(p.content, p.truncated)),
            "call_id": new_id("call_"),
            "name": p.tool,
        }
    else:
        text = "".join(tokens(p.content))
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        if p.refusal:
            part = {"type": "refusal", "refusal": text}
        main = {
            "id": new_id("msg_"),
            "type": "message",
            "status": status,
            "content": [part],
            "role": "assistant",
        }
    return _ResponseItems(reasoning, main)


def _response_object(call: Call, rid: str, created: int, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    body = call.body
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": STREAM_ERROR["error"] | {"code": "server_error"} if status == "failed" else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": call.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": service_tier(call.body),
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _item_events(seq: _Seq, p: Plan, item: dict[str, Any], index: int) -> Iterator[tuple[str, bool]]:
    """Yield (frame, is_token) for one output item, from output_item.added to output_item.done."""
    kind, at = item["type"], {"item_id": item["id"], "output_index": index}
    ids = f'"item_id":"{item["id"]}","output_index":{index}'
    if kind == "reasoning":
        part = item["summary"][0]
        yield seq.event("response.output_item.added", output_index=index, item=item | {"summary": []}), False
        empty = part | {"text": ""}
        yield seq.event("response.reasoning_summary_part.added", **at, summary_index=0, part=empty), False
        for t in tokens(p.reasoning, "think"):
            yield seq.delta("response.reasoning_summary_text.delta", ids + ',"summary_index":0', t), True
        yield (
            seq.event("response.reasoning_summary_text.done", **at, summary_index=0, text=part["text"]),
            False,
        )
        yield seq.event("response.reasoning_summary_part.done", **at, summary_index=0, part=part), False
    elif kind == "function_call":
        added = item | {"arguments": "", "status": "in_progress"}
        yield seq.event("response.output_item.added", output_index=index, item=added), False
        for a in arg_pieces(p.content, p.truncated):
            yield seq.delta("response.function_call_arguments.delta", ids, dumps(a)[1:-1]), True
        yield seq.event("response.function_call_arguments.done", **at, arguments=item["arguments"]), False
    else:
        part = item["content"][0]
        added = item | {"status": "in_progress", "content": []}
        yield seq.event("response.output_item.added", output_index=index, item=added), False
        field = "refusal" if p.refusal else "text"
        empty = part | {field: ""}
        yield seq.event("response.content_part.added", **at, content_index=0, part=empty), False
        kind = "response.refusal" if p.refusal else "response.output_text"
        for t in tokens(p.content):
            yield seq.delta(kind + ".delta", ids + ',"content_index":0', t), True
        done = (
            {"content_index": 0, "refusal": part["refusal"]}
            if p.refusal
            else {"content_index": 0, "text": part["text"], "logprobs": []}
        )
        yield seq.event(kind + ".done", **at, **done), False
        yield seq.event("response.content_part.done", **at, content_index=0, part=part), False
    yield seq.event("response.output_item.done", output_index=index, item=item), False


def _all_item_events(seq: _Seq, p: Plan, output: list[dict[str, Any]]) -> Iterator[tuple[str, bool]]:
    for index, item in enumerate(output):
        yield from _item_events(seq, p, item, index)


async def responses(call: Call, send: Send, fault: str | None) -> None:
    """POST responses."""
    p = make_plan(call, responses_prompt_tokens(call.body), rich=True)
    call.charge(p.prompt, p.output)
    items = _response_items(p)
    output = [items.reasoning, items.main] if items.reasoning else [items.main]
    rid, created = new_id("resp_"), int(time.time())
    status = "incomplete" if p.truncated else "completed"
    usage = None if fault == "sim-no-usage" else responses_usage(p)
    if not call.stream:
        await asyncio.sleep(call.config.ttft)
        await send_json(send, 200, _response_object(call, rid, created, status, output, usage), call)
        return
    seq = _Seq()
    out = Stream(send, call)
    await out.start()
    started = _response_object(call, rid, created, "in_progress", [], None)
    out.add(seq.event("response.created", response=started))
    out.add(seq.event("response.in_progress", response=started))
    await out.pause(call.config.ttft)
    faulty = fault in ("sim-stream-error", "sim-reset")
    await out.play(_all_item_events(seq, p, output), call.config.chunk_gap, FAULT_CHUNKS if faulty else None)
    if faulty:
        if fault == "sim-reset":
            await out.reset()
        out.add(seq.event("response.failed", response=_response_object(call, rid, created, "failed", [], None)))
        await out.flush(more=False)
        return
    final = _response_object(call, rid, created, status, output, usage)
    out.add(seq.event(f"response.{status}", response=final))
    await out.flush(more=False)
