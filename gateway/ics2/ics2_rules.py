"""Is this ICS2 payload well-formed enough to send? Structure and format checks without the official XSDs.

Checked: the message id against the AS4 action; LRN (an..22) on filings and arrival notifications; MRN (an18:
2-digit year, 2-letter country, 14 alphanumerics) on amendments, invalidation/consultation requests and trader
responses; EORI shapes of every party; customs office references (an8); ISO dates and date-times; country codes;
mode of transport; specific circumstance indicator against the message id (``F32`` for IE3F32/IE3A32); binary
attachment identifications (present, unique, allowed for this message, PDF/JPEG MIME type). Finding code =
functional error type; rule ids are ``ICS2-*``.
"""

from __future__ import annotations

import re

from lxml import etree

from gateway.ics2 import formats
from gateway.ics2.catalogue import MessageSpec
from gateway.ics2.findings import DUPLICATE, INCORRECT, MISSING, NOT_SUPPORTED, TOO_LONG, Finding
from gateway.ics2.xmlutil import children, iter_local, local, pointer, text

_PARTIES = ("declarant", "representative", "carrier", "personfiling", "consignor", "consignee", "notifyparty",
            "supplementarydeclarant", "seller", "buyer")
_MRN_KINDS = frozenset({"amendment", "invalidation", "consultation"})
_SCI = re.compile(r"^[A-Z0-9]{3}$")
_MIME_OK = frozenset({"application/pdf", "image/jpeg"})


def _f(rule: str, etype: int, el: etree._Element, reason: str, value: str | None = None) -> Finding:
    return Finding(str(etype), rule, pointer(el), reason, value, etype)


def _first(root: etree._Element, name_lower: str) -> etree._Element | None:
    return next(iter_local(root, name_lower), None)


def check_ics2(root: etree._Element, spec: MessageSpec, *, action: str | None = None) -> list[Finding]:
    """Every structural finding on an ICS2 payload whose root is ``spec``'s message."""
    out: list[Finding] = []
    if action is not None and action != spec.id:
        out.append(_f("ICS2-ACTION", INCORRECT, root, f"AS4 action {action} does not match the payload message "
                      f"{spec.id}", action))
    lrn_el, mrn_el = _first(root, "lrn"), _first(root, "mrn")
    needs_lrn = spec.kind in ("filing", "arrival") and spec.direction == "t2c"
    needs_mrn = spec.direction == "t2c" and (spec.kind in _MRN_KINDS or spec.kind == "response")
    if needs_lrn and lrn_el is None:
        out.append(_f("ICS2-LRN", MISSING, root, f"{spec.id} requires an LRN"))
    if lrn_el is not None:
        v = text(lrn_el)
        if v is None or not formats.LRN.match(v):
            out.append(_f("ICS2-LRN", TOO_LONG if v and len(v) > 22 else INCORRECT, lrn_el,
                          "LRN must be 1 to 22 characters (an..22)", v))
    if needs_mrn and mrn_el is None:
        out.append(_f("ICS2-MRN", MISSING, root, f"{spec.id} requires the MRN of the registered filing"))
    if mrn_el is not None:
        v = text(mrn_el)
        if v is None or not formats.MRN_LOOSE.match(v):
            out.append(_f("ICS2-MRN", INCORRECT, mrn_el, "MRN must be an18: 2-digit year, 2-letter country code, "
                          "14 letters or digits", v))
        elif v[2:4] not in formats.ISO_COUNTRIES:
            out.append(_f("ICS2-MRN", INCORRECT, mrn_el, "MRN characters 3-4 must be a country code", v))
    for party in _PARTIES:
        for grp in iter_local(root, party):
            for idn in children(grp):
                if local(idn).lower() != "identificationnumber":
                    continue
                v = text(idn)
                if v is None or not formats.EORI.match(v) or v[:2] not in formats.ISO_COUNTRIES:
                    out.append(_f("ICS2-EORI", INCORRECT, idn, f"{local(grp)} identification number must be an "
                                  "EORI: country code + up to 15 letters or digits", v))
    offices = list(iter_local(root, "customsofficeoffirstentry"))
    if spec.kind in ("filing", "arrival") and spec.direction == "t2c" and not offices:
        out.append(_f("ICS2-OFFICE", MISSING, root, f"{spec.id} requires the customs office of first entry"))
    for name in ("customsofficeoffirstentry", "customsofficeofsubsequententry", "customsoffice"):
        for o in iter_local(root, name):
            for ref in children(o):
                if local(ref).lower() == "referencenumber":
                    v = text(ref)
                    if v is None or not formats.OFFICE.match(v) or v[:2] not in formats.ISO_COUNTRIES:
                        out.append(_f("ICS2-OFFICE", INCORRECT, ref, "Customs office reference number must be an8: "
                                      "country code + 6 letters or digits", v))
    for el in root.iter():
        if not isinstance(el.tag, str) or len(el):
            continue
        name = local(el).lower()
        v = text(el)
        if v is None:
            if name in ("lrn", "mrn", "identificationnumber", "referencenumber"):
                continue
            continue
        if name.endswith("datetime") or name.endswith("dateandtime") or name.startswith("dateandtime"):
            if not formats.is_iso_datetime(v):
                out.append(_f("ICS2-DATE", INCORRECT, el, "Date and time must be ISO 8601 (YYYY-MM-DDThh:mm[:ss]"
                              "[Z|+hh:mm]) with a real calendar date", v))
        elif name.endswith("date"):
            if not (formats.is_iso_date(v) or formats.is_iso_datetime(v)):
                out.append(_f("ICS2-DATE", INCORRECT, el, "Date must be ISO 8601 (YYYY-MM-DD) with a real "
                              "calendar date", v))
        elif name in ("countrycode", "country", "nationality"):
            if v not in formats.ISO_COUNTRIES:
                out.append(_f("ICS2-COUNTRY", INCORRECT, el, "Country code must be ISO 3166-1 alpha-2", v))
        elif name == "modeoftransport":
            if not re.fullmatch(r"[1-9]", v):
                out.append(_f("ICS2-MODE", INCORRECT, el, "Mode of transport must be a code 1-9", v))
        elif name == "specificcircumstanceindicator":
            if not _SCI.match(v):
                out.append(_f("ICS2-SCI", INCORRECT, el, "Specific circumstance indicator must be 3 characters", v))
            elif spec.kind in ("filing", "amendment") and v != "F" + spec.id[4:]:
                out.append(_f("ICS2-SCI", INCORRECT, el, f"Specific circumstance indicator {v} does not match "
                              f"message {spec.id} (expected F{spec.id[4:]})", v))
    seen: set[str] = set()
    for bf in iter_local(root, "binaryfile"):
        if not spec.attachments_allowed:
            out.append(_f("ICS2-ATTACHMENT", NOT_SUPPORTED, bf, f"{spec.id} cannot carry binary attachments "
                          "(ICD 3.1.11)"))
        ident = next((c for c in children(bf) if local(c).lower() == "identification"), None)
        v = text(ident)
        if v is None:
            out.append(_f("ICS2-ATTACHMENT", MISSING, bf, "binaryFile requires an identification"))
        elif v in seen:
            out.append(_f("ICS2-ATTACHMENT", DUPLICATE, ident if ident is not None else bf,
                          "binaryFile identification must be unique", v))
        else:
            seen.add(v)
        mime = next((c for c in children(bf) if local(c).lower() in ("mime", "mimetype")), None)
        if mime is not None and text(mime) not in _MIME_OK:
            out.append(_f("ICS2-ATTACHMENT", INCORRECT, mime, "Attachment MIME type must be application/pdf or "
                          "image/jpeg", text(mime)))
    if spec.kind == "error" and not any(True for _ in iter_local(root, "error")):
        out.append(_f("ICS2-ERROR", MISSING, root, f"{spec.id} must list at least one error"))
    return out
