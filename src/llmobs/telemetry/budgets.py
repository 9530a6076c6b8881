"""The budget file: US dollars per tenant per day or month, read once at start.

llmobs only publishes the budgets (`llmobs_budget_usd{tenant, period}`); Prometheus rules
compare them with spend. Nothing is ever blocked. The file is checked as strictly as the price
file (same YAML rules: numbers exact, duplicate keys refused), and every error names the file
and the entry.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from llmobs.telemetry.names import BUDGET_PERIODS
from llmobs.yamlfile import amount, read_section

MAX_TENANT = 128  # characters: a longer tenant never appears in the `tenant` label (it becomes `other`)

Budgets = dict[str, dict[str, Decimal]]  # tenant -> period -> USD


class BudgetFileError(ValueError):
    """A budget file that cannot be used; the message names the file and the entry."""


def read_budget_file(path: Path) -> Budgets:
    """Parse and validate `budgets: {<tenant>: {day: 50, month: 1000}, ...}`."""
    tenants = read_section(path, "budgets", what="budget file", maps="tenant names to budgets", error=BudgetFileError)
    return {_tenant(path, name): _periods(path, str(name), entry) for name, entry in tenants.items()}


def _tenant(path: Path, name: object) -> str:
    # `Number` is a str: a tenant written `2024:` keeps its text.
    if not isinstance(name, str) or not name or len(name) > MAX_TENANT:
        raise BudgetFileError(
            f"budget file {path}: tenant {name!r} must be a name of 1 to {MAX_TENANT} characters, "
            "as the tenant label shows it"
        )
    return str(name)


def _periods(path: Path, tenant: str, entry: object) -> dict[str, Decimal]:
    where = f"budget file {path}: tenant {tenant!r}"
    allowed = ", ".join(BUDGET_PERIODS)
    if not isinstance(entry, dict) or not entry:
        raise BudgetFileError(f"{where}: expected a mapping of periods ({allowed}) to US dollars, got {entry!r}")
    unknown = sorted(str(key) for key in entry if key not in BUDGET_PERIODS)
    if unknown:
        raise BudgetFileError(f"{where}: unknown period(s) {', '.join(unknown)} (allowed: {allowed})")
    return {
        str(period): amount(where, str(period), value, unit="US dollars", error=BudgetFileError)
        for period, value in entry.items()
    }
