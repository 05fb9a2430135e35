"""PostgreSQL fixtures (imported by tests/conftest.py): one private server per test run (``pg_server``,
gateway/journal/pglocal.py) and a fresh empty database per test (``pg_dsn``), owned by the non-superuser role
``ics2gw`` with a password, so that tests exercise password authentication and ordinary permissions.

Without PostgreSQL the tests that use these fixtures are skipped with the reason, and the skip summary at the end of
the run lists them (tests/conftest.py). A server that is installed but fails to start is an error, not a skip.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest

from gateway.journal import pglocal
from gateway.journal.pglocal import LocalPostgres

ROLE = "ics2gw"
PASSWORD_ENV = "ICS2GW_JOURNAL_PASSWORD"     # the contract's example [journal] password_env
_counter = itertools.count(1)


class PgDsn(str):
    """The DSN of one test database (libpq conninfo, TCP 127.0.0.1, no password: the journal takes the password
    from ``password_env``), carrying what a test needs besides: ``password``, ``dbname``, ``user``, ``server`` and
    ``with_password`` (the DSN a plain psycopg.connect can use)."""

    password: str
    dbname: str
    user: str
    server: LocalPostgres

    def __new__(cls, dsn: str, *, password: str, dbname: str, user: str, server: LocalPostgres) -> Self:
        self = super().__new__(cls, dsn)
        self.password, self.dbname, self.user, self.server = password, dbname, user, server
        return self

    @property
    def with_password(self) -> str:
        return self.server.dsn(self.dbname, self.user, self.password)

    @property
    def unix(self) -> str:
        """The same database over the server's Unix socket (with the password)."""
        return self.server.dsn(self.dbname, self.user, self.password, unix=True)

    def journal_table(self, *, password_env: str = PASSWORD_ENV) -> dict[str, Any]:
        """The ``[journal]`` keys of a gateway configuration for this database (the contract of issue 15); the
        caller puts ``{password_env: self.password}`` into the daemon's environment."""
        return {"backend": "postgresql", "dsn": str(self), "password_env": password_env}

    def env(self, *, password_env: str = PASSWORD_ENV) -> dict[str, str]:
        return {password_env: self.password}


# a JSON file (``LocalPostgres.describe()`` + ``role_password``) naming a running server to use instead of starting one:
# scripts/mutation.py starts one server for all the forked test runs of a mutation group
SHARED_ENV = "ICS2GW_TEST_PG_SHARED"


def _attach_shared(path: str) -> LocalPostgres:
    info = json.loads(Path(path).read_text("utf-8"))
    server = LocalPostgres.attach(info)
    if not server.running():        # a test that restarts or kills its server was interrupted: start it again
        server.start()
    server.role_password = info["role_password"]  # type: ignore[attr-defined]
    return server


def _start_server() -> LocalPostgres:
    reason = pglocal.available()
    if reason:
        pytest.skip(reason)
    if os.environ.get(SHARED_ENV):
        return _attach_shared(os.environ[SHARED_ENV])
    server = LocalPostgres()
    try:
        server.start()
    except Exception:
        server.close()
        raise
    server.role_password = secrets.token_urlsafe(12)  # type: ignore[attr-defined]
    server.create_role(ROLE, server.role_password)  # type: ignore[attr-defined]
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    """One private PostgreSQL server for the whole run (127.0.0.1, a free port, scram-sha-256, fsync on); the role
    ``ics2gw`` exists with the password in ``pg_server.role_password``."""
    server = _start_server()
    try:
        yield server
    finally:
        server.close()


def new_database(server: LocalPostgres, prefix: str = "t") -> PgDsn:
    """A fresh empty database owned by ``ics2gw`` (only it and superusers may connect)."""
    name = f"{prefix}_{os.getpid()}_{next(_counter)}_{secrets.token_hex(3)}"
    dsn = server.create_database(name, owner=ROLE)
    return PgDsn(dsn, password=server.role_password, dbname=name, user=ROLE,  # type: ignore[attr-defined]
                 server=server)


@pytest.fixture
def pg_dsn(pg_server: LocalPostgres) -> Iterator[PgDsn]:
    """A FRESH empty database per test, dropped afterwards (WITH (FORCE): sessions a test left open do not block)."""
    db = new_database(pg_server)
    try:
        yield db
    finally:
        if pg_server.running():
            pg_server.drop_database(db.dbname)
