"""What does this payload say? Facts for routing and correlation, extracted from ICS2 or phase-1 business XML.

Extraction is namespace-agnostic: elements are matched by local name only (ICS2 names case-insensitively), so
the same code reads a payload with or without a namespace, with any prefix.

ICS2 payload convention used by the gateway and its fixtures (no official ICS2 XSD is available here): the root
element's local name is the message id (``IE3F32``), in the namespace of the EU ICS2 business-object schemas
(``urn:wco:datamodel:eu:ics2:2``, elements qualified, lowerCamelCase names). The elements read:

* ``LRN``, ``MRN``, ``functionalReference`` (IE3N99/IE3N01 echo the reference of the message in error);
* ``declarant/identificationNumber``, ``representative/identificationNumber``, ``carrier/identificationNumber``,
  ``personFiling/identificationNumber`` (when the payload names the person filing explicitly);
* ``customsOfficeOfFirstEntry/referenceNumber``; ``addressedMemberState/countryCode`` as a routing fallback;
* ``binaryFile/identification`` (ICD 4.2.5: equals the attachment's ``eb:PartInfo/@href`` without ``cid:``).

Person filing: the explicit ``personFiling`` if present, else the representative (who files on the declarant's
behalf), else the declarant. Phase 1: the person lodging (``PERLODSUMDEC/TINPLD1``) is both person filing and
declarant; IE323 uses the trader requesting the diversion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from gateway.ics2 import catalogue
from gateway.ics2.xmlutil import child, child_text, children, iter_local, local, parse_payload, text
from gateway.xmlsafe import XmlRejected

_WRAPPERS = frozenset({"outcomeResponse", "notificationResponse"})
_ICS1_ROOT = re.compile(r"^C[CD][0-9]{3}A$")
_ICS2_LIKE = re.compile(r"^IE[0-9][A-Z][0-9]{2}$", re.IGNORECASE)


class PayloadError(ValueError):
    """The payload is not a message we know, or contradicts itself."""


@dataclass(frozen=True)
class PayloadFacts:
    """Routing and correlation facts of one payload; None where the payload does not say."""

    message_id: str
    family: str
    lrn: str | None
    mrn: str | None
    functional_reference: str | None
    person_filing_eori: str | None
    declarant_eori: str | None
    representative_eori: str | None
    carrier_eori: str | None
    office_of_first_entry: str | None
    first_entry_country: str | None
    binary_identifications: tuple[str, ...] = ()


def message_root(root: etree._Element) -> etree._Element:
    """The message element: the root itself, or the CCxxxA inside an HMRC outcome/notification wrapper."""
    if local(root) in _WRAPPERS:
        for c in root.iter():
            if isinstance(c.tag, str) and _ICS1_ROOT.match(local(c)):
                return c
        raise PayloadError(f"{local(root)} wrapper holds no CCnnnA message")
    return root


def identify(root: etree._Element) -> catalogue.MessageSpec:
    """The catalogue entry for the message element ``root``; PayloadError when unknown."""
    name = local(root)
    spec = catalogue.lookup(name)
    if spec is None:
        if _ICS2_LIKE.match(name) or _ICS1_ROOT.match(name):
            raise PayloadError(f"unknown message id {name!r}: not in the ICS2 / ICS phase-1 catalogue")
        raise PayloadError(f"root element {name!r} is not an ICS2 or ICS phase-1 message")
    if spec.family == "ics1" and name != spec.xml_root:
        raise PayloadError(f"phase-1 message root must be {spec.xml_root!r}, not {name!r}")
    return spec


def _single(root: etree._Element, name_lower: str, what: str) -> str | None:
    """The value of the ``name_lower`` elements; PayloadError when two of them disagree."""
    values = {v for v in (text(e) for e in iter_local(root, name_lower)) if v is not None}
    if len(values) > 1:
        raise PayloadError(f"inconsistent payload: {what} has several values ({', '.join(sorted(values))})")
    return next(iter(values), None)


def _party(root: etree._Element, group_lower: str) -> str | None:
    for g in iter_local(root, group_lower):
        for c in children(g):
            if local(c).lower() == "identificationnumber":
                return text(c)
    return None


def _ics2_facts(root: etree._Element, spec: catalogue.MessageSpec) -> PayloadFacts:
    lrn = _single(root, "lrn", "LRN")
    mrn = _single(root, "mrn", "MRN")
    fref = _single(root, "functionalreference", "functionalReference")
    declarant = _party(root, "declarant")
    representative = _party(root, "representative")
    carrier = _party(root, "carrier")
    person_filing = _party(root, "personfiling") or representative or declarant
    office = None
    for o in iter_local(root, "customsofficeoffirstentry"):
        office = next((text(c) for c in children(o) if local(c).lower() == "referencenumber"), None)
        break
    country = office[:2] if office else None
    if country is None:
        for ams in iter_local(root, "addressedmemberstate"):
            country = next((text(c) for c in children(ams) if local(c).lower() == "countrycode"), None)
            break
    if fref is None:
        fref = {"LRN": lrn, "MRN": mrn}.get(spec.reference)
    binaries: list[str] = []
    for bf in iter_local(root, "binaryfile"):
        for c in children(bf):
            if local(c).lower() == "identification" and text(c):
                binaries.append(text(c) or "")
    return PayloadFacts(
        message_id=spec.id, family="ics2", lrn=lrn, mrn=mrn, functional_reference=fref,
        person_filing_eori=person_filing, declarant_eori=declarant, representative_eori=representative,
        carrier_eori=carrier, office_of_first_entry=office, first_entry_country=country,
        binary_identifications=tuple(binaries))


def _ics1_facts(root: etree._Element, spec: catalogue.MessageSpec) -> PayloadFacts:
    declared_type = child_text(root, "MesTypMES20")
    if declared_type is not None and declared_type != spec.xml_root:
        raise PayloadError(f"inconsistent payload: root {spec.xml_root} but MesTypMES20 says {declared_type}")
    hea = child(root, "HEAHEA")
    lrn = child_text(hea, "RefNumHEA4") or child_text(hea, "DivRefNumHEA119")
    mrn = child_text(hea, "DocNumHEA5")
    lodging = child_text(child(root, "PERLODSUMDEC"), "TINPLD1")
    requester = child_text(child(root, "TRAREQDIV456"), "TINTRAREQDIV463")
    representative = child_text(child(root, "TRAREP"), "TINTRE1")
    carrier = child_text(child(root, "TRACARENT601"), "TINTRACARENT602")
    office = child_text(child(root, "CUSOFFFENT730"), "RefNumCUSOFFFENT731")
    country = office[:2] if office else child_text(hea, "CouCodOffFirEntDecHEA100")
    fref = {"LRN": lrn, "MRN": mrn, "DiversionLRN": lrn}.get(spec.reference)
    return PayloadFacts(
        message_id=spec.id, family="ics1", lrn=lrn, mrn=mrn, functional_reference=fref,
        person_filing_eori=lodging or requester, declarant_eori=lodging, representative_eori=representative,
        carrier_eori=carrier, office_of_first_entry=office, first_entry_country=country,
        binary_identifications=())


def facts_from_tree(root: etree._Element) -> PayloadFacts:
    """Facts from an already parsed payload tree."""
    msg = message_root(root)
    spec = identify(msg)
    return _ics1_facts(msg, spec) if spec.family == "ics1" else _ics2_facts(msg, spec)


def inspect_payload(data: bytes) -> PayloadFacts:
    """Facts of a business payload; raises PayloadError for unparsable, unknown or inconsistent payloads."""
    try:
        root = parse_payload(data)
    except XmlRejected as exc:
        raise PayloadError(f"payload is not acceptable XML: {exc}") from None
    return facts_from_tree(root)
