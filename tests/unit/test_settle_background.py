"""enforce/settle.py ``Background``: a follow-up on a state that never waits is done at once,
without a task; on any other (Redis) it is a task of its own from the start, so its calls'
timeouts cancel it, not the stream that asked for it; a state failure is logged, never raised."""

from __future__ import annotations

import asyncio
import logging

import pytest

from policy_extproc.enforce.settle import Background, Release
from policy_extproc.errors import StateError
from policy_extproc.state.memory import MemoryState


class WaitingState:
    """A state whose release waits on the network first (as Redis does): twice, on a future
    and on a bare yield, then records it (or fails with ``fail``)."""

    never_waits = False

    def __init__(self, fail: bool = False) -> None:
        self.released: list[str] = []
        self.gate: asyncio.Future[None] | None = None
        self.fail = fail
        self.cancelled = False

    async def release(self, org: str, request_id: str) -> bool:
        self.gate = asyncio.get_running_loop().create_future()
        try:
            await self.gate
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        await asyncio.sleep(0)
        if self.fail:
            raise StateError("redis went away")
        self.released.append(request_id)
        return True


async def test_a_follow_up_that_never_waits_is_done_without_a_task() -> None:
    bg = Background()
    state = MemoryState()
    bg.spawn(state, Release("acme", "r-1"))  # nothing held: release is a no-op, done now
    assert not bg._tasks


async def test_a_follow_up_that_waits_goes_on_as_a_task() -> None:
    bg = Background()
    state = WaitingState()
    bg.spawn(state, Release("acme", "r-1"))
    assert state.released == [] and len(bg._tasks) == 1
    await asyncio.sleep(0)  # the task starts and waits on the gate
    assert state.gate is not None and not state.gate.done()
    state.gate.set_result(None)
    await bg.drain()
    assert state.released == ["r-1"]


async def test_a_state_failure_after_waiting_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    bg = Background()
    state = WaitingState(fail=True)
    bg.spawn(state, Release("acme", "r-2"))
    await asyncio.sleep(0)
    assert state.gate is not None
    state.gate.set_result(None)
    with caplog.at_level(logging.WARNING):
        await bg.drain()
    assert state.released == []
    assert "could not release the reservation of r-2" in caplog.text


async def test_cancelling_the_task_reaches_the_waiting_follow_up() -> None:
    bg = Background()
    state = WaitingState()
    bg.spawn(state, Release("acme", "r-3"))
    (task,) = bg._tasks
    await asyncio.sleep(0)  # the task is waiting on the gate
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state.cancelled  # thrown in where it waited
    assert state.released == []


class TimingOutState:
    """A state whose call is bounded as RedisState bounds its calls (``asyncio.timeout``), and
    takes longer than the bound."""

    never_waits = False

    async def release(self, org: str, request_id: str) -> bool:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(5)
        except TimeoutError:
            raise StateError("no answer within 0.01 s") from None
        return True


async def test_a_follow_up_timing_out_cancels_itself_not_the_stream_that_spawned_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bg = Background()

    async def stream() -> str:  # the servicer's task: spawns, then goes on with the answer
        bg.spawn(TimingOutState(), Release("acme", "r-4"))
        await asyncio.sleep(0.1)  # past the follow-up's bound
        return "answered"

    with caplog.at_level(logging.WARNING):
        assert await asyncio.create_task(stream()) == "answered"
        await asyncio.wait_for(bg.drain(), 5)
    assert "could not release the reservation of r-4" in caplog.text
