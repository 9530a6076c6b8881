"""How the simulated upstream keeps its connections: uvicorn's way, or llama-server's.

A real llama-server (llama.cpp, its cpp-httplib) answers a stream with ``Connection:
keep-alive`` and ``Keep-Alive: timeout=5, max=100``, then ends the connection right after the
last chunk: it shuts its sending side down (a FIN), reads and drops whatever arrives for up to
100 ms (``drain_and_close_socket``), then closes. A request a client wrote into that connection
meanwhile gets no answer and no reset: nothing on the wire tells it from a request the server
read and then died on. A proxy that pools connections must not turn that into an error.

``closing_protocol(delay)`` is uvicorn's httptools protocol with that behaviour after every
response whose body is chunked (a response with a Content-Length keeps its connection, as
llama-server's do): reads stop being served, and ``delay`` seconds later (0: at once, as
llama-server does; more: a server descheduled between its last write and its shutdown) the
connection is shut down and drained. Serve the simulator with it:
``uvicorn.Config(app, http=closing_protocol(0))``, or ``llmobs simulate --close-after-response 0``.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DRAIN = 0.1  # seconds cpp-httplib reads and drops what arrives after its shutdown, then closes


class _ClosingProtocol(HttpToolsProtocol):
    close_delay = 0.0
    closing = False

    def on_response_complete(self) -> None:
        chunked = bool(self.cycle is not None and self.cycle.chunked_encoding)
        super().on_response_complete()
        if not chunked or self.transport.is_closing():
            return
        self.closing = True  # from now on, whatever arrives is dropped
        if self.close_delay > 0:
            self.loop.call_later(self.close_delay, self._shut_down)
        else:
            self._shut_down()

    def _shut_down(self) -> None:
        if not self.transport.is_closing():
            self.transport.write_eof()
            self.loop.call_later(DRAIN, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if not self.closing:
            super().data_received(data)


def closing_protocol(delay: float = 0.0) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, ending each connection `delay` seconds after a chunked response."""
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay}")
    return type("ClosingProtocol", (_ClosingProtocol,), {"close_delay": delay})
