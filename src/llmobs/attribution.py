"""Who sent a request: the tenant, from a header or a fingerprint of the API key (never the key)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from functools import lru_cache

KEY_PREFIX = "key-"  # fingerprints start with it; a tenant header may not (it would pose as a key)


@lru_cache(maxsize=1024)  # a handful of keys send most traffic; bounded, as clients choose them
def fingerprint(key: str, salt: bytes | None = None) -> str:
    """A short, non-reversible tenant id for an API key: never the key itself.

    With a secret `salt` it is an HMAC-SHA256, which nobody without the salt can check a
    guessed key against; without one, a SHA-256 prefix (a weak key could be tried offline).
    """
    data = key.encode("utf-8", "surrogateescape")
    digest = hmac.new(salt, data, hashlib.sha256) if salt else hashlib.sha256(data)
    return KEY_PREFIX + digest.hexdigest()[:10]


_INSECURE_KEY = "openai-insecure-api-key."  # browsers' Realtime clients send the key as a subprotocol


def tenant_of(
    headers: dict[bytes, bytes],
    tenant_header: bytes,
    subprotocols: Sequence[str] | None = None,
    *,
    salt: bytes | None = None,
    trust_header: bool = True,
) -> str:
    """Tenant from the configured header, else an API-key fingerprint, else empty.

    The key may come in `Authorization`, Anthropic's `x-api-key`, Azure's `api-key`, or a
    WebSocket subprotocol `openai-insecure-api-key.<key>`. A header value that looks like a
    fingerprint (`key-...`) is ignored, so no client can be counted as another key; with
    `trust_header` off the header is ignored altogether (clients that are not trusted).
    """
    value = headers.get(tenant_header) if trust_header else None
    if value:
        tenant = value.decode("latin-1").strip()
        if tenant and not tenant.startswith(KEY_PREFIX):
            return tenant
    auth = headers.get(b"authorization")
    if auth:
        scheme, _, token = auth.decode("latin-1").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else auth.decode("latin-1").strip()
        if key:
            return fingerprint(key, salt)
    for name in (b"x-api-key", b"api-key"):  # Anthropic's header, Azure's
        key = headers.get(name, b"").decode("latin-1").strip()
        if key:
            return fingerprint(key, salt)
    for protocol in subprotocols or ():
        if protocol.startswith(_INSECURE_KEY) and len(protocol) > len(_INSECURE_KEY):
            return fingerprint(protocol[len(_INSECURE_KEY) :], salt)
    return ""
