"""Which upstream serves a request: the default one, or the route whose prefix is longest."""

from __future__ import annotations

from dataclasses import dataclass

from llmobs.proxy.upstream import Client


@dataclass(frozen=True, slots=True)
class Route:
    """One upstream and what the proxy knows of it."""

    name: str  # the `upstream` label: "" for the default upstream, else the route's prefix
    upstream: Client
    prefix: bytes = b""  # b"" for the default upstream, which gets every path as sent
    path: bytes = b""  # what the prefix is replaced by: the route URL's path
    provider: str | None = None  # gen_ai.provider.name, when known
    pricing_provider: str | None = None  # the genai-prices id, when known
    credential: tuple[bytes, bytes] | None = None  # the key header sent instead of the client's
    key_paths: tuple[str, ...] = ()  # with a credential: the only path prefixes it is sent to


class Router:
    """Longest prefix wins; a path under no prefix goes to the default upstream, unchanged."""

    def __init__(self, default: Route, routes: list[Route] | tuple[Route, ...] = ()) -> None:
        self.default = default
        self.routes = tuple(sorted(routes, key=lambda r: len(r.prefix), reverse=True))

    @property
    def all(self) -> tuple[Route, ...]:
        return (self.default, *self.routes)

    def match(self, raw_path: bytes) -> tuple[Route, bytes]:
        """The route of a request target's path, and the path to send it on."""
        for route in self.routes:
            prefix = route.prefix
            if raw_path.startswith(prefix) and raw_path[len(prefix) : len(prefix) + 1] in (b"", b"/"):
                return route, (route.path + raw_path[len(prefix) :]) or b"/"
        return self.default, raw_path


def key_may_go(route: Route, path: str) -> bool:
    """Whether a request on `path` (decoded, as the upstream gets it) may carry the route's key.

    The operator's key is sent only under the upstream URL's own path (and configured
    extra prefixes): never to another API of the same host, and never through dot segments,
    which the upstream may resolve to a path outside the prefix.
    """
    if route.credential is None:
        return True
    if any(segment in (".", "..") for segment in path.split("/")):
        return False
    return not route.key_paths or any(path == p or path.startswith(p.rstrip("/") + "/") for p in route.key_paths)
