"""`llmobs serve --workers 2`: /metrics sums every worker exactly; instances never share state."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from llmobs.dev.harness import ServerThread
from llmobs.dev.metrics_text import read_metrics
from llmobs.telemetry.process import scrape_registry
from servers import free_port

MESSAGES = [{"role": "user", "content": "count me"}]


class Instance:
    """`llmobs serve` in a subprocess."""

    def __init__(self, upstream: str, tmp: Path, workers: int = 2, **env_settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        env = {**os.environ, "TMPDIR": str(tmp), "LLMOBS_LOG_LEVEL": "warning", **env_settings}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.log = tmp / f"serve-{self.port}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llmobs.cli",
                    "serve",
                    "--upstream",
                    upstream,
                    "--port",
                    str(self.port),
                    "--workers",
                    str(workers),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("llmobs serve did not start: " + self.log.read_text()[-2000:])
            time.sleep(0.1)

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=10).text

    def requests_total(self) -> float:
        return sum(read_metrics(self.metrics()).sum_by("llmobs_requests_total").values())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def instance(upstream: ServerThread, tmp_path: Path) -> Iterator[Instance]:
    server = Instance(upstream.url + "/v1", tmp_path)
    yield server
    server.stop()


def drive(base_url: str, count: int, threads: int = 16) -> None:
    """`count` requests, half streamed, from `threads` concurrent clients."""

    def work(ids: range) -> None:
        with httpx.Client(timeout=30) as http:
            for i in ids:
                body = {"model": f"m{i % 3}", "messages": MESSAGES, "stream": i % 2 == 0}
                # A new connection per request, so that both workers accept some.
                response = http.post(
                    base_url + "/v1/chat/completions",
                    json=body,
                    headers={"x-llmobs-tenant": f"t{i % 2}", "connection": "close"},
                )
                assert response.status_code == 200

    pool = [threading.Thread(target=work, args=(range(k, count, threads),)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def test_two_workers_sum_exactly_under_concurrent_traffic(instance: Instance) -> None:
    scrapes: list[float] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            scrapes.append(instance.requests_total())
            time.sleep(0.02)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    drive(instance.url, 600)
    stop.set()
    scraper.join()
    samples = read_metrics(instance.metrics())
    assert sum(samples.sum_by("llmobs_requests_total").values()) == 600
    tokens = samples.sum_by("llmobs_tokens_total", "type")
    assert tokens[("input",)] == 600 * (2 + 3) and tokens[("output",)] == 600 * 20
    assert samples.sum_by("llmobs_request_duration_seconds_count") == {(): 600}
    assert samples.sum_by("llmobs_time_to_first_token_seconds_count") == {(): 300}
    assert samples.sum_by("llmobs_requests_in_flight") == {(): 0}
    assert samples.sum_by("llmobs_build_info") == {(): 1}
    assert scrapes == sorted(scrapes), "a counter went backwards between scrapes"
    # Both workers took traffic: each wrote its own counter file.
    (directory,) = [p for p in instance.tmp.iterdir() if p.name.startswith("llmobs-metrics-")]
    assert len(list(directory.glob("counter_*.db"))) == 2


def test_each_worker_keeps_the_configured_client_limits(upstream: ServerThread, tmp_path: Path) -> None:
    server = Instance(upstream.url + "/v1", tmp_path, LLMOBS_MAX_HEADER_BYTES="2048")
    try:
        with httpx.Client(timeout=10) as http:
            for _ in range(4):  # a new connection each time, so that both workers answer some
                big = http.get(server.url + "/healthz", headers={"x-big": "a" * 3000, "connection": "close"})
                assert big.status_code == 431  # the default bound is 65,536 bytes
                small = http.get(server.url + "/healthz", headers={"x-small": "a" * 1000, "connection": "close"})
                assert small.status_code == 200
    finally:
        server.stop()


def test_two_instances_on_one_host_keep_their_own_counts(upstream: ServerThread, tmp_path: Path) -> None:
    first = Instance(upstream.url + "/v1", tmp_path)
    second = Instance(upstream.url + "/v1", tmp_path)
    try:
        drive(first.url, 50, threads=4)
        drive(second.url, 30, threads=4)
        assert first.requests_total() == 50 and second.requests_total() == 30
    finally:
        first.stop()
        second.stop()
    assert not list(tmp_path.glob("llmobs-metrics-*")), "state left behind"


def test_each_workers_process_metrics_carry_its_pid(instance: Instance) -> None:
    """The process collectors cannot be merged across workers: each worker's are shown apart."""
    deadline = time.monotonic() + 15
    while True:
        pids = {
            sample.labels["pid"]
            for family in text_string_to_metric_families(instance.metrics())
            for sample in family.samples
            if sample.name == "process_resident_memory_bytes" and sample.value > 0
        }
        if len(pids) == 2:
            break
        assert time.monotonic() < deadline, f"process metrics of {len(pids)} worker(s)"
        time.sleep(0.5)
    assert "python_gc_objects_collected_total" in instance.metrics()


def test_a_worker_that_died_leaves_no_requests_in_flight(tmp_path: Path) -> None:
    """A worker killed mid-request (OOM, a hung-worker kill) took its in-flight count with it."""
    worker = textwrap.dedent(
        """
        from prometheus_client import CollectorRegistry
        from llmobs.telemetry.sinks.prometheus_metrics import Metrics
        metrics = Metrics(CollectorRegistry())
        metrics.in_flight.labels("chat_completions").inc(5)
        metrics.requests.labels("chat_completions", "m", "", "true", "200", "completed", "").inc(3)
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", worker], env=env, check=True)  # then gone, as if killed
    before = {path.name for path in tmp_path.iterdir()}
    assert any(name.startswith("gauge_livesum_") for name in before)
    samples = [s for f in scrape_registry(CollectorRegistry(), str(tmp_path))().collect() for s in f.samples]
    assert sum(s.value for s in samples if s.name == "llmobs_requests_in_flight") == 0  # was 5 for good
    assert sum(s.value for s in samples if s.name == "llmobs_requests_total") == 3  # what it counted stays
