"""The message catalogue lists ICD Annex 1 exactly and carries Table 7 / Table 9 facts."""

from __future__ import annotations

import pytest

from gateway.ics2.catalogue import CATALOGUE, KINDS, REFERENCES, actions, lookup

F = ["10", "11", "12", "13", "14", "15", "16", "17", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29",
     "30", "31", "32", "33", "34", "40", "41", "42", "43", "44", "45", "50", "51"]


def test_filings_and_amendments_exactly_as_annex_1() -> None:
    ics2 = {k for k, v in CATALOGUE.items() if v.family == "ics2"}
    assert {k for k in ics2 if k.startswith("IE3F")} == {f"IE3F{n}" for n in F}
    assert len([k for k in ics2 if k.startswith("IE3F")]) == 31


def test_no_phantom_ids() -> None:
    for missing in ("IE3R05", "IE3R06", "IE3F18", "IE3F35", "IE3F46"):
        assert lookup(missing) is None


def test_ia3a25_absent() -> None:
    amendments = {k for k in CATALOGUE if k.startswith("IE3A")}
    assert "IE3A25" not in amendments
    assert amendments == {f"IE3A{n}" for n in F if n != "25"}


@pytest.mark.parametrize("mid,direction,category,reference,kind", [
    ("IE3F32", "t2c", "B", "LRN", "filing"), ("IE3A32", "t2c", "B", "MRN", "amendment"),
    ("IE3Q04", "t2c", "C", "MRN", "invalidation"), ("IE3Q05", "t2c", "C", "MRN", "consultation"),
    ("IE3N06", "t2c", "A", "LRN", "arrival"), ("IE3R02", "t2c", "B", "MRN", "response"),
    ("IE3R03", "t2c", "A", "MRN", "response"), ("IE3R01", "c2t", "B", "LRN", "response"),
    ("IE3N99", "c2t", "B", "FunctionalReference", "error"), ("IE3N01", "c2t", "B", "FunctionalReference", "error"),
    ("IE3Q01", "c2t", "A", "MRN", "request"), ("IE3Q03", "c2t", "A", "MRN", "request"),
    ("IE3N03", "c2t", "A", "MRN", "notification"), ("IE3R08", "c2t", "B", "MRN", "consultation"),
    ("IE3R07", "c2t", "C", "MRN", "response"), ("IE3N10", "c2t", "C", "MRN", "notification"),
    ("IE315", "t2c", "B", "LRN", "filing"), ("IE313", "t2c", "B", "MRN", "amendment"),
    ("IE316", "c2t", "B", "LRN", "error"), ("IE351", "c2t", "A", "MRN", "notification"),
])
def test_facts(mid: str, direction: str, category: str, reference: str, kind: str) -> None:
    s = lookup(mid)
    assert s is not None
    assert (s.direction, s.category, s.reference, s.kind) == (direction, category, reference, kind)


def test_ie3n11_category_inferred_and_table7_not() -> None:
    assert lookup("IE3N11").category_inferred  # type: ignore[union-attr]
    assert not lookup("IE3F10").category_inferred  # type: ignore[union-attr]
    assert all(s.category_inferred for s in CATALOGUE.values() if s.family == "ics1")


def test_attachments_per_icd_3_1_11() -> None:
    allowed = {k for k, v in CATALOGUE.items() if v.attachments_allowed}
    expected = {f"IE3{t}{n}" for t in "FA" for n in ("20", "23", "24", "26", "28", "32")} | {"IE3R02", "IE3R03"}
    assert allowed == expected


def test_vocabulary_and_lookup_by_root() -> None:
    assert all(s.kind in KINDS and s.reference in REFERENCES for s in CATALOGUE.values())
    assert lookup("CC315A") is lookup("IE315") and lookup("ie3f32") is lookup("IE3F32")
    assert lookup("IE3F32").service == "eu_ics2_t2c"  # type: ignore[union-attr]
    assert "IE3R01" in lookup("IE3F32").answers  # type: ignore[union-attr]
    assert "IE3F32" in lookup("IE3R01").answer_to  # type: ignore[union-attr]


def test_actions() -> None:
    t2c, c2t = actions("t2c"), actions("c2t")
    assert len(t2c) == 31 + 30 + 5 and "IE3N06" in t2c and "IE3R01" not in t2c
    assert "IE3N99" in c2t and "IE3N11" in c2t and "IE3F10" not in c2t and "IE328" not in c2t
    assert "IE315" in actions("t2c", family="ics1")
    with pytest.raises(ValueError):
        actions("sideways")
