"""OpenAI chat completions and legacy completions (``ChatCompletion(Chunk)``, ``Completion``).

Rules, on top of the token rule in ``sim/common.py``:

* Prompt tokens = the words of chat ``messages[].content`` (a string or the ``text`` of its
  parts) plus **3 per message**; legacy: the words of ``prompt``. Tool definitions, tool-call
  arguments and message names are not counted.
* Output: ``output_tokens`` per choice, one token per stream chunk. Models whose name contains
  ``reason`` first produce ``output_tokens // 2`` reasoning tokens (``delta.reasoning``, or
  ``delta.reasoning_content`` for names containing ``reasoning-content``); completion tokens
  count both, ``completion_tokens_details.reasoning_tokens`` the reasoning part (left out for
  names containing ``noreasoncount``). ``max_completion_tokens`` / ``max_tokens`` cap
  reasoning + answer together; when the cap cuts the output, the finish reason is ``length``.
* ``tools`` make the answer a call of the first tool (``finish_reason: tool_calls``).
* ``response_format`` is not honoured: a JSON-mode request gets the usual ``tok1 tok2 ...``
  text, which is not JSON (what llmobs counts as ``invalid_json``).
* Model ``sim-refusal``: the answer is a refusal, ``message.refusal`` (streamed as
  ``delta.refusal`` pieces) of at most ``FAULT_CHUNKS`` tokens, ``content`` null, no tool call,
  ``finish_reason: stop``.
* ``x-sim-output-tokens: 0`` gives an empty answer: ``content: ""`` (no content chunk).
* With ``n`` choices, usage counts every choice's output.
* ``prompt_cache_key`` reports ``prompt_tokens // 2`` cached tokens; a key starting with
  ``write`` reports that many ``cache_write_tokens`` instead (and 0 cached).
* Streams carry usage only with ``stream_options.include_usage``: one extra chunk with
  ``choices: []`` before ``data: [DONE]``, every other chunk then has ``"usage": null``.
* Timing: headers at once, ``ttft`` before the first chunk, ``chunk_gap`` between token chunks.
* Azure paths add the content filter results described in ``sim/azure.py``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from llmobs.proxy.asgi import Send, openai_error
from llmobs.sim import azure
from llmobs.sim.common import (
    FAULT_CHUNKS,
    SYSTEM_FINGERPRINT,
    Call,
    Plan,
    Stream,
    arg_pieces,
    dumps,
    make_plan,
    new_id,
    send_json,
    service_tier,
    tokens,
    words,
)

STREAM_ERROR = openai_error("Simulated upstream failure mid-stream.", "server_error")


def chat_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of a chat completions request: words + 3 per message."""
    messages = body.get("messages")
    return sum(3 + words(m) for m in messages) if isinstance(messages, list) else 0


def chat_usage(p: Plan, *, details: bool = True) -> dict[str, Any]:
    """The ``usage`` object of a chat (``details``) or legacy completion."""
    usage: dict[str, Any] = {
        "prompt_tokens": p.prompt,
        "completion_tokens": p.output,
        "total_tokens": p.prompt + p.output,
    }
    if details or p.cached or p.cache_write:
        prompt_details: dict[str, int] = {"cached_tokens": p.cached, "audio_tokens": 0}
        if p.cache_write:
            prompt_details["cache_write_tokens"] = p.cache_write
        usage["prompt_tokens_details"] = prompt_details
    if details and p.report_reasoning:
        usage["completion_tokens_details"] = {
            "reasoning_tokens": p.n * p.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def _chat_message(p: Plan, index: int) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(tokens(p.content))}
    if p.tool:
        msg["content"] = None
        if p.content or not p.truncated:
            fn = {"name": p.tool, "arguments": "".join(arg_pieces(p.content, p.truncated))}
            msg["tool_calls"] = [{"id": new_id("call_"), "type": "function", "function": fn}]
    msg["refusal"] = None
    if p.refusal:
        msg["content"], msg["refusal"] = None, msg["content"]
    msg["annotations"] = []
    if p.reasoning_field:
        msg[p.reasoning_field] = "".join(tokens(p.reasoning, "think"))
    return {"index": index, "message": msg, "logprobs": None, "finish_reason": p.chat_finish}


async def chat(call: Call, send: Send, fault: str | None) -> None:
    """POST chat/completions."""
    p = make_plan(call, chat_prompt_tokens(call.body), rich=True)
    call.charge(p.prompt, p.output)
    created = int(time.time())
    cid = new_id("chatcmpl-")
    if not call.stream:
        await asyncio.sleep(call.config.ttft)
        obj: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": call.model,
            "choices": [_chat_message(p, i) for i in range(p.n)],
            "service_tier": service_tier(call.body),
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        if call.azure:
            obj["prompt_filter_results"] = azure.prompt_filter_results()
            for choice in obj["choices"]:
                choice["content_filter_results"] = azure.FILTER_RESULTS
        if fault != "sim-no-usage":
            obj["usage"] = chat_usage(p)
        await send_json(send, 200, obj, call)
        return
    with_usage = include_usage(call.body) and fault != "sim-no-usage"
    base = (
        f'data: {{"id":"{cid}","object":"chat.completion.chunk","created":{created},'
        f'"model":{dumps(call.model)},"service_tier":"{service_tier(call.body)}",'
        f'"system_fingerprint":"{SYSTEM_FINGERPRINT}",'
    )
    head = base + '"choices":['

    tail = ',"usage":null}\n\n' if with_usage else "}\n\n"

    def one(i: int, delta: str, finish: str = "null") -> str:
        return f'{head}{{"index":{i},"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]{tail}'

    def frame(delta: str, finish: str = "null") -> str:
        # Like OpenAI, each chunk carries one choice; the n choices of a step go out together.
        if p.n == 1:
            return f'{head}{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]{tail}'
        return "".join(one(i, delta, finish) for i in range(p.n))

    steps = [frame(f'{{"{p.reasoning_field}":"{t}"}}') for t in tokens(p.reasoning, "think")]
    if p.tool:
        pieces = [
            frame(f'{{"tool_calls":[{{"index":0,"function":{{"arguments":{dumps(a)}}}}}]}}')
            for a in arg_pieces(p.content, p.truncated)
        ]
        if pieces:
            fn = {"name": p.tool, "arguments": ""}
            openings = (
                one(
                    i,
                    dumps({"tool_calls": [{"index": 0, "id": new_id("call_"), "type": "function", "function": fn}]}),
                )
                for i in range(p.n)
            )
            pieces[0] = "".join(openings) + pieces[0]  # the tool-call header is not a token: it rides with piece 1
        steps.extend(pieces)
    else:
        field = "refusal" if p.refusal else "content"
        steps.extend(frame(f'{{"{field}":"{t}"}}') for t in tokens(p.content))
    role = '{"role":"assistant","content":null}' if p.tool or p.refusal else '{"role":"assistant","content":""}'
    last = frame("{}", f'"{p.chat_finish}"')
    if with_usage:
        last += f'{base}"choices":[],"usage":{dumps(chat_usage(p))}}}\n\n'
    first = frame(role)
    if call.azure:  # Azure's first chunk: the prompt's filter results, no choices, empty id and model
        prelude = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": azure.prompt_filter_results(),
        }
        first = f"data: {dumps(prelude)}\n\n" + first
    await _play(call, send, first, steps, last, fault)


def include_usage(body: dict[str, Any]) -> bool:
    """Whether a stream request asked for the usage chunk."""
    opts = body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


async def _play(call: Call, send: Send, first: str, steps: list[str], last: str, fault: str | None) -> None:
    """Write a chat/legacy SSE stream: ttft, first frame, one token step per chunk_gap, last frames, [DONE]."""
    out = Stream(send, call)
    await out.start()
    await out.pause(call.config.ttft)
    out.add(first)
    if fault in ("sim-stream-error", "sim-reset"):
        steps = steps[:FAULT_CHUNKS]
    gap = call.config.chunk_gap
    if gap > 0:
        for k, step in enumerate(steps):
            if k:
                await out.pause(gap)
            out.add(step)
    else:
        out.add("".join(steps))
    if fault == "sim-reset":
        await out.reset()
    if fault == "sim-stream-error":
        out.add(f"data: {dumps(STREAM_ERROR)}\n\n")
    else:
        out.add(last + "data: [DONE]\n\n")
    await out.flush(more=False)


async def legacy(call: Call, send: Send, fault: str | None) -> None:
    """POST completions (legacy text completions)."""
    p = make_plan(call, words(call.body.get("prompt")), rich=False)
    call.charge(p.prompt, p.output)
    finish = "length" if p.truncated else "stop"
    created = int(time.time())
    cid = new_id("cmpl-")
    if not call.stream:
        await asyncio.sleep(call.config.ttft)
        text = "".join(tokens(p.content))
        obj: dict[str, Any] = {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": call.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"text": text, "index": i, "logprobs": None, "finish_reason": finish} for i in range(p.n)],
        }
        if fault != "sim-no-usage":
            obj["usage"] = chat_usage(p, details=False)
        await send_json(send, 200, obj, call)
        return
    with_usage = include_usage(call.body) and fault != "sim-no-usage"
    base = (
        f'data: {{"id":"{cid}","object":"text_completion","created":{created},'
        f'"model":{dumps(call.model)},"system_fingerprint":"{SYSTEM_FINGERPRINT}",'
    )
    tail = ',"usage":null}\n\n' if with_usage else "}\n\n"

    def frame(text: str, finish: str = "null") -> str:
        return "".join(
            f'{base}"choices":[{{"text":"{text}","index":{i},"logprobs":null,"finish_reason":{finish}}}]{tail}'
            for i in range(p.n)
        )

    last = frame("", f'"{finish}"')
    if with_usage:
        last += f'{base}"choices":[],"usage":{dumps(chat_usage(p, details=False))}}}\n\n'
    await _play(call, send, "", [frame(t) for t in tokens(p.content)], last, fault)
