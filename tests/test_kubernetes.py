"""The Kubernetes manifests (deploy/kubernetes/), rendered by `kubectl kustomize` and checked offline.

Schemas: the Kubernetes OpenAPI schemas bundled by `kubernetes-validate` (strict: unknown fields
fail), and the Prometheus Operator CRDs as shipped by `cloudcoil-models-prometheus-operator`
(pydantic models generated from the operator's CRDs), turned into JSON Schema, closed to
unknown fields and checked with `jsonschema`. Both are pinned in the `test` extra.
Then the things no schema knows: ports, probe paths, settings, grace periods, selectors and
the rules and dashboards against the files the compose stack and promtool use.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from llmobs import __version__
from llmobs.app import ADMIN_PATHS
from llmobs.config import ENV_PREFIX, Settings, load_settings
from llmobs.dev.harness import ServerThread
from servers import free_port

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
DEPLOY = ROOT / "deploy"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
TARGETS = ["base", *(f"overlays/{name}" for name in OVERLAYS)]
# The oldest Kubernetes minor still widely run, and the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.28", "1.37")
OPERATOR_API = "monitoring.coreos.com/v1"
REGENERATE = "python deploy/kubernetes/generate.py"
COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl not found: these tests render deploy/kubernetes with `kubectl kustomize`. "
            "Install it (as root): apt-get install -y kubectl"
        )
    return path


@functools.cache
def _render(target: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {target} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(target: str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize deploy/kubernetes/<target>` prints (a fresh copy)."""
    return copy.deepcopy(list(_render(target)))


def objects(target: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in render(target) if o["kind"] == kind]


def one(target: str, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects(target, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{target}: expected one {kind} {name}, found {len(found)}"
    return found[0]


def containers(target: str = "base") -> dict[str, dict[str, Any]]:
    return {c["name"]: c for d in objects(target, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]}


def configmap_data(target: str, prefix: str) -> dict[str, str]:
    (found,) = [o for o in objects(target, "ConfigMap") if o["metadata"]["name"].startswith(prefix + "-")]
    return found["data"]


def settings_env(target: str = "base") -> dict[str, str]:
    return configmap_data(target, "llmobs-config")


def port_numbers(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- rendering and schemas -----------------------------------------------------------------


def test_kubectl_is_installed_and_renders_every_target() -> None:
    assert TARGETS[1:], "no overlays found"
    assert {"prometheus-operator", "grafana", "remote-write", "kube-prometheus-stack"} <= set(OVERLAYS)
    for target in TARGETS:
        assert render(target), f"{target} rendered nothing"


def kubernetes_errors(obj: dict[str, Any], version: str) -> list[str]:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [exc.message]
    return []


def _closed(schema: Any) -> Any:
    """The schema with every object closed to unknown fields (`kubectl apply` is strict too)."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "$defs"):
            out[key] = {name: _closed(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not"):
            out[key] = _closed(value)
        elif key == "pattern" and value.startswith("^(?i)"):
            out[key] = "(?i)^" + value[5:]  # Go allows the flag after ^, Python's re does not
        else:
            out[key] = value
    if out.get("properties") and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@functools.cache
def operator_model(kind: str) -> Any:
    from cloudcoil.models.prometheus_operator import v1

    return getattr(v1, kind)


@functools.cache
def operator_validator(kind: str) -> jsonschema.protocols.Validator:
    schema = _closed(operator_model(kind).model_json_schema(by_alias=True))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def operator_errors(obj: dict[str, Any]) -> list[str]:
    import pydantic

    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in operator_validator(obj["kind"]).iter_errors(obj)
    ]
    try:
        operator_model(obj["kind"]).model_validate(obj)
    except pydantic.ValidationError as exc:
        errors.append(str(exc))
    return errors


def schema_errors(obj: dict[str, Any], version: str) -> list[str]:
    if obj["apiVersion"] == OPERATOR_API:
        return operator_errors(obj)
    group = obj["apiVersion"].rpartition("/")[0]
    if "." in group and not group.endswith(".k8s.io"):
        return [f"no schema for {obj['apiVersion']} {obj['kind']}"]
    return kubernetes_errors(obj, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_every_object_matches_its_schema(target: str, version: str) -> None:
    problems = {
        f"{o['kind']}/{o['metadata']['name']}": errors for o in render(target) if (errors := schema_errors(o, version))
    }
    assert not problems, problems


def test_the_validators_reject_what_a_cluster_would() -> None:
    """Each check above can fail: break one field of a rendered object, the validator says so."""
    deployment = one("base", "Deployment", "llmobs")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    assert kubernetes_errors(deployment, KUBERNETES_VERSIONS[-1])
    hpa = one("base", "HorizontalPodAutoscaler", "llmobs")
    hpa["spec"]["minReplicas"] = "two"
    assert kubernetes_errors(hpa, KUBERNETES_VERSIONS[0])
    assert schema_errors({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x"}}, "1.37")

    monitor = one("overlays/prometheus-operator", "PodMonitor", "llmobs")
    typo = copy.deepcopy(monitor)
    typo["spec"]["podMetricsEndpoints"][0]["prot"] = "admin"
    assert operator_errors(typo)
    wrong = copy.deepcopy(monitor)
    wrong["spec"]["scrapeProtocols"] = ["OpenMetrics"]
    assert operator_errors(wrong)
    rule = one("overlays/prometheus-operator", "PrometheusRule", "llmobs-alerts")
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    assert operator_errors(rule)
    prometheus = one("overlays/remote-write", "Prometheus", "llmobs")
    prometheus["spec"]["remoteWrite"][0]["sendExemplar"] = True
    assert operator_errors(prometheus)


# --- derived files -------------------------------------------------------------------------


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_current() -> None:
    problems = generator().stale()
    assert not problems, "\n".join([*problems, f"regenerate with: {REGENERATE}"])


def test_generator_check_mode_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = generator()
    copy_of_config = tmp_path / "otel-collector-config.yaml"
    copy_of_config.write_text("receivers: {}\n")
    monkeypatch.setattr(gen, "COLLECTOR_COPY", copy_of_config)
    assert any("out of date" in p for p in gen.stale())
    assert gen.main(["--check"]) == 1


def rule_sources() -> list[Path]:
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    return [DEPLOY / "prometheus" / name for name in prometheus["rule_files"]]


def test_promtool_tests_the_same_rule_files_prometheus_loads() -> None:
    tested = set()
    for path in (ROOT / "tests" / "promtool").glob("*.yml"):
        tested |= {(path.parent / f).resolve() for f in yaml.safe_load(path.read_text())["rule_files"]}
    assert tested == {p.resolve() for p in rule_sources()}


@pytest.mark.parametrize("target", ["overlays/prometheus-operator", "overlays/kube-prometheus-stack"])
def test_prometheus_rules_are_the_rule_files(target: str) -> None:
    rules = {o["metadata"]["name"]: o for o in objects(target, "PrometheusRule")}
    assert set(rules) == {f"llmobs-{p.stem}" for p in rule_sources()}
    for source in rule_sources():
        spec = rules[f"llmobs-{source.stem}"]["spec"]
        assert spec == yaml.safe_load(source.read_text()), f"{source.name} differs: {REGENERATE}"


def test_every_rule_string_is_byte_identical() -> None:
    """Every expr, label and annotation, compared as the exact strings promtool reads."""

    def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from strings(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from strings(value, f"{path}[{i}]")
        else:
            yield path, str(node)

    rendered = {o["metadata"]["name"]: o["spec"] for o in objects("overlays/prometheus-operator", "PrometheusRule")}
    for source in rule_sources():
        expected = sorted(strings(yaml.safe_load(source.read_text())))  # kustomize sorts keys
        assert expected and sorted(strings(rendered[f"llmobs-{source.stem}"])) == expected


@pytest.mark.parametrize("target", ["overlays/grafana", "overlays/kube-prometheus-stack"])
def test_dashboard_configmaps_are_the_dashboards(target: str) -> None:
    maps = {
        o["metadata"]["name"]: o for o in objects(target, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]
    }
    dashboards = sorted((ROOT / "dashboards").glob("*.json"))
    assert dashboards and set(maps) == {f"llmobs-dashboard-{p.stem}" for p in dashboards}
    for path in dashboards:
        configmap = maps[f"llmobs-dashboard-{path.stem}"]
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["data"] == {path.name: path.read_text()}, f"{path.name} differs: {REGENERATE}"
        # `kubectl apply` (client side) keeps a copy in an annotation limited to 256 KiB.
        assert len(path.read_bytes()) < 256 * 1024 - 4096


def test_collector_config_is_the_compose_stacks() -> None:
    collector = one("base", "Deployment", "otel-collector")
    pod = collector["spec"]["template"]["spec"]
    (volume,) = pod["volumes"]
    (configmap,) = [o for o in objects("base", "ConfigMap") if o["metadata"]["name"] == volume["configMap"]["name"]]
    assert configmap["data"] == {"config.yaml": (DEPLOY / "otel-collector" / "config.yaml").read_text()}
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    compose = COMPOSE["services"]["otel-collector"]
    assert container["args"] == compose["command"] == [f"--config={mount['mountPath']}/config.yaml"]
    assert container["image"] == compose["image"]


# --- the llmobs pod against what llmobs serves ----------------------------------------------


def test_ports_are_the_settings() -> None:
    env, container = settings_env(), containers()["llmobs"]
    ports = port_numbers(container)
    assert ports == {"http": int(env["LLMOBS_PORT"]), "admin": int(env["LLMOBS_ADMIN_PORT"])}
    assert env["LLMOBS_HOST"] == "0.0.0.0"
    (service,) = [s for s in objects("base", "Service") if s["metadata"]["name"] == "llmobs"]
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(ports["http"], "http")]
    annotations = one("base", "Deployment", "llmobs")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["admin"]
    assert annotations["prometheus.io/path"] in ADMIN_PATHS


def test_probes_use_llmobs_admin_routes() -> None:
    container = containers()["llmobs"]
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["path"] in ADMIN_PATHS and probe["port"] == "admin"


def test_probes_answer_on_a_real_llmobs_started_with_these_settings(upstream: ServerThread, tmp_path: Path) -> None:
    """llmobs with the ConfigMap's settings (local ports and upstream): each probe answers, the
    admin port serves OpenMetrics, the traffic port proxies, and SIGTERM exits cleanly."""
    env = settings_env()
    container = containers()["llmobs"]
    port, admin = free_port(), free_port()
    local = {
        **env,
        "LLMOBS_HOST": "127.0.0.1",
        "LLMOBS_PORT": str(port),
        "LLMOBS_ADMIN_PORT": str(admin),
        "LLMOBS_UPSTREAM_URL": upstream.url + "/v1",
        "LLMOBS_PRICE_FILE": str(K8S / "base" / "prices.yaml"),
        "LLMOBS_SHUTDOWN_GRACE_SECONDS": "5",
    }
    for name in list(local):
        if name.startswith("OTEL_EXPORTER_"):  # the collector Service does not resolve here
            del local[name]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOBS_", "OTEL_"))}
    log = tmp_path / "llmobs.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmobs.cli", *container["args"]],
            env={**environ, **local},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        admin_url, url = f"http://127.0.0.1:{admin}", f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(admin_url + container["readinessProbe"]["httpGet"]["path"], timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "llmobs never became ready"
            time.sleep(0.1)
        for kind in ("startupProbe", "livenessProbe"):
            assert httpx.get(admin_url + container[kind]["httpGet"]["path"]).status_code == 200
        metrics = httpx.get(admin_url + "/metrics", headers={"accept": "application/openmetrics-text"})
        assert metrics.headers["content-type"].startswith("application/openmetrics-text")
        assert "llmobs_build_info" in metrics.text
        models = httpx.get(url + "/v1/models")
        assert models.status_code == 200 and "llmobs_proxy_error" not in models.text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_settings_load_and_every_variable_is_a_real_setting() -> None:
    from opentelemetry import environment_variables as api_names
    from opentelemetry.sdk import environment_variables as sdk_names

    container = containers()["llmobs"]
    env = settings_env()
    explicit = {e["name"]: e for e in container["env"]}
    llmobs_names = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    otel_names = {getattr(m, n) for m in (api_names, sdk_names) for n in dir(m) if n.startswith("OTEL_")}
    values = " ".join([*env.values(), *(e.get("value", "") for e in explicit.values())])
    for name in [*env, *explicit]:
        if name.startswith(ENV_PREFIX):
            assert name in llmobs_names, f"{name} is not an llmobs setting"
        elif name.startswith("OTEL_"):
            assert name in otel_names, f"{name} is not an OpenTelemetry SDK variable"
        else:  # a helper for $(NAME) expansion, such as the pod name from the downward API
            assert f"$({name})" in values, f"{name} is neither a setting nor used by one"
    settings = load_settings(environ={**env, "LLMOBS_PRICE_FILE": str(K8S / "base" / "prices.yaml")})
    assert (settings.port, settings.admin_port) == (port_numbers(container)["http"], port_numbers(container)["admin"])


def test_secrets_are_referenced_never_committed() -> None:
    secret_settings = {
        ENV_PREFIX + name.upper()
        for name, field in Settings.model_fields.items()
        if SecretStr in _types(field.annotation)
    }
    assert secret_settings == {"LLMOBS_UPSTREAM_API_KEY", "LLMOBS_ADMIN_TOKEN", "LLMOBS_TENANT_SALT"}
    for target in TARGETS:
        assert not objects(target, "Secret"), f"{target} commits a Secret"
    assert not secret_settings & set(settings_env())
    explicit = {e["name"]: e for e in containers()["llmobs"]["env"]}
    for name in secret_settings:
        ref = explicit[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "llmobs" and ref["optional"] is True
    readme = (K8S / "README.md").read_text()
    assert "kubectl -n llmobs create secret generic llmobs" in readme
    for name in secret_settings:
        assert f"--from-literal={explicit[name]['valueFrom']['secretKeyRef']['key']}=" in readme


def _types(annotation: Any) -> set[Any]:
    args = getattr(annotation, "__args__", None)
    return set(args) if args else {annotation}


def test_one_process_per_pod_for_exemplars() -> None:
    assert settings_env()["LLMOBS_WORKERS"] == "1"


def test_terminationgrace_covers_prestop_drain_and_telemetry_flush() -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import DEFAULT_TIMEOUT as METRICS_TIMEOUT
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import DEFAULT_TIMEOUT as TRACES_TIMEOUT

    env = settings_env()
    pod = one("base", "Deployment", "llmobs")["spec"]["template"]["spec"]
    container = containers()["llmobs"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2
    pre_stop = int(command[1])
    drain = float(env["LLMOBS_SHUTDOWN_GRACE_SECONDS"])
    assert not {"OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"} & set(env)
    flush = TRACES_TIMEOUT + METRICS_TIMEOUT
    # Endpoints are removed while preStop sleeps: at least one readiness period.
    assert pre_stop >= container["readinessProbe"]["periodSeconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + flush + 5
    assert (
        f"{pre_stop} + {drain:g} + 2 x {TRACES_TIMEOUT:g} = {pre_stop + drain + flush:g} s"
        in (K8S / "base" / "deployment.yaml").read_text()
    )


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    namespace = one("base", "Namespace", "llmobs")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    dockerfile_user = int(re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M).group(1))
    for deployment in objects("base", "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), name
        assert all("hostPath" not in v for v in pod.get("volumes", [])), name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]} and context.get("privileged") is not True
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    llmobs_pod = one("base", "Deployment", "llmobs")["spec"]["template"]["spec"]
    assert llmobs_pod["securityContext"]["runAsUser"] == dockerfile_user
    (tmp,) = [m for m in containers()["llmobs"]["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in llmobs_pod["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume
    prometheus = one("overlays/remote-write", "Prometheus", "llmobs")["spec"]["securityContext"]
    assert prometheus["runAsNonRoot"] is True and prometheus["seccompProfile"] == {"type": "RuntimeDefault"}


def test_price_file_is_mounted_where_the_setting_points_and_loads() -> None:
    from llmobs.telemetry.pricing import read_price_file

    container, pod = containers()["llmobs"], one("base", "Deployment", "llmobs")["spec"]["template"]["spec"]
    path = Path(settings_env()["LLMOBS_PRICE_FILE"])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    data = [o for o in objects("base", "ConfigMap") if o["metadata"]["name"] == volume["configMap"]["name"]][0]["data"]
    assert set(data) == {path.name}
    read_price_file(K8S / "base" / path.name)


# --- objects refer to each other correctly --------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_selectors_and_references_resolve(target: str) -> None:
    rendered = render(target)
    deployments = [o for o in rendered if o["kind"] == "Deployment"]
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in deployments}
    pod_ports = {
        d["metadata"]["name"]: {p["name"] for c in d["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for d in deployments
    }
    configmaps = {o["metadata"]["name"] for o in rendered if o["kind"] == "ConfigMap"}
    accounts = {o["metadata"]["name"] for o in rendered if o["kind"] == "ServiceAccount"}

    def selected(selector: dict[str, str]) -> list[str]:
        assert selector, "empty selector"
        return [name for name, labels in pods.items() if matches(selector, labels)]

    for deployment in deployments:
        spec = deployment["spec"]["template"]["spec"]
        assert selected(deployment["spec"]["selector"]["matchLabels"]) == [deployment["metadata"]["name"]]
        for constraint in spec.get("topologySpreadConstraints", []):
            assert constraint["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps
        if "serviceAccountName" in spec:
            assert spec["serviceAccountName"] in accounts
    for obj in rendered:
        kind, spec = obj["kind"], obj.get("spec", {})
        if kind == "Service":
            (owner,) = selected(spec["selector"])
            assert {p["targetPort"] for p in spec["ports"]} <= pod_ports[owner]
        elif kind == "PodDisruptionBudget":
            assert len(selected(spec["selector"]["matchLabels"])) == 1
        elif kind == "HorizontalPodAutoscaler":
            ref = spec["scaleTargetRef"]
            assert ref["kind"] == "Deployment" and ref["name"] in pods
            (target_deployment,) = [d for d in deployments if d["metadata"]["name"] == ref["name"]]
            assert "replicas" not in target_deployment["spec"], "the HPA owns the replica count"
        elif kind == "PodMonitor":
            (owner,) = selected(spec["selector"]["matchLabels"])
            assert {e["port"] for e in spec["podMetricsEndpoints"]} <= pod_ports[owner]
            assert spec["jobLabel"] in pods[owner]
        elif kind == "Prometheus":
            assert spec["serviceAccountName"] in accounts
            for other, selector in (("PodMonitor", "podMonitorSelector"), ("PrometheusRule", "ruleSelector")):
                chosen = [o for o in rendered if o["kind"] == other]
                assert chosen and all(matches(spec[selector]["matchLabels"], o["metadata"]["labels"]) for o in chosen)
        elif kind == "RoleBinding":
            for subject in obj["subjects"]:
                assert subject["name"] in accounts and subject["namespace"] == obj["metadata"]["namespace"]


@pytest.mark.parametrize("target", TARGETS)
def test_labels_and_namespace(target: str) -> None:
    for obj in render(target):
        where = f"{target}: {obj['kind']}/{obj['metadata']['name']}"
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "llmobs", where
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "llmobs", where
        if obj["kind"] not in ("Namespace", "ConfigMap"):
            assert "app.kubernetes.io/name" in labels, where
        if obj["kind"] in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
            assert "app.kubernetes.io/instance" in labels, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_add_to_the_base_and_change_no_label_of_it(overlay: str) -> None:
    """A component's transformers reach every object of the overlay: none may relabel the base."""
    rendered = {(o["kind"], o["metadata"]["name"]): o for o in render(f"overlays/{overlay}")}
    for obj in render("base"):
        key = (obj["kind"], obj["metadata"]["name"])
        assert key in rendered, f"{overlay} lost {key}"
        labels = rendered[key]["metadata"].get("labels", {})
        changed = {k: (v, labels.get(k)) for k, v in obj["metadata"].get("labels", {}).items() if labels.get(k) != v}
        assert not changed, f"{overlay} relabels {key}: {changed}"
        if obj["kind"] == "Deployment":
            assert rendered[key]["spec"] == obj["spec"], f"{overlay} changes {key}"


def test_images_are_pinned() -> None:
    images = {name: c["image"] for name, c in containers().items()}
    for name, image in images.items():
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
    assert images["llmobs"] == f"llmobs:{__version__}", "the image tag follows the package version"
    prometheus_tag = COMPOSE["services"]["prometheus"]["image"].rsplit(":", 1)[1]
    assert one("overlays/remote-write", "Prometheus", "llmobs")["spec"]["version"] == prometheus_tag


def test_autoscaling_and_disruption_budget() -> None:
    hpa = one("base", "HorizontalPodAutoscaler", "llmobs")
    assert hpa["apiVersion"] == "autoscaling/v2"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert containers()["llmobs"]["resources"]["requests"]["cpu"], "utilization is relative to the CPU request"
    pdb = one("base", "PodDisruptionBudget", "llmobs")
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


# --- Prometheus, exemplars and the telemetry path --------------------------------------------


def alert_jobs() -> set[str]:
    text = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    return set(re.findall(r'job="([^"]+)"', text))


def test_scraped_job_is_the_one_the_alerts_name() -> None:
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in objects("base", "Deployment")}
    monitors = {m["metadata"]["name"]: m["spec"] for m in objects("overlays/prometheus-operator", "PodMonitor")}
    assert alert_jobs() == {pods["llmobs"][monitors["llmobs"]["jobLabel"]]} == {"llmobs"}
    compose_jobs = {
        j["job_name"] for j in yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    }
    assert pods["otel-collector"][monitors["otel-collector"]["jobLabel"]] in compose_jobs


def test_openmetrics_scrape_and_exemplars_end_to_end() -> None:
    compose_scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["global"]["scrape_interval"]
    monitor = one("overlays/prometheus-operator", "PodMonitor", "llmobs")["spec"]
    assert monitor["scrapeProtocols"][0] == "OpenMetricsText1.0.0"
    assert [e["interval"] for e in monitor["podMetricsEndpoints"]] == [compose_scrape]
    assert [e["path"] for e in monitor["podMetricsEndpoints"]] == ["/metrics"]
    prometheus = one("overlays/remote-write", "Prometheus", "llmobs")["spec"]
    flag = "--enable-feature=exemplar-storage"
    assert flag in COMPOSE["services"]["prometheus"]["command"]
    assert flag.split("=")[1] in prometheus["enableFeatures"]
    assert prometheus["scrapeInterval"] == compose_scrape
    assert all(w["sendExemplars"] is True for w in prometheus["remoteWrite"])


def test_remote_write_is_deduplicable_and_points_at_a_push_endpoint() -> None:
    prometheus = one("overlays/remote-write", "Prometheus", "llmobs")["spec"]
    assert prometheus["replicas"] >= 2 and prometheus["replicaExternalLabelName"] == "__replica__"
    assert "cluster" in prometheus["externalLabels"]
    for write in prometheus["remoteWrite"]:
        assert urlsplit(write["url"]).path in ("/api/v1/push", "/api/v1/receive")


def test_spans_go_to_the_collector_service() -> None:
    env = settings_env()
    endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    service = one("base", "Service", endpoint.hostname)
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == endpoint.port]
    collector = containers()["otel-collector"]
    config = yaml.safe_load(configmap_data("base", "otel-collector-config")["config.yaml"])
    http_in = int(config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1])
    assert port_numbers(collector)[port["targetPort"]] == http_in
    health = int(config["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1])
    assert port_numbers(collector)[collector["readinessProbe"]["httpGet"]["port"]] == health


# --- docs and CI ---------------------------------------------------------------------------


def test_kubernetes_readme_covers_every_overlay_and_names_real_paths() -> None:
    readme = (K8S / "README.md").read_text()
    for name in OVERLAYS:
        assert f"kubectl apply -k deploy/kubernetes/overlays/{name}" in readme, name
    for path in re.findall(r"deploy/kubernetes/[\w./-]+", readme):
        assert (ROOT / path.rstrip(".")).exists(), path
    assert REGENERATE in readme


def test_the_readme_overlay_example_renders_and_validates(tmp_path: Path) -> None:
    readme = (K8S / "README.md").read_text()
    (example,) = re.findall(r"```yaml\n# kustomization.yaml\n(.*?)```", readme, re.S)
    resource = re.search(r"^  - (\S*)deploy/kubernetes/(\S+)$", example, re.M)
    assert resource, "the example names an overlay of this repository"
    here = os.path.relpath(K8S, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(example.replace(resource.group(1) + "deploy/kubernetes", here))
    result = subprocess.run([kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    for obj in rendered:
        assert not schema_errors(obj, KUBERNETES_VERSIONS[-1]), (obj["kind"], schema_errors(obj, "1.37"))
    (monitor,) = [o for o in rendered if o["kind"] == "PodMonitor" and o["metadata"]["name"] == "llmobs"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["authorization"]["credentials"]["key"] == "admin-token"
    admin_token = next(e for e in containers()["llmobs"]["env"] if e["name"] == "LLMOBS_ADMIN_TOKEN")
    assert admin_token["valueFrom"]["secretKeyRef"]["key"] == "admin-token"
    (deployment,) = [o for o in rendered if o["kind"] == "Deployment" and o["metadata"]["name"] == "llmobs"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("registry.example.com/")
    (config,) = [o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("llmobs-config-")]
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert config["data"]["LLMOBS_UPSTREAM_URL"] != settings_env()["LLMOBS_UPSTREAM_URL"]


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def test_scaling_section_quotes_the_benchmark() -> None:
    text = (ROOT / "README.md").read_text()
    assert text.index("## Several workers") < text.index("## Scaling")
    section = readme_section("Scaling")
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    quoted = re.findall(r"`([\d.,]+ (?:ms|µs|MiB|req/s))`", section)
    assert len(quoted) >= 4, "quote the per-core numbers from benchmarks/RESULTS.md in `backticks`"
    for figure in quoted:
        assert figure in results, f"{figure} is not in benchmarks/RESULTS.md: update the README's Scaling section"
    for needle in ("benchmarks/RESULTS.md", "remoteWrite", "deploy/kubernetes", "sum by", "exemplar"):
        assert needle in section, needle


def test_ci_and_readme_install_kubectl() -> None:
    # The README's test command, run verbatim by CI.
    (ci_line,) = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("apt-get update")]
    assert ci_line in (ROOT / "README.md").read_text().splitlines()
    installed = re.match(r"apt-get update && apt-get install -y ([\w\- ]+?) &&", ci_line)
    assert installed and {"prometheus", "kubectl"} <= set(installed.group(1).split())
