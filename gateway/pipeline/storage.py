"""Telling "the disk is full / read-only / failing" apart from every other error.

Why: a storage failure is the machine's condition, not the input's fault. A valid ENS that could not be
journaled because the disk is full must stay where it is and be retried when space returns, never be moved to
the rejected folder as if it were malformed; the API must answer 503 naming the storage (the ERP retries), not
500. Every caller that can meet such an error asks ``storage_problem`` and acts on the answer.

SQLite reports these conditions as ``sqlite3.OperationalError`` with an extended error name (Python 3.11+);
the file system as ``OSError`` with an errno.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.journal.errors import JournalUnavailable

log = logging.getLogger("ics2gw.storage")

# errno -> the condition the operator has to fix
_OS = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EROFS: "read-only", errno.EACCES: "read-only",
       errno.EPERM: "read-only", errno.EIO: "io-error"}


def storage_problem(exc: BaseException) -> str | None:
    """``"full"``, ``"read-only"``, ``"io-error"``, ``"unavailable"`` (a journal database that does not answer)
    when ``exc`` (or its cause) is a storage condition, else None."""
    found = storage_cause(exc)
    return None if found is None else found[0]


def storage_cause(exc: BaseException) -> tuple[str, BaseException] | None:
    """(condition, the exception in ``exc``'s chain that shows it): what to report. SQLite's full disk, for one,
    often surfaces as a later error (a savepoint the failed statement already rolled back) whose context it is."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        seen += 1
        condition = _condition(cur)
        if condition is not None:
            return condition, cur
        cur = cur.__cause__ or cur.__context__
    return None


def _condition(cur: BaseException) -> str | None:
    if isinstance(cur, StorageUnavailable):
        return cur.condition
    if isinstance(cur, JournalUnavailable):     # the journal database does not answer (restart, failover)
        return "unavailable"
    if isinstance(cur, sqlite3.Error):
        name = getattr(cur, "sqlite_errorname", "") or ""
        text = str(cur).lower()
        if name.startswith("SQLITE_FULL") or "disk is full" in text:
            return "full"
        if name.startswith("SQLITE_READONLY") or "readonly database" in text or "read-only" in text:
            return "read-only"
        if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) or "disk i/o error" in text \
                or "unable to open database" in text:
            return "io-error"
    if isinstance(cur, OSError) and cur.errno in _OS:
        return _OS[cur.errno]
    return None


@dataclass
class StorageUnavailable(Exception):
    """A storage area (``journal``, ``spool``, ``inbox`` ...) cannot be written; names it and the condition."""
    storage: str
    path: str
    condition: str
    detail: str

    def __str__(self) -> str:
        return f"{self.storage} storage at {self.path} is unavailable ({self.condition}): {self.detail}"

    def to_dict(self) -> dict[str, str]:
        return {"error": "storage-unavailable", "storage": self.storage, "path": self.path,
                "condition": self.condition, "message": str(self)}


def as_storage_error(exc: BaseException, storage: str, path: object) -> StorageUnavailable | None:
    """``exc`` as a ``StorageUnavailable`` for ``storage`` when it is a storage condition, else None."""
    condition = storage_problem(exc)
    if condition is None:
        return None
    if isinstance(exc, StorageUnavailable):
        return exc
    return StorageUnavailable(storage, str(path), condition, f"{type(exc).__name__}: {exc}")


class StorageWatch:
    """Called with each outcome of a storage-using step (the exception, or None on success): raises the
    ``storage-unavailable`` alert once when a storage condition starts, logs when it ends. Other errors are
    the caller's to report."""

    def __init__(self, alert: Callable[..., None], storage: str, path: object, where: str) -> None:
        self.alert, self.storage, self.path, self.where = alert, storage, path, where
        self.condition: str | None = None

    def __call__(self, exc: BaseException | None) -> None:
        if exc is None:
            if self.condition is not None:
                log.warning("storage available again storage=%s where=%s after=%s", self.storage, self.where,
                            self.condition)
                self.condition = None
            return
        err = as_storage_error(exc, self.storage, self.path)
        if err is None or self.condition is not None:
            return
        self.condition = err.condition
        detail: dict[str, Any] = {"storage": err.storage, "path": err.path, "condition": err.condition,
                                  "error": err.detail, "where": self.where}
        self.alert("storage-unavailable", **detail)
