"""A private PostgreSQL server for the tests, the benchmark and the demo: Debian's binaries (``initdb`` + ``pg_ctl``,
the newest ``/usr/lib/postgresql/*/bin``) run on a data directory in a temporary folder of ours, listening on
127.0.0.1 on a free port and on a Unix socket inside that folder, and stopped (folder removed) at the end. Never the
system cluster. ``make test`` installs the Debian package (``make pg-deps``); without it the PostgreSQL tests are
skipped with the reason ``available()`` gives.

Authentication is scram-sha-256 everywhere (TCP and socket), with a superuser whose password is generated here, so
a test exercises real password authentication. ``fsync`` and ``synchronous_commit`` stay on unless asked otherwise
(``durable=False``); ``initdb --no-sync`` (only initdb's own flush of the fresh cluster) is a parameter.

initdb and postgres refuse to run as root: when this process is root (CI), they run as the ``postgres`` system user
that the Debian package creates (else as a dedicated system user created here), and the temporary folder belongs to
that user. The parent directory of the folder must be traversable by it, which ``/tmp`` is.

``tls=True`` generates a small CA and a server certificate for 127.0.0.1 and localhost; TCP then accepts only TLS
(``hostssl``) and ``ca_path`` lets a client use ``sslmode=verify-full``.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import glob
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

from gateway.conformance.confgen import free_port

SYSTEM_USER = "postgres"           # created by Debian's postgresql-common
FALLBACK_USER = "ics2gw-pg"        # created here when running as root on a machine without it
_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_NEEDED = ("initdb", "pg_ctl", "postgres")


def find_bindir() -> Path | None:
    """The newest PostgreSQL binary directory with initdb, pg_ctl and postgres (``ICS2GW_PG_BINDIR`` overrides)."""
    override = os.environ.get("ICS2GW_PG_BINDIR")
    candidates = [override] if override else glob.glob(_BIN_GLOB)

    def version(p: str) -> tuple[int, ...]:
        m = re.search(r"/postgresql/([\d.]+)/bin", p)
        return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)

    for d in sorted(candidates, key=version, reverse=True):
        if all(os.access(os.path.join(d, b), os.X_OK) for b in _NEEDED):
            return Path(d)
    return None


def available() -> str | None:
    """None if a private server can be started here, else why not (for skip messages)."""
    if find_bindir() is None:
        return ("PostgreSQL is not installed (no initdb/pg_ctl/postgres in /usr/lib/postgresql/*/bin; Debian package "
                "postgresql; `make test` installs it via `make pg-deps`)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (`make install` installs psycopg[binary] from pyproject.toml)"
    if os.geteuid() == 0 and _run_user() is None and shutil.which("useradd") is None:
        return (f"running as root, and neither the {SYSTEM_USER!r} system user nor useradd exists "
                "(initdb and postgres refuse to run as root)")
    return None


def _run_user() -> pwd.struct_passwd | None:
    for name in (SYSTEM_USER, FALLBACK_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def _ensure_run_user() -> pwd.struct_passwd:
    user = _run_user()
    if user is not None:
        return user
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                    "/usr/sbin/nologin", FALLBACK_USER], check=True, capture_output=True)
    return pwd.getpwnam(FALLBACK_USER)


class PostgresStartError(RuntimeError):
    """The private server did not start; the message ends with the last lines of its log."""


class LocalPostgres:
    """One private PostgreSQL server. ``with LocalPostgres() as pg: pg.create_database("x", owner=...)``.

    ``parent``: where the temporary folder goes (default: the system temp dir; the Unix socket path must stay
    under ~100 bytes, and when root the folder's parents must be traversable by the server's user).
    ``no_sync``: ``initdb --no-sync`` (fast set-up; does not affect the running server's durability).
    ``durable``: ``fsync`` and ``synchronous_commit`` on (default; the journal's guarantees depend on them).
    ``settings``: further ``postgresql.conf`` settings, e.g. ``{"max_connections": 200}``.
    """

    def __init__(self, *, parent: Path | str | None = None, port: int | None = None, tls: bool = False,
                 no_sync: bool = True, durable: bool = True, superuser: str = "ics2gw_admin",
                 settings: dict[str, Any] | None = None, keep: bool = False) -> None:
        self.bindir = find_bindir()
        if self.bindir is None:
            raise PostgresStartError(available() or "PostgreSQL binaries not found")
        self._parent = Path(parent) if parent is not None else None
        self.port = port or free_port()
        self._port_given = port is not None
        self.tls = tls
        self.no_sync = no_sync
        self.durable = durable
        self.superuser = superuser
        self.superuser_password = secrets.token_urlsafe(18)
        self.settings = dict(settings or {})
        self.keep = keep
        self.base: Path | None = None
        self._initialised = False
        self._user: pwd.struct_passwd | None = None
        self._atexit = False
        self._owned = True

    # ---------------------------------------------------------------------------------------------- paths
    def _dir(self, *parts: str) -> Path:
        if self.base is None:
            raise RuntimeError("LocalPostgres: not set up yet (call start())")
        return self.base.joinpath(*parts)

    @property
    def data_dir(self) -> Path:
        return self._dir("data")

    @property
    def socket_dir(self) -> Path:
        return self._dir("sock")

    @property
    def log_path(self) -> Path:
        return self._dir("server.log")

    @property
    def ca_path(self) -> Path:
        """The CA certificate (PEM) that signed the server certificate (``tls=True`` only)."""
        if not self.tls:
            raise RuntimeError("LocalPostgres: no CA without tls=True")
        return self._dir("tls", "ca.crt")

    # ---------------------------------------------------------------------------------------------- processes
    def _as_server_user(self) -> dict[str, Any]:
        """Popen arguments that run a command as the server's user (root: the postgres user; else: ourselves)."""
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"LC_ALL": "C", "LANG": "C", "TZ": "UTC"})
        if self._user is not None:
            env.update({"HOME": str(self.base), "USER": self._user.pw_name, "LOGNAME": self._user.pw_name})
        return env

    def _run(self, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.bindir is not None
        proc = subprocess.run([str(self.bindir / args[0]), *args[1:]], check=False, cwd=self.base, env=self._env(),
                              capture_output=True, text=True, timeout=timeout, **self._as_server_user())
        if check and proc.returncode != 0:
            raise PostgresStartError(f"{args[0]} exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}"
                                     f"\n--- last lines of {self.log_path if self.base else 'the log'}:\n"
                                     f"{self.tail()}")
        return proc

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    # ---------------------------------------------------------------------------------------------- set-up
    def _setup(self) -> None:
        if os.geteuid() == 0:
            self._user = _ensure_run_user()
        parent = self._parent or Path(tempfile.gettempdir())
        if len(str(parent)) > 60:     # sun_path is 108 bytes: ".../ics2gw-pg-XXXXXXXX/sock/.s.PGSQL.NNNNN" must fit
            parent = Path("/tmp")
        self.base = Path(tempfile.mkdtemp(prefix="ics2gw-pg-", dir=parent))
        self._chown(self.base)
        for d in ("sock", "tls"):
            (self.base / d).mkdir(mode=0o700)
            self._chown(self.base / d)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        os.chmod(pwfile, 0o600)
        self._chown(pwfile)
        try:
            args = ["initdb", "-D", str(self.data_dir), "-U", self.superuser, f"--pwfile={pwfile}",
                    "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"]
            if self.no_sync:
                args.append("--no-sync")
            self._run(*args, timeout=300)
        finally:
            pwfile.unlink(missing_ok=True)
        if self.tls:
            self._make_tls()
        self._write_conf()
        self._initialised = True

    def _write_conf(self) -> None:
        conf: dict[str, Any] = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "unix_socket_permissions": "0700",
            "password_encryption": "scram-sha-256",
            "fsync": self.durable,
            "synchronous_commit": self.durable,
            "full_page_writes": True,
            "max_connections": 100,
            "shared_buffers": "64MB",
            "timezone": "UTC",
            "log_timezone": "UTC",
            "logging_collector": False,
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "log_min_messages": "warning",
        }
        if self.tls:
            conf.update({"ssl": True, "ssl_cert_file": str(self._dir("tls", "server.crt")),
                         "ssl_key_file": str(self._dir("tls", "server.key")),
                         "ssl_min_protocol_version": "TLSv1.2"})
        conf.update(self.settings)

        def fmt(v: Any) -> str:
            if isinstance(v, bool):
                return "on" if v else "off"
            if isinstance(v, int):
                return str(v)
            return "'" + str(v).replace("'", "''") + "'"

        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\n# --- ics2gw LocalPostgres (gateway/journal/pglocal.py)\n")
            f.writelines(f"{k} = {fmt(v)}\n" for k, v in conf.items())
        tcp = "hostssl" if self.tls else "host"
        (self.data_dir / "pg_hba.conf").write_text(
            "# ics2gw LocalPostgres: password (scram-sha-256) on the socket and on loopback TCP only\n"
            "local   all all              scram-sha-256\n"
            f"{tcp:<7} all all 127.0.0.1/32 scram-sha-256\n")

    def _make_tls(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ics2gw LocalPostgres test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        tls = self._dir("tls")
        files = {
            "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
            "server.crt": cert.public_bytes(serialization.Encoding.PEM),
            "server.key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()),
        }
        for name, data in files.items():
            p = tls / name
            p.write_bytes(data)
            os.chmod(p, 0o600 if name.endswith(".key") else 0o644)
            self._chown(p)
        # clients that are not root and not the server's user read the CA: the folder is traversable, the key not
        os.chmod(tls, 0o755)
        os.chmod(self.base, 0o711)   # type: ignore[arg-type]

    # ---------------------------------------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 60.0) -> LocalPostgres:
        """Creates the cluster on first use, then starts the server and waits until it accepts connections."""
        if not self._initialised:
            self._setup()
        if not self._atexit and self._owned:
            atexit.register(self._atexit_kill)
            self._atexit = True
        attempts = 1 if self._port_given else 3
        for attempt in range(attempts):
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t",
                          str(int(timeout)), "start", timeout=timeout + 30)
                return self
            except PostgresStartError as exc:
                taken = "could not bind" in str(exc) or "Address already in use" in str(exc)
                if not taken or attempt == attempts - 1:
                    raise
                self.port = free_port()      # someone took the free port between choice and bind: pick another
                self._rewrite_port()
        return self

    def _rewrite_port(self) -> None:
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write(f"port = {self.port}\n")

    def running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError, RuntimeError):
            return None

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """A clean shutdown (``fast``: sessions are disconnected, the checkpoint written); no-op when not running."""
        if self.base is None or not self.running():
            return
        proc = self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(int(timeout)), "stop",
                         timeout=timeout + 30, check=False)
        if proc.returncode != 0 and self.running():
            self.kill()

    def restart(self, timeout: float = 60.0) -> LocalPostgres:
        """Stops and starts the same server: same data, same port, same socket (a database restarted mid-run)."""
        self.stop()
        return self.start(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL to the postmaster and all its backends at once (a crash): the next start() runs crash recovery."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        # pg_ctl starts the postmaster in a session of its own: its process group holds every backend
        for sig_target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                sig_target()
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def close(self) -> None:
        """Stops the server and removes its folder (unless ``keep``); a server we only attached to keeps running."""
        if not self._owned:
            return
        try:
            self.stop()
        finally:
            if self.base is not None and not self.keep:
                shutil.rmtree(self.base, ignore_errors=True)
            if self._atexit:
                atexit.unregister(self._atexit_kill)
                self._atexit = False

    def _atexit_kill(self) -> None:    # a test process that dies without its finalisers must not leave a server
        with contextlib.suppress(OSError, RuntimeError):
            self.kill()

    # ---------------------------------------------------------------------------------------------- sharing
    def describe(self) -> dict[str, Any]:
        """What another process needs to use this running server (``attach``). Holds the superuser password: write
        it only to a file that is the caller's own (mode 0600)."""
        if self.base is None:
            raise RuntimeError("LocalPostgres: not set up yet (call start())")
        return {"base": str(self.base), "port": self.port, "tls": self.tls, "superuser": self.superuser,
                "superuser_password": self.superuser_password}

    @classmethod
    def attach(cls, info: dict[str, Any]) -> LocalPostgres:
        """A handle on a server that another process set up and owns (``describe``): start() starts it again if
        it is down, but close() leaves it running and its folder in place (``scripts/mutation.py`` shares one
        server among the test runs of every mutant)."""
        server = cls(port=int(info["port"]), tls=bool(info["tls"]), superuser=str(info["superuser"]), keep=True)
        server.superuser_password = str(info["superuser_password"])
        server.base = Path(info["base"])
        server._initialised = True
        server._owned = False
        if os.geteuid() == 0:
            server._user = _ensure_run_user()
        return server

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except (OSError, RuntimeError):
            return ""

    # ---------------------------------------------------------------------------------------------- DSNs
    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None, *,
            unix: bool = False, sslmode: str | None = None, **extra: Any) -> str:
        """A libpq conninfo string. TCP to 127.0.0.1 by default (with ``tls``: ``sslmode=verify-full`` and the CA),
        or the Unix socket (``unix=True``). Without ``password`` none is written (the journal takes it from
        ``password_env`` / ``password_file``)."""
        from psycopg.conninfo import make_conninfo

        params: dict[str, Any] = {"host": str(self.socket_dir) if unix else "127.0.0.1", "port": self.port,
                                  "dbname": dbname, "user": user or self.superuser}
        if password is not None:
            params["password"] = password
        if not unix and (self.tls or sslmode):
            params["sslmode"] = sslmode or "verify-full"
            if self.tls:
                params["sslrootcert"] = str(self.ca_path)
        params.update(extra)
        return make_conninfo("", **params)

    @property
    def admin_dsn(self) -> str:
        """The superuser, with its password, over the Unix socket (works with or without TLS)."""
        return self.dsn("postgres", self.superuser, self.superuser_password, unix=True)

    def connect(self, dbname: str = "postgres", **kw: Any) -> Any:
        """A psycopg connection as the superuser (autocommit), over the socket."""
        import psycopg

        return psycopg.connect(self.dsn(dbname, self.superuser, self.superuser_password, unix=True),
                               autocommit=True, **kw)

    # ---------------------------------------------------------------------------------------------- roles, dbs
    def create_role(self, name: str, password: str, login: bool = True, superuser: bool = False) -> None:
        """Creates the role, or sets its password when it exists."""
        from psycopg import sql

        opts = sql.SQL(" ".join(["LOGIN" if login else "NOLOGIN", "SUPERUSER" if superuser else "NOSUPERUSER"]))
        with self.connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            verb = sql.SQL("ALTER ROLE") if exists else sql.SQL("CREATE ROLE")
            conn.execute(sql.SQL("{} {} {} PASSWORD {}").format(verb, sql.Identifier(name), opts,
                                                                 sql.Literal(password)))

    def create_database(self, name: str, owner: str | None = None) -> str:
        """Creates an empty database owned by ``owner`` (default the superuser) that only its owner (and
        superusers) may connect to; returns its TCP DSN for the owner, without password."""
        from psycopg import sql

        owner = owner or self.superuser
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
        return self.dsn(name, owner)

    def drop_database(self, name: str) -> None:
        """Drops the database even while sessions are connected to it (``WITH (FORCE)``)."""
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def __repr__(self) -> str:
        return f"LocalPostgres(port={self.port}, base={self.base}, tls={self.tls})"


__all__ = ["FALLBACK_USER", "SYSTEM_USER", "LocalPostgres", "PostgresStartError", "available", "find_bindir"]
