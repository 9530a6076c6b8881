"""A fast, deterministic simulated OpenAI-compatible upstream (raw ASGI, no framework).

Used by the demo, the end-to-end tests and the benchmarks. The wire format follows
openai-python's types (``ChatCompletionChunk``, ``Completion``, ``CreateEmbeddingResponse``,
the Responses API stream events).

Endpoints are matched by path suffix, so any prefix works:
POST ``chat/completions``, ``completions``, ``embeddings``, ``responses``; GET ``models``.

Token-count rule (deterministic, so tests can predict it):

* A *word* is an item of ``str.split()`` (whitespace-separated); an integer in a token
  array (``prompt``/``input`` given as token ids) counts as one token.
* Prompt tokens = the words of all text in the input: chat ``messages[].content``
  (a string or the ``text`` of its parts), legacy ``prompt``, embeddings ``input``,
  Responses ``instructions`` and ``input`` (a string, or items whose ``content``/``text``
  and, for ``function_call_output`` items, ``output`` are counted) -- plus **3 per
  message** (each chat message, and each Responses input item that has a ``role``).
  Tool definitions, tool-call arguments and message names are not counted.
* Output: ``SimConfig.output_tokens`` tokens per choice (header ``x-sim-output-tokens: N``
  overrides it), one token per stream chunk, token ``i`` being the text ``"tok{i} "``.
  Models whose name contains ``reason`` first produce ``output_tokens // 2`` reasoning
  tokens (``"think{i} "``); completion tokens count both. ``max_completion_tokens`` /
  ``max_tokens`` / ``max_output_tokens`` cap reasoning + answer together; when the cap
  cuts the output, the finish reason is ``length`` (Responses: status ``incomplete``,
  ``incomplete_details.reason = "max_output_tokens"``).
* A tool-calling answer (request has ``tools``) streams its arguments
  ``{"q": "tok1 tok2 ... "}`` in one piece per token.
* With ``n`` choices, usage counts every choice's output.
* ``prompt_cache_key`` reports ``prompt_tokens // 2`` cached tokens; a key starting with
  ``write`` reports that many ``cache_write_tokens`` instead (and 0 cached).

Timing: response headers are sent at once; streams wait ``ttft`` before the first chunk
(chat/legacy) or before the first output item (Responses, after ``response.created`` and
``response.in_progress``), then ``chunk_gap`` between token chunks. Frames that are due at
the same instant are written in one ASGI message. Non-stream responses wait ``ttft``.

Fault models (the request's ``model``; any other name works normally):

* ``sim-error-<4xx|5xx>``: that status with an OpenAI error body; ``sim-error-<status>-empty``:
  that status with an empty body.
* ``sim-stream-error``: a stream sends ``FAULT_CHUNKS`` token chunks, then
  ``data: {"error": {...}}`` and ends without ``[DONE]`` (Responses: ``response.failed``).
  Without ``stream`` it answers 500.
* ``sim-no-usage``: streams never carry usage (``include_usage`` ignored); non-stream bodies
  have no ``usage`` (Responses: ``"usage": null``).
* ``sim-reject-stream-options``: 400 (``param: "stream_options"``) whenever the body has
  ``stream_options``; otherwise normal.
* ``sim-hang``: reads the request and never answers, until the client goes away.
* ``sim-reset``: sends ``FAULT_CHUNKS`` token chunks (non-stream: half the body) and raises
  ``SimulatedReset``, so the server drops the connection mid-response.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import gzip
import json
import os
import re
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from llmobs.proxy.asgi import (
    ASGIApp,
    ClientGone,
    Receive,
    Scope,
    Send,
    lifespan,
    openai_error,
    read_body,
    wait_disconnect,
)

__all__ = ["ASGIApp", "SimConfig", "SimulatedReset", "create_app"]

SYSTEM_FINGERPRINT = "fp_llmobs_sim"
SERVICE_TIER = "default"
FAULT_CHUNKS = 3  # content chunks sent before a mid-stream fault
MODELS = ("sim-model", "sim-reasoning", "sim-reasoning-content", "sim-embedding")

_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream; charset=utf-8")
_NO_CACHE = (b"cache-control", b"no-cache")
_ERROR_MODEL = re.compile(r"sim-error-([45]\d\d)(-empty)?")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True)
class SimConfig:
    """Timing and size knobs of the simulated upstream."""

    ttft: float = 0.0
    chunk_gap: float = 0.0
    output_tokens: int = 20
    embedding_dims: int = 8


class SimulatedReset(Exception):
    """Raised after the response started so the server drops the connection (``sim-reset``)."""


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


# ---------------------------------------------------------------------------- counting


def _words(value: Any) -> int:
    """Prompt tokens in a piece of request content (see the module docstring)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        n = _words(value.get("text")) + _words(value.get("content"))
        if value.get("type") == "function_call_output":
            n += _words(value.get("output"))
        return n
    if isinstance(value, int) and not isinstance(value, bool):
        return 1
    return 0


def _messages_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return _words(messages)
    return sum(_words(m) + (3 if isinstance(m, dict) and "role" in m else 0) for m in messages)


def chat_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of a chat completions request: words + 3 per message."""
    messages = body.get("messages")
    return sum(3 + _words(m) for m in messages) if isinstance(messages, list) else 0


def responses_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of a Responses request: instructions + input words + 3 per message."""
    return _words(body.get("instructions")) + _messages_tokens(body.get("input"))


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class _Plan:
    """What one request will produce: counts per choice plus reporting switches."""

    prompt: int
    cached: int
    cache_write: int
    n: int
    reasoning: int  # reasoning tokens per choice
    content: int  # answer tokens (or tool argument pieces) per choice
    truncated: bool
    tool: str | None  # name of the function to call
    reasoning_field: str | None  # "reasoning_content" | "reasoning" | None
    report_reasoning: bool

    @property
    def output(self) -> int:
        return self.n * (self.reasoning + self.content)

    @property
    def chat_finish(self) -> str:
        return "length" if self.truncated else ("tool_calls" if self.tool else "stop")


def _int_field(body: dict[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _BadRequest(f"Invalid '{name}': expected an integer >= {minimum}, got {value!r}.", name)
    return value


def _tool_name(tools: Any) -> str | None:
    if not isinstance(tools, list) or not tools:
        return None
    first = tools[0] if isinstance(tools[0], dict) else {}
    fn = first.get("function")
    name = fn.get("name") if isinstance(fn, dict) else first.get("name")
    return name if isinstance(name, str) and name else "tool"


def _make_plan(call: _Call, prompt: int, *, rich: bool) -> _Plan:
    body = call.body
    outputs = call.output_tokens
    model = call.model
    reasons = rich and "reason" in model
    limit = None
    for field in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        limit = _int_field(body, field, 0)
        if limit is not None:
            break
    full_reasoning = outputs // 2 if reasons else 0
    budget = full_reasoning + outputs if limit is None else limit
    reasoning = min(full_reasoning, budget)
    content = min(outputs, budget - reasoning)
    key = body.get("prompt_cache_key")
    writes = isinstance(key, str) and key.startswith("write")
    cached = prompt // 2 if isinstance(key, str) and key and not writes else 0
    return _Plan(
        prompt=prompt,
        cached=cached,
        cache_write=prompt // 2 if writes else 0,
        n=(_int_field(body, "n", 1) or 1) if call.endpoint != "responses" else 1,
        reasoning=reasoning,
        content=content,
        truncated=reasoning + content < full_reasoning + outputs,
        tool=_tool_name(body.get("tools")) if rich else None,
        reasoning_field=(None if not reasons else "reasoning_content" if "reasoning-content" in model else "reasoning"),
        report_reasoning="noreasoncount" not in model,
    )


def _chat_usage(p: _Plan, *, details: bool = True) -> dict[str, Any]:
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


def _responses_usage(p: _Plan) -> dict[str, Any]:
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


@functools.lru_cache(maxsize=64)
def _tokens(count: int, word: str = "tok") -> tuple[str, ...]:
    """The output tokens ``"tok1 ", "tok2 ", ...`` (cached: the same few counts repeat)."""
    return tuple(f"{word}{i} " for i in range(1, count + 1))


def _arg_pieces(p: _Plan) -> list[str]:
    """Tool-call arguments, one piece per token; left unclosed when truncated."""
    pieces = list(_tokens(p.content))
    if not pieces:
        return [] if p.truncated else ["{}"]
    pieces[0] = '{"q": "' + pieces[0]
    if not p.truncated:
        pieces[-1] += '"}'
    return pieces


# ---------------------------------------------------------------------------- transport


@dataclass
class _Call:
    """One parsed request."""

    endpoint: str
    body: dict[str, Any]
    model: str
    stream: bool
    gzip: bool
    request_id: str
    output_tokens: int
    config: SimConfig


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def _accepts_gzip(value: bytes) -> bool:
    for item in value.decode("latin-1").lower().split(","):
        name, _, params = item.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


async def _send_bytes(
    send: Send, status: int, body: bytes, request_id: str, *, compress: bool, more: bool = False
) -> None:
    headers = [_JSON, (b"x-request-id", request_id.encode())]
    if compress and body:
        # Real providers compress JSON; the proxy must handle (and not double-decode) it.
        body = gzip.compress(body, compresslevel=1, mtime=0)
        headers.append((b"content-encoding", b"gzip"))
        headers.append((b"vary", b"Accept-Encoding"))
    if not body:
        headers = headers[1:]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if more:  # sim-reset on a non-stream: half a body, then the connection drops
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        raise SimulatedReset("sim-reset: connection dropped mid-body")
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_json(send: Send, status: int, obj: Any, call: _Call | None, request_id: str = "") -> None:
    rid = call.request_id if call else request_id or _new_id("req_")
    await _send_bytes(send, status, _dumps(obj).encode(), rid, compress=bool(call and call.gzip))


class _Stream:
    """Buffers SSE frames and writes them together at each pause, to keep sends few."""

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self._buf: list[str] = []
        self._request_id = request_id

    async def start(self) -> None:
        headers = [_SSE, _NO_CACHE, (b"x-request-id", self._request_id.encode())]
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})

    def add(self, frame: str) -> None:
        self._buf.append(frame)

    async def flush(self, more: bool = True) -> None:
        if self._buf or not more:
            body = "".join(self._buf).encode()
            self._buf.clear()
            await self._send({"type": "http.response.body", "body": body, "more_body": more})

    async def pause(self, seconds: float) -> None:
        if seconds > 0:
            await self.flush()
            await asyncio.sleep(seconds)

    async def reset(self) -> None:
        await self.flush()
        raise SimulatedReset("sim-reset: connection dropped mid-stream")


_STREAM_ERROR = openai_error("Simulated upstream failure mid-stream.", "server_error")


# ---------------------------------------------------------------------------- chat


def _chat_message(p: _Plan, index: int) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(_tokens(p.content))}
    if p.tool:
        msg["content"] = None
        if p.content or not p.truncated:
            fn = {"name": p.tool, "arguments": "".join(_arg_pieces(p))}
            msg["tool_calls"] = [{"id": _new_id("call_"), "type": "function", "function": fn}]
    msg["refusal"] = None
    msg["annotations"] = []
    if p.reasoning_field:
        msg[p.reasoning_field] = "".join(_tokens(p.reasoning, "think"))
    return {"index": index, "message": msg, "logprobs": None, "finish_reason": p.chat_finish}


async def _chat(call: _Call, send: Send, fault: str | None) -> None:
    p = _make_plan(call, chat_prompt_tokens(call.body), rich=True)
    created = int(time.time())
    cid = _new_id("chatcmpl-")
    if not call.stream:
        await asyncio.sleep(call.config.ttft)
        obj: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": call.model,
            "choices": [_chat_message(p, i) for i in range(p.n)],
            "service_tier": SERVICE_TIER,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        if fault != "sim-no-usage":
            obj["usage"] = _chat_usage(p)
        await _send_json(send, 200, obj, call)
        return
    with_usage = _include_usage(call.body) and fault != "sim-no-usage"
    base = (
        f'data: {{"id":"{cid}","object":"chat.completion.chunk","created":{created},'
        f'"model":{_dumps(call.model)},"service_tier":"{SERVICE_TIER}",'
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

    steps = [frame(f'{{"{p.reasoning_field}":"{t}"}}') for t in _tokens(p.reasoning, "think")]
    if p.tool:
        pieces = [
            frame(f'{{"tool_calls":[{{"index":0,"function":{{"arguments":{_dumps(a)}}}}}]}}') for a in _arg_pieces(p)
        ]
        if pieces:
            fn = {"name": p.tool, "arguments": ""}
            openings = (
                one(
                    i,
                    _dumps({"tool_calls": [{"index": 0, "id": _new_id("call_"), "type": "function", "function": fn}]}),
                )
                for i in range(p.n)
            )
            pieces[0] = "".join(openings) + pieces[0]  # the tool-call header is not a token: it rides with piece 1
        steps.extend(pieces)
    else:
        steps.extend(frame(f'{{"content":"{t}"}}') for t in _tokens(p.content))
    role = '{"role":"assistant","content":null}' if p.tool else '{"role":"assistant","content":""}'
    last = frame("{}", f'"{p.chat_finish}"')
    if with_usage:
        last += f'{base}"choices":[],"usage":{_dumps(_chat_usage(p))}}}\n\n'
    await _play(call, send, frame(role), steps, last, fault)


def _include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


async def _play(call: _Call, send: Send, first: str, steps: list[str], last: str, fault: str | None) -> None:
    """Write a chat/legacy SSE stream: ttft, first frame, one token step per chunk_gap, last frames, [DONE]."""
    out = _Stream(send, call.request_id)
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
        out.add(f"data: {_dumps(_STREAM_ERROR)}\n\n")
    else:
        out.add(last + "data: [DONE]\n\n")
    await out.flush(more=False)


# ---------------------------------------------------------------------------- legacy completions


async def _legacy(call: _Call, send: Send, fault: str | None) -> None:
    p = _make_plan(call, _words(call.body.get("prompt")), rich=False)
    finish = "length" if p.truncated else "stop"
    created = int(time.time())
    cid = _new_id("cmpl-")
    if not call.stream:
        await asyncio.sleep(call.config.ttft)
        text = "".join(_tokens(p.content))
        obj: dict[str, Any] = {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": call.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"text": text, "index": i, "logprobs": None, "finish_reason": finish} for i in range(p.n)],
        }
        if fault != "sim-no-usage":
            obj["usage"] = _chat_usage(p, details=False)
        await _send_json(send, 200, obj, call)
        return
    with_usage = _include_usage(call.body) and fault != "sim-no-usage"
    base = (
        f'data: {{"id":"{cid}","object":"text_completion","created":{created},'
        f'"model":{_dumps(call.model)},"system_fingerprint":"{SYSTEM_FINGERPRINT}",'
    )
    tail = ',"usage":null}\n\n' if with_usage else "}\n\n"

    def frame(text: str, finish: str = "null") -> str:
        return "".join(
            f'{base}"choices":[{{"text":"{text}","index":{i},"logprobs":null,"finish_reason":{finish}}}]{tail}'
            for i in range(p.n)
        )

    last = frame("", f'"{finish}"')
    if with_usage:
        last += f'{base}"choices":[],"usage":{_dumps(_chat_usage(p, details=False))}}}\n\n'
    await _play(call, send, "", [frame(t) for t in _tokens(p.content)], last, fault)


# ---------------------------------------------------------------------------- embeddings


def _vector(index: int, dims: int) -> list[float]:
    # Multiples of 1/64 are exact in float32, so "float" and "base64" decode to equal lists.
    return [((index * 7 + j * 13) % 64 - 32) / 64 for j in range(dims)]


def _base64_vector(values: list[float]) -> str:
    packed = array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def _embedding_inputs(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [value]  # a single token array
        if all(isinstance(v, str | list) for v in value):
            return value
    raise _BadRequest("'input' must be a string, a list of strings or a list of token arrays.", "input")


async def _embeddings(call: _Call, send: Send, fault: str | None) -> None:
    inputs = _embedding_inputs(call.body.get("input"))
    dims = _int_field(call.body, "dimensions", 1) or call.config.embedding_dims
    encoding = call.body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _BadRequest(
            f"Invalid 'encoding_format': expected 'float' or 'base64', got {encoding!r}.", "encoding_format"
        )
    await asyncio.sleep(call.config.ttft)
    data = []
    for i in range(len(inputs)):
        vec = _vector(i, dims)
        data.append(
            {
                "object": "embedding",
                "index": i,
                "embedding": _base64_vector(vec) if encoding == "base64" else vec,
            }
        )
    prompt = sum(_words(v) for v in inputs)
    obj: dict[str, Any] = {"object": "list", "data": data, "model": call.model}
    if fault != "sim-no-usage":
        obj["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
    await _send_json(send, 200, obj, call)


# ---------------------------------------------------------------------------- responses


class _Seq:
    """Responses stream event writer with its running sequence_number."""

    def __init__(self) -> None:
        self.n = 0

    def event(self, type_: str, **fields: Any) -> str:
        data = _dumps({"type": type_, "sequence_number": self.n, **fields})
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


def _response_items(p: _Plan) -> _ResponseItems:
    status = "incomplete" if p.truncated else "completed"
    reasoning: dict[str, Any] | None = None
    if p.reasoning_field:
        summary = [{"type": "summary_text", "text": "".join(_tokens(p.reasoning, "think"))}]
        reasoning = {"id": _new_id("rs_"), "type": "reasoning", "summary": summary}
    main: dict[str, Any]
    if p.tool:
        main = {
            "id": _new_id("fc_"),
            "type": "function_call",
            "status": status,
            "arguments": "".join(_arg_pieces(p)),
            "call_id": _new_id("call_"),
            "name": p.tool,
        }
    else:
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": "".join(_tokens(p.content))}
        main = {
            "id": _new_id("msg_"),
            "type": "message",
            "status": status,
            "content": [part],
            "role": "assistant",
        }
    return _ResponseItems(reasoning, main)


def _response_object(call: _Call, rid: str, created: int, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    body = call.body
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": _STREAM_ERROR["error"] | {"code": "server_error"} if status == "failed" else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": call.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": SERVICE_TIER,
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


def _item_events(seq: _Seq, p: _Plan, item: dict[str, Any], index: int) -> Iterator[tuple[str, bool]]:
    """Yield (frame, is_token) for one output item, from output_item.added to output_item.done."""
    kind, at = item["type"], {"item_id": item["id"], "output_index": index}
    ids = f'"item_id":"{item["id"]}","output_index":{index}'
    if kind == "reasoning":
        part = item["summary"][0]
        yield seq.event("response.output_item.added", output_index=index, item=item | {"summary": []}), False
        empty = part | {"text": ""}
        yield seq.event("response.reasoning_summary_part.added", **at, summary_index=0, part=empty), False
        for t in _tokens(p.reasoning, "think"):
            yield seq.delta("response.reasoning_summary_text.delta", ids + ',"summary_index":0', t), True
        yield (
            seq.event("response.reasoning_summary_text.done", **at, summary_index=0, text=part["text"]),
            False,
        )
        yield seq.event("response.reasoning_summary_part.done", **at, summary_index=0, part=part), False
    elif kind == "function_call":
        added = item | {"arguments": "", "status": "in_progress"}
        yield seq.event("response.output_item.added", output_index=index, item=added), False
        for a in _arg_pieces(p):
            yield seq.delta("response.function_call_arguments.delta", ids, _dumps(a)[1:-1]), True
        yield seq.event("response.function_call_arguments.done", **at, arguments=item["arguments"]), False
    else:
        part = item["content"][0]
        added = item | {"status": "in_progress", "content": []}
        yield seq.event("response.output_item.added", output_index=index, item=added), False
        empty = part | {"text": ""}
        yield seq.event("response.content_part.added", **at, content_index=0, part=empty), False
        for t in _tokens(p.content):
            yield seq.delta("response.output_text.delta", ids + ',"content_index":0', t), True
        done = {"content_index": 0, "text": part["text"], "logprobs": []}
        yield seq.event("response.output_text.done", **at, **done), False
        yield seq.event("response.content_part.done", **at, content_index=0, part=part), False
    yield seq.event("response.output_item.done", output_index=index, item=item), False


async def _responses(call: _Call, send: Send, fault: str | None) -> None:
    p = _make_plan(call, responses_prompt_tokens(call.body), rich=True)
    items = _response_items(p)
    output = [items.reasoning, items.main] if items.reasoning else [items.main]
    rid, created = _new_id("resp_"), int(time.time())
    status = "incomplete" if p.truncated else "completed"
    usage = None if fault == "sim-no-usage" else _responses_usage(p)
    if not call.stream:
        await asyncio.sleep(call.config.ttft)
        await _send_json(send, 200, _response_object(call, rid, created, status, output, usage), call)
        return
    seq = _Seq()
    out = _Stream(send, call.request_id)
    await out.start()
    started = _response_object(call, rid, created, "in_progress", [], None)
    out.add(seq.event("response.created", response=started))
    out.add(seq.event("response.in_progress", response=started))
    await out.pause(call.config.ttft)
    tokens = 0
    for index, item in enumerate(output):
        for frame, is_token in _item_events(seq, p, item, index):
            if is_token:
                if fault in ("sim-stream-error", "sim-reset") and tokens >= FAULT_CHUNKS:
                    await _responses_fault(out, seq, call, rid, created, fault)
                    return
                if tokens and call.config.chunk_gap > 0:
                    await out.pause(call.config.chunk_gap)
                tokens += 1
            out.add(frame)
    if fault in ("sim-stream-error", "sim-reset"):
        await _responses_fault(out, seq, call, rid, created, fault)
        return
    final = _response_object(call, rid, created, status, output, usage)
    out.add(seq.event(f"response.{status}", response=final))
    await out.flush(more=False)


async def _responses_fault(out: _Stream, seq: _Seq, call: _Call, rid: str, created: int, fault: str) -> None:
    if fault == "sim-reset":
        await out.reset()
    out.add(seq.event("response.failed", response=_response_object(call, rid, created, "failed", [], None)))
    await out.flush(more=False)


# ---------------------------------------------------------------------------- models


async def _models(call: _Call, send: Send, fault: str | None) -> None:
    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "llmobs-sim"} for m in MODELS]
    await _send_json(send, 200, {"object": "list", "data": data}, call)


# ---------------------------------------------------------------------------- the app


Handler = Callable[[_Call, Send, "str | None"], Awaitable[None]]


@dataclass(frozen=True)
class _Route:
    method: str
    handler: Handler


# Longest suffix first: "chat/completions" must win over "completions".
ROUTES: dict[str, _Route] = {
    "chat/completions": _Route("POST", _chat),
    "completions": _Route("POST", _legacy),
    "embeddings": _Route("POST", _embeddings),
    "responses": _Route("POST", _responses),
    "models": _Route("GET", _models),
}

_STREAM_FAULTS = ("sim-stream-error", "sim-no-usage", "sim-reset")
_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _match(path: str) -> str | None:
    path = path.rstrip("/")
    for suffix in ROUTES:
        if path == "/" + suffix or path.endswith("/" + suffix):
            return suffix
    return None


def _error_status(status: int) -> tuple[str, str | None]:
    return _ERROR_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))


def _stream_options_without_stream(call: _Call) -> bool:
    legacy_or_chat = call.endpoint in ("chat/completions", "completions")
    return legacy_or_chat and not call.stream and call.body.get("stream_options") is not None


class _SimApp:
    """The ASGI callable returned by create_app."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _new_id("req_")
        suffix = _match(scope["path"])
        route = ROUTES.get(suffix or "")
        if route is None or route.method != scope["method"]:
            message = f"Invalid URL ({scope['method']} {scope['path']})"
            await _send_json(send, 404, openai_error(message, "invalid_request_error"), None, request_id)
            return
        headers = dict(scope["headers"])
        gz = _accepts_gzip(headers.get(b"accept-encoding", b""))
        try:
            raw = await read_body(receive) if route.method == "POST" else b"{}"
        except ClientGone:
            return
        try:
            call = self._parse(suffix or "", raw, headers, gz, request_id)
            await self._dispatch(call, route, receive, send)
        except _BadRequest as exc:
            body = openai_error(exc.message, "invalid_request_error", exc.param)
            await _send_bytes(send, exc.status, _dumps(body).encode(), request_id, compress=gz)

    def _parse(self, endpoint: str, raw: bytes, headers: dict[bytes, bytes], gz: bool, request_id: str) -> _Call:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _BadRequest(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                "HTTP library correctly. The OpenAI API expects a JSON payload.)"
            )
        model = body.get("model", "" if endpoint == "models" else None)
        if not isinstance(model, str):
            raise _BadRequest("You must provide a model parameter.", "model")
        output_tokens = self.config.output_tokens
        override = headers.get(b"x-sim-output-tokens")
        if override is not None:
            if not override.strip().isdigit():
                raise _BadRequest(f"x-sim-output-tokens must be a non-negative integer, got {override.decode()!r}.")
            output_tokens = int(override)
        return _Call(endpoint, body, model, body.get("stream") is True, gz, request_id, output_tokens, self.config)

    async def _dispatch(self, call: _Call, route: _Route, receive: Receive, send: Send) -> None:
        model = call.model
        error = _ERROR_MODEL.fullmatch(model)
        if error:
            status = int(error.group(1))
            if error.group(2):
                await _send_bytes(send, status, b"", call.request_id, compress=False)
                return
            type_, code = _error_status(status)
            await _send_json(send, status, openai_error(f"Simulated upstream error {status}.", type_, None, code), call)
            return
        if model == "sim-hang":
            await wait_disconnect(receive)
            return
        if model == "sim-reject-stream-options" and "stream_options" in call.body:
            raise _BadRequest("Unrecognized request argument supplied: stream_options", "stream_options")
        if _stream_options_without_stream(call):
            # OpenAI rejects this; a proxy must only add include_usage to streams.
            raise _BadRequest(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"
            )
        fault = model if model in _STREAM_FAULTS else None
        if not call.stream and fault == "sim-stream-error":
            body = openai_error("Simulated upstream failure.", "server_error")
            await _send_json(send, 500, body, call)
        elif not call.stream and fault == "sim-reset":
            partial = _dumps({"id": call.request_id, "object": "partial", "choices": []}).encode()
            await _send_bytes(send, 200, partial, call.request_id, compress=False, more=True)
        else:
            await route.handler(call, send, fault)


def create_app(config: SimConfig = SimConfig()) -> ASGIApp:
    """Build the simulator as a raw ASGI 3 application (HTTP + lifespan)."""
    return _SimApp(config)
