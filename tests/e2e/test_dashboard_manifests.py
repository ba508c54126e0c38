"""deploy/dashboard and the admin Secret wiring of deploy/base: valid (kubernetes-validate,
strict), and in agreement with the CLI and with each other."""

from __future__ import annotations

import click
import pytest

from policy_extproc.admin.auth import is_loopback
from policy_extproc.cli import main as cli
from tests.e2e.test_deploy_manifests import (
    DEPLOY,
    _validate,
    container,
    env_of,
    find,
    load_all,
    render_base,
)

pytestmark = pytest.mark.e2e

DASHBOARD = DEPLOY / "dashboard"
SECRET = "policy-extproc-admin-tokens"


def dashboard_objects() -> list[dict]:  # type: ignore[type-arg]
    import yaml

    kustomization = yaml.safe_load((DASHBOARD / "kustomization.yaml").read_text())
    return [obj for name in kustomization["resources"] for obj in load_all(DASHBOARD / name)]


def test_dashboard_objects_validate() -> None:
    objects = dashboard_objects()
    assert sorted({o["kind"] for o in objects}) == ["Deployment", "NetworkPolicy", "Service"]
    _validate(objects)


def _flags(command: str) -> set[str]:
    cmd = cli.commands[command]
    assert isinstance(cmd, click.Command)
    names = set()
    for param in cmd.params:
        if isinstance(param, click.Option):
            envvar = param.envvar or f"POLICY_EXTPROC_{param.name.upper()}"  # type: ignore[union-attr]
            names.add(str(envvar))
    return names


def test_every_env_var_is_a_flag_of_its_command() -> None:
    objects = dashboard_objects()
    board = container(objects, "policy-extproc-dashboard", "dashboard")
    assert board["command"] == ["policy-extproc", "dashboard"]
    assert set(env_of(board)) <= _flags("dashboard")
    sidecar = container(render_base(), "llm-gateway", "policy-extproc")
    assert {"POLICY_EXTPROC_ADMIN_LISTEN", "POLICY_EXTPROC_ADMIN_TOKENS"} <= _flags("serve")
    assert {"POLICY_EXTPROC_ADMIN_LISTEN", "POLICY_EXTPROC_ADMIN_TOKENS"} <= set(env_of(sidecar))


def _secret_mount(deployment: dict, name: str, objects: list[dict]) -> str:  # type: ignore[type-arg]
    spec = find(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == SECRET)
    c = next(c for c in spec["containers"] if c["name"] == name)
    mount = next(m for m in c["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    return str(mount["mountPath"])


def test_both_read_the_same_secret_where_their_env_says() -> None:
    base, board = render_base(), dashboard_objects()
    sidecar_env = env_of(container(base, "llm-gateway", "policy-extproc"))
    board_env = env_of(container(board, "policy-extproc-dashboard", "dashboard"))
    path = _secret_mount("llm-gateway", "policy-extproc", base)
    assert sidecar_env["POLICY_EXTPROC_ADMIN_TOKENS"] == path
    assert board_env["POLICY_EXTPROC_ADMIN_TOKENS"] == _secret_mount(
        "policy-extproc-dashboard", "dashboard", board
    )
    # Off loopback, the admin API must have tokens (serve refuses to start otherwise).
    assert not is_loopback(sidecar_env["POLICY_EXTPROC_ADMIN_LISTEN"])


def test_the_dashboard_reaches_the_admin_api_and_redis_of_base() -> None:
    base, board = render_base(), dashboard_objects()
    env = env_of(container(board, "policy-extproc-dashboard", "dashboard"))
    admin = find(board, "Service", "policy-extproc-admin")
    host, port = env["POLICY_EXTPROC_ADMIN"].split(":")
    assert host == "policy-extproc-admin" and int(port) == admin["spec"]["ports"][0]["port"]
    sidecar = container(base, "llm-gateway", "policy-extproc")
    target = admin["spec"]["ports"][0]["targetPort"]
    listen_port = int(env_of(sidecar)["POLICY_EXTPROC_ADMIN_LISTEN"].rsplit(":", 1)[1])
    assert {"name": target, "containerPort": listen_port} in sidecar["ports"]
    gateway = find(base, "Deployment", "llm-gateway")["spec"]["template"]["metadata"]["labels"]
    assert admin["spec"]["selector"].items() <= gateway.items()
    assert env["POLICY_EXTPROC_REDIS"] == env_of(sidecar)["POLICY_EXTPROC_REDIS"]
    opened = find(board, "NetworkPolicy", "llm-gateway-admin-from-dashboard")["spec"]["ingress"]
    assert [p["port"] for p in opened[0]["ports"]] == [listen_port]
