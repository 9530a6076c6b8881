"""The client side of the proxy: uvicorn's httptools protocol with the limits nginx and Envoy keep.

uvicorn bounds none of these, so one client could take the proxy down for everyone:

- **Request head size and header count** (nginx `large_client_header_buffers`, Envoy
  `max_request_headers_kb` / `max_headers_count`): counted as bytes arrive, before the parser
  holds them; past the limit the client gets 431 and the connection closes. Between heads, the
  reads that carry no body (trailers, a pipelined next head) are bounded the same way.
- **Head and body read timeouts** (nginx `client_header_timeout`, `client_body_timeout`):
  a connection that sends nothing, or a head or body a trickle at a time (slowloris), gets
  408 and is closed. A head's clock starts at its first byte after idling (or at connect);
  a body's restarts with each read. uvicorn's keep-alive timeout covers only the idle time
  between requests.
- **Open connections**: past `max_client_connections`, an idle keep-alive connection is
  closed to make room, else the one that has spent longest reading a head, as nginx reuses
  its idle connections; with none of either, the new connection gets 503 with Retry-After.
- **Log lines**: one warning a minute at most for malformed requests (any client can send them).

It extends uvicorn's protocol through its public callbacks where they exist, and through three
private methods where none does (`_start_asgi_task`, `_should_upgrade`,
`_unset_keepalive_if_required`): tested on uvicorn 0.54 and 0.55, the range pyproject.toml pins.

The limits reach the protocol explicitly: `protocol_for(settings)` is the class with them
bound (one process; uvicorn takes the class), and `WorkerHttpToolsProtocol` reads the settings
each `--workers` process gets in its environment, as `llmobs.app.create_app` does (uvicorn
imports it by name there). Never through the app uvicorn loaded: anything wrapping it (uvicorn's
own message logger at trace level) hid its settings, and a configured 2,048-byte head bound
became the default 65,536.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from llmobs.config import load_settings
from llmobs.proxy.asgi import error_body

_HEAD_END = (b"\r\n\r\n", b"\n\n")
_HEAD = "request head not received in time"
_BODY = "request body not received in time"


class Limits:
    """The client-side limits; defaults as in the README's Security and limits table."""

    max_head_bytes = 64 * 1024
    max_headers = 100
    header_timeout = 60.0
    body_timeout = 60.0
    max_connections = 4096

    def __init__(self, settings: Any = None) -> None:
        if settings is not None:
            self.max_head_bytes = settings.max_header_bytes
            self.max_headers = settings.max_headers
            self.header_timeout = settings.client_header_timeout
            self.body_timeout = settings.client_body_timeout
            self.max_connections = settings.max_client_connections


class _Pool:
    """The connections of one server that may be closed to make room: idle, or reading a head."""

    def __init__(self) -> None:
        self.idle: OrderedDict[LimitedHttpToolsProtocol, None] = OrderedDict()
        self.heads: OrderedDict[LimitedHttpToolsProtocol, None] = OrderedDict()


_POOLS: weakref.WeakKeyDictionary[Any, _Pool] = weakref.WeakKeyDictionary()
_last_warning = 0.0


def _warn(logger: Any, message: str) -> None:
    """A warning any client can cause: at most one a minute."""
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= 60.0:
        _last_warning = now
        logger.warning("%s (further such warnings are held back for a minute)", message)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, bounded as nginx and Envoy bound a client."""

    limits = Limits()  # the defaults; protocol_for(settings) binds a configuration's

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.pool = _POOLS.setdefault(server_state, _Pool())
        self.head_bytes = 0
        self.header_count = 0
        self.in_head = True  # reading a request head (or waiting for the first byte of one)
        self.loose_bytes = 0  # bytes read since a head ended or body came: trailers, a pipelined head
        self.progress = False  # this read ended a head or carried body
        self.reading_message = False  # between the first byte of a request and the end of its body
        self.deadline: asyncio.TimerHandle | None = None
        self.running: RequestResponseCycle | None = None
        self.deadline_for = _HEAD  # what the deadline times: _HEAD or _BODY

    # -- connections ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self._reply(503, "too many open connections", "too_many_connections", retry_after=True)
            return
        self._reading_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        running = self.running
        if running is not None and running is not self.cycle and not running.response_complete:
            running.disconnected = True  # pipelined: uvicorn tells only the newest request
            running.message_event.set()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self.running = cycle  # the request whose response is on the wire (uvicorn keeps only the newest)
        super()._start_asgi_task(cycle, app)

    def _make_room(self) -> bool:
        """Close an idle connection, else the longest-reading head; False when there is none."""
        for queue in (self.pool.idle, self.pool.heads):
            for victim in queue:
                if victim is not self:
                    victim._forget()
                    victim.transport.close()
                    return True
        return False

    def _forget(self) -> None:
        self.pool.idle.pop(self, None)
        self.pool.heads.pop(self, None)
        self._disarm()

    # -- the request head -------------------------------------------------------------------

    def _reading_head(self) -> None:
        self.in_head = True
        self.head_bytes = self.header_count = 0
        self.pool.heads[self] = None
        self._arm(self.limits.header_timeout, _HEAD)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()  # keep-alive bounds idle time, not a request's
        if self.in_head:
            if self in self.pool.idle:  # the first byte after idling: the head's clock starts
                del self.pool.idle[self]
                self._reading_head()
            if self.head_bytes + len(data) > self.limits.max_head_bytes and not self._head_ends_in(data):
                self._reply(431, f"request head is larger than {self.limits.max_head_bytes} bytes", "head_too_large")
                return
            self.head_bytes += len(data)
        elif self.deadline is not None and self.deadline_for == _BODY:  # each read of a body restarts its clock
            self._arm(self.limits.body_timeout, _BODY)
        self.progress = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.header_count > self.limits.max_headers:
                self._reply(431, f"request has more than {self.limits.max_headers} headers", "too_many_headers")
                return
            _warn(self.logger, "Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self._forget()
                self.handle_websocket_upgrade()
            else:
                _warn(self.logger, "Unsupported upgrade request.")
            return
        if not self.in_head:
            # Reads that end no head and carry no body byte are trailers or a pipelined head,
            # which the parser holds until they end: bounded like a head. (Chunk framing comes
            # with body bytes, and its extensions are not held.)
            self.loose_bytes = 0 if self.progress else self.loose_bytes + len(data)
            if self.loose_bytes > self.limits.max_head_bytes:
                limit = self.limits.max_head_bytes
                self._reply(431, f"request framing, trailers or next head over {limit} bytes", "head_too_large")

    def _head_ends_in(self, data: bytes) -> bool:
        """Whether the head ends within the limit in this chunk (the rest is body)."""
        room = self.limits.max_head_bytes - self.head_bytes
        return any(0 <= data.find(end, 0, room + len(end)) <= room - len(end) for end in _HEAD_END)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.pool.idle.pop(self, None)
        self.header_count = 0  # a pipelined head counts its own
        self.reading_message = True
        self._unset_keepalive_if_required()  # a request is under way: the head timeout bounds it now
        if self.deadline is None:  # a head begun while busy (pipelined, after an early answer): timed too
            self.pool.heads[self] = None
            self._arm(self.limits.header_timeout, _HEAD)

    def on_body(self, body: bytes) -> None:
        self.progress = True
        super().on_body(body)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > self.limits.max_headers:
            raise ValueError("too many headers")  # the parser stops; data_received answers 431
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.progress = True
        self.pool.heads.pop(self, None)
        self._disarm()
        super().on_headers_complete()
        if not self.pipeline:  # (a queued request's body is not read until it starts)
            self._time_body()

    def on_message_complete(self) -> None:
        self._disarm()
        self.reading_message = False
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            self._idle()  # answered before its body was read (a 405, a 400): idle only now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.reading_message and (self.cycle is None or self.cycle.response_complete):
            self._idle()
        elif self.reading_message and not self.in_head and self.deadline is None and not self.pipeline:
            self._time_body()  # the queued request started: its body's clock starts now

    def _time_body(self) -> None:
        if self.cycle is not None and self.cycle.more_body and self.limits.body_timeout:
            self._arm(self.limits.body_timeout, _BODY)

    def _idle(self) -> None:
        """Between requests: what comes next is a head; the keep-alive timeout runs meanwhile."""
        if not self.transport.is_closing():
            self.in_head = True
            self.head_bytes = self.header_count = 0
            self.pool.idle[self] = None
            if self.timeout_keep_alive_task is None:  # (a read of the body's end cancelled uvicorn's)
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

    # -- timers and answers -----------------------------------------------------------------

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self.deadline_for = reason
        if seconds:
            self.deadline = self.loop.call_later(seconds, self._timed_out, reason)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _timed_out(self, reason: str) -> None:
        self.deadline = None
        if not self.transport.is_closing():
            self._reply(408, reason, "request_timeout")

    def _reply(self, status: int, message: str, code: str, *, retry_after: bool = False) -> None:
        """Answer with the proxy's error shape (unless a response is under way) and close the connection."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app (if it runs) sees the client as gone
            self.cycle.message_event.set()
            if self.cycle.response_started or self.pipeline:  # (queued: an earlier response is on the wire)
                self._forget()
                self.transport.close()  # mid-response: nothing more can be said
                return
        body = error_body(message, code)
        phrase = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}
        head = [
            b"HTTP/1.1 %d %s\r\n" % (status, phrase.get(status, b"Error")),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
        ]
        if retry_after:
            head.append(b"retry-after: 1\r\n")
        self.transport.write(b"".join(head) + b"\r\n" + body)
        self._forget()
        self.transport.close()


def protocol_for(settings: Any) -> type[LimitedHttpToolsProtocol]:
    """The protocol class with the limits of `settings` bound (for uvicorn's `http` option)."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": Limits(settings)})


class WorkerHttpToolsProtocol(LimitedHttpToolsProtocol):
    """The protocol of a `--workers` process, named by its import path: its limits come from the
    settings the supervisor put in the worker's environment, read once."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        cls = type(self)
        if "limits" not in cls.__dict__:
            cls.limits = Limits(load_settings())
        super().__init__(config, server_state, app_state, _loop)
