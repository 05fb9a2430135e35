"""``PostgresJournal``: the ``Journal`` protocol on PostgreSQL, shared active-active by several gateway instances.

What differs from SQLite, and why (the meaning of every method is ``JournalCore``'s):
- **Connections**: a ``psycopg_pool.ConnectionPool`` of autocommit connections. A top-level ``transaction()``
  borrows one connection for the calling thread and runs ``BEGIN .. COMMIT`` on it; nested use is a SAVEPOINT on
  the same connection (group commit). A statement outside a transaction borrows a connection for that statement.
  The pool checks a connection before lending it, so a database restart or a failover costs the transactions that
  were running, not the process: they fail with ``JournalUnavailable`` (the group-commit writer runs them again).
- **Why the synchronous pool, not ``AsyncConnectionPool``**: the ``Journal`` protocol is synchronous and runs on the
  group-commit writer thread and in ``asyncio.to_thread``, never on the event loop; an async backend would change
  every caller's shape (the issue: "nothing in the pipeline above the interface changes shape") for no gain.
- **Claims** use ``FOR UPDATE SKIP LOCKED``: instances claiming at once never wait on, nor take, each other's rows,
  and each still takes the most urgent lane first. A claim is a lease; a dead instance's claims return to the queue
  when the lease expires (``renew_claims`` keeps a live sender's). Nothing is recovered at open.
- **Same key at once**: ``_lock_key`` takes ``pg_advisory_xact_lock`` on a hash of the key (two instances receiving
  the same inbound message), behind the unique constraints that guarantee it anyway.
- **Event order for the outbox**: identity values are handed out at INSERT, not at COMMIT, so an event with a lower
  id can become visible after a higher one. ``events_after`` therefore reads only up to a horizon below which every
  event is committed: it takes ``LOCK TABLE events IN SHARE MODE`` for an instant (waiting for transactions that
  inserted events to end, and holding new inserts back meanwhile) and reads ``max(id)``. An outbox cursor never
  skips an event that commits late.
- **Singletons** (pull loop, timers, pollers, outbox): ``pg_try_advisory_lock`` held by a dedicated connection per
  lock; the lock ends with that session, so when its holder dies (or loses the database) another instance takes it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool

from gateway.journal import schema_pg
from gateway.journal.core import JournalCore
from gateway.journal.errors import JournalError, JournalUnavailable, ReadOnlyJournal, SchemaTooNew
from gateway.journal.records import Event
from gateway.journal.timeutil import iso, utcnow

_MIGRATION_LOCK = "ics2gw:journal:migrate"


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_*`` from a name (collisions: 2^-64 per pair)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


@lru_cache(maxsize=4096)
def _pg_sql(sql: str) -> str:
    """The core's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgRow:
    """A row readable by position and by column name, like ``sqlite3.Row`` (what ``JournalCore`` expects)."""

    __slots__ = ("_index", "_names", "_values")

    def __init__(self, names: tuple[str, ...], index: dict[str, int], values: Sequence[Any]) -> None:
        self._names, self._index, self._values = names, index, values

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, int):
            return self._values[key]
        return self._values[self._index[key]]

    def keys(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)


def _row_factory(cursor: Any) -> Any:
    desc = cursor.description
    if desc is None:
        return tuple
    names = tuple(d.name for d in desc)
    index = {n: i for i, n in enumerate(names)}
    return lambda values: PgRow(names, index, values)


class _Result:
    """A statement's rows, fetched at once: the connection may go back to the pool before the caller reads them."""

    def __init__(self, cur: Any) -> None:
        self.rowcount = cur.rowcount
        self._rows = list(cur.fetchall()) if cur.description is not None else []
        self._pos = 0

    def fetchone(self) -> Any:
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchall(self) -> list[Any]:
        rest = self._rows[self._pos:]
        self._pos = len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


def _unavailable(exc: BaseException, *, before_commit: bool = True) -> JournalUnavailable:
    kind = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
    return JournalUnavailable(f"database unavailable ({kind}): {text}", before_commit=before_commit)


class PgSingleton:
    """``Journal.singleton`` on PostgreSQL: a session advisory lock held by a connection of its own."""

    def __init__(self, conninfo: str, name: str) -> None:
        self.name = name
        self._conninfo = conninfo
        self._key = advisory_key(f"ics2gw:singleton:{name}")
        self._conn: psycopg.Connection[Any] | None = None
        self._mutex = threading.Lock()

    def try_acquire(self) -> bool:
        with self._mutex:
            if self._conn is not None and self._alive():
                return True
            self._drop()
            try:
                # the liveness check must answer quickly or not at all: a stalled check would stall failover
                conn = psycopg.connect(self._conninfo, autocommit=True, options="-c statement_timeout=5000")
            except psycopg.Error:
                return False
            try:
                got = bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()[0])  # type: ignore[index]
            except psycopg.Error:
                conn.close()
                return False
            if not got:
                conn.close()
                return False
            self._conn = conn
            return True

    def _alive(self) -> bool:
        assert self._conn is not None
        try:
            self._conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def held(self) -> bool:
        """True while the session holding the lock lives; False once it (or the database) went away."""
        with self._mutex:
            if self._conn is None:
                return False
            if self._alive():
                return True
            self._drop()
            return False

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def release(self) -> None:
        with self._mutex:
            if self._conn is not None:
                try:
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
                except psycopg.Error:
                    pass
            self._drop()


class PostgresJournal(JournalCore):
    """The PostgreSQL implementation of ``Journal``. Open with ``open`` (writer) or ``open_reader``."""

    backend = "postgresql"
    _SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    _FOR_UPDATE = " FOR UPDATE"
    _GREATEST = "GREATEST"
    _IntegrityError = psycopg.IntegrityError

    def __init__(self, pool: ConnectionPool, *, conninfo: str, description: str, readonly: bool,
                 instance: str | None = None) -> None:
        self._pool = pool
        self._conninfo = conninfo
        self._description = description
        self.readonly = readonly
        self.instance = instance
        self._tls = threading.local()
        self._lock = nullcontext()     # connections are per thread: nothing shared to guard
        self._singletons: list[PgSingleton] = []
        self.commits = 0
        self.rollbacks = 0
        self.recovered_at_open = 0
        self.path = None

    # ------------------------------------------------------------------------------------------------------------
    # opening
    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def _pool_for(cls, conninfo: str, *, size: int, timeout: float, readonly: bool, name: str) -> ConnectionPool:
        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.row_factory = _row_factory  # type: ignore[assignment]
            if readonly:
                conn.execute("SET default_transaction_read_only = on")

        pool = ConnectionPool(conninfo, min_size=1, max_size=max(1, size), open=False, timeout=timeout,
                              kwargs={"autocommit": True}, configure=configure, name=name,
                              check=ConnectionPool.check_connection, reconnect_timeout=24 * 3600.0)
        try:
            pool.open(wait=True, timeout=timeout)
        except Exception as exc:
            pool.close()
            # the pool only says "pool initialization incomplete after N sec": one direct attempt names the cause
            # (refused, unknown host, password authentication failed, TLS) for the operator
            cause = _first_line(exc)
            try:
                psycopg.connect(conninfo).close()
            except psycopg.Error as direct:
                cause = _first_line(direct)
            raise JournalUnavailable(f"cannot connect to the journal database: {cause}") from None
        return pool

    @classmethod
    def open(cls, jcfg: Any, *, instance: str | None = None, now: datetime | None = None,
             migrate: bool = True) -> PostgresJournal:
        """The writing journal of one instance: migrates (unless ``migrate=False``), then checks the version."""
        conninfo = jcfg.conninfo()
        if migrate:
            pg_migrate(jcfg, now=now)
        pool = cls._pool_for(conninfo, size=jcfg.pool_size, timeout=jcfg.connect_timeout_seconds, readonly=False,
                             name="ics2gw-journal")
        journal = cls(pool, conninfo=conninfo, description=jcfg.describe(), readonly=False, instance=instance)
        journal._check_version()
        return journal

    @classmethod
    def open_reader(cls, jcfg: Any) -> PostgresJournal:
        conninfo = jcfg.conninfo()
        pool = cls._pool_for(conninfo, size=max(2, jcfg.pool_size // 2), timeout=jcfg.connect_timeout_seconds,
                             readonly=True, name="ics2gw-journal-reader")
        journal = cls(pool, conninfo=conninfo, description=jcfg.describe(), readonly=True)
        journal._check_version()
        return journal

    def _check_version(self) -> None:
        version = self.schema_version()
        if version == schema_pg.LATEST:
            return
        self.close()
        if version > schema_pg.LATEST:
            raise SchemaTooNew(f"{self._description}: schema version {version} is newer than this ics2gw knows "
                               f"({schema_pg.LATEST}); upgrade ics2gw")
        raise JournalError(f"{self._description}: schema version {version}, this ics2gw uses {schema_pg.LATEST}; "
                           "run `ics2gw journal migrate` (or start with --init-journal)")

    def schema_version(self) -> int:
        if self._x("SELECT to_regclass('schema_migrations') IS NULL").fetchone()[0]:
            return 0
        return int(self._x("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])

    def close(self) -> None:
        for s in self._singletons:
            s.release()
        self._singletons.clear()
        self._pool.close()

    def __enter__(self) -> PostgresJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return self._description

    def singleton(self, name: str) -> PgSingleton:
        lock = PgSingleton(self._conninfo, name)
        self._singletons.append(lock)
        return lock

    def queries(self) -> Any:
        from gateway.journal.queries import JournalQueries
        return JournalQueries(self)

    def integrity_check(self) -> str:
        """A sanity check for ``doctor`` and the crash tests: the schema's version and invariants the database
        does not enforce by itself (every message's filing exists, no filing in an unknown state)."""
        from gateway.journal.states import FILING_STATES
        if self.schema_version() != schema_pg.LATEST:
            return f"schema version {self.schema_version()} (expected {schema_pg.LATEST})"
        marks = ", ".join("?" * len(FILING_STATES))
        bad = self._x(f"SELECT COUNT(*) FROM filings WHERE state NOT IN ({marks})", tuple(FILING_STATES)).fetchone()
        if bad[0]:
            return f"{bad[0]} filings in an unknown state"
        return "ok"

    # ------------------------------------------------------------------------------------------------------------
    # connections and transactions
    # ------------------------------------------------------------------------------------------------------------
    def _current(self) -> psycopg.Connection[Any] | None:
        return getattr(self._tls, "conn", None)

    def _x(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> _Result:
        conn = self._current()
        try:
            if conn is not None:
                return _Result(conn.execute(_pg_sql(sql), params))  # type: ignore[arg-type]
            with self._pool.connection() as c:
                return _Result(c.execute(_pg_sql(sql), params))  # type: ignore[arg-type]
        except psycopg.OperationalError as exc:   # connection lost, deadlock, serialization, lock timeout, pool
            raise _unavailable(exc) from exc

    def _is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.UniqueViolation)

    def _lock_key(self, key: str) -> None:
        self._x("SELECT pg_advisory_xact_lock(?)", (advisory_key(f"ics2gw:key:{key}"),))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN..COMMIT on a connection of the pool at top level, a SAVEPOINT when nested (group commit)."""
        if self.readonly:
            raise ReadOnlyJournal(f"{self._description}: opened read-only; writes go through the daemon")
        conn = self._current()
        if conn is not None:
            try:
                with conn.transaction():   # a SAVEPOINT; a failure rolls back this unit only
                    yield
            except psycopg.OperationalError as exc:   # the connection died at SAVEPOINT / RELEASE: the whole batch
                raise _unavailable(exc) from exc      # is lost, and the group-commit writer runs it again
            return
        committing = False
        try:
            with self._pool.connection() as conn:
                self._tls.conn = conn
                try:
                    tx = conn.transaction()
                    tx.__enter__()
                    try:
                        yield
                    except BaseException as exc:
                        self.rollbacks += 1
                        try:
                            tx.__exit__(type(exc), exc, exc.__traceback__)
                        except psycopg.Error:
                            pass           # the connection is gone; the transaction died with it
                        raise
                    committing = True
                    tx.__exit__(None, None, None)
                    self.commits += 1
                finally:
                    self._tls.conn = None
        except psycopg.OperationalError as exc:
            # before COMMIT: nothing happened, the unit may run again; during COMMIT: unknown outcome
            raise _unavailable(exc, before_commit=not committing) from exc

    @contextmanager
    def _read_snapshot(self) -> Iterator[None]:
        """Several SELECTs that must see one state: a REPEATABLE READ, READ ONLY transaction."""
        if self._current() is not None:
            yield
            return
        try:
            with self._pool.connection() as conn:
                self._tls.conn = conn
                try:
                    with conn.transaction():
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                        yield
                finally:
                    self._tls.conn = None
        except psycopg.OperationalError as exc:
            raise _unavailable(exc) from exc

    # ------------------------------------------------------------------------------------------------------------
    # the event outbox in commit order
    # ------------------------------------------------------------------------------------------------------------
    def event_horizon(self, *, lock_timeout_ms: int = 5000) -> int:
        """The highest event id below which every event is committed (see the module doc)."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION READ WRITE")   # SHARE locks are refused in read-only transactions
                conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
                conn.execute("LOCK TABLE events IN SHARE MODE")
                row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
                return int(row[0])  # type: ignore[index]
        except psycopg.OperationalError as exc:
            raise _unavailable(exc) from exc

    def events_after(self, after_id: int, *, limit: int = 500) -> list[Event]:
        import json
        horizon = self.event_horizon()
        return [Event(id=r["id"], at=r["at"], filing_id=r["filing_id"], message_id=r["message_id"],
                      event=r["event"], detail=json.loads(r["detail"]))
                for r in self._all("SELECT * FROM events WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                                   (int(after_id), horizon, int(limit)))]

    def last_event_id(self) -> int:
        return self.event_horizon()

    def recover_in_flight(self, *, now: datetime) -> int:
        """Not at open on PostgreSQL (other instances' sends are live): only messages whose lease has expired
        are returned to the queue, as a claim would take them over anyway."""
        ts = iso(now)
        with self.transaction():
            rows = self._x("SELECT id, message_id, filing_id, claimed_by FROM messages WHERE direction = 'out' AND "
                           "state = 'sending' AND claim_expires_at <= ? FOR UPDATE SKIP LOCKED", (ts,)).fetchall()
            for r in rows:
                self._x("UPDATE messages SET state = 'queued', next_attempt_at = ?, claimed_by = NULL, "
                        "claim_expires_at = NULL, updated_at = ? WHERE id = ?", (ts, ts, r["id"]))
                self._event("message-recovered", ts, r["filing_id"], r["message_id"],
                            {"was_claimed_by": r["claimed_by"], "lease_expired": True})
        return len(rows)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------------------------
# migrations, version and checks (used by the factory, `ics2gw journal migrate` and `doctor`)
# ----------------------------------------------------------------------------------------------------------------
def _connect(jcfg: Any) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(jcfg.conninfo(), autocommit=True)
    except psycopg.Error as exc:
        raise JournalUnavailable(f"{jcfg.describe()}: cannot connect: {_first_line(exc)}") from None


def _version(conn: psycopg.Connection[Any]) -> int:
    if conn.execute("SELECT to_regclass('schema_migrations') IS NULL").fetchone()[0]:  # type: ignore[index]
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])  # type: ignore[index]


def pg_schema_version(jcfg: Any) -> int:
    with _connect(jcfg) as conn:
        return _version(conn)


def pg_migrate(jcfg: Any, *, now: datetime | None = None) -> list[int]:
    """Brings the schema to ``schema_pg.LATEST`` in one transaction. Several instances starting at once: the
    advisory transaction lock lets one migrate while the others wait, then find nothing left to do."""
    applied: list[int] = []
    with _connect(jcfg) as conn:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(_MIGRATION_LOCK),))
                conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                             "description TEXT NOT NULL, applied_at TEXT NOT NULL)")
                version = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                              .fetchone()[0])  # type: ignore[index]
                if version > schema_pg.LATEST:
                    raise SchemaTooNew(f"{jcfg.describe()}: schema version {version} is newer than this ics2gw "
                                       f"knows ({schema_pg.LATEST}); upgrade ics2gw")
                for number, description, sql in schema_pg.MIGRATIONS:
                    if number <= version:
                        continue
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (version, description, applied_at) "
                                 "VALUES (%s, %s, %s)", (number, description, iso(now or utcnow())))
                    applied.append(number)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise JournalError(f"{jcfg.describe()}: the journal role may not create the schema: "
                               f"{_first_line(exc)} (grant CREATE on the database or schema, or run "
                               "`ics2gw journal migrate` as the owner)") from None
        except psycopg.OperationalError as exc:
            raise _unavailable(exc) from None
    return applied


def pg_checks(jcfg: Any) -> list[tuple[str, bool, str]]:
    """``doctor``: connectivity (with the server version and TLS in use), schema version, permissions."""
    out: list[tuple[str, bool, str]] = []
    name = jcfg.describe()
    try:
        conn = _connect(jcfg)
    except JournalError as exc:
        return [("journal reachable", False, str(exc))]
    with conn:
        info = conn.info
        tls = "TLS" if conn.pgconn.ssl_in_use else "no TLS"
        # the server's own version string ("15.18 (Debian 15.18-0+deb12u1)"): the minor release matters to operators
        out.append(("journal reachable", True, f"{name} (PostgreSQL {info.parameter_status('server_version')}, {tls})"))
        version = _version(conn)
        ok = version == schema_pg.LATEST
        out.append(("journal schema", ok, f"version {version}, this ics2gw uses {schema_pg.LATEST}" + (
            "" if ok else " (run `ics2gw journal migrate`)")))
        if version:
            # one privilege per call: with a list, has_table_privilege is true when ANY of them is held
            every = " AND ".join(f"has_table_privilege(%(t)s, '{p}')" for p in ("SELECT", "INSERT", "UPDATE", "DELETE"))
            missing = [t for t in ("filings", "messages", "events", "inbound_dedup", "outbox_cursors")
                       if not conn.execute(f"SELECT {every}", {"t": t}).fetchone()[0]]  # type: ignore[index]
            out.append(("journal permissions", not missing,
                        "read and write on every table" if not missing else
                        f"the role lacks SELECT/INSERT/UPDATE/DELETE on {', '.join(missing)}"))
        else:
            can = conn.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()[0]  # type: ignore[index]
            out.append(("journal permissions", bool(can), "may create the schema" if can else
                        "the role may not create the schema: run `ics2gw journal migrate` as the owner"))
    return out
