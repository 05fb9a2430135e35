"""Opening the journal from a command: the [journal] path of the configuration, reader or writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any



def journal_path(conf: Path) -> Path:
    """The journal of ``conf``, read through the one loader (a typo anywhere is refused as `run` refuses it)."""
    from gateway.settings import load_settings
    return load_settings(conf, secrets=False).journal.path


def open_reader(conf: Path) -> Any:
    from gateway.journal.sqlite import SqliteJournal
    path = journal_path(conf)
    if not path.exists():
        raise FileNotFoundError(f"no journal at {path} yet (the daemon creates it: ics2gw run)")
    return SqliteJournal.open_reader(path)


def open_writer(conf: Path) -> Any:
    """A writer for CLI commands (resend, purge): no daemon lock, no recovery; SQLite serialises with the daemon."""
    from gateway.journal.sqlite import SqliteJournal
    return SqliteJournal.open(journal_path(conf), daemon=False)


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
