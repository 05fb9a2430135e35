"""Would customs accept this payload? Local pre-validation of ICS2 and ICS phase-1 messages.

``validate_payload(data, profile=None, action=None)`` returns a :class:`ValidationReport`. Profiles:

* ``None``: automatic by family: ICS2 payloads get the ICS2 structure checks, phase-1 payloads ``eu-ics1``;
* ``"ics2"``: the ICS2 structure and format checks (``ics2_rules``);
* ``"eu-ics1"``: phase 1, source reading: XSD (HMRC's plain v11-2 set, every element the source marks R
  required), then the seed data model's conditions and rules (``ics1_rules``, ``gb=False``);
* ``"uk-ssgb"``: HMRC Safety & Security GB: the optional-fields (``-New``, published) XSD with HMRC's schema
  error numbers, then HMRC's business-rule catalogue (``gb=True``), so verdict and codes follow HMRC's service.

Phase-1 order follows HMRC: unparsable -> one finding; schema errors -> reported, rules skipped; else rules.
Outcome messages (CC328A, CC316A, CC304A, CC305A, CC351A) and CC323A are checked against their XSD only.
"""

from __future__ import annotations

from gateway.ics2 import catalogue
from gateway.ics2.findings import INCORRECT, NOT_SUPPORTED, Finding, ValidationReport
from gateway.ics2.ics1_rules import check_ens
from gateway.ics2.ics2_rules import check_ics2
from gateway.ics2.inspect import PayloadError, identify, message_root
from gateway.ics2.xmlutil import local, parse_payload, pointer
from gateway.ics2.xsd import schema_for, xsd_findings
from gateway.xmlsafe import XmlRejected

PROFILES = ("ics2", "eu-ics1", "uk-ssgb")

__all__ = ["PROFILES", "Finding", "ValidationReport", "precheck", "validate_payload"]


def validate_payload(data: bytes, *, profile: str | None = None, action: str | None = None) -> ValidationReport:
    """Validates one payload; never raises for bad content (unparsable or unknown payloads are invalid)."""
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"unknown validation profile {profile!r}; choose one of {', '.join(PROFILES)}")
    try:
        root = message_root(parse_payload(data))
    except XmlRejected as exc:
        code = "4999" if profile == "uk-ssgb" else str(INCORRECT)
        return ValidationReport(None, False, [Finding(code, "XML", "/", str(exc), None, INCORRECT)], profile)
    except PayloadError as exc:
        return ValidationReport(None, False, [Finding(str(INCORRECT), "MESSAGE", "/", str(exc))], profile)
    try:
        spec = identify(root)
    except PayloadError as exc:
        return ValidationReport(None, False, [Finding(str(NOT_SUPPORTED), "MESSAGE", pointer(root), str(exc),
                                                      local(root), NOT_SUPPORTED)], profile)
    if spec.family == "ics2":
        if profile not in (None, "ics2"):
            return _mismatch(spec, profile)
        errors = check_ics2(root, spec, action=action)
        return ValidationReport(spec.id, not errors, errors, "ics2")
    if profile == "ics2":
        return _mismatch(spec, profile)
    effective = profile or "eu-ics1"
    gb = effective == "uk-ssgb"
    errors: list[Finding] = []
    if action is not None and action not in (spec.id, spec.xml_root):
        errors.append(Finding(str(INCORRECT), "ACTION", pointer(root), f"action {action} does not match the "
                              f"payload message {spec.id}", action, INCORRECT))
    xsd = schema_for(spec.xml_root, "new" if gb else "plain")
    if xsd is not None:
        errors += xsd_findings(root, xsd, hmrc_codes=gb)
    if not errors and spec.id in ("IE315", "IE313"):
        errors += check_ens(root, gb=gb)
    return ValidationReport(spec.id, not errors, errors, effective)


def _mismatch(spec: catalogue.MessageSpec, profile: str) -> ValidationReport:
    return ValidationReport(spec.id, False, [Finding(str(NOT_SUPPORTED), "PROFILE", "/", f"profile {profile} does "
                                                     f"not apply to {spec.family} message {spec.id}")], profile)


def precheck(data: bytes, *, mode: str = "block", profile: str | None = None,
             action: str | None = None) -> tuple[bool, ValidationReport]:
    """The pipeline's pre-send gate: ``(may_send, report)``. ``mode="block"`` stops an invalid payload,
    ``mode="warn"`` lets it through (the caller logs ``report.errors``), ``mode="off"`` skips validation."""
    if mode not in ("block", "warn", "off"):
        raise ValueError(f"pre-validation mode must be block, warn or off, not {mode!r}")
    if mode == "off":
        return True, ValidationReport(None, True, [], profile)
    report = validate_payload(data, profile=profile, action=action)
    return (report.valid or mode == "warn"), report
