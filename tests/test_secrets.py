"""Secrets stay out of telemetry: keys never reach logs, /metrics, spans or error messages.

Traffic of every kind (SDK calls streamed and not, upstream errors, an error inside a
stream, a 502 from an unreachable upstream) runs with a known client key and a known
upstream key. Then every log line, the /metrics text, the raw OTLP export bodies and
the decoded spans and points are searched for the keys, their tails and the
Authorization values. With content capture on, the content is there, redacted.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest
from prometheus_client import CollectorRegistry
from websockets.sync.client import connect as ws_connect
from websockets.typing import Subprotocol

from conftest import sdk_client
from llmobs.app import create_app
from llmobs.config import Settings
from llmobs.dev.harness import ServerThread, bound_socket, serve
from otlp_receiver import OTLPReceiver, _decompress

CLIENT_KEY = "sk-proj-CLIENTsecretKEY0123456789abcdef"
UPSTREAM_KEY = "sk-UPSTREAMsecretKEY9876543210fedcba"
# The whole keys, their distinctive tails (a half-masked key is still a leak), the header values.
NEEDLES = (
    CLIENT_KEY,
    UPSTREAM_KEY,
    CLIENT_KEY[-14:],
    UPSTREAM_KEY[-14:],
    f"Bearer {CLIENT_KEY}",
    f"Bearer {UPSTREAM_KEY}",
)
MESSAGES = [{"role": "user", "content": "tell me a story"}]
PII_PROMPT = (
    "I am ann@example.com, my card is 4111 1111 1111 1111, call me on +1 555 123 4567, "
    "and my key is sk-abcdefghijklmnopqrstuvwxyz0123"
)
PII_RAW = ("ann@example.com", "4111 1111 1111 1111", "555 123 4567", "sk-abcdefghijklmnopqrstuvwxyz0123")


class RawReceiver(OTLPReceiver):
    """An OTLP receiver that also keeps every export body, decompressed, to search as bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[bytes] = []

    def _receive(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        self.raw.append(_decompress(body, headers.get("content-encoding", "")))
        return super()._receive(path, headers, body)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[RawReceiver]:
    with RawReceiver() as rx:
        for key, value in otel_env(rx).items():
            monkeypatch.setenv(key, value)
        yield rx


def otel_env(rx: OTLPReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
    }


def traffic(base_url: str) -> list[str]:
    """Every kind of request, with the client key; returns what the client was told on errors."""
    sdk = sdk_client(base_url, api_key=CLIENT_KEY)
    told: list[str] = []
    sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert list(sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert list(sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="once", stream=True))
    sdk.embeddings.create(model="text-embedding-3-small", input="two words")
    assert list(sdk.responses.create(model="gpt-4o-mini", input="hi", stream=True))
    for call in (
        lambda: sdk.chat.completions.create(model="sim-error-429", messages=MESSAGES),
        lambda: sdk.chat.completions.create(model="sim-error-500-empty", messages=MESSAGES),
        lambda: list(sdk.chat.completions.create(model="sim-stream-error", messages=MESSAGES, stream=True)),
    ):
        with pytest.raises(openai.APIError) as raised:
            call()
        told.append(str(raised.value))
    # Azure-style key header, a body the proxy cannot parse, and a path it does not know.
    for path, content, headers in (
        ("/chat/completions", b'{"model": "m", "messages": [}', {"api-key": CLIENT_KEY}),
        ("/models", b"", {"authorization": f"Bearer {CLIENT_KEY}"}),
    ):
        response = httpx.post(base_url + path, content=content, headers=headers)
        told.append(response.text)
    realtime(base_url)
    return told


def realtime(base_url: str) -> None:
    """A Realtime session with the key where browsers and Azure put it: a subprotocol and the query."""
    quiet = logging.getLogger("test.secrets.websocket")  # the test's own client logs its handshake
    quiet.setLevel(logging.WARNING)
    url = base_url.replace("http://", "ws://") + f"/realtime?model=gpt-realtime&api-key={CLIENT_KEY}"
    protocols = [Subprotocol("realtime"), Subprotocol(f"openai-insecure-api-key.{CLIENT_KEY}")]
    with ws_connect(url, subprotocols=protocols, logger=quiet) as ws:
        ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))
        while json.loads(ws.recv(timeout=5))["type"] != "response.done":
            pass


def unreachable(make_proxy: Any) -> list[str]:
    """A 502 from a dead upstream, with both keys in play."""
    dead = bound_socket()  # bound, never listening: connections are refused
    try:
        proxy = make_proxy(f"http://127.0.0.1:{dead.getsockname()[1]}/v1", upstream_api_key=UPSTREAM_KEY)
        response = httpx.post(
            proxy.base_url + "/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
        assert response.status_code == 502
        return [response.text, metrics_text(proxy.url)]
    finally:
        dead.close()


def metrics_text(url: str) -> str:
    response = httpx.get(url + "/metrics")
    assert response.status_code == 200
    return response.text


def assert_clean(where: str, haystack: str | bytes) -> None:
    for needle in NEEDLES:
        found = needle.encode() in haystack if isinstance(haystack, bytes) else needle in haystack
        assert not found, f"{needle[:6]}... leaked into {where}"


def assert_telemetry_clean(rx: RawReceiver) -> None:
    assert rx.raw, "nothing was exported"
    for body in rx.raw:
        assert_clean("an OTLP export", body)
    for span in rx.spans:
        assert_clean(f"span {span.name}", repr(span))
    for point in rx.points:
        assert_clean(f"metric {point.metric}", repr(point))


def test_keys_never_reach_logs_metrics_spans_or_errors(
    receiver: RawReceiver, recording_upstream: Any, make_proxy: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    upstream_url, seen = recording_upstream
    settings = Settings(upstream_url=upstream_url, provider="openai", upstream_api_key=UPSTREAM_KEY)
    app = create_app(settings, registry=CollectorRegistry(), strict=True)
    with serve(app) as proxy:
        told = traffic(proxy.url + "/v1")
        scraped = metrics_text(proxy.url)
        receiver.wait_for_spans(8)
    told += unreachable(make_proxy)
    receiver.wait_for_metric("gen_ai.client.operation.duration", timeout=10)
    # The upstream key really was in play: it replaced the client's on the way out.
    assert seen and all(headers[b"authorization"] == f"Bearer {UPSTREAM_KEY}".encode() for headers in seen)
    assert "llmobs_requests_total" in scraped and caplog.records
    assert_clean("/metrics", scraped)
    for text in told:
        assert_clean("an error message to the client", text)
    for record in caplog.records:
        assert_clean(f"log record of {record.name}", record.getMessage())
    assert_clean("the log text with tracebacks", caplog.text)
    assert_telemetry_clean(receiver)


def test_keys_never_reach_the_served_process_stderr_at_debug(receiver: RawReceiver, upstream: ServerThread) -> None:
    """`llmobs serve` as users run it, logging at debug: its whole stderr is searched."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, **otel_env(receiver), "LLMOBS_LOG_LEVEL": "debug", "LLMOBS_UPSTREAM_API_KEY": UPSTREAM_KEY}
    command = [sys.executable, "-m", "llmobs.cli", "serve", "--upstream", upstream.url + "/v1", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        told = traffic(url + "/v1")
        scraped = metrics_text(url)
        receiver.wait_for_spans(8)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    stderr = err.decode(errors="replace")
    assert "DEBUG" in stderr  # debug logging was really on
    assert_clean("the proxy's stderr", stderr)
    assert_clean("the proxy's stdout", out.decode(errors="replace"))
    assert_clean("/metrics", scraped)
    for text in told:
        assert_clean("an error message to the client", text)
    assert_telemetry_clean(receiver)


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"llmobs serve exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("llmobs serve did not become ready")


# -- content capture on: the content is there, and redacted -------------------------------------


async def echo_upstream(scope: Any, receive: Any, send: Any) -> None:
    """Answers a chat request with its own last message, streamed or not: PII comes back out."""
    if scope["type"] != "http":
        return
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = json.loads(raw)
    said = request["messages"][-1]["content"]
    head = {"id": "chatcmpl-echo", "model": request["model"], "created": 0}
    if request.get("stream"):
        frames = [
            {
                **head,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": said}, "finish_reason": None}],
            },
            {
                **head,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            },
        ]
        payload = b"".join(b"data: " + json.dumps(f).encode() + b"\n\n" for f in frames) + b"data: [DONE]\n\n"
        content_type = b"text/event-stream"
    else:
        answer = {
            **head,
            "object": "chat.completion",
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            "choices": [{"index": 0, "message": {"role": "assistant", "content": said}, "finish_reason": "stop"}],
        }
        payload, content_type = json.dumps(answer).encode(), b"application/json"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture
def captured_spans(receiver: RawReceiver) -> Iterator[list[Any]]:
    """Spans of one streamed and one plain chat call through a capturing proxy to the echo upstream."""
    with serve(echo_upstream) as echo:
        settings = Settings(upstream_url=echo.url + "/v1", provider="openai", capture_content=True)
        with serve(create_app(settings, registry=CollectorRegistry(), strict=True)) as proxy:
            sdk = sdk_client(proxy.url + "/v1", api_key=CLIENT_KEY)
            messages = [
                {"role": "system", "content": "reply to sk-systemsecretabcdefghijk"},
                {"role": "user", "content": PII_PROMPT},
            ]
            assert sdk.chat.completions.create(model="echo", messages=messages).choices[0].message.content == PII_PROMPT
            assert list(sdk.chat.completions.create(model="echo", messages=messages, stream=True))
            spans = receiver.wait_for_spans(2)
    assert_telemetry_clean(receiver)
    for body in receiver.raw:
        for raw in PII_RAW:
            assert raw.encode() not in body, f"{raw} left the process"
    yield spans


def test_captured_completion_is_on_the_span_redacted(captured_spans: list[Any]) -> None:
    for span in captured_spans:
        output = json.loads(span.attributes["gen_ai.output.messages"])
        assert output == [
            {
                "role": "assistant",
                "finish_reason": "stop",
                "parts": [
                    {
                        "type": "text",
                        "content": (
                            "I am [REDACTED:email], my card is [REDACTED:card_number], call me on [REDACTED:phone], "
                            "and my key is [REDACTED:api_key]"
                        ),
                    }
                ],
            }
        ]


def test_captured_prompt_is_on_the_span_redacted(captured_spans: list[Any]) -> None:
    for span in captured_spans:
        prompt = json.loads(span.attributes["gen_ai.input.messages"])
        assert prompt[0] == {"role": "system", "parts": [{"type": "text", "content": "reply to [REDACTED:api_key]"}]}
        assert "[REDACTED:email]" in prompt[1]["parts"][0]["content"]
