"""Assemble the application: the raw-ASGI proxy plus FastAPI admin routes."""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from pydantic import SecretStr

from llmobs.apis.table import classify, classify_websocket
from llmobs.attribution import Attribution
from llmobs.config import Settings, attribution_name, multiprocess_dir
from llmobs.proxy.asgi import Receive, Scope, Send, default_headers, lifespan
from llmobs.proxy.h1client import H1Upstream
from llmobs.proxy.proxy import Proxy
from llmobs.proxy.routing import Route, Router
from llmobs.proxy.upstream import Timeouts
from llmobs.telemetry.process import ProcessMetrics, scrape_registry
from llmobs.telemetry.providers import resolve
from llmobs.telemetry.recorder import Recorder
from llmobs.telemetry.sinks.prometheus import PrometheusSink

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from llmobs.telemetry.pricing import PriceTable
    from llmobs.telemetry.sinks.otel import OTelSink

log = logging.getLogger("llmobs")

ADMIN_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


def admin_app(
    registry: Callable[[], CollectorRegistry], ready: Callable[[], bool], *, token: str | None = None
) -> FastAPI:
    """/metrics, /healthz and /readyz; /metrics behind a bearer token when one is set.

    The probes stay open: they reveal nothing, and orchestrators call them without credentials.
    """
    admin = FastAPI(title="llmobs admin", docs_url=None, redoc_url=None, openapi_url=None)
    expected = f"Bearer {token}".encode() if token else None

    render = MetricsRenderer(registry)

    @admin.get("/metrics")
    async def metrics(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):
                return Response(
                    b'{"error":"unauthorized"}',
                    status_code=401,
                    media_type="application/json",
                    headers={"www-authenticate": "Bearer"},
                )
        body, content_type = await render(request.headers.get("accept", ""))
        return Response(body, media_type=content_type)

    @admin.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @admin.get("/readyz")
    def readyz() -> Response:
        if ready():
            return Response(b'{"status":"ready"}', media_type="application/json")
        return Response(b'{"status":"not ready"}', status_code=503, media_type="application/json")

    return admin


class MetricsRenderer:
    """Renders /metrics off the event loop, one render at a time per format.

    A large exposition takes a while to write; rendered on the event loop it would stall
    every proxied request meanwhile, and parallel scrapes would multiply the cost. Here the
    work runs in a worker thread, and a scrape that arrives while a render is running waits
    for that render and gets its result: ten parallel scrapes cost one render.
    """

    def __init__(self, registry: Callable[[], CollectorRegistry]) -> None:
        self.registry = registry
        self._running: dict[str, asyncio.Future[bytes]] = {}

    async def __call__(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        running = self._running.get(content_type)
        if running is None:
            running = asyncio.ensure_future(asyncio.to_thread(lambda: encoder(self.registry())))
            self._running[content_type] = running
            running.add_done_callback(lambda _: self._running.pop(content_type, None))
        return await asyncio.shield(running), content_type


class LLMObs:
    """The ASGI application: lifespan, admin routes, and the proxy for everything else."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        otel_from_env: bool = True,
        strict: bool = False,
    ) -> None:
        self.settings = settings
        self.strict = strict
        self.registry = registry if registry is not None else CollectorRegistry()
        self.prometheus = PrometheusSink(
            self.registry,
            max_label_values=settings.max_label_values,
            max_series=settings.max_series_per_metric,
            attribution_labels=tuple(settings.attribution_labels),
        )
        if settings.budget_file is not None:
            from llmobs.telemetry.budgets import read_budget_file

            self.prometheus.budgets(read_budget_file(settings.budget_file))
        self.tracer_provider, self.meter_provider = tracer_provider, meter_provider
        if otel_from_env and tracer_provider is None and meter_provider is None:
            from llmobs.telemetry.otel_setup import providers_from_env

            self.tracer_provider, self.meter_provider = providers_from_env(
                on_span_dropped=lambda: self.prometheus.telemetry_error("otel_span_dropped"),
                on_export_failed=lambda n: self.prometheus.telemetry_error("otel_export_failed", n),
                max_series=settings.max_series_per_metric,
            )
        self.router = build_router(settings)
        self.upstream = self.router.default.upstream
        for route in self.router.all:
            self.prometheus.upstream(route.name, route.provider, route.upstream.host)
        otel = self._otel_sink()
        self.recorder = Recorder(
            self.prometheus,
            _load_prices(settings),
            tracer=otel,
            sinks=(otel,) if otel is not None else (),
            strict=strict,
            max_tokens=settings.max_tokens_per_request,
        )
        self.proxy = Proxy(
            self.router,
            self.recorder,
            classify,
            sessions=classify_websocket,
            attribution=build_attribution(settings),
            inject_stream_usage=settings.inject_stream_usage,
            max_body_bytes=settings.max_body_bytes,
            capture_content=settings.capture_content,
            max_message_bytes=settings.max_websocket_message_bytes,
            max_buffered_bytes=settings.max_buffered_bytes,
            max_event_bytes=settings.max_event_bytes,
            chunk_times=self.meter_provider is not None,  # time_per_output_chunk: only for OTel metrics
        )
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.scrape = scrape_registry(self.registry, multiprocess_dir())
        self.process_metrics = ProcessMetrics(self.registry, multiprocess=multiprocess_dir() is not None)
        self._refresher: asyncio.Task[None] | None = None
        self.admin = default_headers(admin_app(self.scrape, lambda: self.ready, token=token))
        # With an admin port, /metrics etc. are served there, and this app proxies every path.
        self.admin_paths = ADMIN_PATHS if settings.admin_port is None else frozenset()
        self.ready = False

    def _otel_sink(self) -> OTelSink | None:
        if self.tracer_provider is None and self.meter_provider is None:
            return None
        from llmobs.telemetry.providers import provider_name
        from llmobs.telemetry.redaction import Redactor
        from llmobs.telemetry.sinks.otel import OTelSink

        return OTelSink(
            self.tracer_provider,
            self.meter_provider,
            provider_name=provider_name(self.settings.upstream_url, self.settings.provider),
            server_address=self.upstream.host,
            server_port=self.upstream.port,
            redactor=Redactor(enabled=self.settings.redact_content, extra_patterns=self.settings.redact_patterns),
            max_attribute_values=self.settings.max_label_values,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["path"] in self.admin_paths:
                await self.admin(scope, receive, send)
            else:
                await self.proxy(scope, receive, send)
        elif kind == "websocket":
            await self.proxy.websocket(scope, receive, send)
        elif kind == "lifespan":
            await lifespan(receive, send, self.startup, self.shutdown)

    async def startup(self) -> None:
        _quiet_server_log()
        for route in self.router.all:
            await route.upstream.open()
        # Everything built so far lives as long as the process: move it out of the
        # collector's sight, or each full collection walks ~90,000 objects (~100 ms pauses
        # measured in the benchmark's p99 tail).
        gc.collect()
        gc.freeze()
        if self.process_metrics.multiprocess:
            self._refresher = asyncio.ensure_future(self._refresh_process_metrics())
        self.ready = True

    async def _refresh_process_metrics(self) -> None:
        while True:
            await asyncio.sleep(5)
            self.process_metrics.refresh()

    async def shutdown(self) -> None:
        self.ready = False
        if self._refresher is not None:
            self._refresher.cancel()
        for route in self.router.all:
            await route.upstream.close()
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                try:
                    provider.shutdown()  # flushes what is queued
                except Exception:
                    log.warning("OpenTelemetry shutdown failed", exc_info=True)


class _ServerLog(logging.Filter):
    """What uvicorn would log that llmobs must not, or not at that length.

    - Its per-connection WebSocket lines and the WebSocket library's debug trace (`< GET
      /path?query`, `< header: value`, `< TEXT '...'`) print the path, query, headers and
      frames, which can carry a key (Azure OpenAI's Realtime takes `api-key` in the query;
      browsers send it as a subprotocol) or prompt content. HTTP has no access log either.
    - A request still running when the shutdown grace period ends is cancelled; uvicorn logs
      a full traceback for each, which tells nothing: one line each instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if isinstance(msg, str) and msg.startswith(('%s - "WebSocket', "< ", "> ", "%s - ")):
            return False
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            record.msg, record.args, record.exc_info = "request cancelled: the shutdown grace period ended", (), None
        return True


_SERVER_LOG = _ServerLog()


def _quiet_server_log() -> None:
    logging.getLogger("uvicorn.error").addFilter(_SERVER_LOG)  # adding it twice is a no-op


def build_attribution(settings: Settings) -> Attribution:
    """Who sent a request, as the settings say to tell it."""
    from llmobs.attribution import read_tenant_map

    return Attribution(
        tenant_header=settings.tenant_header.encode("latin-1"),
        salt=settings.tenant_salt.get_secret_value().encode() if settings.tenant_salt else None,
        trust_header=settings.trust_tenant_header,
        names=read_tenant_map(settings.tenant_map_file) if settings.tenant_map_file else {},
        headers=tuple((h.encode("latin-1"), attribution_name(h)) for h in settings.attribution_headers),
        conversation_header=settings.conversation_header.encode("latin-1"),
    )


def build_router(settings: Settings) -> Router:
    """The default upstream and the configured routes, each with its own connection pool."""
    timeouts = Timeouts(settings.connect_timeout, settings.read_timeout, settings.total_timeout)

    def route(name: str, url: str, provider: str | None, key: SecretStr | None, prefix: str = "") -> Route:
        ids = resolve(url, provider)
        base = urlsplit(url).path.rstrip("/")
        path = base if prefix else ""
        # The default upstream gets paths as clients send them: its key goes only under its URL's
        # path (and the extra prefixes configured); a route's path is its URL's by construction.
        key_paths = (base, *settings.upstream_key_paths) if base and not prefix else (base,) if base else ()
        return Route(
            name=name,
            upstream=H1Upstream(url, timeouts=timeouts, max_connections=settings.max_connections),
            prefix=prefix.encode(),
            path=path.encode(),
            provider=ids.name if ids else None,
            pricing_provider=ids.pricing if ids else None,
            credential=credential(key.get_secret_value(), ids.name if ids else None) if key else None,
            key_paths=key_paths,
        )

    default = route("", settings.upstream_url, settings.provider, settings.upstream_api_key)
    routes = [route(r.prefix, r.url, r.provider, r.api_key, r.prefix) for r in settings.routes]
    return Router(default, routes)


def credential(key: str, provider: str | None) -> tuple[bytes, bytes]:
    """The header that carries an API key to this provider."""
    value = key.encode("latin-1")
    if provider == "anthropic":
        return (b"x-api-key", value)
    if provider == "azure.ai.openai":
        return (b"api-key", value)
    return (b"authorization", b"Bearer " + value)


def _load_prices(settings: Settings) -> PriceTable:
    from llmobs.telemetry.pricing import PriceTable
    from llmobs.telemetry.providers import pricing_provider

    return PriceTable.load(
        provider=pricing_provider(settings.upstream_url, settings.provider), price_file=settings.price_file
    )


def create_app(settings: Settings | None = None, **kwargs: Any) -> LLMObs:  # kwargs: LLMObs's
    """The llmobs ASGI app for `settings` (defaults from the environment)."""
    if settings is None:  # a worker of `llmobs serve --workers N`
        from llmobs.config import load_settings

        settings = load_settings()
        if threading.current_thread() is threading.main_thread():
            # A hang-up reaches the whole process group: the supervisor restarts the workers
            # gracefully on it; a worker killed by it would cut its streams.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return LLMObs(settings, **kwargs)
