"""validate_payload on HMRC samples and our fixtures, the ``validate`` command, and the 999-item timing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from lxml import etree

from gateway.cli import main
from gateway.ics2.validate import validate_payload

FIX = Path(__file__).parent / "fixtures"
HMRC = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "hmrc-ssgb"

HMRC_VALID = ["api/store/1.0/examples/validSubmission.xml", "api/store/1.0/examples/validAmendment.xml",
              "responses/samples/DeclarationAcceptanceXML.xml", "responses/samples/DeclarationAcceptanceAllOptionalXML.xml",
              "responses/samples/AmendmentAcceptanceXML.xml", "responses/samples/AmendmentAcceptanceAllOptionalXML.xml",
              "responses/samples/Intervention.xml", "responses/samples/InterventionAllOptional.xml",
              "responses/samples/InterventionNew.xml", "api/outcome/1.0/examples/pollingResponse.xml"]
HMRC_SCHEMA_VALID_ONLY = ["samples/ens/valid/CC315A-schemaValidSample-v11-2.xml",
                          "samples/ens/valid/CC313A-schemaValidSample-v11-2.xml",
                          "samples/ens/valid/CC313A-schemaValidSampleWithSpecialChars-v11-2.xml",
                          "samples/ens/valid/315NoOptional.xml", "samples/ens/valid/313SpecificFields.xml"]
needs_hmrc = pytest.mark.skipif(not HMRC.exists(), reason="shared HMRC material not present")


@needs_hmrc
@pytest.mark.parametrize("name", HMRC_VALID)
def test_hmrc_valid_samples_validate_clean(name: str) -> None:
    r = validate_payload((HMRC / name).read_bytes(), profile="uk-ssgb")
    assert r.valid, [(e.code, e.pointer, e.text) for e in r.errors]


@needs_hmrc
@pytest.mark.parametrize("name", HMRC_SCHEMA_VALID_ONLY)
def test_hmrc_schema_valid_samples_fail_only_business_rules(name: str) -> None:
    r = validate_payload((HMRC / name).read_bytes(), profile="uk-ssgb")
    assert not r.valid and not [e for e in r.errors if e.rule == "XSD"]
    assert all(e.code.startswith("8") or e.code == "4065" for e in r.errors)


@needs_hmrc
def test_hmrc_reduced_sample_gets_4065_and_full_sample_schema_errors() -> None:
    r = validate_payload((HMRC / "api/store/1.0/examples/CC315A_reduced.xml").read_bytes(), profile="uk-ssgb")
    assert "4065" in {e.code for e in r.errors}
    plain = validate_payload((HMRC / "api/store/1.0/examples/CC315A_reduced.xml").read_bytes(), profile="eu-ics1")
    assert {e.rule for e in plain.errors} == {"XSD"}       # TotNumOfIteHEA305 / DecPlaHEA394 required in plain
    full = validate_payload((HMRC / "api/store/1.0/examples/CC315A_full.xml").read_bytes(), profile="uk-ssgb")
    assert {e.rule for e in full.errors} == {"XSD"} and {"4085", "4065"} <= {e.code for e in full.errors}


@pytest.mark.parametrize("path", sorted((FIX / "ics2").glob("*.xml")), ids=lambda p: p.name)
def test_ics2_fixtures(path: Path) -> None:
    r = validate_payload(path.read_bytes())
    assert r.valid == ("-invalid-" not in path.name), [(e.rule, e.text) for e in r.errors]
    if not r.valid:
        assert all(e.text and e.pointer.startswith("/IE3") for e in r.errors)


def test_ics2_action_mismatch_and_profile_mismatch() -> None:
    data = (FIX / "ics2/ens-IE3F32-express.xml").read_bytes()
    assert validate_payload(data, action="IE3F32").valid
    r = validate_payload(data, action="IE3F33")
    assert not r.valid and r.errors[0].rule == "ICS2-ACTION"
    assert not validate_payload(data, profile="uk-ssgb").valid
    with pytest.raises(ValueError):
        validate_payload(data, profile="nope")


def test_attachment_not_allowed_on_ie3f10() -> None:
    data = (FIX / "ics2/ens-IE3F10-sea.xml").read_bytes().replace(
        b"</IE3F10>", b"<binaryFile><identification>a1</identification></binaryFile></IE3F10>")
    assert "ICS2-ATTACHMENT" in {e.rule for e in validate_payload(data).errors}


def test_unparsable_and_unknown_are_invalid_not_exceptions() -> None:
    assert not validate_payload(b"<oops").valid
    r = validate_payload(b"<IE3X99/>")
    assert not r.valid and r.message is None


def test_cli_exit_codes_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    good = str(FIX / "ics2/ens-IE3F32-express.xml")
    bad = str(FIX / "ics2/ens-IE3F32-invalid-lrn-eori.xml")
    assert main(["validate", good, str(FIX / "ics1/IE315-sea-gb.xml")]) == 0
    capsys.readouterr()
    assert main(["validate", "--json", good, bad]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["valid"] for x in lines] == [True, False] and lines[1]["message"] == "IE3F32"
    assert {"code", "rule", "pointer", "text"} <= set(lines[1]["errors"][0])
    assert main(["validate", good, "/nonexistent/file.xml"]) == 2
    assert main(["validate", "--profile", "uk-ssgb", str(FIX / "invalid/IE315-GB-TMB.xml")]) == 1
    assert "8689" in capsys.readouterr().out


def big_ie315(n: int = 999) -> bytes:
    root = etree.fromstring((FIX / "ics1/IE315-sea-gb.xml").read_bytes())
    items = root.findall("GOOITEGDS")
    template = items[1]
    for gi in items[1:]:
        root.remove(gi)
    anchor = items[0]
    for i in range(2, n + 1):
        gi = copy.deepcopy(template)
        gi.find("IteNumGDS7").text = str(i)
        anchor.addnext(gi)
        anchor = gi
    hea = root.find("HEAHEA")
    hea.find("TotNumOfIteHEA305").text = str(n)
    hea.find("TotNumOfPacHEA306").text = str(30 + 15 * (n - 1))
    hea.find("TotGroMasHEA307").text = "9999999.000"
    return etree.tostring(root)


@pytest.mark.parametrize("profile", ["uk-ssgb", "eu-ics1"])
def test_999_items_validate(profile: str) -> None:
    """The largest IE315 the data model allows validates (how fast: `make bench`, not a timed assertion)."""
    data = big_ie315()
    r = validate_payload(data, profile=profile)
    assert r.valid, r.errors[:3]


def test_precheck_block_warn_off() -> None:
    bad = (FIX / "ics2/ens-IE3F32-invalid-lrn-eori.xml").read_bytes()
    from gateway.ics2.validate import precheck
    assert precheck(bad, mode="block")[0] is False
    ok, report = precheck(bad, mode="warn")
    assert ok and not report.valid and report.errors
    assert precheck(bad, mode="off")[0] is True
