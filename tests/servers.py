"""Tests run real servers on loopback ports; the helper lives in the package."""

from __future__ import annotations

from llmobs.serving import ServerThread, bound_socket, serve

__all__ = ["ServerThread", "bound_socket", "serve"]
