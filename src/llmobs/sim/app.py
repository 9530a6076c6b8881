"""A fast, deterministic simulated upstream (raw ASGI, no framework): routing, dispatch, fault models.

Used by the demo, the end-to-end tests and the benchmarks. Each API lives in its own module,
whose docstring states the deterministic rules that let tests predict every number:
``openai_chat`` (chat + legacy completions), ``openai_responses``, ``openai_embeddings``,
``openai_media`` (images, audio, moderations), ``openai_realtime`` (WebSocket),
``anthropic_messages`` (Messages, count_tokens, batches). The shared token rule is in
``common``, rate-limit headers in ``ratelimit``, Azure paths in ``azure``.

Endpoints are matched by path suffix (the ``ROUTES`` table), so any prefix works
(``/v1/chat/completions``, ``/chat/completions``); a known path with another method is a 404,
like an unknown path. ``/openai/deployments/{deployment}/...`` serves the Azure rows. A
``multipart/form-data`` body is parsed into fields and files; otherwise bodies are JSON. A
WebSocket upgrade on a path ending ``realtime`` is a Realtime session.

Every OpenAI-shaped answer to a model route carries ``x-request-id`` and the
``x-ratelimit-*`` headers; Anthropic answers carry ``request-id`` and
``anthropic-ratelimit-*`` (see ``ratelimit``). Errors come in the API's own shape.

Fault models (the request's ``model``, or the Azure deployment; any other name works normally):

* ``sim-error-<4xx|5xx>``: that status with the API's error body (Anthropic: the error type
  of that status, e.g. 529 ``overloaded_error``); ``sim-error-<status>-empty``: that status
  with an empty body.
* ``sim-ratelimit``: 429 with ``retry-after: 1`` and the provider's rate-limit error
  (OpenAI ``rate_limit_exceeded``, Anthropic ``rate_limit_error``).
* ``sim-stream-error``: a stream sends ``FAULT_CHUNKS`` token chunks, then
  ``data: {"error": {...}}`` and ends without ``[DONE]`` (Responses: ``response.failed``;
  Anthropic: ``event: error`` with ``api_error``). Without ``stream`` it answers 500.
* ``sim-overloaded`` (Anthropic): a stream sends ``FAULT_CHUNKS`` token deltas then
  ``event: error`` with ``overloaded_error``; without ``stream`` it answers 529.
* ``sim-no-usage`` (OpenAI): streams never carry usage (``include_usage`` ignored); non-stream
  bodies have no ``usage`` (Responses: ``"usage": null``).
* ``sim-reject-stream-options``: 400 (``param: "stream_options"``) whenever the body has
  ``stream_options``; otherwise normal.
* ``sim-hang``: reads the request and never answers, until the client goes away.
* ``sim-reset``: sends ``FAULT_CHUNKS`` token chunks (non-stream: half the body) and raises
  ``SimulatedReset``, so the server drops the connection mid-response.
* ``sim-ws-drop``, ``sim.close``: Realtime faults, see ``openai_realtime``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

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
from llmobs.sim import (
    anthropic_messages,
    azure,
    openai_chat,
    openai_embeddings,
    openai_media,
    openai_realtime,
    openai_responses,
)
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
from llmobs.sim.multipart import MultipartError, boundary_of, parse_form
from llmobs.sim.ratelimit import RETRY_AFTER_SECONDS, RateLimits

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
    model_required: bool = True  # False: the body may lack "model" (or there is no body)
    limited: bool = True  # counts against the model's rate limits and reports them
    azure: bool = False  # also served under /openai/deployments/{deployment}/
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(r"(?:^|/)" + self.pattern + r"/?$"))


_ANTHROPIC = "anthropic"
_BATCH = r"messages/batches/(?P<batch_id>[^/]+)"
# First match wins: "chat/completions" must come before "completions".
ROUTES: tuple[Route, ...] = (
    Route("chat/completions", "chat/completions", {"POST": openai_chat.chat}, azure=True),
    Route("completions", "completions", {"POST": openai_chat.legacy}, azure=True),
    Route("embeddings", "embeddings", {"POST": openai_embeddings.embeddings}, azure=True),
    Route("responses", "responses", {"POST": openai_responses.responses}),
    Route("models", "models", {"GET": _models}, model_required=False, limited=False),
    Route(
        "images/generations",
        "images/generations",
        {"POST": openai_media.image_generations},
        model_required=False,
        azure=True,
    ),
    Route("images/edits", "images/edits", {"POST": openai_media.image_edits}, model_required=False, azure=True),
    Route("audio/transcriptions", "audio/transcriptions", {"POST": openai_media.transcriptions}, azure=True),
    Route("audio/translations", "audio/translations", {"POST": openai_media.translations}, azure=True),
    Route("audio/speech", "audio/speech", {"POST": openai_media.speech}, azure=True),
    Route("moderations", "moderations", {"POST": openai_media.moderations}, model_required=False),
    Route("messages", "messages", {"POST": anthropic_messages.messages}, dialect=_ANTHROPIC),
    Route(
        "messages/count_tokens",
        "messages/count_tokens",
        {"POST": anthropic_messages.count_tokens},
        dialect=_ANTHROPIC,
        limited=False,
    ),
    Route(
        "messages/batches",
        "messages/batches",
        {"POST": anthropic_messages.create_batch, "GET": anthropic_messages.list_batches},
        dialect=_ANTHROPIC,
        model_required=False,
        limited=False,
    ),
    Route(
        "messages/batches/{id}/results",
        _BATCH + "/results",
        {"GET": anthropic_messages.batch_results},
        dialect=_ANTHROPIC,
        model_required=False,
        limited=False,
    ),
    Route(
        "messages/batches/{id}",
        _BATCH,
        {"GET": anthropic_messages.retrieve_batch},
        dialect=_ANTHROPIC,
        model_required=False,
        limited=False,
    ),
)

_ERROR_MODEL = re.compile(r"sim-error-([45]\d\d)(-empty)?")
_STREAM_FAULTS = ("sim-stream-error", "sim-no-usage", "sim-reset", "sim-overloaded")
_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_BAD_JSON = {
    "openai": "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload.)",
    _ANTHROPIC: "There was an issue with the format or content of your request. The request body is not valid JSON.",
}


def _match(path: str) -> tuple[Route, dict[str, str]] | None:
    for route in ROUTES:
        m = route.regex.search(path)
        if m:
            return route, m.groupdict()
    return None


def _error_body(call: Call, status: int, message: str, param: str | None = None) -> dict[str, Any]:
    if call.dialect == _ANTHROPIC:
        return anthropic_messages.error_body(status, message, call.request_id)
    type_, code = _OPENAI_ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return openai_error(message, type_, param, code)


def _stream_options_without_stream(call: Call) -> bool:
    legacy_or_chat = call.endpoint in ("chat/completions", "completions")
    return legacy_or_chat and not call.stream and call.body.get("stream_options") is not None


def _form_body(raw: bytes, boundary: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Multipart fields as a body dict (``name[]`` fields as lists) and files by name (``[]`` dropped)."""
    try:
        form = parse_form(raw, boundary)
    except MultipartError as exc:
        raise BadRequest(f"Invalid multipart/form-data body: {exc}.") from None
    body: dict[str, Any] = {}
    for name, values in form.fields.items():
        if name.endswith("[]"):
            body[name[:-2]] = values
        else:
            body[name] = values[-1]
    files: dict[str, Any] = {}
    for name, uploads in form.files.items():
        files[name.removesuffix("[]")] = files.get(name.removesuffix("[]"), []) + uploads
    return body, files


class _SimApp:
    """The ASGI callable returned by create_app."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.limits = RateLimits(config.ratelimit_requests, config.ratelimit_tokens, config.ratelimit_output_tokens)
        self.store: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            if scope["path"].rstrip("/").endswith("realtime"):
                await openai_realtime.serve(scope, receive, send, self.config, self.limits)
            else:
                await receive()
                await send({"type": "websocket.close", "code": 1008})
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = new_id("req_")
        method, path = scope["method"], scope["path"]
        deployment = None
        in_azure = azure.split(path)
        if in_azure:
            deployment, path = in_azure
        matched = _match(path)
        route = matched[0] if matched else None
        handler = route.methods.get(method) if route and (route.azure or not in_azure) else None
        headers = dict(scope["headers"])
        gz = accepts_gzip(headers.get(b"accept-encoding", b""))
        if route is None or handler is None:
            body = openai_error(f"Invalid URL ({method} {scope['path']})", "invalid_request_error")
            await send_bytes(send, 404, dumps(body).encode(), [(b"x-request-id", request_id.encode())], compress=gz)
            return
        if deployment is not None and "api-version" not in parse_qs(scope["query_string"].decode("latin-1")):
            await send_bytes(
                send, 404, dumps(azure.NOT_FOUND).encode(), [(b"x-request-id", request_id.encode())], compress=gz
            )
            return
        try:
            raw = await read_body(receive) if method == "POST" else b""
        except ClientGone:
            return
        call = Call(route.name, {}, "", False, gz, request_id, self.config.output_tokens, self.config)
        call.dialect, call.headers, call.store = route.dialect, headers, self.store
        call.params = {k: v for k, v in (matched[1] if matched else {}).items() if v is not None}
        call.base_url = f"{scope.get('scheme', 'http')}://{headers.get(b'host', b'localhost').decode('latin-1')}"
        try:
            self._parse(call, route, raw, deployment)
            if route.limited and call.model:
                call.spent = self.limits.spend(call.model)
                call.limit_headers = (
                    self.limits.anthropic_headers if route.dialect == _ANTHROPIC else self.limits.openai_headers
                )
            await self._dispatch(call, handler, receive, send)
        except BadRequest as exc:
            await send_json(send, exc.status, _error_body(call, exc.status, exc.message, exc.param), call)

    def _parse(self, call: Call, route: Route, raw: bytes, deployment: str | None) -> None:
        boundary = boundary_of(call.headers.get(b"content-type", b"").decode("latin-1"))
        if boundary is not None:
            call.body, call.files = _form_body(raw, boundary)
        elif raw or route.model_required:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise BadRequest(_BAD_JSON[route.dialect])
            call.body = body
        if deployment is not None:
            call.model, call.azure = azure.served_model(deployment), True
        else:
            model = call.body.get("model", None if route.model_required else "")
            if not isinstance(model, str):
                message = (
                    "model: Field required" if route.dialect == _ANTHROPIC else "You must provide a model parameter."
                )
                raise BadRequest(message, "model")
            call.model = model
        call.stream = call.body.get("stream") in (True, "true")
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
        if model == "sim-ratelimit":
            if call.spent is not None:
                call.spent.exhausted = True
            body = _error_body(call, 429, "Simulated rate limit reached for requests.")
            await send_json(send, 429, body, call, [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())])
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
        if fault == "sim-overloaded" and call.dialect != _ANTHROPIC:
            fault = None
        if not call.stream and fault in ("sim-stream-error", "sim-overloaded"):
            status = 529 if fault == "sim-overloaded" else 500
            message = "Overloaded" if fault == "sim-overloaded" else "Simulated upstream failure."
            await send_json(send, status, _error_body(call, status, message), call)
        elif not call.stream and fault == "sim-reset":
            partial = dumps({"id": call.request_id, "object": "partial", "choices": []}).encode()
            await send_bytes(send, 200, partial, call.reply_headers(), compress=False, more=True)
        else:
            await handler(call, send, fault)


def create_app(config: SimConfig | None = None) -> ASGIApp:
    """Build the simulator as a raw ASGI 3 application (HTTP, WebSocket, lifespan)."""
    return _SimApp(config or SimConfig())
