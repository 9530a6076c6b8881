"""The raw-ASGI hot path: forward a request, relay the response, observe a copy."""

from __future__ import annotations

import asyncio
import logging
import zlib
from time import perf_counter
from typing import Any

from llmobs.apis.accounting import Accumulator, without_null_usage
from llmobs.apis.request import ParsedBody, parse_body, tenant_of
from llmobs.apis.table import classify
from llmobs.proxy import headers as hp
from llmobs.proxy.asgi import BodyTooLarge, ClientGone, Receive, Scope, Send, error_body, read_body, respond
from llmobs.proxy.upstream import (
    Upstream,
    UpstreamBadResponse,
    UpstreamBroken,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from llmobs.records import Outcome, RequestInfo
from llmobs.sse import SSEDecoder
from llmobs.telemetry.recorder import Recorder

log = logging.getLogger("llmobs")


_REJECTION_PEEK = 64 * 1024  # how much of a 400 we read to see if it is about stream_options
# Cutting the usage chunk holds back the bytes of an unfinished event. A chat chunk is small;
# an "event" this large means the stream is not what we think, so we stop cutting and relay.
_HOLD_LIMIT = 1024 * 1024


_ZLIB = type(zlib.decompressobj())


def _decoder(encoding: bytes) -> Any:
    """A decompressor for the observer's copy of a content-encoded body, or None."""
    encoding = encoding.strip().lower()
    if encoding in (b"gzip", b"x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == b"deflate":
        return zlib.decompressobj()
    if encoding == b"br":
        try:
            import brotli  # type: ignore[import-not-found]
        except ImportError:
            return None
        return brotli.Decompressor()
    return None


class Proxy:
    """Forwards every request to one upstream, byte for byte, and records what it saw."""

    def __init__(
        self,
        upstream: Upstream,
        recorder: Recorder,
        *,
        tenant_header: str = "x-llmobs-tenant",
        upstream_authorization: str | None = None,
        inject_stream_usage: bool = True,
        max_body_bytes: int = 64 * 1024 * 1024,
        capture_content: bool = False,
    ) -> None:
        self.upstream = upstream
        self.recorder = recorder
        self.tenant_header = tenant_header.lower().encode("latin-1")
        self.authorization = upstream_authorization.encode("latin-1") if upstream_authorization else None
        self.inject_stream_usage = inject_stream_usage
        self.max_body_bytes = max_body_bytes
        self.capture_content = capture_content
        self.rejects_usage_option = False  # learnt from the upstream; see _retry_without_usage_option
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = perf_counter()
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if not raw_path.startswith(b"/"):
            await respond(send, 400, error_body("request target must be a path", "invalid_request_target"))
            return
        endpoint = classify(scope["method"], scope["path"])
        self.in_flight += 1
        exchange = _Exchange(self, scope, receive, send, start, endpoint)
        try:
            await exchange.run()
        finally:
            self.in_flight -= 1


class _Exchange:
    """One request's journey. Finishes its accumulator exactly once."""

    def __init__(self, proxy: Proxy, scope: Scope, receive: Receive, send: Send, start: float, endpoint: Any) -> None:
        self.proxy = proxy
        self.scope = scope
        self.receive = receive
        self.send = send
        self.start = start
        self.endpoint = endpoint
        self.status = 499  # until a response starts
        self.outcome = Outcome.COMPLETED
        self.overhead = 0.0
        self.response_started = False
        self.done = False  # our last byte is out; a later disconnect is no news
        self.client_gone = False
        self.acc: Accumulator | None = None
        self.handle: Any = None

    async def run(self) -> None:
        recorder = self.proxy.recorder
        headers = self.scope["headers"]
        hmap = hp.header_map(headers)
        try:
            body = await read_body(self.receive, self.proxy.max_body_bytes)
        except BodyTooLarge:
            limit = self.proxy.max_body_bytes
            message = error_body(f"request body is larger than {limit} bytes", "request_too_large")
            await respond(self.send, 413, message, extra=[(b"connection", b"close")])
            self._record_unsent(hmap, 413, Outcome.REJECTED)
            return
        except ClientGone:
            self._record_unsent(hmap, 499, Outcome.CLIENT_CLOSED)
            return
        body_read = perf_counter()
        upstream_headers = hp.request_headers(headers, authorization=self.proxy.authorization)
        bad = hp.unsendable(upstream_headers)
        if bad is not None:
            name = bad.decode("latin-1")[:64]  # never the value: it may be a secret
            await respond(self.send, 400, error_body(f"header {name!r} has control characters", "invalid_header"))
            self._record_unsent(hmap, 400, Outcome.REJECTED)
            return
        parsed = self._parse(body)
        info = RequestInfo(
            endpoint=self.endpoint.name,
            operation=self.endpoint.operation,
            model=parsed.model,
            stream=parsed.stream,
            tenant=tenant_of(hmap, self.proxy.tenant_header),
            params=parsed.params,
            usage_injected=parsed.usage_injected,
            capture_content=self.proxy.capture_content,
            input_content=parsed.input_content,
        )
        self.acc = self.endpoint.accumulator(info, self.start, strip_usage_chunk=parsed.usage_injected)
        self.handle = recorder.start(info, headers, self.start)
        out = [(hp.text(k), hp.text(v)) for k, v in upstream_headers]
        if self.handle is not None:
            trace: dict[str, str] = {}
            recorder.inject(self.handle, trace)
            out = [(k, v) for k, v in out if k.lower() not in ("traceparent", "tracestate")] + list(trace.items())
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.ensure_future(self._watch_disconnect(task))
        try:
            self.overhead += perf_counter() - body_read
            await self._exchange(out, body, parsed.body, parsed.usage_injected)
        except asyncio.CancelledError:
            if not self.client_gone:
                raise
            task.uncancel()
            self.outcome = Outcome.CLIENT_CLOSED
        finally:
            self.done = True
            watcher.cancel()
            self._finish()

    def _parse(self, body: bytes) -> ParsedBody:
        """The fields we account for; a body we fail to read is forwarded as it came."""
        try:
            return parse_body(
                self.endpoint,
                body,
                inject_usage=self.proxy.inject_stream_usage and not self.proxy.rejects_usage_option,
                capture_content=self.proxy.capture_content,
            )
        except Exception:
            self.proxy.recorder.failed("accounting")
            return ParsedBody(None, False, {}, body, False)

    def _record_unsent(self, hmap: Any, status: int, outcome: Outcome) -> None:
        """Record a request that never went upstream (too large, or the client left)."""
        info = RequestInfo(
            endpoint=self.endpoint.name,
            operation=self.endpoint.operation,
            model=None,
            tenant=tenant_of(hmap, self.proxy.tenant_header),
        )
        self.acc = self.endpoint.accumulator(info, self.start)
        self.proxy.recorder.start(info, [], self.start)
        self.status, self.outcome = status, outcome
        self._finish()

    async def _watch_disconnect(self, task: asyncio.Task[Any]) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                if not self.done:
                    self.client_gone = True
                    task.cancel()
                return

    async def _exchange(self, headers: list[tuple[str, str]], original: bytes, body: bytes, injected: bool) -> None:
        upstream = self.proxy.upstream
        method = self.scope["method"]
        target = self.scope.get("raw_path") or self.scope["path"].encode()
        query = self.scope.get("query_string", b"")
        target_str = (target + b"?" + query if query else target).decode("latin-1")
        if injected:
            # The usage chunk can only be cut from an uncompressed stream.
            headers = [(k, v) for k, v in headers if k.lower() != "accept-encoding"] + [("accept-encoding", "identity")]
        try:
            resp = await upstream.send(method, target_str, headers, body)
            if injected and resp.status == 400:
                resp = await self._retry_without_usage_option(resp, method, target_str, headers, original)
        except UpstreamUnreachable as exc:
            await self._fail(502, Outcome.UPSTREAM_UNREACHABLE, f"upstream unreachable ({exc})", "upstream_unreachable")
            return
        except UpstreamTimeout:
            await self._fail(504, Outcome.UPSTREAM_TIMEOUT, "upstream did not answer in time", "upstream_timeout")
            return
        except (UpstreamBadResponse, UpstreamBroken) as exc:
            await self._fail(
                502, Outcome.UPSTREAM_ERROR, str(exc) or "upstream broke off its answer", "upstream_bad_response"
            )
            return
        try:
            await self._relay(resp)
        finally:
            if self.done or self.outcome is Outcome.COMPLETED:
                resp.release()
            else:
                resp.close()

    async def _retry_without_usage_option(
        self, resp: UpstreamResponse, method: str, target: str, headers: list[tuple[str, str]], original: bytes
    ) -> UpstreamResponse:
        """An upstream that refuses stream_options gets the client's own body, once; we remember."""
        peek = b""
        async for chunk in resp.chunks():
            peek += chunk
            if len(peek) > _REJECTION_PEEK:
                break
        if b"stream_options" not in peek and b"include_usage" not in peek:
            return _Replay(resp, peek)  # type: ignore[return-value]
        resp.release()
        self.proxy.rejects_usage_option = True
        log.info("upstream rejects stream_options; streams from it will carry no usage")
        assert self.acc is not None
        self.acc.strip_usage_chunk = False
        return await self.proxy.upstream.send(method, target, headers, original)

    async def _fail(self, status: int, outcome: Outcome, message: str, code: str) -> None:
        self.status, self.outcome = status, outcome
        self.response_started = True
        await respond(self.send, status, error_body(message, code))
        self.done = True

    async def _relay(self, resp: UpstreamResponse) -> None:
        acc = self.acc
        assert acc is not None
        hmap = hp.header_map([(k.lower(), v) for k, v in resp.headers])
        encoding = hmap.get(b"content-encoding", b"")
        sse = b"text/event-stream" in hmap.get(b"content-type", b"").lower()
        strip = acc.strip_usage_chunk and sse and not encoding
        acc.strip_usage_chunk = strip
        # Cutting changes the length; the server frames the body itself (chunked).
        drop = frozenset({b"content-length"}) if strip else frozenset()
        self.status = resp.status
        if resp.status >= 400:
            self.outcome = Outcome.UPSTREAM_ERROR
        await self.send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": hp.response_headers(resp.headers, drop=drop),
            }
        )
        self.response_started = True
        observer = _Observer(self, acc, encoding, sse)
        try:
            async for chunk in resp.chunks():
                now = perf_counter()
                if acc.first_byte is None:
                    acc.first_byte = now
                if acc.strip_usage_chunk:
                    chunk = observer.filtered(chunk, now)
                    self.overhead += perf_counter() - now
                    if chunk:
                        await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
                else:
                    await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
                    fed = perf_counter()
                    observer.feed(chunk, now)
                    self.overhead += perf_counter() - fed
        except (UpstreamBroken, UpstreamTimeout):
            self.outcome = Outcome.STREAM_INTERRUPTED
            acc.error_type = acc.error_type or "stream_interrupted"
            return  # returning without the last body message makes the server drop the connection
        rest = observer.close()
        self.done = True
        await self.send({"type": "http.response.body", "body": rest, "more_body": False})

    def _finish(self) -> None:
        acc = self.acc
        if acc is None:
            return
        self.acc = None
        end = perf_counter()
        recorder = self.proxy.recorder
        try:
            cost = recorder.price(acc.info.model, acc.response_model, acc.usage)
            obs = acc.finish(self.outcome, self.status, end, proxy_overhead=self.overhead, cost=cost)
        except Exception:
            self.proxy.recorder.failed("accounting")
            self.proxy.recorder.prometheus.ended(acc.info.endpoint)
            return
        self.proxy.recorder.finish(obs, self.handle)


class _Observer:
    """Feeds a copy of the body to the accumulator; failures are counted, never raised."""

    def __init__(self, exchange: _Exchange, acc: Accumulator, encoding: bytes, sse: bool) -> None:
        self.exchange = exchange
        self.acc = acc
        self.limit = exchange.proxy.max_body_bytes
        # While cutting, _HOLD_LIMIT bounds the decoder; an event over its own bound would be lost.
        bound = None if acc.strip_usage_chunk else self.limit
        self.sse = SSEDecoder(max_event_bytes=bound) if sse else None
        # Only a body the accumulator reads is kept (not /models lists, file downloads...).
        self.body: bytearray | None = bytearray() if not sse and acc.reads_body else None
        self.decompress = _decoder(encoding) if encoding and encoding.strip().lower() != b"identity" else None
        self.blind = bool(encoding) and self.decompress is None and encoding.strip().lower() != b"identity"
        self.broken = False
        self.kept_last = True

    def _plain(self, chunk: bytes) -> bytes | None:
        """The chunk decoded; None when it cannot be: the upstream's bytes, not our failure."""
        if self.decompress is None:
            return chunk
        try:
            if isinstance(self.decompress, _ZLIB):
                data = self.decompress.decompress(chunk, self.limit)
                if self.decompress.unconsumed_tail:  # one chunk inflating past the limit: a bomb
                    self.blind = True
                    return None
                return data
            return self.decompress.process(chunk)  # type: ignore[no-any-return]
        except Exception:
            self.blind = True  # corrupt compressed data: relayed as is, not observed
            return None

    def feed(self, chunk: bytes, now: float) -> None:
        if self.broken or self.blind or (self.sse is None and self.body is None):
            return
        data = self._plain(chunk)
        if data is None:
            return
        try:
            if self.sse is not None:
                for event in self.sse.feed(data):
                    self.acc.on_event(event, now)
            elif self.body is not None:
                if len(self.body) + len(data) > self.limit:
                    self.body = None  # too big to parse; usage will count as missing
                else:
                    self.body += data
        except Exception:
            self._broke()

    def filtered(self, chunk: bytes, now: float) -> bytes:
        """The chunk less the usage-only event the proxy asked for (uncompressed SSE only)."""
        assert self.sse is not None
        out = []
        for event in self.sse.feed(chunk):
            if event.tail:  # the LF of a CRLF split across chunks: goes where its event went
                keep = self.kept_last
            else:
                keep = True
                if not self.broken:
                    try:
                        keep = self.acc.on_event(event, now)
                    except Exception:
                        self._broke()
            self.kept_last = keep
            if keep:
                out.append(without_null_usage(event.raw))
        if self.sse.pending_size > _HOLD_LIMIT:
            self.acc.strip_usage_chunk = False  # relay from here on; see _HOLD_LIMIT
            out.append(self.sse.take_pending())
            self.sse.max_event_bytes = self.limit
        return b"".join(out)

    def close(self) -> bytes:
        """End of body: account a buffered body; return held-back stream bytes, if any."""
        if self.sse is not None:
            return self.sse.pending if self.acc.strip_usage_chunk else b""
        if self.body is not None and not self.broken and not self.blind:
            try:
                if isinstance(self.decompress, _ZLIB):
                    self.body += self.decompress.flush()
                self.acc.on_body(bytes(self.body))
            except Exception:
                self._broke()
        return b""

    def _broke(self) -> None:
        self.broken = True
        self.exchange.proxy.recorder.failed("accounting")


class _Replay:
    """An upstream response whose first bytes were already read."""

    def __init__(self, resp: UpstreamResponse, head: bytes) -> None:
        self._resp = resp
        self._head = head
        self.status = resp.status
        self.headers = resp.headers

    async def chunks(self) -> Any:
        if self._head:
            yield self._head
        async for chunk in self._resp.chunks():
            yield chunk

    def close(self) -> None:
        self._resp.close()

    def release(self) -> None:
        self._resp.release()
