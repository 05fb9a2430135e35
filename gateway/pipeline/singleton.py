"""Tasks that exactly one gateway instance runs at a time: the pull loop of an endpoint, the timer sweep, the HMRC
poller, the AMQP event outbox.

Why: with several instances on one PostgreSQL journal, two pull loops on one MPC would race for the same c2t
messages and each replay the other's pending acknowledgements; two timer sweeps would raise every alert twice; two
outbox publishers would publish every event twice under one cursor. Work that every instance may do (sending:
claims with ``SKIP LOCKED``; intake: the unique key; inbound pushes: de-duplication by eb:MessageId) needs no lock.

How: ``run_as_singleton`` waits until the journal's lock for the task (``journal.singleton(name)``: a PostgreSQL
advisory lock held by a dedicated session) is ours, then runs the task. While it runs it asks every
``check_seconds`` whether the lock is still held (the session may have died with the database, a failover, a
network cut); when it is not, the task is cancelled (logged, one ``singleton-lost`` alert per loss) and we go back
to waiting: another instance whose session is alive holds it by then, or we take it again once the database is
back. The lock calls hit the database, so they run in a thread, never on the event loop. On SQLite every lock is
always ours (the journal's ``.lock`` file already makes the daemon the only writer): behaviour is unchanged.

Failover time: the holder's death ends its database session (the kernel closes the socket; PostgreSQL notices at
once, or after ``tcp_keepalives_*`` for a host that vanished); the waiting instances retry every
``retry_seconds``. Losing the lock is noticed within ``check_seconds`` plus the time the check's query takes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("ics2gw.singleton")


class Leadership:
    """Which singleton tasks this instance holds right now (``/health`` "leader_of", the status page)."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self.acquired: dict[str, int] = {}    # name -> how many times this instance took it
        self.lost: dict[str, int] = {}        # name -> how many times it lost it while running

    def set(self, name: str, held: bool) -> None:
        if held:
            self._held.add(name)
            self.acquired[name] = self.acquired.get(name, 0) + 1
        else:
            self._held.discard(name)

    def held(self) -> list[str]:
        return sorted(self._held)


LEADERSHIP = Leadership()


async def _call(fn: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(fn)


async def run_as_singleton(lock: Any, name: str, factory: Callable[[], Awaitable[None]], stop: asyncio.Event,
                           alert: Callable[..., None] | None, *, retry_seconds: float = 2.0,
                           check_seconds: float = 2.0, grace_seconds: float = 0.0,
                           leadership: Leadership | None = None) -> None:
    """Runs ``factory()`` while this instance holds ``lock`` (a ``SingletonLock``), until ``stop`` is set.

    Returns when ``stop`` is set (the lock released) or when the task ends by itself while the lock is held (the
    caller, usually the ``Supervisor``, decides whether to start it again). A lost lock cancels the task and
    waits for the lock again; an exception of the task propagates (the lock is released first, so another
    instance can take over while this one backs off).

    ``grace_seconds`` (set it above ``check_seconds`` for a shared database): after taking the lock, wait that
    long before starting the task, so that a previous holder whose session died but whose process lives has
    noticed at its next check and stopped its copy. Without it the two may overlap for up to ``check_seconds``."""
    leadership = leadership or LEADERSHIP
    alert = alert or (lambda kind, **detail: None)
    waiting_logged = False
    try:
        while not stop.is_set():
            try:
                got = await _call(lock.try_acquire)
            except Exception as exc:  # noqa: BLE001 - the database is away: keep waiting, it comes back
                log.warning("singleton acquire failed task=%s error=%s: %s", name, type(exc).__name__, exc)
                got = False
            if not got:
                if not waiting_logged:
                    log.info("singleton waiting task=%s (another instance holds it)", name)
                    waiting_logged = True
                if await _wait(stop, retry_seconds):
                    return
                continue
            waiting_logged = False
            if grace_seconds > 0:
                if await _wait(stop, grace_seconds):
                    return
                try:
                    still = await _call(lock.held)
                except Exception:  # noqa: BLE001
                    still = False
                if not still:
                    continue
            leadership.set(name, True)
            log.info("singleton acquired task=%s: this instance runs it", name)
            task = asyncio.create_task(factory(), name=f"singleton:{name}")
            lost = False
            try:
                lost = await _watch(lock, name, task, stop, check_seconds)
            finally:
                leadership.set(name, False)
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if lost:
                leadership.lost[name] = leadership.lost.get(name, 0) + 1
                log.error("singleton lost task=%s: its database session ended; task stopped, waiting to take it "
                          "again", name)
                try:
                    alert("singleton-lost", task=name)
                except Exception:  # noqa: BLE001 - a broken alert path must not stop the failover
                    log.exception("alert failed task=%s", name)
                await _release(lock, name)   # forget a half-dead session before trying again
                if await _wait(stop, retry_seconds):
                    return
                continue
            if stop.is_set():
                return
            if task.cancelled():
                return
            task.result()   # the task ended by itself: its exception (if any) goes to the supervisor
            return
    finally:
        await _release(lock, name)


async def _watch(lock: Any, name: str, task: asyncio.Task[None], stop: asyncio.Event, check_seconds: float) -> bool:
    """Waits for the task to end or ``stop``; True when the lock was lost meanwhile."""
    stopper = asyncio.create_task(stop.wait())
    try:
        while True:
            done, _ = await asyncio.wait({task, stopper}, timeout=check_seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return False
            if stopper in done:
                # the owner stops the task itself (its own stop event); give it the chance to finish cleanly
                await asyncio.wait({task}, timeout=check_seconds)
                return False
            try:
                still = await _call(lock.held)
            except Exception as exc:  # noqa: BLE001 - cannot tell: the database is away, so is the lock
                log.warning("singleton check failed task=%s error=%s: %s", name, type(exc).__name__, exc)
                still = False
            if not still:
                return True
    finally:
        stopper.cancel()


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleeps ``seconds`` or until ``stop``; True if stopped."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
        return True
    except asyncio.TimeoutError:
        return False


async def _release(lock: Any, name: str) -> None:
    try:
        await _call(lock.release)
    except Exception as exc:  # noqa: BLE001 - the session is gone anyway: the database released it
        log.debug("singleton release failed task=%s error=%s", name, exc)
