"""How the simulated upstream keeps its connections: uvicorn's, or llama-server's.

A real llama-server (llama.cpp) answers with ``Connection: keep-alive`` and ``Keep-Alive:
timeout=5, max=100``, then closes its side right after the response: the thread that served
the request closes the socket and reads nothing more. A request a client wrote into that
connection meanwhile is never read (the close then sends a reset, not a FIN). A proxy that
pools connections must not turn that into an error the server never gave.

``closing_protocol(delay)`` is uvicorn's httptools protocol with that behaviour: after every
response, reading stops, and the connection closes ``delay`` seconds later (0: at once, as
llama-server does when its thread runs on; more: a server descheduled between its last write
and its close). Serve the simulator with it: ``uvicorn.Config(app, http=closing_protocol(0))``,
or ``llmobs simulate --close-after-response 0``.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _ClosingProtocol(HttpToolsProtocol):
    close_delay = 0.0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        self.transport.pause_reading()  # the serving thread reads nothing more
        if self.close_delay > 0:
            self.loop.call_later(self.close_delay, self.transport.close)
        else:
            self.transport.close()


def closing_protocol(delay: float = 0.0) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, closing each connection `delay` seconds after each response."""
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay}")
    return type("ClosingProtocol", (_ClosingProtocol,), {"close_delay": delay})
