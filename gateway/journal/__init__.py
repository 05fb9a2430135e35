"""Durable state of the gateway: schema and migrations, the filing state machine, queries, group commit.

The only package of the gateway that speaks SQL. Everything else uses the ``Journal`` protocol (``interface``),
its records (``records``) and ``JournalWriter`` (group commit). See docs/states.md for the filing states.
"""

from gateway.journal.committer import JournalWriter, WriterStats
from gateway.journal.config import JournalConfig, read_journal_config
from gateway.journal.errors import (
    DuplicateFilingConflict, InvalidTransition, JournalError, JournalLocked, LeaseLost, NotFound, ReadOnlyJournal,
    SchemaTooNew,
)
from gateway.journal.interface import Journal
from gateway.journal.records import (
    CustomsRequest, Event, EvidenceItem, Filing, InboundMessage, InboundResult, Message, NewFiling, Orphan,
    OutboundMessage, PurgeReport,
)
from gateway.journal.core import JournalCore
from gateway.journal.sqlite import SqliteJournal
from gateway.journal.states import (
    FILING_STATES, FINAL_STATES, FilingState, MessageState, allowed_next, can_transition, is_final,
)
from gateway.journal.timeutil import iso, parse_iso, utcnow

__all__ = [
    "CustomsRequest", "DuplicateFilingConflict", "Event", "EvidenceItem", "FILING_STATES", "FINAL_STATES", "Filing",
    "FilingState", "InboundMessage", "InboundResult", "InvalidTransition", "Journal", "JournalConfig",
    "JournalError", "JournalLocked", "JournalWriter", "LeaseLost", "Message", "MessageState", "NewFiling",
    "NotFound", "Orphan", "OutboundMessage", "PurgeReport", "ReadOnlyJournal", "SchemaTooNew", "SqliteJournal", "JournalCore",
    "WriterStats", "allowed_next", "can_transition", "is_final", "iso", "parse_iso", "read_journal_config",
    "utcnow",
]
