"""The proxy as users run it (`llmobs serve`, its own process): sustained mixed traffic with
faults loses and double-counts nothing and keeps memory flat; SIGTERM drains streams."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmobs.dev.harness import serve
from llmobs.sim import SimConfig
from llmobs.sim import create_app as create_simulator
from servers import free_port

MESSAGES = [{"role": "user", "content": "one two three"}]  # 3 words + 3 = 6 prompt tokens


class ServeProcess:
    """`llmobs serve` in a subprocess, on a free loopback port."""

    def __init__(self, upstream: str, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOBS_", "OTEL_"))}
        env.update({f"LLMOBS_{k.upper()}": str(v) for k, v in settings.items()})
        code = "import sys; from llmobs.cli import main; sys.exit(main())"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--upstream", upstream, "--port", str(self.port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"llmobs serve exited early: {self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("llmobs serve did not become ready")

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def output(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stdout is not None
        return self.proc.stdout.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def serve_process(upstream: str, **settings: Any) -> Iterator[ServeProcess]:
    process = ServeProcess(upstream, **settings)
    try:
        yield process
    finally:
        process.stop()


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, w) in ls for k, w in labels.items()))


# --- SIGTERM -----------------------------------------------------------------------------------


def test_sigterm_drains_a_stream_refuses_new_connections_and_exits_0() -> None:
    with serve(create_simulator(SimConfig(chunk_gap=0.05, output_tokens=30))) as upstream:
        with serve_process(upstream.url + "/v1", shutdown_grace_seconds=10) as proxy:
            received: list[bytes] = []
            started = threading.Event()

            def stream() -> None:
                body = {"model": "m", "messages": MESSAGES, "stream": True}
                with httpx.Client(timeout=20) as http:
                    with http.stream("POST", proxy.url + "/v1/chat/completions", json=body) as response:
                        for chunk in response.iter_raw():
                            received.append(chunk)
                            started.set()

            reader = threading.Thread(target=stream)
            reader.start()
            assert started.wait(10)
            proxy.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(OSError):  # stopped listening at once
                socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
            reader.join(15)
            body = b"".join(received)
            assert body.rstrip().endswith(b"data: [DONE]") and body.count(b'"content":"tok') == 30
            assert proxy.proc.wait(10) == 0  # well within the grace period


# --- soak -------------------------------------------------------------------------------------

# kind -> (expected outcome, status_code)
KINDS: dict[str, tuple[str, str]] = {
    "chat": ("completed", "200"),
    "chat_stream": ("completed", "200"),
    "embeddings": ("completed", "200"),
    "responses_stream": ("completed", "200"),
    "no_usage_stream": ("completed", "200"),
    "error_429": ("upstream_error", "429"),
    "error_500_empty": ("upstream_error", "500"),
    "stream_error": ("upstream_error", "200"),
    "reset": ("stream_interrupted", "200"),
    "disconnect": ("client_closed", "200"),
    "hang": ("upstream_timeout", "504"),
}
WEIGHTS = {
    "chat": 20,
    "chat_stream": 20,
    "embeddings": 5,
    "responses_stream": 5,
    "no_usage_stream": 3,
    "error_429": 3,
    "error_500_empty": 2,
    "stream_error": 3,
    "reset": 3,
    "disconnect": 3,
    "hang": 1,
}


def one_request(http: httpx.Client, base: str, kind: str) -> None:
    """Send one request of `kind`; what the client sees is checked, faults are expected."""
    chat = f"{base}/chat/completions"
    if kind == "chat":
        response = http.post(chat, json={"model": "soak-chat", "messages": MESSAGES})
        assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 20
    elif kind in ("chat_stream", "no_usage_stream"):
        model = "soak-stream" if kind == "chat_stream" else "sim-no-usage"
        response = http.post(chat, json={"model": model, "messages": MESSAGES, "stream": True})
        assert response.status_code == 200 and response.text.rstrip().endswith("data: [DONE]")
        assert '"usage"' not in response.text
    elif kind == "embeddings":
        response = http.post(f"{base}/embeddings", json={"model": "soak-embed", "input": "a b"})
        assert response.status_code == 200
    elif kind == "responses_stream":
        response = http.post(f"{base}/responses", json={"model": "soak-resp", "input": "hi", "stream": True})
        assert response.status_code == 200 and "response.completed" in response.text
    elif kind.startswith("error_"):
        model = {"error_429": "sim-error-429", "error_500_empty": "sim-error-500-empty"}[kind]
        response = http.post(chat, json={"model": model, "messages": MESSAGES})
        assert response.status_code == int(KINDS[kind][1])
    elif kind == "stream_error":
        response = http.post(chat, json={"model": "sim-stream-error", "messages": MESSAGES, "stream": True})
        assert response.status_code == 200 and '"error"' in response.text
    elif kind == "reset":
        with pytest.raises(httpx.TransportError):
            http.post(chat, json={"model": "sim-reset", "messages": MESSAGES, "stream": True})
    elif kind == "disconnect":
        body = {"model": "m", "messages": MESSAGES, "stream": True}
        with http.stream("POST", chat, json=body, headers={"x-sim-output-tokens": "5000"}) as response:
            next(response.iter_raw())
        # Leaving the block early closes this connection: the proxy sees the client go.
    elif kind == "hang":
        response = http.post(chat, json={"model": "sim-hang", "messages": MESSAGES})
        assert response.status_code == 504
    else:  # pragma: no cover
        raise AssertionError(kind)


def drive(base: str, seconds: float, seed: int, sent: Counter[str], errors: list[str], lock: threading.Lock) -> None:
    rng = random.Random(seed)
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=30) as http:
        while time.monotonic() < deadline:
            kind = rng.choices(kinds, weights)[0]
            try:
                one_request(http, base, kind)
            except BaseException as exc:  # noqa: BLE001 - reported below, with the kind
                errors.append(f"{kind}: {exc!r}")
            with lock:
                sent[kind] += 1


@pytest.mark.slow
def test_soak_mixed_traffic_with_faults_loses_nothing_and_memory_stays_flat() -> None:
    seconds = float(os.environ.get("LLMOBS_SOAK_SECONDS", "60"))
    sim = create_simulator(SimConfig(chunk_gap=0.001, output_tokens=20))
    # The simulator logs every sim-reset it raises on purpose: keep the output readable.
    with serve(sim, log_level="critical") as upstream, serve_process(upstream.url + "/v1", read_timeout=0.5) as proxy:
        sent: Counter[str] = Counter()
        errors: list[str] = []
        lock = threading.Lock()
        drivers = [
            threading.Thread(target=drive, args=(proxy.url + "/v1", seconds, seed, sent, errors, lock))
            for seed in range(8)
        ]
        rss: list[tuple[float, int]] = []
        began = time.monotonic()
        for thread in drivers:
            thread.start()
        while any(t.is_alive() for t in drivers):
            rss.append((time.monotonic() - began, proxy.rss()))
            time.sleep(0.5)
        for thread in drivers:
            thread.join()
        assert not errors, errors[:10]

        samples = settle(proxy)
        assert total(samples, "llmobs_requests_total") == sum(sent.values())  # nothing lost or doubled
        expected: Counter[tuple[str, str]] = Counter()
        for kind, count in sent.items():
            expected[KINDS[kind]] += count
        for (outcome, status), count in expected.items():
            got = total(samples, "llmobs_requests_total", outcome=outcome, status_code=status)
            assert got == count, (outcome, status, got, count)
        assert total(samples, "llmobs_tokens_total", model="soak-chat", type="output") == 20 * sent["chat"]
        assert total(samples, "llmobs_tokens_total", model="soak-stream", type="output") == 20 * sent["chat_stream"]
        assert total(samples, "llmobs_tokens_total", model="soak-stream", type="input") == 6 * sent["chat_stream"]
        assert total(samples, "llmobs_telemetry_errors_total") == 0
        assert sum(sent.values()) > 20 * seconds, sent  # it was sustained traffic

        warm = [r for t, r in rss if t >= seconds * 0.3]
        assert len(warm) >= 2
        growth = max(warm) - warm[0]
        print(
            f"soak: {sum(sent.values())} requests in {seconds:.0f} s, RSS {warm[0] >> 20} MiB after warm-up, "
            f"+{growth / 2**20:.1f} MiB at most; {dict(sent)}"
        )
        assert growth < 16 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB after warm-up"


def settle(proxy: ServeProcess, timeout: float = 10) -> dict[Any, float]:
    """Metrics once nothing is in flight (a request is recorded just after its last byte)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = proxy.metrics()
        if total(samples, "llmobs_requests_in_flight") == 0:
            return samples
        if time.monotonic() > deadline:
            raise AssertionError("requests stuck in flight")
        time.sleep(0.05)
