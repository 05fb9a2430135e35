"""Taking an ENS in: inspect, pre-validate, route, seal, and journal it durably before saying yes.

Shared by the spool directory, the HTTP submit API and ``ics2gw submit``. The sealed message is made once, here,
and journaled with the filing: every retry and every operator resend sends those very bytes under the same
eb:MessageId. The MessageId is derived from (person filing, reference, payload digest), so an intake that is
interrupted and repeated after a crash finds its own earlier work instead of filing twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.ebms.engine import Engine
from gateway.ebms.errors import EbmsFault
from gateway.ics2 import binaryfiles
from gateway.ics2.binaryfiles import Matched, Supplied
from gateway.ics2.catalogue import lookup
from gateway.ics2.charset import PayloadEncodingError, check_declared_encoding, check_no_doctype, check_utf8
from gateway.ics2.inspect import PayloadError, PayloadFacts, facts_from_tree
from gateway.ics2.validate import validate_payload
from gateway.ics2.xmlutil import parse_payload
from gateway.journal.errors import DuplicateFilingConflict
from gateway.journal.records import Filing, NewFiling, OutboundMessage
from gateway.journal.states import FilingState as S
from gateway.pipeline.attachments import (
    WireCapExceeded,
    check_wire_caps,
    describe,
    outbound_parts,
    submission_digest,
)
from gateway.xmlsafe import XmlRejected
from gateway.pipeline.correlate import STANDALONE_REQUESTS

_ID_NAMESPACE = uuid.UUID("6f1c2c4e-8a51-4b7e-9d0e-1c2b3a4d5e6f")


class IntakeRefused(ValueError):
    """The ENS cannot be taken in; ``reason`` is machine-readable, the message says what to do."""

    def __init__(self, reason: str, message: str, *, findings: list[dict[str, Any]] | None = None,
                 status: int = 422, filing: Filing | None = None) -> None:
        self.reason, self.findings, self.status = reason, findings or [], status
        self.filing = filing            # the filing journaled as rejected-locally, if one was
        super().__init__(message)


@dataclass(frozen=True)
class Accepted:
    filing: Filing | None               # None: a consultation (IE3Q05) of an ENS the journal does not know
    message_id: str | None
    created: bool                       # False: the same filing was already journaled (idempotent intake)
    follow_up: bool = False
    warnings: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)   # what was sealed with the payload
    reference: str | None = None        # a consultation's MRN / transport document reference

    def to_dict(self) -> dict[str, Any]:
        if self.filing is None:
            return {"lrn": None, "filer_eori": None, "mrn": self.reference, "action": "IE3Q05", "state": "queued",
                    "message_id": self.message_id, "created": self.created, "follow_up": self.follow_up,
                    "consultation": True, "warnings": self.warnings}
        return {"lrn": self.filing.lrn, "filer_eori": self.filing.filer_eori, "mrn": self.filing.mrn,
                "action": self.filing.action, "state": self.filing.state, "message_id": self.message_id,
                "created": self.created, "follow_up": self.follow_up, "warnings": self.warnings,
                "attachments": self.attachments}


def deterministic_message_id(fqdn: str, *parts: str) -> str:
    return f"{uuid.uuid5(_ID_NAMESPACE, '/'.join(parts))}@{fqdn}"


class Acceptor:
    """Turns ENS bytes into a journaled, sealed, queued filing (or a follow-up message on an existing one)."""

    def __init__(self, engine: Engine, writer: Any, journal: Any, router: Any, *, validation: str = "block",
                 validation_profile: str | None = None, clock: Any = None, hmrc: Any = None) -> None:
        self.engine, self.writer, self.journal, self.router = engine, writer, journal, router
        self.hmrc = hmrc          # the HMRC S&S GB route's acceptor (IE315 / IE313), when [hmrc] is enabled
        self.validation, self.validation_profile = validation, validation_profile
        self.clock = clock or engine.clock

    def inspect(self, data: bytes, action: str | None,
                attachments: Sequence[Supplied] = ()) -> tuple[PayloadFacts, str, list[Matched]]:
        """Reads the payload once and refuses, before anything is sealed: a payload that is not UTF-8 or has a
        DOCTYPE, an unknown or mismatched action, and attachments that do not match its binaryFile list."""
        try:
            check_utf8(data)  # ICD 4.2.5: we label the payload utf-8, so it must be
            root = parse_payload(data)
            check_declared_encoding(root)  # what the parser read, however the declaration is padded
            check_no_doctype(root)  # on the tree: a byte search misses a DOCTYPE in another encoding
            facts = facts_from_tree(root)
        except PayloadEncodingError as exc:
            raise IntakeRefused(exc.reason, str(exc), status=415 if exc.reason == "not-utf-8" else 400) from None
        except XmlRejected as exc:  # a DOCTYPE found by the byte check keeps its own reason
            raise IntakeRefused("dtd" if exc.reason == "dtd" else "unreadable", f"the payload cannot be read as an "
                                f"ICS2 message: payload is not acceptable XML: {exc}", status=400) from None
        except PayloadError as exc:
            raise IntakeRefused("unreadable", f"the payload cannot be read as an ICS2 message: {exc}", status=400)
        act = action or facts.message_id
        spec = lookup(act)
        if spec is not None and spec.family == "ics1" and spec.direction == "t2c":
            raise IntakeRefused("no-route", f"{act} is an ICS phase-1 message for the UK S&S GB service (HMRC): "
                                            "enable the [hmrc] route to file it")
        if spec is None or spec.family != "ics2" or spec.direction != "t2c":
            raise IntakeRefused("unknown-action", f"{act} is not an ICS2 trader-to-customs message")
        if act != facts.message_id:
            raise IntakeRefused("action-mismatch", f"the action {act} does not match the payload's root element "
                                                   f"{facts.message_id}")
        matched, problems = binaryfiles.match(act, binaryfiles.declared(root), attachments)
        if problems:
            more = f" (and {len(problems) - 1} more problem(s), listed in findings)" if len(problems) > 1 else ""
            raise IntakeRefused("attachments", f"attachments refused: {problems[0].text}{more}",
                                findings=[p.as_dict() for p in problems])
        return facts, act, matched

    async def accept(self, data: bytes, *, action: str | None = None, source: str | None = None,
                     endpoint: str | None = None, attachments: Sequence[Supplied] = (),
                     intake_ref: dict[str, Any] | None = None) -> Accepted:
        """``intake_ref``: what a broker intake called the message ({channel, message_id, correlation_id}); kept
        with a new filing in the same commit, so every event of the filing can echo it."""
        if self.hmrc is not None and self.hmrc.claims(data):
            if attachments:
                raise IntakeRefused("attachments", "the HMRC S&S GB route takes the IE315/IE313 alone, without "
                                                   "attachments", status=422)
            return await self.hmrc.accept(data, source=source, intake_ref=intake_ref)
        facts, act, matched = self.inspect(data, action, attachments)
        spec = lookup(act)
        assert spec is not None
        warnings: list[dict[str, Any]] = []
        findings: list[dict[str, Any]] = []
        if self.validation != "off":
            report = await asyncio.to_thread(validate_payload, data, profile=self.validation_profile, action=act)
            findings = [f.as_dict() for f in report.errors]
            if not report.valid and self.validation == "warn":
                warnings, findings = findings, []
        digest = submission_digest(data, matched)  # the payload's SHA-256 when nothing is attached
        filer = facts.person_filing_eori or own_eori(self.engine.party_id)
        if spec.kind == "filing" or act == "IE3N06":
            return await self._new_filing(data, facts, act, spec.category, filer, digest, findings, warnings,
                                          source, endpoint, matched, intake_ref)
        return await self._follow_up(data, facts, act, spec.category, filer, digest, findings, warnings, matched)

    def _seal(self, data: bytes, act: str, ep: Any, message_id: str, matched: Sequence[Matched]) -> Any:
        """Seals payload and attachments, then refuses what the TI's receive caps would refuse (a decompression
        bomb by ratio or size): refused here, at intake, instead of sent and failed."""
        try:
            sealed = self.engine.user_message(action=act, payload=data, to_party=Engine.customs_party(ep.party_id),
                                              message_id=message_id, attachments=outbound_parts(matched))
            sizes = {f"payload-{message_id}": len(data), **{m.identification: len(m.data) for m in matched}}
            check_wire_caps(sealed.content_type, sealed.body, sizes, self.engine.limits)
        except EbmsFault as exc:
            raise IntakeRefused("not-sendable", exc.message) from None
        except WireCapExceeded as exc:
            raise IntakeRefused("decompression-bomb", f"the TI would refuse this message as a decompression bomb: "
                                                      f"{exc}", status=413) from None
        return sealed

    async def _new_filing(self, data: bytes, facts: PayloadFacts, act: str, priority: str, filer: str,
                          digest: str, findings: list[dict[str, Any]], warnings: list[dict[str, Any]],
                          source: str | None, endpoint: str | None, matched: Sequence[Matched] = (),
                          intake_ref: dict[str, Any] | None = None) -> Accepted:
        if not facts.lrn:
            raise IntakeRefused("no-lrn", f"the {act} payload carries no LRN, so it cannot be correlated")
        try:
            ep = self.router.route(office_of_first_entry=facts.office_of_first_entry,
                                   member_state=facts.first_entry_country, override=endpoint).endpoint
        except LookupError as exc:
            raise IntakeRefused("routing", str(exc)) from None
        message_id = deterministic_message_id(self.engine.fqdn, "filing", filer, facts.lrn, digest)
        described = describe(matched)
        sealed = None
        if not findings:
            sealed = await asyncio.to_thread(self._seal, data, act, ep, message_id, matched)
        now = self.clock()
        new = NewFiling(filer_eori=filer, lrn=facts.lrn, sender_eori=self.engine.party_id, action=act,
                        payload_sha256=digest, priority=priority, endpoint=ep.name, source=source)

        def txn(j: Any) -> tuple[Filing, bool]:
            filing, created = j.insert_filing(new, now=now)
            if not created:
                return filing, False
            keep_intake_ref(j, filing.id, intake_ref, now)
            if findings:
                filing = j.transition(filing.id, S.REJECTED_LOCALLY, now=now, event="rejected-locally",
                                      detail={"findings": findings[:50]}, error=findings[0].get("text"))
                return filing, True
            j.enqueue_message(OutboundMessage(message_id=message_id, action=act, sealed=sealed.body,
                                              content_type=sealed.content_type, filing_id=filing.id,
                                              priority=priority, endpoint=ep.name), now=now)
            filing = j.transition(filing.id, S.QUEUED, now=now, event="queued",
                                  detail={"message_id": message_id, "endpoint": ep.name, "warnings": warnings[:20],
                                          **({"attachments": described} if described else {})})
            return filing, True

        try:
            filing, created = await self.writer.submit(txn)
        except DuplicateFilingConflict as exc:
            raise IntakeRefused("conflict", f"{exc}. A new filing needs a new LRN; to re-file after IE3N99 use "
                                            "a new LRN or `ics2gw resend --reseal`", status=409) from None
        if findings:  # the same invalid payload again is refused again (idempotent), not "accepted"
            raise IntakeRefused("invalid", f"locally rejected ({len(findings)} finding(s)): "
                                           f"{findings[0].get('text')}", findings=findings, filing=filing)
        return Accepted(filing, message_id if not findings else None, created, warnings=warnings,
                        attachments=described if not findings else [])

    async def _follow_up(self, data: bytes, facts: PayloadFacts, act: str, priority: str, filer: str, digest: str,
                         findings: list[dict[str, Any]], warnings: list[dict[str, Any]],
                         matched: Sequence[Matched] = ()) -> Accepted:
        if findings:
            raise IntakeRefused("invalid", f"locally rejected ({len(findings)} finding(s)): "
                                           f"{findings[0].get('text')}", findings=findings)
        ref = facts.mrn or facts.functional_reference
        filing = self.journal.get_filing_by_mrn(ref) if ref else None
        if filing is None and facts.lrn:
            filing = self.journal.get_filing_by_key(filer, facts.lrn)
        if filing is None and act in STANDALONE_REQUESTS:
            return await self._consultation(data, facts, act, priority, filer, digest, ref, warnings)
        if filing is None:
            raise IntakeRefused("unknown-filing", f"{act} refers to {ref or facts.lrn!r}, which matches no filing "
                                                  "in the journal (a follow-up needs the registered ENS's MRN)",
                                status=404)
        ep = self.router.route(recorded=filing.endpoint).endpoint  # follow-ups go to the TI of the filing
        message_id = deterministic_message_id(self.engine.fqdn, "follow-up", str(filing.id), act, digest)
        described = describe(matched)
        if self.journal.get_message(message_id) is not None:
            return Accepted(filing, message_id, False, follow_up=True, attachments=described)
        sealed = await asyncio.to_thread(self._seal, data, act, ep, message_id, matched)
        now = self.clock()

        def txn(j: Any) -> Filing:
            j.enqueue_message(OutboundMessage(message_id=message_id, action=act, sealed=sealed.body,
                                              content_type=sealed.content_type, filing_id=filing.id,
                                              priority=priority, endpoint=ep.name, functional_reference=ref),
                              now=now)
            j.append_event("follow-up-queued", now=now, filing_id=filing.id, message_id=message_id,
                           detail={"action": act, **({"attachments": described} if described else {})})
            return j.get_filing(filing.id)

        return Accepted(await self.writer.submit(txn), message_id, True, follow_up=True, warnings=warnings,
                        attachments=described)


    async def _consultation(self, data: bytes, facts: PayloadFacts, act: str, priority: str, filer: str,
                            digest: str, ref: str | None, warnings: list[dict[str, Any]]) -> Accepted:
        """IE3Q05 for an ENS the journal does not know (filed by another party, or before this gateway; ICD
        3.1.9: by MRN, master or house transport document): a journaled message of no filing. Its answer (IE3R08
        or IE3N99) is correlated by RefToMessageId (``pipeline/inbound.py``)."""
        try:
            ep = self.router.route(office_of_first_entry=facts.office_of_first_entry,
                                   member_state=facts.first_entry_country).endpoint
        except LookupError as exc:
            raise IntakeRefused("routing", str(exc)) from None
        message_id = deterministic_message_id(self.engine.fqdn, "consultation", filer, digest)
        if self.journal.get_message(message_id) is not None:
            return Accepted(None, message_id, False, follow_up=True, reference=ref)
        sealed = await asyncio.to_thread(self.engine.user_message, action=act, payload=data,
                                         to_party=Engine.customs_party(ep.party_id), message_id=message_id)
        now = self.clock()

        def txn(j: Any) -> None:
            j.enqueue_message(OutboundMessage(message_id=message_id, action=act, sealed=sealed.body,
                                              content_type=sealed.content_type, filing_id=None,
                                              priority=priority, endpoint=ep.name, functional_reference=ref),
                              now=now)

        await self.writer.submit(txn)
        return Accepted(None, message_id, True, follow_up=True, warnings=warnings, reference=ref)


def keep_intake_ref(j: Any, filing_id: int, intake_ref: dict[str, Any] | None, now: Any) -> None:
    """Inside the intake's transaction: what a broker intake called the message that created the filing."""
    if intake_ref:
        j.record_intake_ref(filing_id, channel=intake_ref["channel"], message_id=intake_ref.get("message_id"),
                            correlation_id=intake_ref.get("correlation_id"), now=now)


def own_eori(party_id: str) -> str:
    """The EORI inside a ``[system@]EORI[@MS]`` party id."""
    from gateway.config import PARTY_ID_RE
    m = PARTY_ID_RE.match(party_id)
    return m.group("eori") if m else party_id
