"""``[journal]`` section of gateway.toml.

Why these knobs: ``group_commit_max_delay_ms`` makes the writer wait for more work after the first submission.
The default is 0 because batching happens by itself: while one batch's fsync runs, the next one accumulates
(measured: 32 concurrent producers gave 23 changes per fsync with 0 ms and 32 with 2 ms, at 30 % less
throughput, since every producer was already waiting). Raise it only for many producers on slow disks. Retention is a
legal matter (UCC Art. 51: customs records kept at least three years), so it is configurable but defaults to 3y.

``backend``: "sqlite" (one gateway process, the embedded default) or "postgresql" (several gateway processes, on one
host or several, share one journal active-active; see docs/deployment.md). The PostgreSQL password is never written
in the file: ``password_env`` (an environment variable's name) or ``password_file`` (systemd credentials, a Docker
or Kubernetes secret); ``dsn`` carries everything else in libpq's syntax.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import Section

BACKENDS = ("sqlite", "postgresql")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
JOURNAL_KEYS = frozenset({"backend", "path", "busy_timeout_ms", "group_commit_max_batch", "group_commit_max_delay_ms",
                          "retention_days", "dsn", "password_env", "password_file", "sslmode", "sslrootcert",
                          "sslcert", "sslkey", "pool_size", "connect_timeout_seconds"})
_PG_ONLY = ("dsn", "password_env", "password_file", "sslmode", "sslrootcert", "sslcert", "sslkey", "pool_size",
            "connect_timeout_seconds")


@dataclass(frozen=True)
class JournalConfig:
    path: Path
    busy_timeout_ms: int = 5000
    group_commit_max_batch: int = 256
    group_commit_max_delay_ms: int = 0
    retention_days: int = 1095
    backend: str = "sqlite"
    dsn: str | None = None
    password: str | None = field(default=None, repr=False)   # never logged, never in describe()
    sslmode: str | None = None
    sslrootcert: Path | None = None
    sslcert: Path | None = None
    sslkey: Path | None = None
    pool_size: int = 8
    connect_timeout_seconds: float = 10.0

    def describe(self) -> str:
        """Names the journal for logs and /health: a path, or ``postgresql://user@host:port/db`` (no password)."""
        if self.backend == "sqlite":
            return f"sqlite:{self.path}"
        from gateway.journal.pgconn import describe_dsn
        return describe_dsn(self.dsn or "")

    def conninfo(self) -> str:
        """The libpq connection string with the TLS settings and the password added (never log this)."""
        from gateway.journal.pgconn import build_conninfo
        return build_conninfo(self)


def read_journal_config(section: Section) -> JournalConfig:
    """Reads ``[journal]``; the sqlite path is relative to the configuration file and need not exist yet."""
    section.check_keys(JOURNAL_KEYS)
    backend = section.str("backend", "sqlite", choices=BACKENDS)
    common = dict(
        path=section.path("path", "../var/journal.sqlite3", must_exist=False),
        busy_timeout_ms=section.int("busy_timeout_ms", 5000, min=0, max=600_000),
        group_commit_max_batch=section.int("group_commit_max_batch", 256, min=1, max=100_000),
        group_commit_max_delay_ms=section.int("group_commit_max_delay_ms", 0, min=0, max=1000),
        retention_days=section.int("retention_days", 1095, min=1),
    )
    if backend == "sqlite":
        for key in _PG_ONLY:
            if key in section:
                section.fail(key, 'only for backend = "postgresql" (this journal is backend = "sqlite")')
        return JournalConfig(**common)  # type: ignore[arg-type]
    if "path" in section.data:
        section.fail("path", 'only for backend = "sqlite"; a postgresql journal is named by dsn')
    dsn = section.str("dsn", None)
    if not dsn:
        section.fail("dsn", 'backend = "postgresql" needs dsn, e.g. "host=db.example port=5432 dbname=ics2gw '
                            'user=ics2gw" (the password goes in password_env or password_file)')
    from gateway.journal.pgconn import dsn_password_problem
    problem = dsn_password_problem(dsn)
    if problem:
        section.fail("dsn", problem)
    sslmode = section.str("sslmode", None, choices=SSLMODES)
    return JournalConfig(
        **common,  # type: ignore[arg-type]
        backend=backend, dsn=dsn, password=section.secret("password"), sslmode=sslmode,
        sslrootcert=section.path("sslrootcert", None), sslcert=section.path("sslcert", None),
        sslkey=section.path("sslkey", None),
        pool_size=section.int("pool_size", 8, min=2, max=200),
        connect_timeout_seconds=section.float("connect_timeout_seconds", 10.0, min=1.0, max=300.0),
    )
