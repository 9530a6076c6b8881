"""Run the proxy: one process or N workers, an optional admin port, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import uvicorn
import uvloop
from prometheus_client import CollectorRegistry

from llmobs.config import MULTIPROC_ENV, WORKER_SETTINGS_ENV, Settings, worker_settings_json
from llmobs.proxy.http_server import protocol_for

# A terminal hang-up drains like SIGTERM does, instead of killing streams at once.
DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining on SIGHUP as on SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGHUP, self.handle_exit)
        try:
            with super().capture_signals():
                yield
        finally:
            signal.signal(signal.SIGHUP, previous)


def server_options(settings: Settings, *, workers: bool = False) -> dict[str, Any]:
    """uvicorn's options for the proxy (all but where to listen): the one place they are set.

    The client limits reach the protocol class explicitly: bound to it in one process; in
    `workers` processes, read from the settings their environment carries (uvicorn imports the
    class there by name).
    """
    return {
        "loop": "uvloop",
        "http": "llmobs.proxy.http_server:WorkerHttpToolsProtocol" if workers else protocol_for(settings),
        "access_log": False,  # paths and queries can carry secrets
        "proxy_headers": False,  # the client address is never used: skip uvicorn's middleware
        # The upstream's Date and Server are relayed; the proxy adds its own only where they lack.
        "server_header": False,
        "date_header": False,
        "ws": "websockets-sansio",  # Realtime and other WebSocket APIs are relayed
        "ws_max_size": settings.max_websocket_message_bytes,
        "lifespan": "on",
        # SIGTERM: stop accepting, let in-flight requests and streams finish, then cancel them.
        "timeout_graceful_shutdown": max(1, round(settings.shutdown_grace_seconds)),
        "timeout_keep_alive": settings.keepalive_timeout,  # above common client and load-balancer idle timeouts
    }


def run(settings: Settings) -> None:
    """Serve until SIGTERM, SIGINT or SIGHUP, drain, exit with status 0."""
    # uvicorn drains, restores the handlers it found, then re-raises the signal it caught;
    # a no-op handler turns that into a clean exit instead of death by signal.
    for sig in DRAIN_SIGNALS:
        signal.signal(sig, lambda *_: None)
    if settings.workers > 1:
        _run_workers(settings)
        return
    from llmobs.app import create_app

    app = create_app(settings)
    server = DrainingServer(
        uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level=settings.log_level, **server_options(settings)
        )
    )
    # Not ready once a drain has begun, though the admin port still answers.
    admin = _start_admin(settings, app.scrape, lambda: app.ready and not server.should_exit)
    try:
        server.run()
    finally:
        if admin is not None:
            admin.stop()


def _run_workers(settings: Settings) -> None:
    """N worker processes behind one socket; /metrics sums all of them exactly.

    Each instance gets its own fresh multiprocess directory, so two instances on one host
    never share or wipe each other's counters; it is removed on exit.
    """
    directory = tempfile.mkdtemp(prefix="llmobs-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    os.environ[WORKER_SETTINGS_ENV] = worker_settings_json(settings)
    admin = None
    try:
        from llmobs.telemetry.process import scrape_registry

        if settings.admin_port is not None:
            admin = _start_admin(
                settings,
                scrape_registry(CollectorRegistry(), directory),
                lambda: _accepts(settings.host, settings.port),
            )
        # SIGHUP to this supervisor restarts the workers gracefully (each drains, as on SIGTERM);
        # the workers themselves ignore a hang-up (see llmobs.app.create_app).
        uvicorn.run(
            "llmobs.app:create_app",
            factory=True,
            workers=settings.workers,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            **server_options(settings, workers=True),
        )
    finally:
        if admin is not None:
            admin.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _start_admin(
    settings: Settings, registry: Callable[[], CollectorRegistry], ready: Callable[[], bool]
) -> ServerThread | None:
    if settings.admin_port is None:
        return None
    from llmobs.app import admin_app

    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    server = ServerThread(
        admin_app(registry, ready, token=token), host=settings.host, port=settings.admin_port, lifespan="off"
    )
    print(f"llmobs: admin routes on http://{settings.host}:{server.port}", file=sys.stderr)
    return server.start()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def bound_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening-ready socket; port 0 picks a free one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class ServerThread:
    """A uvicorn server (uvloop, httptools) on its own event loop thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        from llmobs.app import LLMObs

        self.sock = bound_socket(host, port)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        if isinstance(app, LLMObs):  # the proxy runs as `llmobs serve` runs it
            config = {**server_options(app.settings), **config}
        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "on")
        config.setdefault("loop", "uvloop")
        config.setdefault("http", "httptools")
        cfg = uvicorn.Config(app, **config)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"uvicorn-{self.port}")

    def _run(self) -> None:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.server.serve(sockets=[self.sock]))
        finally:
            loop.close()

    def start(self, timeout: float = 10.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
