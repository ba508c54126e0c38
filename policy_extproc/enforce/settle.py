"""What is left to do once an answer has gone: typed follow-ups, performed off the response path.

The engine says *what* is to be done as a value (``Settle`` a reservation as ``settlement``
decided, ``Release`` one a refused request held, ``RecordOutcome`` in a provider's breaker);
``Background`` performs it (what waits for Redis as a task, so the client's bytes never wait
for Redis), and waits for the tasks at shutdown (``drain``). A state failure here is logged,
never raised: the answer is already out. ``settlement`` is the one rule of what an answer
is charged, for the inline stream and for the observe stream (observe.py) alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import StateError
from ..llm.response import Usage
from ..policy.compiler import EffectiveRule
from ..state.base import StateBackend
from . import failover, limits

log = logging.getLogger(__name__)


NO_USAGE = "usage_not_reported"  # a 2xx answer said nothing of its usage: charged without it


@dataclass(frozen=True, slots=True)
class Seen:
    """What was seen of a request's answer: what its reservation is settled by."""

    status: int  # the response's; 0: none came (the stream ended before its headers)
    usage: Usage | None  # as the provider reported it
    output_tokens: int | None  # its output text counted (llm/tokens.py), when read to its end


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a request's reservation becomes once its answer is over (``settlement``)."""

    action: Literal["charge", "release", "keep"]
    cost: float | None = None  # USD charged to each budget; None: the reservation's estimate
    tokens: int | None = None  # charged to each token limit; None: the tokens as reserved
    error_code: str | None = None  # NO_USAGE: charged without the provider's usage

    def charged_usd(self, estimate: float) -> float | None:
        """What each budget is charged (``estimate``: the reservation's); None: nothing."""
        if self.action != "charge":
            return None
        return estimate if self.cost is None else self.cost


def settlement(seen: Seen, *, input_tokens: int, price: Callable[[Usage], float]) -> Settlement:
    """The one settlement rule of both accounting modes (inline and observe).

    - A 2xx answer that reports its usage: its real cost (``price``).
    - A 2xx answer that reports none: the output text counted, with the prompt as estimated
      (``input_tokens``), when the answer was read to its end; else (cut short, over the body
      limit, not the JSON its API promises) the reservation's estimate. Never nothing: an
      answer that hides its usage must not walk around a budget (fail closed). Audited as
      ``usage_not_reported``.
    - Any other status the provider answered with: given back, a provider's error is not
      charged to the user.
    - No answer at all (the stream ended before the response headers): kept; the sweep gives
      its budgets back at its ttl and keeps its tokens charged (the call may have happened).
    """
    status, usage = seen.status, seen.usage
    if 200 <= status < 300:
        if usage is not None:
            return Settlement("charge", price(usage), usage.input_tokens + usage.output_tokens)
        if seen.output_tokens is not None:
            counted = Usage(input_tokens, seen.output_tokens)
            return Settlement("charge", price(counted), input_tokens + seen.output_tokens, NO_USAGE)
        return Settlement("charge", None, None, NO_USAGE)
    if status:
        return Settlement("release")
    return Settlement("keep")


async def apply(
    state: StateBackend,
    org: str,
    request_id: str,
    s: Settlement,
    *,
    budget_keys: Sequence[str],
    token_keys: Sequence[str],
) -> None:
    """Do what ``s`` says to the request's reservation (StateError passes through)."""
    if s.action == "release":
        await state.release(org, request_id)
    elif s.action == "charge":
        await state.reconcile(
            org,
            request_id,
            actual_usd={} if s.cost is None else dict.fromkeys(budget_keys, s.cost),
            actual_tokens={} if s.tokens is None else dict.fromkeys(token_keys, s.tokens),
        )


@dataclass(frozen=True, slots=True)
class Settle:
    """Settle a request's reservation as ``settlement`` decided."""

    org: str
    request_id: str
    budget_keys: tuple[str, ...]
    token_keys: tuple[str, ...]
    settlement: Settlement

    @classmethod
    def of(
        cls,
        org: str,
        request_id: str,
        plan: limits.Plan,
        seen: Seen,
        price: Callable[[Usage], float],
    ) -> Settle:
        """Settle ``plan``'s reservation by what was ``seen`` of its answer (``settlement``)."""
        s = settlement(seen, input_tokens=plan.input_tokens, price=price)
        return cls(org, request_id, tuple(plan.budget_keys), tuple(plan.token_keys), s)


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
            # No observe stream finds it: at its ttl the sweep gives the reservation's budgets
            # back and keeps its tokens charged (state/lua/reservations.lua, state/memory.py).
            log.warning("could not keep the pending response of %s: %s", job.request_id, exc)
        else:
            log.warning("could not record %s's response in its breaker: %s", job.provider, exc)


async def _settle(state: StateBackend, job: Settle) -> None:
    await apply(
        state,
        job.org,
        job.request_id,
        job.settlement,
        budget_keys=job.budget_keys,
        token_keys=job.token_keys,
    )


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
