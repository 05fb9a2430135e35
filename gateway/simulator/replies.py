"""What does a customs reply look like? XML payload builders for the c2t messages the simulator sends.

Conventions are those of ``gateway.ics2.inspect`` and the fixtures under ``tests/fixtures/ics2/``: the root
element is the message id, namespace ``urn:wco:datamodel:eu:ics2:2``, lowerCamelCase names, ``LRN`` / ``MRN``
in upper case. Every reply starts with ``notificationDate``, then its functional reference, then the
declarant (and representative) and the customs office of first entry copied from the original message:

============  ==========================================================================================
IE3R01        ``LRN`` (the filing's) + ``MRN`` (allocated) + ``registrationDate``
IE3N99/IE3N01 ``functionalReference`` = LRN or MRN of the message in error (ICD 4.5.3 table 9), then
              ``error`` 1..999 with ``validationCode``, ``description``, ``pointer`` (XPath) and optionally
              ``originalAttributeValue`` and ``technicalErrorMessage``
IE3N10        ``MRN`` + ``LRN`` + ``amendmentAcceptanceDate``
IE3R07        ``MRN`` + ``invalidationDate``
IE3R04        ``LRN`` (of the arrival notification) + ``arrivalRegistrationDate`` + ``MRN`` per ENS concerned
IE3N08        ``MRN`` + ``control`` (type, description)
IE3Q01        ``MRN`` + ``doNotLoad`` (description)
IE3Q02        ``MRN`` + ``referralRequest`` (referenceNumber, responseType 1 = by IE3R02, 2 = by amendment,
              description)
IE3Q03        ``MRN`` + ``referralRequest`` (referenceNumber, screeningMethod)
IE3N03        ``MRN`` + ``assessmentCompleteDate``
IE3R08        ``MRN`` + ``LRN`` + ``status``
============  ==========================================================================================
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

NS = "urn:wco:datamodel:eu:ics2:2"
_N = "{%s}" % NS


@dataclass(frozen=True)
class Context:
    """What a reply copies from the message it answers (ICD 4.5.3: "if available")."""
    declarant: str | None = None
    representative: str | None = None
    office_of_first_entry: str | None = None


@dataclass(frozen=True)
class ErrorItem:
    """One functional error of an IE3N99 / IE3N01."""
    code: str
    description: str
    pointer: str
    value: str | None = None
    technical: str | None = None


def timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, _N + name)
    if text is not None:
        el.text = text
    return el


def _start(action: str, now: dt.datetime, ctx: Context, *, lrn: str | None = None, mrn: str | None = None,
           functional_reference: str | None = None) -> etree._Element:
    root = etree.Element(_N + action, nsmap={None: NS})
    if functional_reference is not None:
        _sub(root, "functionalReference", functional_reference)
    _sub(root, "notificationDate", timestamp(now))
    if lrn:
        _sub(root, "LRN", lrn)
    if mrn:
        _sub(root, "MRN", mrn)
    if ctx.declarant:
        _sub(_sub(root, "declarant"), "identificationNumber", ctx.declarant)
    if ctx.representative:
        _sub(_sub(root, "representative"), "identificationNumber", ctx.representative)
    if ctx.office_of_first_entry:
        _sub(_sub(root, "customsOfficeOfFirstEntry"), "referenceNumber", ctx.office_of_first_entry)
    return root


def _done(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def ie3r01(*, lrn: str, mrn: str, ctx: Context, now: dt.datetime) -> bytes:
    root = _start("IE3R01", now, ctx, lrn=lrn, mrn=mrn)
    _sub(root, "registrationDate", timestamp(now))
    return _done(root)


def _errors(action: str, functional_reference: str, errors: Sequence[ErrorItem], ctx: Context,
            now: dt.datetime) -> bytes:
    root = _start(action, now, ctx, functional_reference=functional_reference)
    for e in list(errors)[:999] or [ErrorItem("99", "unspecified error", "/")]:
        el = _sub(root, "error")
        _sub(el, "validationCode", e.code)
        _sub(el, "description", e.description)
        _sub(el, "pointer", e.pointer)
        if e.value is not None:
            _sub(el, "originalAttributeValue", e.value)
        if e.technical:
            _sub(el, "technicalErrorMessage", e.technical)
    return _done(root)


def ie3n99(*, functional_reference: str, errors: Sequence[ErrorItem], ctx: Context, now: dt.datetime) -> bytes:
    return _errors("IE3N99", functional_reference, errors, ctx, now)


def ie3n01(*, functional_reference: str, errors: Sequence[ErrorItem], ctx: Context, now: dt.datetime) -> bytes:
    return _errors("IE3N01", functional_reference, errors, ctx, now)


def ie3n10(*, mrn: str, lrn: str | None, ctx: Context, now: dt.datetime) -> bytes:
    root = _start("IE3N10", now, ctx, lrn=lrn, mrn=mrn)
    _sub(root, "amendmentAcceptanceDate", timestamp(now))
    return _done(root)


def ie3r07(*, mrn: str, ctx: Context, now: dt.datetime) -> bytes:
    root = _start("IE3R07", now, ctx, mrn=mrn)
    _sub(root, "invalidationDate", timestamp(now))
    return _done(root)


def ie3r04(*, lrn: str, mrns: Sequence[str], ctx: Context, now: dt.datetime) -> bytes:
    root = _start("IE3R04", now, ctx, lrn=lrn)
    _sub(root, "arrivalRegistrationDate", timestamp(now))
    for m in mrns:
        _sub(_sub(root, "entrySummaryDeclaration"), "referenceNumber", m)
    return _done(root)


def ie3n08(*, mrn: str, ctx: Context, now: dt.datetime, description: str = "Control at the first port or "
           "airport of arrival") -> bytes:
    root = _start("IE3N08", now, ctx, mrn=mrn)
    c = _sub(root, "control")
    _sub(c, "type", "A3")
    _sub(c, "description", description)
    return _done(root)


def ie3q01(*, mrn: str, ctx: Context, now: dt.datetime, description: str = "Do not load: high risk consignment") \
        -> bytes:
    root = _start("IE3Q01", now, ctx, mrn=mrn)
    _sub(_sub(root, "doNotLoad"), "description", description)
    return _done(root)


RESPONSE_BY_IE3R02 = "1"
RESPONSE_BY_AMENDMENT = "2"


def ie3q02(*, mrn: str, ctx: Context, now: dt.datetime, reference: str, response_type: str,
           description: str = "Provide the commercial invoice") -> bytes:
    root = _start("IE3Q02", now, ctx, mrn=mrn)
    rr = _sub(root, "referralRequest")
    _sub(rr, "referenceNumber", reference)
    _sub(rr, "responseType", response_type)
    _sub(rr, "description", description)
    return _done(root)


def ie3q03(*, mrn: str, ctx: Context, now: dt.datetime, reference: str, method: str = "XRY") -> bytes:
    root = _start("IE3Q03", now, ctx, mrn=mrn)
    rr = _sub(root, "referralRequest")
    _sub(rr, "referenceNumber", reference)
    _sub(rr, "screeningMethod", method)
    return _done(root)


def ie3n03(*, mrn: str, ctx: Context, now: dt.datetime) -> bytes:
    root = _start("IE3N03", now, ctx, mrn=mrn)
    _sub(root, "assessmentCompleteDate", timestamp(now))
    return _done(root)


def ie3r08(*, mrn: str, lrn: str | None, status: str, ctx: Context, now: dt.datetime) -> bytes:
    root = _start("IE3R08", now, ctx, lrn=lrn, mrn=mrn)
    _sub(root, "status", status)
    return _done(root)


# Notifications the STI sends about a registered ENS that carry no more than the MRN and a date here (their
# business content, e.g. the IE3N04 request text, matters to the receiver only as text): ICD Annex 1.
NOTIFICATIONS = {
    "IE3N02": "ENS not complete",
    "IE3N04": "Additional information requested from the person filing",
    "IE3N05": "High risk cargo and mail screening requested from the person filing",
    "IE3N07": "ENS in incorrect state upon arrival",
    "IE3N09": "AEO control notification",
    "IE3N11": "ENS pending: a related filing is expected",
}


def notification(action: str, *, mrn: str, ctx: Context, now: dt.datetime, description: str | None = None) -> bytes:
    """One of ``NOTIFICATIONS``: ``MRN``, then ``notification/description``."""
    if action not in NOTIFICATIONS:
        raise ValueError(f"{action} is not one of {', '.join(NOTIFICATIONS)}")
    root = _start(action, now, ctx, mrn=mrn)
    _sub(_sub(root, "notification"), "description", description or NOTIFICATIONS[action])
    return _done(root)
