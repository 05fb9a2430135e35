"""Fact extraction on every fixture; clear errors for unknown or inconsistent payloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.ics2.inspect import PayloadError, inspect_payload

FIX = Path(__file__).parent / "fixtures"
MRN = "24NLZ8P0RJ4KD5KPA1"

# file -> (message, lrn, mrn, functional ref, person filing, carrier, office, country, binaries)
EXPECTED = {
    "ics2/ens-IE3F10-sea.xml": ("IE3F10", "NLSEA2405140001", None, "NLSEA2405140001", "NL123456789",
                                "DE987654321", "NL000396", "NL", ()),
    "ics2/ens-IE3F26-air.xml": ("IE3F26", "NLAIR2405140002", None, "NLAIR2405140002", "NL123456789",
                                "DE987654321", "NL000854", "NL", ()),
    "ics2/ens-IE3F32-express.xml": ("IE3F32", "NLEXP2405140003", None, "NLEXP2405140003", "NL123456789",
                                    "BE0123456789", "NL000854", "NL", ()),
    "ics2/ens-IE3F42-postal.xml": ("IE3F42", "NLPST2405140004", None, "NLPST2405140004", "NL123456789",
                                   "DE987654321", "NL000854", "NL", ()),
    "ics2/ens-IE3F50-road.xml": ("IE3F50", "PLROAD2405140005", None, "PLROAD2405140005", "NL123456789",
                                 "UA12345678", "PL301010", "PL", ()),
    "ics2/ens-IE3F20-air-attachment.xml": ("IE3F20", "NLAIR2405140006", None, "NLAIR2405140006", "NL123456789",
                                           "DE987654321", "NL000854", "NL", ("binaryattachment1",)),
    "ics2/ens-IE3F32-invalid-lrn-eori.xml": ("IE3F32", "NLEXP-2405140099-TOO-LONG-REF", None,
                                             "NLEXP-2405140099-TOO-LONG-REF", "NL123456789", "123456789",
                                             "NL000854", "NL", ()),
    "ics2/ens-IE3F10-invalid-office-sci.xml": ("IE3F10", "NLSEA2405140098", None, "NLSEA2405140098",
                                               "NL123456789", "DE987654321", "NL0396", "NL", ()),
    "ics2/amd-IE3A32-express.xml": ("IE3A32", None, MRN, MRN, "NL123456789", "BE0123456789", "NL000854", "NL", ()),
    "ics2/arr-IE3N06-arrival.xml": ("IE3N06", "NLARR2405280001", None, "NLARR2405280001", "NL123456789", None,
                                    "NL000854", "NL", ()),
    "ics2/resp-IE3R01-registration.xml": ("IE3R01", "NLEXP2405140003", MRN, "NLEXP2405140003", "NL123456789", None,
                                          "NL000854", "NL", ()),
    "ics2/resp-IE3N99-error.xml": ("IE3N99", None, None, "NLEXP2405140003", "NL123456789", None, "NL000854", "NL",
                                   ()),
    "ics2/resp-IE3N01-lifecycle-error.xml": ("IE3N01", None, None, MRN, "NL123456789", None, None, None, ()),
    "ics2/req-IE3Q01-do-not-load.xml": ("IE3Q01", None, MRN, MRN, "NL123456789", None, "NL000854", "NL", ()),
    "ics2/req-IE3Q02-additional-information.xml": ("IE3Q02", None, MRN, MRN, "NL123456789", None, "NL000854", "NL",
                                                   ()),
    "ics2/req-IE3Q03-hrcm-screening.xml": ("IE3Q03", None, MRN, MRN, "NL123456789", None, "NL000854", "NL", ()),
    "ics2/ntf-IE3N03-assessment-complete.xml": ("IE3N03", None, MRN, MRN, "NL123456789", None, "NL000854", "NL",
                                                ()),
    "ics2/resp-IE3R07-invalidation-accepted.xml": ("IE3R07", None, MRN, MRN, "NL123456789", None, "NL000854", "NL",
                                                   ()),
    "ics1/IE315-sea-gb.xml": ("IE315", "GBENS2405140001", None, "GBENS2405140001", "GB123456789000",
                              "GB111222333000", "GB000060", "GB", ()),
    "ics1/IE313-sea-gb.xml": ("IE313", None, "24GB8K3Q2Z7M1XW4P6", "24GB8K3Q2Z7M1XW4P6", "GB123456789000",
                              "GB111222333000", "GB000060", "GB", ()),
    "ics1/IE328-accepted.xml": ("IE328", "GBENS2405140001", "24GB8K3Q2Z7M1XW4P6", "GBENS2405140001",
                                "GB123456789000", None, "GB000060", "GB", ()),
    "ics1/IE316-rejected.xml": ("IE316", "GBENS2405140002", None, "GBENS2405140002", None, None, None, None, ()),
}


def test_every_fixture_is_covered() -> None:
    on_disk = {str(p.relative_to(FIX)) for d in ("ics1", "ics2") for p in (FIX / d).glob("*.xml")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_extraction(name: str) -> None:
    f = inspect_payload((FIX / name).read_bytes())
    got = (f.message_id, f.lrn, f.mrn, f.functional_reference, f.person_filing_eori, f.carrier_eori,
           f.office_of_first_entry, f.first_entry_country, f.binary_identifications)
    assert got == EXPECTED[name]


def test_namespace_agnostic_and_declarant() -> None:
    data = (FIX / "ics2/ens-IE3F32-express.xml").read_bytes().replace(
        b'xmlns="urn:wco:datamodel:eu:ics2:2"', b"")
    f = inspect_payload(data)
    assert f.message_id == "IE3F32" and f.declarant_eori == "NL123456789" and f.representative_eori is None


def test_representative_files_for_declarant() -> None:
    data = (FIX / "ics2/ens-IE3F32-express.xml").read_bytes().replace(
        b"  <addressedMemberState>",
        b"  <representative><identificationNumber>NL999888777</identificationNumber></representative>\n"
        b"  <addressedMemberState>")
    f = inspect_payload(data)
    assert f.representative_eori == "NL999888777" and f.person_filing_eori == "NL999888777"


@pytest.mark.parametrize("data,needle", [
    (b"<IE3R05/>", "unknown message id"),
    (b"<Envelope/>", "not an ICS2"),
    (b"not xml", "not acceptable XML"),
    (b"<IE3F32><LRN>A</LRN><x><LRN>B</LRN></x></IE3F32>", "inconsistent"),
    (b"<CC315A><MesTypMES20>CC313A</MesTypMES20></CC315A>", "inconsistent"),
    (b'<!DOCTYPE x [<!ENTITY a "b">]><IE3F32/>', "not acceptable XML"),
])
def test_clear_errors(data: bytes, needle: str) -> None:
    with pytest.raises(PayloadError, match=needle):
        inspect_payload(data)
