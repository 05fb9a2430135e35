"""Operator alerts: always a structured log line; optionally a hook command and/or a webhook.

Alerts are raised after the state change they report is committed, and a failing hook never blocks the pipeline.
Hooks run one at a time, in the order the alerts were raised: two alerts of one event (a tolerated P-Mode and an
unmatched message, say) must not interleave their JSON in a hook that appends to one file, nor arrive reversed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from gateway.ops import metrics as ops_metrics
from gateway.pipeline.config import AlertsConfig

log = logging.getLogger("ics2gw.alerts")


class Alerts:
    def __init__(self, cfg: AlertsConfig, environment: str) -> None:
        self.cfg, self.environment = cfg, environment
        self.raised: list[dict[str, Any]] = []   # kept for `status` and tests; bounded below
        self._tasks: set[asyncio.Task[None]] = set()
        self._order: asyncio.Lock | None = None   # created on the running loop; serialises hook deliveries

    def raise_alert(self, kind: str, **detail: Any) -> None:
        alert = {"alert": kind, "environment": self.environment, **detail}
        self.raised.append(alert)
        del self.raised[:-1000]
        ops_metrics.alert_raised(alert)
        log.warning("alert %s", " ".join(f"{k}={v}" for k, v in alert.items()))
        if self.cfg.hook_command or self.cfg.webhook_url:
            try:
                task = asyncio.get_running_loop().create_task(self._dispatch(alert))
            except RuntimeError:
                return
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, alert: dict[str, Any]) -> None:
        if self._order is None:
            self._order = asyncio.Lock()
        async with self._order:   # asyncio.Lock is FIFO: hooks see alerts in the order they were raised
            await self._deliver(alert)

    async def _deliver(self, alert: dict[str, Any]) -> None:
        body = json.dumps(alert).encode()
        if self.cfg.hook_command:
            try:
                proc = await asyncio.create_subprocess_exec(*self.cfg.hook_command, stdin=asyncio.subprocess.PIPE,
                                                            stdout=asyncio.subprocess.DEVNULL,
                                                            stderr=asyncio.subprocess.DEVNULL)
                await asyncio.wait_for(proc.communicate(body), timeout=30)
            except (OSError, asyncio.TimeoutError) as exc:
                log.error("alert hook failed error=%s", exc)
        if self.cfg.webhook_url:
            import aiohttp
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
                    async with s.post(self.cfg.webhook_url, data=body,
                                      headers={"Content-Type": "application/json"}) as r:
                        await r.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.error("alert webhook failed error=%s", exc)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
