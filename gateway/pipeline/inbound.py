"""Inbound business messages: correlate, deliver to the inbox, journal durably, then hand back the Receipt.

This is the transport's ``InboundSink``. The order is what makes it safe: inbox files first (idempotent, named
by eb:MessageId), then one journal transaction holding the message, the Receipt we return, the correlation and
the state change; only after that commit does the transport answer with the Receipt. A repeated
(sender, eb:MessageId) gets the Receipt returned the first time and is not delivered again. A message that
matches no filing is kept as an orphan and reported, never dropped.

Pulled messages: the Receipt does not travel on the HTTP response but is POSTed afterwards by the puller's
acknowledgement lane, so it is journaled as *pending* with the message (same transaction) and marked
acknowledged when the TI took it (``ack_settled``); after a crash the puller replays every pending Receipt
(``pending_acks``). A crash between pulling and acknowledging therefore neither loses the message (it is
journaled, and the TI re-offers what it never saw acknowledged) nor delivers it twice (the re-offered copy is a
duplicate answered with the stored Receipt).

The same (sender, eb:MessageId) arriving twice at once (the TI resends a push whose answer it gave up waiting for,
while the first copy is still being delivered) is handled one copy at a time in this process: the second waits for
the first one's commit and is then answered as a duplicate, so the inbox files are written once and never written
again after the ERP took them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from gateway.config import Limits
from gateway.ebms.engine import InboundMessage as EngineInbound
from gateway.ebms.errors import EbmsFault
from gateway.ebms.engine import OutboundMessage as EngineOutbound
from gateway.ics2.catalogue import lookup
from gateway.ics2.inspect import PayloadError, PayloadFacts, inspect_payload
from gateway.journal.records import Filing
from gateway.journal.records import InboundMessage as JournalInbound
from gateway.journal.states import FilingState as S
from gateway.ops import metrics as ops_metrics
from gateway.pipeline.alerts import Alerts
from gateway.pipeline.attachments import declarations as facts_declarations
from gateway.pipeline.attachments import inbox_info
from gateway.pipeline.correlate import (
    ANSWERS_REQUEST, REF_ONLY, STANDALONE_REQUESTS, inbound_effect, is_filing_action, state_before_follow_up,
    unmatched_alert,
)
from gateway.pipeline.delivery import StagedPart, inbox_name, stage_payload, write_inbox, write_status
from gateway.transport.server import DeliveryResult as Delivered

log = logging.getLogger("ics2gw.inbound")


def _rejects_follow_up(action: str, answered: str | None, answered_id: str | None) -> bool:
    """IE3N99 / IE3N01 answering one of our follow-ups (an amendment, invalidation or answer), not the filing."""
    return bool(action in ("IE3N99", "IE3N01") and answered_id and answered and not is_filing_action(answered)
                and answered != "IE3N06")


def _suffix(mime_type: str | None) -> str:
    return {"application/xml": ".xml", "text/xml": ".xml", "application/pdf": ".pdf",
            "image/jpeg": ".jpg"}.get((mime_type or "").lower(), ".bin")


class InboundProcessor:
    def __init__(self, journal: Any, writer: Any, *, inbox_dir: Any, status_dir: Any, limits: Limits,
                 alerts: Alerts, clock: Any = None, pmodes: Any = None) -> None:
        self.journal, self.writer = journal, writer
        self.pmodes = pmodes   # to tell which P-Mode deviations the transport tolerated (gateway.pmode)
        self.inbox_dir, self.status_dir = inbox_dir, status_dir
        self.limits, self.alerts = limits, alerts
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        # (sender, MessageId) -> [lock, holders]: copies of one message in flight at once are delivered in turn
        self._in_flight: dict[tuple[str, str], list[Any]] = {}

    # ----------------------------------------------------------------------------------------- correlation
    def _find(self, action: str, ref_to: str | None, facts: PayloadFacts | None) -> tuple[Filing | None, str | None,
                                                                                          str, str | None]:
        """(filing, the action of our message this answers, how it was found, that message's MessageId)."""
        j = self.journal
        if ref_to:
            msg = j.get_message(ref_to)
            if msg is not None and msg.filing_id is not None:
                return j.get_filing(msg.filing_id), msg.action, "RefToMessageId", ref_to
            if msg is not None and msg.action in STANDALONE_REQUESTS:
                # the answer to a consultation sent for an ENS the journal does not know (ICD 3.1.9)
                return None, msg.action, "RefToMessageId", ref_to
        if action in REF_ONLY:
            # no usable RefToMessageId (pulled from the STI): the oldest unanswered request about its reference
            wanted = ANSWERS_REQUEST.get(action)
            for ref in ((facts.mrn, facts.functional_reference, facts.lrn) if facts and wanted else ()):
                req = j.find_unanswered_request(wanted, ref) if ref else None
                if req is not None:
                    return (j.get_filing(req.filing_id) if req.filing_id is not None else None, req.action,
                            "request-reference", req.message_id)
            return None, None, "none", None
        if facts is None:
            return None, None, "none", None
        spec = lookup(action)
        refs = [facts.functional_reference, facts.mrn, facts.lrn]
        if spec is not None and spec.reference == "LRN":
            refs = [facts.lrn, facts.functional_reference]
        for ref in (r for r in refs if r):
            filing = j.get_filing_by_mrn(ref)
            if filing is not None:
                return filing, None, "MRN", None
            candidates = j.find_filings_by_lrn(ref)
            if facts.person_filing_eori:
                candidates = [f for f in candidates if f.filer_eori == facts.person_filing_eori] or candidates
            if len(candidates) == 1:
                return candidates[0], candidates[0].action if ref == candidates[0].lrn else None, "LRN", None
        return None, None, "none", None

    def _pending_follow_up(self, filing_id: int) -> tuple[str | None, str | None]:
        """(action, MessageId) of the newest outbound message of the filing still waiting for a business answer."""
        messages = self.journal.lifecycle(filing_id).get("messages", [])
        pending = [m for m in messages if m.get("direction") == "out" and m.get("kind") == "user-message"
                   and not m.get("business_outcome")]
        return (pending[-1].get("action"), pending[-1].get("message_id")) if pending else (None, None)

    def _tolerated(self, um: Any, channel: str) -> tuple[str, ...]:
        """The P-Mode deviations the transport accepted for this message (delivered, alerted, kept visible)."""
        if self.pmodes is None:
            return ()
        try:
            return tuple(self.pmodes.match(um, channel=channel).tolerated)
        except EbmsFault as exc:  # the transport matched it without P-Modes or differently: say so, keep it
            return (f"{exc.code}: {exc.message}",)

    # ----------------------------------------------------------------------------------------- pulled receipts
    async def pending_acks(self) -> list[Any]:
        """Receipts of pulled messages journaled but not yet acknowledged by the TI (the puller replays them)."""
        return await asyncio.to_thread(self.journal.pending_acks)

    async def ack_settled(self, message_id: str, state: str, detail: dict[str, Any] | None = None) -> None:
        """The acknowledgement lane's report: the Receipt of pulled ``message_id`` was acknowledged / abandoned."""
        now = self.clock()
        await self.writer.submit(lambda j: j.set_ack_state(None, message_id, state, now=now, detail=detail))
        if state == "abandoned":
            self.alerts.raise_alert("receipt-not-acknowledged", message_id=message_id, **(detail or {}))

    # ----------------------------------------------------------------------------------------- the sink
    async def deliver(self, message: EngineInbound, content_type: str, body: bytes, receipt: EngineOutbound,
                      channel: str) -> Delivered:
        um = message.messaging.user_message
        assert um is not None
        sender = um.from_party.party_id
        key = (sender, um.message_id)
        slot = self._in_flight.setdefault(key, [asyncio.Lock(), 0])
        slot[1] += 1
        try:
            async with slot[0]:
                known = await asyncio.to_thread(self.journal.lookup_inbound, sender, um.message_id)
                if known is not None:
                    return Delivered(known.receipt_content_type or receipt.content_type, known.receipt, True)
                # payloads are decompressed to disk chunk by chunk (delivery.stage_payload), never whole in memory
                parts = await asyncio.to_thread(self._stage, message)
                try:
                    return await self._deliver(message, content_type, body, receipt, channel, um, sender, parts)
                finally:
                    for _, staged in parts:
                        staged.discard()  # no-op for parts already renamed into the inbox
        finally:
            slot[1] -= 1
            if slot[1] == 0:
                del self._in_flight[key]

    def _stage(self, message: EngineInbound) -> list[tuple[Any, StagedPart]]:
        staged: list[tuple[Any, StagedPart]] = []
        try:
            for p in message.payloads:
                staged.append((p, stage_payload(self.inbox_dir, p, self.limits)))
        except BaseException:
            for _, s in staged:
                s.discard()
            raise
        return staged

    async def _deliver(self, message: EngineInbound, content_type: str, body: bytes, receipt: EngineOutbound,
                       channel: str, um: Any, sender: str, parts: list[tuple[Any, StagedPart]]) -> Delivered:
        facts: PayloadFacts | None = None
        problem = None
        first: bytes | None = None          # the business payload, read once (bounded) for correlation and names
        if parts:
            try:
                first = await asyncio.to_thread(parts[0][1].read_for_inspection)
                facts = inspect_payload(first)
            except (PayloadError, ValueError) as exc:
                problem = f"payload cannot be read: {exc}"
        else:
            problem = "no payload"
        tolerated = self._tolerated(um, channel)
        filing, answered, found_by, answered_id = await asyncio.to_thread(self._find, um.action,
                                                                           um.ref_to_message_id, facts)
        if filing is not None and answered is None:
            answered, answered_id = await asyncio.to_thread(self._pending_follow_up, filing.id)
        now = self.clock()
        preview = None
        if filing is not None:  # what this message does to the filing: the inbox metadata says where it leads
            restore = None      # a rejected follow-up: the state before it, as the transaction below finds it
            if _rejects_follow_up(um.action, answered, answered_id):
                events = await asyncio.to_thread(self.journal.events, filing_id=filing.id, limit=1_000_000)
                restore = state_before_follow_up([e.to_dict() for e in events], answered_id) or filing.state
            preview = inbound_effect(um.action, current_state=filing.state, answered_action=answered,
                                     mrn=facts.mrn if facts else None,
                                     registered_state=S.AMENDED if filing.state == S.AMENDED else S.REGISTERED,
                                     restore_state=restore)
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
            "pmode_tolerated": list(tolerated),
            "consultation": ({"request_message_id": answered_id, "action": answered}
                             if filing is None and answered in STANDALONE_REQUESTS else None),
        }
        # only a message with more than one part can carry attachments: the others are not parsed twice
        declarations = facts_declarations(first) if len(parts) > 1 and facts is not None and first else []
        files = [(_suffix(p.part_info.mime_type), inbox_info(p.part_info.href, p.part_info.mime_type,
                                                             p.part_info.charset, declarations), data)
                 for p, data in parts]
        await asyncio.to_thread(write_inbox, self.inbox_dir, um.message_id, files, metadata)
        functional_ref = (facts.functional_reference or facts.mrn or facts.lrn) if facts else None
        record = JournalInbound(sender_party=sender, message_id=um.message_id, raw=body, content_type=content_type,
                                action=um.action, ref_to_message_id=um.ref_to_message_id,
                                functional_reference=functional_ref)
        outcome: dict[str, Any] = {}

        def txn(j: Any) -> Any:
            res = j.record_inbound(record, now=now, receipt=receipt.body, receipt_content_type=receipt.content_type,
                                   ack_pending=channel == "pull")
            if res.duplicate:
                return res
            if tolerated:
                j.append_event("pmode-tolerated", now=now, message_id=um.message_id,
                               filing_id=filing.id if filing is not None else None,
                               detail={"action": um.action, "channel": channel, "deviations": list(tolerated)})
            if filing is None and answered in STANDALONE_REQUESTS:
                result = "rejected" if um.action in ("IE3N99", "IE3N01") else "answered"
                j.settle_inbound_without_filing(um.message_id, sender, now=now, outcome=result,
                                                answers=answered_id)
                outcome["consultation"] = result
                return res
            if filing is None:
                j.record_orphan(um.message_id, sender, now=now,
                                reason=problem or f"{um.action} matches no filing (reference {functional_ref!r})")
                outcome["orphan"] = True
                return res
            current = j.get_filing(filing.id)
            registered = S.AMENDED if current.state == S.AMENDED else S.REGISTERED
            restore = None
            if _rejects_follow_up(um.action, answered, answered_id):
                # undo what the follow-up's receipt did (nothing, if it did nothing yet), and reopen the request
                # it answered: customs did not accept the answer, so the question stands and its timer restarts
                events = [e.to_dict() for e in j.events(filing_id=filing.id, limit=1_000_000)]
                restore = state_before_follow_up(events, answered_id) or current.state
                for req in j.list_requests(filing_id=filing.id, open_only=False):
                    if req.answer_message_id == answered_id and req.state != "open":
                        j.reopen_request(req.id, now=now, reason=f"{um.action} {um.message_id} rejected the answer")
                        outcome["reopened"] = req.kind
            effect = inbound_effect(um.action, current_state=current.state, answered_action=answered,
                                    mrn=facts.mrn if facts else None, registered_state=registered,
                                    restore_state=restore)
            j.attach_inbound(um.message_id, sender, filing.id, now=now, outcome=effect.event)
            if um.ref_to_message_id and effect.message_outcome and j.get_message(um.ref_to_message_id):
                j.set_business_outcome(um.ref_to_message_id, effect.message_outcome, now=now)
            elif um.action in REF_ONLY and answered_id and j.get_message(answered_id):
                j.set_business_outcome(answered_id, "answered", now=now)   # the consultation it answers
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
        if not res.duplicate and tolerated:
            self.alerts.raise_alert("pmode-tolerated", message_id=um.message_id, action=um.action, channel=channel,
                                    deviations="; ".join(tolerated))
        if not res.duplicate:
            if outcome.get("consultation") == "rejected":
                self.alerts.raise_alert("consultation-rejected", message_id=um.message_id, action=um.action,
                                        request_message_id=answered_id)
            if outcome.get("orphan"):
                ua = unmatched_alert(um.action)
                self.alerts.raise_alert(ua.kind, message_id=um.message_id, action=um.action, category=ua.category,
                                        unmatched=True, why=ua.why, reference=functional_ref,
                                        mrn=facts.mrn if facts else None, lrn=facts.lrn if facts else None)
            if outcome.get("filing"):
                await asyncio.to_thread(write_status, self.status_dir, outcome["filing"])
                ops_metrics.business_answer(um.action, filing.created_at if filing else None)
                if outcome.get("alert"):
                    f = outcome["filing"]
                    extra = {"reopened_request": outcome["reopened"]} if outcome.get("reopened") else {}
                    self.alerts.raise_alert(outcome["alert"], lrn=f["lrn"], mrn=f.get("mrn"), action=um.action,
                                            message_id=um.message_id, **extra)
            log.info("inbound message_id=%s action=%s channel=%s correlated_by=%s file=%s", um.message_id, um.action,
                     channel, found_by, inbox_name(um.message_id))
        return Delivered(res.receipt_content_type or receipt.content_type, res.receipt, res.duplicate)
