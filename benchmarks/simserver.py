"""The simulated upstream for the benchmark: llmobs's simulator, timing chosen per request.

`llmobs simulate` fixes TTFT and chunk gap for the whole process. The benchmark needs
several stream profiles against one upstream (so that direct, nginx and llmobs share it),
so this wrapper reads them from two request headers, which both proxies pass through:

    x-bench-ttft-ms: 20     x-bench-gap-ms: 5

Run: python benchmarks/simserver.py --port 8001
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from llmobs.sim import SimConfig, create_app

TTFT = b"x-bench-ttft-ms"
GAP = b"x-bench-gap-ms"


class TimedSim:
    """Dispatches each request to a simulator built for the TTFT and gap it asks for."""

    def __init__(self, default: SimConfig | None = None) -> None:
        default = default or SimConfig()
        self.default = default
        self.apps: dict[tuple[bytes, bytes], Any] = {(b"", b""): create_app(default)}

    def _app(self, headers: list[tuple[bytes, bytes]]) -> Any:
        ttft = gap = b""
        for name, value in headers:
            if name == TTFT:
                ttft = value
            elif name == GAP:
                gap = value
        key = (ttft, gap)
        app = self.apps.get(key)
        if app is None:
            config = SimConfig(
                ttft=float(ttft) / 1e3 if ttft else self.default.ttft,
                chunk_gap=float(gap) / 1e3 if gap else self.default.chunk_gap,
                output_tokens=self.default.output_tokens,
            )
            app = self.apps[key] = create_app(config)
        return app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self._app(scope["headers"]) if scope["type"] == "http" else self.apps[(b"", b"")]
        await app(scope, receive, send)


def main() -> None:
    """Serve the timed simulator on loopback (uvloop + httptools, like `llmobs simulate`)."""
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--host", default="127.0.0.1")
    args.add_argument("--port", type=int, required=True)
    opts = args.parse_args()
    uvicorn.run(
        TimedSim(),
        host=opts.host,
        port=opts.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_keep_alive=120,
    )


if __name__ == "__main__":
    main()
