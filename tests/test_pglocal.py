"""The private PostgreSQL server of the tests (gateway/journal/pglocal.py) and its fixtures (tests/pg_support.py):
password authentication over TCP and the Unix socket, TLS with verify-full, restart and crash recovery, isolation
between test databases, loopback only."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg")

from gateway.journal import pglocal  # noqa: E402
from gateway.journal.pglocal import LocalPostgres, PostgresStartError  # noqa: E402
from tests.pg_support import PgDsn, new_database  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
needs_pg = pytest.mark.skipif(pglocal.available() is not None, reason=str(pglocal.available()))


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_available_names_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ICS2GW_PG_BINDIR", str(tmp_path))
    reason = pglocal.available()
    assert reason is not None and "postgresql" in reason.lower() and "make" in reason


@needs_pg
def test_start_stop_close() -> None:
    pg = LocalPostgres()
    try:
        pg.start()
        assert pg.running() and _port_open(pg.port)
        assert (pg.socket_dir / f".s.PGSQL.{pg.port}").exists()
        with psycopg.connect(pg.admin_dsn) as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("on",)
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
            assert conn.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)
        pg.stop()
        assert not pg.running() and not _port_open(pg.port)
        pg.stop()     # idempotent
    finally:
        pg.close()
    assert pg.base is not None and not pg.base.exists()


@needs_pg
def test_an_attached_handle_uses_the_server_and_never_stops_it() -> None:
    """`describe()` / `attach()` (scripts/mutation.py shares one server among forked test runs): the handle connects
    with the owner's superuser password, starts the server again when it is down, and its close() leaves the server
    running and its folder in place; only the owner stops it."""
    owner = LocalPostgres()
    try:
        owner.start()
        info = owner.describe()
        assert set(info) == {"base", "port", "tls", "superuser", "superuser_password"}
        handle = LocalPostgres.attach(info)
        assert (handle.port, handle.base, handle.superuser) == (owner.port, owner.base, owner.superuser)
        assert handle.running()
        handle.create_role("shared", "pw-1")
        with psycopg.connect(owner.dsn("postgres", "shared", "pw-1")) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("shared",)
        handle.close()
        assert owner.running() and _port_open(owner.port) and owner.data_dir.exists()
        handle.kill()
        assert not owner.running()
        handle.start()                       # an attached handle can bring a stopped server back
        assert owner.running()
        with owner.connect() as conn:
            assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'shared'").fetchone() == (1,)
    finally:
        owner.close()
    assert owner.base is not None and not owner.base.exists() and not _port_open(owner.port)


@needs_pg
def test_describe_before_start_is_refused() -> None:
    with pytest.raises(RuntimeError, match="not set up yet"):
        LocalPostgres().describe()


@needs_pg
def test_failed_start_raises_with_the_log() -> None:
    pg = LocalPostgres(settings={"shared_buffers": "not-a-size"})
    try:
        with pytest.raises(PostgresStartError) as exc:
            pg.start(timeout=20)
        assert "shared_buffers" in str(exc.value)
    finally:
        pg.close()


def test_tcp_with_password_as_a_non_superuser(pg_dsn: PgDsn) -> None:
    assert "password" not in str(pg_dsn)
    with psycopg.connect(pg_dsn, password=pg_dsn.password, autocommit=True) as conn:
        user, addr, superuser = conn.execute(
            "SELECT current_user, host(inet_server_addr()), rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert (user, addr, superuser) == ("ics2gw", "127.0.0.1", False)
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")    # the owner may create in its database
        conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE DATABASE other_db")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_unix_socket(pg_dsn: PgDsn) -> None:
    with psycopg.connect(pg_dsn.unix) as conn:
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)   # None: a Unix socket
        assert conn.info.host == str(pg_dsn.server.socket_dir)


def test_wrong_or_no_password_is_refused(pg_dsn: PgDsn) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_dsn, password=pg_dsn.password + "x", connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(pg_dsn.server.dsn(pg_dsn.dbname, pg_dsn.user, unix=True), password="", connect_timeout=5)


def test_two_databases_are_isolated(pg_server: LocalPostgres, pg_dsn: PgDsn) -> None:
    other = new_database(pg_server)
    try:
        with psycopg.connect(pg_dsn.with_password) as a:
            a.execute("CREATE TABLE filings (lrn text)")
            a.execute("INSERT INTO filings VALUES ('A1')")
        with psycopg.connect(other.with_password) as b:
            assert b.execute("SELECT to_regclass('filings')").fetchone() == (None,)
        # a role that does not own a test database cannot even connect to it
        pg_server.create_role("stranger", "stranger-pw")
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(pg_server.dsn(pg_dsn.dbname, "stranger", "stranger-pw"), connect_timeout=5)
    finally:
        pg_server.drop_database(other.dbname)


def test_restart_keeps_data_port_and_socket(pg_server: LocalPostgres, pg_dsn: PgDsn) -> None:
    port, sock = pg_server.port, pg_server.socket_dir
    with psycopg.connect(pg_dsn.with_password) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('before restart')")
    conn = psycopg.connect(pg_dsn.with_password, autocommit=True)
    try:
        pg_server.restart()
        assert (pg_server.port, pg_server.socket_dir) == (port, sock)
        with pytest.raises(psycopg.OperationalError):         # the old session was cut by the restart
            conn.execute("SELECT 1")
    finally:
        conn.close()
        if not pg_server.running():
            pg_server.start()
    with psycopg.connect(pg_dsn.unix) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("before restart",)]


def test_kill_then_start_recovers_committed_work_only(pg_server: LocalPostgres, pg_dsn: PgDsn) -> None:
    with psycopg.connect(pg_dsn.with_password) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('committed')")
    open_txn = psycopg.connect(pg_dsn.with_password)
    open_txn.execute("INSERT INTO t VALUES ('never committed')")
    try:
        pg_server.kill()
        assert not pg_server.running() and not _port_open(pg_server.port)
        pg_server.start()
    finally:
        open_txn.close()
        if not pg_server.running():
            pg_server.start()
    assert "database system was interrupted" in pg_server.tail(60) or "not properly shut down" in pg_server.tail(60)
    with psycopg.connect(pg_dsn.with_password) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("committed",)]


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* shows them) with a socket in LISTEN state on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if int(hexport, 16) == port and fields[3] == "0A":    # 0A = LISTEN
                found.append(addr)
    return found


def test_listens_on_loopback_only(pg_server: LocalPostgres) -> None:
    with psycopg.connect(pg_server.admin_dsn) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
    listening = _listening(pg_server.port)
    assert listening == ["0100007F"], listening          # 127.0.0.1 in /proc's little-endian hex, nothing else
    hba = (pg_server.data_dir / "pg_hba.conf").read_text()
    assert "0.0.0.0" not in hba and "::" not in hba and "trust" not in hba


@needs_pg
def test_tls_verify_full_with_the_ca(pki: Path) -> None:
    with LocalPostgres(tls=True) as pg:
        pg.create_role("ics2gw", "tls-pw")
        dsn = pg.create_database("tlsdb", owner="ics2gw")
        assert "sslmode=verify-full" in dsn and str(pg.ca_path) in dsn
        with psycopg.connect(dsn, password="tls-pw") as conn:
            ssl, version = conn.execute(
                "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
            assert ssl is True and version in ("TLSv1.2", "TLSv1.3")
        # "localhost" is in the certificate as well
        with psycopg.connect(pg.dsn("tlsdb", "ics2gw", "tls-pw", host="localhost", hostaddr="127.0.0.1")) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # TCP without TLS is refused (hostssl only); a CA that did not sign the server is refused
        with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry|SSL off|no encryption"):
            psycopg.connect(pg.dsn("tlsdb", "ics2gw", "tls-pw", sslmode="disable"), connect_timeout=5)
        wrong_ca = pg.base / "wrong-ca.pem"  # type: ignore[operator]
        wrong_ca.write_bytes((REPO / "certs" / "out" / "other-root.pem").read_bytes())   # the test PKI's other root
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            psycopg.connect(pg.dsn("tlsdb", "ics2gw", "tls-pw", sslrootcert=str(wrong_ca)), connect_timeout=5)


def test_the_newest_complete_postgresql_installation_is_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several Debian PostgreSQL versions side by side: the newest by version number (15 before 9, which a sort by
    name would invert), skipping one whose binaries are incomplete."""
    monkeypatch.delenv("ICS2GW_PG_BINDIR", raising=False)
    for version, tools in (("9.6", ("initdb", "pg_ctl", "postgres")), ("15", ("initdb", "pg_ctl", "postgres")),
                           ("16", ("initdb", "pg_ctl"))):
        d = tmp_path / "postgresql" / version / "bin"
        d.mkdir(parents=True)
        for t in tools:
            (d / t).write_text("#!/bin/sh\n")
            (d / t).chmod(0o755)
    monkeypatch.setattr(pglocal, "_BIN_GLOB", str(tmp_path / "postgresql" / "*" / "bin"))
    assert pglocal.find_bindir() == tmp_path / "postgresql" / "15" / "bin"
