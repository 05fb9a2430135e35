"""Each checked phase-1 condition/rule: the valid base passes it, a mutated copy fails it (both profiles)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from gateway.ics2.validate import validate_payload

FIX = Path(__file__).parent / "fixtures"
BASE = (FIX / "ics1" / "IE315-sea-gb.xml").read_bytes()
INVALID = FIX / "invalid"


def _e(tag: str, value: str | None = None) -> etree._Element:
    el = etree.Element(tag)
    el.text = value
    return el


def _set(path: str, value: str) -> Callable[[etree._Element], None]:
    def f(root: etree._Element) -> None:
        root.find(path).text = value
    return f


def _remove(path: str) -> Callable[[etree._Element], None]:
    def f(root: etree._Element) -> None:
        for el in root.findall(path):
            el.getparent().remove(el)
    return f


def _insert_after(path: str, tag: str, value: str | None) -> Callable[[etree._Element], None]:
    def f(root: etree._Element) -> None:
        el = root.find(path)
        el.addnext(_e(tag, value))
    return f


def _chain(*fs: Callable[[etree._Element], None]) -> Callable[[etree._Element], None]:
    def f(root: etree._Element) -> None:
        for g in fs:
            g(root)
    return f


def _item_consignors(root: etree._Element) -> None:
    root.remove(root.find("TRACONCO1"))
    for gi in root.findall("GOOITEGDS"):
        co = etree.Element("TRACONCO2")
        co.append(_e("TINCO259", "GB987654321000"))
        gi.find("PRODOCDC2").addnext(co)


def _add_10600(root: etree._Element) -> None:
    gi = root.find("GOOITEGDS")
    sm = etree.Element("SPEMENMT2")
    sm.append(_e("AddInfCodMT23", "10600"))
    gi.find("PRODOCDC2").addnext(sm)


def _bulk_with_count(root: etree._Element) -> None:
    root.find("GOOITEGDS/PACGS2/KinOfPacGS23").text = "VQ"


# rule -> (mutation, HMRC code on uk-ssgb or None when the rule is source-only)
CASES: dict[str, tuple[Callable[[etree._Element], None], str | None]] = {
    "C17": (_remove("HEAHEA/IdeOfMeaOfTraCroHEA85"), "8107"),
    "C19": (_chain(_remove("HEAHEA/IdeOfMeaOfTraCroHEA85"), _set("HEAHEA/TraModAtBorHEA76", "2")), "8199"),
    "C24": (_insert_after("HEAHEA/IdeOfMeaOfTraCroHEA85", "NatOfMeaOfTraCroHEA87", "PA"), "8115"),
    "C62": (_bulk_with_count, "8149"),
    "C502": (_remove("TRACARENT601/TINTRACARENT602"), None),   # XSD requires the TIN in the group -> see test
    "C511": (_item_consignors, "8193"),
    "C514": (_set("HEAHEA/IdeOfMeaOfTraCroHEA85", "IMO9321483"), "8114"),
    "C518": (_chain(_remove("HEAHEA/IdeOfMeaOfTraCroHEA85"), _set("HEAHEA/TraModAtBorHEA76", "4"),
                    _set("HEAHEA/ConRefNumHEA", "FLIGHT 12")), "8118"),
    "C529": (_insert_after("HEAHEA/DecPlaHEA394", "SpeCirIndHEA1", "C"), "8111"),
    "C562": (_chain(_insert_after("HEAHEA/DecPlaHEA394", "SpeCirIndHEA1", "E"),
                    lambda r: r.find("TRACONCE1").insert(0, _e("NamCE17", "Importer Ltd")),
                    _remove("TRACONCE1/TINCE159")), "8105"),
    "C567": (_chain(_remove("GOOITEGDS/PRODOCDC2")), "8170"),
    "C570": (_remove("ITI[2]"), "8684"),
    "C574": (_chain(_remove("HEAHEA/PlaLoaGOOITE334")), "8104"),
    "C576": (_chain(_insert_after("HEAHEA/DecPlaHEA394", "TraChaMetOfPayHEA1", "A"),
                    _insert_after("GOOITEGDS/GroMasGDS46", "MetOfPayGDI12", "A")), "8135"),
    "C577": (_remove("GOOITEGDS/PACGS2"), "8688"),
    "C579": (_remove("HEAHEA/PlaUnlGOOITE334"), "8687"),
    "C582": (_remove("HEAHEA/TotNumOfPacHEA306"), "8109"),
    "C583": (_add_10600, "8204"),
    "C585": (_chain(_remove("GOOITEGDS/GooDesGDS23"), _remove("GOOITEGDS/COMCODGODITM")), "8207"),
    "C592": (_chain(_remove("HEAHEA/TotGroMasHEA307"), _remove("GOOITEGDS/GroMasGDS46")), "8103"),
    "R5": (_set("GOOITEGDS/IteNumGDS7", "3"), "8102"),
    "R7": (_set("GOOITEGDS[2]/IteNumGDS7", "1"), "8102"),
    "R105": (_set("HEAHEA/TotNumOfPacHEA306", "44"), "8117"),
    "R660": (_set("HEAHEA/DecDatTimHEA114", "202302290930"), None),
    "R670": (_set("HEAHEA/PlaLoaGOOITE334", "QQ Nowhere"), None),
    "R806": (_set("TRACARENT601/TINTRACARENT602", "GB123456789000"), "8195"),
    "R811": (_set("HEAHEA/TotNumOfIteHEA305", "3"), "8206"),
    "R827": (lambda r: r.find("PERLODSUMDEC").addprevious(_lodgement()), "8616"),
    "R837": (_set("PERLODSUMDEC/TINPLD1", "NL123456789"), "8692"),
    "R805": (_set("TRACONCE1/TINCE159", "GB123456789000"), None),
    "TR0812": (_set("HEAHEA/TotGroMasHEA307", "100.0"), "8686"),
    "TR0022": (_set("GOOITEGDS/PACGS2/NumOfPacGS24", "0"), "8153"),
    "GB-MesSenMES3": (_set("MesSenMES3", "GB123456789000"), "4065"),
    "GB-leading-zero": (_set("HEAHEA/TotNumOfIteHEA305", "02"), "8671"),
    "GB-decimal": (_set("HEAHEA/TotGroMasHEA307", "012500.5"), "8674"),
    "GB-TMB": (_chain(_remove("HEAHEA/IdeOfMeaOfTraCroHEA85"), _set("HEAHEA/TraModAtBorHEA76", "5")), "8689"),
}
# C502 cannot be violated schema-validly (TINTRACARENT602 ... is optional in the XSD? checked below)


def _lodgement() -> etree._Element:
    el = etree.Element("CUSOFFLON")
    el.append(_e("RefNumCOL1", "GB000060"))
    return el


def mutated(rule: str) -> bytes:
    root = etree.fromstring(BASE)
    CASES[rule][0](root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _rules(report) -> set[str]:  # type: ignore[no-untyped-def]
    return {e.rule for e in report.errors}


@pytest.mark.parametrize("profile", ["eu-ics1", "uk-ssgb"])
def test_base_passes_every_rule(profile: str) -> None:
    r = validate_payload(BASE, profile=profile)
    assert r.valid, r.errors


GB_ONLY = {k for k in CASES if k.startswith("GB-")} | {"R837"}
EU_ONLY = {"R660", "R670", "R805"}


@pytest.mark.parametrize("rule", sorted(set(CASES) - GB_ONLY - {"C502"}))
def test_rule_fails_eu(rule: str) -> None:
    r = validate_payload(mutated(rule), profile="eu-ics1")
    assert not r.valid
    hits = [e for e in r.errors if e.rule in (rule, "C584")]
    assert hits, f"{rule} not reported; got {[(e.rule, e.text) for e in r.errors]}"
    assert all(e.pointer.startswith("/CC315A[1]") and e.text for e in hits)


@pytest.mark.parametrize("rule", sorted(set(CASES) - EU_ONLY - {"C502"}))
def test_rule_fails_gb_with_hmrc_code(rule: str) -> None:
    r = validate_payload(mutated(rule), profile="uk-ssgb")
    assert not r.valid
    code = CASES[rule][1]
    assert code in {e.code for e in r.errors}, [(e.code, e.rule, e.text) for e in r.errors]


def test_c502_carrier_tin_for_sea() -> None:
    root = etree.fromstring(BASE)
    car = root.find("TRACARENT601")
    car.remove(car.find("TINTRACARENT602"))
    for tag, v in (("NamTRACARENT604", "Ocean Carrier SA"), ("StrNumTRACARENT607", "Quai 1"),
                   ("PstCodTRACARENT606", "13002"), ("CtyTRACARENT603", "Marseille"), ("CouCodTRACARENT605", "FR")):
        car.append(_e(tag, v))
    data = etree.tostring(root)
    gb = validate_payload(data, profile="uk-ssgb")
    eu = validate_payload(data, profile="eu-ics1")
    assert "8164" in {e.code for e in gb.errors}
    assert "C502" in _rules(eu)


def test_eu_only_rules_do_not_fire_on_gb() -> None:
    for rule in EU_ONLY:
        assert rule not in _rules(validate_payload(mutated(rule), profile="uk-ssgb"))


def test_finding_carries_original_value() -> None:
    r = validate_payload(mutated("R105"), profile="eu-ics1")
    f = next(e for e in r.errors if e.rule == "R105")
    assert f.value == "44" and f.error_type == 12 and f.pointer == "/CC315A[1]/HEAHEA[1]"


def test_invalid_fixture_files_match_rules() -> None:
    """tests/fixtures/invalid/IE315-<rule>.xml: one per checked rule, regenerated with ICS2_REGEN=1."""
    if os.environ.get("ICS2_REGEN"):
        INVALID.mkdir(exist_ok=True)
        for rule in CASES:
            (INVALID / f"IE315-{rule}.xml").write_bytes(mutated(rule))
    files = sorted(INVALID.glob("IE315-*.xml"))
    assert {f.stem.removeprefix("IE315-") for f in files} == set(CASES)
    for f in files:
        rule = f.stem.removeprefix("IE315-")
        profile = "uk-ssgb" if rule in GB_ONLY else "eu-ics1"
        assert not validate_payload(f.read_bytes(), profile=profile).valid, f.name
