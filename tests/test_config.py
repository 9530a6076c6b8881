"""Settings: flags > environment > file > defaults; bad values name their key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llmobs.config import ConfigError, Settings, load_settings, unknown_variables, worker_settings_json


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert (settings.upstream_url, settings.host, settings.port) == ("https://api.openai.com/v1", "127.0.0.1", 4000)
    assert settings.inject_stream_usage and not settings.capture_content


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "llmobs.yaml"
    config.write_text("port: 5000\nhost: 0.0.0.0\nupstream_url: http://file:1/v1\n")
    env = {"LLMOBS_CONFIG": str(config), "LLMOBS_PORT": "6000"}
    settings = load_settings({"port": None, "upstream_url": "http://flag:2/v1"}, environ=env)
    assert (settings.port, settings.host, settings.upstream_url) == (6000, "0.0.0.0", "http://flag:2/v1")
    assert load_settings({"port": "7000"}, environ=env).port == 7000


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"LLMOBS_UPSTREAM_URL": "localhost:8000"},
            "LLMOBS_UPSTREAM_URL: must be an http(s) URL, got 'localhost:8000'",
        ),
        ({"LLMOBS_PORT": "http"}, "LLMOBS_PORT: Input should be a valid integer"),
        ({"LLMOBS_PORT": "70000"}, "LLMOBS_PORT: Input should be less than or equal to 65535"),
        ({"LLMOBS_INJECT_STREAM_USAGE": "maybe"}, "LLMOBS_INJECT_STREAM_USAGE: Input should be a valid boolean"),
        ({"LLMOBS_MAX_LABEL_VALUES": "0"}, "LLMOBS_MAX_LABEL_VALUES: Input should be greater than or equal to 1"),
        ({"LLMOBS_PRICE_FILE": "/nonexistent.yaml"}, "LLMOBS_PRICE_FILE: no such file, got '/nonexistent.yaml'"),
        ({"LLMOBS_ROUTES": '[{"prefix": "/a"}]'}, "LLMOBS_ROUTES[0].url: Field required"),
        ({"LLMOBS_ROUTES": "/a=http://x,/b=ftp://y"}, "LLMOBS_ROUTES[1].url: must be an http(s) URL, got 'ftp://y'"),
        ({"LLMOBS_TENANT_HEADER": "bad header"}, "LLMOBS_TENANT_HEADER: must be an HTTP header name"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(environ=env)
    assert message in str(error.value)


def test_bad_file_keys_and_values_name_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("prot: 1\nread_timeout: -1\n")
    with pytest.raises(ConfigError) as error:
        load_settings(config_file=str(config), environ={})
    text = str(error.value)
    assert f"'prot' in {config}: is not a known setting" in text
    assert f"'read_timeout' in {config}: Input should be greater than 0" in text
    config.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(config_file=str(config), environ={})
    with pytest.raises(ConfigError, match="^--config: cannot read config file"):
        load_settings(config_file=str(tmp_path / "missing.yaml"), environ={})
    with pytest.raises(ConfigError, match="^LLMOBS_CONFIG: cannot read config file"):
        load_settings(environ={"LLMOBS_CONFIG": str(tmp_path / "missing.yaml")})


def test_flag_errors_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="--upstream: must be an http"):
        load_settings({"upstream_url": "ftp://x"}, environ={})


def test_otel_content_capture_variable_is_honoured() -> None:
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    assert load_settings(environ=env).capture_content


def test_workers_get_the_parents_settings_secrets_included() -> None:
    settings = load_settings({"upstream_api_key": "sk-upstream", "workers": 2}, environ={})
    again = load_settings(environ={"LLMOBS_WORKER_SETTINGS": worker_settings_json(settings)})
    assert again == settings and again.upstream_api_key is not None
    assert again.upstream_api_key.get_secret_value() == "sk-upstream"
    assert "sk-upstream" not in repr(settings)


def test_redact_patterns_from_the_environment_are_a_json_list_checked_at_start() -> None:
    assert load_settings(environ={"LLMOBS_REDACT_PATTERNS": '["ACME-\\\\d+"]'}).redact_patterns == ["ACME-\\d+"]
    with pytest.raises(ConfigError, match="LLMOBS_REDACT_PATTERNS: must be a JSON list"):
        load_settings(environ={"LLMOBS_REDACT_PATTERNS": "ACME-[0-9]+"})
    with pytest.raises(ConfigError, match="invalid regex"):
        load_settings(environ={"LLMOBS_REDACT_PATTERNS": '["("]'})


def test_every_setting_is_documented_in_the_readme() -> None:
    """Config keys are public API: each has its row (file key and environment variable)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for key in Settings.model_fields:
        assert f"| `{key}` | `LLMOBS_{key.upper()}`" in readme, f"{key} is not in the README's configuration table"


def test_the_removed_upstream_client_setting_is_named_as_removed_with_the_reason() -> None:
    (warning,) = unknown_variables({"LLMOBS_UPSTREAM_CLIENT": "aiohttp", "LLMOBS_PORT": "4000"})
    assert warning.startswith("LLMOBS_UPSTREAM_CLIENT was removed and is ignored: ")
    assert "aiohttp's was removed" in warning
    load_settings(environ={"LLMOBS_UPSTREAM_CLIENT": "aiohttp"})  # a warning at start (llmobs serve), not an error
    with pytest.raises(ValidationError, match="upstream_client"):
        Settings(upstream_client="h1")  # type: ignore[call-arg]  # not a setting any more
