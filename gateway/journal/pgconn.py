"""Connection strings for the PostgreSQL journal: built from ``[journal]``, described without secrets.

Why its own module: the configuration reader, ``doctor`` and the backend all need the same three answers (is the
DSN acceptable, what is the full libpq string, how do we name it in a log line) and none of them may ever print
the password.
"""

from __future__ import annotations

from typing import Any

_SECRET_KEYS = ("password", "passfile", "sslpassword")


def _parse(dsn: str) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict
    return conninfo_to_dict(dsn)


def dsn_password_problem(dsn: str) -> str | None:
    """Why ``dsn`` is not acceptable in a configuration file (a secret in it, or not libpq syntax), or None."""
    try:
        params = _parse(dsn)
    except Exception as exc:  # psycopg.ProgrammingError: libpq's own message names the problem
        return f"not a libpq connection string or URI: {str(exc).strip()}"
    for key in _SECRET_KEYS:
        if params.get(key):
            return (f"the DSN carries a {key}: secrets are never written in the configuration, use password_env "
                    "or password_file")
    return None


def describe_dsn(dsn: str) -> str:
    """``postgresql://user@host:port/dbname`` for logs and /health; never a password."""
    try:
        p = _parse(dsn)
    except Exception:
        return "postgresql://(unparsable dsn)"
    host = p.get("host") or p.get("hostaddr") or "(local socket)"
    port = p.get("port") or "5432"
    user = p.get("user") or "(default user)"
    return f"postgresql://{user}@{host}:{port}/{p.get('dbname') or '(default db)'}"


def build_conninfo(cfg: Any) -> str:
    """The DSN plus the password and TLS settings of ``[journal]`` (``cfg``: a ``JournalConfig``)."""
    from psycopg.conninfo import make_conninfo
    # keepalives and tcp_user_timeout: a database host that vanishes without closing its connections (power
    # loss, a failover that moves the address) is noticed in about 15 s instead of the kernel's two hours, so a
    # singleton's holder lets go and the pool reconnects to the new primary
    extra: dict[str, Any] = {"connect_timeout": max(1, int(cfg.connect_timeout_seconds)),
                             "application_name": "ics2gw", "keepalives": 1, "keepalives_idle": 5,
                             "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 15000}
    if cfg.password is not None:
        extra["password"] = cfg.password
    for key in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
        value = getattr(cfg, key)
        if value is not None:
            extra[key] = str(value)
    return make_conninfo(cfg.dsn or "", **extra)
