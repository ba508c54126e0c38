"""Alerts (budget thresholds, budget blocks, approvals waiting) sent to a webhook, off the
request path: a bounded queue, one worker, retries with exponential backoff.

An alert that cannot be delivered after its retries is logged and counted, never raised: the
decision it belongs to already went out, and the audit record holds the alert text as well.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


class AlertNotifier:
    """Posts alerts as JSON to ``url``; ``notify`` never blocks and never raises."""

    def __init__(
        self,
        url: str | None,
        *,
        retries: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        queue_size: int = 10_000,
    ) -> None:
        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue(queue_size)
        self._worker: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Alerts waiting in the queue (not counting the one being delivered)."""
        return self._queue.qsize()

    def notify(self, alert: Mapping[str, Any]) -> None:
        """Queue one alert (a JSON object); dropped and counted when the queue is full."""
        if self.url is None:
            return
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                await self._deliver(alert)
            finally:
                self._queue.task_done()

    async def _deliver(self, alert: Mapping[str, Any]) -> None:
        body = json.dumps(alert, separators=(",", ":")).encode()
        delay = self.backoff_s
        for attempt in range(1, self.retries + 1):
            try:
                await asyncio.to_thread(self._post, body)
                self.sent += 1
                return
            except (OSError, urllib.error.URLError) as exc:
                if attempt == self.retries:
                    self.failed += 1
                    log.error("alert not delivered after %d attempts: %s", attempt, exc)
                    return
                await asyncio.sleep(delay)
                delay *= 2

    def _post(self, body: bytes) -> None:
        assert self.url is not None
        req = urllib.request.Request(
            self.url, data=body, method="POST", headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            if resp.status >= 300:
                raise OSError(f"webhook answered {resp.status}")

    async def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (bounded wait), then stop."""
        if self._worker is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            log.warning("%d alerts not delivered at shutdown", self._queue.qsize())
        self._worker.cancel()
