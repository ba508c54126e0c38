"""The shared decision stream: every replica appends its audit records to one capped Redis Stream.

It is what the dashboard reads to show the decisions of all replicas (live tail and search). It
is not the audit trail: the hash-chained log is. So this sink is best effort, like the
OpenTelemetry one: ``emit`` never blocks and never raises (a full queue drops the record and
counts it), a background thread writes batches with one pipelined ``XADD ... MAXLEN ~ N`` per
record, and a Redis outage costs stream entries, never a decision.

Each entry has one field, ``r``: the record as the JSON of ``AuditRecord.to_dict`` (never prompt
text: only what the audit record holds). The entry id is Redis's time-based id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

from .record import AuditRecord

log = logging.getLogger(__name__)

STREAM_KEY = "policy-extproc:decisions"
DEFAULT_MAXLEN = 100_000
QUEUE_SIZE = 10_000
BATCH = 500
_ERROR_EVERY_S = 30.0


class RedisStreamSink:
    """An ``AuditSink`` appending records to a capped Redis Stream from a background thread."""

    def __init__(
        self,
        url: str,
        *,
        key: str = STREAM_KEY,
        maxlen: int = DEFAULT_MAXLEN,
        client: Any = None,
        timeout_s: float = 1.0,
    ) -> None:
        if client is None:
            import redis

            client = redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
        self.key = key
        self.maxlen = maxlen
        self.dropped = 0  # records not appended: queue full or Redis failing
        self.written = 0
        self._client = client
        # Records, flush marks (set once what came before is written), None: the end.
        self._queue: queue.Queue[bytes | threading.Event | None] = queue.Queue(QUEUE_SIZE)
        self._last_error = 0.0
        self._thread = threading.Thread(target=self._run, name="decision-stream", daemon=True)
        self._thread.start()

    def emit(self, record: AuditRecord, *, trace_context: Mapping[str, str] | None = None) -> None:
        """Queue ``record`` for the stream; never blocks and never raises."""
        try:
            data = json.dumps(record.to_dict(), separators=(",", ":")).encode()
            self._queue.put_nowait(data)
        except queue.Full:
            self.dropped += 1
        except Exception:  # a best-effort sink must never fail a decision
            self.dropped += 1
            log.exception("decision stream: record not queued")

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write([b for b in batch if isinstance(b, bytes)])
            for mark in batch:
                if isinstance(mark, threading.Event):
                    mark.set()
            if None in batch:
                return

    def _write(self, batch: list[bytes]) -> None:
        if not batch:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for data in batch:
                pipe.xadd(self.key, {"r": data}, maxlen=self.maxlen, approximate=True)
            pipe.execute()
            self.written += len(batch)
        except Exception as exc:  # redis errors, timeouts, a closed connection
            self.dropped += len(batch)
            now = time.monotonic()
            if now - self._last_error >= _ERROR_EVERY_S:  # one line per outage, not per record
                self._last_error = now
                log.error("decision stream: %d records not written to Redis: %s", len(batch), exc)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until what is queued now has been written (or dropped); False on timeout."""
        mark = threading.Event()
        try:
            self._queue.put(mark, timeout=timeout_s)
        except queue.Full:
            return False
        return mark.wait(timeout_s)

    def close(self) -> None:
        """Write what is queued (bounded by the Redis timeout), then stop the thread."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=1.0)
        self._thread.join(timeout=5.0)
        try:
            self._client.close()
        except Exception:
            log.debug("decision stream: close failed", exc_info=True)


def decode_entry(fields: Mapping[Any, Any]) -> dict[str, Any] | None:
    """The record dict of one stream entry, or None when it is not one of ours."""
    raw = fields.get(b"r", fields.get("r"))
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
