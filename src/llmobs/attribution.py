"""Who sent a request: the tenant, from a header or a fingerprint of the API key (never the key)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache


@lru_cache(maxsize=1024)  # a handful of keys send most traffic; bounded, as clients choose them
def fingerprint(key: str) -> str:
    """A short, non-reversible tenant id for an API key: never the key itself."""
    return "key-" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:10]


_INSECURE_KEY = "openai-insecure-api-key."  # browsers' Realtime clients send the key as a subprotocol


def tenant_of(headers: dict[bytes, bytes], tenant_header: bytes, subprotocols: Sequence[str] | None = None) -> str:
    """Tenant from the configured header, else an API-key fingerprint, else empty.

    The key may come in `Authorization`, Anthropic's `x-api-key`, Azure's `api-key`, or a
    WebSocket subprotocol `openai-insecure-api-key.<key>`.
    """
    value = headers.get(tenant_header)
    if value:
        return value.decode("latin-1").strip()
    auth = headers.get(b"authorization")
    if auth:
        scheme, _, token = auth.decode("latin-1").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else auth.decode("latin-1").strip()
        if key:
            return fingerprint(key)
    for name in (b"x-api-key", b"api-key"):  # Anthropic's header, Azure's
        key = headers.get(name, b"").decode("latin-1").strip()
        if key:
            return fingerprint(key)
    for protocol in subprotocols or ():
        if protocol.startswith(_INSECURE_KEY) and len(protocol) > len(_INSECURE_KEY):
            return fingerprint(protocol[len(_INSECURE_KEY) :])
    return ""
