"""Tests run real servers on loopback ports; the helper lives in the package."""

from __future__ import annotations

from llmobs.dev.harness import ServerThread, bound_socket, serve

__all__ = ["ServerThread", "bound_socket", "free_port", "serve"]


def free_port() -> int:
    """A loopback port that was free a moment ago, for a server started in a subprocess."""
    sock = bound_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port
