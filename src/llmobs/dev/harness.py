"""Run an ASGI app under uvicorn in a background thread (demo, tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llmobs.runner import ServerThread, bound_socket

__all__ = ["ServerThread", "bound_socket", "serve"]


@contextmanager
def serve(app: Any, **config: Any) -> Iterator[ServerThread]:
    """Serve `app` on a loopback port for the duration of the block."""
    server = ServerThread(app, **config).start()
    try:
        yield server
    finally:
        server.stop()
