"""WebSocket relay: frames both ways, unchanged, for as long as the session lasts; a copy observed.

The upstream handshake happens first, so a refused upgrade reaches the client as the
upstream's own HTTP answer. Text stays text and binary stays binary; close codes are passed
on; pings are answered on each side by its own WebSocket library (ASGI does not carry them).
A side that drops without a close frame makes the proxy drop the other side too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode
from websockets.typing import Origin, Subprotocol

from llmobs.observe import Begun, Finished, SessionObserver
from llmobs.proxy import headers as hp
from llmobs.proxy.asgi import Message, Receive, Scope, Send, error_body
from llmobs.proxy.routing import Route
from llmobs.records import Outcome, RequestInfo, Session
from llmobs.telemetry.recorder import Recorder

log = logging.getLogger("llmobs")
# The WebSocket library logs each handshake at DEBUG, request line and headers included (the
# query or a subprotocol can carry a key): its upstream connections get a logger that does not.
_LIBRARY_LOG = logging.getLogger("llmobs.websocket.upstream")
_LIBRARY_LOG.setLevel(logging.WARNING)

# Handshake headers the WebSocket library writes itself, on each hop.
_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"origin",
        b"user-agent",
    }
)
# Close codes a peer may not put in a close frame (RFC 6455 section 7.4.1).
# Codes the proxy's client fails an upstream with for what the upstream sent (a keep-alive
# timeout, 1011, is a silent upstream: a drop, as before).
_UPSTREAM_FAULTS = frozenset({CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_DATA, CloseCode.MESSAGE_TOO_BIG})
_UNSENDABLE = frozenset({CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE, CloseCode.TLS_HANDSHAKE})
_INSECURE_KEY = "openai-insecure-api-key."  # browsers put the API key in a subprotocol


@dataclass(slots=True)
class _Counts:
    frames_from_client: int = 0
    bytes_from_client: int = 0
    frames_from_upstream: int = 0
    bytes_from_upstream: int = 0


class WebSocketRelay:
    """Relays one upgraded connection through a route; records its responses and itself."""

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        route: Route,
        path: bytes,
        info: RequestInfo,
        observer: SessionObserver | None,
        recorder: Recorder,
        max_message_bytes: int,
        on_finish: Callable[[Session], None],
    ) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        self.route, self.path, self.info = route, path, info
        self.observer = observer
        self.recorder = recorder
        self.max_message_bytes = max_message_bytes
        self.on_finish = on_finish
        self.counts = _Counts()
        self.handles: dict[str, tuple[RequestInfo, object | None]] = {}
        self.start = perf_counter()
        self.close_code: int | None = None
        self.closed = False  # one side has ended the session: the other's end is the echo
        self.outcome = Outcome.COMPLETED
        self.status = 499

    async def run(self, *, key_allowed: bool = True) -> None:
        message = await self.receive()
        if message["type"] != "websocket.connect":  # the client left before the handshake
            self._finish()
            return
        if not key_allowed:
            message_text = "the upstream key is not sent to this path (outside the upstream's prefix)"
            await self._refuse(403, error_body(message_text, "path_not_allowed"))
            self.outcome = Outcome.REJECTED
            self._finish()
            return
        try:
            upstream = await self._connect()
        except InvalidStatus as exc:
            response = exc.response
            body = bytes(response.body or b"")
            await self._refuse(response.status_code, body, _response_headers(response.headers.raw_items()))
            self.outcome = Outcome.UPSTREAM_ERROR
            self._finish()
            return
        except TimeoutError:
            await self._refuse(504, error_body("upstream did not answer in time", "upstream_timeout"))
            self.outcome = Outcome.UPSTREAM_TIMEOUT
            self._finish()
            return
        except (OSError, InvalidHandshake) as exc:
            message_text = f"upstream unreachable ({type(exc).__name__})"
            await self._refuse(502, error_body(message_text, "upstream_unreachable"))
            self.outcome = Outcome.UPSTREAM_UNREACHABLE
            self._finish()
            return
        self.status = 101
        try:
            await self.send(
                {
                    "type": "websocket.accept",
                    "subprotocol": upstream.subprotocol,
                    "headers": _response_headers(upstream.response.headers.raw_items()) if upstream.response else [],
                }
            )
            await self._relay(upstream)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(upstream.close())
            self._finish()

    async def _connect(self) -> ClientConnection:
        upstream = self.route.upstream
        origin_url = "ws" + upstream.origin.removeprefix("http")  # http -> ws, https -> wss
        query: bytes = self.scope.get("query_string", b"")
        target = self.path + (b"?" + query if query else b"")
        headers = hp.request_headers(self.scope["headers"], drop=_HANDSHAKE, credential=self.route.credential)
        header_map = hp.header_map(self.scope["headers"])
        subprotocols = list(self.scope.get("subprotocols") or [])
        if self.route.credential is not None:  # the operator's key replaces one sent in a subprotocol too
            subprotocols = [p for p in subprotocols if not p.startswith(_INSECURE_KEY)]
        origin = header_map.get(b"origin")
        agent = header_map.get(b"user-agent")
        timeouts = upstream.timeouts
        return await connect(
            origin_url + target.decode("latin-1"),
            additional_headers=[(hp.text(k), hp.text(v)) for k, v in headers],
            subprotocols=[Subprotocol(p) for p in subprotocols] or None,
            origin=Origin(origin.decode("latin-1")) if origin else None,
            user_agent_header=agent.decode("latin-1") if agent else None,
            proxy=None,  # only the configured upstream is ever contacted
            logger=_LIBRARY_LOG,
            open_timeout=timeouts.connect,
            max_size=self.max_message_bytes,
            ping_interval=20,
            ping_timeout=20,
        )

    async def _refuse(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Answer the upgrade request with a plain HTTP response (ASGI websocket.http.response)."""
        self.status = status
        if "websocket.http.response" not in (self.scope.get("extensions") or {}):
            await self.send({"type": "websocket.close", "code": 1011})
            return
        headers = headers or [(b"content-type", b"application/json")]
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await self.send({"type": "websocket.http.response.body", "body": body})

    async def _relay(self, upstream: ClientConnection) -> None:
        to_upstream = asyncio.ensure_future(self._client_to_upstream(upstream))
        to_client = asyncio.ensure_future(self._upstream_to_client(upstream))
        try:
            await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_upstream, to_client):
                task.cancel()
            await asyncio.gather(to_upstream, to_client, return_exceptions=True)

    async def _client_to_upstream(self, upstream: ClientConnection) -> None:
        counts = self.counts
        while True:
            message = await self.receive()
            kind = message["type"]
            if kind == "websocket.receive":
                data = _payload(message)
                counts.frames_from_client += 1
                counts.bytes_from_client += len(data)
                self._observe(self.observer.client_frame if self.observer else None, data)
                try:
                    await upstream.send(data)
                except ConnectionClosed:
                    return  # the upstream side ends the session; _upstream_to_client says how
            elif kind == "websocket.disconnect":
                if self.closed:
                    return
                self.closed = True
                code = int(message.get("code") or CloseCode.NORMAL_CLOSURE)
                self.close_code = code
                self.outcome = Outcome.COMPLETED if code in (1000, 1001) else Outcome.CLIENT_CLOSED
                if code in _UNSENDABLE:
                    upstream.transport.abort()  # the client dropped: so does the proxy, upstream
                else:
                    await upstream.close(code, str(message.get("reason") or ""))
                return

    async def _upstream_to_client(self, upstream: ClientConnection) -> None:
        counts = self.counts
        try:
            async for data in upstream:
                counts.frames_from_upstream += 1
                counts.bytes_from_upstream += len(data)
                self._observe(self.observer.upstream_frame if self.observer else None, data)
                await self.send(_frame(data))
        except ConnectionClosed:
            pass
        if self.closed:
            return  # the client ended it; this is the upstream's answer
        self.closed = True
        received = upstream.protocol.close_rcvd
        failed = upstream.protocol.close_sent
        if received is None and failed is not None and failed.code in _UPSTREAM_FAULTS:
            # The proxy failed the upstream's connection: a message past max_websocket_message_bytes
            # (1009) or a protocol error (1002, 1007). The client is told so, with that code.
            self.close_code = failed.code
            self.outcome = Outcome.UPSTREAM_ERROR
            await self.send({"type": "websocket.close", "code": failed.code, "reason": failed.reason})
            return
        if received is None:  # dropped without a close frame: drop the client too (it sees 1006)
            self.close_code = None
            self.outcome = Outcome.STREAM_INTERRUPTED
            return
        self.close_code = received.code
        normal = received.code in (1000, 1001) or 3000 <= received.code <= 4999  # 3xxx, 4xxx: the API's own
        self.outcome = Outcome.COMPLETED if normal else Outcome.UPSTREAM_ERROR
        if received.code not in _UNSENDABLE:
            await self.send({"type": "websocket.close", "code": received.code, "reason": received.reason})

    def _observe(self, feed: Callable[[bytes | str, float], None] | None, data: bytes | str) -> None:
        if feed is None:
            return
        try:
            feed(data, perf_counter())
        except Exception:  # noqa: BLE001 - accounting never breaks traffic; counted
            self.observer = None
            self.recorder.failed("accounting")
            return
        self._record_events()

    def _record_events(self) -> None:
        if self.observer is None:
            return
        for event in self.observer.drain():
            if isinstance(event, Begun):
                handle = self.recorder.start(event.info, self.scope["headers"], event.start)
                self.handles[event.key] = (event.info, handle)
            elif isinstance(event, Finished):
                _, handle = self.handles.pop(event.key, (None, None))
                self.recorder.finish(event.observation, handle)

    def _finish(self) -> None:
        end = perf_counter()
        if self.observer is not None:
            # A response still open when the session ends was cut off by whoever ended it.
            cut = self.outcome if self.outcome is not Outcome.COMPLETED else Outcome.CLIENT_CLOSED
            try:
                self.observer.close(end, cut)
                self._record_events()
            except Exception:  # noqa: BLE001 - accounting never breaks traffic; counted
                self.recorder.failed("accounting")
        for info, _ in self.handles.values():  # begun, never finished (accounting broke): not in flight
            self.recorder.abandon(info)
        self.handles.clear()
        counts = self.counts
        self.on_finish(
            Session(
                request=self.info,
                start=self.start,
                end=end,
                close_code=self.close_code,
                outcome=self.outcome,
                status_code=self.status,
                frames_from_client=counts.frames_from_client,
                bytes_from_client=counts.bytes_from_client,
                frames_from_upstream=counts.frames_from_upstream,
                bytes_from_upstream=counts.bytes_from_upstream,
            )
        )


def _payload(message: Message) -> bytes | str:
    text = message.get("text")
    return text if text is not None else bytes(message.get("bytes") or b"")


def _frame(data: bytes | str) -> Message:
    return (
        {"type": "websocket.send", "text": data} if isinstance(data, str) else {"type": "websocket.send", "bytes": data}
    )


def _response_headers(items: object) -> list[tuple[bytes, bytes]]:
    """The upstream handshake response's own headers, less hop-by-hop and handshake ones."""
    pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in items]  # type: ignore[attr-defined]
    return [(k, v) for k, v in hp.response_headers(pairs) if k not in _HANDSHAKE and k not in (b"date", b"server")]
