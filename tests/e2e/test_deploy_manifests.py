"""deploy/: the Kubernetes manifests are valid, safe, and agree with each other and with Envoy.

Every object of deploy/base (and of the production overlay's own files) is checked against the
Kubernetes OpenAPI schemas with kubernetes-validate, strictly (unknown fields are errors). The
base is rendered here (resources plus configMapGenerator and images), so no kubectl is needed;
where kubectl is installed, `kubectl kustomize` of the base and the overlay is checked too.
Envoy's configuration for the pod, envoy/envoy-k8s.yaml, runs through `envoy --mode validate`
(DNS names are not resolved in that mode).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from policy_extproc.cli import main as cli
from policy_extproc.sources.files import compile_paths
from tests.envoy_harness import (
    ENVOY_DIR,
    REPO_ROOT,
    SDS_FILES,
    SDS_SOURCES,
    enable_tls,
    validate_config,
)
from tests.tls_certs import CertificateAuthority

pytestmark = pytest.mark.e2e

DEPLOY = REPO_ROOT / "deploy"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "production"
ENVOY_K8S = ENVOY_DIR / "envoy-k8s.yaml"
# The oldest Kubernetes the manifests are meant for (gRPC probes are GA from 1.27), and the
# newest whose schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.27", "latest")
Obj = dict[str, Any]


def load_all(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render_base() -> list[Obj]:
    """deploy/base as kustomize builds it, less name hashes and labels (not needed here)."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    objects = [obj for name in kustomization["resources"] for obj in load_all(BASE / name)]
    for gen in kustomization.get("configMapGenerator", []):
        data = {Path(f).name: (BASE / f).read_text() for f in gen["files"]}
        meta = {"name": gen["name"]}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization.get("images", [])}
    for container in containers(objects):
        container["image"] = images.get(container["image"], container["image"])
    return objects


def containers(objects: list[Obj]) -> Iterator[Obj]:
    for obj in objects:
        if obj["kind"] == "Deployment":
            yield from obj["spec"]["template"]["spec"]["containers"]


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(objects: list[Obj], deployment: str, name: str) -> Obj:
    spec = find(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def env_of(c: Obj) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    return render_base()


@pytest.fixture(scope="module")
def envoy_config() -> Obj:
    return dict(yaml.safe_load((BASE / "envoy.yaml").read_text()))


def _validate(objs: list[Obj]) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for version in K8S_VERSIONS:
        target = kv.latest_version() if version == "latest" else version
        for obj in objs:
            where = f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {target})"
            try:
                kv.validate(obj, target, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(f"{where}: {exc}")


# -- validity -------------------------------------------------------------------------------------


def test_base_objects_validate(objects: list[Obj]) -> None:
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
    ]
    _validate(objects)


def test_overlay_own_objects_validate() -> None:
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    own = [r for r in kustomization["resources"] if not r.startswith("..")]
    _validate([obj for name in own for obj in load_all(OVERLAY / name)])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "production"])
def test_kubectl_kustomize_builds_and_validates(folder: Path) -> None:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    built = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    assert {o["kind"] for o in built} >= {"ConfigMap", "Deployment", "Service"}
    _validate(built)


def test_envoy_k8s_validates() -> None:
    ok, output = validate_config(ENVOY_K8S)
    assert ok, output


def test_envoy_config_in_the_configmap_validates(objects: list[Obj], tmp_path: Path) -> None:
    # What the pod mounts: the ConfigMap as kustomize generates it, not the file beside it.
    data = find(objects, "ConfigMap", "envoy-config")["data"]
    assert set(data) == {"envoy.yaml", *SDS_FILES}
    (tmp_path / "envoy.yaml").write_text(data["envoy.yaml"])
    ok, output = validate_config(tmp_path / "envoy.yaml")
    assert ok, output
    # Its TLS block on, the SDS files as the ConfigMap has them (the same as envoy/'s).
    for name in SDS_FILES:
        assert data[name] == (SDS_SOURCES / name).read_text(), name
    certs = CertificateAuthority().issue(tmp_path / "tls", "envoy", client=True)
    (tmp_path / "tls.yaml").write_text(enable_tls(data["envoy.yaml"], certs))
    ok, output = validate_config(tmp_path / "tls.yaml")
    assert ok, output


def test_deploy_envoy_config_is_envoy_k8s() -> None:
    assert (BASE / "envoy.yaml").read_text() == ENVOY_K8S.read_text(), (
        "deploy/base/envoy.yaml differs: cp envoy/envoy-k8s.yaml deploy/base/envoy.yaml"
    )
    for name in SDS_FILES:
        assert (BASE / name).read_text() == (SDS_SOURCES / name).read_text(), (
            f"deploy/base/{name} differs: cp envoy/sds/{name} deploy/base/{name}"
        )


def test_configmap_policies_load() -> None:
    snapshot = compile_paths([str(BASE / "policies")])
    assert len(snapshot) >= 1


# -- safety ---------------------------------------------------------------------------------------


def test_every_container_is_locked_down(objects: list[Obj]) -> None:
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            where = f"{deployment['metadata']['name']}/{c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert "memory" in c["resources"]["limits"], where
            assert "readinessProbe" in c and "livenessProbe" in c, where
            # A full version, not a floating tag (redis:7, :latest): what runs is what was tested.
            assert re.search(r":v?\d+\.\d+\.\d+$", c["image"]), f"{where}: {c['image']}"


def test_sidecar_probes_are_grpc_health(objects: list[Obj]) -> None:
    from policy_extproc.server import LIVENESS

    sidecar = container(objects, "llm-gateway", "policy-extproc")
    assert sidecar["readinessProbe"]["grpc"] == {"port": 50051, "service": ""}
    # liveness has its own service: not ready (Redis, audit disk) is no reason to restart
    assert sidecar["livenessProbe"]["grpc"] == {"port": 50051, "service": LIVENESS}
    envoy = container(objects, "llm-gateway", "envoy")
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "probes"}


def test_sidecar_port_is_not_exposed(objects: list[Obj]) -> None:
    service = find(objects, "Service", "llm-gateway")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    policy = find(objects, "NetworkPolicy", "llm-gateway")
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {8080, 8081, 9090}  # Envoy, its probe port, the sidecar's /metrics
    assert 50051 not in ports and 50052 not in ports  # ext_proc and the admin API: pod-local


def test_metrics_port_is_the_one_prometheus_is_told(objects: list[Obj]) -> None:
    pod = find(objects, "Deployment", "llm-gateway")["spec"]["template"]
    env = env_of(container(objects, "llm-gateway", "policy-extproc"))
    port = env["POLICY_EXTPROC_METRICS_LISTEN"].rsplit(":", 1)[1]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == port
    ports = container(objects, "llm-gateway", "policy-extproc")["ports"]
    assert {"name": "metrics", "containerPort": int(port)} in ports


def test_shutdown_outlasts_the_sidecar_drain(objects: list[Obj]) -> None:
    pod = find(objects, "Deployment", "llm-gateway")["spec"]["template"]["spec"]
    sidecar = container(objects, "llm-gateway", "policy-extproc")
    pre_stop = int(sidecar["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = 10  # ServerConfig.grace_s: open streams get this long after SIGTERM
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain


# -- the pieces agree -----------------------------------------------------------------------------


def test_sidecar_env_names_are_serve_flags(objects: list[Obj]) -> None:
    serve = cli.commands["serve"]
    flags = {p.name for p in serve.params}
    env = env_of(container(objects, "llm-gateway", "policy-extproc"))
    ours = [name for name in env if name.startswith("POLICY_EXTPROC_")]
    assert {"POLICY_EXTPROC_POLICIES", "POLICY_EXTPROC_LISTEN"} <= set(ours)
    for name in ours:
        assert name.removeprefix("POLICY_EXTPROC_").lower() in flags, name


def test_sidecar_env_reaches_serve(objects: list[Obj], monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(container(objects, "llm-gateway", "policy-extproc"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The mount does not exist here: the same policies, from the repository.
    monkeypatch.setenv("POLICY_EXTPROC_POLICIES", str(BASE / "policies"))
    with cli.make_context("policy-extproc", ["serve"]) as parent:
        serve = cli.get_command(parent, "serve")
        assert isinstance(serve, click.Command)
        params = serve.make_context("serve", [], parent=parent).params
    assert params["listen"] == env["POLICY_EXTPROC_LISTEN"]
    assert params["redis"] == env["POLICY_EXTPROC_REDIS"]
    assert params["audit_log"] == env["POLICY_EXTPROC_AUDIT_LOG"]
    assert params["otlp_endpoint"] == env["POLICY_EXTPROC_OTLP_ENDPOINT"]


def test_sidecar_paths_are_mounted(objects: list[Obj]) -> None:
    sidecar = container(objects, "llm-gateway", "policy-extproc")
    env = env_of(sidecar)
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert mounts[env["POLICY_EXTPROC_POLICIES"]] == "policies"
    assert mounts[str(Path(env["POLICY_EXTPROC_AUDIT_LOG"]).parent)] == "audit-log"
    assert mounts["/tmp"] == "tmp"
    volumes = {
        v["name"]: v
        for v in find(objects, "Deployment", "llm-gateway")["spec"]["template"]["spec"]["volumes"]
    }
    assert "emptyDir" in volumes["audit-log"]
    find(objects, "ConfigMap", volumes["policies"]["configMap"]["name"])
    find(objects, "ConfigMap", volumes["envoy-config"]["configMap"]["name"])


def _cluster_address(envoy_config: Obj, name: str) -> tuple[str, int]:
    cluster = next(c for c in envoy_config["static_resources"]["clusters"] if c["name"] == name)
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    return address["socket_address"]["address"], address["socket_address"]["port_value"]


def test_envoy_reaches_the_sidecar_in_the_pod(objects: list[Obj], envoy_config: Obj) -> None:
    host, port = _cluster_address(envoy_config, "policy_extproc")
    listen = env_of(container(objects, "llm-gateway", "policy-extproc"))["POLICY_EXTPROC_LISTEN"]
    assert (host, str(port)) == ("127.0.0.1", listen.rsplit(":", 1)[1])
    envoy = container(objects, "llm-gateway", "envoy")
    config_path = envoy["args"][envoy["args"].index("--config-path") + 1]
    mounts = {m["mountPath"]: m["name"] for m in envoy["volumeMounts"]}
    assert mounts[str(Path(config_path).parent)] == "envoy-config"
    assert Path(config_path).name == "envoy.yaml"


def test_envoy_listeners_match_the_container_ports(objects: list[Obj], envoy_config: Obj) -> None:
    envoy = container(objects, "llm-gateway", "envoy")
    ports = {p["name"]: p["containerPort"] for p in envoy["ports"]}
    listeners = {
        lst["name"]: lst["address"]["socket_address"]["port_value"]
        for lst in envoy_config["static_resources"]["listeners"]
    }
    assert listeners == {"llm_ingress": ports["http"], "probes": ports["probes"]}


def test_provider_keys_come_from_the_secret(objects: list[Obj]) -> None:
    wanted = set(re.findall(r"%ENVIRONMENT\((\w+)\)%", (BASE / "envoy.yaml").read_text()))
    envoy = container(objects, "llm-gateway", "envoy")
    from_secret = {
        e["name"]
        for e in envoy["env"]
        if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "llm-provider-keys"
    }
    assert wanted == from_secret == {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}


def test_traces_reach_jaeger(objects: list[Obj], envoy_config: Obj) -> None:
    collector = find(objects, "Service", "otel-collector")
    collector_port = collector["spec"]["ports"][0]["port"]
    assert _cluster_address(envoy_config, "otel_collector") == ("otel-collector", collector_port)
    sidecar_env = env_of(container(objects, "llm-gateway", "policy-extproc"))
    assert sidecar_env["POLICY_EXTPROC_OTLP_ENDPOINT"] == f"otel-collector:{collector_port}"
    config = yaml.safe_load(find(objects, "ConfigMap", "otel-collector")["data"]["config.yaml"])
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["otlp/jaeger"]
    jaeger_ports = {
        p["name"]: p["port"] for p in find(objects, "Service", "jaeger")["spec"]["ports"]
    }
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == f"jaeger:{jaeger_ports['otlp-grpc']}"


def test_replicas_are_the_hpas_and_spread(objects: list[Obj]) -> None:
    deployment = find(objects, "Deployment", "llm-gateway")
    hpa = find(objects, "HorizontalPodAutoscaler", "llm-gateway")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "llm-gateway")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["minReplicas"] >= 2
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    for c in containers([deployment]):  # utilisation is of the requests
        assert "cpu" in c["resources"]["requests"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = find(objects, "PodDisruptionBudget", "llm-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spread} >= {"kubernetes.io/hostname"}
    for s in spread:
        assert s["labelSelector"]["matchLabels"].items() <= labels.items()


def test_gateway_egress_allows_what_the_sidecar_and_envoy_call(objects: list[Obj]) -> None:
    policy = find(objects, "NetworkPolicy", "llm-gateway")
    assert "Egress" in policy["spec"]["policyTypes"]
    allowed: dict[str, set[int]] = {}
    for rule in policy["spec"]["egress"]:
        for peer in rule["to"]:
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            key = labels.get("app.kubernetes.io/name") or labels.get("k8s-app")
            if "ipBlock" in peer:
                key = "internet"
                assert "169.254.0.0/16" in peer["ipBlock"]["except"]  # no cloud metadata
            allowed.setdefault(key or "other", set()).update(p["port"] for p in rule["ports"])
    for name in ("redis", "otel-collector"):
        ports = {p["port"] for p in find(objects, "Service", name)["spec"]["ports"]}
        assert ports <= allowed[name], name
    assert 53 in allowed["kube-dns"] and allowed["internet"] == {443}


def test_redis_url_names_the_redis_service(objects: list[Obj]) -> None:
    url = env_of(container(objects, "llm-gateway", "policy-extproc"))["POLICY_EXTPROC_REDIS"]
    port = find(objects, "Service", "redis")["spec"]["ports"][0]["port"]
    assert url.startswith(f"redis://redis:{port}/")


def test_services_select_their_pods(objects: list[Obj]) -> None:
    for service in (o for o in objects if o["kind"] == "Service"):
        name = service["metadata"]["name"]
        deployment = find(objects, "Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        port_names = {p["name"] for c in containers([deployment]) for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"{name}: {port['targetPort']}"


def test_the_audit_volume_is_bounded_and_rotation_stays_under_it(objects: list[Obj]) -> None:
    from policy_extproc.cli.options import parse_size

    sidecar = container(objects, "llm-gateway", "policy-extproc")
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    volumes = find(objects, "Deployment", "llm-gateway")["spec"]["template"]["spec"]["volumes"]
    [audit] = [v for v in volumes if v["name"] == "audit-log"]
    limit = parse_size(audit["emptyDir"]["sizeLimit"].replace("i", ""))
    segment = parse_size(env["POLICY_EXTPROC_AUDIT_MAX_BYTES"])
    keep = int(env["POLICY_EXTPROC_AUDIT_KEEP"])
    assert limit is not None and segment is not None
    assert (keep + 1) * segment < limit  # closed segments and the live file
