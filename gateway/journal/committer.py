"""Group commit: many state changes, one transaction, one fsync; each change acknowledged only after its commit.

Why: with ``synchronous=FULL`` every COMMIT costs an fsync (milliseconds on real disks). The daemon produces
many small changes at once (a burst of ERP files, a pull returning twenty replies); committing them one by one
would make the fsync rate the throughput limit. ``JournalWriter`` runs on one dedicated thread that owns the
write connection: it takes every pending submission (up to ``max_batch``, waiting at most ``max_delay`` for more
once the first arrived), runs each in its own SAVEPOINT inside one transaction, commits once, and only then
resolves the callers' futures.

Failure isolation: a submission that raises is rolled back to its savepoint and its caller gets the exception;
the others still commit. If the COMMIT itself fails (disk full, I/O error), the whole batch is rolled back and
each submission is run again alone in its own transaction, so each caller gets its own outcome. Submissions must
therefore only touch the journal (no sockets, no files): they may run twice, and only the committed run counts.

Database unavailable (PostgreSQL restarted, failed over, a deadlock between instances): the backend raises
``JournalUnavailable``. If it came before the COMMIT was sent, nothing of the batch happened, so the whole batch runs
again after a short back-off, for up to ``unavailable_budget`` seconds; callers just wait longer. A failure during
the COMMIT itself has an unknown outcome and is handed to the callers (their retry is idempotent by design: intake
by MessageId and digest, sends by lease and the same MessageId).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gateway.journal.errors import JournalUnavailable
from gateway.journal.interface import Journal

log = logging.getLogger("ics2gw.journal")

T = TypeVar("T")
_STOP = object()


@dataclass
class _Item(Generic[T]):
    fn: Callable[[Journal], T]
    future: concurrent.futures.Future[T]


@dataclass
class WriterStats:
    """Counters for benchmarks and the health endpoint: ``changes / commits`` is changes per fsync."""
    submitted: int = 0
    changes: int = 0           # submissions that committed
    failed: int = 0            # submissions whose caller got an exception
    batches: int = 0
    commits: int = 0           # successful COMMITs issued by the writer (one WAL fsync each)
    fallbacks: int = 0         # batches whose COMMIT failed and were rerun one by one
    retries: int = 0           # batches run again after the database was unavailable before COMMIT
    max_batch_seen: int = 0

    @property
    def changes_per_commit(self) -> float:
        return self.changes / self.commits if self.commits else 0.0


class JournalWriter:
    """The group committer. ``await writer.submit(lambda j: j.transition(...))`` returns fn's result, durable.

    Use as ``async with JournalWriter(journal) as writer:`` or call ``start()`` / ``await close()``. Synchronous
    code (threads, the crash test) can use ``submit_threadsafe`` which returns a ``concurrent.futures.Future``.
    While a writer runs, all writes of the process go through it: a direct write call from another thread would
    wait for the writer's lock (reads can use a separate ``open_reader`` connection).
    """

    def __init__(self, journal: Journal, *, max_batch: int = 256, max_delay_ms: float = 0.0,
                 name: str = "journal-writer", unavailable_budget: float = 300.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.journal = journal
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self.stats = WriterStats()
        self.unavailable_budget = unavailable_budget
        self.unavailable_since: float | None = None   # monotonic; set while the database is away (health)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> JournalWriter:
        self._thread.start()
        return self

    async def close(self) -> None:
        """Finishes everything already submitted, then stops the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    def close_sync(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    async def __aenter__(self) -> JournalWriter:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- submitting ---------------------------------------------------------------------------------------------------
    def submit_threadsafe(self, fn: Callable[[Journal], T]) -> concurrent.futures.Future[T]:
        if self._closed:
            raise RuntimeError("the journal writer is closed")
        if not self._thread.is_alive() and self._thread.ident is None:
            raise RuntimeError("the journal writer is not started (call start() or use 'async with')")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.stats.submitted += 1
        self._queue.put(_Item(fn, fut))
        return fut

    async def submit(self, fn: Callable[[Journal], T]) -> T:
        """Runs ``fn(journal)`` in the next batch; returns its result once the batch is committed (durable)."""
        return await asyncio.wrap_future(self.submit_threadsafe(fn))

    # -- the writer thread ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Item[Any]] = [first]
            deadline = time.monotonic() + self.max_delay
            while len(batch) < self.max_batch:
                try:
                    remaining = deadline - time.monotonic()
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Item[Any]]) -> None:
        live = [it for it in batch if it.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.stats.batches += 1
        self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(live))
        delay, deadline = 0.05, time.monotonic() + self.unavailable_budget
        while True:
            try:
                outcomes = self._attempt(live)
            except JournalUnavailable as exc:
                if exc.before_commit and time.monotonic() < deadline:
                    self._unavailable(delay, exc)
                    delay = min(delay * 2, 2.0)
                    continue
                self._available()
                for it in live:
                    self._resolve(it, False, exc)
                return
            except Exception:  # noqa: BLE001 - the COMMIT failed: nothing of the batch is durable
                self._available()
                self.stats.fallbacks += 1
                self._one_by_one(live)
                return
            break
        self._available()
        self.stats.commits += 1
        for it, (ok, value) in zip(live, outcomes):
            self._resolve(it, ok, value)

    def _attempt(self, live: list[_Item[Any]]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        with self.journal.transaction():
            for it in live:
                try:
                    with self.journal.transaction():  # a SAVEPOINT: a failure is rolled back alone
                        outcomes.append((True, it.fn(self.journal)))
                except JournalUnavailable:
                    raise                         # the whole transaction is lost: run the batch again
                except Exception as exc:  # noqa: BLE001 - handed to its caller
                    outcomes.append((False, exc))
        return outcomes

    def _unavailable(self, delay: float, exc: BaseException) -> None:
        if self.unavailable_since is None:
            self.unavailable_since = time.monotonic()
            log.warning("journal unavailable: the database does not answer, waiting for it (writes retried for up "
                        "to %.0f s, new API submissions answered 503) error=%s", self.unavailable_budget, exc)
        self.stats.retries += 1
        time.sleep(delay)

    def _available(self) -> None:
        """The database answered (or the wait ended): the end of an unavailability episode, logged once."""
        if self.unavailable_since is not None:
            log.warning("journal available again after %.1f s", time.monotonic() - self.unavailable_since)
            self.unavailable_since = None

    def _one_by_one(self, items: list[_Item[Any]]) -> None:
        for it in items:
            delay, deadline = 0.05, time.monotonic() + self.unavailable_budget
            while True:
                try:
                    with self.journal.transaction():
                        value = it.fn(self.journal)
                except JournalUnavailable as exc:
                    if exc.before_commit and time.monotonic() < deadline:
                        self._unavailable(delay, exc)
                        delay = min(delay * 2, 2.0)
                        continue
                    self._resolve(it, False, exc)
                    break
                except Exception as exc:  # noqa: BLE001
                    self._resolve(it, False, exc)
                    break
                self.stats.commits += 1
                self._resolve(it, True, value)
                break
            self._available()

    def _resolve(self, it: _Item[Any], ok: bool, value: Any) -> None:
        if ok:
            self.stats.changes += 1
            it.future.set_result(value)
        else:
            self.stats.failed += 1
            it.future.set_exception(value)
