"""serve's TLS flags: pairs that go together, and the environment variables every flag has."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from policy_extproc.cli import main as cli


def _params(args: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        with cli.make_context("policy-extproc", ["serve", *args]) as parent:
            serve = cli.get_command(parent, "serve")
            assert isinstance(serve, click.Command)
            return serve.make_context("serve", args, parent=parent).params


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    names = ("tls.crt", "tls.key", "ca.crt")
    for name in names:
        (tmp_path / name).write_text("not read by the parser\n")
    return {name: str(tmp_path / name) for name in names}


def test_every_tls_flag_reads_its_environment_variable(pem: dict[str, str]) -> None:
    env = {
        "POLICY_EXTPROC_POLICIES": ".",
        "POLICY_EXTPROC_TLS_CERT": pem["tls.crt"],
        "POLICY_EXTPROC_TLS_KEY": pem["tls.key"],
        "POLICY_EXTPROC_TLS_CLIENT_CA": pem["ca.crt"],
        "POLICY_EXTPROC_ADMIN_TLS_CERT": pem["tls.crt"],
        "POLICY_EXTPROC_ADMIN_TLS_KEY": pem["tls.key"],
        "POLICY_EXTPROC_ADMIN_TLS_CLIENT_CA": pem["ca.crt"],
    }
    params = _params([], env)
    for name, value in env.items():
        flag = name.removeprefix("POLICY_EXTPROC_").lower()
        if flag != "policies":
            assert params[flag] == value, flag


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "tls.crt"], "--tls-cert and --tls-key go together"),
        (["--admin-tls-key", "tls.key"], "--admin-tls-cert and --admin-tls-key go together"),
        (["--tls-client-ca", "ca.crt"], "--tls-client-ca needs --tls-cert and --tls-key"),
    ],
)
def test_incomplete_tls_flags_are_a_usage_error(
    pem: dict[str, str], flags: list[str], message: str, tmp_path: Path
) -> None:
    args = [pem.get(f, f) for f in flags]
    result = CliRunner().invoke(cli, ["serve", "--policies", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output
