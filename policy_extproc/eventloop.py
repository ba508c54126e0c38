"""The event loop a sidecar process runs on (``serve --event-loop``).

``auto``, the default: uvloop's loop under the lean h2 transport, whose Protocol the loop calls
on every read and write (its C loop takes a tenth off the sidecar's CPU per request there:
README, "The lean HTTP/2 transport"), and asyncio's own under grpc.aio, where no gain was
measured (grpc.aio's work is in its Cython layer and its threads). ``asyncio`` and ``uvloop``
force one. uvloop is a dependency where it builds (Linux, macOS); where it is missing, ``auto``
uses asyncio's loop and ``uvloop`` is refused when the configuration is made.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

CHOICES = ("auto", "asyncio", "uvloop")


def check(choice: str) -> None:
    """ValueError unless ``choice`` can run here."""
    if choice not in CHOICES:
        raise ValueError(f"event loop {choice!r}: one of {', '.join(CHOICES)}")
    if choice == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ValueError("event loop 'uvloop': the uvloop package is not installed")


def name(choice: str, transport: str) -> str:
    """The loop ``choice`` runs on under ``transport``: ``asyncio`` or ``uvloop``."""
    if choice == "auto":
        wanted = "uvloop" if transport == "h2" else "asyncio"
        if wanted == "uvloop" and importlib.util.find_spec("uvloop") is None:
            return "asyncio"
        return wanted
    return choice


def factory(choice: str, transport: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the loop (None: asyncio's default)."""
    if name(choice, transport) == "asyncio":
        return None
    import uvloop

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str, transport: str) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` names under ``transport``."""
    with asyncio.Runner(loop_factory=factory(choice, transport)) as runner:
        return runner.run(main)


__all__ = ["CHOICES", "check", "factory", "name", "run"]
