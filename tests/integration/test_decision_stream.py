"""The shared decision stream on a real Redis: every record appended, capped, best effort."""

from __future__ import annotations

from pathlib import Path

import redis

from policy_extproc.audit.record import AuditRecord, utc_timestamp
from policy_extproc.audit.stream import STREAM_KEY, RedisStreamSink, decode_entry
from tests.integration.helpers import chat_body, full_request, run_exchange, running_sidecar
from tests.redis_server import RedisServer


def record(n: int) -> AuditRecord:
    return AuditRecord(
        decision="block" if n % 2 else "allow",
        policy="p",
        rule="r",
        reason="because",
        user=f"u{n}",
        environment=None,
        timestamp=utc_timestamp(),
        request_id=f"req-{n}",
        org="acme",
    )


def test_records_are_appended_in_order_and_capped(redis_url: str) -> None:
    sink = RedisStreamSink(redis_url, maxlen=100)
    for n in range(1000):
        sink.emit(record(n))
    assert sink.flush()
    sink.close()
    client = redis.Redis.from_url(redis_url)
    length = client.xlen(STREAM_KEY)
    # MAXLEN ~ trims whole macro nodes: near the cap, never far above it, never below.
    assert 100 <= length < 300
    entries = client.xrange(STREAM_KEY)
    ids = [decode_entry(fields)["request_id"] for _, fields in entries]  # type: ignore[index]
    assert ids == [f"req-{n}" for n in range(1000 - length, 1000)]
    assert sink.written == 1000 and sink.dropped == 0


def test_redis_down_drops_records_and_never_raises(own_redis: RedisServer) -> None:
    sink = RedisStreamSink(own_redis.url, timeout_s=0.2)
    own_redis.stop()
    sink.emit(record(1))
    assert sink.flush()
    assert sink.dropped == 1
    own_redis.start()
    sink.emit(record(2))
    assert sink.flush()
    sink.close()
    entries = redis.Redis.from_url(own_redis.url).xrange(STREAM_KEY)
    assert [decode_entry(f)["request_id"] for _, f in entries] == ["req-2"]  # type: ignore[index]


async def test_a_sidecar_with_redis_appends_every_decision(redis_url: str, tmp_path: Path) -> None:
    policies = "policy_name: p\nrules:\n  - {type: content_filter, id: s, keywords: [secret]}\n"
    async with running_sidecar(tmp_path, policies, redis=redis_url) as running:
        await run_exchange(running.stub, full_request(chat_body("a secret"), request_id="rq-1"))
        await run_exchange(running.stub, full_request(chat_body("hello"), request_id="rq-2"))
        stream = next(s for s in running.sidecar.sink.sinks if isinstance(s, RedisStreamSink))  # type: ignore[union-attr]
        assert stream.flush()
    entries = redis.Redis.from_url(redis_url).xrange(STREAM_KEY)
    found = [decode_entry(f) for _, f in entries]
    assert [(d["request_id"], d["decision"]) for d in found if d] == [
        ("rq-1", "block"),
        ("rq-2", "allow"),
    ]
