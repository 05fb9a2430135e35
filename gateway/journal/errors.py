"""Exceptions of the journal: each names what was wrong, on which record, and what to do.

Why separate exceptions and not ``sqlite3`` errors: the pipeline must not know which database sits behind
the ``Journal`` protocol, so nothing backend-specific crosses this package's boundary.
"""

from __future__ import annotations


class JournalError(Exception):
    """Base class of every journal error."""


class SchemaTooNew(JournalError):
    """The journal file was migrated by a newer ics2gw; opening it with this version could corrupt it."""


class JournalLocked(JournalError):
    """Another gateway daemon holds the journal; two daemons on one SQLite file would resend each other's work."""


class ReadOnlyJournal(JournalError):
    """A write was attempted through a read-only connection (CLI ``status``, ``journal list``)."""


class NotFound(JournalError):
    """The filing, message or request does not exist."""


class InvalidTransition(JournalError):
    """A filing state change that the state machine does not allow (see docs/states.md)."""

    def __init__(self, old: str, new: str, *, filing: str = "") -> None:
        old, new = str(old), str(new)          # a StrEnum member reads as its value, not <MessageState.X: 'x'>
        self.old, self.new, self.filing = old, new, filing
        where = f"filing {filing}: " if filing else ""
        super().__init__(f"{where}invalid state transition {old!r} -> {new!r} (see docs/states.md for the allowed "
                         f"transitions out of {old!r})")


class DuplicateFilingConflict(JournalError):
    """Same filing key (filer EORI, LRN) as an existing filing but a different payload.

    Why an error and not an update: the first payload may already be at customs; silently replacing it would
    leave the ERP and customs disagreeing about what was declared. Use a new LRN or amend the filing.
    """

    def __init__(self, filer_eori: str, lrn: str, existing_digest: str, new_digest: str, state: str) -> None:
        self.filer_eori, self.lrn, self.state = filer_eori, lrn, state
        self.existing_digest, self.new_digest = existing_digest, new_digest
        super().__init__(
            f"filing ({filer_eori}, LRN {lrn}) already exists in state {state!r} with payload sha256 "
            f"{existing_digest[:16]}..., the new payload has sha256 {new_digest[:16]}...: a different ENS under an "
            f"LRN already used; give the new filing its own LRN, or send an amendment (IE3Axx) for a registered one")


class LeaseLost(JournalError):
    """A worker reported the outcome of a message it no longer holds (its claim expired and was taken over)."""


class JournalUnavailable(JournalError):
    """The database could not complete the work now (connection lost, failover, deadlock, lock timeout): nothing
    of the transaction is committed when ``before_commit`` is True, so the whole unit may simply run again.

    Why the distinction: a COMMIT whose answer was lost may or may not have happened; only work that failed before
    its COMMIT was sent is safe to repeat blindly (the group-commit writer retries that, and only that)."""

    def __init__(self, message: str, *, before_commit: bool = True) -> None:
        super().__init__(message)
        self.before_commit = before_commit
