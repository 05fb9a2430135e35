"""Opening a journal from ``[journal]``: the one place that knows which backend class serves which setting.

The daemon, the CLI, ``doctor`` and the tests all come through here, so "open for the daemon", "open read-only",
"migrate" and "check" mean the same on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from gateway.journal.config import JournalConfig
from gateway.journal.errors import JournalError


def open_journal(jcfg: JournalConfig, *, daemon: bool = True, instance: str | None = None,
                 now: datetime | None = None, migrate: bool = True) -> Any:
    """The writing journal. SQLite: ``daemon=True`` takes the ``.lock`` file and recovers a dead predecessor's
    in-flight sends. PostgreSQL: a connection pool; nothing is recovered at open, because other instances' sends are
    live (a dead instance's claims return to the queue when their lease expires)."""
    if jcfg.backend == "sqlite":
        from gateway.journal.sqlite import SqliteJournal
        return SqliteJournal.open(jcfg.path, busy_timeout_ms=jcfg.busy_timeout_ms, daemon=daemon, now=now)
    from gateway.journal.postgres import PostgresJournal
    return PostgresJournal.open(jcfg, instance=instance, now=now, migrate=migrate)


def open_reader(jcfg: JournalConfig) -> Any:
    """A read-only journal (status, CLI readers, the daemon's reader): sees committed data, never writes."""
    if jcfg.backend == "sqlite":
        from gateway.journal.sqlite import SqliteJournal
        return SqliteJournal.open_reader(jcfg.path, busy_timeout_ms=jcfg.busy_timeout_ms)
    from gateway.journal.postgres import PostgresJournal
    return PostgresJournal.open_reader(jcfg)


def schema_version(jcfg: JournalConfig) -> int:
    """The journal's schema version (0: no journal yet), without creating or changing anything."""
    if jcfg.backend == "sqlite":
        import sqlite3
        if not jcfg.path.exists():
            return 0
        conn = sqlite3.connect(f"{jcfg.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    from gateway.journal.postgres import pg_schema_version
    return pg_schema_version(jcfg)


def migrate_journal(jcfg: JournalConfig, *, now: datetime | None = None) -> tuple[int, int]:
    """Creates or upgrades the schema; (version before, version after). Safe when several instances run it at
    once (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory transaction lock around the migration)."""
    before = schema_version(jcfg)
    if jcfg.backend == "sqlite":
        open_journal(jcfg, daemon=False, now=now).close()
    else:
        from gateway.journal.postgres import pg_migrate
        pg_migrate(jcfg, now=now)
    return before, schema_version(jcfg)


def journal_checks(jcfg: JournalConfig) -> list[tuple[str, bool, str]]:
    """What ``ics2gw doctor`` reports about the journal: (check, ok, detail) for connectivity, schema version and
    permissions. Never raises for a journal problem: a failed check is the answer."""
    from gateway.journal import schema
    out: list[tuple[str, bool, str]] = []
    name = jcfg.describe()
    if jcfg.backend == "postgresql":
        from gateway.journal.postgres import pg_checks
        return pg_checks(jcfg)
    folder = jcfg.path.parent
    if not jcfg.path.exists():
        out.append(("journal reachable", False, f"{name}: no journal file yet (run `ics2gw journal init`)"))
        return out
    try:
        version = schema_version(jcfg)
        out.append(("journal reachable", True, name))
    except Exception as exc:  # a corrupt or foreign file
        out.append(("journal reachable", False, f"{name}: {exc}"))
        return out
    out.append(("journal schema", version == schema.LATEST,
                f"version {version}, this ics2gw uses {schema.LATEST}" + (
                    "" if version == schema.LATEST else " (run `ics2gw journal migrate`)")))
    writable = os.access(folder, os.W_OK) and os.access(jcfg.path, os.W_OK)
    out.append(("journal permissions", writable,
                "file and folder writable" if writable else f"{folder} or {jcfg.path.name} is not writable"))
    return out


__all__ = ["JournalError", "journal_checks", "migrate_journal", "open_journal", "open_reader", "schema_version"]
