"""Settings: the one place that reads the environment. Parsed once; errors name the key."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "LLMOBS_"
CONFIG_ENV = "LLMOBS_CONFIG"
# Set by `llmobs serve --workers N` for its workers: the parent's validated settings, as JSON.
WORKER_SETTINGS_ENV = "LLMOBS_WORKER_SETTINGS"
# prometheus_client's multiprocess directory; private to one llmobs instance.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The OpenTelemetry GenAI instrumentations' switch for content capture; honoured too.
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


class ConfigError(ValueError):
    """A bad setting; the message names the key and the value."""


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"must not have a query or fragment, got {value!r}")
    return value


class Route(BaseModel):
    """One more upstream behind the proxy: requests under `prefix` go to `url`.

    The prefix is replaced by the URL's path: with prefix /anthropic and URL
    https://api.anthropic.com, /anthropic/v1/messages goes to https://api.anthropic.com/v1/messages.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str
    url: str
    provider: str | None = None  # pricing and gen_ai.provider.name; inferred from the host if unset
    api_key: SecretStr | None = None  # replaces the client's key on this route

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.rstrip("/")
        if not value.startswith("/") or any(c in value for c in "?#% \t\r\n") or "//" in value:
            raise ValueError(f"must be a path prefix such as /anthropic, got {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


def _json_list(value: Any) -> Any:
    """A list from the environment: JSON, or comma-separated names."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError(f"must be a JSON list, got {value!r}") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _route(item: Any) -> Any:
    """A route from its short form `prefix=url`, or as given (a mapping) for pydantic to check."""
    if isinstance(item, str):
        prefix, sep, url = item.partition("=")
        if not sep:
            raise ValueError(f"a route is prefix=url (e.g. /anthropic=https://api.anthropic.com), got {item!r}")
        return {"prefix": prefix.strip(), "url": url.strip()}
    return item


DEFAULT_ATTRIBUTION = ("x-llmobs-user", "x-llmobs-project", "x-llmobs-feature")
_LABEL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
# Labels llmobs already uses: an attribution label may not take one of their names.
_RESERVED_LABELS = frozenset(
    {"endpoint", "model", "tenant", "stream", "status_code", "outcome", "upstream", "type", "reason", "le"}
)


def attribution_name(header: str) -> str:
    """The name an attribution header goes by on spans and as a label: `x-llmobs-project` -> `project`."""
    name = header.lower().removeprefix("x-llmobs-")
    return re.sub(r"[^a-z0-9_]", "_", name)


class Settings(BaseSettings):
    """Every setting, with its LLMOBS_* environment variable and config-file key."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    upstream_url: str = "https://api.openai.com/v1"
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=0, le=65535)
    upstream_api_key: SecretStr | None = None  # replaces the client's key when set
    provider: str | None = None  # pricing / gen_ai.provider.name; inferred from the upstream host if unset
    price_file: Path | None = None  # YAML price overrides
    budget_file: Path | None = None  # YAML: USD per tenant per day / month -> llmobs_budget_usd
    tenant_header: str = "x-llmobs-tenant"
    trust_tenant_header: bool = True  # off: the tenant comes from the key only
    tenant_salt: SecretStr | None = None  # HMAC secret for key fingerprints
    tenant_map_file: Path | None = None  # YAML: key fingerprints -> team names
    attribution_headers: list[str] = Field(default_factory=lambda: list(DEFAULT_ATTRIBUTION))  # on spans
    attribution_labels: list[str] = Field(default_factory=list)  # of those, the ones that are metric labels
    conversation_header: str = "x-llmobs-conversation"  # gen_ai.conversation.id, spans only
    max_series_per_metric: int = Field(2000, ge=10)  # label sets per metric family; later ones fold
    upstream_key_paths: list[str] = Field(default_factory=list)  # more path prefixes the upstream key may go to
    max_label_values: int = Field(200, ge=1)  # distinct values per client-fed label (model, tenant)
    inject_stream_usage: bool = True
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(600.0, gt=0)
    total_timeout: float | None = Field(None, gt=0)
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1)
    max_websocket_message_bytes: int = Field(16 * 1024 * 1024, ge=1)  # larger frames close with 1009
    max_tokens_per_request: int = Field(1_000_000_000, ge=1)  # usage past it is not believed (missing)
    max_buffered_bytes: int = Field(1024 * 1024 * 1024, ge=1)  # request bodies held at once; again for copies
    max_event_bytes: int = Field(8 * 1024 * 1024, ge=1024)  # one SSE event; a larger one stops observing
    max_header_bytes: int = Field(64 * 1024, ge=1024)  # request line + headers; past it: 431
    max_headers: int = Field(100, ge=1)  # header fields per request; past it: 431
    client_header_timeout: float = Field(60.0, gt=0)  # to receive a request head; past it: 408
    client_body_timeout: float = Field(60.0, gt=0)  # between two reads of a request body; past it: 408
    keepalive_timeout: float = Field(75.0, gt=0)  # an idle keep-alive connection is closed after it
    max_client_connections: int = Field(4096, ge=1)  # open client connections; idle ones make room
    max_connections: int = Field(4096, ge=1)
    log_level: str = "info"
    shutdown_grace_seconds: float = Field(30.0, ge=0)  # SIGTERM: drain in-flight requests this long
    admin_port: int | None = Field(None, ge=0, le=65535)  # serve /metrics etc. on their own port
    admin_token: SecretStr | None = None  # require "Authorization: Bearer <token>" on admin routes
    capture_content: bool = False  # record prompts and completions on spans (opt-in)
    redact_content: bool = True  # mask secrets and personal data in captured content
    redact_patterns: list[str] = Field(default_factory=list)  # extra regexes to mask
    workers: int = Field(1, ge=1)
    routes: list[Route] = Field(default_factory=list)  # more upstreams by path prefix; longest wins

    @field_validator("upstream_url")
    @classmethod
    def _upstream_url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("routes", mode="before")
    @classmethod
    def _routes(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment: JSON, or prefix=url[,prefix=url...]
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise ValueError(f"must be a JSON list of routes, got {value!r}") from None
            else:
                value = [part for part in text.split(",") if part.strip()]
        if isinstance(value, list):
            value = [_route(item) for item in value]
        return value

    @field_validator("attribution_headers", mode="before")
    @classmethod
    def _headers_list(cls, value: Any) -> Any:
        return _json_list(value)

    @field_validator("attribution_labels", "upstream_key_paths", mode="before")
    @classmethod
    def _names_list(cls, value: Any) -> Any:
        return _json_list(value)

    @field_validator("attribution_headers")
    @classmethod
    def _attribution_headers(cls, value: list[str]) -> list[str]:
        for header in value:
            if not header or any(c in header for c in " :\r\n\t"):
                raise ValueError(f"must be HTTP header names, got {header!r}")
        return [header.lower() for header in value]

    @model_validator(mode="after")
    def _attribution_labels_are_headers(self) -> Settings:
        names = {attribution_name(h) for h in self.attribution_headers}
        for label in self.attribution_labels:
            if label not in names:
                raise ValueError(f"attribution_labels: {label!r} names no attribution header (known: {sorted(names)})")
            if not _LABEL_NAME.match(label) or label in _RESERVED_LABELS:
                raise ValueError(f"attribution_labels: {label!r} cannot be a label name")
        return self

    @model_validator(mode="after")
    def _distinct_prefixes(self) -> Settings:
        seen = [route.prefix for route in self.routes]
        twice = sorted({prefix for prefix in seen if seen.count(prefix) > 1})
        if twice:
            raise ValueError(f"routes: prefix {twice[0]!r} is given more than once")
        return self

    @field_validator("tenant_header", "conversation_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not value or any(c in value for c in " :\r\n\t"):
            raise ValueError(f"must be an HTTP header name, got {value!r}")
        return value.lower()

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in ("critical", "error", "warning", "info", "debug"):
            raise ValueError(f"must be one of critical, error, warning, info, debug; got {value!r}")
        return value.lower()

    @field_validator("redact_patterns", mode="before")
    @classmethod
    def _patterns(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment: a JSON list of regexes
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(f"must be a JSON list of regexes, got {value!r}") from None
        if isinstance(value, list):
            from llmobs.telemetry.redaction import compile_pattern

            for pattern in value:
                if isinstance(pattern, str):
                    compile_pattern(pattern)
        return value

    @field_validator("price_file", "tenant_map_file", "budget_file")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("no such file")  # the value is named after it
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() merges flags, environment and file itself, so it can name the
        # source of a bad value; pydantic sees them all as init values.
        return (init_settings,)


def _read_file(path: str, source: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file {path!r}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of settings")
    return data


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from flags > LLMOBS_* environment > config file > defaults."""
    environ = os.environ if environ is None else environ
    if WORKER_SETTINGS_ENV in environ:
        return Settings.model_validate_json(environ[WORKER_SETTINGS_ENV])
    source = "--config" if config_file else CONFIG_ENV
    config_file = config_file or environ.get(CONFIG_ENV)
    values: dict[str, Any] = _read_file(config_file, source) if config_file else {}
    origin = {key: f"{key!r} in {config_file}" for key in values}
    for key in Settings.model_fields:
        name = ENV_PREFIX + key.upper()
        if name in environ:
            values[key], origin[key] = environ[name], name
    if "capture_content" not in values and CAPTURE_ENV in environ:
        values["capture_content"], origin["capture_content"] = environ[CAPTURE_ENV], CAPTURE_ENV
    for key, value in (flags or {}).items():
        if value is not None:
            values[key], origin[key] = value, _flag(key)
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, origin)) from None


def _flag(key: str) -> str:
    return {"upstream_url": "--upstream"}.get(key, "--" + key.replace("_", "-"))


def _explain(exc: ValidationError, origin: Mapping[str, str]) -> str:
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a check across settings: its message names them
            key = message.partition(":")[0]
            lines.append(f"{origin.get(key, ENV_PREFIX + key.upper())}{message[len(key) :]}")
            continue
        key = str(error["loc"][0])
        where = origin.get(key, ENV_PREFIX + key.upper())
        # Inside a list of routes: which one, and which of its fields (LLMOBS_ROUTES[0].url).
        where += "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"][1:])
        if error["type"] == "extra_forbidden":
            lines.append(f"{where}: is not a known setting")
            continue
        if "got " not in message and "input" in error:
            message += f", got {error['input']!r}"
        lines.append(f"{where}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def worker_settings_json(settings: Settings) -> str:
    """The settings for worker processes, secrets included (they travel in the environment)."""
    data = settings.model_dump(mode="json")
    for key, value in settings:
        if isinstance(value, SecretStr):
            data[key] = value.get_secret_value()
    for route, dumped in zip(settings.routes, data["routes"], strict=True):
        if route.api_key is not None:
            dumped["api_key"] = route.api_key.get_secret_value()
    return json.dumps(data)


def multiprocess_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """The Prometheus multiprocess directory this process writes to, if any."""
    return (os.environ if environ is None else environ).get(MULTIPROC_ENV) or None


_OTHER_VARIABLES = frozenset({CONFIG_ENV, WORKER_SETTINGS_ENV})
# Settings that were removed, and why; said instead of "not a setting".
_REMOVED = {
    ENV_PREFIX + "UPSTREAM_CLIENT": "the upstream client is llmobs's own HTTP/1.1 client, the only one: aiohttp's "
    "was removed (it reused connections a server had closed, turning good answers into 502s)",
}


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each LLMOBS_* variable that is no setting (a typo is otherwise silently ignored)."""
    known = {ENV_PREFIX + key.upper() for key in Settings.model_fields} | _OTHER_VARIABLES
    warnings = []
    for name in sorted(environ):
        if name in _REMOVED:
            warnings.append(f"{name} was removed and is ignored: {_REMOVED[name]}")
        elif name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            warnings.append(f"{name} is not a setting and is ignored{hint}")
    return warnings
