"""The live decision sink: filters, bounded queues that drop and count, never blocking emit."""

from __future__ import annotations

import asyncio
import threading

from policy_extproc.admin.live import LiveDecisions
from policy_extproc.audit.record import AuditRecord, utc_timestamp


def record(n: int, *, org: str = "acme", decision: str = "allow") -> AuditRecord:
    return AuditRecord(
        decision=decision,
        policy=None,
        rule=None,
        reason="",
        user="alice",
        environment=None,
        timestamp=utc_timestamp(),
        request_id=f"r-{n}",
        org=org,
    )


async def take(sub_records: object, n: int) -> list[tuple[AuditRecord, int]]:
    out = []
    async with asyncio.timeout(5):
        async for item in sub_records:  # type: ignore[attr-defined]
            out.append(item)
            if len(out) == n:
                break
    return out


async def test_each_subscriber_gets_what_its_filters_let_through() -> None:
    live = LiveDecisions()
    everything = live.subscribe()
    blocks = live.subscribe(org="acme", decisions=["block"])
    live.emit(record(1))
    live.emit(record(2, decision="block"))
    live.emit(record(3, org="globex", decision="block"))
    got = await take(everything.records(), 3)
    assert [r.request_id for r, _ in got] == ["r-1", "r-2", "r-3"]
    (only,) = await take(blocks.records(), 1)
    assert only[0].request_id == "r-2"


async def test_a_slow_subscriber_misses_records_counted_and_emit_never_waits() -> None:
    live = LiveDecisions(maxsize=3)
    slow, fast = live.subscribe(), live.subscribe()
    drained = asyncio.create_task(take(fast.records(), 10))
    for n in range(10):
        live.emit(record(n))  # synchronous: returns at once however full the queues are
        await asyncio.sleep(0)  # let the fast reader read
    assert len(await drained) == 10
    got = await take(slow.records(), 3)
    assert [r.request_id for r, _ in got] == ["r-0", "r-1", "r-2"]
    assert got[-1][1] == 7 == slow.dropped
    assert live.dropped == 7 and fast.dropped == 0


async def test_records_emitted_from_another_thread_arrive() -> None:
    live = LiveDecisions()
    sub = live.subscribe()
    thread = threading.Thread(target=lambda: [live.emit(record(n)) for n in range(5)])
    thread.start()
    got = await take(sub.records(), 5)
    thread.join()
    assert [r.request_id for r, _ in got] == [f"r-{n}" for n in range(5)]


async def test_close_ends_every_stream_and_unsubscribing_stops_delivery() -> None:
    live = LiveDecisions()
    leaving, staying = live.subscribe(), live.subscribe()
    leaving.close()
    assert live.subscribers == 1
    live.emit(record(1))
    live.close()
    got = [item async for item in staying.records()]  # ends: close marks the end
    assert [r.request_id for r, _ in got] == ["r-1"]
    late = live.subscribe()
    assert [item async for item in late.records()] == []
