"""The command line, run as a user would: real processes, real ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from llmobs.dev.harness import ServerThread, serve
from llmobs.sim import SimConfig, create_app
from servers import free_port

LLMOBS = [sys.executable, "-m", "llmobs.cli"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LLMOBS, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def start(*args: str, env: dict[str, str] | None = None, ready: str | None = None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [*LLMOBS, *args], env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    if ready is not None:
        wait_until_up(ready, process)
    return process


def wait_until_up(url: str, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("did not start") from None
            time.sleep(0.1)


def test_bad_flag_value_fails_at_start_naming_the_key() -> None:
    result = run("serve", "--port", "abc")
    assert result.returncode == 2 and "--port: Input should be a valid integer" in result.stderr


def test_bad_environment_value_fails_at_start_naming_the_key() -> None:
    result = run("serve", env={"LLMOBS_UPSTREAM_URL": "localhost:8000"})
    assert result.returncode == 2
    assert "LLMOBS_UPSTREAM_URL: must be an http(s) URL, got 'localhost:8000'" in result.stderr


def test_bad_price_file_fails_at_start(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  my-model:\n    input: -1\n")
    result = run("serve", env={"LLMOBS_PRICE_FILE": str(prices)})
    assert result.returncode == 2 and str(prices) in result.stderr and "my-model" in result.stderr


def test_demo_runs_and_prints_a_summary_from_metrics() -> None:
    result = run("demo", "--duration", "3", timeout=90, env={"COLUMNS": "160"})
    assert result.returncode == 0, result.stderr
    for heading in (
        "Requests by model and endpoint",
        "Requests and cost by upstream",
        "Tokens",
        "Images, audio",
        "WebSocket sessions",
        "Latency by model",
        "Finish reasons",
    ):
        assert heading in result.stdout
    assert "gpt-4o-mini" in result.stdout and "tool_calls" in result.stdout and "unpriced" in result.stdout
    # Anthropic through its route, Realtime, images and audio: each a row of the summary.
    lines = [line.split() for line in result.stdout.splitlines()]

    def row(*cells: str) -> bool:
        return any(line[: len(cells)] == list(cells) for line in lines)

    assert row("claude-sonnet-4-6", "messages") and row("/anthropic", "anthropic", "127.0.0.1")
    assert row("gpt-realtime", "realtime") and row("realtime", "1000", "completed")
    assert row("gpt-image-1", "images_generations") and row("whisper-1", "audio_transcriptions")
    assert row("tts-1", "audio_speech") and row("end_turn")


def test_admin_routes_on_their_own_port_behind_a_token(upstream: ServerThread) -> None:
    port, admin = free_port(), free_port()
    env = {"LLMOBS_ADMIN_PORT": str(admin), "LLMOBS_ADMIN_TOKEN": "s3cret-admin"}
    process = start(
        "serve",
        "--upstream",
        upstream.url + "/v1",
        "--port",
        str(port),
        env=env,
        ready=f"http://127.0.0.1:{admin}/healthz",
    )
    try:
        ok = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert ok.status_code == 200
        # On the traffic port, /metrics is just another upstream path.
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{admin}/metrics").status_code == 401
        wrong = httpx.get(f"http://127.0.0.1:{admin}/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        metrics = httpx.get(f"http://127.0.0.1:{admin}/metrics", headers={"authorization": "Bearer s3cret-admin"})
        assert metrics.status_code == 200 and "llmobs_requests_total{" in metrics.text
        assert httpx.get(f"http://127.0.0.1:{admin}/readyz").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_drains_an_open_stream_then_exits(sig: signal.Signals) -> None:
    """SIGHUP (a terminal hang-up) drains like SIGTERM instead of cutting streams at once."""
    with serve(create_app(SimConfig(chunk_gap=0.1, output_tokens=20))) as slow:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start("serve", "--upstream", slow.url + "/v1", "--port", str(port), ready=url + "/healthz")
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.Client(timeout=20) as http, http.stream("POST", url + "/v1/chat/completions", json=body) as stream:
            chunks = stream.iter_raw()
            next(chunks)
            process.send_signal(sig)  # about 2 s of stream left
            rest = b"".join(chunks)
        assert rest.endswith(b"data: [DONE]\n\n")
        assert process.wait(timeout=20) == 0
        try:
            httpx.get(url + "/healthz", timeout=1)
            raise AssertionError("still accepting after shutdown")
        except httpx.TransportError:
            pass


def test_spans_are_flushed_on_sigterm(upstream: ServerThread) -> None:
    from otlp_receiver import OTLPReceiver

    with OTLPReceiver() as rx:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # A schedule delay of an hour: only the flush at exit can deliver the span.
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "3600000"}
        process = start(
            "serve", "--upstream", upstream.url + "/v1", "--port", str(port), env=env, ready=url + "/healthz"
        )
        response = httpx.post(
            url + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert response.status_code == 200
        assert rx.spans == []
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        (span,) = rx.wait_for_spans(1, timeout=5)
    assert span.name == "chat m"


def test_readiness_turns_false_while_draining() -> None:
    with serve(create_app(SimConfig(chunk_gap=0.1, output_tokens=30))) as slow:
        port, admin = free_port(), free_port()
        url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
        process = start(
            "serve",
            "--upstream",
            slow.url + "/v1",
            "--port",
            str(port),
            env={"LLMOBS_ADMIN_PORT": str(admin)},
            ready=admin_url + "/healthz",
        )
        assert httpx.get(admin_url + "/readyz").status_code == 200
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.Client(timeout=20) as http, http.stream("POST", url + "/v1/chat/completions", json=body) as stream:
            chunks = stream.iter_raw()
            next(chunks)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            draining = httpx.get(admin_url + "/readyz")
            assert draining.status_code == 503 and httpx.get(admin_url + "/healthz").status_code == 200
            assert b"".join(chunks).endswith(b"data: [DONE]\n\n")
        assert process.wait(timeout=20) == 0


def test_streams_cut_at_the_end_of_the_grace_period_log_one_line_each() -> None:
    with serve(create_app(SimConfig(chunk_gap=0.5, output_tokens=30))) as slow:  # 15 s streams
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [*LLMOBS, "serve", "--upstream", slow.url + "/v1", "--port", str(port)]
        env = {**os.environ, "LLMOBS_SHUTDOWN_GRACE_SECONDS": "1"}
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        wait_until_up(url + "/healthz", process)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(httpx.Client(timeout=30)) for _ in range(12)]
            responses = [
                stack.enter_context(c.stream("POST", url + "/v1/chat/completions", json=body)) for c in clients
            ]
            chunks = [response.iter_raw() for response in responses]
            for each in chunks:
                next(each)  # every stream is under way
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        log = process.communicate()[1]
    assert "Traceback" not in log
    cut = [line for line in log.splitlines() if "request cancelled" in line]
    assert len(cut) == 12, log[-3000:]  # one line for each stream cut, and nothing more


# -- rough edges a new user hits -------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "json",
            "OTEL_EXPORTER_OTLP_PROTOCOL must be 'http/protobuf' or 'grpc', got 'json'",
        ),
        ("OTEL_TRACES_SAMPLER", "sometimes", "OTEL_TRACES_SAMPLER must be one of"),
        ("OTEL_BSP_SCHEDULE_DELAY", "soon", "OTEL_BSP_SCHEDULE_DELAY must be a positive integer, got 'soon'"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER supports only 'otlp' or 'none'"),
    ],
)
def test_a_bad_otel_value_is_one_line_naming_the_variable(variable: str, value: str, message: str) -> None:
    result = run("serve", "--port", str(free_port()), env={variable: value}, timeout=20)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"llmobs: {result.stderr.split('llmobs: ', 1)[1].strip()}"]
    assert message in result.stderr


def busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


def test_a_port_in_use_is_one_line_before_any_banner() -> None:
    sock, port = busy_port()
    with sock:
        result = run("serve", "--port", str(port), timeout=20)
    assert result.returncode == 1
    assert result.stderr.strip() == f"llmobs: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_an_unknown_llmobs_variable_is_named_with_the_closest_setting() -> None:
    sock, port = busy_port()  # the start then stops early, after the warnings
    with sock:
        result = run("serve", "--port", str(port), env={"LLMOBS_UPSTREAM": "https://x", "LLMOBS_PORTT": "1"})
    assert "LLMOBS_UPSTREAM is not a setting and is ignored; did you mean LLMOBS_UPSTREAM_URL?" in result.stderr
    assert "LLMOBS_PORTT is not a setting and is ignored; did you mean LLMOBS_PORT?" in result.stderr


def test_an_unreachable_upstream_is_logged_once_with_its_host_and_no_key(
    make_proxy: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from fault_upstream import refused_port

    sock, port = refused_port()
    with sock:
        proxy = make_proxy(f"http://127.0.0.1:{port}/v1", upstream_api_key="sk-upstream-secret-123")
        for _ in range(3):
            answer = httpx.get(proxy.base_url + "/models", headers={"authorization": "Bearer sk-client-secret"})
            assert answer.status_code == 502
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(said) == 1 and f"upstream 127.0.0.1:{port} unreachable" in said[0]
    assert "secret" not in caplog.text


@pytest.mark.parametrize(
    ("command", "extra", "missing"), [("demo", "demo", "rich"), ("dashboards", "dev", "grafana_foundation_sdk")]
)
def test_a_command_whose_extra_is_not_installed_says_which(command: str, extra: str, missing: str) -> None:
    code = f"import sys; sys.modules[{missing!r}] = None; from llmobs.cli import main; sys.exit(main([{command!r}]))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"pip install 'llmobs[{extra}]'" in result.stderr and "Traceback" not in result.stderr


def test_the_runtime_needs_none_of_the_demo_and_dev_packages() -> None:
    from importlib.metadata import requires

    runtime = [r for r in requires("llmobs") or [] if "extra ==" not in r]
    names = {r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in runtime}
    assert not names & {"openai", "anthropic", "rich", "grafana-foundation-sdk"}
