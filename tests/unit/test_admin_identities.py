"""Admin identities: name:role:token lines from a file or a Secret directory, roles ordered."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from policy_extproc.admin import auth
from policy_extproc.admin.auth import Identities, Identity, load_identities, parse_tokens
from policy_extproc.errors import AdminError

LINES = """
# who        role      token
alice:viewer:tok-alice-0123456789
bob:approver:tok-bob-0123456789:with:colons
carol:admin:tok-carol-0123456789
"""


def test_lines_parse_to_names_and_roles() -> None:
    found = dict(parse_tokens(LINES, "tokens"))
    assert found == {
        "tok-alice-0123456789": Identity("alice", "viewer"),
        "tok-bob-0123456789:with:colons": Identity("bob", "approver"),
        "tok-carol-0123456789": Identity("carol", "admin"),
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice:root:tok", "role 'root' of 'alice' is not one of viewer, approver, admin"),
        ("alice:viewer:", "the token of 'alice' is empty"),
        ("alice viewer tok", "the name 'alice viewer tok' is not valid"),
        (":viewer:tok", "the name '' is not valid"),
    ],
)
def test_a_bad_line_names_its_file_and_line(line: str, message: str) -> None:
    with pytest.raises(AdminError) as exc:
        parse_tokens(f"# header\n{line}\n", "/etc/tokens")
    assert exc.value.message.startswith("/etc/tokens:2: ")
    assert message in exc.value.message


def test_roles_are_ordered() -> None:
    viewer, approver, admin = (Identity(r, r) for r in auth.ROLES)
    assert [viewer.may(r) for r in auth.ROLES] == [True, False, False]
    assert [approver.may(r) for r in auth.ROLES] == [True, True, False]
    assert [admin.may(r) for r in auth.ROLES] == [True, True, True]
    assert not admin.may("superuser")  # an unknown role is never granted


def test_a_secret_directory_skips_hidden_entries_and_reads_every_key(tmp_path: Path) -> None:
    # The layout kubelet makes: keys are symlinks into a hidden timestamped directory.
    data = tmp_path / "..2026_12_01"
    data.mkdir()
    (data / "viewers").write_text("alice:viewer:tok-alice-0123456789\n")
    (data / "admins").write_text("carol:admin:tok-carol-0123456789\n")
    (tmp_path / "..data").symlink_to(data.name)
    for key in ("viewers", "admins"):
        (tmp_path / key).symlink_to(f"..data/{key}")
    ids = load_identities(None, tmp_path)
    assert ids.names == [("alice", "viewer"), ("carol", "admin")]
    assert ids.identify("tok-carol-0123456789") == Identity("carol", "admin")
    assert ids.identify("tok-carol-012345678") is None
    assert ids.identify("") is None


def test_the_single_token_is_an_admin_named_admin(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text("alice:viewer:tok-alice-0123456789\n")
    ids = load_identities("legacy-token", file)
    assert ids.identify("legacy-token") == Identity("admin", "admin")
    assert ids.identify("tok-alice-0123456789") == Identity("alice", "viewer")
    assert not Identities()


def test_duplicates_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text("alice:viewer:same-token\nbob:admin:same-token\n")
    with pytest.raises(AdminError, match="share a token"):
        load_identities(None, file)
    file.write_text("alice:viewer:one-token\nalice:admin:two-token\n")
    with pytest.raises(AdminError, match="two tokens are named 'alice'"):
        load_identities(None, file)
    with pytest.raises(AdminError, match="does not exist"):
        load_identities(None, tmp_path / "missing")


def test_a_rotated_file_is_reread_and_a_broken_one_keeps_the_last_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "RELOAD_S", 0.0)
    file = tmp_path / "tokens"
    file.write_text("alice:viewer:old-token-0123456789\n")
    ids = load_identities(None, file)
    assert ids.identify("old-token-0123456789") is not None
    file.write_text("alice:viewer:new-token-0123456789\n")
    later = time.time() + 5  # a later mtime even on coarse file systems
    os.utime(file, (later, later))
    assert ids.identify("old-token-0123456789") is None
    assert ids.identify("new-token-0123456789") == Identity("alice", "viewer")
    file.write_text("alice:nobody:new-token-0123456789\n")
    os.utime(file, (later + 5, later + 5))
    assert ids.identify("new-token-0123456789") == Identity("alice", "viewer")


def test_the_token_comes_from_the_env_or_its_file(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text("from-a-secret\n")
    assert auth.token_from_env({auth.TOKEN_ENV: " direct \n"}) == "direct"
    assert auth.token_from_env({auth.TOKEN_FILE_ENV: str(file)}) == "from-a-secret"
    assert auth.token_from_env({}) is None
    with pytest.raises(AdminError, match="cannot read"):
        auth.token_from_env({auth.TOKEN_FILE_ENV: str(tmp_path / "missing")})
    with pytest.raises(AdminError, match="cannot carry"):
        auth.token_from_env({auth.TOKEN_ENV: "two words"})
