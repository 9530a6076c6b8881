"""A real Prometheus on loopback, configured from the repository's deploy/prometheus files."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_PROMETHEUS = ROOT / "deploy" / "prometheus"
JOB = "llmobs"


def required_binary(name: str) -> str:
    """A binary of Debian's `prometheus` package: CI must have it; locally it may be absent."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} not found: CI must `apt-get install -y prometheus`")
        pytest.skip(f"{name} not installed (apt-get install -y prometheus)")
    return path


def prometheus_binary() -> str:
    return required_binary("prometheus")


def retargeted_config(target: str, interval: str = "1s", also: dict[str, str] | None = None) -> dict[str, Any]:
    """The repository's prometheus.yml, scraping only `target` as job llmobs, every `interval`.

    Everything else in the llmobs job (metrics path, job name) and the rule files are kept,
    so the dashboards and rules are proven against the configuration we ship. `also` adds
    copies of that job under other names (job name -> target), for a second scrape job.
    """
    config = yaml.safe_load((DEPLOY_PROMETHEUS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    config["rule_files"] = [str(DEPLOY_PROMETHEUS / name) for name in config["rule_files"]]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == JOB)
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [target]}]
    others = [{**job, "job_name": name, "static_configs": [{"targets": [t]}]} for name, t in (also or {}).items()]
    config["scrape_configs"] = [job, *others]
    return config


class PrometheusError(AssertionError):
    """A query Prometheus refused or failed to evaluate."""


class Prometheus:
    """A Prometheus process and a small client for its HTTP API."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "wb")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Prometheus:
        self.process = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--enable-feature=exemplar-storage",  # as in deploy/docker-compose.yml
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait_until(lambda: self._ready(), timeout, "Prometheus did not become ready")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def logs(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"Prometheus exited:\n{self.logs()}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; the `data` of a success, PrometheusError otherwise."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')} ({params})")
        if body.get("warnings"):
            raise PrometheusError(f"warnings {body['warnings']} ({params})")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        return list(self.api("query", **params)["result"])

    def query_range(self, expr: str, start: float, end: float, step: float = 1) -> list[dict[str, Any]]:
        return list(self.api("query_range", query=expr, start=start, end=end, step=step)["result"])

    def scalar(self, expr: str) -> float:
        """The single value of an instant query that must return one series."""
        result = self.query(expr)
        assert len(result) == 1, f"{expr} returned {result}"
        return float(result[0]["value"][1])

    @staticmethod
    def wait_until(check: Callable[[], bool], timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(message)
            time.sleep(0.2)


def has_values(result: list[dict[str, Any]]) -> bool:
    """Whether a query result holds at least one real number (NaN is not data)."""
    for series in result:
        points = series.get("values") or [series["value"]]
        if any(not math.isnan(float(v)) for _, v in points):
            return True
    return False
