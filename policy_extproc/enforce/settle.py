"""What is left to do once an answer has gone: typed follow-ups, performed off the response path.

The engine says *what* is to be done as a value (``Settle`` a reservation with the real cost,
``Release`` one a refused request held, ``RecordOutcome`` in a provider's breaker);
``Background`` performs it (what waits for Redis as a task, so the client's bytes never wait
for Redis), and waits for the tasks at shutdown (``drain``). A state failure here is logged,
never raised: the answer is already out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any

from ..errors import StateError
from ..llm.response import Usage
from ..policy.compiler import EffectiveRule
from ..state.base import StateBackend
from . import failover, limits

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settle:
    """Replace a reservation with the real cost, or give it back (the provider failed)."""

    org: str
    request_id: str
    plan: limits.Plan
    usage: Usage | None
    cost: float | None
    status: int  # the response's
    streaming: bool


@dataclass(frozen=True, slots=True)
class Release:
    """Give back what a request refused after its admission held."""

    org: str
    request_id: str


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """Feed one response status into the breaker of the provider that answered."""

    rule: EffectiveRule
    provider: str
    status: int
    at: float  # when it answered: wall-clock seconds (the breaker's window counts in them)


@dataclass(frozen=True, slots=True)
class Expect:
    """Keep a request's pending response for its observe stream (observe.py, which does it)."""

    org: str
    request_id: str
    payload: str
    ttl_s: float


FollowUp = Settle | Release | RecordOutcome | Expect


async def perform(state: StateBackend, job: FollowUp) -> None:
    """Do ``job`` against ``state``; a state failure is logged."""
    try:
        if isinstance(job, Settle):
            await _settle(state, job)
        elif isinstance(job, Release):
            await state.release(job.org, job.request_id)
        elif isinstance(job, Expect):
            await state.pending_put(job.org, job.request_id, job.payload, ttl_s=job.ttl_s)
        else:
            await failover.record(state, job.rule, job.provider, job.status, now=job.at)
    except StateError as exc:
        if isinstance(job, Settle):
            log.warning("could not settle the reservation of %s: %s", job.request_id, exc)
        elif isinstance(job, Release):
            log.warning("could not release the reservation of %s: %s", job.request_id, exc)
        elif isinstance(job, Expect):
            # No observe stream finds it: the reservation expires at its ttl (state/base.py).
            log.warning("could not keep the pending response of %s: %s", job.request_id, exc)
        else:
            log.warning("could not record %s's response in its breaker: %s", job.provider, exc)


async def _settle(state: StateBackend, job: Settle) -> None:
    usage, status = job.usage, job.status
    if usage is not None and job.cost is not None and 200 <= status < 300:
        tokens = usage.input_tokens + usage.output_tokens
        await state.reconcile(
            job.org,
            job.request_id,
            actual_usd=dict.fromkeys(job.plan.budget_keys, job.cost),
            actual_tokens=dict.fromkeys(job.plan.token_keys, tokens),
        )
    elif status >= 400 or (status and usage is None and not job.streaming):
        # The provider refused or failed: nothing was spent.
        await state.release(job.org, job.request_id)
    # A stream cut short keeps its reservation until it expires: the provider may have
    # charged for what it generated, and the estimate is the better guess.


class Background:
    """The follow-ups in flight, as tasks of the running loop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, state: StateBackend, job: FollowUp) -> None:
        """Perform ``job`` off the response path.

        A state that says it ``never_waits`` (the in-memory one) has its follow-ups done here,
        without a task and the loop iterations a task costs (asyncio's eager tasks, which
        Python 3.11 lacks). Any other (Redis) gets a task of its own from the start: the
        timeouts of its calls (``asyncio.timeout``) belong to the task they are entered in,
        and must cancel the follow-up, never the stream that asked for it.
        """
        if not state.never_waits:
            self.start(perform(state, job))
            return
        coro = perform(state, job)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except Exception:  # perform logs state failures; anything else is a bug of ours
            log.exception("follow-up %s failed", type(job).__name__)
            return
        self.start(_rest(coro, waiting))  # it waited after all: the rest as a task

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` off the response path; ``drain`` waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every follow-up in flight (shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _Resumed:
    """The rest of a coroutine whose first step ran outside any task: awaiting this waits on
    the future it yielded first (as the task running it would have), then drives it on."""

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self.coro, self.waiting = coro, waiting

    def __await__(self) -> Generator[Any, None, None]:
        # A future keeps the "blocking" mark its own __await__ set before yielding it, so the
        # task waits on it as it would have; a bare yield (asyncio.sleep(0)) yields None.
        # Then as ``yield from``: sends and throws (a cancellation) go to the coroutine.
        coro, pending = self.coro, self.waiting
        while True:
            try:
                yield pending
            except BaseException as exc:
                try:
                    pending = coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                pending = coro.send(None)
            except StopIteration:
                return


async def _rest(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    await _Resumed(coro, waiting)
