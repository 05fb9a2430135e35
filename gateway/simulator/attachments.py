"""The simulator's check of binary attachments, as the STI makes it (ICD 3.1.11, 4.2.5).

Two stages, like the real Trader Interface:

* **AS4 level** (``envelope_fault``, before the receipt): the P-Mode's payload profile. An attachment
  ``eb:PartInfo`` on an action that may carry none, or one whose ``MimeType`` is not ``application/pdf`` or
  ``image/jpeg``, is answered with EBMS:0010 (ProcessingModeMismatch), as Domibus answers a payload-profile
  violation; no receipt, nothing registered.
* **Business level** (``link_decision``, after the receipt): the link between the payload's
  ``binaryFile/identification`` and the parts. A declared file without a part, a part no ``binaryFile`` names,
  a MimeType that differs from the declared ``MIME``, or content that is not what its type says is answered
  with IE3N99 (one error per problem, code ``CL0010``, pointer ``/<action>/binaryFile[n]``), and the filing is
  not registered.

The check itself is ``gateway.ics2.binaryfiles.match``: the one the gateway's intake applies before sealing, so
the two sides cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import logging
from urllib.parse import unquote

from gateway.config import Limits
from gateway.ebms.engine import InboundMessage
from gateway.ebms.errors import EbmsFault
from gateway.ics2 import binaryfiles, catalogue
from gateway.ics2.inspect import PayloadError, facts_from_tree
from gateway.ics2.xmlutil import parse_payload
from gateway.simulator import business, replies
from gateway.xmlsafe import XmlRejected

log = logging.getLogger("ics2gw.simulator")

LINK_ERROR_CODE = "CL0010"


def _ident(href: str | None) -> str:
    """The Content-ID a ``cid:`` URL names (RFC 2392: the URL is the percent-encoded Content-ID)."""
    return unquote(href[4:]) if href and href.lower().startswith("cid:") else (href or "")


def envelope_fault(msg: InboundMessage) -> EbmsFault | None:
    """EBMS:0010 for attachment parts the P-Mode's payload profile does not allow; None when they fit."""
    um = msg.messaging.user_message
    if um is None or um.is_ping or len(msg.payloads) < 2:
        return None
    spec = catalogue.lookup(um.action)
    extra = msg.payloads[1:]
    if not (spec and spec.attachments_allowed):
        return EbmsFault("EBMS:0010", f"{um.action} carries {len(extra)} binary attachment(s); its payload profile "
                                      "allows the business payload only (ICD 3.1.11)", ref_to_message_id=um.message_id)
    for p in extra:
        mt = binaryfiles.media_type(p.part_info.mime_type)
        if mt not in binaryfiles.ALLOWED_MIME_TYPES:
            return EbmsFault("EBMS:0010", f"attachment {p.part_info.href} has MimeType {p.part_info.mime_type!r}; "
                                          "the payload profile allows application/pdf and image/jpeg only (ICD "
                                          "4.2.5)", ref_to_message_id=um.message_id)
    return None


def link_decision(msg: InboundMessage, payload: bytes | None, limits: Limits,
                  now: dt.datetime) -> business.Decision | None:
    """An IE3N99 decision when the binaryFile list and the attachment parts do not match; None when they do
    (or when the payload cannot be read: the business validation then answers as it always does)."""
    um = msg.messaging.user_message
    if um is None or payload is None:
        return None
    if len(msg.payloads) < 2 and b"inaryFile" not in payload and b"inaryfile" not in payload:
        return None   # nothing declared, nothing attached: no second parse of every ordinary filing
    try:
        root = parse_payload(payload)
        facts = facts_from_tree(root)
    except (XmlRejected, PayloadError):
        return None
    declared = binaryfiles.declared(root)
    extra = msg.payloads[1:]
    if not declared and not extra:
        return None
    supplied = []
    for p in extra:
        try:
            data = p.data(limits)
        except EbmsFault:
            data = b""
        supplied.append(binaryfiles.Supplied(_ident(p.part_info.href), p.part_info.mime_type, data,
                                             f"eb:PartInfo {p.part_info.href}"))
    matched, problems = binaryfiles.match(um.action, declared, supplied)
    log.info("event=attachments message_id=%s action=%s declared=%d parts=%s problems=%s", um.message_id,
             um.action, len(declared), ",".join(f"{m.identification}:{m.mime_type}:{len(m.data)}" for m in matched)
             or "none", ",".join(p.code for p in problems) or "none")
    if not problems:
        return None
    by_ident = {d.identification: d for d in declared if d.identification}
    items = []
    for p in problems:
        d = by_ident.get(p.subject)
        pointer = f"/{um.action}/{d.pointer}/identification" if d else f"/{um.action}"
        items.append(replies.ErrorItem(LINK_ERROR_CODE, p.text, pointer, p.subject, p.code))
    ctx = replies.Context(declarant=facts.declarant_eori, representative=facts.representative_eori,
                          office_of_first_entry=facts.office_of_first_entry)
    fref = facts.functional_reference or facts.lrn or facts.mrn or ""
    body = replies.ie3n99(functional_reference=fref, errors=items, ctx=ctx, now=now)
    return business.Decision(f"rejected: attachment link ({', '.join(p.code for p in problems)})", lrn=facts.lrn,
                             mrn=facts.mrn, replies=[business.Reply("IE3N99", body, facts.lrn, facts.mrn, True)])
