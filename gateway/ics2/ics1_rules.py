"""Would customs accept this IE315 / IE313 on its conditions and rules? Phase-1 business checks.

Two readings, chosen by ``gb``:

* ``gb=False`` (profile ``eu-ics1``): the conditions and rules of the ICS phase-1 data model as restated in
  ``shared/specs/ICS1-DATA-MODEL.md`` §4/§5 (source reading). Finding code = functional error type.
* ``gb=True`` (profile ``uk-ssgb``): HMRC's Safety & Security GB reading, as published in its rule catalogue
  (``api/store/1.0/rules``), including the UK deviations (modes 10/11, SCI C/D/E only, GB-TIN address rules,
  per-item C583/C584, leading-zero and decimal rules). Finding code = HMRC error number.

The checks run only on schema-valid messages (HMRC's order), so element presence and formats the XSD already
enforces are not repeated. Every finding carries the rule id, an indexed pointer, the reason and the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from lxml import etree

from gateway.ics2 import formats
from gateway.ics2.findings import DUPLICATE, INCORRECT, MISSING, NOT_SUPPORTED, TOO_MANY, Finding
from gateway.ics2.xmlutil import child, child_text, children, pointer, text

BULK = frozenset({"VQ", "VG", "VL", "VY", "VR", "VS", "VO"})
UNPACKED = frozenset({"NE", "NF", "NG"})
GB_MODES = frozenset({"1", "2", "3", "4", "8", "10", "11"})
XFER = re.compile(r"^XFER[A-Za-z0-9]+([:-][A-Za-z0-9]+)?$")
MES_SENDER = re.compile(r"^[A-Z]{2}[^\n\r]{1,15}/[0-9]{10}$")

# C501 trader groups: (path from root, TIN element, [name, street, postcode, city, country] element names,
# HMRC codes when no TIN, when a non-GB TIN, when a GB TIN (fields forbidden)).
_F = tuple[str, str, str, str, str]
_C = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class TraderGroup:
    name: str
    item_level: bool
    tin: str
    fields: _F
    no_tin: _C | None
    non_gb: _C | None
    gb_forbidden: _C
    forbid_any_tin: bool = False     # GB: person lodging / representative: address forbidden whenever a TIN


GROUPS: tuple[TraderGroup, ...] = (
    TraderGroup("TRACONCO1", False, "TINCO159", ("NamCO17", "StrAndNumCO122", "PosCodCO123", "CitCO124", "CouCO125"),
                (8120, 8121, 8122, 8123, 8124), (8220, 8221, 8222, 8223, 8224), (8626, 8627, 8628, 8629, 8630)),
    TraderGroup("TRACONCE1", False, "TINCE159", ("NamCE17", "StrAndNumCE122", "PosCodCE123", "CitCE124", "CouCE125"),
                (8125, 8126, 8127, 8128, 8129), (8225, 8226, 8227, 8228, 8229), (8631, 8632, 8633, 8634, 8635)),
    TraderGroup("NOTPAR670", False, "TINNOTPAR671",
                ("NamNOTPAR672", "StrNumNOTPAR673", "PosCodNOTPAR676", "CitNOTPAR674", "CouCodNOTPAR675"),
                (8130, 8131, 8132, 8133, 8134), (8230, 8231, 8232, 8233, 8234), (8636, 8637, 8638, 8639, 8640)),
    TraderGroup("TRACONCO2", True, "TINCO259", ("NamCO27", "StrAndNumCO222", "PosCodCO223", "CitCO224", "CouCO225"),
                (8137, 8138, 8139, 8140, 8141), (8237, 8238, 8239, 8240, 8241), (8641, 8642, 8643, 8644, 8645)),
    TraderGroup("TRACONCE2", True, "TINCE259", ("NamCE27", "StrAndNumCE222", "PosCodCE223", "CitCE224", "CouCE225"),
                (8142, 8143, 8144, 8145, 8146), (8242, 8243, 8244, 8245, 8246), (8646, 8647, 8648, 8649, 8650)),
    TraderGroup("PRTNOT640", True, "TINPRTNOT641",
                ("NamPRTNOT642", "StrNumPRTNOT646", "PstCodPRTNOT644", "CtyPRTNOT643", "CouCodGINOT647"),
                (8154, 8155, 8156, 8157, 8158), (8254, 8255, 8256, 8257, 8258), (8651, 8652, 8653, 8654, 8655)),
    TraderGroup("TRACARENT601", False, "TINTRACARENT602",
                ("NamTRACARENT604", "StrNumTRACARENT607", "PstCodTRACARENT606", "CtyTRACARENT603",
                 "CouCodTRACARENT605"),
                (8159, 8160, 8161, 8162, 8163), (8259, 8260, 8261, 8262, 8263), (8666, 8667, 8668, 8669, 8670)),
    TraderGroup("TRAREP", False, "TINTRE1", ("NamTRE1", "StrAndNumTRE1", "PosCodTRE1", "CitTRE1", "CouCodTRE1"),
                None, None, (8656, 8657, 8658, 8659, 8660), forbid_any_tin=True),
    TraderGroup("PERLODSUMDEC", False, "TINPLD1", ("NamPLD1", "StrAndNumPLD1", "PosCodPLD1", "CitPLD1", "CouCodPLD1"),
                None, None, (8661, 8662, 8663, 8664, 8665), forbid_any_tin=True),
)
_FIELD_LABELS = ("name", "street and number", "postcode", "city", "country")


@dataclass
class Ctx:
    """A phase-1 ENS being checked, with its frequently used parts."""

    root: etree._Element
    gb: bool
    hea: etree._Element
    items: list[etree._Element]
    tmb: str | None
    sci: str | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def is_amendment(self) -> bool:
        return self.root.tag.rsplit("}", 1)[-1] == "CC313A"

    def tmb_in(self, eu: set[str], gb_extra: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
        if self.tmb is None:
            return False
        v = self.tmb.lstrip("0") or "0"
        return v in eu or (self.gb and v in gb_extra)

    def fail(self, rule: str, gb_code: int | None, etype: int, el: etree._Element, reason: str,
             value: str | None = None) -> None:
        if self.gb and gb_code is None:
            return
        code = str(gb_code) if self.gb else str(etype)
        self.findings.append(Finding(code, rule, pointer(el), reason, value, etype))


def _has(el: etree._Element | None, name: str) -> bool:
    return child(el, name) is not None


def _value_el(parent: etree._Element, name: str) -> tuple[etree._Element, str | None]:
    """The element ``name`` under ``parent`` (or the parent when absent) and its text."""
    c = child(parent, name)
    return (c if c is not None else parent), text(c)


# --- header-level and format rules --------------------------------------------------------------------------------

def _gb_formats(c: Ctx) -> None:
    """HMRC-only: sender pattern (4065), leading zeros, decimals, code lists, GB person lodging, cardinalities."""
    if not c.gb:
        return
    ms = child(c.root, "MesSenMES3")
    if ms is not None and not MES_SENDER.match(ms.text or ""):
        c.fail("GB-MesSenMES3", 4065, INCORRECT, ms, "Invalid content found at element 'MesSenMES3' (expected "
               "EORI/10-digit branch)", ms.text)

    def no_lead(el: etree._Element | None, code: int, label: str) -> None:
        v = text(el)
        if el is not None and v and len(v) > 1 and v.startswith("0"):
            c.fail("GB-leading-zero", code, INCORRECT, el, f"{label} must not have leading zeros", v)

    no_lead(child(c.hea, "TotNumOfIteHEA305"), 8671, "Total number of items")
    no_lead(child(c.hea, "TotNumOfPacHEA306"), 8672, "Total number of packages")
    no_lead(child(c.hea, "TraModAtBorHEA76"), 8690, "Transport mode at border")
    for gi in c.items:
        no_lead(child(gi, "IteNumGDS7"), 8678, "Item number")
        for p in children(gi, "PACGS2"):
            no_lead(child(p, "NumOfPacGS24"), 8680, "Number of packages")
            no_lead(child(p, "NumOfPieGS25"), 8681, "Number of pieces")
    _gb_decimal(c, child(c.hea, "TotGroMasHEA307"), 8673, "Total gross mass")
    for gi in c.items:
        _gb_decimal(c, child(gi, "GroMasGDS46"), 8679, "Gross mass")
    tmb_el = child(c.hea, "TraModAtBorHEA76")
    if tmb_el is not None and c.tmb is not None and c.tmb not in GB_MODES:
        c.fail("GB-TMB", 8689, INCORRECT, tmb_el, "Transport mode at border may only take the values 1, 2, 3, 4, "
               "8, 10 or 11", c.tmb)
    sci_el = child(c.hea, "SpeCirIndHEA1")
    if sci_el is not None and c.sci not in ("C", "D", "E"):
        c.fail("GB-SCI", 8691, INCORRECT, sci_el, "Specific circumstance indicator may only take the values C, D "
               "or E", c.sci)
    pld = child(c.root, "PERLODSUMDEC")
    tin = child(pld, "TINPLD1")
    if tin is not None and not (text(tin) or "").startswith("GB"):
        c.fail("R837", 8692, INCORRECT, tin, "TIN of the person lodging must begin with 'GB'", text(tin))
    if len(c.items) > 999:
        c.fail("GB-cardinality", 8611, TOO_MANY, c.root, "Goods item may occur up to 999 times", str(len(c.items)))
    for gi in c.items:
        n = len(children(gi, "IDEMEATRAGI970"))
        if n > 999:
            c.fail("GB-cardinality", 8612, TOO_MANY, gi, "Means of transport identity may occur up to 999 times",
                   str(n))
    seals = len(children(c.root, "SEAID529"))
    if seals > 9999:
        c.fail("GB-cardinality", 8617, TOO_MANY, c.root, "Seals ID may occur up to 9999 times", str(seals))
    con = child(c.hea, "ConRefNumHEA")
    if con is not None and c.tmb == "1" and (text(con) or "").startswith("XFER") and not XFER.match(text(con) or ""):
        c.fail("TR0519", 8685, INCORRECT, c.hea, "Conveyance reference number starting with XFER must be XFER + "
               "alphanumerics, optionally followed by ':' or '-' and alphanumerics", text(con))


def _gb_decimal(c: Ctx, el: etree._Element | None, sep_code: int, label: str) -> None:
    v = text(el)
    if el is None or v is None:
        return
    if v[0] in "+-" or any(ch not in "0123456789." for ch in v):
        c.fail("GB-decimal", sep_code, INCORRECT, el, f"{label}: only digits and a decimal point are allowed", v)
        return
    whole, _, frac = v.partition(".")
    if len(whole) > 1 and whole.startswith("0"):
        c.fail("GB-decimal", 8674, INCORRECT, el, f"{label} must not have leading zeros", v)
    if len(whole) + len(frac) > 11:
        c.fail("GB-decimal", 8675, INCORRECT, el, f"{label} must not have more than 11 digits", v)
    if len(frac) > 3:
        c.fail("GB-decimal", 8676, INCORRECT, el, f"{label} must not have more than 3 decimal digits", v)
    if "." in v and (not whole or not frac):
        c.fail("GB-decimal", 8677, INCORRECT, el, f"{label} needs a digit before and after the decimal point", v)


def _r5_r7(c: Ctx) -> None:
    """R5/R7 (8102): item numbers 1..n in document order."""
    nums = []
    for gi in c.items:
        v = child_text(gi, "IteNumGDS7")
        try:
            nums.append(int(v) if v is not None else None)
        except ValueError:
            nums.append(None)
    if nums != list(range(1, len(c.items) + 1)):
        rule = "R5" if (None in nums or not nums or nums[0] != 1) else "R7"
        c.fail(rule, 8102, INCORRECT if len(set(nums)) == len(nums) else DUPLICATE, c.root,
               "Item numbers must be unique and sequential, starting from 1 and incrementing by 1",
               ",".join("" if n is None else str(n) for n in nums[:20]))


def _r811(c: Ctx) -> None:
    """R811/TR0811 (8206): total number of items equals the number of goods items."""
    el = child(c.hea, "TotNumOfIteHEA305")
    if el is not None and text(el) is not None and text(el).isdigit() and int(text(el)) != len(c.items):  # type: ignore[union-attr]
        c.fail("R811", 8206, INCORRECT, c.hea, f"Total number of items must equal the number of goods items "
               f"({len(c.items)})", text(el))


def _packages(c: Ctx) -> list[etree._Element]:
    return [p for gi in c.items for p in children(gi, "PACGS2")]


def _int(v: str | None) -> int:
    try:
        return int(v) if v else 0
    except ValueError:
        return 0


def _c582_r105(c: Ctx) -> None:
    pkgs = _packages(c)
    tot = child(c.hea, "TotNumOfPacHEA306")
    if pkgs and tot is None:
        c.fail("C582", 8109, MISSING, c.hea, "Total number of packages is required when packages are declared")
    elif not pkgs and tot is not None:
        c.fail("C582", 8116, NOT_SUPPORTED, c.hea, "Total number of packages cannot be used without packages",
               text(tot))
    if tot is not None and pkgs:
        expected = sum(_int(child_text(p, "NumOfPacGS24")) + _int(child_text(p, "NumOfPieGS25"))
                       + (1 if (child_text(p, "KinOfPacGS23") or "").upper() in BULK else 0) for p in pkgs)
        if _int(text(tot)) != expected:
            c.fail("R105", 8117, INCORRECT, c.hea, f"Total number of packages must be the sum of packages, pieces "
                   f"and 1 per bulk ({expected})", text(tot))


def _tr0812(c: Ctx) -> None:
    """TR0812 (8686): total gross mass >= sum of the item gross masses."""
    tot = child_text(c.hea, "TotGroMasHEA307")
    masses = [child_text(gi, "GroMasGDS46") for gi in c.items]
    if tot is None or not any(masses):
        return
    try:
        total = Decimal(tot)
        s = sum((Decimal(m) for m in masses if m), Decimal(0))
    except InvalidOperation:
        return
    if total < s:
        c.fail("TR0812", 8686, INCORRECT, c.hea, f"Total gross mass must be at least the sum of the item gross "
               f"masses ({s})", tot)


def _tr0022(c: Ctx) -> None:
    """TR0022 (8153) with R21: 0 packages only when another item has the same marks with packages > 0."""
    for gi in c.items:
        for p in children(gi, "PACGS2"):
            n = child_text(p, "NumOfPacGS24")
            if n is None or _int(n) != 0 or not n.isdigit():
                continue
            marks = child_text(p, "MarNumOfPacGSL21")
            ok = any(other is not gi and any(child_text(q, "MarNumOfPacGSL21") == marks
                                             and _int(child_text(q, "NumOfPacGS24")) > 0
                                             for q in children(other, "PACGS2"))
                     for other in c.items)
            if not ok:
                c.fail("TR0022", 8153, INCORRECT, p, "0 packages is allowed only if another goods item has the same "
                       "marks and numbers with more than 0 packages", n)


def _transport(c: Ctx) -> None:
    """C17, C19, C20, C24, C514, C518, C529, C502."""
    ide = child(c.hea, "IdeOfMeaOfTraCroHEA85")
    if c.tmb_in({"1", "8"}) and ide is None:
        c.fail("C17", 8107, MISSING, c.hea, "Identity crossing border is required for transport modes 1 and 8")
    if c.tmb_in({"4"}) and ide is not None:
        c.fail("C17", 8113, NOT_SUPPORTED, c.hea, "Identity crossing border must not be used for air (mode 4)",
               text(ide))
    nat = child(c.hea, "NatOfMeaOfTraCroHEA87")
    road = c.tmb_in({"3"}, {"10", "11"})
    if road and ide is not None and nat is None:
        c.fail("C24", 8108, MISSING, c.hea, "Nationality crossing border is required for road with an identity")
    if nat is not None and not (road and ide is not None):
        c.fail("C24", 8115, NOT_SUPPORTED, c.hea, "Nationality crossing border is only used for road with an "
               "identity", text(nat))
    if ide is not None and c.tmb_in({"1", "8"}) and not formats.IMO_ENI.match(text(ide) or ""):
        c.fail("C514", 8114, INCORRECT, c.hea, "For modes 1 and 8 the identity must be an IMO (7 digits) or ENI "
               "(8 digits) number", text(ide))
    for gi in c.items:
        gids = children(gi, "IDEMEATRAGI970")
        if ide is not None or c.tmb_in({"4"}):
            for g in gids:
                c.fail("C19", 8198, NOT_SUPPORTED, g, "Goods-item means of transport cannot be used with a header "
                       "identity or for air")
        elif c.sci != "A" and not gids:
            c.fail("C19", 8199, MISSING, gi, "Goods-item means of transport identity is required")
        for g in gids:
            first = (c.tmb or "")[:1]
            optional = (c.tmb == "2") if c.gb else first in {"2", "5", "7", "9"}
            if not optional and not _has(g, "NatIDEMEATRAGI973"):
                c.fail("C20", 8147, MISSING, g, "Nationality of the goods-item means of transport is required")
            gid = child(g, "IdeMeaTraGIMEATRA971")
            if gid is not None and c.tmb_in({"1", "8"}) and not formats.IMO_ENI.match(text(gid) or ""):
                c.fail("C514", 8114, INCORRECT, gid, "For modes 1 and 8 the identity must be an IMO or ENI number",
                       text(gid))
    con = child(c.hea, "ConRefNumHEA")
    if c.tmb_in({"4"}) and (con is None or not formats.FLIGHT.match(text(con) or "") or len(text(con) or "") > 8):
        c.fail("C518", 8118, MISSING if con is None else INCORRECT, c.hea, "For air (mode 4) the conveyance "
               "reference number must be the flight number (an..3 prefix, n..4 number, optional letter)",
               text(con))
    if c.sci == "C" and c.tmb_in({"1", "2", "4", "7", "8", "9"}, {"10", "11"}):
        c.fail("C529", 8111, INCORRECT, c.hea, "With specific circumstance C the transport mode cannot be "
               "1, 2, 4, 8 (10, 11)", c.tmb)
    if c.sci == "D" and c.tmb_in({"1", "3", "4", "7", "8", "9"}, {"10", "11"}):
        c.fail("C529", 8112, INCORRECT, c.hea, "With specific circumstance D the transport mode cannot be "
               "1, 3, 4, 8 (10, 11)", c.tmb)
    if not c.gb and c.sci == "A" and c.tmb_in({"7", "9"}):
        c.fail("C529", None, INCORRECT, c.hea, "With specific circumstance A the transport mode cannot be 7 or 9",
               c.tmb)
    car = child(c.root, "TRACARENT601")
    if car is not None and c.tmb_in({"1", "4", "8"}, {"10", "11"}) and not _has(car, "TINTRACARENT602"):
        c.fail("C502", 8164, MISSING, car, "Carrier TIN is required for transport modes 1, 4 and 8")


def _c501(c: Ctx) -> None:
    for g in GROUPS:
        hosts = c.items if g.item_level else [c.root]
        for host in hosts:
            grp = child(host, g.name)
            if grp is None:
                continue
            tin = child_text(grp, g.tin)
            for i, fname in enumerate(g.fields):
                f = child(grp, fname)
                label = _FIELD_LABELS[i]
                if not c.gb:
                    if tin is None and f is None:
                        c.fail("C501", None, MISSING, grp, f"{g.name}: {label} is required when no TIN is given")
                    continue
                if tin is None:
                    if f is None and g.no_tin:
                        c.fail("C501", g.no_tin[i], MISSING, grp, f"{g.name}: {label} is required if no TIN has "
                               "been declared")
                elif tin.startswith("GB") or g.forbid_any_tin:
                    if f is not None:
                        c.fail("C501", g.gb_forbidden[i], NOT_SUPPORTED, f, f"{g.name}: {label} must not be "
                               "present if the (GB) TIN has been declared", text(f))
                elif f is None and g.non_gb:
                    c.fail("C501", g.non_gb[i], MISSING, grp, f"{g.name}: {label} is required if a non-GB TIN has "
                           "been declared")


def _trader_identity(el: etree._Element | None, tin: str, fields: _F) -> tuple[str, ...] | None:
    if el is None:
        return None
    t = child_text(el, tin)
    if t:
        return ("TIN", t)
    return tuple(re.sub(r"\s+", " ", (child_text(el, f) or "")).strip().upper() for f in fields)


def _c511(c: Ctx) -> None:
    head = child(c.root, "TRACONCO1")
    gis = [(gi, child(gi, "TRACONCO2")) for gi in c.items]
    gi_cons = [g for _, g in gis if g is not None]
    if head is not None and gi_cons:
        for g in gi_cons:
            c.fail("C511", 8119, NOT_SUPPORTED, g, "Goods-item consignor cannot be used with a header consignor")
        c.fail("C511", 8119, NOT_SUPPORTED, head, "Header consignor cannot be used with goods-item consignors")
        return
    if head is not None:
        return
    co2 = GROUPS[3]
    ids = [_trader_identity(g, co2.tin, co2.fields) for g in gi_cons]
    if c.gb:
        if gi_cons and (len(gi_cons) < 2 or len(set(ids)) < 2):
            c.fail("C511", 8193, INCORRECT, c.root, "Goods-item consignors: at least two, and not all the same")
        return
    for gi, g in gis:
        if g is None:
            c.fail("C511", None, MISSING, gi, "Consignor is required at header or at goods-item level")
    if len(gi_cons) == len(c.items) and gi_cons and len(set(ids)) < 2:
        c.fail("C511", None, INCORRECT, c.root, "All goods items have the same consignor: use the header level")


def _c562(c: Ctx) -> None:
    if c.sci != "E":
        return
    h = child(c.root, "TRACONCE1")
    if h is not None and not _has(h, "TINCE159"):
        c.fail("C562", 8105, MISSING, h, "Consignee TIN is required when the specific circumstance is E")
    for gi in c.items:
        g = child(gi, "TRACONCE2")
        if g is not None and not _has(g, "TINCE259"):
            c.fail("C562", 8208, MISSING, g, "Goods-item consignee TIN is required when the specific circumstance "
                   "is E")


def _c567(c: Ctx) -> None:
    if c.sci == "A" or _has(c.hea, "ComRefNumHEA"):
        return
    for gi in c.items:
        if not _has(gi, "ComRefNumGIM1") and not children(gi, "PRODOCDC2"):
            c.fail("C567", 8170, MISSING, gi, "Produced documents (transport document) are required when no "
                   "commercial reference number is given")


def _c570(c: Ctx) -> None:
    n = len(children(c.root, "ITI"))
    minimum = 1 if (c.sci == "A" and not c.gb) else 2
    if n < minimum:
        c.fail("C570", 8684, MISSING, c.root, f"Itinerary must have at least {minimum} countries of routing", str(n))
    elif n > 99:
        c.fail("C570", None, TOO_MANY, c.root, "Itinerary may have at most 99 countries of routing", str(n))


def _places(c: Ctx) -> None:
    """C574 loading place, C579 unloading place, C576 transport charges."""
    head_load = _has(c.hea, "PlaLoaGOOITE334")
    head_unl = _has(c.hea, "PlaUnlGOOITE334")
    head_pay = _has(c.hea, "TraChaMetOfPayHEA1")
    for gi in c.items:
        gl = child(gi, "PlaLoaGOOITE333")
        if gl is not None and (head_load or (c.sci == "A" and not c.gb)):
            c.fail("C574", 8136, NOT_SUPPORTED, gl, "Goods-item loading place cannot be used with a header loading "
                   "place", text(gl))
        elif gl is None and not head_load and c.sci != "A":
            c.fail("C574", 8104, MISSING, gi, "Loading place is required at header or goods-item level")
        gu = child(gi, "PlaUnlGOOITE333")
        if gu is not None and head_unl:
            c.fail("C579", 8171, NOT_SUPPORTED, gu, "Goods-item unloading place cannot be used with a header "
                   "unloading place", text(gu))
        elif gu is None and not head_unl and c.sci != "E":
            c.fail("C579", 8687, MISSING, gi, "Unloading place is required at header or goods-item level")
        gp = child(gi, "MetOfPayGDI12")
        if gp is not None and head_pay:
            c.fail("C576", 8135, NOT_SUPPORTED, gp, "Goods-item transport charges cannot be used with header "
                   "transport charges", text(gp))


def _items(c: Ctx) -> None:
    """C577, C62, C585, C592, R881, R823."""
    any_pkg = False
    has_total_mass = _has(c.hea, "TotGroMasHEA307")
    for gi in c.items:
        pkgs = children(gi, "PACGS2")
        any_pkg = any_pkg or bool(pkgs)
        if not pkgs and c.sci != "A" and not c.gb:
            c.fail("C577", None, MISSING, gi, "Packages are required for every goods item")
        for p in pkgs:
            kind = (child_text(p, "KinOfPacGS23") or "").upper()
            npk, npc, marks = child(p, "NumOfPacGS24"), child(p, "NumOfPieGS25"), child(p, "MarNumOfPacGSL21")
            if kind in BULK:
                if npk is not None or npc is not None:
                    c.fail("C62", 8149, NOT_SUPPORTED, p, "Number of packages and pieces cannot be used for bulk",
                           kind)
            elif kind in UNPACKED:
                if npc is None or npk is not None:
                    c.fail("C62", 8150, MISSING if npc is None else NOT_SUPPORTED, p, "Unpacked goods need the "
                           "number of pieces and no number of packages", kind)
            else:
                if npk is None or npc is not None:
                    c.fail("C62", 8151, MISSING if npk is None else NOT_SUPPORTED, p, "Packaged goods need the "
                           "number of packages and no number of pieces", kind)
                if c.sci is None and marks is None:
                    c.fail("C62", 8152, MISSING, p, "Marks and numbers are required for packaged goods when no "
                           "specific circumstance indicator is given", kind)
        if not _has(gi, "GooDesGDS23") and not _has(gi, "COMCODGODITM"):
            c.fail("C585", 8207, MISSING, gi, "Commodity code is required when there is no goods description")
        if c.sci != "E" and not has_total_mass and not _has(gi, "GroMasGDS46"):
            c.fail("C592", 8103, MISSING, gi, "Gross mass is required without total gross mass (unless SCI is E)")
        cn = child(child(gi, "COMCODGODITM"), "ComNomCMD1")
        if cn is not None and not re.fullmatch(r"[0-9]{4,8}", text(cn) or ""):
            c.fail("R881", None, INCORRECT, cn, "Commodity code must have 4 to 8 digits", text(cn))
        un = child(gi, "UNDanGooCodGDI1")
        if un is not None and not re.fullmatch(r"[0-9]{4}", text(un) or ""):
            c.fail("R823", None, INCORRECT, un, "UN dangerous goods code must have 4 digits", text(un))
    if c.gb and not any_pkg:
        c.fail("C577", 8688, MISSING, c.root, "Packages must be present")


def _has_10600(gi: etree._Element) -> bool:
    return any(child_text(s, "AddInfCodMT23") == "10600" for s in children(gi, "SPEMENMT2"))


def _c583(c: Ctx) -> None:
    head_ce = child(c.root, "TRACONCE1")
    head_np = child(c.root, "NOTPAR670")
    flags = [_has_10600(gi) for gi in c.items]
    any10600 = any(flags)
    if c.gb:
        if head_ce is not None and any10600:
            c.fail("C583", 8204, NOT_SUPPORTED, head_ce, "Consignee cannot be used when special mention 10600 is "
                   "used for a goods item")
        if head_np is not None and not all(flags):
            c.fail("C583", 8619, NOT_SUPPORTED, head_np, "Notify party cannot be used when a goods item has no "
                   "special mention 10600")
        for gi, has in zip(c.items, flags):
            np, ce = child(gi, "PRTNOT640"), child(gi, "TRACONCE2")
            if np is not None and not has:
                c.fail("C584", 8620, NOT_SUPPORTED, np, "Goods-item notify party requires special mention 10600")
            if np is not None and head_np is not None:
                c.fail("C584", 8621, NOT_SUPPORTED, np, "Goods-item notify party cannot be used with a header "
                       "notify party")
            if has and head_np is None and np is None:
                c.fail("C584", 8622, MISSING, gi, "Notify party is required for a goods item with special mention "
                       "10600")
            if not has and head_ce is None and ce is None:
                c.fail("C584", 8623, MISSING, gi, "Consignee is required for a goods item without special mention "
                       "10600")
            if ce is not None and has:
                c.fail("C584", 8624, NOT_SUPPORTED, ce, "Goods-item consignee cannot be used with special mention "
                       "10600")
            if ce is not None and head_ce is not None:
                c.fail("C584", 8625, NOT_SUPPORTED, ce, "Goods-item consignee cannot be used with a header "
                       "consignee")
        return
    if any10600:
        if head_ce is not None:
            c.fail("C583", None, NOT_SUPPORTED, head_ce, "Consignee cannot be used with special mention 10600")
        for gi in c.items:
            ce, np = child(gi, "TRACONCE2"), child(gi, "PRTNOT640")
            if ce is not None:
                c.fail("C583", None, NOT_SUPPORTED, ce, "Consignee cannot be used with special mention 10600")
            if head_np is not None and np is not None:
                c.fail("C583", None, NOT_SUPPORTED, np, "Goods-item notify party cannot be used with a header "
                       "notify party")
            if head_np is None and np is None:
                c.fail("C583", None, MISSING, gi, "Notify party is required with special mention 10600")
    else:
        if head_np is not None:
            c.fail("C583", None, NOT_SUPPORTED, head_np, "Notify party requires special mention 10600")
        for gi in c.items:
            np, ce = child(gi, "PRTNOT640"), child(gi, "TRACONCE2")
            if np is not None:
                c.fail("C583", None, NOT_SUPPORTED, np, "Notify party requires special mention 10600")
            if head_ce is not None and ce is not None:
                c.fail("C583", None, NOT_SUPPORTED, ce, "Goods-item consignee cannot be used with a header "
                       "consignee")


def _parties(c: Ctx) -> None:
    """R806 (8195), R827 (8616), R805 (source only)."""
    tin_pld = child_text(child(c.root, "PERLODSUMDEC"), "TINPLD1")
    car_tin = child(child(c.root, "TRACARENT601"), "TINTRACARENT602")
    if car_tin is not None and tin_pld is not None and text(car_tin) == tin_pld:
        c.fail("R806", 8195, INCORRECT, car_tin, "Carrier is declared only when different from the person lodging",
               text(car_tin))
    lon = child(child(c.root, "CUSOFFLON"), "RefNumCOL1")
    fent = child_text(child(c.root, "CUSOFFFENT730"), "RefNumCUSOFFFENT731")
    if lon is not None and text(lon) == fent:
        c.fail("R827", 8616, INCORRECT, lon, "Office of lodgement is declared only when different from the office "
               "of first entry", text(lon))
    ce_tin = child_text(child(c.root, "TRACONCE1"), "TINCE159")
    if not c.gb and ce_tin is not None and ce_tin == tin_pld:
        c.fail("R805", None, INCORRECT, child(c.root, "TRACONCE1"), "Consignee is declared only when different "
               "from the person lodging", ce_tin)


def _source_formats(c: Ctx) -> None:
    """Source-only checks HMRC does not make: R660 real calendar dates, R670 country prefix of places."""
    if c.gb:
        return
    dated = [(c.hea, "DecDatTimHEA114"), (c.hea, "DatTimAmeHEA113"),
             (child(c.root, "CUSOFFFENT730"), "ExpDatOfArrFIRENT733")]
    for parent, name in dated:
        el = child(parent, name)
        if el is not None and not formats.is_n12(text(el) or ""):
            c.fail("R660", None, INCORRECT, el, "Date and time must be YYYYMMDDHHMM with a real calendar date",
                   text(el))
    places = [child(c.hea, "PlaLoaGOOITE334"), child(c.hea, "PlaUnlGOOITE334")]
    for gi in c.items:
        places += [child(gi, "PlaLoaGOOITE333"), child(gi, "PlaUnlGOOITE333")]
    for el in places:
        v = text(el)
        if el is not None and v is not None and (len(v) < 3 or v[:2] not in formats.ISO_COUNTRIES):
            c.fail("R670", None, INCORRECT, el, "Loading/unloading place must start with an ISO 3166 country code",
                   v)


CHECKS: tuple[Callable[[Ctx], None], ...] = (
    _gb_formats, _r5_r7, _r811, _c582_r105, _tr0812, _tr0022, _transport, _c501, _c511, _c562, _c567, _c570,
    _places, _items, _c583, _parties, _source_formats,
)


def check_ens(root: etree._Element, *, gb: bool) -> list[Finding]:
    """Every business finding on a (schema-valid) CC315A / CC313A tree."""
    hea = child(root, "HEAHEA")
    if hea is None:
        return [Finding("4066" if gb else str(MISSING), "XSD", pointer(root), "HEAHEA is missing", None, MISSING)]
    ctx = Ctx(root=root, gb=gb, hea=hea, items=children(root, "GOOITEGDS"),
              tmb=child_text(hea, "TraModAtBorHEA76"), sci=child_text(hea, "SpeCirIndHEA1"))
    for check in CHECKS:
        check(ctx)
    return ctx.findings
