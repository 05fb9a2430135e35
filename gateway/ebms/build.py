"""Building SOAP 1.2 envelopes with eb:Messaging for user messages and signals (unsealed).

The SOAP Body is always empty and carries a wsu:Id so that it can be signed (ICS2: payloads travel only as
MIME parts). Sealing adds the wsse:Security header afterwards (``gateway.security.seal``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from lxml import etree

from gateway.ebms.constants import NS_EB, NS_EBBP, NS_DS, NS_SOAP12, NS_WSU
from gateway.ebms.model import EbmsError, PartInfo, PullRequest, UserMessage

_S = "{%s}" % NS_SOAP12
_EB = "{%s}" % NS_EB
_WSU = "{%s}" % NS_WSU


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, tag, {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = text
    return el


def new_wsu_id(prefix: str) -> str:
    return f"_{prefix}-{uuid.uuid4()}"


def skeleton() -> tuple[etree._Element, etree._Element, etree._Element, etree._Element]:
    """Envelope, Header, eb:Messaging (mustUnderstand, wsu:Id) and the empty Body (wsu:Id)."""
    env = etree.Element(_S + "Envelope", nsmap={"env": NS_SOAP12})
    header = etree.SubElement(env, _S + "Header")
    messaging = etree.SubElement(header, _EB + "Messaging", nsmap={"eb": NS_EB, "wsu": NS_WSU})
    messaging.set(_S + "mustUnderstand", "true")
    messaging.set(_WSU + "Id", new_wsu_id("messaging"))
    body = etree.SubElement(env, _S + "Body", nsmap={"wsu": NS_WSU})
    body.set(_WSU + "Id", new_wsu_id("body"))
    return env, header, messaging, body


def _message_info(parent: etree._Element, message_id: str, timestamp: str, ref_to: str | None) -> None:
    mi = _sub(parent, _EB + "MessageInfo")
    _sub(mi, _EB + "Timestamp", timestamp)
    _sub(mi, _EB + "MessageId", message_id)
    if ref_to:
        _sub(mi, _EB + "RefToMessageId", ref_to)


def _part_info(parent: etree._Element, info: PartInfo) -> None:
    pi = _sub(parent, _EB + "PartInfo", href=info.href)
    props = list(info.properties) or [(n, v) for n, v in (("MimeType", info.mime_type),
                                                          ("CharacterSet", info.charset),
                                                          ("CompressionType", info.compression)) if v]
    if props:
        pp = _sub(pi, _EB + "PartProperties")
        for name, value in props:
            _sub(pp, _EB + "Property", value, name=name)


def user_message_envelope(um: UserMessage) -> etree._Element:
    env, _, messaging, _ = skeleton()
    el = _sub(messaging, _EB + "UserMessage", mpc=um.mpc)
    _message_info(el, um.message_id, um.timestamp, um.ref_to_message_id)
    party_info = _sub(el, _EB + "PartyInfo")
    for tag, party in (("From", um.from_party), ("To", um.to_party)):
        p = _sub(party_info, _EB + tag)
        _sub(p, _EB + "PartyId", party.party_id, type=party.party_type)
        _sub(p, _EB + "Role", party.role)
    ci = _sub(el, _EB + "CollaborationInfo")
    if um.agreement:
        _sub(ci, _EB + "AgreementRef", um.agreement, type=um.agreement_type)
    _sub(ci, _EB + "Service", um.service, type=um.service_type or None)
    _sub(ci, _EB + "Action", um.action)
    _sub(ci, _EB + "ConversationId", um.conversation_id)
    if um.part_infos:
        payload_info = _sub(el, _EB + "PayloadInfo")
        for info in um.part_infos:
            _part_info(payload_info, info)
    return env


def receipt_envelope(message_id: str, timestamp: str, ref_to: str,
                     signed_references: Sequence[etree._Element]) -> etree._Element:
    """A non-repudiation receipt: a copy of each ds:Reference of the acknowledged message's SignedInfo."""
    env, _, messaging, _ = skeleton()
    sm = _sub(messaging, _EB + "SignalMessage")
    _message_info(sm, message_id, timestamp, ref_to)
    receipt = _sub(sm, _EB + "Receipt")
    nri = etree.SubElement(receipt, "{%s}NonRepudiationInformation" % NS_EBBP, nsmap={"ebbp": NS_EBBP, "ds": NS_DS})
    for ref in signed_references:
        part = etree.SubElement(nri, "{%s}MessagePartNRInformation" % NS_EBBP)
        part.append(_copy(ref))
    return env


def _copy(el: etree._Element) -> etree._Element:
    # deepcopy keeps the namespaces in use; the copy is detached from the original document
    from copy import deepcopy
    c = deepcopy(el)
    c.tail = None
    return c


def error_envelope(message_id: str, timestamp: str, errors: Sequence[EbmsError],
                   ref_to: str | None = None) -> etree._Element:
    env, _, messaging, _ = skeleton()
    sm = _sub(messaging, _EB + "SignalMessage")
    _message_info(sm, message_id, timestamp, ref_to)
    for e in errors:
        err = _sub(sm, _EB + "Error", errorCode=e.error_code, severity=e.severity, category=e.category,
                   shortDescription=e.short_description, origin=e.origin,
                   refToMessageInError=e.ref_to_message_in_error)
        if e.description:
            _sub(err, _EB + "Description", e.description).set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        if e.error_detail:
            _sub(err, _EB + "ErrorDetail", e.error_detail)
    return env


def pull_request_envelope(pr: PullRequest) -> etree._Element:
    env, _, messaging, _ = skeleton()
    sm = _sub(messaging, _EB + "SignalMessage")
    _message_info(sm, pr.message_id, pr.timestamp, None)
    _sub(sm, _EB + "PullRequest", mpc=pr.mpc)
    return env


def serialize(env: etree._Element) -> bytes:
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")
