"""``[journal]``: backend choice, the PostgreSQL DSN and its secrets, and errors that name the key."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.config import ConfigError, Section
from gateway.journal.config import read_journal_config
from gateway.journal.factory import journal_checks, migrate_journal, open_journal, schema_version
from gateway.journal import schema

F = Path("/etc/ics2gw/gateway.toml")


def _read(data: dict) -> object:
    return read_journal_config(Section(data, file=F, prefix="journal"))


def test_sqlite_is_the_default_and_describes_its_path() -> None:
    cfg = _read({})
    assert cfg.backend == "sqlite"
    assert cfg.describe() == f"sqlite:{Path('/etc/var/journal.sqlite3')}"


@pytest.mark.parametrize("key", ["dsn", "pool_size", "password_env", "sslmode"])
def test_postgresql_keys_refused_on_a_sqlite_journal(key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _read({key: "x" if key != "pool_size" else 4})
    assert f"journal.{key}" in str(err.value) and "postgresql" in str(err.value)


def test_postgresql_needs_a_dsn_and_refuses_a_path() -> None:
    with pytest.raises(ConfigError, match=r"journal\.dsn.*needs dsn"):
        _read({"backend": "postgresql"})
    with pytest.raises(ConfigError, match=r"journal\.path"):
        _read({"backend": "postgresql", "dsn": "host=db", "path": "x.sqlite3"})


def test_unknown_backend_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"journal\.backend"):
        _read({"backend": "mysql"})


@pytest.mark.parametrize("dsn", ["host=db user=u password=hunter2", "postgresql://u:hunter2@db/ics2gw"])
def test_a_password_in_the_dsn_is_refused_without_echoing_it(dsn: str) -> None:
    with pytest.raises(ConfigError) as err:
        _read({"backend": "postgresql", "dsn": dsn})
    assert "journal.dsn" in str(err.value) and "password_env" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_unparsable_dsn_is_named() -> None:
    with pytest.raises(ConfigError, match=r"journal\.dsn.*libpq"):
        _read({"backend": "postgresql", "dsn": "host='unterminated"})


def test_password_from_env_or_file_is_used_but_never_described(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JPW", "s3cr3t-from-env")
    cfg = _read({"backend": "postgresql", "dsn": "host=127.0.0.1 port=6543 dbname=gw user=ics2gw",
                 "password_env": "JPW", "sslmode": "verify-full"})
    assert cfg.password == "s3cr3t-from-env"
    assert cfg.describe() == "postgresql://ics2gw@127.0.0.1:6543/gw"
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in cfg.describe()
    info = cfg.conninfo()
    assert "s3cr3t-from-env" in info and "sslmode=verify-full" in info
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    cfg = read_journal_config(Section({"backend": "postgresql", "dsn": "host=db", "password_file": str(secret)},
                                      file=tmp_path / "g.toml", prefix="journal"))
    assert cfg.password == "from-file"
    with pytest.raises(ConfigError, match=r"journal\.password"):
        _read({"backend": "postgresql", "dsn": "host=db", "password": "literal"})


def test_sslmode_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"journal\.sslmode"):
        _read({"backend": "postgresql", "dsn": "host=db", "sslmode": "sometimes"})


def test_sqlite_migrate_and_checks(tmp_path: Path) -> None:
    cfg = read_journal_config(Section({"path": "j/journal.sqlite3"}, file=tmp_path / "g.toml", prefix="journal"))
    assert schema_version(cfg) == 0
    checks = journal_checks(cfg)
    assert checks[0][1] is False and "journal init" in checks[0][2]
    assert migrate_journal(cfg) == (0, schema.LATEST)
    assert migrate_journal(cfg) == (schema.LATEST, schema.LATEST)
    assert all(ok for _, ok, _ in journal_checks(cfg))
    j = open_journal(cfg, daemon=False)
    try:
        assert j.backend == "sqlite" and j.describe().endswith("journal.sqlite3")
        lock = j.singleton("timers")
        assert lock.try_acquire() and lock.held()
        lock.release()
        assert not lock.held()
        assert j.renew_claims("w", [], now=datetime.now(timezone.utc), lease_seconds=5) == []
    finally:
        j.close()


def test_a_reader_opened_from_the_configuration_uses_its_busy_timeout(tmp_path: Path) -> None:
    """`[journal] busy_timeout_ms` reaches the read-only connection too (status page, CLI readers), not only the
    writer: a reader that gave up after the default would fail while the daemon holds a long write."""
    from gateway.journal.config import JournalConfig
    from gateway.journal.factory import open_reader
    jcfg = JournalConfig(path=tmp_path / "j.sqlite3", busy_timeout_ms=2345)
    open_journal(jcfg, daemon=False).close()
    reader = open_reader(jcfg)
    try:
        assert reader.pragma("busy_timeout") == 2345 and reader.readonly
    finally:
        reader.close()


def test_migrating_beside_a_running_daemon_records_the_time_and_doctor_words_each_check(tmp_path: Path) -> None:
    """`ics2gw journal migrate` opens the journal without the daemon's lock (it must work while the daemon runs,
    and must not recover the daemon's in-flight sends) and records when each migration was applied; `doctor`'s
    journal checks are exact: their names are what operators grep for."""
    import sqlite3
    import subprocess

    from gateway.journal.timeutil import iso
    cfg = read_journal_config(Section({"path": "j/journal.sqlite3"}, file=tmp_path / "g.toml", prefix="journal"))
    name = cfg.describe()
    assert journal_checks(cfg) == [("journal reachable", False,
                                    f"{name}: no journal file yet (run `ics2gw journal init`)")]
    at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    daemon = open_journal(cfg, daemon=True)          # holds <path>.lock, as the running daemon does
    try:
        assert migrate_journal(cfg, now=at) == (schema.LATEST, schema.LATEST)
    finally:
        daemon.close()
    other = tmp_path / "k.sqlite3"
    cfg2 = read_journal_config(Section({"path": str(other)}, file=tmp_path / "g.toml", prefix="journal"))
    assert migrate_journal(cfg2, now=at) == (0, schema.LATEST)
    with sqlite3.connect(other) as conn:
        assert {r[0] for r in conn.execute("SELECT applied_at FROM schema_migrations")} == {iso(at)}
    assert journal_checks(cfg2) == [
        ("journal reachable", True, cfg2.describe()),
        ("journal schema", True, f"version {schema.LATEST}, this ics2gw uses {schema.LATEST}"),
        ("journal permissions", True, "file and folder writable")]
    with sqlite3.connect(other) as conn:
        conn.execute(f"PRAGMA user_version = {schema.LATEST - 1}")
    assert journal_checks(cfg2)[1] == ("journal schema", False, f"version {schema.LATEST - 1}, this ics2gw uses "
                                       f"{schema.LATEST} (run `ics2gw journal migrate`)")
    with sqlite3.connect(other) as conn:
        conn.execute(f"PRAGMA user_version = {schema.LATEST}")
    # the file not writable while its folder is (root ignores modes: an immutable file is refused even to root)
    if subprocess.run(["chattr", "+i", str(other)], capture_output=True).returncode == 0:
        try:
            assert journal_checks(cfg2)[2] == ("journal permissions", False,
                                               f"{other.parent} or {other.name} is not writable")
        finally:
            subprocess.run(["chattr", "-i", str(other)], check=True)
    else:
        pytest.skip("chattr +i refused on this file system: the unwritable-file check cannot be set up")
    foreign = tmp_path / "foreign.sqlite3"
    foreign.write_bytes(b"this is not a database" * 100)
    cfg3 = read_journal_config(Section({"path": str(foreign)}, file=tmp_path / "g.toml", prefix="journal"))
    [(check, ok, detail)] = journal_checks(cfg3)
    assert (check, ok) == ("journal reachable", False) and detail.startswith(f"{cfg3.describe()}: ")
    assert "not a database" in detail


def test_migrating_a_postgresql_journal_records_the_time_given(pg_dsn: object) -> None:
    import psycopg

    from gateway.journal.timeutil import iso
    from tests.journal_backends import pg_config
    at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    cfg = pg_config(str(pg_dsn), pg_dsn.password)  # type: ignore[attr-defined]
    assert migrate_journal(cfg, now=at) == (0, schema.LATEST)
    with psycopg.connect(pg_dsn.with_password) as conn:  # type: ignore[attr-defined]
        assert {r[0] for r in conn.execute("SELECT applied_at FROM schema_migrations")} == {iso(at)}


def test_opening_a_fresh_postgresql_journal_migrates_it_at_the_time_given(pg_dsn: object) -> None:
    import psycopg

    from gateway.journal.timeutil import iso
    from tests.journal_backends import pg_config
    from gateway.journal.errors import JournalError
    at = datetime(2026, 4, 5, 6, 7, 8, tzinfo=timezone.utc)
    cfg = pg_config(str(pg_dsn), pg_dsn.password)  # type: ignore[attr-defined]
    with pytest.raises(JournalError) as exc:             # the daemon opens with migrate=False: it never migrates
        open_journal(cfg, migrate=False)
    assert str(exc.value) == (f"{cfg.describe()}: schema version 0, this ics2gw uses {schema.LATEST}; run "
                              "`ics2gw journal migrate` (or start with --init-journal)")
    j = open_journal(cfg, now=at)
    j.close()
    with psycopg.connect(pg_dsn.with_password) as conn:  # type: ignore[attr-defined]
        assert {r[0] for r in conn.execute("SELECT applied_at FROM schema_migrations")} == {iso(at)}


# ---------------------------------------------------------------------------------------------- exact values
def _err(data: dict, file: Path = Path("/etc/ics2gw/g.toml")) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        read_journal_config(Section(data, file=file, prefix="journal"))
    return exc.value


def test_sqlite_defaults_and_every_bound_at_its_edge(tmp_path: Path) -> None:
    from gateway.journal.config import JournalConfig
    g = tmp_path / "conf" / "g.toml"
    cfg = read_journal_config(Section({}, file=g, prefix="journal"))
    assert cfg == JournalConfig(path=(tmp_path / "var" / "journal.sqlite3"), busy_timeout_ms=5000,
                                group_commit_max_batch=256, group_commit_max_delay_ms=0, retention_days=1095)
    assert cfg.backend == "sqlite" and cfg.dsn is None and cfg.password is None
    assert cfg.describe() == f"sqlite:{tmp_path / 'var' / 'journal.sqlite3'}"
    edges = {"busy_timeout_ms": (0, 600_000), "group_commit_max_batch": (1, 100_000),
             "group_commit_max_delay_ms": (0, 1000), "retention_days": (1, None)}
    for key, (low, high) in edges.items():
        assert getattr(read_journal_config(Section({key: low}, file=g, prefix="journal")), key) == low
        e = _err({key: low - 1}, g)
        assert (e.key, e.message) == (f"journal.{key}", f"must be at least {low}, not {low - 1}")
        if high is not None:
            assert getattr(read_journal_config(Section({key: high}, file=g, prefix="journal")), key) == high
            e = _err({key: high + 1}, g)
            assert (e.key, e.message) == (f"journal.{key}", f"must be at most {high}, not {high + 1}")


def test_postgresql_defaults_bounds_and_each_refusal_word_by_word(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    g = tmp_path / "g.toml"
    monkeypatch.setenv("JPW", "s3cret")
    base = {"backend": "postgresql", "dsn": "host=db.example dbname=ics2gw user=gw"}
    cfg = read_journal_config(Section({**base, "password_env": "JPW"}, file=g, prefix="journal"))
    assert (cfg.backend, cfg.dsn, cfg.password, cfg.sslmode, cfg.pool_size, cfg.connect_timeout_seconds) == (
        "postgresql", base["dsn"], "s3cret", None, 8, 10.0)
    assert (cfg.sslrootcert, cfg.sslcert, cfg.sslkey) == (None, None, None)
    assert (cfg.busy_timeout_ms, cfg.group_commit_max_batch, cfg.retention_days) == (5000, 256, 1095)
    assert "s3cret" not in repr(cfg) and cfg.describe() == "postgresql://gw@db.example:5432/ics2gw"
    for f in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / f).write_text("x")
    tls = read_journal_config(Section({**base, "sslmode": "verify-full", "sslrootcert": "ca.pem",
                                       "sslcert": "c.pem", "sslkey": "k.pem", "pool_size": 2,
                                       "connect_timeout_seconds": 1.0}, file=g, prefix="journal"))
    assert (tls.sslmode, tls.sslrootcert, tls.sslcert, tls.sslkey, tls.pool_size, tls.connect_timeout_seconds) == (
        "verify-full", tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem", 2, 1.0)
    assert read_journal_config(Section({**base, "pool_size": 200, "connect_timeout_seconds": 300.0}, file=g,
                                       prefix="journal")).pool_size == 200
    for key, bad, message in [("pool_size", 1, "must be at least 2, not 1"), ("pool_size", 201, "must be at most 200, not 201"),
                              ("connect_timeout_seconds", 0.5, "must be at least 1.0, not 0.5"),
                              ("connect_timeout_seconds", 301, "must be at most 300.0, not 301")]:
        e = _err({**base, key: bad}, g)
        assert (e.key, e.message) == (f"journal.{key}", message)
    e = _err({"backend": "postgresql", "dsn": "host=db", "path": "j.sqlite3"}, g)
    assert (e.key, e.message) == ("journal.path", 'only for backend = "sqlite"; a postgresql journal is named by dsn')
    for data in ({"backend": "postgresql"}, {"backend": "postgresql", "dsn": ""}):
        e = _err(data, g)
        assert (e.key, e.message) == ("journal.dsn", 'backend = "postgresql" needs dsn, e.g. "host=db.example '
                                      'port=5432 dbname=ics2gw user=ics2gw" (the password goes in password_env or '
                                      'password_file)')
    for secret in ("password", "passfile", "sslpassword"):
        e = _err({"backend": "postgresql", "dsn": f"host=db {secret}=x"}, g)
        assert (e.key, e.message) == ("journal.dsn", f"the DSN carries a {secret}: secrets are never written in "
                                      "the configuration, use password_env or password_file")
    e = _err({"backend": "postgresql", "dsn": "host=db port"}, g)
    assert e.key == "journal.dsn" and e.message.startswith("not a libpq connection string or URI: ")
    assert '"port"' in e.message            # libpq's own words name the broken part
    for key in ("dsn", "password_env", "password_file", "sslmode", "sslrootcert", "sslcert", "sslkey", "pool_size",
                "connect_timeout_seconds"):
        e = _err({key: "x"}, g)
        assert (e.key, e.message) == (f"journal.{key}", 'only for backend = "postgresql" (this journal is '
                                      'backend = "sqlite")')
    e = _err({"backend": "mysql"}, g)
    assert e.key == "journal.backend" and "sqlite" in e.message and "postgresql" in e.message


@pytest.mark.parametrize("dsn,described", [
    ("host=db.example port=6432 dbname=j user=u", "postgresql://u@db.example:6432/j"),
    ("hostaddr=10.0.0.7 dbname=j", "postgresql://(default user)@10.0.0.7:5432/j"),
    ("dbname=j user=u", "postgresql://u@(local socket):5432/j"),
    ("host=db", "postgresql://(default user)@db:5432/(default db)"),
    ("postgresql://u@db.example:5433/jj", "postgresql://u@db.example:5433/jj"),
    ("host=db port", "postgresql://(unparsable dsn)"),
])
def test_a_dsn_is_described_without_secrets(dsn: str, described: str) -> None:
    from gateway.journal.pgconn import describe_dsn
    assert describe_dsn(dsn) == described


def test_the_connection_string_adds_password_tls_and_keepalives_to_the_dsn(tmp_path: Path) -> None:
    from dataclasses import replace

    from psycopg.conninfo import conninfo_to_dict

    from gateway.journal.config import JournalConfig
    cfg = JournalConfig(path=tmp_path / "unused", backend="postgresql", dsn="host=db dbname=j user=u",
                        connect_timeout_seconds=2.9)
    assert conninfo_to_dict(cfg.conninfo()) == {
        "host": "db", "dbname": "j", "user": "u", "connect_timeout": "2", "application_name": "ics2gw",
        "keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2", "keepalives_count": "3",
        "tcp_user_timeout": "15000"}
    tls = replace(cfg, password="pw", sslmode="verify-full", sslrootcert=tmp_path / "ca.pem",
                  sslcert=tmp_path / "c.pem", sslkey=tmp_path / "k.pem", connect_timeout_seconds=0.2)
    d = conninfo_to_dict(tls.conninfo())
    assert (d["password"], d["sslmode"], d["sslrootcert"], d["sslcert"], d["sslkey"], d["connect_timeout"]) == (
        "pw", "verify-full", str(tmp_path / "ca.pem"), str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), "1")
    assert "pw" not in tls.describe() and tls.describe() == "postgresql://u@db:5432/j"


def test_the_daemons_journal_is_the_default_and_a_second_daemon_is_refused(tmp_path: Path) -> None:
    """`open_journal` without `daemon=` is the daemon's open: it creates missing folders, takes the lock file, and a
    second daemon on the same journal is refused while CLI commands (`daemon=False`) still open it."""
    from gateway.journal.config import JournalConfig
    from gateway.journal.errors import JournalLocked
    cfg = JournalConfig(path=tmp_path / "a" / "b" / "journal.sqlite3", busy_timeout_ms=3456)
    first = open_journal(cfg)
    try:
        assert first.pragma("busy_timeout") == 3456          # [journal] busy_timeout_ms reaches the writer
        with pytest.raises(JournalLocked, match="another gateway daemon uses this journal"):
            open_journal(cfg)
        open_journal(cfg, daemon=False).close()
    finally:
        first.close()
    open_journal(cfg).close()             # the lock ends with its holder


def test_postgresql_pools_are_sized_and_named_from_the_configuration(pg_dsn: object) -> None:
    """The writer's pool holds `pool_size` connections and the reader's half of it (at least 2); each carries its
    name (psycopg_pool's logs and stats), and both describe the journal by its DSN, never the password."""
    from gateway.journal.factory import open_reader
    from tests.journal_backends import pg_config
    for size, reader_size in ((9, 4), (2, 2), (5, 2)):
        cfg = pg_config(str(pg_dsn), pg_dsn.password, pool_size=size)  # type: ignore[attr-defined]
        writer = open_journal(cfg)
        reader = open_reader(cfg)
        try:
            assert (writer._pool.max_size, writer._pool.name) == (size, "ics2gw-journal")
            assert (reader._pool.max_size, reader._pool.name) == (reader_size, "ics2gw-journal-reader")
            assert writer.describe() == reader.describe() == cfg.describe()
            assert pg_dsn.password not in reader.describe()  # type: ignore[attr-defined]
            lock = reader.singleton("outbox")       # a singleton connects with the reader's own conninfo
            assert lock.try_acquire() and lock.held()
            lock.release()
        finally:
            reader.close()
            writer.close()
