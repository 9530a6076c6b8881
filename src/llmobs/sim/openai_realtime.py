"""OpenAI Realtime over WebSocket (``GET .../realtime?model=...``), with the GA event names.

Handshake: the ``model`` query parameter (Azure: ``deployment``, whose model comes from the
table in ``sim/azure.py``) is required, else the upgrade is refused with HTTP 400 and an
OpenAI error body; ``sim-error-<status>`` refuses with that status. The subprotocol
``realtime`` is selected when offered (browsers also offer ``openai-insecure-api-key.<key>``,
which is accepted and not checked). The first event is
``session.created``; the session's defaults are ``output_modalities: ["audio"]``, empty
``instructions``, ``max_output_tokens: "inf"`` and no turn detection: responses are made only
on ``response.create``.

Client event -> server events:

* ``session.update`` -> ``session.updated`` (fields merged; ``session.type`` is required).
* ``conversation.item.create`` -> ``conversation.item.added``, ``conversation.item.done``
  (GA; the beta's ``conversation.item.created`` is not sent).
* ``input_audio_buffer.append`` -> nothing; ``.commit`` -> ``input_audio_buffer.committed``,
  then the new user audio item's ``conversation.item.added`` / ``.done`` (an empty buffer is an
  ``error``); ``.clear`` -> ``input_audio_buffer.cleared``.
* ``response.create`` -> ``response.created``, ``rate_limits.updated`` (documented as sent "at
  the beginning of a Response"), ``response.output_item.added``,
  ``conversation.item.added``, ``response.content_part.added``, per token either
  ``response.output_text.delta`` or ``response.output_audio_transcript.delta`` +
  ``response.output_audio.delta``, the matching ``.done`` events,
  ``response.content_part.done``, ``response.output_item.done``, ``conversation.item.done``,
  ``response.done`` (with ``usage``). ``ttft`` before the first delta,
  ``chunk_gap`` between tokens. ``response.conversation: "none"`` keeps the output out of the
  conversation.
* ``response.cancel`` -> ``error`` ``response_cancel_not_active`` (a response is finished
  before the next client event is read). Unknown types and bad JSON -> ``error``.
* ``sim.close`` ``{"code": 4001, "reason": "..."}`` -> the server closes with that code.
* A binary frame is echoed back unchanged. Pings are answered by the server library.

Token rule, per response (``AUDIO_BYTES_PER_TOKEN`` = 4800, i.e. 100 ms of 24 kHz PCM16):

* Input text tokens = words of the instructions (session, or the response's own) + words of
  the text of every conversation item (``input_text``/``text``/``output_text`` parts, audio
  transcripts of earlier answers, ``function_call_output`` output). Input audio tokens =
  ``len(audio bytes) // AUDIO_BYTES_PER_TOKEN`` per committed buffer or ``input_audio`` part,
  plus the audio tokens of earlier answers. ``input_tokens`` = both.
* ``cached_tokens`` = the previous response's ``input_tokens`` (the prefix it already saw),
  split in ``cached_tokens_details`` like it; 0 for the first response.
* Output: N = ``output_tokens`` (config, or ``x-sim-output-tokens`` on the upgrade request).
  Text modality: N text tokens ``"tok{i} "``. Audio modality: N transcript tokens and N audio
  tokens (one ``output_audio.delta`` of ``AUDIO_BYTES_PER_TOKEN`` zero bytes each), so
  ``output_tokens`` = 2N. ``max_output_tokens`` caps ``output_tokens`` (audio: N = cap // 2);
  a cut answer ends ``status: incomplete``, ``status_details.reason: max_output_tokens``.
* Rate limits: each ``response.create`` spends one request and its tokens (known in advance)
  from the model's account (``sim/ratelimit.py``), reported by ``rate_limits.updated``.

Fault model ``sim-ws-drop``: right after the first ``response.done`` is written, the TCP
connection is aborted without a close frame (the client sees close code 1006).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from llmobs.proxy.asgi import Receive, Scope, Send, openai_error
from llmobs.sim import azure
from llmobs.sim.common import SimConfig, dumps, new_id, tokens, words
from llmobs.sim.ratelimit import RateLimits

AUDIO_BYTES_PER_TOKEN = 4800
SILENCE = base64.b64encode(bytes(AUDIO_BYTES_PER_TOKEN)).decode()
_ERROR_MODEL = re.compile(r"sim-error-([45]\d\d)")
_AUDIO_FORMAT = {"type": "audio/pcm", "rate": 24000}
_TEXT_PARTS = ("input_text", "text", "output_text")


@dataclass
class _Item:
    """A conversation item as the token rule sees it."""

    obj: dict[str, Any]
    text_tokens: int
    audio_tokens: int


def _audio_bytes(b64: Any) -> int:
    if not isinstance(b64, str):
        return 0
    try:
        return len(base64.b64decode(b64, validate=True))
    except binascii.Error:
        return 0


def _count_item(item: dict[str, Any]) -> tuple[int, int]:
    """(text tokens, audio tokens) of a client-created item."""
    if item.get("type") == "function_call_output":
        return words(item.get("output")), 0
    text = audio = 0
    for part in item.get("content") or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") in _TEXT_PARTS:
            text += words(part.get("text"))
        elif part.get("type") == "input_audio":
            audio += _audio_bytes(part.get("audio")) // AUDIO_BYTES_PER_TOKEN
    return text, audio


def _default_session(model: str) -> dict[str, Any]:
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": new_id("sess_"),
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": int(time.time()) + 3600,
        "audio": {
            "input": {"format": _AUDIO_FORMAT, "transcription": None, "noise_reduction": None, "turn_detection": None},
            "output": {"format": _AUDIO_FORMAT, "voice": "alloy", "speed": 1.0},
        },
        "include": None,
    }


class _ClientError(Exception):
    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


class _Session:
    """One WebSocket connection: the session, the conversation and the event writer."""

    def __init__(self, send: Send, model: str, output_tokens: int, config: SimConfig, limits: RateLimits) -> None:
        self.send = send
        self.model = model
        self.output_tokens = output_tokens
        self.config = config
        self.limits = limits
        self.session = _default_session(model)
        self.conversation_id = new_id("conv_")
        self.items: list[_Item] = []
        self.audio_buffer = 0
        self.previous_input = (0, 0)  # (text, audio) input tokens of the last response
        self.responses = 0

    async def event(self, type_: str, **fields: Any) -> None:
        await self.send(
            {"type": "websocket.send", "text": dumps({"type": type_, "event_id": new_id("event_"), **fields})}
        )

    async def error(self, exc: _ClientError, client_event_id: Any) -> None:
        error = openai_error(exc.message, "invalid_request_error", exc.param, exc.code)["error"]
        await self.event(
            "error", error=error | {"event_id": client_event_id if isinstance(client_event_id, str) else None}
        )

    async def add_item(self, item: dict[str, Any], text_tokens: int, audio_tokens: int) -> None:
        previous = self.items[-1].obj["id"] if self.items else None
        self.items.append(_Item(item, text_tokens, audio_tokens))
        await self.event("conversation.item.added", previous_item_id=previous, item=item)
        await self.event("conversation.item.done", previous_item_id=previous, item=item)

    # ------------------------------------------------------------------ client events

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "session.update":
            await self._session_update(event)
        elif kind == "conversation.item.create":
            await self._item_create(event)
        elif kind == "input_audio_buffer.append":
            self.audio_buffer += _audio_bytes(event.get("audio"))
        elif kind == "input_audio_buffer.commit":
            await self._commit()
        elif kind == "input_audio_buffer.clear":
            self.audio_buffer = 0
            await self.event("input_audio_buffer.cleared")
        elif kind == "response.create":
            response = event.get("response")
            await self.respond(response if isinstance(response, dict) else {})
        elif kind == "response.cancel":
            raise _ClientError("Cancellation failed: no active response found.", "response_cancel_not_active")
        else:
            raise _ClientError(f"Invalid value: {kind!r}. Not a supported client event type.", "invalid_value", "type")

    async def _session_update(self, event: dict[str, Any]) -> None:
        update = event.get("session")
        if not isinstance(update, dict) or update.get("type") != "realtime":
            raise _ClientError(
                "Missing required parameter: 'session.type'.", "missing_required_parameter", "session.type"
            )
        self.session.update({k: v for k, v in update.items() if k not in ("id", "object", "model")})
        await self.event("session.updated", session=self.session)

    async def _item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise _ClientError("Missing required parameter: 'item'.", "missing_required_parameter", "item")
        text, audio = _count_item(item)
        content = [
            (p | {"audio": None}) if isinstance(p, dict) and p.get("type") == "input_audio" else p
            for p in item.get("content") or []
        ]
        stored = item | {"id": item.get("id") or new_id("item_"), "object": "realtime.item", "status": "completed"}
        if "content" in item:
            stored["content"] = content
        await self.add_item(stored, text, audio)

    async def _commit(self) -> None:
        if self.audio_buffer == 0:
            raise _ClientError(
                "Error committing input audio buffer: buffer is empty.", "input_audio_buffer_commit_empty"
            )
        audio, self.audio_buffer = self.audio_buffer // AUDIO_BYTES_PER_TOKEN, 0
        item_id = new_id("item_")
        previous = self.items[-1].obj["id"] if self.items else None
        await self.event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        part = {"type": "input_audio", "transcript": None}
        item = {"id": item_id, "type": "message", "object": "realtime.item", "status": "completed", "role": "user"}
        await self.add_item(item | {"content": [part]}, 0, audio)

    # ------------------------------------------------------------------ responses

    async def respond(self, options: dict[str, Any]) -> None:
        """Generate one response (see the module docstring for its events and usage)."""
        modalities = options.get("output_modalities") or self.session.get("output_modalities") or ["audio"]
        audio = "audio" in modalities
        instructions = options.get("instructions", self.session.get("instructions"))
        cap = options.get("max_output_tokens", self.session.get("max_output_tokens"))
        n = self.output_tokens
        limit = cap // 2 if audio and isinstance(cap, int) else cap
        truncated = isinstance(limit, int) and limit < n
        n = min(n, limit) if isinstance(limit, int) else n
        output = 2 * n if audio else n
        text_in = words(instructions) + sum(i.text_tokens for i in self.items)
        audio_in = sum(i.audio_tokens for i in self.items)
        cached_text, cached_audio = (min(a, b) for a, b in zip(self.previous_input, (text_in, audio_in), strict=True))
        self.previous_input = (text_in, audio_in)
        spent = self.limits.spend(self.model)
        spent.charge(text_in + audio_in, output)
        usage = {
            "total_tokens": text_in + audio_in + output,
            "input_tokens": text_in + audio_in,
            "output_tokens": output,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": audio_in,
                "image_tokens": 0,
                "cached_tokens": cached_text + cached_audio,
                "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": n, "audio_tokens": n if audio else 0},
        }
        in_conversation = options.get("conversation") != "none"
        rid = new_id("resp_")
        response = {
            "object": "realtime.response",
            "id": rid,
            "status": "in_progress",
            "status_details": None,
            "output": [],
            "conversation_id": self.conversation_id if in_conversation else None,
            "output_modalities": modalities,
            "max_output_tokens": cap,
            "audio": {"output": {"format": _AUDIO_FORMAT, "voice": self.session["audio"]["output"].get("voice")}},
            "usage": None,
            "metadata": options.get("metadata"),
        }
        await self.event("response.created", response=response)
        await self.event("rate_limits.updated", rate_limits=self.limits.realtime_event_limits(spent))
        item = await self._output_item(rid, n, audio, in_conversation)
        done = response | {"status": "incomplete" if truncated else "completed", "output": [item], "usage": usage}
        if truncated:
            done["status_details"] = {"type": "incomplete", "reason": "max_output_tokens", "error": None}
        await self.event("response.done", response=done)
        self.responses += 1
        if self.model == "sim-ws-drop" and self.responses == 1:
            raise _Drop

    async def _output_item(self, rid: str, n: int, audio: bool, in_conversation: bool) -> dict[str, Any]:
        item_id = new_id("item_")
        at = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        item = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        previous = self.items[-1].obj["id"] if self.items else None
        await self.event("response.output_item.added", response_id=rid, output_index=0, item=item)
        if in_conversation:
            await self.event("conversation.item.added", previous_item_id=previous, item=item)
        text = "".join(tokens(n))
        empty = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        await self.event("response.content_part.added", **at, part=empty)
        await asyncio.sleep(self.config.ttft)
        for i, token in enumerate(tokens(n)):
            if i and self.config.chunk_gap > 0:
                await asyncio.sleep(self.config.chunk_gap)
            if audio:
                await self.event("response.output_audio_transcript.delta", **at, delta=token)
                await self.event("response.output_audio.delta", **at, delta=SILENCE)
            else:
                await self.event("response.output_text.delta", **at, delta=token)
        if audio:
            await self.event("response.output_audio.done", **at)
            await self.event("response.output_audio_transcript.done", **at, transcript=text)
            part, content = {"type": "audio", "transcript": text}, {"type": "output_audio", "transcript": text}
        else:
            await self.event("response.output_text.done", **at, text=text)
            part, content = {"type": "text", "text": text}, {"type": "output_text", "text": text}
        await self.event("response.content_part.done", **at, part=part)
        final = item | {"status": "completed", "content": [content]}
        await self.event("response.output_item.done", response_id=rid, output_index=0, item=final)
        if in_conversation:
            self.items.append(_Item(final, n, n if audio else 0))
            await self.event("conversation.item.done", previous_item_id=previous, item=final)
        return final


class _Drop(Exception):
    """sim-ws-drop: abort the connection."""


async def _refuse(scope: Scope, send: Send, status: int, message: str, param: str | None) -> None:
    """Refuse the upgrade with an HTTP answer (or a plain 403 where the server cannot send one)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = dumps(openai_error(message, "invalid_request_error", param)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


async def _abort(send: Send) -> None:
    """Drop the TCP connection without a close frame, once what was written has left."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:  # not uvicorn: the nearest thing is an abnormal close
        await send({"type": "websocket.close", "code": 1011})
        return
    for _ in range(1000):  # bounded: at most ~1 s for the kernel to take the last frames
        if not transport.get_write_buffer_size():
            break
        await asyncio.sleep(0.001)
    transport.abort()


async def serve(scope: Scope, receive: Receive, send: Send, config: SimConfig, limits: RateLimits) -> None:
    """Run one Realtime WebSocket connection."""
    if (await receive())["type"] != "websocket.connect":
        return
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    deployment = query.get("deployment")
    model = azure.served_model(deployment[0]) if deployment else (query.get("model") or [None])[0]
    if model is None:
        await _refuse(scope, send, 400, "Missing required parameter: 'model'.", "model")
        return
    error = _ERROR_MODEL.fullmatch(model)
    if error:
        await _refuse(scope, send, int(error.group(1)), f"Simulated upstream error {error.group(1)}.", None)
        return
    headers = dict(scope.get("headers", []))
    override = headers.get(b"x-sim-output-tokens", b"").strip()
    output_tokens = int(override) if override.isdigit() else config.output_tokens
    subprotocol = "realtime" if "realtime" in scope.get("subprotocols", []) else None
    accept = {
        "type": "websocket.accept",
        "subprotocol": subprotocol,
        "headers": [(b"x-request-id", new_id("req_").encode())],
    }
    await send(accept)
    session = _Session(send, model, output_tokens, config, limits)
    await session.event("session.created", session=session.session)
    try:
        await _loop(session, receive, send)
    except _Drop:
        await _abort(send)


async def _loop(session: _Session, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
            continue
        try:
            event = json.loads(message.get("text") or "")
        except ValueError:
            event = None
        if not isinstance(event, dict):
            await session.error(_ClientError("The server could not parse the event as JSON.", "invalid_json"), None)
            continue
        if event.get("type") == "sim.close":
            code = event.get("code")
            reason = event.get("reason")
            close_code = code if isinstance(code, int) and not isinstance(code, bool) else 1000
            await send(
                {"type": "websocket.close", "code": close_code, "reason": reason if isinstance(reason, str) else ""}
            )
            return
        try:
            await session.handle(event)
        except _ClientError as exc:
            await session.error(exc, event.get("event_id"))
