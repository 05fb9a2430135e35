"""Helpers for the HMRC route tests: declarations with a chosen LRN / MRN, and the stand-in in-process."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "hmrc"
EORI = "GB1234231"                       # MesSenMES3 of the HMRC sample IE315
FILER = "GBCD12345EFG"                   # its person lodging (TINPLD1): the filer key of the filing


def ie315(lrn: str, *, sender: str = EORI, office: str | None = None) -> bytes:
    text = (FIXTURES / "CC315A-valid.xml").read_text()
    text = re.sub(r"<RefNumHEA4>[^<]*</RefNumHEA4>", f"<RefNumHEA4>{lrn}</RefNumHEA4>", text, count=1)
    text = re.sub(r"<MesSenMES3>[^/<]*/", f"<MesSenMES3>{sender}/", text, count=1)
    if office:
        text = re.sub(r"<RefNumCUSOFFFENT731>[^<]*<", f"<RefNumCUSOFFFENT731>{office}<", text, count=1)
    return text.encode()


def ie313(mrn: str, *, sender: str = EORI, amended_at: str = "202612021000") -> bytes:
    text = (FIXTURES / "CC313A-valid.xml").read_text()
    text = re.sub(r"<DocNumHEA5>[^<]*</DocNumHEA5>", f"<DocNumHEA5>{mrn}</DocNumHEA5>", text, count=1)
    text = re.sub(r"<MesSenMES3>[^/<]*/", f"<MesSenMES3>{sender}/", text, count=1)
    text = re.sub(r"<DatTimAmeHEA113>[^<]*<", f"<DatTimAmeHEA113>{amended_at}<", text, count=1)
    return text.encode()
