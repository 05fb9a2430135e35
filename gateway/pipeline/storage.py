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
import sqlite3
from dataclasses import dataclass

# errno -> the condition the operator has to fix
_OS = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EROFS: "read-only", errno.EACCES: "read-only",
       errno.EPERM: "read-only", errno.EIO: "io-error"}


def storage_problem(exc: BaseException) -> str | None:
    """``"full"``, ``"read-only"``, ``"io-error"`` when ``exc`` (or its cause) is a storage condition, else None."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        seen += 1
        if isinstance(cur, StorageUnavailable):
            return cur.condition
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
        cur = cur.__cause__ or cur.__context__
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
