"""Who sent a request: the tenant, from a header or a fingerprint of the API key (never the key)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from llmobs.yamlfile import read_section

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
    names: Mapping[str, str] | None = None,
) -> str:
    """Tenant from the configured header, else an API-key fingerprint, else empty.

    The key may come in `Authorization`, Anthropic's `x-api-key`, Azure's `api-key`, or a
    WebSocket subprotocol `openai-insecure-api-key.<key>`. A header value that looks like a
    fingerprint (`key-...`) is ignored, so no client can be counted as another key; with
    `trust_header` off the header is ignored altogether (clients that are not trusted).
    `names` maps fingerprints to the team names dashboards show.
    """
    found = _tenant(headers, tenant_header, subprotocols, salt, trust_header)
    return names.get(found, found) if names else found


def _tenant(
    headers: dict[bytes, bytes],
    tenant_header: bytes,
    subprotocols: Sequence[str] | None,
    salt: bytes | None,
    trust_header: bool,
) -> str:
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


class TenantMapError(ValueError):
    """The tenant map file is unreadable or invalid; the message names the file and the entry."""


def read_tenant_map(path: Path) -> dict[str, str]:
    """`tenants: {key-1a2b3c4d5e: search-team, ...}`: key fingerprints to the names dashboards show."""
    tenants = read_section(path, "tenants", what="tenant map", maps="key fingerprints to names", error=TenantMapError)
    mapping: dict[str, str] = {}
    for key, name in tenants.items():
        if not isinstance(key, str) or not key.startswith(KEY_PREFIX):
            raise TenantMapError(f"tenant map {path}: {key!r} is not a key fingerprint (key-...)")
        if not isinstance(name, str) or not name.strip() or len(name) > 128:
            raise TenantMapError(f"tenant map {path}: the name for {key} must be a string of 1 to 128 characters")
        mapping[key] = name.strip()
    return mapping


_MAX_VALUE = 256  # characters kept of an attribution or conversation value


@dataclass(frozen=True)
class Attribution:
    """How the proxy tells who sent a request: tenant, attribution headers, conversation."""

    tenant_header: bytes = b"x-llmobs-tenant"
    salt: bytes | None = None
    trust_header: bool = True
    names: Mapping[str, str] = field(default_factory=dict)  # fingerprint -> team name
    headers: tuple[tuple[bytes, str], ...] = ()  # (attribution header, its name on spans and labels)
    conversation_header: bytes = b"x-llmobs-conversation"

    @property
    def own_headers(self) -> frozenset[bytes]:
        """Headers for the proxy only: never sent upstream (x-llmobs-* ones already are not)."""
        return frozenset({self.tenant_header, self.conversation_header, *(h for h, _ in self.headers)})

    def tenant(self, headers: dict[bytes, bytes], subprotocols: Sequence[str] | None = None) -> str:
        return tenant_of(
            headers, self.tenant_header, subprotocols, salt=self.salt, trust_header=self.trust_header, names=self.names
        )

    def attributes(self, headers: dict[bytes, bytes]) -> dict[str, str]:
        """The attribution headers the request carries, by name."""
        found = {}
        for header, name in self.headers:
            value = headers.get(header)
            if value and (text := value.decode("latin-1").strip()[:_MAX_VALUE]):
                found[name] = text
        return found

    def conversation(self, headers: dict[bytes, bytes]) -> str | None:
        value = headers.get(self.conversation_header)
        return value.decode("latin-1").strip()[:_MAX_VALUE] or None if value else None
