"""Who may listen for admin calls without a token: loopback addresses only."""

from __future__ import annotations

import pytest

from policy_extproc.admin.auth import check_listen, is_loopback
from policy_extproc.errors import AdminError


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:50052", True),
        ("127.0.0.2:0", True),
        ("localhost:50052", True),
        ("[::1]:50052", True),
        ("0.0.0.0:50052", False),
        ("[::]:50052", False),
        (":50052", False),
        ("10.0.0.5:50052", False),
        ("admin.internal:50052", False),
    ],
)
def test_loopback(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def test_no_token_off_loopback_is_refused_with_the_way_out() -> None:
    check_listen("127.0.0.1:50052", None)
    check_listen("0.0.0.0:50052", "s3cret")
    with pytest.raises(AdminError) as exc:
        check_listen("0.0.0.0:50052", None)
    assert "0.0.0.0:50052" in exc.value.message
    assert "POLICY_EXTPROC_ADMIN_TOKEN" in exc.value.message
