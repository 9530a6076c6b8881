"""One HTTP request's hot path: admit it, forward it, relay the response, observe a copy."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

from llmobs.observe import Accumulator, Adapter, ResponseObserver
from llmobs.proxy import headers as hp
from llmobs.proxy.asgi import (
    BodyTooLarge,
    BudgetExhausted,
    ClientGone,
    Receive,
    Scope,
    Send,
    error_body,
    read_body,
    respond,
)
from llmobs.proxy.routing import Route, key_may_go
from llmobs.proxy.upstream import (
    Response,
    UnsendableHeader,
    UpstreamBadResponse,
    UpstreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from llmobs.records import Outcome, ParsedBody, RequestInfo
from llmobs.stream_usage import REJECTION_PEEK, rejects_usage_option

if TYPE_CHECKING:
    from llmobs.attribution import Attribution
    from llmobs.budget import ByteBudget
    from llmobs.telemetry.recorder import Recorder

log = logging.getLogger("llmobs")

_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})


_last_unreachable: dict[tuple[str, int], float] = {}  # one entry per upstream (bounded by the routes)


def _warn_unreachable(host: str, port: int, reason: str) -> None:
    """Say an upstream cannot be reached, once a minute per upstream: host and port, never a key."""
    now = time.monotonic()
    if now - _last_unreachable.get((host, port), -60.0) >= 60.0:
        _last_unreachable[(host, port)] = now
        log.warning("upstream %s:%d unreachable: %s (clients get 502; said once a minute)", host, port, reason)


class Host(Protocol):
    """What an exchange needs of the proxy that runs it (proxy.Proxy, which it never imports):
    its settings, budgets and recorder, and what it learns of its upstreams."""

    recorder: Recorder
    attribution: Attribution
    body_budget: ByteBudget
    observe_budget: ByteBudget
    max_body_bytes: int
    max_event_bytes: int
    capture_content: bool
    chunk_times: bool
    inject_stream_usage: bool
    rejects_usage_option: bool  # learnt from the upstream; see Exchange._forward


class Rejected(Exception):
    """The proxy refuses the request itself; the client gets `status` with an OpenAI-style error."""

    def __init__(self, status: int, message: str, code: str, *, outcome: Outcome = Outcome.REJECTED) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.outcome = status, message, code, outcome


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request the proxy accepted: what it read, and what goes upstream."""

    info: RequestInfo
    parsed: ParsedBody
    original: bytes  # the client's own body, for a retry without the usage option
    headers: list[tuple[bytes, bytes]]  # upstream headers, before trace propagation


class Exchange:
    """One request's journey: admit, forward, relay. Records exactly once, in a finally."""

    def __init__(
        self,
        proxy: Host,
        scope: Scope,
        receive: Receive,
        send: Send,
        start: float,
        adapter: Adapter,
        route: Route,
        path: bytes,
    ) -> None:
        self.proxy = proxy
        self.scope = scope
        self.receive = receive
        self.send = send
        self.start = start
        self.adapter = adapter
        self.route = route
        self.path = path  # the path the upstream gets (a route's prefix replaced)
        self.status = 499  # until a response starts
        self.outcome = Outcome.COMPLETED
        self.overhead = 0.0  # seconds spent in the proxy itself
        self.done = False  # our last byte is out; a later disconnect is no news
        self.client_gone = False
        self.acc: Accumulator | None = None
        self.handle: object | None = None
        self.body_held = 0  # request body bytes counted against the proxy's budget
        self.observer: ResponseObserver | None = None

    async def run(self) -> None:
        try:
            admitted = await self._admit()
        except Rejected as rejection:
            extra = {413: [(b"connection", b"close")], 503: [(b"retry-after", b"1"), (b"connection", b"close")]}
            await respond(
                self.send, rejection.status, error_body(rejection.message, rejection.code), extra.get(rejection.status)
            )
            self._record_unsent(rejection.status, rejection.outcome)
            return
        except ClientGone:
            self._record_unsent(499, Outcome.CLIENT_CLOSED)
            return
        admitted_at = perf_counter()
        recorder = self.proxy.recorder
        self.acc = self.adapter.observe(admitted.info, self.start)
        self.handle = recorder.start(admitted.info, self.scope["headers"], self.start)
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.ensure_future(self._watch_disconnect(task))
        try:
            headers = self._upstream_headers(admitted)
            self.overhead += perf_counter() - admitted_at
            try:
                resp = await self._forward(headers, admitted)
            finally:
                self._release_body()  # the upstream has it, or never will
            if resp is not None:
                await self._relay_and_release(resp)
        except asyncio.CancelledError:
            if not self.client_gone:
                raise
            task.uncancel()
            self.outcome = Outcome.CLIENT_CLOSED
        finally:
            self.done = True
            watcher.cancel()
            self._release_body()
            self._finish()

    # --- admit ------------------------------------------------------------------------------

    async def _admit(self) -> Admitted:
        """Read the body within the limit, check the headers, read what we account for."""
        proxy = self.proxy
        try:
            body = await read_body(self.receive, proxy.max_body_bytes, proxy.body_budget)
        except BodyTooLarge:
            raise Rejected(
                413, f"request body is larger than {proxy.max_body_bytes} bytes", "request_too_large"
            ) from None
        except BudgetExhausted:
            raise Rejected(503, "too many request bodies held at once; retry shortly", "overloaded") from None
        self.body_held = len(body)
        if not key_may_go(self.route, self._decoded_path()):
            raise Rejected(
                403, "the upstream key is not sent to this path (outside the upstream's prefix)", "path_not_allowed"
            )
        headers = hp.request_headers(
            self.scope["headers"], drop=self.proxy.attribution.own_headers, credential=self.route.credential
        )
        parsed = self._parse(body)
        info = self._info(
            model=parsed.model,
            stream=parsed.stream,
            params=parsed.params,
            usage_injected=parsed.usage_injected,
            capture_content=proxy.capture_content,
            input_content=parsed.input_content,
            conversation=parsed.conversation,
            tool_definitions=parsed.tool_definitions,
            expects_json=parsed.expects_json,
        )
        return Admitted(info, parsed, body, headers)

    def _info(self, *, conversation: str | None = None, **fields: Any) -> RequestInfo:
        """The request as llmobs records it; `conversation` from the body, unless a header names one."""
        route, upstream = self.route, self.route.upstream
        attribution = self.proxy.attribution
        header_map = hp.header_map(self.scope["headers"])
        return RequestInfo(
            endpoint=self.adapter.name,
            operation=self.adapter.operation,
            tenant=attribution.tenant(header_map),
            attribution=attribution.attributes(header_map),
            conversation=attribution.conversation(header_map) or conversation,
            provider=route.provider or self.adapter.flavor,
            pricing_provider=route.pricing_provider,
            upstream=route.name,
            server_address=upstream.host,
            server_port=upstream.port,
            chunk_times=self.proxy.chunk_times,
            **fields,
        )

    def _parse(self, body: bytes) -> ParsedBody:
        """The fields we account for; a body we fail to read is forwarded as it came."""
        proxy = self.proxy
        try:
            return self.adapter.parse(
                body,
                path=self.path.decode("latin-1"),
                content_type=next((v for k, v in self.scope["headers"] if k == b"content-type"), b""),
                inject_usage=proxy.inject_stream_usage and not proxy.rejects_usage_option,
                capture_content=proxy.capture_content,
            )
        except Exception:  # noqa: BLE001 - accounting never breaks traffic; counted
            proxy.recorder.failed("accounting")
            return ParsedBody(None, False, {}, body, False)

    def _record_unsent(self, status: int, outcome: Outcome) -> None:
        """Record a request that never went upstream (refused, or the client left)."""
        info = self._info(model=None)
        self.acc = self.adapter.observe(info, self.start)
        # Its span is ended in _finish like any other (kept, or it would never be exported).
        self.handle = self.proxy.recorder.start(info, self.scope["headers"], self.start)
        self.status, self.outcome = status, outcome
        self._finish()

    # --- forward ----------------------------------------------------------------------------

    def _upstream_headers(self, admitted: Admitted) -> list[tuple[bytes, bytes]]:
        """The headers that go upstream, as bytes: the client's pass through unchanged."""
        out = admitted.headers
        if admitted.parsed.usage_injected:
            # The usage chunk can only be cut from an uncompressed stream.
            out = [(k, v) for k, v in out if k.lower() != b"accept-encoding"] + [(b"accept-encoding", b"identity")]
        if self.handle is not None:
            trace: dict[str, str] = {}
            self.proxy.recorder.inject(self.handle, trace)
            out = [(k, v) for k, v in out if k.lower() not in _TRACE_HEADERS] + [
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in trace.items()
            ]
        return out

    async def _forward(self, headers: list[tuple[bytes, bytes]], admitted: Admitted) -> Response | None:
        """The upstream's response, or None once the proxy has answered a failure itself."""
        upstream = self.route.upstream
        target = self._target()
        try:
            resp = await upstream.send(self.scope["method"], target, headers, admitted.parsed.body)
            if admitted.parsed.usage_injected and resp.status == 400:
                # An upstream that refuses stream_options gets the client's own body, once; we remember.
                if rejects_usage_option(resp.status, await resp.peek(REJECTION_PEEK)):
                    resp.release()
                    self.proxy.rejects_usage_option = True
                    log.info("upstream rejects stream_options; streams from it will carry no usage")
                    resp = await upstream.send(self.scope["method"], target, headers, admitted.original)
                    self.cut_usage = False
        except UpstreamUnreachable as exc:
            _warn_unreachable(upstream.host, upstream.port, str(exc))
            await self._fail(502, Outcome.UPSTREAM_UNREACHABLE, f"upstream unreachable ({exc})", "upstream_unreachable")
            return None
        except UpstreamTimeout:
            await self._fail(504, Outcome.UPSTREAM_TIMEOUT, "upstream did not answer in time", "upstream_timeout")
            return None
        except UnsendableHeader as exc:  # (a configured key, say): the client refused to write it
            await self._fail(400, Outcome.REJECTED, str(exc), "invalid_header")
            return None
        except (UpstreamBadResponse, UpstreamBroken) as exc:
            await self._fail(
                502, Outcome.UPSTREAM_ERROR, str(exc) or "upstream broke off its answer", "upstream_bad_response"
            )
            return None
        return resp

    def _decoded_path(self) -> str:
        """The path the upstream gets, percent-decoded (as the upstream will read it)."""
        return unquote(self.path.decode("latin-1")) if self.route.prefix else str(self.scope["path"])

    def _target(self) -> str:
        """Path and query as the client sent them (a route's prefix replaced)."""
        query: bytes = self.scope.get("query_string", b"")
        return (self.path + b"?" + query if query else self.path).decode("latin-1")

    async def _fail(self, status: int, outcome: Outcome, message: str, code: str) -> None:
        self.status, self.outcome = status, outcome
        await respond(self.send, status, error_body(message, code))
        self.done = True

    # --- relay ------------------------------------------------------------------------------

    cut_usage = True  # cleared when the upstream refused the usage option and got the original body

    async def _relay_and_release(self, resp: Response) -> None:
        try:
            await self._relay(resp)
        finally:
            if self.observer is not None:
                self.observer.discard()  # a body buffered for accounting, if the relay ended early
            if self.done or self.outcome is Outcome.COMPLETED:
                resp.release()
            else:
                resp.close()  # mid-body: the connection cannot be reused

    async def _relay(self, resp: Response) -> None:
        acc = self.acc
        assert acc is not None
        hmap = hp.header_map([(k.lower(), v) for k, v in resp.headers])
        observer = ResponseObserver(
            acc,
            content_type=hmap.get(b"content-type", b""),
            content_encoding=hmap.get(b"content-encoding", b""),
            cut_usage=acc.info.usage_injected and self.cut_usage,
            body_limit=self.proxy.max_body_bytes,
            event_limit=self.proxy.max_event_bytes,
            budget=self.proxy.observe_budget,
            on_failure=self._accounting_failed,
            on_skip=lambda reason: self.proxy.recorder.skipped(acc.info.endpoint, reason),
        )
        self.observer = observer
        # Cutting changes the length; the server frames the body itself (chunked).
        drop = frozenset({b"content-length"}) if observer.cutting else frozenset()
        self.status = resp.status
        if resp.status >= 400:
            self.outcome = Outcome.UPSTREAM_ERROR
        try:
            acc.on_headers(resp.headers, time.time())  # rate-limit headroom: a 429's head says most
        except Exception:  # noqa: BLE001 - accounting never breaks traffic; counted
            self._accounting_failed()
        headers = hp.with_defaults(hp.response_headers(resp.headers, drop=drop), int(time.time()))
        await self.send({"type": "http.response.start", "status": resp.status, "headers": headers})
        send = self.send
        cutting = observer.cutting
        first = True
        overhead = 0.0
        try:
            async for chunk in resp.chunks():
                now = perf_counter()
                if first:
                    acc.on_first_byte(now)
                    first = False
                if cutting:
                    chunk = observer.cut(chunk, now)
                    cutting = observer.cutting
                    overhead += perf_counter() - now
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                else:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    fed = perf_counter()
                    observer.feed(chunk, now)
                    overhead += perf_counter() - fed
        except (UpstreamBroken, UpstreamTimeout):
            self.outcome = Outcome.STREAM_INTERRUPTED
            return  # returning without the last body message makes the server drop the connection
        finally:
            self.overhead += overhead
        rest = observer.close()
        self.done = True
        await send({"type": "http.response.body", "body": rest, "more_body": False})

    def _release_body(self) -> None:
        self.proxy.body_budget.give(self.body_held)
        self.body_held = 0

    def _accounting_failed(self) -> None:
        self.proxy.recorder.failed("accounting")

    async def _watch_disconnect(self, task: asyncio.Task[None]) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                if not self.done:
                    self.client_gone = True
                    task.cancel()
                return

    # --- finish -----------------------------------------------------------------------------

    def _finish(self) -> None:
        acc, self.acc = self.acc, None
        if acc is None:
            return
        recorder = self.proxy.recorder
        try:
            obs = acc.finish(self.outcome, self.status, perf_counter(), proxy_overhead=self.overhead)
        except Exception:  # noqa: BLE001 - accounting never breaks traffic; counted
            recorder.abandon(acc.info)
            recorder.failed("accounting")
            return
        recorder.finish(obs, self.handle)
