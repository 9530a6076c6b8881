#!/usr/bin/env python3
"""Write the files under deploy/kubernetes/ that are derived from the rest of the repository.

    python deploy/kubernetes/generate.py           # rewrite them
    python deploy/kubernetes/generate.py --check   # list stale ones, exit 1 if any

kustomize reads only files under a kustomization's own directory, so what the manifests share
with the compose stack is copied in here and kept in sync by tests/test_kubernetes.py:

- every rule file that deploy/prometheus/prometheus.yml loads becomes a PrometheusRule whose
  `spec` is that file's text, indented and otherwise unchanged
  (components/prometheus-operator/rules/);
- every dashboards/*.json becomes a ConfigMap for the Grafana sidecar, byte for byte
  (components/grafana-dashboards/);
- deploy/otel-collector/config.yaml is copied for the collector's ConfigMap
  (base/otel-collector-config.yaml).

Edit the sources, never the outputs. The PrometheusRules and kustomizations name their source
in their first line; the JSON dashboards and the collector config are exact copies.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARDS_DIR = ROOT / "dashboards"
COLLECTOR_CONFIG = ROOT / "deploy" / "otel-collector" / "config.yaml"

RULES_DIR = HERE / "components" / "prometheus-operator" / "rules"
DASHBOARDS_COMPONENT = HERE / "components" / "grafana-dashboards"
COLLECTOR_COPY = HERE / "base" / "otel-collector-config.yaml"

COMMAND = "python deploy/kubernetes/generate.py"
LABELS = {"app.kubernetes.io/name": "llmobs", "app.kubernetes.io/part-of": "llmobs"}


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def _header(source: str) -> str:
    return f"# Generated from {source} by {COMMAND}: edit the source, then run it.\n"


def rule_files() -> list[Path]:
    """The rule files Prometheus loads, in the order prometheus.yml lists them."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    return [PROMETHEUS_DIR / name for name in config["rule_files"]]


def rule_name(source: Path) -> str:
    return f"llmobs-{source.stem}"


def prometheus_rule(source: Path) -> str:
    """A PrometheusRule whose spec is the rule file's text, indented by two spaces."""
    text = source.read_text()
    parsed = yaml.safe_load(text)
    if set(parsed) != {"groups"}:
        raise SystemExit(f"{_relative(source)}: a rule file holds `groups:` only, found {sorted(parsed)}")
    metadata = yaml.safe_dump({"name": rule_name(source), "labels": LABELS}, sort_keys=False)
    lines = [_header(_relative(source))]
    lines.append("apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n")
    lines.extend(f"  {line}\n" for line in metadata.splitlines())
    lines.append("spec:\n")
    lines.extend(f"  {line}\n" if line.strip() else "\n" for line in text.splitlines())
    out = "".join(lines)
    if yaml.safe_load(out)["spec"] != parsed:  # indenting must not change a single value
        raise SystemExit(f"{_relative(source)}: cannot embed it unchanged in a PrometheusRule")
    return out


def rules_kustomization(sources: list[Path]) -> str:
    resources = "".join(f"  - {rule_name(s)}.yaml\n" for s in sources)
    return (
        _header(_relative(PROMETHEUS_DIR / "prometheus.yml") + " (rule_files)")
        + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
        + resources
    )


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def dashboard_configmap_name(source: Path) -> str:
    return f"llmobs-dashboard-{source.stem}"


def dashboard_generator(source: Path) -> str:
    labels = "".join(f"        {k}: {v}\n" for k, v in LABELS.items())
    return (
        f"  - name: {dashboard_configmap_name(source)}\n"
        f"    files:\n"
        f"      - dashboards/{source.name}\n"
        f"    options:\n"
        f"      disableNameSuffixHash: true   # one stable name: the sidecar never sees two copies\n"
        f"      labels:\n"
        f'        grafana_dashboard: "1"      # the Grafana sidecar\'s default label\n'
        f"{labels}"
        f"      annotations:\n"
        f"        grafana_folder: llmobs      # used when sidecar.dashboards.folderAnnotation is set\n"
    )


def dashboards_kustomization(sources: list[Path]) -> str:
    return (
        _header(_relative(DASHBOARDS_DIR) + "/*.json")
        + "# The dashboards as ConfigMaps for the Grafana sidecar (grafana/k8s-sidecar). Labels go on\n"
        + "# each generator: a component's `labels:` would relabel everything the overlay holds.\n"
        + "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
        + "configMapGenerator:\n"
        + "".join(dashboard_generator(s) for s in sources)
    )


def outputs() -> dict[Path, Callable[[], str]]:
    """Every derived file and how to make its content."""
    out: dict[Path, Callable[[], str]] = {}
    sources = rule_files()
    for source in sources:
        out[RULES_DIR / f"{rule_name(source)}.yaml"] = lambda s=source: prometheus_rule(s)
    out[RULES_DIR / "kustomization.yaml"] = lambda: rules_kustomization(sources)
    dashboards = dashboard_files()
    for source in dashboards:
        out[DASHBOARDS_COMPONENT / "dashboards" / source.name] = source.read_text
    out[DASHBOARDS_COMPONENT / "kustomization.yaml"] = lambda: dashboards_kustomization(dashboards)
    out[COLLECTOR_COPY] = COLLECTOR_CONFIG.read_text
    return out


def owned_dirs() -> list[Path]:
    """Directories holding generated files only: anything else in them is stale."""
    return [RULES_DIR, DASHBOARDS_COMPONENT, DASHBOARDS_COMPONENT / "dashboards"]


def stale() -> list[str]:
    """Outputs missing or different from what the sources make, and leftovers in owned dirs."""
    expected = outputs()
    problems = [
        f"{_relative(path)} is out of date"
        for path, make in expected.items()
        if not path.is_file() or path.read_text() != make()
    ]
    for directory in owned_dirs():
        for path in sorted(directory.glob("*")):
            if path.is_file() and path not in expected:
                problems.append(f"{_relative(path)} is not generated from any source")
    return problems


def write() -> list[str]:
    written = []
    for path, make in outputs().items():
        content = make()
        if not path.is_file() or path.read_text() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            written.append(_relative(path))
    expected = outputs()
    for directory in owned_dirs():
        for path in sorted(directory.glob("*")):
            if path.is_file() and path not in expected:
                path.unlink()
                written.append(f"{_relative(path)} (removed)")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"run: {COMMAND}", file=sys.stderr)
        return 1 if problems else 0
    for name in write():
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
