"""A fast, deterministic simulated upstream (raw ASGI, no framework): routing, dispatch, fault models.

Used by the demo, the end-to-end tests and the benchmarks. Each API lives in its own module,
whose docstring states the deterministic rules that let tests predict every number:
``openai_chat`` (chat + legacy completions), ``openai_responses``, ``openai_embeddings``.
The shared token rule is in ``common``.

Endpoints are matched by path suffix, so any prefix works (``/v1/chat/completions``,
``/chat/completions``); a known path with another method is a 404, like an unknown path.

Fault models (the request's ``model``; any other name works normally):

* ``sim-error-<4xx|5xx>``: that status with the API's error body; ``sim-error-<status>-empty``:
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

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
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
from llmobs.sim import openai_chat, openai_embeddings, openai_responses
from llmobs.sim.common import (
    BadRequest,
    Call,
    SimConfig,
    SimulatedReset,
    accepts_gzip,
    dumps,
    new_id,
    send_bytes,
    send_json,
)

__all__ = ["ASGIApp", "SimConfig", "SimulatedReset", "create_app"]

MODELS = ("sim-model", "sim-reasoning", "sim-reasoning-content", "sim-embedding")

Handler = Callable[[Call, Send, "str | None"], Awaitable[None]]


async def _models(call: Call, send: Send, fault: str | None) -> None:
    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "llmobs-sim"} for m in MODELS]
    await send_json(send, 200, {"object": "list", "data": data}, call)


@dataclass(frozen=True)
class Route:
    """One row of the endpoint table: a path-suffix pattern and a handler per method."""

    name: str
    pattern: str  # regex for the end of the path; named groups become Call.params
    methods: Mapping[str, Handler]
    dialect: str = "openai"  # error bodies and header names
    model_required: bool = True
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(r"(?:^|/)" + self.pattern + r"/?$"))


# First match wins: "chat/completions" must come before "completions".
ROUTES: tuple[Route, ...] = (
    Route("chat/completions", "chat/completions", {"POST": openai_chat.chat}),
    Route("completions", "completions", {"POST": openai_chat.legacy}),
    Route("embeddings", "embeddings", {"POST": openai_embeddings.embeddings}),
    Route("responses", "responses", {"POST": openai_responses.responses}),
    Route("models", "models", {"GET": _models}, model_required=False),
)

_ERROR_MODEL = re.compile(r"sim-error-([45]\d\d)(-empty)?")
_STREAM_FAULTS = ("sim-stream-error", "sim-no-usage", "sim-reset")
_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _match(path: str) -> tuple[Route, dict[str, str]] | None:
    for route in ROUTES:
        m = route.regex.search(path)
        if m:
            return route, m.groupdict()
    return None


def _error_body(call: Call, status: int, message: str) -> dict[str, Any]:
    type_, code = _OPENAI_ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return openai_error(message, type_, None, code)


def _stream_options_without_stream(call: Call) -> bool:
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
        request_id = new_id("req_")
        method, path = scope["method"], scope["path"]
        matched = _match(path)
        handler = matched[0].methods.get(method) if matched else None
        headers = dict(scope["headers"])
        gz = accepts_gzip(headers.get(b"accept-encoding", b""))
        if matched is None or handler is None:
            body = openai_error(f"Invalid URL ({method} {path})", "invalid_request_error")
            await send_bytes(send, 404, dumps(body).encode(), [(b"x-request-id", request_id.encode())], compress=gz)
            return
        route, params = matched
        try:
            raw = await read_body(receive) if method == "POST" else b""
        except ClientGone:
            return
        call = Call(route.name, {}, "", False, gz, request_id, self.config.output_tokens, self.config)
        call.dialect, call.headers, call.params = route.dialect, headers, params
        try:
            self._parse(call, route, raw)
            await self._dispatch(call, handler, receive, send)
        except BadRequest as exc:
            body = openai_error(exc.message, "invalid_request_error", exc.param)
            await send_json(send, exc.status, body, call)

    def _parse(self, call: Call, route: Route, raw: bytes) -> None:
        if raw or route.model_required:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise BadRequest(
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                    "your HTTP library correctly. The OpenAI API expects a JSON payload.)"
                )
            call.body = body
        model = call.body.get("model", None if route.model_required else "")
        if not isinstance(model, str):
            raise BadRequest("You must provide a model parameter.", "model")
        call.model = model
        call.stream = call.body.get("stream") is True
        override = call.headers.get(b"x-sim-output-tokens")
        if override is not None:
            if not override.strip().isdigit():
                raise BadRequest(f"x-sim-output-tokens must be a non-negative integer, got {override.decode()!r}.")
            call.output_tokens = int(override)

    async def _dispatch(self, call: Call, handler: Handler, receive: Receive, send: Send) -> None:
        model = call.model
        error = _ERROR_MODEL.fullmatch(model)
        if error:
            status = int(error.group(1))
            if error.group(2):
                await send_bytes(send, status, b"", call.reply_headers(), compress=False)
                return
            await send_json(send, status, _error_body(call, status, f"Simulated upstream error {status}."), call)
            return
        if model == "sim-hang":
            await wait_disconnect(receive)
            return
        if model == "sim-reject-stream-options" and "stream_options" in call.body:
            raise BadRequest("Unrecognized request argument supplied: stream_options", "stream_options")
        if _stream_options_without_stream(call):
            # OpenAI rejects this; a proxy must only add include_usage to streams.
            raise BadRequest(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"
            )
        fault = model if model in _STREAM_FAULTS else None
        if not call.stream and fault == "sim-stream-error":
            await send_json(send, 500, _error_body(call, 500, "Simulated upstream failure."), call)
        elif not call.stream and fault == "sim-reset":
            partial = dumps({"id": call.request_id, "object": "partial", "choices": []}).encode()
            await send_bytes(send, 200, partial, call.reply_headers(), compress=False, more=True)
        else:
            await handler(call, send, fault)


def create_app(config: SimConfig | None = None) -> ASGIApp:
    """Build the simulator as a raw ASGI 3 application (HTTP + lifespan)."""
    return _SimApp(config or SimConfig())
