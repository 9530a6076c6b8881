"""The ASGI entry of the proxy: route a request to its upstream and adapter, hand it to an
Exchange (HTTP) or a WebSocketRelay (upgrades), and hold what they share: limits, budgets and
what was learnt of the upstream."""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from urllib.parse import unquote

from llmobs.attribution import Attribution
from llmobs.budget import ByteBudget
from llmobs.observe import Adapter, SessionAdapter
from llmobs.proxy import headers as hp
from llmobs.proxy.asgi import Receive, Scope, Send, error_body, respond
from llmobs.proxy.exchange import Exchange
from llmobs.proxy.routing import Router, key_may_go
from llmobs.proxy.websocket import WebSocketRelay
from llmobs.records import RequestInfo
from llmobs.telemetry.recorder import Recorder


class Proxy:
    """Forwards every request to one upstream, byte for byte, and records what it saw."""

    def __init__(
        self,
        router: Router,
        recorder: Recorder,
        adapters: Callable[[str, str], Adapter],
        *,
        sessions: Callable[[str], SessionAdapter | None] = lambda path: None,
        attribution: Attribution | None = None,
        inject_stream_usage: bool = True,
        max_body_bytes: int = 64 * 1024 * 1024,
        capture_content: bool = False,
        max_message_bytes: int = 16 * 1024 * 1024,
        max_buffered_bytes: int = 1024 * 1024 * 1024,
        max_event_bytes: int = 8 * 1024 * 1024,
        chunk_times: bool = False,
    ) -> None:
        """`chunk_times`: note when each output chunk of a stream arrives (for an OTel meter)."""
        self.router = router
        self.recorder = recorder
        self.adapters = adapters
        self.sessions = sessions
        self.max_message_bytes = max_message_bytes
        # Request bodies of all requests in flight (past it: 503), and apart, so that accounting
        # never refuses traffic, the copies of response bodies kept to be read (past it: not read).
        self.body_budget = ByteBudget(max_buffered_bytes)
        self.observe_budget = ByteBudget(max_buffered_bytes)
        self.max_event_bytes = max_event_bytes
        self.attribution = attribution or Attribution()
        self.inject_stream_usage = inject_stream_usage
        self.max_body_bytes = max_body_bytes
        self.capture_content = capture_content
        self.chunk_times = chunk_times
        self.rejects_usage_option = False  # learnt from the upstream; see Exchange._forward
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = perf_counter()
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if not raw_path.startswith(b"/"):
            await respond(send, 400, error_body("request target must be a path", "invalid_request_target"))
            return
        route, path = self.router.match(raw_path)
        # Classified by the path the upstream gets: a route's prefix is not part of the API.
        api_path = scope["path"] if not route.prefix else path.decode("latin-1")
        adapter = self.adapters(scope["method"], api_path)
        self.in_flight += 1
        try:
            await Exchange(self, scope, receive, send, start, adapter, route, path).run()
        finally:
            self.in_flight -= 1

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Relay an upgraded connection to the route's upstream, frame by frame."""
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        route, path = self.router.match(raw_path)
        adapter = self.sessions(scope["path"] if not route.prefix else path.decode("latin-1"))
        query = scope.get("query_string", b"").decode("latin-1")
        upstream = route.upstream
        header_map = hp.header_map(scope["headers"])
        info = RequestInfo(
            endpoint=adapter.name if adapter else "other",
            operation=adapter.operation if adapter else None,
            model=adapter.model(query) if adapter else None,
            stream=True,
            tenant=self.attribution.tenant(header_map, scope.get("subprotocols")),
            attribution=self.attribution.attributes(header_map),
            conversation=self.attribution.conversation(header_map),
            provider=route.provider or (adapter.flavor if adapter else None),
            pricing_provider=route.pricing_provider,
            upstream=route.name,
            server_address=upstream.host,
            server_port=upstream.port,
            chunk_times=self.chunk_times,
        )
        relay = WebSocketRelay(
            scope,
            receive,
            send,
            route=route,
            path=path,
            info=info,
            observer=adapter.watch(info) if adapter else None,
            recorder=self.recorder,
            max_message_bytes=self.max_message_bytes,
            on_finish=self.recorder.finish_session,
        )
        self.recorder.start_session(info)
        self.in_flight += 1
        decoded = unquote(path.decode("latin-1")) if route.prefix else str(scope["path"])
        try:
            await relay.run(key_allowed=key_may_go(route, decoded))
        finally:
            self.in_flight -= 1
