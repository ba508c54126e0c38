"""The decision path reads no clock of its own: its times come from the ``Clock`` the I/O side
hands in (enforce/clock.py). Checked on the syntax tree of every module of ``enforce/``, which
is either on the clock-free list or says why it reads the clock; and shown with a clock moved
by hand: the record's timestamp and latency, and Envoy's deadline, are the given clock's."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from policy_extproc.audit.record import utc_timestamp
from policy_extproc.audit.sink import RecordingSink
from policy_extproc.enforce.clock import SYSTEM_CLOCK, Clock
from policy_extproc.enforce.driver import ExtProcStream
from policy_extproc.enforce.engine import Engine
from policy_extproc.enforce.translate import Event
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.loader import load_sources
from policy_extproc.sources.catalog import load_catalog
from policy_extproc.sources.store import PolicyStore

CATALOG = load_catalog()  # the packaged catalog, read once as the server's edge does

ENFORCE = Path(__file__).resolve().parents[2] / "policy_extproc" / "enforce"

# No clock read at all, times are handed in: the sans-IO modules of the request path, and the
# drivers that take their times from the engine's clock.
CLOCK_FREE = frozenset(
    {
        "__init__.py",
        "admission.py",  # told how long a request waited
        "answers.py",
        "approvals.py",  # told ``now`` by the stateful checks
        "config.py",
        "decision_alerts.py",
        "driver.py",  # the engine's clock, for each message it feeds the machine
        "effects.py",
        "engine.py",  # its ``clock``
        "envoy_replies.py",
        "examine.py",
        "exchange.py",
        "extauthz.py",  # the engine's clock, for the queue age
        "failover.py",  # told ``now``
        "guard.py",
        "limits.py",  # told ``now``
        "observe.py",  # the engine's clock, for the deadline and the latency
        "pipeline.py",
        "settle.py",  # its follow-ups carry their time
        "stateful.py",  # its ``clock``, the engine's
        "stream.py",  # events carry their time
        "stream_events.py",
        "translate.py",
        "watch.py",
        "work.py",  # its time bound is asyncio's timeout, no clock read
    }
)
# The I/O side, each with why it reads the clock itself.
READS_THE_CLOCK = {
    "clock.py": "the clock itself: the one place the decision path's times come from",
    "alerts.py": "the webhook's retry back-off and its de-duplication window (off the path)",
    "servicer.py": "the phase latency metric (perf_counter around each message)",
}
# A call of one of these reads a clock, unless it is made on a clock handed in (``*.clock``).
CLOCK_CALLS = frozenset(
    {
        "time",
        "time_ns",
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "process_time",
        "now",
        "today",
        "utcnow",
    }
)


def clock_reads(source: str) -> set[str]:
    """The clock reads of a module's source: ``import time``, ``.monotonic_ns()``, ..."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update("import time" for a in node.names if a.name.split(".")[0] == "time")
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            found.add("import time")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLOCK_CALLS
        ):
            owner = node.func.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if not name.endswith("clock"):
                found.add(f".{node.func.attr}()")
    return found


MODULES = sorted(p.name for p in ENFORCE.glob("*.py"))


def test_every_module_is_on_one_list() -> None:
    assert sorted(CLOCK_FREE & READS_THE_CLOCK.keys()) == []
    assert sorted(set(MODULES) - CLOCK_FREE - READS_THE_CLOCK.keys()) == []
    assert sorted((CLOCK_FREE | READS_THE_CLOCK.keys()) - set(MODULES)) == []


@pytest.mark.parametrize("name", sorted(CLOCK_FREE))
def test_the_decision_path_reads_no_clock(name: str) -> None:
    assert clock_reads((ENFORCE / name).read_text(encoding="utf-8")) == set()


@pytest.mark.parametrize("name", sorted(READS_THE_CLOCK))
def test_a_module_that_reads_the_clock_is_listed_for_it(name: str) -> None:
    """An entry goes when its reason does."""
    assert clock_reads((ENFORCE / name).read_text(encoding="utf-8")) != set()


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import time", {"import time"}),
        ("from time import monotonic_ns", {"import time"}),
        ("t.monotonic_ns()", {".monotonic_ns()"}),
        ("datetime.now(timezone.utc)", {".now()"}),
        ("date.today()", {".today()"}),
        ("asyncio.get_running_loop().time()", {".time()"}),
        ("self.clock.monotonic_ns()", set()),
        ("engine.clock.wall_s()", set()),
        ("clock.wall_ns()", set()),
        ("attrs.request.time.ToNanoseconds()", set()),
        ("datetime.fromisoformat(value)", set()),
    ],
)
def test_what_counts_as_a_clock_read(source: str, found: set[str]) -> None:
    assert clock_reads(source) == found


# -- the clock handed in is the one used ------------------------------------------------------

POLICIES = """
policy_name: acme
org: acme
rules:
  - type: content_filter
    keywords: [confidential]
"""
WALL = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}'


def _engine(sink: RecordingSink, clock: Clock) -> Engine:
    snapshot = Snapshot(load_sources([("p.yaml", POLICIES)]))
    return Engine(PolicyStore(snapshot=snapshot), sink, catalog=CATALOG, clock=clock)


def _headers() -> Event:
    h = {":method": "POST", ":path": "/v1/chat/completions", "x-request-id": "r1"}
    return Event("request_headers", {**h, "x-org-id": "acme"}, b"", False)


async def test_the_record_is_timed_by_the_clock_handed_in() -> None:
    wall = [WALL]
    sink = RecordingSink()
    stream = ExtProcStream(_engine(sink, Clock(wall_ns=lambda: wall[0], monotonic_ns=lambda: 0)))
    await stream.handle(_headers())
    wall[0] += 3_000_000  # the body arrives 3 ms later, and is decided at once
    await stream.handle(Event("request_body", {}, BODY, True))
    [record] = sink.records
    assert record.decision == "allow"
    assert record.timestamp == utc_timestamp(WALL)
    assert record.latency_us == 3_000


@pytest.mark.parametrize(("step_s", "code"), [(0, None), (1, "envoy_gave_up")])
async def test_envoy_s_deadline_is_kept_on_the_clock_handed_in(
    step_s: int, code: str | None
) -> None:
    """Monotonic reads: the headers, the body (arming the 200 ms deadline), then the engine's
    check once the decision is reached: a second later is past the deadline."""
    ticks = itertools.chain((0, step_s * 10**9, 2 * step_s * 10**9), itertools.repeat(0))
    sink = RecordingSink()
    clock = Clock(wall_ns=lambda: WALL, monotonic_ns=lambda: next(ticks))
    stream = ExtProcStream(_engine(sink, clock))
    await stream.handle(_headers())
    await stream.handle(Event("request_body", {}, BODY, True))
    stream.close()
    [record] = sink.records
    assert record.error_code == code
    assert record.decision == ("allow" if code is None else "block")


def test_the_server_s_clock_is_the_system_s() -> None:
    assert SYSTEM_CLOCK.wall_s() > WALL / 1e9
    a = SYSTEM_CLOCK.monotonic_ns()
    assert SYSTEM_CLOCK.monotonic_ns() >= a
