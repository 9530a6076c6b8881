"""ASGI plumbing shared by the proxy and the simulated upstream: types, body reader, lifespan loop."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from llmobs.budget import ByteBudget
from llmobs.proxy.headers import with_defaults

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


class ClientGone(Exception):
    """The client disconnected."""


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


class BudgetExhausted(Exception):
    """Requests in flight already hold as many body bytes as the proxy allows."""


async def read_body(receive: Receive, limit: int | None = None, budget: ByteBudget | None = None) -> bytes:
    """The whole request body; ClientGone if the client leaves, BodyTooLarge past `limit`
    bytes, BudgetExhausted when `budget` cannot hold it. The caller gives `len(body)` back to
    the budget once it no longer holds the body (on an error, this does)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if limit is not None and size + len(chunk) > limit:
                raise BodyTooLarge
            if budget is not None and not budget.take(len(chunk)):
                raise BudgetExhausted
            size += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                # One chunk is the body as it is; several are joined once, then let go.
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except BaseException:
        if budget is not None:
            budget.give(size)
        raise


async def wait_disconnect(receive: Receive) -> None:
    """Return once the client has gone away."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def lifespan(
    receive: Receive,
    send: Send,
    startup: Callable[[], Awaitable[None]] | None = None,
    shutdown: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run the ASGI lifespan protocol; a failing `startup` is reported, not raised."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                if startup is not None:
                    await startup()
            except Exception as exc:  # noqa: BLE001 - the server reports it and exits
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if shutdown is not None:
                await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def openai_error(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """An error object in the OpenAI shape: {"error": {message, type, param, code}}."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_body(message: str, code: str) -> bytes:
    """An OpenAI-style error body naming the proxy as its source."""
    return json.dumps(openai_error(f"llmobs proxy: {message}", "llmobs_proxy_error", code=code)).encode()


async def respond(send: Send, status: int, body: bytes, extra: Headers | None = None) -> None:
    """A whole JSON response of the proxy's own, in two messages."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers = with_defaults(headers + (extra or []), int(time.time()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def default_headers(app: ASGIApp) -> ASGIApp:
    """`app` with a `date` and a `server` header on every response that lacks one.

    The proxy's server does not add its own (the upstream's are relayed instead), so
    routes the proxy answers itself, such as the admin ones, get theirs here.
    """

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_defaults([(k.lower(), v) for k, v in message["headers"]], int(time.time()))
            await send(message)

        await app(scope, receive, sending)

    return wrapped
