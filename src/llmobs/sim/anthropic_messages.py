"""Anthropic Messages API: ``POST /v1/messages`` (streamed and not), ``count_tokens``, message batches.

Rules, on top of the token rule in ``sim/common.py``:

* Total input = the words of ``system`` (a string or text blocks) + the words of every
  message's ``content`` (a string, or blocks: ``text``, ``tool_result`` content; ``tool_use``
  input, images and thinking blocks count 0) + **3 per message**. Tool definitions are not
  counted. ``count_tokens`` answers ``{"input_tokens": total}``.
* Cache: each block (in ``system`` or a message's content) that has ``cache_control`` puts its
  own words in the cache. By default they are cache *writes*: ``cache_creation_input_tokens``,
  split in ``cache_creation`` into ``ephemeral_1h_input_tokens`` (``"ttl": "1h"``) and
  ``ephemeral_5m_input_tokens`` (otherwise). With the request header ``x-sim-cache: read`` they
  are ``cache_read_input_tokens`` instead. ``usage.input_tokens`` is the total **minus** cache
  reads and writes, as Anthropic reports it.
* Output: ``output_tokens`` (config, or ``x-sim-output-tokens``). ``thinking: {"type":
  "enabled", "budget_tokens": B}`` (B >= 1024 and < ``max_tokens``, else 400) or ``{"type":
  "adaptive"}`` first produces ``min(output_tokens // 2, B)`` thinking tokens (``"think{i} "``),
  a ``thinking`` block whose ``signature`` comes last as a ``signature_delta``; usage then also
  has ``output_tokens_details.thinking_tokens``. ``max_tokens`` (required) caps thinking +
  answer; a cut answer stops with ``max_tokens``.
* ``tools`` (unless ``tool_choice`` is ``none``) make the answer one ``tool_use`` block calling
  ``tool_choice.name`` or the first tool, its input ``{"q": "tok1 ... "}`` streamed as
  ``input_json_delta`` pieces (after an empty first piece, as the API sends), one per token;
  ``stop_reason: tool_use``.
* ``stop_sequences``: the text stops before the first token at which the text so far contains
  one of them; ``stop_reason: stop_sequence`` and ``stop_sequence`` names it.
* Model ``sim-pause-turn``: ``stop_reason: pause_turn``. Model ``sim-refusal``: at most
  ``FAULT_CHUNKS`` text tokens, then ``stop_reason: refusal`` with ``stop_details``. Otherwise
  ``end_turn``. ``output_tokens`` = thinking + answer tokens (tool pieces count as tokens).
* Stream: ``message_start`` at once (its usage has the input side and ``output_tokens: 1``, as
  the API sends), ``ttft``, then per block ``content_block_start``, deltas (``chunk_gap`` between
  tokens), ``content_block_stop``, with one ``ping`` after the first block start; then
  ``message_delta`` (``stop_reason``, ``stop_sequence``; cumulative usage: ``input_tokens``,
  ``cache_creation_input_tokens``, ``cache_read_input_tokens``, ``output_tokens``) and
  ``message_stop``. Every frame is ``event: <type>`` + ``data: <json>``.
* Batches: ``POST /v1/messages/batches`` answers ``processing_status: in_progress``; from then
  on the batch has ended (every retrieve or list shows ``ended``, its requests ``succeeded``
  or, when their params are invalid, ``errored``), and ``results_url`` serves JSONL results
  whose messages follow the rules above.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from llmobs.proxy.asgi import Send
from llmobs.sim.common import (
    FAULT_CHUNKS,
    BadRequest,
    Call,
    Stream,
    arg_pieces,
    dumps,
    int_field,
    messages_tokens,
    new_id,
    send_bytes,
    send_json,
    tokens,
    tool_name,
    words,
)

SERVICE_TIER = "standard"
MIN_THINKING_BUDGET = 1024
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STREAM_FAULTS = {"sim-stream-error": "api_error", "sim-reset": "api_error", "sim-overloaded": "overloaded_error"}
_FAULT_MESSAGES = {"api_error": "Internal server error", "overloaded_error": "Overloaded"}


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str, request_id: str) -> dict[str, Any]:
    """An error in Anthropic's shape: ``{"type": "error", "error": {type, message}, "request_id"}``."""
    return {"type": "error", "error": {"type": error_type(status), "message": message}, "request_id": request_id}


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Prompt:
    """The input side of one request."""

    total: int
    cache_read: int
    cache_5m: int
    cache_1h: int

    @property
    def cache_write(self) -> int:
        return self.cache_5m + self.cache_1h

    @property
    def uncached(self) -> int:
        return self.total - self.cache_read - self.cache_write


def _marked_blocks(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    system = body.get("system")
    if isinstance(system, list):
        yield from (b for b in system if isinstance(b, dict))
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            yield from (b for b in content if isinstance(b, dict))


def prompt_of(body: dict[str, Any], cache_read: bool) -> Prompt:
    """Apply the input and cache rules (module docstring) to a request body."""
    total = words(body.get("system")) + messages_tokens(body.get("messages"))
    read = five = hour = 0
    for block in _marked_blocks(body):
        control = block.get("cache_control")
        if not isinstance(control, dict):
            continue
        n = words(block)
        if cache_read:
            read += n
        elif control.get("ttl") == "1h":
            hour += n
        else:
            five += n
    return Prompt(total, read, five, hour)


@dataclass(frozen=True)
class Turn:
    """What one Messages request produces."""

    prompt: Prompt
    thinking_on: bool
    thinking: int
    content: int  # text tokens, or tool-input pieces
    truncated: bool
    tool: str | None
    stop_reason: str
    stop_sequence: str | None
    speed: str | None = None  # "fast" or "standard" when the request chose one: reported in usage

    @property
    def output(self) -> int:
        return self.thinking + self.content


def _thinking_budget(body: dict[str, Any], max_tokens: int) -> tuple[bool, int | None]:
    thinking = body.get("thinking")
    if thinking is None:
        return False, None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return False, None
    if kind == "adaptive":
        return True, None
    if kind != "enabled" or not isinstance(thinking, dict):
        raise BadRequest(
            "thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'"
        )
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < MIN_THINKING_BUDGET:
        raise BadRequest(
            f"thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_THINKING_BUDGET}"
        )
    if budget >= max_tokens:
        raise BadRequest("`max_tokens` must be greater than `thinking.budget_tokens`.")
    return True, budget


def _called_tool(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    choice = choice if isinstance(choice, dict) else {}
    if not tools or choice.get("type") == "none":
        return None
    name = choice.get("name")
    if choice.get("type") == "tool" and isinstance(name, str) and name:
        return name
    return tool_name(tools)


def _stop_at(content: int, body: dict[str, Any]) -> tuple[int, str | None]:
    sequences = [s for s in body.get("stop_sequences") or [] if isinstance(s, str) and s]
    text = ""
    for i, token in enumerate(tokens(content), 1):
        text += token
        hit = next((s for s in sequences if s in text), None)
        if hit is not None:
            return i - 1, hit
    return content, None


def make_turn(body: dict[str, Any], model: str, output_tokens: int, cache_read: bool) -> Turn:
    """Apply the output rules (module docstring) to a validated request body."""
    if not isinstance(body.get("messages"), list):
        raise BadRequest("messages: Field required")
    max_tokens = int_field(body, "max_tokens", 1)
    if max_tokens is None:
        raise BadRequest("max_tokens: Field required")
    thinking_on, budget = _thinking_budget(body, max_tokens)
    refusal = model == "sim-refusal"
    full_thinking = min(output_tokens // 2, budget or output_tokens) if thinking_on else 0
    full_content = min(output_tokens, FAULT_CHUNKS) if refusal else output_tokens
    thinking = min(full_thinking, max_tokens)
    content = min(full_content, max_tokens - thinking)
    truncated = thinking + content < full_thinking + full_content
    tool = None if refusal else _called_tool(body)
    stop_sequence = None
    if tool is None:
        content, stop_sequence = _stop_at(content, body)
    if stop_sequence is not None:
        reason, truncated = "stop_sequence", False
    elif refusal:
        reason = "refusal"
    elif truncated:
        reason = "max_tokens"
    elif tool:
        reason = "tool_use"
    elif model == "sim-pause-turn":
        reason = "pause_turn"
    else:
        reason = "end_turn"
    prompt = prompt_of(body, cache_read)
    speed = body.get("speed") if body.get("speed") in ("standard", "fast") else None
    return Turn(prompt, thinking_on, thinking, content, truncated, tool, reason, stop_sequence, speed)


# ---------------------------------------------------------------------------- shapes


def _signature(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _tool_input(t: Turn) -> dict[str, Any]:
    if not t.truncated:
        parsed: dict[str, Any] = json.loads("".join(arg_pieces(t.content, False)))
        return parsed
    return {"q": "".join(tokens(t.content))} if t.content else {}


def content_blocks(t: Turn) -> list[dict[str, Any]]:
    """The final content blocks of a turn."""
    blocks: list[dict[str, Any]] = []
    if t.thinking_on and t.thinking:
        text = "".join(tokens(t.thinking, "think"))
        blocks.append({"type": "thinking", "thinking": text, "signature": _signature(text)})
    if t.tool:
        blocks.append({"type": "tool_use", "id": new_id("toolu_"), "name": t.tool, "input": _tool_input(t)})
    else:
        blocks.append({"type": "text", "text": "".join(tokens(t.content))})
    return blocks


def usage(t: Turn, output_tokens: int, *, final: bool) -> dict[str, Any]:
    """A message's ``usage`` (``final``: with the thinking details, else as in ``message_start``)."""
    p = t.prompt
    out: dict[str, Any] = {
        "input_tokens": p.uncached,
        "cache_creation_input_tokens": p.cache_write,
        "cache_read_input_tokens": p.cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": p.cache_5m, "ephemeral_1h_input_tokens": p.cache_1h},
        "output_tokens": output_tokens,
        "service_tier": SERVICE_TIER,
    }
    if t.speed is not None:
        out["speed"] = t.speed
    if final and t.thinking_on:
        out["output_tokens_details"] = {"thinking_tokens": t.thinking}
    return out


def _delta_usage(t: Turn) -> dict[str, Any]:
    p = t.prompt
    out: dict[str, Any] = {
        "input_tokens": p.uncached,
        "cache_creation_input_tokens": p.cache_write,
        "cache_read_input_tokens": p.cache_read,
        "output_tokens": t.output,
    }
    if t.thinking_on:
        out["output_tokens_details"] = {"thinking_tokens": t.thinking}
    return out


_REFUSAL = {"type": "refusal", "category": None, "explanation": None}


def message(model: str, mid: str, t: Turn, content: list[dict[str, Any]], *, done: bool) -> dict[str, Any]:
    """The message object: final (``done``) or as ``message_start`` carries it."""
    obj: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": t.stop_reason if done else None,
        "stop_sequence": t.stop_sequence if done else None,
        "usage": usage(t, t.output if done else 1, final=done),
    }
    if done and t.stop_reason == "refusal":
        obj["stop_details"] = _REFUSAL
    return obj


# ---------------------------------------------------------------------------- streaming


def _event(type_: str, **fields: Any) -> str:
    return f"event: {type_}\ndata: {dumps({'type': type_, **fields})}\n\n"


def _block_events(t: Turn, blocks: list[dict[str, Any]]) -> Iterator[tuple[str, bool]]:
    """(frame, is_token) for every content block, from content_block_start to content_block_stop."""
    for index, block in enumerate(blocks):
        kind = block["type"]
        empty = {
            "text": {"type": "text", "text": ""},
            "thinking": {"type": "thinking", "thinking": "", "signature": ""},
        }
        start = empty.get(kind, block | {"input": {}})
        yield _event("content_block_start", index=index, content_block=start), False
        if index == 0:
            yield _event("ping"), False
        if kind == "thinking":
            for token in tokens(t.thinking, "think"):
                yield (
                    _event("content_block_delta", index=index, delta={"type": "thinking_delta", "thinking": token}),
                    True,
                )
            signature = {"type": "signature_delta", "signature": block["signature"]}
            yield _event("content_block_delta", index=index, delta=signature), False
        elif kind == "tool_use":
            yield (
                _event("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": ""}),
                False,
            )
            for piece in arg_pieces(t.content, t.truncated):
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield _event("content_block_delta", index=index, delta=delta), True
        else:
            for token in tokens(t.content):
                yield _event("content_block_delta", index=index, delta={"type": "text_delta", "text": token}), True
        yield _event("content_block_stop", index=index), False


async def messages(call: Call, send: Send, fault: str | None) -> None:
    """POST /v1/messages."""
    t = make_turn(call.body, call.model, call.output_tokens, call.headers.get(b"x-sim-cache") == b"read")
    call.charge(t.prompt.uncached + t.prompt.cache_write, t.output)
    mid = new_id("msg_")
    blocks = content_blocks(t)
    if not call.stream:
        await asyncio.sleep(call.config.ttft)
        await send_json(send, 200, message(call.model, mid, t, blocks, done=True), call)
        return
    out = Stream(send, call)
    await out.start()
    out.add(_event("message_start", message=message(call.model, mid, t, [], done=False)))
    await out.pause(call.config.ttft)
    error = _STREAM_FAULTS.get(fault or "")
    await out.play(_block_events(t, blocks), call.config.chunk_gap, FAULT_CHUNKS if error else None)
    if error:
        if fault == "sim-reset":
            await out.reset()
        out.add(_event("error", error={"type": error, "message": _FAULT_MESSAGES[error]}))
        await out.flush(more=False)
        return
    delta: dict[str, Any] = {"stop_reason": t.stop_reason, "stop_sequence": t.stop_sequence}
    if t.stop_reason == "refusal":
        delta["stop_details"] = _REFUSAL
    out.add(_event("message_delta", delta=delta, usage=_delta_usage(t)))
    out.add(_event("message_stop"))
    await out.flush(more=False)


async def count_tokens(call: Call, send: Send, fault: str | None) -> None:
    """POST /v1/messages/count_tokens."""
    if not isinstance(call.body.get("messages"), list):
        raise BadRequest("messages: Field required")
    total = prompt_of(call.body, cache_read=False).total
    await send_json(send, 200, {"input_tokens": total}, call)


# ---------------------------------------------------------------------------- batches


def _rfc3339(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _batch_result(request: Any, output_tokens: int) -> dict[str, Any]:
    custom_id = request.get("custom_id") if isinstance(request, dict) else None
    params = request.get("params") if isinstance(request, dict) else None
    try:
        if not isinstance(custom_id, str) or not isinstance(params, dict):
            raise BadRequest("requests: each request needs a custom_id and params")
        model = params.get("model")
        if not isinstance(model, str):
            raise BadRequest("model: Field required")
        t = make_turn(params, model, output_tokens, cache_read=False)
    except BadRequest as exc:
        error = {"type": "error", "error": {"type": "invalid_request_error", "message": exc.message}}
        return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}
    done = message(model, new_id("msg_"), t, content_blocks(t), done=True)
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": done}}


def _batches(call: Call) -> dict[str, dict[str, Any]]:
    store: dict[str, dict[str, Any]] = call.store.setdefault("anthropic_batches", {})
    return store


def _batch_object(batch: dict[str, Any], base_url: str, *, ended: bool) -> dict[str, Any]:
    results = batch["results"]
    errored = sum(1 for r in results if r["result"]["type"] == "errored")
    created: datetime = batch["created_at"]
    counts = {
        "processing": 0 if ended else len(results),
        "succeeded": len(results) - errored if ended else 0,
        "errored": errored if ended else 0,
        "canceled": 0,
        "expired": 0,
    }
    return {
        "id": batch["id"],
        "type": "message_batch",
        "processing_status": "ended" if ended else "in_progress",
        "request_counts": counts,
        "ended_at": _rfc3339(created) if ended else None,
        "created_at": _rfc3339(created),
        "expires_at": _rfc3339(created + timedelta(hours=24)),
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": f"{base_url}/v1/messages/batches/{batch['id']}/results" if ended else None,
    }


async def create_batch(call: Call, send: Send, fault: str | None) -> None:
    """POST /v1/messages/batches."""
    requests = call.body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise BadRequest("requests: Field required")
    batch_id = new_id("msgbatch_")
    batch = {
        "id": batch_id,
        "created_at": datetime.now(UTC),
        "results": [_batch_result(r, call.config.output_tokens) for r in requests],
    }
    _batches(call)[batch_id] = batch
    await send_json(send, 200, _batch_object(batch, call.base_url, ended=False), call)


def _find(call: Call) -> dict[str, Any]:
    batch = _batches(call).get(call.params.get("batch_id", ""))
    if batch is None:
        raise BadRequest(f"message_batch: {call.params.get('batch_id')} not found", status=404)
    return batch


async def retrieve_batch(call: Call, send: Send, fault: str | None) -> None:
    """GET /v1/messages/batches/{id}."""
    await send_json(send, 200, _batch_object(_find(call), call.base_url, ended=True), call)


async def list_batches(call: Call, send: Send, fault: str | None) -> None:
    """GET /v1/messages/batches (newest first, one page)."""
    data = [_batch_object(b, call.base_url, ended=True) for b in reversed(_batches(call).values())]
    page = {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
    await send_json(send, 200, page, call)


async def batch_results(call: Call, send: Send, fault: str | None) -> None:
    """GET /v1/messages/batches/{id}/results: one JSON line per request."""
    lines = "".join(dumps(r) + "\n" for r in _find(call)["results"]).encode()
    content_type = (b"content-type", b"application/x-jsonl")
    await send_bytes(send, 200, lines, call.reply_headers(), compress=call.gzip, content_type=content_type)
