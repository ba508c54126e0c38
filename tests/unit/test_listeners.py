"""``serve --transport``: the listen address the h2 listener binds, and the transport's name."""

from __future__ import annotations

import pytest

from policy_extproc.listeners import split_listen
from policy_extproc.serverconfig import ServerConfig


@pytest.mark.parametrize(
    ("listen", "where"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::]:50051", ("::", 50051)),
        ("localhost:1", ("localhost", 1)),
        (":50051", ("", 50051)),  # every interface, as grpc.aio takes it
    ],
)
def test_a_listen_address_splits_into_host_and_port(listen: str, where: tuple[str, int]) -> None:
    assert split_listen(listen) == where


@pytest.mark.parametrize("listen", ["50051", "host:", "host:http", "host:70000", "host:-1"])
def test_a_listen_address_without_a_port_is_an_oserror(listen: str) -> None:
    with pytest.raises(OSError, match="not HOST:PORT"):
        split_listen(listen)


def test_an_unknown_transport_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="grpc or h2"):
        ServerConfig(policies=("p",), listen="127.0.0.1:0", transport="http3")
