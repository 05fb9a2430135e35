"""Plain records the journal takes and returns; no SQL types cross the package boundary.

Why frozen dataclasses: the pipeline receives snapshots; changing one never changes the journal, only the
journal's methods do, and each of them writes an event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class NewFiling:
    """An ENS filing as intake hands it over. The key is (filer_eori, lrn)."""
    filer_eori: str            # the person filing (declarant); with the LRN, the filing key
    lrn: str
    sender_eori: str           # the party sending on the filer's behalf (our identity, or a represented party)
    action: str                # IE3Fxx / IE3Axx / IE3Q04 / IE3N06 ... (= AS4 action for ICS2)
    payload_sha256: str        # hex digest of the ENS XML as received from the ERP
    priority: str = "B"        # ICD Table 7 category A/B/C: the sending lane
    endpoint: str | None = None  # the TI (endpoint name) the filing goes to; follow-ups go to the same one
    source: str | None = None  # where it came from (spool file name, API request id) for the operator


@dataclass(frozen=True)
class Filing:
    id: int
    filer_eori: str
    lrn: str
    sender_eori: str
    action: str
    payload_sha256: str
    state: str
    mrn: str | None
    priority: str
    endpoint: str | None
    last_error: str | None
    attempts: int
    source: str | None
    created_at: str
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["updated"] = self.updated_at
        d["created"] = self.created_at
        return d


@dataclass(frozen=True)
class OutboundMessage:
    """A sealed AS4 message ready to send; ``sealed`` is kept byte for byte (resends are byte-identical)."""
    message_id: str
    action: str | None
    sealed: bytes
    content_type: str
    filing_id: int | None = None
    kind: str = "user-message"
    ref_to_message_id: str | None = None
    priority: str = "B"
    endpoint: str | None = None
    functional_reference: str | None = None   # the MRN / LRN it concerns: answers without RefToMessageId find it


@dataclass(frozen=True)
class InboundMessage:
    """A verified inbound AS4 message (user message pushed or pulled) before correlation."""
    sender_party: str
    message_id: str
    raw: bytes
    content_type: str
    action: str | None = None
    ref_to_message_id: str | None = None
    kind: str = "user-message"
    functional_reference: str | None = None  # LRN or MRN found in the payload, for correlation and orphans


@dataclass(frozen=True)
class Message:
    id: int
    message_id: str
    ref_to_message_id: str | None
    direction: str
    kind: str
    action: str | None
    filing_id: int | None
    sender_party: str | None
    priority: str | None
    endpoint: str | None
    state: str
    attempts: int
    next_attempt_at: str | None
    claimed_by: str | None
    claim_expires_at: str | None
    receipt_outcome: str | None
    business_outcome: str | None
    functional_reference: str | None
    last_error: str | None
    content_type: str | None
    created_at: str
    updated_at: str
    sealed: bytes | None = field(default=None, repr=False)   # outbound: the sealed message; inbound: raw bytes
    receipt: bytes | None = field(default=None, repr=False)  # the signal we got (out) or returned (in)
    receipt_content_type: str | None = None
    retry_since: str | None = None      # outbound: when the current run of failed attempts began (time budget)
    ack_state: str | None = None        # pulled inbound: pending / acknowledged / abandoned (our Receipt's fate)

    def to_dict(self, *, with_bytes: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_bytes:
            d.pop("sealed")
            d.pop("receipt")
        return d


@dataclass(frozen=True)
class InboundResult:
    """What ``record_inbound`` did: a new message, or a duplicate answered with the Receipt returned the first time."""
    message: Message
    receipt: bytes
    receipt_content_type: str | None
    duplicate: bool


@dataclass(frozen=True)
class Orphan:
    id: int
    message: Message
    reason: str
    created_at: str
    resolved_at: str | None
    resolution: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "reason": self.reason, "created": self.created_at, "resolved": self.resolved_at,
                "resolution": self.resolution, "message": self.message.to_dict()}


@dataclass(frozen=True)
class CustomsRequest:
    id: int
    filing_id: int
    kind: str                   # IE3Q01 / IE3Q02 / IE3Q03
    request_message_id: str     # eb:MessageId of the inbound request
    state: str                  # open / answered / closed
    answer_message_id: str | None
    opened_at: str
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EndpointState:
    """One (TI endpoint, our PartyId): the durable pause after EBMS:0004/A001 and the health of the link."""
    endpoint: str
    party_id: str
    paused_at: str | None
    pause_reason: str | None
    pause_message_id: str | None
    resumed_at: str | None
    resumed_by: str | None
    last_ok_at: str | None
    failing_since: str | None
    outage_alerted_at: str | None
    updated_at: str

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "paused": self.paused}


@dataclass(frozen=True)
class PendingAck:
    """A Receipt journaled with a pulled message and not yet acknowledged by the TI (replayed after a restart)."""
    sender_party: str
    message_id: str
    receipt: bytes = field(repr=False)
    receipt_content_type: str | None = None


@dataclass(frozen=True)
class Event:
    id: int
    at: str
    filing_id: int | None
    message_id: str | None
    event: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvidenceItem:
    """One piece of non-repudiation evidence: a file of the evidence zip."""
    name: str           # suggested file name inside the zip, unique per filing
    kind: str           # sealed-message / receipt / inbound-message / returned-receipt
    message_id: str
    content_type: str | None
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class PurgeReport:
    filings: int
    messages: int
    events: int
    orphans: int
    dedup_entries: int
