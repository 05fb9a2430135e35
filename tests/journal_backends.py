"""Both journal backends behind one fixture: the journal's meaning is tested once and run on SQLite and PostgreSQL.

PostgreSQL comes from the ``pg_dsn`` fixture (a fresh database on the test run's private server,
tests/pg_support.py); where no PostgreSQL can be started those cases are skipped and listed loudly at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Section
from gateway.journal.config import JournalConfig, read_journal_config

BACKENDS = ["sqlite", "postgresql"]


def pg_config(dsn: str, password: str | None, **extra: Any) -> JournalConfig:
    """A ``[journal]`` for the private server's database (the password handed over as ``password_env`` is)."""
    cfg = read_journal_config(Section({"backend": "postgresql", "dsn": dsn, **extra}, file=Path("/t/g.toml"),
                                      prefix="journal"))
    from dataclasses import replace
    return replace(cfg, password=password)


def journal_config(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> JournalConfig:
    if backend == "sqlite":
        return read_journal_config(Section({"path": str(tmp_path / "journal.sqlite3")}, file=tmp_path / "g.toml",
                                           prefix="journal"))
    pg = request.getfixturevalue("pg_dsn")
    return pg_config(str(pg), pg.password)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def jcfg(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> JournalConfig:
    return journal_config(request, backend, tmp_path)


@pytest.fixture
def open_any(jcfg: JournalConfig) -> Iterator[Callable[..., Any]]:
    """Opens (and closes at the end) more journals on the same backend and database: a second instance."""
    from gateway.journal.factory import open_journal
    opened: list[Any] = []

    def _open(now: datetime | None = None, **kw: Any) -> Any:
        j = open_journal(jcfg, now=now, **({"daemon": False} if jcfg.backend == "sqlite" else {}), **kw)
        opened.append(j)
        return j

    yield _open
    for j in opened:
        j.close()
