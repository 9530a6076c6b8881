"""Budgets: the budget file, checked at start, published as llmobs_budget_usd; nothing is blocked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx2 as httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest

from conftest import Proxied, sdk_client
from llmobs.attribution import fingerprint
from llmobs.config import ConfigError, load_settings
from llmobs.dev.harness import ServerThread
from llmobs.telemetry.budgets import BudgetFileError, read_budget_file
from llmobs.telemetry.sinks.prometheus import PrometheusSink

ROOT = Path(__file__).resolve().parent.parent
GOOD = """budgets:
  search-team: {day: 50, month: 1000}
  acme:
    month: 250.75
  "2024": {day: 0}      # a tenant named like a number, and a zero budget
  key-1a2b3c4d5e: {day: 1e2}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "budgets.yaml"
    path.write_text(text)
    return path


def test_a_budget_file_reads_as_exact_dollars_per_tenant_and_period(tmp_path: Path) -> None:
    assert read_budget_file(write(tmp_path, GOOD)) == {
        "search-team": {"day": Decimal(50), "month": Decimal(1000)},
        "acme": {"month": Decimal("250.75")},
        "2024": {"day": Decimal(0)},
        "key-1a2b3c4d5e": {"day": Decimal(100)},
    }
    assert read_budget_file(write(tmp_path, "budgets: {}\n")) == {}
    assert read_budget_file(write(tmp_path, "budgets:\n  2024: {day: 5}\n")) == {"2024": {"day": Decimal(5)}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a mapping with the single key 'budgets'"),
        ("budget: {a: {day: 1}}\n", "expected a mapping with the single key 'budgets'"),
        ("budgets: {a: {day: 1}}\nmodels: {}\n", "expected a mapping with the single key 'budgets'"),
        ("budgets: [a, b]\n", "'budgets' must map tenant names to budgets"),
        ("budgets:\n", "'budgets' must map tenant names to budgets"),
        ("budgets: {'': {day: 1}}\n", "tenant '' must be a name of 1 to 128 characters"),
        ("budgets: {null: {day: 1}}\n", "tenant None must be a name of 1 to 128 characters"),
        (f"budgets: {{{'t' * 129}: {{day: 1}}}}\n", "must be a name of 1 to 128 characters"),
        ("budgets: {acme: 50}\n", "tenant 'acme': expected a mapping of periods (day, month) to US dollars, got"),
        ("budgets: {acme: {}}\n", "tenant 'acme': expected a mapping of periods (day, month)"),
        ("budgets: {acme: {week: 5, day: 1}}\n", "tenant 'acme': unknown period(s) week (allowed: day, month)"),
        ("budgets: {acme: {day: '50'}}\n", "tenant 'acme': day must be a number (US dollars), got '50'; write"),
        ("budgets: {acme: {day: null}}\n", "tenant 'acme': day must be a number (US dollars), got None"),
        ("budgets: {acme: {month: -1}}\n", "tenant 'acme': month must be a finite number >= 0, got '-1'"),
        ("budgets: {acme: {month: .inf}}\n", "tenant 'acme': month must be a finite number >= 0, got '.inf'"),
        ("budgets: {acme: {day: 1}, acme: {day: 2}}\n", "invalid YAML: duplicate key 'acme'"),
        ("budgets: {acme: {day: 1, day: 2}}\n", "invalid YAML: duplicate key 'day'"),
        ("budgets: {acme: [\n", "invalid YAML"),
    ],
)
def test_a_bad_budget_file_is_refused_naming_the_file_and_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(BudgetFileError) as error:
        read_budget_file(path)
    assert str(error.value).startswith(f"budget file {path}: ")
    assert message in str(error.value)


def test_an_unreadable_budget_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_bytes(b"budgets: {\xff: {day: 1}}\n")
    with pytest.raises(BudgetFileError, match=f"budget file {re.escape(str(path))}: cannot read it"):
        read_budget_file(path)


def test_the_setting_names_a_missing_file() -> None:
    with pytest.raises(ConfigError, match="LLMOBS_BUDGET_FILE: no such file, got '/nonexistent.yaml'"):
        load_settings(environ={"LLMOBS_BUDGET_FILE": "/nonexistent.yaml"})


def test_the_readme_example_is_a_valid_budget_file(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Budgets") :]
    example = re.search(r"```yaml\n(budgets:.*?)```", section, re.S)
    assert example, "README 'Budgets' has no budget file example"
    budgets = read_budget_file(write(tmp_path, example.group(1)))
    assert budgets and all(set(periods) <= {"day", "month"} for periods in budgets.values())


def test_the_sink_publishes_each_budget_as_a_max_gauge() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(registry)
    sink.budgets({"acme": {"day": Decimal("50.5"), "month": Decimal(1000)}})
    assert registry.get_sample_value("llmobs_budget_usd", {"tenant": "acme", "period": "day"}) == 50.5
    assert registry.get_sample_value("llmobs_budget_usd", {"tenant": "acme", "period": "month"}) == 1000
    assert sink.metrics.budget._multiprocess_mode == "max"  # every worker publishes the same budgets
    assert "# UNIT llmobs_budget_usd usd\n" in generate_latest(registry).decode()


def test_budgets_reach_metrics_under_the_tenant_names_spend_is_counted_by(
    tmp_path: Path, upstream: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    key = "sk-search-team-0123456789"
    tenant_map = tmp_path / "tenants.yaml"
    tenant_map.write_text(f"tenants:\n  {fingerprint(key)}: search-team\n")
    proxy = make_proxy(
        upstream.url + "/v1",
        provider="openai",
        budget_file=write(tmp_path, GOOD),
        tenant_map_file=tenant_map,
    )
    # Spend from a key mapped to a team name is counted under the name the budget file uses.
    sdk_client(proxy.base_url, api_key=key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert proxy.total("llmobs_cost_usd_total", tenant="search-team") > 0
    text = httpx.get(proxy.url + "/metrics").text
    for line in (
        'llmobs_budget_usd{period="day",tenant="search-team"} 50.0',
        'llmobs_budget_usd{period="month",tenant="search-team"} 1000.0',
        'llmobs_budget_usd{period="month",tenant="acme"} 250.75',
        'llmobs_budget_usd{period="day",tenant="2024"} 0.0',
    ):
        assert line in text
    assert 'llmobs_budget_usd{period="day",tenant="acme"}' not in text  # no day budget: no series
    # llmobs only observes: a tenant with a zero budget is served like any other.
    reply = sdk_client(proxy.base_url).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-llmobs-tenant": "2024"}
    )
    assert reply.choices


def test_without_a_budget_file_there_is_no_budget_series(
    upstream: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(upstream.url + "/v1")
    assert "llmobs_budget_usd{" not in httpx.get(proxy.url + "/metrics").text


def test_a_bad_budget_file_stops_the_start(tmp_path: Path) -> None:
    path = write(tmp_path, "budgets:\n  acme: {day: -1}\n")
    result = subprocess.run(
        [sys.executable, "-m", "llmobs.cli", "serve"],
        env={**os.environ, "LLMOBS_BUDGET_FILE": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"budget file {path}: tenant 'acme': day must be a finite number >= 0" in result.stderr
