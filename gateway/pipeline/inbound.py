"""Inbound business messages: correlate, deliver to the inbox, journal durably, then hand back the Receipt.

This is the transport's ``InboundSink``. The order is what makes it safe: inbox files first (idempotent, named
by eb:MessageId), then one journal transaction holding the message, the Receipt we return, the correlation and
the state change; only after that commit does the transport answer with the Receipt. A repeated
(sender, eb:MessageId) gets the Receipt returned the first time and is not delivered again. A message that
matches no filing is kept as an orphan and reported, never dropped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from gateway.config import Limits
from gateway.ebms.engine import InboundMessage as EngineInbound
from gateway.ebms.engine import OutboundMessage as EngineOutbound
from gateway.ics2.catalogue import lookup
from gateway.ics2.inspect import PayloadError, PayloadFacts, inspect_payload
from gateway.journal.records import Filing
from gateway.journal.records import InboundMessage as JournalInbound
from gateway.journal.states import FilingState as S
from gateway.ops import metrics as ops_metrics
from gateway.pipeline.alerts import Alerts
from gateway.pipeline.correlate import REF_ONLY, inbound_effect
from gateway.pipeline.delivery import safe_name, write_inbox, write_status
from gateway.transport.server import DeliveryResult as Delivered

log = logging.getLogger("ics2gw.inbound")


def _suffix(mime_type: str | None) -> str:
    return {"application/xml": ".xml", "text/xml": ".xml", "application/pdf": ".pdf",
            "image/jpeg": ".jpg"}.get((mime_type or "").lower(), ".bin")


class InboundProcessor:
    def __init__(self, journal: Any, writer: Any, *, inbox_dir: Any, status_dir: Any, limits: Limits,
                 alerts: Alerts, clock: Any = None) -> None:
        self.journal, self.writer = journal, writer
        self.inbox_dir, self.status_dir = inbox_dir, status_dir
        self.limits, self.alerts = limits, alerts
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    # ----------------------------------------------------------------------------------------- correlation
    def _find(self, action: str, ref_to: str | None, facts: PayloadFacts | None) -> tuple[Filing | None, str | None,
                                                                                          str]:
        """(filing, the action of our message this answers, how it was found)."""
        j = self.journal
        if ref_to:
            msg = j.get_message(ref_to)
            if msg is not None and msg.filing_id is not None:
                return j.get_filing(msg.filing_id), msg.action, "RefToMessageId"
        if action in REF_ONLY or facts is None:
            return None, None, "none"
        spec = lookup(action)
        refs = [facts.functional_reference, facts.mrn, facts.lrn]
        if spec is not None and spec.reference == "LRN":
            refs = [facts.lrn, facts.functional_reference]
        for ref in (r for r in refs if r):
            filing = j.get_filing_by_mrn(ref)
            if filing is not None:
                return filing, None, "MRN"
            candidates = j.find_filings_by_lrn(ref)
            if facts.person_filing_eori:
                candidates = [f for f in candidates if f.filer_eori == facts.person_filing_eori] or candidates
            if len(candidates) == 1:
                return candidates[0], candidates[0].action if ref == candidates[0].lrn else None, "LRN"
        return None, None, "none"

    def _pending_follow_up(self, filing_id: int) -> str | None:
        """The action of the newest outbound message of the filing still waiting for a business answer."""
        messages = self.journal.lifecycle(filing_id).get("messages", [])
        pending = [m for m in messages if m.get("direction") == "out" and m.get("kind") == "user-message"
                   and not m.get("business_outcome")]
        return pending[-1].get("action") if pending else None

    # ----------------------------------------------------------------------------------------- the sink
    async def deliver(self, message: EngineInbound, content_type: str, body: bytes, receipt: EngineOutbound,
                      channel: str) -> Delivered:
        um = message.messaging.user_message
        assert um is not None
        sender = um.from_party.party_id
        known = await asyncio.to_thread(self.journal.lookup_inbound, sender, um.message_id)
        if known is not None:
            return Delivered(known.receipt_content_type or receipt.content_type, known.receipt, True)
        parts = await asyncio.to_thread(lambda: [(p, p.data(self.limits)) for p in message.payloads])
        facts: PayloadFacts | None = None
        problem = None
        if parts:
            try:
                facts = inspect_payload(parts[0][1])
            except PayloadError as exc:
                problem = f"payload cannot be read: {exc}"
        else:
            problem = "no payload"
        filing, answered, found_by = await asyncio.to_thread(self._find, um.action, um.ref_to_message_id, facts)
        if filing is not None and answered is None:
            answered = await asyncio.to_thread(self._pending_follow_up, filing.id)
        now = self.clock()
        preview = None
        if filing is not None:  # what this message does to the filing: the inbox metadata says where it leads
            preview = inbound_effect(um.action, current_state=filing.state, answered_action=answered,
                                     mrn=facts.mrn if facts else None,
                                     registered_state=S.AMENDED if filing.state == S.AMENDED else S.REGISTERED)
        metadata = {
            "message_id": um.message_id, "ref_to_message_id": um.ref_to_message_id,
            "conversation_id": um.conversation_id, "from": um.from_party.party_id, "to": um.to_party.party_id,
            "service": um.service, "action": um.action, "channel": channel,
            "received": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "filing": ({"filer_eori": filing.filer_eori, "lrn": filing.lrn,
                        "mrn": filing.mrn or (preview.learn_mrn if preview else None),
                        "state": (preview.new_state if preview else None) or filing.state} if filing else None),
            "lrn": facts.lrn if facts else None, "mrn": facts.mrn if facts else None,
            "functional_reference": facts.functional_reference if facts else None, "correlated_by": found_by,
        }
        files = [(_suffix(p.part_info.mime_type), {"href": p.part_info.href, "mime_type": p.part_info.mime_type,
                                                   "charset": p.part_info.charset}, data) for p, data in parts]
        await asyncio.to_thread(write_inbox, self.inbox_dir, um.message_id, files, metadata)
        functional_ref = (facts.functional_reference or facts.mrn or facts.lrn) if facts else None
        record = JournalInbound(sender_party=sender, message_id=um.message_id, raw=body, content_type=content_type,
                                action=um.action, ref_to_message_id=um.ref_to_message_id,
                                functional_reference=functional_ref)
        outcome: dict[str, Any] = {}

        def txn(j: Any) -> Any:
            res = j.record_inbound(record, now=now, receipt=receipt.body, receipt_content_type=receipt.content_type)
            if res.duplicate:
                return res
            if filing is None:
                j.record_orphan(um.message_id, sender, now=now,
                                reason=problem or f"{um.action} matches no filing (reference {functional_ref!r})")
                outcome["orphan"] = True
                return res
            current = j.get_filing(filing.id)
            registered = S.AMENDED if current.state == S.AMENDED else S.REGISTERED
            effect = inbound_effect(um.action, current_state=current.state, answered_action=answered,
                                    mrn=facts.mrn if facts else None, registered_state=registered)
            j.attach_inbound(um.message_id, sender, filing.id, now=now, outcome=effect.event)
            if um.ref_to_message_id and effect.message_outcome and j.get_message(um.ref_to_message_id):
                j.set_business_outcome(um.ref_to_message_id, effect.message_outcome, now=now)
            mrn = effect.learn_mrn if effect.learn_mrn and not current.mrn else None
            if effect.via:
                current = j.transition(filing.id, effect.via, now=now, event=effect.event, mrn=mrn,
                                       detail={"message_id": um.message_id, "action": um.action})
                mrn = None
            if effect.new_state:
                current = j.transition(filing.id, effect.new_state, now=now, event=effect.event, mrn=mrn,
                                       detail={"message_id": um.message_id, "action": um.action})
            else:
                j.append_event(effect.event, now=now, filing_id=filing.id, message_id=um.message_id,
                               detail={"action": um.action})
                if mrn:
                    current = j.update_filing(filing.id, now=now, mrn=mrn)
            if effect.open_request:
                j.open_request(filing.id, effect.open_request, um.message_id, now=now)
            outcome.update(filing=current.to_dict(), alert=effect.alert)
            return res

        res = await self.writer.submit(txn)
        if not res.duplicate:
            if outcome.get("orphan"):
                self.alerts.raise_alert("orphan", message_id=um.message_id, action=um.action,
                                        reference=functional_ref)
            if outcome.get("filing"):
                await asyncio.to_thread(write_status, self.status_dir, outcome["filing"])
                ops_metrics.business_answer(um.action, filing.created_at if filing else None)
                if outcome.get("alert"):
                    f = outcome["filing"]
                    self.alerts.raise_alert(outcome["alert"], lrn=f["lrn"], mrn=f.get("mrn"), action=um.action,
                                            message_id=um.message_id)
            log.info("inbound message_id=%s action=%s channel=%s correlated_by=%s file=%s", um.message_id, um.action,
                     channel, found_by, safe_name(um.message_id))
        return Delivered(res.receipt_content_type or receipt.content_type, res.receipt, res.duplicate)
