"""The ``hmrc-ssgb`` route inside the pipeline: intake of IE315/IE313, sending, and outcomes back to filings.

It shares everything above the wire with the ICS2 route: the journal (a filing keyed by filer EORI and LRN, one
outbound message row per submission holding the exact bytes sent, the event log), the sender's claims, retries
and alerts, inbox and status files. What differs is below:

* intake validates with the ``uk-ssgb`` profile (HMRC's XSD and business rules), checks that ``MesSenMES3``
  names the enrolled EORI (HMRC would answer 403), and journals the declaration as it is (no AS4 envelope);
* sending is a POST (IE315) or a PUT to ``/declarations/{mrn}`` (IE313); the 200's CorrelationId is journaled in
  the same commit as the send's outcome, before anything else happens;
* outcomes and notifications are polled (``poller.py``) and journaled here, correlated by CorrelationId first,
  then by LRN (IE328 / IE316) or MRN (IE304 / IE305 / IE351).

State mapping (docs/states.md): IE328 -> ``registered`` with the MRN; IE316 -> ``rejected`` with HMRC's functional
errors; 400 from the submission -> ``rejected`` with HMRC's findings; IE313 receipted -> ``pending-amendment``;
IE304 -> ``amended``; IE305 -> back to ``registered`` / ``amended`` (the ENS stands as it was); IE351 -> no state
change, an urgent ``risk-notification`` alert and the message in the inbox.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import re
from typing import Any

from gateway.hmrc import protocol
from gateway.hmrc.client import HmrcClient, Refused, Submitted
from gateway.hmrc.config import HmrcConfig
from gateway.ics2.inspect import PayloadError, inspect_payload
from gateway.ics2.validate import validate_payload
from gateway.journal.errors import DuplicateFilingConflict
from gateway.journal.records import Filing, InboundMessage, NewFiling, OutboundMessage
from gateway.journal.states import FilingState as S
from gateway.journal.states import can_transition
from gateway.pipeline.accept import Accepted, IntakeRefused, deterministic_message_id, keep_intake_ref
from gateway.pipeline.delivery import safe_name, write_inbox, write_status

log = logging.getLogger("ics2gw.hmrc")

ROUTE = "hmrc-ssgb"
SENDER_PARTY = "HMRC"          # the sender of polled outcomes in the journal's inbound duplicate elimination
HMRC_ROOTS = frozenset({"CC315A", "CC313A"})


_ROOT = re.compile(rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*\?>\s*)?(?:<!--.*?-->\s*)*<(?:[A-Za-z_][\w.-]*:)?"
                   rb"(CC31[35]A)[\s>/]", re.DOTALL)


def is_hmrc_payload(data: bytes) -> bool:
    """True when the root element is ``CC315A`` / ``CC313A`` (the only messages this route files). A look at the
    first bytes only, so an ICS2 payload is not parsed twice; the HMRC acceptor then parses and checks it fully."""
    return _ROOT.match(data[:8192]) is not None


def _utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# ------------------------------------------------------------------------------------------------------ intake
class HmrcAcceptor:
    """IE315 -> a new filing queued for HMRC; IE313 -> an amendment of the filing with that MRN."""

    def __init__(self, cfg: HmrcConfig, writer: Any, journal: Any, *, fqdn: str, validation: str = "block",
                 clock: Any = None) -> None:
        self.cfg, self.writer, self.journal, self.fqdn = cfg, writer, journal, fqdn
        self.validation = validation
        self.clock = clock or _utc

    def claims(self, data: bytes) -> bool:
        return is_hmrc_payload(data)

    async def accept(self, data: bytes, *, source: str | None = None,
                     intake_ref: dict[str, Any] | None = None) -> Accepted:
        try:
            decl = protocol.declaration_facts(data)
            facts = inspect_payload(data)
        except (protocol.ProtocolError, PayloadError) as exc:
            raise IntakeRefused("unreadable", f"the payload cannot be read as an IE315/IE313: {exc}",
                                status=400) from None
        if decl.sender_eori != self.cfg.eori:
            raise IntakeRefused("sender-eori", f"MesSenMES3 names {decl.sender_eori!r} but the HMRC route is "
                                f"enrolled as {self.cfg.eori!r} ([hmrc] eori); HMRC would answer 403 FORBIDDEN")
        findings: list[dict[str, Any]] = []
        warnings: list[dict[str, Any]] = []
        if self.validation != "off":
            report = await asyncio.to_thread(validate_payload, data, profile="uk-ssgb")
            findings = [f.as_dict() for f in report.errors]
            if findings and self.validation == "warn":
                warnings, findings = findings, []
        digest = hashlib.sha256(data).hexdigest()
        if decl.kind == "IE313":
            return await self._amendment(data, decl, digest, findings, warnings)
        if not decl.lrn:
            raise IntakeRefused("no-lrn", "the IE315 carries no LRN (HEAHEA/RefNumHEA4)")
        filer = facts.person_filing_eori or decl.sender_eori
        message_id = deterministic_message_id(self.fqdn, "hmrc-filing", filer, decl.lrn, digest)
        now = self.clock()
        new = NewFiling(filer_eori=filer, lrn=decl.lrn, sender_eori=decl.sender_eori, action="IE315",
                        payload_sha256=digest, priority="B", endpoint=self.cfg.endpoint, source=source)

        def txn(j: Any) -> tuple[Filing, bool]:
            filing, created = j.insert_filing(new, now=now)
            if not created:
                return filing, False
            keep_intake_ref(j, filing.id, intake_ref, now)
            if findings:
                return j.transition(filing.id, S.REJECTED_LOCALLY, now=now, event="rejected-locally",
                                    detail={"findings": findings[:50], "route": ROUTE},
                                    error=findings[0].get("text")), True
            j.enqueue_message(OutboundMessage(message_id=message_id, action="IE315", sealed=data,
                                              content_type=protocol.CONTENT_TYPE, filing_id=filing.id,
                                              priority="B", endpoint=self.cfg.endpoint), now=now)
            return j.transition(filing.id, S.QUEUED, now=now, event="queued",
                                detail={"message_id": message_id, "endpoint": self.cfg.endpoint, "route": ROUTE,
                                        "warnings": warnings[:20]}), True

        try:
            filing, created = await self.writer.submit(txn)
        except DuplicateFilingConflict as exc:
            raise IntakeRefused("conflict", f"{exc}. A new filing needs a new LRN", status=409) from None
        if findings:
            raise IntakeRefused("invalid", f"locally rejected by the uk-ssgb profile ({len(findings)} finding(s)): "
                                           f"{findings[0].get('text')}", findings=findings, filing=filing)
        return Accepted(filing, message_id, created, warnings=warnings)

    async def _amendment(self, data: bytes, decl: protocol.Declaration, digest: str,
                         findings: list[dict[str, Any]], warnings: list[dict[str, Any]]) -> Accepted:
        if findings:
            raise IntakeRefused("invalid", f"locally rejected by the uk-ssgb profile ({len(findings)} finding(s)): "
                                           f"{findings[0].get('text')}", findings=findings)
        if not decl.mrn or not protocol.MRN_RE.match(decl.mrn):
            raise IntakeRefused("no-mrn", f"the IE313 must carry the MRN it amends in HEAHEA/DocNumHEA5, not "
                                          f"{decl.mrn!r}")
        filing = self.journal.get_filing_by_mrn(decl.mrn)
        if filing is None or filing.endpoint != self.cfg.endpoint:
            raise IntakeRefused("unknown-filing", f"IE313 amends MRN {decl.mrn}, which matches no filing of the "
                                                  "HMRC route in the journal", status=404)
        message_id = deterministic_message_id(self.fqdn, "hmrc-amendment", str(filing.id), digest)
        if self.journal.get_message(message_id) is not None:
            return Accepted(filing, message_id, False, follow_up=True)
        now = self.clock()

        def txn(j: Any) -> Filing:
            j.enqueue_message(OutboundMessage(message_id=message_id, action="IE313", sealed=data,
                                              content_type=protocol.CONTENT_TYPE, filing_id=filing.id,
                                              priority="B", endpoint=self.cfg.endpoint), now=now)
            j.append_event("follow-up-queued", now=now, filing_id=filing.id, message_id=message_id,
                           detail={"action": "IE313", "route": ROUTE})
            return j.get_filing(filing.id)

        return Accepted(await self.writer.submit(txn), message_id, True, follow_up=True, warnings=warnings)


# ----------------------------------------------------------------------------------------------------- sending
class HmrcRoute:
    """What the sender calls for a message whose endpoint is the HMRC route's."""

    def __init__(self, cfg: HmrcConfig, client: HmrcClient, alerts: Any = None) -> None:
        self.cfg, self.client, self.alerts = cfg, client, alerts

    async def send(self, msg: Any) -> Any:
        mrn = None
        if msg.action == "IE313":
            try:
                mrn = protocol.declaration_facts(msg.sealed).mrn
            except protocol.ProtocolError as exc:
                return Refused(0, f"journaled IE313 unreadable: {exc}")
        return await self.client.submit(msg.sealed, kind=msg.action or "IE315", mrn=mrn)

    def after_send(self, j: Any, msg: Any, outcome: Any, filing: Filing | None, now: dt.datetime) -> Filing | None:
        """Inside the sender's commit: the CorrelationId, and the states only this route knows."""
        if filing is None:
            return filing
        if isinstance(outcome, Submitted):
            known = j.find_route_ref(ROUTE, outcome.correlation_id)
            if known is not None and known[0] != msg.message_id:
                # HMRC (or whatever answered) reused a correlation id of another of our messages. Raising here
                # would roll the commit back and the lease would send this filing AGAIN; instead the send
                # stands, the conflict is on record, and outcomes for that id meet the LRN/MRN cross-check.
                detail = {"correlation_id": outcome.correlation_id, "already_names": known[0],
                          "action": msg.action}
                j.append_event("hmrc-correlation-conflict", now=now, filing_id=filing.id,
                               message_id=msg.message_id, detail=detail)
                if self.alerts is not None:
                    self.alerts.raise_alert("hmrc-correlation-conflict", category="A", lrn=filing.lrn,
                                            message_id=msg.message_id, reason=f"correlation id "
                                            f"{outcome.correlation_id} already names message {known[0]}")
                return filing
            j.record_route_ref(ROUTE, outcome.correlation_id, message_id=msg.message_id, filing_id=filing.id,
                               now=now)
            j.append_event("hmrc-accepted", now=now, filing_id=filing.id, message_id=msg.message_id,
                           detail={"correlation_id": outcome.correlation_id, "action": msg.action})
            if msg.action == "IE313" and can_transition(filing.state, S.PENDING_AMENDMENT):
                filing = j.transition(filing.id, S.PENDING_AMENDMENT, now=now, event="amendment-sent",
                                      detail={"message_id": msg.message_id, "correlation_id": outcome.correlation_id})
            return filing
        if isinstance(outcome, Refused) and outcome.http_status == 400:
            detail = {"message_id": msg.message_id, "http_status": 400, "findings": list(outcome.findings)[:100]}
            if msg.action == filing.action and can_transition(filing.state, S.REJECTED):
                return j.transition(filing.id, S.REJECTED, now=now, event="rejected-by-hmrc", detail=detail,
                                    error=outcome.reason)
            j.append_event("amendment-refused-by-hmrc", now=now, filing_id=filing.id, message_id=msg.message_id,
                           detail=detail)
        return filing


# --------------------------------------------------------------------------------------------- outcomes back
class HmrcInbound:
    """The poller's sink: journal, correlate and deliver one outcome or notification, durably, once."""

    def __init__(self, journal: Any, writer: Any, *, inbox_dir: Any, status_dir: Any, alerts: Any,
                 clock: Any = None, endpoint: str = "hmrc") -> None:
        self.journal, self.writer = journal, writer
        self.endpoint = endpoint
        self.inbox_dir, self.status_dir, self.alerts = inbox_dir, status_dir, alerts
        self.clock = clock or _utc
        self.delivered = 0
        self.duplicates = 0

    def _find(self, o: protocol.Outcome, listed: str | None) -> tuple[Filing | None, str | None, str, str | None]:
        """(filing, our message it answers, how it was found, why it must NOT be attached although it points at a
        filing). The CorrelationId is the key, but an outcome that names one filing by CorrelationId and another
        by LRN / MRN, or answers the wrong kind of submission, is a conflict: orphaned and alerted, never applied
        to a filing that may not be its own."""
        j = self.journal
        if o.correlation_id and listed and o.correlation_id != listed:
            return None, None, "conflict", (f"listed as correlation id {listed} but its CorIdeMES25 is "
                                            f"{o.correlation_id}")
        cid = o.correlation_id or listed      # CorIdeMES25 is optional in CC316A / CC305A
        if o.kind == "IE328" and not (o.mrn and protocol.MRN_RE.match(o.mrn)):
            return None, None, "conflict", f"IE328 without a usable MRN ({o.mrn!r})"
        if cid:
            ref = j.find_route_ref(ROUTE, cid)
            if ref is not None and ref[1] is not None:
                filing = j.get_filing(ref[1])
                msg = j.get_message(ref[0])
                why = self._mismatch(o, filing, msg)
                return (None, None, "conflict", why) if why else (filing, ref[0], "CorrelationId", None)
        filing, how = None, "none"
        if o.kind in ("IE328", "IE316") and o.lrn:
            candidates = [f for f in j.find_filings_by_lrn(o.lrn)
                          if f.action == "IE315" and f.endpoint == self.endpoint]
            if len(candidates) == 1:
                filing, how = candidates[0], "LRN"
            elif len(candidates) > 1:   # same LRN from several filers: only the correlation id could tell
                return None, None, "ambiguous", (f"LRN {o.lrn} names {len(candidates)} filings (several filers) "
                                                 "and the correlation id none")
        if filing is None and o.mrn and o.kind != "IE328":
            by_mrn = j.get_filing_by_mrn(o.mrn)
            if by_mrn is not None and by_mrn.endpoint == self.endpoint:
                filing, how = by_mrn, "MRN"
        if filing is None:
            return None, None, "none", None
        why = self._mismatch(o, filing, None)
        return (None, None, "conflict", why) if why else (filing, None, how, None)

    def _mismatch(self, o: protocol.Outcome, filing: Filing | None, msg: Any) -> str | None:
        if filing is None:
            return "its correlation id names a filing that no longer exists"
        if filing.endpoint != self.endpoint:
            return f"it points at filing {filing.id}, which is not on the HMRC route"
        if msg is not None and o.kind != "IE351":
            want = "IE315" if o.kind in ("IE328", "IE316") else "IE313"
            if msg.action != want:
                return f"{o.kind} answers an {want}, but its correlation id names our {msg.action}"
        if o.lrn and o.kind in ("IE328", "IE316") and o.lrn != filing.lrn:
            return f"its LRN {o.lrn} is not the LRN {filing.lrn} of the filing its correlation id names"
        if o.mrn and filing.mrn and o.mrn != filing.mrn:
            return f"its MRN {o.mrn} is not the MRN {filing.mrn} of the filing it points at"
        if o.kind == "IE328" and o.mrn:
            other = self.journal.get_filing_by_mrn(o.mrn)
            if other is not None and other.id != filing.id:
                return f"its MRN {o.mrn} already belongs to filing {other.id}"
        return None

    @staticmethod
    def _amendments_open(j: Any, filing_id: int, answered_cid: str | None) -> tuple[int, bool]:
        """(IE313s accepted by HMRC and still unanswered, other than the one this outcome answers; whether any
        amendment was accepted before): an IE304 / IE305 for one amendment while another is pending leaves the
        filing pending-amendment."""
        events = j.events(filing_id=filing_id, limit=100_000)
        sent = {e.detail.get("correlation_id") for e in events
                if e.event == "hmrc-accepted" and e.detail.get("action") == "IE313"}
        answered = {e.detail.get("correlation_id") for e in events if e.event in ("hmrc-IE304", "hmrc-IE305")}
        return len(sent - answered - {answered_cid, None}), any(e.event == "hmrc-IE304" for e in events)

    async def deliver(self, o: protocol.Outcome, *, source_id: str) -> bool:
        """Returns True if delivered now, False if it had been journaled before (then only the ack is owed)."""
        message_id = f"hmrc-{source_id.replace('/', '-')}"
        known = await asyncio.to_thread(self.journal.lookup_inbound, SENDER_PARTY, message_id)
        if known is not None:
            self.duplicates += 1
            return False
        listed = source_id.split("/", 1)[1] if source_id.startswith("outcome/") else None
        filing, answered, found_by, conflict = await asyncio.to_thread(self._find, o, listed)
        cid = o.correlation_id or listed
        now = self.clock()
        metadata = {
            "message_id": message_id, "route": ROUTE, "action": o.kind, "meaning": o.meaning, "channel": "poll",
            "correlation_id": cid, "ref_to_message_id": answered, "conflict": conflict,
            "received": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "lrn": o.lrn, "mrn": o.mrn,
            "filing": ({"filer_eori": filing.filer_eori, "lrn": filing.lrn, "mrn": filing.mrn or o.mrn,
                        "state": filing.state} if filing else None),
            "errors": list(o.errors), "correlated_by": found_by,
        }
        await asyncio.to_thread(write_inbox, self.inbox_dir, message_id,
                                [(".xml", {"href": None, "mime_type": "application/xml", "charset": "UTF-8"},
                                  o.message)], metadata)
        record = InboundMessage(sender_party=SENDER_PARTY, message_id=message_id, raw=o.raw,
                                content_type="application/xml", action=o.kind, ref_to_message_id=answered,
                                functional_reference=o.mrn or o.lrn)
        result: dict[str, Any] = {}

        def txn(j: Any) -> Any:
            res = j.record_inbound(record, now=now, receipt=b"", receipt_content_type=None)
            if res.duplicate:
                return res
            if filing is None:
                j.record_orphan(message_id, SENDER_PARTY, now=now,
                                reason=f"{o.kind} (correlation id {cid}) "
                                       + (f"not attached: {conflict}" if conflict else "matches no filing"))
                result["orphan"] = True
                return res
            current = j.get_filing(filing.id)
            j.attach_inbound(message_id, SENDER_PARTY, filing.id, now=now, outcome=o.meaning)
            if answered and j.get_message(answered) is not None:
                j.set_business_outcome(answered, o.meaning, now=now)
            detail = {"message_id": message_id, "action": o.kind, "correlation_id": cid}
            event = f"hmrc-{o.kind}"
            if o.kind == "IE328" and can_transition(current.state, S.REGISTERED):
                current = j.transition(filing.id, S.REGISTERED, now=now, event=event, mrn=o.mrn, detail=detail)
            elif o.kind == "IE316" and can_transition(current.state, S.REJECTED):
                current = j.transition(filing.id, S.REJECTED, now=now, event=event, detail={
                    **detail, "findings": list(o.errors)[:100]}, error=(o.errors[0]["text"] if o.errors else
                                                                      "rejected by HMRC (IE316)"))
                result["alert"] = "rejected"
            elif o.kind in ("IE304", "IE305"):
                others, amended_before = self._amendments_open(j, filing.id, cid)
                findings = {"findings": list(o.errors)[:100]} if o.kind == "IE305" else {}
                if o.kind == "IE304" and current.state in (S.REGISTERED, S.AMENDED) and \
                        can_transition(current.state, S.PENDING_AMENDMENT):
                    current = j.transition(filing.id, S.PENDING_AMENDMENT, now=now, event="amendment-sent",
                                           detail=detail)
                back = S.AMENDED if (o.kind == "IE304" or amended_before) else S.REGISTERED
                if others == 0 and current.state == S.PENDING_AMENDMENT and can_transition(current.state, back):
                    current = j.transition(filing.id, back, now=now, event=event, detail={**detail, **findings})
                else:   # another amendment is still pending (or the filing moved on): record, do not move
                    j.append_event(event, now=now, filing_id=filing.id, message_id=message_id,
                                   detail={**detail, **findings, "amendments_pending": others})
                if o.kind == "IE305":
                    result["alert"] = "amendment-rejected"
            else:
                j.append_event(event, now=now, filing_id=filing.id, message_id=message_id, detail=detail)
                if o.kind == "IE351":
                    result["alert"] = "risk-notification"
                if o.mrn and not current.mrn:
                    current = j.update_filing(filing.id, now=now, mrn=o.mrn)
            result["filing"] = current.to_dict()
            return res

        res = await self.writer.submit(txn)
        if res.duplicate:
            self.duplicates += 1
            return False
        self.delivered += 1
        if result.get("orphan"):
            self.alerts.raise_alert("hmrc-correlation-conflict" if conflict else "orphan",
                                    category="A" if (o.kind == "IE351" or conflict) else "B", message_id=message_id,
                                    action=o.kind, reference=o.mrn or o.lrn, route=ROUTE,
                                    **({"reason": conflict} if conflict else {}))
        if result.get("filing"):
            f = result["filing"]
            await asyncio.to_thread(write_status, self.status_dir, f)
            if result.get("alert"):
                self.alerts.raise_alert(result["alert"], category="A" if o.kind == "IE351" else "B", lrn=f["lrn"],
                                        mrn=f.get("mrn"), action=o.kind, message_id=message_id, route=ROUTE)
        log.info("hmrc outcome message_id=%s action=%s correlated_by=%s file=%s", message_id, o.kind, found_by,
                 safe_name(message_id))
        return True
