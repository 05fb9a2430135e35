"""What HMRC's S&S GB APIs send and expect: paths, headers, and the XML documents of each answer (sans I/O).

References: ``shared/schemas/hmrc-ssgb/api/{store,outcome,intervention}/1.0/application.yaml`` and their
examples. Every parser here reads by local name (HMRC's controller emits an unqualified ``CorrelationId`` where
the published XSD wants a namespaced one; see the README of that folder) and goes through ``gateway.xmlsafe``.
Nothing here opens a socket: the client (``client.py``) and the stand-in (``gateway.hmrc_standin``) share it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from gateway.ics2.xmlutil import child, child_text, children, local, text
from gateway.xmlsafe import XmlRejected, parse_xml

log = logging.getLogger("ics2gw.hmrc.protocol")

ACCEPT = "application/vnd.hmrc.1.0+xml"
CONTENT_TYPE = "application/xml; charset=UTF-8"
SCOPE = "write:import-control-system"

DECLARATIONS = "/customs/imports/declarations/"
OUTCOMES = "/customs/imports/outcomes/"
NOTIFICATIONS = "/customs/imports/notifications/"
AUTHORIZE = "/oauth/authorize"
TOKEN = "/oauth/token"

NS_SUCCESS = "http://www.hmrc.gov.uk/successresponse/2"
NS_RESPONSE_DATA = "http://www.govtalk.gov.uk/enforcement/ICS/responsedata/7"
NS_ERROR = "http://www.govtalk.gov.uk/CM/errorresponse"

CORRELATION_ID_RE = re.compile(r"^[0-9A-Za-z]{1,35}$")
# MRN of phase 1 (IE313 DocNumHEA5 must equal the {mrn} of the URL): 2 digits, country, 13 alphanumerics, a digit
MRN_RE = re.compile(r"^[0-9]{2}[A-Z]{2}[A-Z0-9]{13}[0-9]$")
# what an outcome or notification id may look like before it goes into a URL path or the journal
_ID_RE = re.compile(r"^[0-9A-Za-z._-]{1,64}$")

# outcome root element -> (ICS phase-1 message id, what it means for the filing)
OUTCOME_KINDS: dict[str, tuple[str, str]] = {
    "CC328A": ("IE328", "registered"),
    "CC316A": ("IE316", "rejected"),
    "CC304A": ("IE304", "amendment-accepted"),
    "CC305A": ("IE305", "amendment-rejected"),
}
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
# HMRC lists at most 100 unacknowledged items per call; anything beyond is ignored (a later page brings it)
PAGE_SIZE = 100


class ProtocolError(ValueError):
    """HMRC's answer is not what the API definition says it is."""


def safe_id(value: str, what: str) -> str:
    """An id from HMRC (or from a link) that is about to become part of a URL path or a journal key."""
    if not _ID_RE.match(value or ""):
        raise ProtocolError(f"{what} {value!r} is not a plain identifier")
    return value


def _parse(data: bytes, what: str) -> etree._Element:
    try:
        return parse_xml(data, max_bytes=MAX_DOCUMENT_BYTES, what=what)
    except XmlRejected as exc:
        raise ProtocolError(str(exc)) from None


def _first_local(root: etree._Element, name: str) -> etree._Element | None:
    for el in root.iter():
        if isinstance(el.tag, str) and local(el) == name:
            return el
    return None


# ----------------------------------------------------------------------------------------- submission answers
def parse_success(data: bytes) -> str:
    """The CorrelationId of a 200 answer to POST/PUT (``SuccessResponse/ResponseData/CorrelationId``)."""
    root = _parse(data, "HMRC success response")
    if local(root) != "SuccessResponse":
        raise ProtocolError(f"expected SuccessResponse, got {local(root)}")
    el = _first_local(root, "CorrelationId")
    value = "".join(el.itertext()).strip() if el is not None else ""
    if not CORRELATION_ID_RE.match(value):
        raise ProtocolError(f"SuccessResponse carries no usable CorrelationId ({value!r})")
    return value


@dataclass(frozen=True)
class HmrcError:
    """One ``err:Error`` of an ``err:ErrorResponse`` (400), as a finding the filing keeps."""
    number: str
    type: str
    text: str
    location: str
    raised_by: str = "HMRC"

    def as_finding(self) -> dict[str, Any]:
        return {"code": self.number, "rule": f"HMRC-{self.type}", "pointer": self.location or "/",
                "text": self.text, "source": self.raised_by}


def parse_error_response(data: bytes) -> list[HmrcError]:
    """The errors of a 400 answer; an unreadable body becomes one error that says so (never an exception)."""
    try:
        root = _parse(data, "HMRC error response")
    except ProtocolError as exc:
        return [HmrcError("4999", "schema", f"unreadable error response: {exc}", "/")]
    if local(root) == "error":  # the JSON-ish <error><code/><message/></error> of 401/403/404/406/413/415
        return [HmrcError(child_text(root, "code") or "ERROR", "http", child_text(root, "message") or "", "/")]
    out = []
    for err in (el for el in root.iter() if isinstance(el.tag, str) and local(el) == "Error"):
        def val(name: str) -> str:
            e = _first_local(err, name)
            return "".join(e.itertext()).strip() if e is not None else ""
        out.append(HmrcError(val("Number") or "4999", val("Type") or "schema", val("Text"), val("Location"),
                             val("RaisedBy") or "HMRC"))
    return out or [HmrcError("4999", "schema", "error response without errors", "/")]


def parse_simple_error(data: bytes) -> tuple[str, str]:
    """(code, message) of ``<error><code>..</code><message>..</message></error>``; empty strings if unreadable."""
    try:
        root = _parse(data, "HMRC error")
    except ProtocolError:
        return "", ""
    return child_text(root, "code") or "", child_text(root, "message") or ""


# ------------------------------------------------------------------------------------------- outcome polling
@dataclass(frozen=True)
class OutcomeRef:
    correlation_id: str
    link: str
    mrn: str | None = None


@dataclass(frozen=True)
class NotificationRef:
    notification_id: str
    correlation_id: str | None
    link: str


def parse_outcome_list(data: bytes) -> list[OutcomeRef]:
    """``entryDeclarationResponses``: at most 100 unacknowledged outcomes."""
    root = _parse(data, "HMRC outcome list")
    if local(root) != "entryDeclarationResponses":
        raise ProtocolError(f"expected entryDeclarationResponses, got {local(root)}")
    out = []
    for r in children(root, "response"):
        if len(out) >= PAGE_SIZE:
            break
        try:
            cid = safe_id(child_text(r, "correlationId") or "", "correlationId")
        except ProtocolError as exc:   # one bad entry must not hide the others behind it (it is never fetched)
            log.warning("hmrc outcome list entry skipped reason=%r", str(exc)[:200])
            continue
        out.append(OutcomeRef(cid, child_text(r, "link") or OUTCOMES + cid, child_text(r, "MRN")))
    return out


def parse_notification_list(data: bytes) -> list[NotificationRef]:
    root = _parse(data, "HMRC notification list")
    if local(root) != "advancedNotifications":
        raise ProtocolError(f"expected advancedNotifications, got {local(root)}")
    out = []
    for r in children(root, "response"):
        if len(out) >= PAGE_SIZE:
            break
        try:
            nid = safe_id(child_text(r, "notificationId") or "", "notificationId")
        except ProtocolError as exc:
            log.warning("hmrc notification list entry skipped reason=%r", str(exc)[:200])
            continue
        cid = child_text(r, "correlationId")
        out.append(NotificationRef(nid, cid, child_text(r, "link") or NOTIFICATIONS + nid))
    return out


@dataclass(frozen=True)
class Outcome:
    """One fetched outcome or notification: the CCxxxA message inside its wrapper, and what it says."""
    kind: str                          # IE328 / IE316 / IE304 / IE305 / IE351
    meaning: str                       # registered / rejected / amendment-accepted / amendment-rejected / intervention
    correlation_id: str | None         # CorIdeMES25 (the id of the submission it answers)
    lrn: str | None
    mrn: str | None
    message: bytes = field(repr=False)  # the CCxxxA element, serialised on its own (what the ERP receives)
    raw: bytes = field(repr=False, default=b"")
    errors: tuple[dict[str, Any], ...] = ()
    ack_href: str | None = None


def _functional_errors(msg: etree._Element) -> tuple[dict[str, Any], ...]:
    out = []
    for fe in children(msg, "FUNERRER1"):
        out.append({"code": child_text(fe, "ErrTypER11") or "", "rule": child_text(fe, "ErrReaER13") or "",
                    "pointer": child_text(fe, "ErrPoiER12") or "/", "text": (
                        f"{child_text(fe, 'ErrReaER13') or ''} at {child_text(fe, 'ErrPoiER12') or '?'}"
                        + (f" (value {child_text(fe, 'OriAttValER14')})" if child_text(fe, "OriAttValER14") else "")),
                    "source": "HMRC"})
    return tuple(out)


def parse_wrapped(data: bytes, *, notification: bool = False) -> Outcome:
    """``outcomeResponse`` (IE328/316/304/305) or ``notificationResponse`` (IE351)."""
    root = _parse(data, "HMRC notification" if notification else "HMRC outcome")
    want = "notificationResponse" if notification else "outcomeResponse"
    if local(root) != want:
        raise ProtocolError(f"expected {want}, got {local(root)}")
    resp = child(root, "response")
    msgs = [el for el in (resp if resp is not None else []) if isinstance(el.tag, str)]
    if len(msgs) != 1:
        raise ProtocolError(f"{want} must carry exactly one message, not {len(msgs)}")
    msg = msgs[0]
    name = local(msg)
    if notification:
        if name != "CC351A":
            raise ProtocolError(f"a notification carries CC351A, not {name}")
        kind, meaning = "IE351", "intervention"
    else:
        if name not in OUTCOME_KINDS:
            raise ProtocolError(f"unknown outcome message {name}")
        kind, meaning = OUTCOME_KINDS[name]
    hea = child(msg, "HEAHEA")
    ack = child(root, "acknowledgement")
    return Outcome(kind=kind, meaning=meaning, correlation_id=child_text(msg, "CorIdeMES25"),
                   lrn=child_text(hea, "RefNumHEA4"), mrn=child_text(hea, "DocNumHEA5"),
                   message=etree.tostring(msg, xml_declaration=True, encoding="UTF-8"), raw=data,
                   errors=_functional_errors(msg), ack_href=ack.get("href") if ack is not None else None)


# ---------------------------------------------------------------------------------------- submission facts
@dataclass(frozen=True)
class Declaration:
    """What the route needs from an IE315 / IE313 before sending it."""
    kind: str                  # IE315 or IE313
    sender_eori: str           # the part of MesSenMES3 before '/', which HMRC compares with the caller's EORI
    lrn: str | None            # IE315
    mrn: str | None            # IE313 (the {mrn} of the PUT)


def declaration_facts(data: bytes) -> Declaration:
    root = _parse(data, "ENS")
    name = local(root)
    if name not in ("CC315A", "CC313A"):
        raise ProtocolError(f"the HMRC route takes CC315A or CC313A, not {name}")
    sender = text(child(root, "MesSenMES3")) or ""
    hea = child(root, "HEAHEA")
    return Declaration(kind="IE315" if name == "CC315A" else "IE313", sender_eori=sender.split("/", 1)[0],
                       lrn=child_text(hea, "RefNumHEA4"), mrn=child_text(hea, "DocNumHEA5"))


# --------------------------------------------------------------------------------- documents the stand-in writes
def success_document(correlation_id: str) -> bytes:
    return (f'<ns:SuccessResponse xmlns:xd="http://www.w3.org/2000/09/xmldsig#" xmlns:ns="{NS_SUCCESS}" '
            f'xmlns="{NS_RESPONSE_DATA}"><ns:ResponseData><CorrelationId>{correlation_id}</CorrelationId>'
            f'</ns:ResponseData></ns:SuccessResponse>').encode()


def error_document(errors: list[HmrcError]) -> bytes:
    root = etree.Element(f"{{{NS_ERROR}}}ErrorResponse", nsmap={"err": NS_ERROR}, SchemaVersion="2.0")
    app = etree.SubElement(root, f"{{{NS_ERROR}}}Application")
    etree.SubElement(app, f"{{{NS_ERROR}}}MessageCount").text = str(min(len(errors), 100))
    for e in errors[:100]:
        el = etree.SubElement(root, f"{{{NS_ERROR}}}Error")
        for tag, value in (("RaisedBy", e.raised_by), ("Number", e.number), ("Type", e.type), ("Text", e.text),
                           ("Location", e.location)):
            etree.SubElement(el, f"{{{NS_ERROR}}}{tag}").text = value
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def simple_error_document(code: str, message: str) -> bytes:
    root = etree.Element("error")
    etree.SubElement(root, "code").text = code
    etree.SubElement(root, "message").text = message
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
