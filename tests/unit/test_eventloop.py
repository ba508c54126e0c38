"""serve --event-loop: which loop each choice runs on, and the refusals."""

from __future__ import annotations

import asyncio

import pytest

from policy_extproc import eventloop
from policy_extproc.serverconfig import ServerConfig


@pytest.mark.parametrize(
    ("choice", "transport", "loop"),
    [
        ("auto", "h2", "uvloop"),
        ("auto", "grpc", "asyncio"),
        ("asyncio", "h2", "asyncio"),
        ("uvloop", "grpc", "uvloop"),
    ],
)
def test_each_choice_runs_its_loop(choice: str, transport: str, loop: str) -> None:
    async def running() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert eventloop.name(choice, transport) == loop
    assert eventloop.run(running(), choice, transport) == loop


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    real = eventloop.importlib.util.find_spec
    monkeypatch.setattr(
        eventloop.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "uvloop" else real(name, *a),
    )
    assert eventloop.name("auto", "h2") == "asyncio"
    assert eventloop.factory("auto", "h2") is None
    with pytest.raises(ValueError, match="uvloop package is not installed"):
        eventloop.check("uvloop")


def test_an_unknown_loop_is_refused_when_the_configuration_is_made() -> None:
    with pytest.raises(ValueError, match="event loop 'trio': one of auto, asyncio, uvloop"):
        ServerConfig(policies=("p",), event_loop="trio")
