"""deploy/envoy-gateway, deploy/istio, deploy/processor and deploy/monitoring: valid, and in step
with envoy/envoy-k8s.yaml.

Each folder is built with `kubectl kustomize`; Kubernetes' own kinds are checked by
kubernetes-validate (strict), the custom resources against the CRD schemas they target,
vendored in tests/data/crds (README there: where from, which version, licence), made strict:
a field the schema does not name is an error, as the API server's pruning would silently drop
it. Envoy Gateway's and Istio's ext_proc settings must say what envoy-k8s.yaml says; the
EnvoyFilter's filter runs through `envoy --mode validate` inside envoy-k8s.yaml.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from policy_extproc.cli import main as cli
from tests.envoy_harness import ENVOY_DIR, REPO_ROOT, validate_config

pytestmark = pytest.mark.e2e

DEPLOY = REPO_ROOT / "deploy"
CRDS = REPO_ROOT / "tests" / "data" / "crds"
FOLDERS = ("processor", "envoy-gateway", "istio/ext-authz", "istio/ext-proc", "monitoring")
CORE_GROUPS = {"v1", "apps/v1", "policy/v1", "networking.k8s.io/v1", "autoscaling/v2"}
Obj = dict[str, Any]
TYPE_META = {"apiVersion": "string", "kind": "string", "metadata": "object"}


def kustomize(folder: str) -> list[Obj]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed (kubectl kustomize builds the folders)")
    proc = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def strict(schema: Any) -> Any:
    """The CRD's structural schema as JSON Schema, unknown fields refused."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [*out.get("anyOf", []), {"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


@cache
def schemas() -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) -> the JSON Schema of that served version."""
    out = {}
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            # Every object has these, whether its CRD spells them out (Istio's do not).
            schema.setdefault("properties", {}).update(
                {k: {"type": t} for k, t in TYPE_META.items() if k not in schema["properties"]}
            )
            out[(f"{group}/{version['name']}", kind)] = strict(schema)
    return out


def custom_errors(obj: Obj) -> list[str]:
    schema = schemas().get((obj["apiVersion"], obj["kind"]))
    if schema is None:
        return [f"no vendored CRD schema for {obj['apiVersion']} {obj['kind']}"]
    validator = jsonschema.Draft4Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


def validate(objects: list[Obj]) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"] in CORE_GROUPS:
            for version in ("1.27", kv.latest_version()):
                try:
                    kv.validate(obj, version, strict=True)
                except kv.ValidationError as exc:
                    pytest.fail(f"{where} (Kubernetes {version}): {exc}")
        else:
            assert not (errors := custom_errors(obj)), f"{where}: {errors}"


def find(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def ext_proc_filter(name: str = "envoy.filters.http.ext_proc") -> Obj:
    """The typed_config of a filter of envoy/envoy-k8s.yaml: the inline ext_proc filter, or
    ``policy_extproc.observe`` (the observability-mode one, wrapped in its matcher)."""
    config = yaml.safe_load((ENVOY_DIR / "envoy-k8s.yaml").read_text())
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return copy.deepcopy(next(f for f in hcm["http_filters"] if f["name"] == name)["typed_config"])


# -- validity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_object_validates(folder: str) -> None:
    objects = kustomize(folder)
    assert objects
    validate(objects)


def test_the_observe_patch_adds_a_valid_shadow_mode_ext_proc() -> None:
    """deploy/envoy-gateway/observe-patch.yaml (opt-in) applied to the policy: a second extProc
    in shadow mode (observability_mode), response only, reading our metadata namespace."""
    policy = yaml.safe_load((DEPLOY / "envoy-gateway" / "envoyextensionpolicy.yaml").read_text())
    [op] = yaml.safe_load((DEPLOY / "envoy-gateway" / "observe-patch.yaml").read_text())
    assert (op["op"], op["path"]) == ("add", "/spec/extProc/-")
    policy["spec"]["extProc"].append(op["value"])
    assert not (errors := custom_errors(policy)), errors
    inline, observe = policy["spec"]["extProc"]
    assert observe["shadowMode"] is True and "shadowMode" not in inline
    assert observe["processingMode"] == {"response": {"body": "Streamed"}}
    assert observe["metadata"]["accessibleNamespaces"] == ["policy_extproc"]
    assert observe["backendRefs"] == inline["backendRefs"]


def test_the_crd_check_refuses_what_the_api_server_would() -> None:
    policy = yaml.safe_load((DEPLOY / "envoy-gateway" / "envoyextensionpolicy.yaml").read_text())
    assert custom_errors(policy) == []
    bad_enum = copy.deepcopy(policy)
    bad_enum["spec"]["extProc"][0]["processingMode"]["request"]["body"] = "Whole"
    assert custom_errors(bad_enum)
    unknown = copy.deepcopy(policy)
    unknown["spec"]["extProc"][0]["failClosed"] = True
    assert any("failClosed" in e for e in custom_errors(unknown))
    unserved = {**policy, "apiVersion": "gateway.envoyproxy.io/v1"}
    assert custom_errors(unserved)


def test_processor_policies_load() -> None:
    from policy_extproc.sources.files import compile_paths

    assert len(compile_paths([str(DEPLOY / "processor" / "policies")])) >= 1


def test_processor_env_names_are_serve_flags() -> None:
    flags = {p.name for p in cli.commands["serve"].params}
    for folder in ("processor", "envoy-gateway"):
        deployment = find(kustomize(folder), "Deployment", "policy-extproc")
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        for env in container["env"]:
            assert env["name"].removeprefix("POLICY_EXTPROC_").lower() in flags, env["name"]


# -- Envoy Gateway --------------------------------------------------------------------------------


def test_envoy_gateway_processes_as_envoy_k8s_does() -> None:
    objects = kustomize("envoy-gateway")
    [ext_proc] = find(objects, "EnvoyExtensionPolicy")["spec"]["extProc"]
    envoy = ext_proc_filter()
    mode = envoy["processing_mode"]
    assert mode["request_header_mode"] == mode["response_header_mode"] == "SEND"
    expected = {"BUFFERED": "Buffered", "STREAMED": "Streamed"}
    assert ext_proc["processingMode"] == {
        "request": {"body": expected[mode["request_body_mode"]]},
        "response": {"body": expected[mode["response_body_mode"]]},
        "allowModeOverride": envoy["allow_mode_override"],
    }
    assert ext_proc["failOpen"] is envoy["failure_mode_allow"] is False
    assert ext_proc["statusOnError"] == 503 and envoy["status_on_error"]["code"] == (
        "ServiceUnavailable"
    )
    namespaces = envoy["metadata_options"]
    assert ext_proc["metadata"] == {
        "accessibleNamespaces": namespaces["forwarding_namespaces"]["untyped"],
        "writableNamespaces": namespaces["receiving_namespaces"]["untyped"],
    }


def test_envoy_gateway_reaches_the_processor_over_tls() -> None:
    objects = kustomize("envoy-gateway")
    service = find(objects, "Service", "policy-extproc")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    [ext_proc] = find(objects, "EnvoyExtensionPolicy")["spec"]["extProc"]
    [ref] = ext_proc["backendRefs"]
    assert (ref["kind"], ref["name"], ref["port"]) == ("Service", "policy-extproc", ports["grpc"])
    [target] = find(objects, "BackendTLSPolicy")["spec"]["targetRefs"]
    assert (target["kind"], target["name"], target["sectionName"]) == (
        "Service",
        "policy-extproc",
        "grpc",
    )
    pod = find(objects, "Deployment", "policy-extproc")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for name in ("POLICY_EXTPROC_TLS_CERT", "POLICY_EXTPROC_TLS_KEY"):
        assert Path(env[name]).parent == Path(mounts["tls"])
    assert volumes["tls"]["secret"]["secretName"] == "policy-extproc-tls"
    # The kubelet's gRPC probe has no TLS: a TLS listener cannot be probed by it.
    assert "grpc" not in container["readinessProbe"]
    # Only the gateway's proxies reach the gRPC port.
    policy = find(objects, "NetworkPolicy", "policy-extproc")
    grpc_rules = [
        r for r in policy["spec"]["ingress"] if any(p["port"] == 50051 for p in r["ports"])
    ]
    assert grpc_rules and all(r.get("from") for r in grpc_rules)


# -- Istio ----------------------------------------------------------------------------------------


def test_istio_ext_authz_provider_is_the_processor_service() -> None:
    objects = kustomize("istio/ext-authz")
    policy = find(objects, "AuthorizationPolicy")
    assert policy["spec"]["action"] == "CUSTOM"
    mesh = yaml.safe_load((DEPLOY / "istio" / "ext-authz" / "mesh-config.yaml").read_text())
    [provider] = [
        p for p in mesh["extensionProviders"] if p["name"] == policy["spec"]["provider"]["name"]
    ]
    authz = provider["envoyExtAuthzGrpc"]
    service = find(objects, "Service", "policy-extproc")
    assert authz["service"].split(".")[0] == service["metadata"]["name"]
    assert authz["port"] == next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert authz["failOpen"] is False and authz["statusOnError"] == "503"
    [container] = find(objects, "Deployment", "policy-extproc")["spec"]["template"]["spec"][
        "containers"
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    body = authz["includeRequestBodyInCheck"]
    assert body["maxRequestBytes"] == int(env["POLICY_EXTPROC_MAX_BODY_BYTES"])
    assert body["packAsBytes"] is True and body["allowPartialMessage"] is False
    assert find(objects, "PeerAuthentication")["spec"]["mtls"]["mode"] == "STRICT"


def test_istio_envoyfilter_is_envoy_k8s_filter(tmp_path: Path) -> None:
    objects = kustomize("istio/ext-proc")
    patch, observe = find(objects, "EnvoyFilter")["spec"]["configPatches"]
    assert patch["applyTo"] == "HTTP_FILTER"
    assert patch["patch"]["operation"] == "INSERT_BEFORE"
    assert patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == (
        "envoy.filters.http.router"
    )
    value = patch["patch"]["value"]
    assert value["name"] == "envoy.filters.http.ext_proc"
    ours, theirs = dict(value["typed_config"]), ext_proc_filter()
    cluster = ours.pop("grpc_service")["envoy_grpc"]["cluster_name"]
    assert cluster.startswith("outbound|50051||policy-extproc.")
    theirs.pop("grpc_service")
    # Timeouts may be tuned per deployment; everything else is the same filter.
    for key in ("message_timeout", "max_message_timeout"):
        ours.pop(key, None)
        theirs.pop(key, None)
    assert ours == theirs
    # And Envoy accepts it: envoy-k8s.yaml with its filter replaced by the EnvoyFilter's.
    config = yaml.safe_load((ENVOY_DIR / "envoy-k8s.yaml").read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    for f in hcm["typed_config"]["http_filters"]:
        if f["name"] == "envoy.filters.http.ext_proc":
            f["typed_config"] = copy.deepcopy(value["typed_config"])
            f["typed_config"]["grpc_service"] = {"envoy_grpc": {"cluster_name": "policy_extproc"}}
    (tmp_path / "envoy.yaml").write_text(yaml.safe_dump(config))
    ok, output = validate_config(tmp_path / "envoy.yaml")
    assert ok, output
    # The observe filter follows it, the same as envoy-k8s.yaml's but for the cluster.
    assert observe["applyTo"] == "HTTP_FILTER" and observe["patch"]["operation"] == "INSERT_BEFORE"
    assert observe["match"] == patch["match"]
    value = observe["patch"]["value"]
    assert value["name"] == "policy_extproc.observe"
    ours, theirs = copy.deepcopy(value["typed_config"]), ext_proc_filter("policy_extproc.observe")
    grpc = ours["extension_config"]["typed_config"].pop("grpc_service")
    assert grpc["envoy_grpc"]["cluster_name"] == cluster
    theirs["extension_config"]["typed_config"].pop("grpc_service")
    assert ours == theirs


# -- monitoring -----------------------------------------------------------------------------------


def test_podmonitor_scrapes_the_sidecar_metrics_port() -> None:
    monitor = find(kustomize("monitoring"), "PodMonitor", "llm-gateway")
    base = kustomize("base")
    deployment = find(base, "Deployment", "llm-gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {
        p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]
    }
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
