"""Keeps the daemon's background tasks alive: a task that fails or ends by itself is restarted, with an alert.

Why: before this module the daemon awaited its tasks with FIRST_COMPLETED and re-raised the first exception,
so one bad spool file (a name too long for the claim rename, a full disk in the rejection path) ended the
whole process, and systemd restarted it straight into the same file: a crash loop that also stopped the
senders and the inbound server. Each component now handles its per-file and per-request failures where they
happen; the supervisor is the last line: whatever still escapes a task is logged with its traceback, raised
as a ``task-failed`` alert, and the task is started again after a backoff (1 s doubling to
``max_backoff``; reset once the task has run ``healthy_after`` seconds). The only way out of the daemon is a
deliberate, logged shutdown (``Gateway.request_stop``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("ics2gw.supervisor")


@dataclass
class TaskRecord:
    """What the supervisor knows about one supervised task (also shown by health/status)."""
    name: str
    restarts: int = 0
    last_error: str | None = None
    running: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"restarts": self.restarts, "last_error": self.last_error, "running": self.running}


class Supervisor:
    """``supervise(name, factory)`` runs ``factory()`` until ``stop()``; restarts it whenever it ends early."""

    def __init__(self, alert: Callable[..., None], *, initial_backoff: float = 1.0, max_backoff: float = 60.0,
                 healthy_after: float = 60.0) -> None:
        self.alert = alert
        self.initial_backoff, self.max_backoff, self.healthy_after = initial_backoff, max_backoff, healthy_after
        self.tasks: dict[str, TaskRecord] = {}
        self._stopping = asyncio.Event()

    def supervise(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        rec = self.tasks[name] = TaskRecord(name)
        rec.task = asyncio.create_task(self._keep(rec, factory), name=f"supervised:{name}")
        return rec.task

    async def _keep(self, rec: TaskRecord, factory: Callable[[], Awaitable[None]]) -> None:
        backoff = self.initial_backoff
        while not self._stopping.is_set():
            started = time.monotonic()
            rec.running = True
            try:
                await factory()
                if self._stopping.is_set():
                    return
                rec.last_error = "ended without being asked to stop"
                log.error("task ended unexpectedly task=%s; restarting", rec.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the point of a supervisor: log, alert, restart
                rec.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("task failed task=%s error=%s; restarting", rec.name, rec.last_error)
            finally:
                rec.running = False
            rec.restarts += 1
            if time.monotonic() - started >= self.healthy_after:
                backoff = self.initial_backoff
            try:
                self.alert("task-failed", task=rec.name, error=rec.last_error, restarts=rec.restarts,
                           restart_in_seconds=backoff)
            except Exception:  # noqa: BLE001 - a broken alert path must not stop the restart
                log.exception("alert failed task=%s", rec.name)
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
                return
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2, self.max_backoff)

    def stop(self) -> None:
        """No more restarts; the tasks themselves are stopped by their owners (and cancelled by ``join``)."""
        self._stopping.set()

    async def join(self, timeout: float | None = None) -> None:
        """Waits for every supervised task to end (after ``stop`` and the components' own stop); cancels the rest."""
        live = [r.task for r in self.tasks.values() if r.task is not None]
        if not live:
            return
        _, pending = await asyncio.wait(live, timeout=timeout)
        for t in pending:
            t.cancel()
        await asyncio.gather(*live, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {name: rec.to_dict() for name, rec in self.tasks.items()}
