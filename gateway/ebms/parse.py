"""Parsing a SOAP 1.2 envelope into the ebMS model, strict about structure, tolerant about spelling.

Structure errors that could let a verified header differ from the header the business logic reads (a second
eb:Messaging anywhere, a second UserMessage, eb:Messaging outside the SOAP Header) are refused here, before
signature verification, so the element that is verified is the element that is read.

Every value is read exactly as it was signed. Exclusive canonicalization drops comments, so a comment
can be added inside a signed element without breaking the signature, and ``element.text`` stops at it
(``<eb:MessageId>a<!---->b</eb:MessageId>`` would verify and read ``a``: the SAML comment-truncation class).
Two layers, each sufficient alone for comments:
- no comment inside eb:Messaging, the SOAP Body or wsse:Security, and no processing instruction anywhere in
  the envelope (SOAP 1.2 part 1 section 5 forbids them), refused with EBMS:0009 before anything is read;
- every value is read with ``xmlsafe.simple_text``: the whole text of an element that has no child node at
  all (CDATA is merged into the text, as canonicalization does), refused otherwise.
Attribute values (PartInfo/@href, @type, Error attributes) are read as parsed, which is what c14n serializes.
MessageId and RefToMessageId are RFC 2822 msg-ids (ebMS3 5.2.2.1): whitespace in them is refused, not
stripped, so two different signed ids can never read as one; token-like values are read with surrounding
whitespace removed (xsd:token semantics).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from lxml import etree

from gateway.ebms.constants import NS_EB, NS_EBBP, NS_DS, NS_SOAP12, NS_WSSE
from gateway.ebms.errors import EbmsFault
from gateway.ebms.mime import cid_from_uri
from gateway.ebms.model import (
    EbmsError, ErrorSignal, Messaging, NrrReference, PartInfo, Party, PullRequest, Receipt, Signal, UserMessage,
)
from gateway.xmlsafe import simple_text

_S = "{%s}" % NS_SOAP12
_EB = "{%s}" % NS_EB
_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
# PartProperties names as other stacks spell them, mapped to the profile's names.
_PROPERTY_ALIASES = {"mimetype": "MimeType", "mime-type": "MimeType", "characterset": "CharacterSet",
                     "charset": "CharacterSet", "compressiontype": "CompressionType",
                     "compression-type": "CompressionType"}


@dataclass(frozen=True)
class ParsedEnvelope:
    envelope: etree._Element
    header: etree._Element
    messaging_element: etree._Element
    body: etree._Element
    messaging: Messaging


def value_of(el: etree._Element, what: str, ref: str | None) -> str:
    """The whole text of a value element, exactly as canonicalized (see the module docstring); EBMS:0009 when
    the element has a child node (element, comment, processing instruction), whose presence would make the
    text read differ from the text signed."""
    value = simple_text(el)
    if value is None:
        child = el[0]
        kind = ("a comment" if isinstance(child, etree._Comment) else "a processing instruction"
                if isinstance(child, etree._ProcessingInstruction) else f"element {child.tag}")
        raise EbmsFault("EBMS:0009", f"{what} must hold text only, but contains {kind}", ref_to_message_id=ref)
    return value


def _text(parent: etree._Element, tag: str, what: str, ref: str | None, *, required: bool = True,
          msg_id: bool = False) -> str | None:
    found = parent.findall(_EB + tag)
    if len(found) > 1:
        raise EbmsFault("EBMS:0009", f"{what}: more than one eb:{tag}", ref_to_message_id=ref)
    value = value_of(found[0], f"{what}/eb:{tag}", ref) if found else ""
    if msg_id and value and any(c.isspace() for c in value):
        raise EbmsFault("EBMS:0009", f"{what}: eb:{tag} {value!r} contains whitespace (an RFC 2822 msg-id has "
                                     "none, ebMS3 5.2.2.1)", ref_to_message_id=ref)
    if not value.strip():
        if required:
            raise EbmsFault("EBMS:0009", f"{what}: eb:{tag} is missing or empty", ref_to_message_id=ref)
        return None
    return value.strip()


def _one(parent: etree._Element, tag: str, what: str, ref: str | None) -> etree._Element:
    found = parent.findall(_EB + tag)
    if len(found) != 1:
        raise EbmsFault("EBMS:0009", f"{what}: expected one eb:{tag}, found {len(found)}", ref_to_message_id=ref)
    return found[0]


def parse_timestamp(value: str) -> dt.datetime:
    """xs:dateTime in UTC; a missing ``Z`` is read as UTC (ICD 4.2.1 calls it optional)."""
    v = value.strip()
    if v.endswith("Z") or v.endswith("z"):
        v = v[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(v)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def _message_info(parent: etree._Element, what: str) -> tuple[str, str, str | None]:
    mi = _one(parent, "MessageInfo", what, None)
    message_id = _text(mi, "MessageId", what, None, msg_id=True)
    assert message_id is not None
    timestamp = _text(mi, "Timestamp", what, message_id)
    assert timestamp is not None
    try:
        parse_timestamp(timestamp)
    except ValueError:
        raise EbmsFault("EBMS:0009", f"{what}: eb:Timestamp {timestamp!r} is not an xs:dateTime",
                        ref_to_message_id=message_id) from None
    return message_id, timestamp, _text(mi, "RefToMessageId", what, message_id, required=False, msg_id=True)


def _party(parent: etree._Element, tag: str, ref: str) -> Party:
    el = _one(parent, tag, "eb:PartyInfo", ref)
    ids = el.findall(_EB + "PartyId")
    party_id = value_of(ids[0], f"eb:{tag}/eb:PartyId", ref).strip() if len(ids) == 1 else ""
    if not party_id:
        raise EbmsFault("EBMS:0009", f"eb:{tag} must carry exactly one non-empty eb:PartyId (eDelivery 1.4.4.1), "
                                     f"found {len(ids)}", ref_to_message_id=ref)
    role = _text(el, "Role", f"eb:{tag}", ref)
    assert role is not None
    return Party(party_id=party_id, party_type=ids[0].get("type"), role=role)


def _part_info(el: etree._Element, ref: str) -> PartInfo:
    href = el.get("href")
    if not href:
        raise EbmsFault("EBMS:0011", "eb:PartInfo without href: a payload in the SOAP Body is not allowed in ICS2",
                        ref_to_message_id=ref)
    if not href.lower().startswith("cid:"):
        raise EbmsFault("EBMS:0011", f"eb:PartInfo href {href!r} is not a cid: reference (external payloads are "
                                     "forbidden, ICD 4.2.5)", ref_to_message_id=ref)
    try:
        cid_from_uri(href)
    except ValueError as exc:
        raise EbmsFault("EBMS:0009", f"eb:PartInfo href {href!r}: {exc}", ref_to_message_id=ref) from None
    props: list[tuple[str, str]] = []
    for p in el.iterfind(f"{_EB}PartProperties/{_EB}Property"):
        name = (p.get("name") or "").strip()
        props.append((_PROPERTY_ALIASES.get(name.lower(), name), value_of(p, "eb:Property", ref).strip()))
    values = dict(props)
    return PartInfo(href=href, mime_type=values.get("MimeType"), charset=values.get("CharacterSet"),
                    compression=values.get("CompressionType"), properties=tuple(props))


def _user_message(el: etree._Element, max_part_infos: int | None) -> UserMessage:
    message_id, timestamp, ref_to = _message_info(el, "eb:UserMessage")
    pi = _one(el, "PartyInfo", "eb:UserMessage", message_id)
    ci = _one(el, "CollaborationInfo", "eb:UserMessage", message_id)
    service = _one(ci, "Service", "eb:CollaborationInfo", message_id)
    service_value = value_of(service, "eb:Service", message_id).strip()
    agreements = ci.findall(_EB + "AgreementRef")
    if len(agreements) > 1:
        raise EbmsFault("EBMS:0009", "more than one eb:AgreementRef", ref_to_message_id=message_id)
    payload_info = el.findall(_EB + "PayloadInfo")
    if len(payload_info) > 1:
        raise EbmsFault("EBMS:0009", "more than one eb:PayloadInfo", ref_to_message_id=message_id)
    infos = list(payload_info[0].iterfind(_EB + "PartInfo")) if payload_info else []
    if max_part_infos is not None and len(infos) > max_part_infos:
        # each PartInfo must name its own MIME part: more of them than parts is wrong before reading one
        raise EbmsFault("EBMS:0011", f"eb:PayloadInfo lists {len(infos)} parts, but the message has only "
                                     f"{max_part_infos} MIME attachment(s)", ref_to_message_id=message_id)
    parts = tuple(_part_info(p, message_id) for p in infos)
    hrefs = [p.content_id for p in parts]
    if len(set(hrefs)) != len(hrefs):
        raise EbmsFault("EBMS:0009", "two eb:PartInfo name the same MIME part", ref_to_message_id=message_id)
    action = _text(ci, "Action", "eb:CollaborationInfo", message_id)
    conversation = _text(ci, "ConversationId", "eb:CollaborationInfo", message_id)
    assert action is not None and conversation is not None
    return UserMessage(
        message_id=message_id, timestamp=timestamp, ref_to_message_id=ref_to,
        from_party=_party(pi, "From", message_id), to_party=_party(pi, "To", message_id),
        service=service_value, service_type=service.get("type"), action=action,
        agreement=value_of(agreements[0], "eb:AgreementRef", message_id).strip() if agreements else None,
        agreement_type=agreements[0].get("type") if agreements else None,
        conversation_id=conversation, part_infos=parts, mpc=el.get("mpc"),
    )


def _signals(el: etree._Element) -> list[Signal]:
    message_id, timestamp, ref_to = _message_info(el, "eb:SignalMessage")
    out: list[Signal] = []
    receipts = el.findall(_EB + "Receipt")
    errors = el.findall(_EB + "Error")
    pulls = el.findall(_EB + "PullRequest")
    if receipts:
        if ref_to is None:
            raise EbmsFault("EBMS:0009", "a receipt must carry eb:RefToMessageId", ref_to_message_id=message_id)
        refs = []
        for r in receipts[0].iter("{%s}Reference" % NS_DS):
            dm = r.find("{%s}DigestMethod" % NS_DS)
            dv = r.find("{%s}DigestValue" % NS_DS)
            digest = value_of(dv, "ds:DigestValue", message_id) if dv is not None else ""
            refs.append(NrrReference(uri=r.get("URI") or "", digest_method=dm.get("Algorithm") if dm is not None else "",
                                     digest_value="".join(digest.split()),
                                     transforms=tuple(t.get("Algorithm") or "" for t in
                                                      r.iter("{%s}Transform" % NS_DS))))
        out.append(Receipt(message_id=message_id, timestamp=timestamp, ref_to_message_id=ref_to,
                           nrr_references=tuple(refs)))
    if errors:
        errs = []
        for e in errors:
            desc = e.find(_EB + "Description")
            detail = e.find(_EB + "ErrorDetail")
            errs.append(EbmsError(
                error_code=(e.get("errorCode") or "").strip(), severity=(e.get("severity") or "failure").strip(),
                category=e.get("category"), short_description=e.get("shortDescription"),
                description=value_of(desc, "eb:Description", message_id).strip() if desc is not None else None,
                error_detail=value_of(detail, "eb:ErrorDetail", message_id).strip() if detail is not None else None,
                origin=e.get("origin"), ref_to_message_in_error=e.get("refToMessageInError")))
        out.append(ErrorSignal(message_id=message_id, timestamp=timestamp, errors=tuple(errs), ref_to_message_id=ref_to))
    if pulls:
        if len(pulls) > 1:
            raise EbmsFault("EBMS:0009", "more than one eb:PullRequest", ref_to_message_id=message_id)
        out.append(PullRequest(message_id=message_id, timestamp=timestamp,
                               mpc=pulls[0].get("mpc") or "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/"
                                                          "200704/defaultMPC"))
    if not out:
        raise EbmsFault("EBMS:0009", "eb:SignalMessage carries no Receipt, Error or PullRequest",
                        ref_to_message_id=message_id)
    return out


def _refuse_hidden_nodes(env: etree._Element, header: etree._Element, body: etree._Element) -> None:
    """No processing instruction in the envelope (SOAP 1.2 part 1, 5), no comment where anything is read or
    signed: inside eb:Messaging, the SOAP Body or a wsse:Security header (see the module docstring).

    Every walk here is libxml2's (``iter`` with a node-type filter), never a Python walk per node: a
    comment-stuffed envelope costs its own size, not its size times its depth."""
    for pi in (*env.itersiblings(etree.ProcessingInstruction, preceding=True),
               *env.iter(etree.ProcessingInstruction), *env.itersiblings(etree.ProcessingInstruction)):
        raise EbmsFault("EBMS:0009", f"the SOAP envelope contains a processing instruction <?{pi.target}?>, "
                                     "which SOAP 1.2 forbids")
    for block in (*(h for h in header if h.tag in _READ_HEADERS), body):
        for _ in block.iter(etree.Comment):
            where = "the SOAP Body" if block is body else etree.QName(block).localname
            raise EbmsFault("EBMS:0009", f"a comment inside {where} is not allowed: canonicalization drops it, "
                                         "so what is read could differ from what was signed")


_READ_HEADERS = frozenset({_EB + "Messaging", "{%s}Security" % NS_WSSE})


def parse_envelope(env: etree._Element, *, max_part_infos: int | None = None) -> ParsedEnvelope:
    """The ebMS model of a SOAP envelope; ``max_part_infos`` (the number of MIME attachments, when known)
    refuses a longer eb:PayloadInfo before any PartInfo is read."""
    if env.tag == "{%s}Envelope" % _SOAP11:
        raise EbmsFault("EBMS:0009", "SOAP 1.1 is not supported: AS4 uses SOAP 1.2")
    if env.tag != _S + "Envelope":
        raise EbmsFault("EBMS:0009", f"the root element is {etree.QName(env).localname}, not a SOAP 1.2 Envelope")
    children = [c for c in env if isinstance(c.tag, str)]
    headers = [c for c in children if c.tag == _S + "Header"]
    bodies = [c for c in children if c.tag == _S + "Body"]
    if len(headers) != 1 or len(bodies) != 1 or len(children) != 2 or children[0] is not headers[0]:
        raise EbmsFault("EBMS:0009", "the envelope must hold exactly one SOAP Header followed by one SOAP Body")
    header, body = headers[0], bodies[0]
    _refuse_hidden_nodes(env, header, body)
    all_messaging = list(env.iter(_EB + "Messaging"))
    if len(all_messaging) != 1:
        raise EbmsFault("EBMS:0009", f"the message must carry exactly one eb:Messaging, found {len(all_messaging)}")
    messaging_el = all_messaging[0]
    if messaging_el.getparent() is not header:
        raise EbmsFault("EBMS:0009", "eb:Messaging must be a child of the SOAP Header")
    user_messages = messaging_el.findall(_EB + "UserMessage")
    if len(list(env.iter(_EB + "UserMessage"))) != len(user_messages) or len(user_messages) > 1:
        raise EbmsFault("EBMS:0009", f"AS4 allows one eb:UserMessage per message, found "
                                     f"{len(list(env.iter(_EB + 'UserMessage')))}")
    um = _user_message(user_messages[0], max_part_infos) if user_messages else None
    signals: list[Signal] = []
    for sm in messaging_el.findall(_EB + "SignalMessage"):
        signals.extend(_signals(sm))
    body_children = [c for c in body if isinstance(c.tag, str)]
    # Domibus-style peers send an eb:Error with a SOAP Fault in the Body (HTTP 500): readable, never signed proof
    fault_only = (um is None and signals and all(isinstance(x, ErrorSignal) for x in signals)
                  and len(body_children) == 1 and body_children[0].tag == _S + "Fault")
    body_text = "".join(body.itertext(with_tail=False)) if not body_children else ""
    if (body_children or body_text.strip()) and not fault_only:
        raise EbmsFault("EBMS:0103", "the SOAP Body must be empty: ICS2 payloads travel only as MIME parts")
    if um is None and not signals:
        raise EbmsFault("EBMS:0009", "eb:Messaging carries neither a UserMessage nor a SignalMessage")
    messaging = Messaging(user_message=um, signals=tuple(signals),
                          wsu_id=messaging_el.get("{http://docs.oasis-open.org/wss/2004/01/"
                                                  "oasis-200401-wss-wssecurity-utility-1.0.xsd}Id"))
    return ParsedEnvelope(envelope=env, header=header, messaging_element=messaging_el, body=body, messaging=messaging)


__all__ = ["ParsedEnvelope", "parse_envelope", "parse_timestamp", "NS_EBBP"]
