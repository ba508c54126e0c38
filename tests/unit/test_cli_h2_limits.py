"""serve's --h2-* flags: folded into the one ``Limits`` the config carries, each also an
environment variable, the defaults Limits' own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from policy_extproc import eventloop, server
from policy_extproc.cli import main as cli
from policy_extproc.cli.options import _H2_LIMITS
from policy_extproc.transport.limits import NAMES, Limits

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> Any:
    seen: list[Any] = []
    monkeypatch.setattr(server, "serve", lambda config: seen.append(config))
    monkeypatch.setattr(eventloop, "run", lambda *a: None)
    argv = ["serve", "--policies", str(tmp_path), "--transport", "h2", "--log-level", "error"]
    result = CliRunner().invoke(cli, [*argv, *args])
    assert result.exit_code == 0, result.output
    return seen[0]


def test_the_defaults_are_limits_own(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert _config(monkeypatch, tmp_path).h2_limits == Limits()


def test_flags_and_environment_variables_reach_the_limits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("POLICY_EXTPROC_H2_IDLE_TIMEOUT", "300")
    config = _config(
        monkeypatch,
        tmp_path,
        "--h2-max-concurrent-streams=77",
        "--h2-max-header-list-size=8192",
        "--h2-flood-window=5",
        "--h2-max-early-resets=9",
        "--h2-max-control-frames=99",
        "--h2-handshake-timeout=3",
    )
    assert config.h2_limits == Limits(
        max_concurrent_streams=77,
        max_header_list_size=8192,
        window_s=5.0,
        max_early_resets=9,
        max_control_frames=99,
        handshake_timeout_s=3.0,
        idle_timeout_s=300.0,
    )


def test_a_limit_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    args = ["serve", "--policies", str(tmp_path), "--h2-max-concurrent-streams", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "--h2-max-concurrent-streams" in result.output


def test_the_readme_names_every_flag_and_metric_label() -> None:
    section = README[README.index("### The lean HTTP/2 transport") :]
    section = section[: section.index("\n### ")]
    for flag in _H2_LIMITS:
        assert f"--h2-{flag}" in section, flag
    for name in NAMES:
        assert f"`{name}`" in section, name
