"""Opening the journal from a command: the [journal] of the configuration (SQLite or PostgreSQL), reader or writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def journal_config(conf: Path) -> Any:
    """The ``[journal]`` of ``conf`` (a ``JournalConfig``), read through the one loader (a typo anywhere is refused
    as `run` refuses it). No other secret is read; a PostgreSQL journal's own password is (it is needed to read)."""
    from gateway.settings import load_settings
    settings = load_settings(conf, secrets=False)
    jcfg = settings.journal
    if jcfg.backend != "sqlite":
        from gateway.journal.config import read_journal_config
        jcfg = read_journal_config(settings.core.root.section("journal"))
    return jcfg


def journal_path(conf: Path) -> Path:
    """The SQLite journal file of ``conf`` (meaningless for a PostgreSQL journal: use ``journal_config``)."""
    return journal_config(conf).path


def journal_exists(jcfg: Any) -> bool:
    """Is there a journal to read? SQLite: the file exists. PostgreSQL: the schema exists (0: never migrated)."""
    if jcfg.backend == "sqlite":
        return bool(jcfg.path.exists())
    from gateway.journal.factory import schema_version
    return schema_version(jcfg) > 0


def open_reader(conf: Path) -> Any:
    from gateway.journal.factory import open_reader as factory_reader
    jcfg = journal_config(conf)
    if jcfg.backend == "sqlite" and not jcfg.path.exists():
        raise FileNotFoundError(f"no journal at {jcfg.path} yet (the daemon creates it: ics2gw run)")
    return factory_reader(jcfg)


def open_writer(conf: Path) -> Any:
    """A writer for CLI commands (resend, purge): no daemon lock, no recovery, no migration of a shared database;
    SQLite serialises with the daemon, PostgreSQL with every instance."""
    from gateway.journal.factory import open_journal
    return open_journal(journal_config(conf), daemon=False, migrate=False)


def find_filing(j: Any, ref: str) -> Any:
    """A filing by LRN (unique), MRN, or eb:MessageId; ``FILER/LRN`` disambiguates an LRN used by several filers."""
    if "/" in ref:
        filer, lrn = ref.split("/", 1)
        return j.get_filing_by_key(filer, lrn)
    f = j.get_filing_by_mrn(ref)
    if f is not None:
        return f
    found = j.find_filings_by_lrn(ref)
    if len(found) > 1:
        raise LookupError(f"LRN {ref} is used by {len(found)} filers: give FILER_EORI/{ref}")
    if found:
        return found[0]
    return j.get_filing_by_message_id(ref)


class CommandFailed(Exception):
    """Printed by the command as ``ics2gw <cmd>: <message>`` with ``code`` as the exit code."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def load_filing(conf: Path, ref: str, *, writer: bool = False) -> tuple[Any, Any]:
    """(journal, filing) for a command; raises CommandFailed with the right exit code otherwise."""
    from gateway import exitcodes
    try:
        j = open_writer(conf) if writer else open_reader(conf)
        filing = find_filing(j, ref)
    except (FileNotFoundError, LookupError) as exc:
        raise CommandFailed(exitcodes.UNREADABLE, str(exc)) from None
    if filing is None:
        raise CommandFailed(exitcodes.INVALID, f"no filing matches {ref}")
    return j, filing
