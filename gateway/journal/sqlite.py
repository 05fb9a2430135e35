"""``SqliteJournal``: the ``Journal`` protocol on one SQLite file in WAL mode.

Durability settings, and why:
- ``journal_mode=WAL``: readers (``ics2gw status``, ``journal list``) read a consistent snapshot while the daemon
  writes, and a commit appends to the WAL instead of rewriting pages.
- ``synchronous=FULL``: in WAL mode NORMAL only fsyncs at checkpoints, so after a power cut the last commits may
  vanish. We acknowledge an ENS to the ERP, and return a signed Receipt to customs, only after the commit; a
  commit that can vanish would turn those acknowledgements into lies (a filing lost, or a business reply
  receipted but never processed). FULL fsyncs the WAL at every commit; group commit (``JournalWriter``) keeps
  that affordable by committing many changes per fsync.
- ``busy_timeout``: a CLI write or a checkpoint briefly holding the lock makes others wait instead of failing.
- ``foreign_keys=ON``: evidence rows cannot point at filings that do not exist.

One write connection per process, guarded by a lock; every write method runs in ``BEGIN IMMEDIATE`` (the write
lock is taken up front, so no transaction fails half-way on a lock upgrade) or, inside a batch, in a SAVEPOINT.
Read-only connections (``open_reader``) use ``mode=ro`` and never block the writer.
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.journal import schema
from gateway.journal.core import JournalCore
from gateway.journal.errors import JournalError, JournalLocked, NotFound, ReadOnlyJournal
from gateway.journal.timeutil import iso, utcnow


class ProcessSingleton:
    """``Journal.singleton`` on SQLite: always held. The journal's ``.lock`` file already makes the daemon the only
    process that writes this journal, so every singleton task (pull loop, timers, outbox) is trivially its own."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._held = False

    def try_acquire(self) -> bool:
        self._held = True
        return True

    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        self._held = False


class SqliteJournal(JournalCore):
    """The SQLite implementation of ``gateway.journal.interface.Journal``. Open with ``open`` or ``open_reader``."""

    backend = "sqlite"
    _IntegrityError = sqlite3.IntegrityError

    def __init__(self, conn: sqlite3.Connection, *, path: Path, readonly: bool, lock_fd: int | None = None) -> None:
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self._lock_fd = lock_fd
        self._lock = threading.RLock()
        self._depth = 0
        self.commits = 0          # COMMITs that wrote (each one WAL fsync with synchronous=FULL)
        self.rollbacks = 0
        self.recovered_at_open = 0

    # ------------------------------------------------------------------------------------------------------------
    # opening
    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str, *, busy_timeout_ms: int = 5000, daemon: bool = True,
             now: datetime | None = None) -> SqliteJournal:
        """Opens (creating and migrating if needed) the journal for writing.

        ``daemon=True`` (the gateway daemon) takes an exclusive lock on ``<path>.lock`` and returns every message
        left in ``sending`` by a dead predecessor to ``queued``. Why the lock: recovery assumes no live worker holds
        a claim; a second daemon, or a CLI command recovering at open, would resend messages still in flight.
        ``daemon=False`` (CLI write commands such as ``resend``) neither locks nor recovers.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = cls._take_daemon_lock(path) if daemon else None
        try:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                   timeout=busy_timeout_ms / 1000)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.close()
                raise JournalError(f"{path}: cannot switch the journal to WAL mode (got {mode!r}); is it on a "
                                   "network file system? Put the journal on a local disk")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            now = now or utcnow()
            schema.migrate(conn, now_iso=iso(now), path=str(path))
            journal = cls(conn, path=path, readonly=False, lock_fd=lock_fd)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        if daemon:
            journal.recovered_at_open = journal.recover_in_flight(now=now)
        return journal

    @classmethod
    def open_reader(cls, path: Path | str, *, busy_timeout_ms: int = 5000) -> SqliteJournal:
        """A read-only connection for CLI readers: sees committed data only, never blocks or disturbs the daemon."""
        path = Path(path)
        if not path.exists():
            raise NotFound(f"{path}: no journal here (the daemon creates it on first start; check [journal] path)")
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False, timeout=busy_timeout_ms / 1000)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA query_only = ON")
        version = schema.current_version(conn)
        if version != schema.LATEST:
            conn.close()
            raise JournalError(f"{path}: schema version {version}, this ics2gw reads version {schema.LATEST}; "
                               "start the daemon of this version once to migrate it")
        return cls(conn, path=path, readonly=True)

    @staticmethod
    def _take_daemon_lock(path: Path) -> int:
        lock_path = path.with_name(path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise JournalLocked(f"{path}: another gateway daemon uses this journal (pid {holder or '?'}, lock file "
                                f"{lock_path}); stop it first, or open without daemon=True for CLI commands") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> SqliteJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def singleton(self, name: str) -> ProcessSingleton:
        return ProcessSingleton(name)

    def queries(self) -> Any:
        """The operations read side (``JournalQueries``) over its own read-only connection."""
        from gateway.journal.queries import JournalQueries
        return JournalQueries(self.path)

    def pragma(self, name: str) -> Any:
        """Reads a PRAGMA (tests and ``ics2gw doctor`` check journal_mode, synchronous, user_version)."""
        if not re.fullmatch(r"[a-z_]+", name):
            raise ValueError(f"not a pragma name: {name!r}")
        with self._lock:
            return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    # ------------------------------------------------------------------------------------------------------------
    # transactions
    # ------------------------------------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit: BEGIN IMMEDIATE..COMMIT at top level, a SAVEPOINT when nested.

        Nested use is what group commit relies on: the writer opens the batch transaction, each submission runs
        in its own savepoint (a failing one is rolled back alone), and one COMMIT makes them all durable.
        """
        if self.readonly:
            raise ReadOnlyJournal(f"{self.path}: opened read-only (open_reader); writes go through the daemon")
        with self._lock:
            if self._depth == 0:
                self._conn.execute("BEGIN IMMEDIATE")
                self._depth = 1
                try:
                    yield
                except BaseException:
                    self._depth = 0
                    self._rollback()
                    raise
                self._depth = 0
                try:
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
                self.commits += 1
            else:
                name = f"sp{self._depth}"
                self._conn.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield
                except BaseException:
                    self._depth -= 1
                    self._conn.execute(f"ROLLBACK TO {name}")
                    self._conn.execute(f"RELEASE {name}")
                    raise
                self._depth -= 1
                self._conn.execute(f"RELEASE {name}")

    def _x(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def _is_unique_violation(self, exc: BaseException) -> bool:
        return "UNIQUE" in str(exc)

    def _rollback(self) -> None:
        self.rollbacks += 1
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    @contextmanager
    def _read_snapshot(self) -> Iterator[None]:
        """Several SELECTs that must see the same state: a read transaction unless already inside one."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            self._conn.execute("COMMIT" if not self.readonly else "ROLLBACK")

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: "ok" or the first problems (``ics2gw doctor``, crash tests)."""
        return str(self._one("PRAGMA integrity_check")[0])  # type: ignore[index]
