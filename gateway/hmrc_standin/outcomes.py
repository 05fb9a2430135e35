"""The outcome messages the HMRC stand-in writes: IE328, IE316, IE304, IE305 (v10-0) and IE351.

Each is built to validate against the published outcome schemas (``gateway/ics2/schemas/outcome``); a test
checks every kind against them, so the gateway is tested against messages HMRC's own XSDs accept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from lxml import etree

_NS = {"CC328A": "http://ics.dgtaxud.ec/CC328A", "CC316A": "http://ics.dgtaxud.ec/CC316A",
       "CC304A": "http://ics.dgtaxud.ec/CC304A", "CC305A": "http://ics.dgtaxud.ec/CC305A",
       "CC351A": "http://ics.dgtaxud.ec/CC351A"}


def _stamp(now: dt.datetime) -> tuple[str, str, str]:
    return now.strftime("%y%m%d"), now.strftime("%H%M"), now.strftime("%Y%m%d%H%M")


def _root(name: str, *, sender: str, recipient: str, message_id: str, correlation_id: str,
          now: dt.datetime) -> etree._Element:
    root = etree.Element(f"{{{_NS[name]}}}{name}", nsmap={"cc3": _NS[name]})
    date, time, _ = _stamp(now)
    for tag, value in (("MesSenMES3", sender), ("MesRecMES6", recipient), ("DatOfPreMES9", date),
                       ("TimOfPreMES10", time), ("MesIdeMES19", message_id), ("MesTypMES20", name),
                       ("CorIdeMES25", correlation_id)):
        etree.SubElement(root, tag).text = value
    return root


def _sub(parent: etree._Element, tag: str, value: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, tag)
    if value is not None:
        el.text = value
    return el


def _errors(root: etree._Element, errors: Sequence[tuple[str, str, str]]) -> None:
    for err_type, pointer, reason in errors:
        fe = _sub(root, "FUNERRER1")
        _sub(fe, "ErrTypER11", err_type)        # 12..93 (R98)
        _sub(fe, "ErrPoiER12", pointer[:210])
        _sub(fe, "ErrReaER13", reason[:6])      # a rule or condition id (an..6)


def accepted(*, submitter: str, correlation_id: str, message_id: str, lrn: str, mrn: str, office: str,
             person_lodging: str, now: dt.datetime) -> etree._Element:
    """IE328: the ENS is registered with ``mrn``."""
    root = _root("CC328A", sender="GB-HMRC/ICS", recipient=submitter, message_id=message_id,
                 correlation_id=correlation_id, now=now)
    hea = _sub(root, "HEAHEA")
    _sub(hea, "RefNumHEA4", lrn)
    _sub(hea, "DocNumHEA5", mrn)
    _sub(hea, "DecRegDatTimHEA115", _stamp(now)[2])
    _sub(_sub(root, "PERLODSUMDEC"), "TINPLD1", person_lodging)
    _sub(_sub(root, "CUSOFFFENT730"), "RefNumCUSOFFFENT731", office)
    return root


def rejected(*, submitter: str, correlation_id: str, message_id: str, lrn: str, now: dt.datetime,
             errors: Sequence[tuple[str, str, str]]) -> etree._Element:
    """IE316: the ENS is rejected, with its functional errors."""
    root = _root("CC316A", sender="GB-HMRC/ICS", recipient=submitter, message_id=message_id,
                 correlation_id=correlation_id, now=now)
    hea = _sub(root, "HEAHEA")
    _sub(hea, "RefNumHEA4", lrn)
    _sub(hea, "DecRejDatTimHEA116", _stamp(now)[2])
    _errors(root, errors)
    return root


def amendment_accepted(*, submitter: str, correlation_id: str, message_id: str, mrn: str, amended_at: str,
                       office: str, person_lodging: str, now: dt.datetime) -> etree._Element:
    """IE304."""
    root = _root("CC304A", sender="GB-HMRC/ICS", recipient=submitter, message_id=message_id,
                 correlation_id=correlation_id, now=now)
    hea = _sub(root, "HEAHEA")
    _sub(hea, "DocNumHEA5", mrn)
    _sub(hea, "AmeAccDatTimHEA111", _stamp(now)[2])
    _sub(hea, "DatTimAmeHEA113", amended_at)
    _sub(_sub(root, "PERLODSUMDEC"), "TINPLD1", person_lodging)
    _sub(_sub(root, "CUSOFFFENT730"), "RefNumCUSOFFFENT731", office)
    return root


def amendment_rejected(*, submitter: str, correlation_id: str, message_id: str, mrn: str, amended_at: str,
                       office: str, now: dt.datetime, errors: Sequence[tuple[str, str, str]]) -> etree._Element:
    """IE305."""
    root = _root("CC305A", sender="GB-HMRC/ICS", recipient=submitter, message_id=message_id,
                 correlation_id=correlation_id, now=now)
    hea = _sub(root, "HEAHEA")
    _sub(hea, "DocNumHEA5", mrn)
    _sub(hea, "DatTimAmeHEA113", amended_at)
    _sub(hea, "AmeRejDatTimHEA112", _stamp(now)[2])
    _errors(root, errors)
    _sub(_sub(root, "CUSOFFFENT730"), "RefNumCUSOFFFENT731", office)
    return root


def intervention(*, submitter: str, correlation_id: str, message_id: str, lrn: str, mrn: str, office: str,
                 transport_mode: str, person_lodging: str, now: dt.datetime) -> etree._Element:
    """IE351: an advance intervention notification (a control is planned at the office of first entry)."""
    root = _root("CC351A", sender="GB-HMRC/ICS", recipient=submitter, message_id=message_id,
                 correlation_id=correlation_id, now=now)
    stamp = _stamp(now)[2]
    hea = _sub(root, "HEAHEA")
    for tag, value in (("RefNumHEA4", lrn), ("DocNumHEA5", mrn), ("TraModAtBorHEA76", transport_mode),
                       ("TotNumOfIteHEA305", "1"), ("NotDatTimHEA104", stamp), ("DecRegDatTimHEA115", stamp),
                       ("DecSubDatTimHEA118", stamp)):
        _sub(hea, tag, value)
    item = _sub(root, "GOOITEGDS")
    _sub(item, "IteNumGDS7", "1")
    _sub(_sub(root, "CUSOFFLON"), "RefNumCOL1", office)
    _sub(_sub(root, "PERLODSUMDEC"), "TINPLD1", person_lodging)
    fent = _sub(root, "CUSOFFFENT730")
    _sub(fent, "RefNumCUSOFFFENT731", office)
    _sub(fent, "ExpDatOfArrFIRENT733", stamp)
    cus = _sub(root, "CUSINT632")
    _sub(cus, "IteNumConCUSINT668", "1")
    _sub(cus, "CusIntCodCUSINT665", "A1")
    _sub(cus, "CusIntTexCUSINT666", "Physical examination planned at the office of first entry")
    return root


def wrap(message: etree._Element, *, notification: bool, ack_href: str) -> bytes:
    """``outcomeResponse`` / ``notificationResponse`` with the DELETE link, as the APIs return them."""
    name = "notificationResponse" if notification else "outcomeResponse"
    ns = message.nsmap.get("cc3")
    root = etree.Element(name, nsmap={"cc3": ns})
    _sub(root, "response").append(message)
    ack = _sub(root, "acknowledgement")
    ack.set("method", "DELETE")
    ack.set("href", ack_href)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
