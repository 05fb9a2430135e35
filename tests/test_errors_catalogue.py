"""The ebMS error catalogue against ICD Annex 4 / eDelivery 1.4.3.1, sub-codes, permanence and EbmsFault."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.ebms import errors
from gateway.ebms.errors import ERRORS, EbmsFault, find_sub_code, is_permanent, lookup
from gateway.ebms.model import EbmsError

ICD = Path(__file__).resolve().parents[2] / "shared" / "specs" / "ics2-hti-icd-v3.30.txt"

EXPECTED = {
    "EBMS:0001": ("ValueNotRecognized", "failure", "Content", "ebMS"),
    "EBMS:0002": ("FeatureNotSupported", "warning", "Content", "ebMS"),
    "EBMS:0003": ("ValueInconsistent", "failure", "Content", "ebMS"),
    "EBMS:0004": ("Other", "failure", "Content", "ebMS"),
    "EBMS:0005": ("ConnectionFailure", "failure", "Communication", "ebMS"),
    "EBMS:0006": ("EmptyMessagePartitionChannel", "warning", "Communication", "ebMS"),
    "EBMS:0007": ("MimeInconsistency", "failure", "Unpackaging", "ebMS"),
    "EBMS:0008": ("FeatureNotSupported", "failure", "Unpackaging", "ebMS"),
    "EBMS:0009": ("InvalidHeader", "failure", "Unpackaging", "ebMS"),
    "EBMS:0010": ("ProcessingModeMismatch", "failure", "Processing", "ebMS"),
    "EBMS:0011": ("ExternalPayloadError", "failure", "Content", "ebMS"),
    "EBMS:0101": ("FailedAuthentication", "failure", "Processing", "security"),
    "EBMS:0102": ("FailedDecryption", "failure", "Processing", "security"),
    "EBMS:0103": ("PolicyNoncompliance", "failure", "Processing", "security"),
    "EBMS:0201": ("DysfunctionalReliability", "failure", "Processing", "reliability"),
    "EBMS:0202": ("DeliveryFailure", "failure", "Communication", "reliability"),
    "EBMS:0301": ("MissingReceipt", "failure", "Communication", "ebMS"),
    "EBMS:0302": ("InvalidReceipt", "failure", "Communication", "ebMS"),
    "EBMS:0303": ("DecompressionFailure", "failure", "Communication", "ebMS"),
}


def test_catalogue_is_exactly_annex_4() -> None:
    assert set(ERRORS) == set(EXPECTED)
    for code, (short, sev, cat, origin) in EXPECTED.items():
        e = ERRORS[code]
        assert (e.short_description, e.severity, e.category, e.origin) == (short, sev, cat, origin), code
        assert e.meaning


@pytest.mark.skipif(not ICD.exists(), reason="ICD text not available")
def test_catalogue_agrees_with_icd_text() -> None:
    """Every code row of Annex 4 tables 20-23 is in the catalogue with the printed short description."""
    text = ICD.read_text(encoding="utf-8", errors="replace")
    annex = text[text.index("Annex 4. EBMS ERRORS"):text.index("Annex 5.")]
    rows = re.findall(r"^\s*(EBMS:\d{4})\s+([A-Za-z-]+)\s+(failure|warning)\s+(\w+)", annex, re.M)
    assert len(rows) == len(EXPECTED)
    for code, short, sev, cat in rows:
        entry = ERRORS[code]
        # the ICD wraps "Decompression-Failure" over two lines
        assert entry.short_description.startswith(short.rstrip("-")), code
        assert entry.severity == sev and entry.category == cat, code


def test_lookup_tolerates_prefix_case_and_space() -> None:
    assert lookup(" ebms:0101 ") is ERRORS["EBMS:0101"]
    assert lookup("EBMS:9999") is None
    assert lookup("") is None


@pytest.mark.parametrize("texts, expected", [
    (("A001",), "A001"),
    (("UUM&DS: A001 - rejected",), "A001"),
    (("subcode=A003",), "A003"),
    (("(A002)",), "A002"),
    ((None, "", "Other A003"), "A003"),
    (("no code here", "A002 in description"), "A002"),
    (("first A003", "second A001"), "A003"),
    (("A0012",), None),
    (("XA001",), None),
    (("a001",), None),
    (("A004",), None),
    ((None, None), None),
    ((), None),
])
def test_find_sub_code(texts: tuple[str | None, ...], expected: str | None) -> None:
    assert find_sub_code(*texts) == expected


@pytest.mark.parametrize("code, sub, permanent", [
    ("EBMS:0004", "A001", True),
    ("EBMS:0004", "A002", True),
    ("EBMS:0004", "A003", False),
    ("EBMS:0004", None, False),
    ("EBMS:0004", "A999", False),
    ("EBMS:0006", None, False),
    ("EBMS:0101", None, True), ("EBMS:0102", None, True), ("EBMS:0103", None, True),
    ("EBMS:0010", None, True), ("EBMS:0001", None, True), ("EBMS:0002", None, True),
    ("EBMS:0003", None, True), ("EBMS:0007", None, True), ("EBMS:0008", None, True),
    ("EBMS:0009", None, True), ("EBMS:0011", None, True),
    ("EBMS:0005", None, False),
    ("EBMS:0201", None, False), ("EBMS:0202", None, False),
    ("EBMS:0301", None, False), ("EBMS:0302", None, False),
    ("EBMS:0303", None, True),
    ("EBMS:0101", "A003", True),   # a sub-code only qualifies EBMS:0004
    ("EBMS:1234", None, True),     # unknown: escalate, do not retry forever
    ("garbage", None, True),
])
def test_permanence(code: str, sub: str | None, permanent: bool) -> None:
    assert is_permanent(code, sub) is permanent


def test_is_permanent_error_reads_subcode_anywhere() -> None:
    base = dict(error_code="EBMS:0004", severity="failure")
    assert errors.is_permanent_error(EbmsError(**base, error_detail="A001")) is True
    assert errors.is_permanent_error(EbmsError(**base, description="UUM&DS down (A003)")) is False
    assert errors.is_permanent_error(EbmsError(**base, short_description="A002")) is True
    assert errors.is_permanent_error(EbmsError(**base)) is False


def test_fault_carries_catalogue_values_and_builds_error() -> None:
    f = EbmsFault("EBMS:0101", "signature does not verify", detail="Reference #body digest mismatch",
                  ref_to_message_id="m1@x")
    assert f.code == "EBMS:0101" and f.severity == "failure" and f.short_description == "FailedAuthentication"
    assert f.category == "Processing" and f.origin == "security" and f.permanent
    assert "EBMS:0101" in str(f) and "signature does not verify" in str(f)
    e = f.to_error()
    assert e == EbmsError(error_code="EBMS:0101", severity="failure", category="Processing",
                          short_description="FailedAuthentication", description="signature does not verify",
                          error_detail="Reference #body digest mismatch", origin="security",
                          ref_to_message_in_error="m1@x")
    assert f.to_error(ref_to_message_in_error="other@x").ref_to_message_in_error == "other@x"


def test_fault_defaults_and_overrides() -> None:
    assert EbmsFault("EBMS:0006", "empty").severity == "warning"
    assert EbmsFault("ebms:0004", "x", severity="warning").severity == "warning"
    assert EbmsFault("EBMS:0004", "UUM&DS said A001").permanent is True
    assert EbmsFault("EBMS:0004", "internal").permanent is False
    with pytest.raises(ValueError):
        EbmsFault("EBMS:0999", "typo")
    with pytest.raises(ValueError):
        EbmsFault("EBMS:0004", "x", severity="fatal")
    with pytest.raises(EbmsFault) as ei:
        raise EbmsFault("EBMS:0303", "bad gzip")
    assert isinstance(ei.value, Exception) and ei.value.message == "bad gzip"
