"""The deploy stack, checked statically (Docker cannot run here) and with promtool."""

from __future__ import annotations

import json
import py_compile
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from llmobs.dashboards import OVERVIEW_UID, build_dashboards, known_series
from prometheus_server import required_binary

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROM_DIR = DEPLOY / "prometheus"
COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PROXY_PORT = 4000
SIM_PORT = 8000


def load(relative: str) -> Any:
    return yaml.safe_load((DEPLOY / relative).read_text())


def promtool() -> str:
    return required_binary("promtool")


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[service].get("environment", {}).items()}


def default(value: str) -> str:
    """`${VAR:-default}` -> default, as compose would resolve it with no .env."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def container_ports(service: str) -> set[int]:
    return {int(default(p).rsplit(":", 1)[1]) for p in SERVICES[service].get("ports", [])}


# --- compose structure ---------------------------------------------------------------------


def test_compose_has_the_whole_stack() -> None:
    assert {"llmobs", "prometheus", "grafana", "otel-collector", "tempo", "simulator", "loadgen"} <= set(SERVICES)


def test_demo_profile_adds_simulator_and_traffic_generator_only() -> None:
    in_demo = {name for name, svc in SERVICES.items() if "demo" in svc.get("profiles", [])}
    assert in_demo == {"simulator", "loadgen"}
    assert "simulate" in SERVICES["simulator"]["command"]
    assert str(SIM_PORT) in SERVICES["simulator"]["command"]


def test_every_image_is_pinned() -> None:
    for name, svc in SERVICES.items():
        if "build" in svc:
            continue
        image = svc["image"]
        assert ":" in image, f"{name}: {image} has no tag"
        tag = image.rsplit(":", 1)[1]
        assert tag not in ("latest", "main", "master") and re.search(r"\d", tag), f"{name}: {image} is not pinned"


def test_llmobs_services_build_from_the_root_dockerfile() -> None:
    for name in ("llmobs", "simulator", "loadgen"):
        build = SERVICES[name]["build"]
        assert (DEPLOY / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).is_file()


def bind_mounts() -> list[tuple[str, str, str]]:
    mounts = []
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                mounts.append((name, source, target))
    return mounts


@pytest.mark.parametrize(("service", "source", "target"), bind_mounts())
def test_bind_mounted_files_exist(service: str, source: str, target: str) -> None:
    assert (DEPLOY / source).exists(), f"{service}: {source} does not exist"


def test_named_volumes_are_declared() -> None:
    named = {v.split(":")[0] for svc in SERVICES.values() for v in svc.get("volumes", []) if not v.startswith(".")}
    assert named == set(COMPOSE["volumes"])


def test_depends_on_names_real_services() -> None:
    for name, svc in SERVICES.items():
        for dep in svc.get("depends_on", {}):
            assert dep in SERVICES, f"{name} depends on unknown {dep}"


def test_env_example_covers_every_compose_variable() -> None:
    used = set(re.findall(r"\$\{([A-Z_]+)", (DEPLOY / "docker-compose.yml").read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", (DEPLOY / ".env.example").read_text(), re.M))
    assert used <= documented, f"missing from .env.example: {used - documented}"


# --- ports agree everywhere ----------------------------------------------------------------


def test_proxy_port_is_the_same_everywhere() -> None:
    assert env("llmobs")["LLMOBS_PORT"] == str(PROXY_PORT)
    assert container_ports("llmobs") == {PROXY_PORT}
    assert f"127.0.0.1:{PROXY_PORT}/healthz" in " ".join(SERVICES["llmobs"]["healthcheck"]["test"])
    job = next(j for j in load("prometheus/prometheus.yml")["scrape_configs"] if j["job_name"] == "llmobs")
    assert job["dns_sd_configs"][0] == {"names": ["llmobs"], "type": "A", "port": PROXY_PORT, "refresh_interval": "15s"}
    assert urlsplit(env("loadgen")["LOADGEN_BASE_URL"]).port == PROXY_PORT
    assert urlsplit(env("loadgen")["LOADGEN_BASE_URL"]).hostname == "llmobs"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {PROXY_PORT}" in dockerfile and f"LLMOBS_PORT={PROXY_PORT}" in dockerfile


def test_default_upstream_is_the_simulator() -> None:
    url = urlsplit(default(env("llmobs")["LLMOBS_UPSTREAM_URL"]))
    assert (url.hostname, url.port, url.path) == ("simulator", SIM_PORT, "/v1")
    assert f"127.0.0.1:{SIM_PORT}/" in " ".join(SERVICES["simulator"]["healthcheck"]["test"])


def test_otlp_flows_proxy_to_collector_to_tempo() -> None:
    collector = load("otel-collector/config.yaml")
    tempo = load("tempo/tempo.yaml")
    endpoint = urlsplit(env("llmobs")["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert env("llmobs")["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    http_in = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert endpoint.hostname == "otel-collector" and endpoint.port == int(http_in.rsplit(":", 1)[1])
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlp/tempo"]
    to_tempo = collector["exporters"]["otlp/tempo"]["endpoint"]
    grpc_in = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert to_tempo == f"tempo:{grpc_in.rsplit(':', 1)[1]}"
    mounted = {t for s, t in (v.split(":")[:2] for v in SERVICES["otel-collector"]["volumes"])}
    assert SERVICES["otel-collector"]["command"][0].split("=", 1)[1] in mounted


def test_grafana_datasources_reach_prometheus_and_tempo_with_exemplar_links() -> None:
    sources = {d["uid"]: d for d in load("grafana/provisioning/datasources/datasources.yml")["datasources"]}
    prom, tempo = sources["prometheus"], sources["tempo"]
    assert prom["isDefault"] and urlsplit(prom["url"]).port in container_ports("prometheus")
    assert urlsplit(prom["url"]).hostname == "prometheus"
    assert urlsplit(tempo["url"]).port == load("tempo/tempo.yaml")["server"]["http_listen_port"]
    assert prom["jsonData"]["exemplarTraceIdDestinations"] == [
        {"name": "trace_id", "datasourceUid": "tempo", "urlDisplayLabel": "Open trace"}
    ]
    assert prom["jsonData"]["timeInterval"] == load("prometheus/prometheus.yml")["global"]["scrape_interval"]


def grafana_mount(source: str) -> str:
    return next(t for s, t in (v.split(":")[:2] for v in SERVICES["grafana"]["volumes"]) if s == source)


def test_grafana_opens_on_the_overview_with_no_clicks() -> None:
    dashboards_dir = grafana_mount("../dashboards")
    provider = load("grafana/provisioning/dashboards/dashboards.yml")["providers"][0]
    assert provider["options"]["path"] == dashboards_dir
    home = env("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/overview.json"
    assert f'"uid": "{OVERVIEW_UID}"' in (ROOT / "dashboards" / "overview.json").read_text()
    assert env("grafana")["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana_mount("./grafana/provisioning") == "/etc/grafana/provisioning"


def test_grafana_provisions_every_generated_dashboard_and_their_links_resolve() -> None:
    provider = load("grafana/provisioning/dashboards/dashboards.yml")["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == grafana_mount("../dashboards")
    files = {p.name: json.loads(p.read_text()) for p in (ROOT / "dashboards").glob("*.json")}
    assert set(files) == set(build_dashboards()) and {"overview.json", "model.json", "tenant.json"} <= set(files)
    uids = [d["uid"] for d in files.values()]
    assert len(uids) == len(set(uids))
    linked = {uid for text in map(json.dumps, files.values()) for uid in re.findall(r"/d/([\w-]+)\?", text)}
    assert linked and linked <= set(uids), f"links to dashboards not provisioned: {linked - set(uids)}"


def test_prometheus_keeps_exemplars_and_loads_the_mounted_config() -> None:
    command = SERVICES["prometheus"]["command"]
    assert "--enable-feature=exemplar-storage" in command
    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    assert ("./prometheus", "/etc/prometheus") in [tuple(v.split(":")[:2]) for v in SERVICES["prometheus"]["volumes"]]


def test_llmobs_has_a_healthcheck_and_the_image_is_slim_and_non_root() -> None:
    assert "/healthz" in " ".join(SERVICES["llmobs"]["healthcheck"]["test"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert bases and all("slim" in b and not b.endswith(":latest") for b in bases)
    assert re.search(r"^USER (?!root|0\b)\S+", dockerfile, re.M)
    assert re.search(r"^HEALTHCHECK .*", dockerfile, re.M) and "/healthz" in dockerfile
    assert re.search(r"^RUN pip install -c /src/requirements\.lock /src$", dockerfile, re.M)  # the tested set


def test_price_file_mount_matches_the_setting() -> None:
    target = next(
        t for s, t in (v.split(":")[:2] for v in SERVICES["llmobs"]["volumes"]) if s == "./llmobs/prices.yaml"
    )
    assert env("llmobs")["LLMOBS_PRICE_FILE"] == target
    assert set(load("llmobs/prices.yaml")) == {"models"}


def test_loadgen_script_compiles_and_is_mounted_where_it_runs() -> None:
    py_compile.compile(str(DEPLOY / "loadgen" / "loadgen.py"), doraise=True)
    target = next(t for s, t in (v.split(":")[:2] for v in SERVICES["loadgen"]["volumes"]))
    assert SERVICES["loadgen"]["entrypoint"] == ["python", target]


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", "tests", "deploy"} <= set(ignored)


# --- Prometheus config and rules -----------------------------------------------------------


def rule_exprs() -> list[str]:
    return [
        r["expr"] for f in ("rules.yml", "alerts.yml") for g in load(f"prometheus/{f}")["groups"] for r in g["rules"]
    ]


def test_rules_reference_only_metrics_llmobs_exposes() -> None:
    # Raw series only: recording-rule names (level:metric:ops) contain metric names between colons.
    used = {m for e in rule_exprs() for m in re.findall(r"(?<![:\w])llmobs_[a-z0-9_]+\b(?!:)", e)}
    assert used and used <= known_series(), used - known_series()


def test_every_alert_has_summary_description_runbook_and_severity() -> None:
    alerts = [r for g in load("prometheus/alerts.yml")["groups"] for r in g["rules"]]
    for alert in alerts:
        assert {"summary", "description", "runbook"} <= set(alert["annotations"]), alert["alert"]
        assert alert["labels"]["severity"] in ("info", "warning", "critical")


def test_every_alert_has_a_promtool_unit_test() -> None:
    alerts = {r["alert"] for g in load("prometheus/alerts.yml")["groups"] for r in g["rules"]}
    tested = set()
    for path in (ROOT / "tests" / "promtool").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert alerts <= tested, f"alerts never shown firing in a unit test: {alerts - tested}"


def test_prometheus_config_refers_to_existing_rule_files() -> None:
    for name in load("prometheus/prometheus.yml")["rule_files"]:
        assert (PROM_DIR / name).is_file()


def test_promtool_check_config() -> None:
    run_promtool("check", "config", str(PROM_DIR / "prometheus.yml"))


def test_promtool_check_rules() -> None:
    run_promtool("check", "rules", str(PROM_DIR / "rules.yml"), str(PROM_DIR / "alerts.yml"))


def test_promtool_rule_unit_tests() -> None:
    tests = sorted(str(p) for p in (ROOT / "tests" / "promtool").glob("*.yml"))
    assert tests
    result = run_promtool("test", "rules", *tests)
    assert "SUCCESS" in result.stdout
