"""Alerts (enforced blocks, approvals waiting, budget thresholds) sent to a webhook, off the
request path: a bounded queue, one worker, retries with exponential backoff.

An alert that cannot be delivered after its retries is logged and counted, never raised: the
decision it belongs to already went out, and the audit record holds the alert text as well.

Alerts about one rule and one user are deduplicated: within ``window_s`` of the last one sent
for that (policy, rule, user), another is counted, not sent, and the next one sent after the
window says how many were suppressed. A rule with ``alert: false`` sends none. The payload is
the alert's JSON object, or Slack's ``{"text": ...}`` (``format="slack"``); it never holds
prompt text, only what an audit record holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal

log = logging.getLogger(__name__)

AlertFormat = Literal["json", "slack"]
AlertKey = tuple[str, str, str]  # (policy, rule, user)
DEFAULT_WINDOW_S = 300.0
_MAX_KEYS = 10_000  # (policy, rule, user) triples remembered for deduplication


class Deduper:
    """Per (policy, rule, user): at most one alert per window; counts what it holds back."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._last: OrderedDict[AlertKey, tuple[float, int]] = OrderedDict()

    def admit(self, key: AlertKey) -> int | None:
        """None: hold this alert back; else the number suppressed since the last one sent."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.window_s:
            self._last[key] = (last[0], last[1] + 1)
            return None
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        if len(self._last) > _MAX_KEYS:
            self._last.popitem(last=False)
        return last[1] if last is not None else 0


def slack_text(alert: Mapping[str, Any]) -> str:
    """One line a person reads in a Slack channel."""
    kind = alert.get("type") or "alert"
    who = " ".join(f"{k}={alert[k]}" for k in ("org", "team", "user", "model") if alert.get(k))
    where = ""
    if alert.get("policy"):
        where = f" policy {alert['policy']}"
        if alert.get("rule"):
            where += f" / rule {alert['rule']}"
    what = alert.get("reason") or alert.get("alert") or ""
    line = f"policy-extproc {kind}{':' + where if where else ''}" + (f": {what}" if what else "")
    if who:
        line += f" ({who})"
    if alert.get("request_id"):
        line += f" request {alert['request_id']}"
    if alert.get("suppressed"):
        line += f"; {alert['suppressed']} similar alerts suppressed"
    return line


def render(alert: Mapping[str, Any], fmt: AlertFormat) -> bytes:
    """The webhook body of ``alert`` in ``fmt``."""
    payload: Mapping[str, Any] = {"text": slack_text(alert)} if fmt == "slack" else alert
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


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
        format: AlertFormat = "json",
        window_s: float = DEFAULT_WINDOW_S,
        opted_out: Callable[[str, str], bool] | None = None,
    ) -> None:
        if format not in ("json", "slack"):
            raise ValueError(f"alert format must be json or slack, not {format!r}")
        self.url = url
        self.format: AlertFormat = format
        self.deduper = Deduper(window_s)
        self.opted_out = opted_out
        self.suppressed = 0  # held back by deduplication
        self.silenced = 0  # for rules with alert: false
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

    def notify(self, alert: Mapping[str, Any], *, key: AlertKey | None = None) -> None:
        """Queue one alert (a JSON object); dropped and counted when the queue is full.

        ``key`` (policy, rule, user) subjects it to the rule's opt-out and to deduplication.
        """
        if self.url is None:
            return
        if key is not None:
            if self.opted_out is not None and self.opted_out(key[0], key[1]):
                self.silenced += 1
                return
            held = self.deduper.admit(key)
            if held is None:
                self.suppressed += 1
                return
            if held:
                alert = {**alert, "suppressed": held}
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
        body = render(alert, self.format)
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
