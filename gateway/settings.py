"""One loader for the whole gateway configuration: what ``run`` refuses, ``doctor`` reports, and nothing else.

Why one loader: each section has its own reader next to the dataclass it fills (``gateway.config`` for the
core, ``gateway.transport.config``, ``gateway.journal.config``, ``gateway.pipeline.config``,
``gateway.logsetup``). Before this module each command called the readers it needed, so ``doctor`` never
read ``[pipeline]`` or ``[intake]`` and passed files that ``run`` then refused. ``load_settings`` calls every
reader (each refuses its unknown keys) and ``check_filesystem`` checks what the daemon will touch: state
folders (existing, writable), the journal (existing unless ``--init-journal``), key files (not readable by
everyone). ``run``, ``demo`` and ``doctor`` all go through here, so they cannot disagree.

A new section: write its reader next to its dataclass, list its name in ``gateway.config.GATEWAY_TOP_LEVEL``
and call the reader from ``load_settings``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import LENIENT_SECRETS, ConfigError, GatewayConfig, load_gateway_config


@dataclass(frozen=True)
class Settings:
    """Every section of a gateway configuration, read and checked."""
    core: GatewayConfig
    transport: Any   # gateway.transport.config.TransportConfig
    journal: Any     # gateway.journal.config.JournalConfig
    daemon: Any      # gateway.pipeline.config.DaemonConfig
    logging: Any     # gateway.logsetup.LoggingConfig
    pmodes: Any      # gateway.pmode.PModeSet
    hmrc: Any = None  # gateway.hmrc.config.HmrcConfig, or None (route off)
    amqp: Any = None  # gateway.broker.config.AmqpConfig, or None (broker off)

    @property
    def file(self) -> Path:
        return self.core.file

    @property
    def environment(self) -> str:
        return self.core.environment


def load_settings(path: Path | str, *, secrets: bool = True) -> Settings:
    """Reads every section of the gateway configuration at ``path``; raises ``ConfigError`` naming file and key.

    ``secrets=False`` (commands that only read the journal or the API address) checks every key the same way
    but reads no secret, so such a command needs no password in its environment; the secret fields are None.
    """
    token = LENIENT_SECRETS.set(not secrets)
    try:
        return _load(path)
    finally:
        LENIENT_SECRETS.reset(token)


def _load(path: Path | str) -> Settings:
    from gateway.journal.config import read_journal_config
    from gateway.logsetup import read_logging
    from gateway.pipeline.config import read_daemon_config
    from gateway.pmode import load_pmodes
    from gateway.transport.config import load_transport_config

    core = load_gateway_config(path)
    root = core.root
    transport = load_transport_config(core)
    journal = read_journal_config(root.section("journal"))
    daemon = read_daemon_config(core)
    logging_cfg = read_logging(root.section("logging"))
    pmodes = load_pmodes(core.pmodes_dir, party_id=core.identity.party_id)
    from gateway.broker.config import read_amqp_config
    from gateway.hmrc.config import read_hmrc_config
    return Settings(core=core, transport=transport, journal=journal, daemon=daemon, logging=logging_cfg,
                    pmodes=pmodes, hmrc=read_hmrc_config(core), amqp=read_amqp_config(core))


# ------------------------------------------------------------------------------------------------ filesystem
def _writable_dir(file: Path, key: str, d: Path, what: str, *, create: bool) -> ConfigError | None:
    if not d.exists():
        if create:
            try:
                d.mkdir(parents=True, exist_ok=True)
                return None
            except OSError as exc:
                return ConfigError(file, key, f"{what} {d} does not exist and cannot be created: {exc.strerror}")
        return ConfigError(file, key, f"{what} {d} does not exist (a typo? `ics2gw init` or `ics2gw run "
                                      f"--init-journal` create missing state folders)")
    if not d.is_dir():
        return ConfigError(file, key, f"{what} {d} is not a folder")
    try:
        read_only = bool(os.statvfs(d).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return ConfigError(file, key, f"{what} {d} is on a read-only file system (remounted read-only after a disk "
                                      "error?); make it writable, then start again")
    if not os.access(d, os.W_OK | os.X_OK):
        return ConfigError(file, key, f"{what} {d} is not writable by this user (uid {os.getuid()})")
    return None


def _key_file(file: Path, key: str, p: Path | None) -> ConfigError | None:
    """A private key or password file must not be readable or writable by every user of the machine."""
    if p is None:
        return None
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        return ConfigError(file, key, f"{p}: cannot read: {exc.strerror}")
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        return ConfigError(file, key, f"{p} is readable or writable by every user (mode {stat.filemode(mode)}); "
                                      f"run `chmod 600 {p}` (or 640 with the gateway's group)")
    if not os.access(p, os.R_OK):
        return ConfigError(file, key, f"{p} is not readable by this user (uid {os.getuid()})")
    return None


def check_filesystem(settings: Settings, *, init_journal: bool = False) -> list[ConfigError]:
    """Every file-system problem ``run`` would hit; with ``init_journal`` missing state folders are created.

    The journal must exist: a mistyped path must be an error, not a fresh empty journal that silently forgets
    every filing in flight. ``init_journal`` allows creating it (its folder is then created too).
    """
    f = settings.file
    problems: list[ConfigError] = []
    intake = settings.daemon.intake
    for name in ("spool_dir", "work_dir", "archive_dir", "rejected_dir", "status_dir", "inbox_dir"):
        err = _writable_dir(f, f"intake.{name}", getattr(intake, name), "folder", create=init_journal)
        if err:
            problems.append(err)
    jpath: Path = settings.journal.path
    if settings.journal.backend != "sqlite":
        pass   # a PostgreSQL journal has no file: `run` checks its schema (gateway.commands.run), doctor the rest
    elif jpath.exists():
        # the folder first: a read-only file system is one cause, reported once (not also as an unwritable file)
        err = _writable_dir(f, "journal.path", jpath.parent, "journal folder", create=False)
        if err:
            problems.append(err)
        elif not jpath.is_file():
            problems.append(ConfigError(f, "journal.path", f"{jpath} is not a file"))
        elif not os.access(jpath, os.R_OK | os.W_OK):
            problems.append(ConfigError(f, "journal.path", f"journal {jpath} is not writable by this user "
                                                           f"(uid {os.getuid()})"))
    elif not init_journal:
        problems.append(ConfigError(f, "journal.path", f"journal {jpath} does not exist (a typo? to start a new "
                                                       f"journal: `ics2gw run --init-journal` or `ics2gw init`)"))
    else:
        err = _writable_dir(f, "journal.path", jpath.parent, "journal folder", create=True)
        if err:
            problems.append(err)
    seal = settings.core.seal
    for key, p in (("seal.key", seal.key), ("seal.pkcs12", seal.pkcs12)):
        err = _key_file(f, key, p)
        if err:
            problems.append(err)
    seal_sec = settings.core.root.section("seal")
    if "password_file" in seal_sec:
        err = _key_file(f, "seal.password_file", seal_sec.path("password_file"))
        if err:
            problems.append(err)
    tls = settings.transport.tls
    tls_sec = settings.core.root.section("tls")
    for side in ("client", "server"):
        km = getattr(tls, side)
        for key, p in ((f"tls.{side}_key", km.key), (f"tls.{side}_pkcs12", km.pkcs12)):
            err = _key_file(f, key, p)
            if err:
                problems.append(err)
        if f"{side}_password_file" in tls_sec:
            err = _key_file(f, f"tls.{side}_password_file", tls_sec.path(f"{side}_password_file"))
            if err:
                problems.append(err)
    return problems


def create_journal(settings: Settings) -> tuple[int, int]:
    """Creates or upgrades the journal's schema (SQLite: the file at ``[journal] path``, whose folder must exist;
    PostgreSQL: the tables in the database of ``dsn``); (schema version before, after)."""
    from gateway.journal.factory import migrate_journal
    return migrate_journal(settings.journal)
