"""``Journal``: the one interface the rest of the gateway uses for durable state.

Why a Protocol: all SQL lives behind it, so a PostgreSQL backend (several gateway instances sharing one journal,
claims with ``SELECT ... FOR UPDATE SKIP LOCKED``) can follow without touching the pipeline. Every write method is
atomic on its own and writes its event(s) in the same transaction; called inside ``JournalWriter.submit`` it joins
the batch transaction (group commit). Times are timezone-aware UTC ``datetime``; stored as ISO 8601 with Z.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from gateway.journal.records import (
    CustomsRequest, Event, EvidenceItem, Filing, InboundMessage, InboundResult, Message, NewFiling, Orphan,
    OutboundMessage, PurgeReport,
)


@runtime_checkable
class Journal(Protocol):
    # -- atomicity ---------------------------------------------------------------------------------------------
    def transaction(self) -> AbstractContextManager[None]:
        """An atomic unit; nested use is a savepoint. ``JournalWriter`` runs a batch in one, each change nested."""
        ...

    # -- filings ---------------------------------------------------------------------------------------------
    def insert_filing(self, new: NewFiling, *, now: datetime) -> tuple[Filing, bool]:
        """Journals a filing in ``received``; returns (filing, created). Same key and digest -> the existing
        filing and False (idempotent intake); same key, other digest -> ``DuplicateFilingConflict``."""
        ...

    def transition(self, filing_id: int, new_state: str, *, now: datetime, event: str | None = None,
                   detail: Mapping[str, Any] | None = None, mrn: str | None = None, error: str | None = None,
                   count_attempt: bool = False) -> Filing:
        """Moves a filing to ``new_state`` (``InvalidTransition`` if the state machine forbids it)."""
        ...

    def update_filing(self, filing_id: int, *, now: datetime, mrn: str | None = None, endpoint: str | None = None,
                      error: str | None = None, event: str = "updated",
                      detail: Mapping[str, Any] | None = None) -> Filing:
        """Records an MRN, the TI endpoint or an error without a state change (still logs an event)."""
        ...

    def get_filing(self, filing_id: int) -> Filing | None: ...
    def get_filing_by_key(self, filer_eori: str, lrn: str) -> Filing | None: ...
    def find_filings_by_lrn(self, lrn: str) -> list[Filing]: ...
    def get_filing_by_mrn(self, mrn: str) -> Filing | None: ...
    def get_filing_by_message_id(self, message_id: str) -> Filing | None: ...

    def list_filings(self, *, state: str | Sequence[str] | None = None, since: datetime | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
        """Newest first; dicts with at least lrn, action, state, mrn, updated (ISO 8601 Z)."""
        ...

    def count_by_state(self) -> dict[str, int]: ...

    def lifecycle(self, filing_id: int) -> dict[str, Any]:
        """The filing, its messages (without bytes), open and closed customs requests, and every event."""
        ...

    def evidence(self, filing_id: int) -> list[EvidenceItem]:
        """Raw sealed messages, receipts/errors received, inbound messages and the receipts we returned."""
        ...

    # -- outbound messages ----------------------------------------------------------------------------------------
    def enqueue_message(self, msg: OutboundMessage, *, now: datetime,
                        not_before: datetime | None = None) -> Message: ...

    def claim_due_messages(self, *, now: datetime, worker: str, limit: int = 1, lease_seconds: float = 300.0,
                           priorities: Sequence[str] | None = None) -> list[Message]:
        """Atomically leases up to ``limit`` due outbound messages (queued and due, or sending with an expired
        lease), most urgent lane first; two claimers never receive the same message."""
        ...

    def record_receipt(self, message_id: str, *, worker: str | None, now: datetime, outcome: str,
                       receipt: bytes | None, content_type: str | None = None) -> Message:
        """The message was receipted: keeps the signal bytes as evidence and ends the lease."""
        ...

    def schedule_retry(self, message_id: str, *, worker: str | None, now: datetime, next_attempt_at: datetime,
                       error: str, receipt: bytes | None = None, content_type: str | None = None) -> Message: ...

    def fail_message(self, message_id: str, *, worker: str | None, now: datetime, error: str, hold: bool = False,
                     receipt: bytes | None = None, content_type: str | None = None) -> Message:
        """Gives up (``failed``) or parks for the helpdesk (``held``); an error signal received is kept."""
        ...

    def requeue_message(self, message_id: str, *, now: datetime, reason: str) -> Message:
        """Operator resend of a failed or held message: the same sealed bytes, the same MessageId."""
        ...

    def cancel_message(self, message_id: str, *, now: datetime, reason: str) -> Message:
        """Operator abandon of a queued, failed or held message; it is never sent again."""
        ...

    def set_business_outcome(self, message_id: str, outcome: str, *, now: datetime) -> Message: ...
    def list_messages(self, *, state: str | None = None, direction: str = "out",
                      limit: int = 100) -> list[Message]: ...
    def get_message(self, message_id: str, *, direction: str = "out", sender_party: str | None = None,
                    with_bytes: bool = False) -> Message | None: ...
    def recover_in_flight(self, *, now: datetime) -> int:
        """Returns every ``sending`` message to ``queued`` (its worker died); the sealed bytes are unchanged."""
        ...

    # -- inbound ---------------------------------------------------------------------------------------------
    def record_inbound(self, msg: InboundMessage, *, now: datetime, receipt: bytes,
                       receipt_content_type: str | None = None) -> InboundResult:
        """Stores an inbound message and the Receipt we return; a repeated (sender, MessageId) gets the first
        Receipt back unchanged and nothing is stored twice."""
        ...

    def lookup_inbound(self, sender_party: str, message_id: str) -> InboundResult | None: ...
    def record_route_ref(self, route: str, ref: str, *, message_id: str, filing_id: int | None,
                         now: datetime) -> bool:
        """Keeps a reference another route (HMRC: the CorrelationId) returned for our message ``message_id``."""
        ...

    def find_route_ref(self, route: str, ref: str) -> tuple[str, int | None] | None:
        """(message_id, filing_id) of the message a route reference names, or None."""
        ...
    def attach_inbound(self, message_id: str, sender_party: str, filing_id: int, *, now: datetime,
                       outcome: str | None = None) -> Message: ...
    def record_orphan(self, message_id: str, sender_party: str, *, now: datetime, reason: str) -> Orphan: ...
    def list_orphans(self, *, include_resolved: bool = False, limit: int = 100) -> list[Orphan]: ...
    def resolve_orphan(self, orphan_id: int, *, now: datetime, resolution: str,
                       filing_id: int | None = None) -> Orphan: ...

    # -- customs requests (IE3Q01 / IE3Q02 / IE3Q03) -------------------------------------------------------------
    def open_request(self, filing_id: int, kind: str, request_message_id: str, *, now: datetime) -> CustomsRequest: ...
    def close_request(self, request_id: int, *, now: datetime, state: str = "answered",
                      answer_message_id: str | None = None) -> CustomsRequest: ...
    def list_requests(self, *, filing_id: int | None = None, open_only: bool = True) -> list[CustomsRequest]: ...

    # -- events and retention ----------------------------------------------------------------------------------
    def append_event(self, event: str, *, now: datetime, filing_id: int | None = None,
                     message_id: str | None = None, detail: Mapping[str, Any] | None = None) -> None: ...
    def events(self, *, filing_id: int | None = None, message_id: str | None = None,
               limit: int = 1000) -> list[Event]: ...
    # -- the event outbox (broker delivery) ----------------------------------------------------------------------
    def events_after(self, after_id: int, *, limit: int = 500) -> list[Event]:
        """Events after ``after_id`` in commit order (what a sink still has to deliver)."""
        ...

    def last_event_id(self) -> int: ...
    def outbox_cursor(self, name: str) -> int | None: ...
    def advance_outbox_cursor(self, name: str, event_id: int, *, now: datetime) -> None: ...
    def record_intake_ref(self, filing_id: int, *, channel: str, message_id: str | None,
                          correlation_id: str | None, now: datetime) -> None: ...
    def intake_ref(self, filing_id: int) -> dict[str, Any] | None: ...
    def bump_intake_attempt(self, key: str, *, now: datetime) -> int: ...

    def purge(self, older_than: datetime, *, now: datetime) -> PurgeReport:
        """Removes final filings (and their evidence) last updated before ``older_than``; never a non-final one."""
        ...

    def close(self) -> None: ...
