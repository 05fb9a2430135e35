"""Which conditions and rules does the gateway check locally, and why not the others? The rule-status table.

``RULES`` lists every IE315/IE313 condition and rule of the phase-1 data model that concerns a trader-side
filing, plus the HMRC-only checks, with its status (``checked``, ``partly``, ``not checkable``), the reason, the
HMRC error numbers that implement it on the GB route, and the profiles applying it. ``markdown()`` renders
``docs/validation-rules.md``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuleStatus:
    id: str
    status: str          # "checked" | "partly" | "not checkable"
    what: str
    why: str = ""
    hmrc: tuple[int, ...] = ()
    profiles: tuple[str, ...] = ("eu-ics1", "uk-ssgb")


_B = ("eu-ics1", "uk-ssgb")
_EU = ("eu-ics1",)
_GB = ("uk-ssgb",)

RULES: tuple[RuleStatus, ...] = (
    RuleStatus("XSD", "checked", "Schema validity against the bundled HMRC XSDs (plain v11-2 for eu-ics1, "
               "optional-fields -New for uk-ssgb); HMRC schema numbers 4000-4086, 4999", hmrc=(4065, 4066, 4085)),
    RuleStatus("C17", "checked", "Identity crossing border R for modes 1/8, N for air", hmrc=(8107, 8113)),
    RuleStatus("C19", "checked", "Goods-item means of transport N with header identity or air, else R",
               hmrc=(8198, 8199)),
    RuleStatus("C20", "checked", "Goods-item nationality R unless mode 2 (GB) / first digit 2,5,7,9 (source)",
               hmrc=(8147,)),
    RuleStatus("C24", "checked", "Header nationality only for road with an identity (GB: 3, 10, 11)",
               hmrc=(8108, 8115)),
    RuleStatus("C62", "checked", "Packages/pieces/marks by kind of packages (bulk, unpacked, other)",
               hmrc=(8149, 8150, 8151, 8152)),
    RuleStatus("C501", "checked", "Name and address unless TIN (GB: GB TIN forbids them, non-GB TIN requires them)",
               hmrc=(8120, 8220, 8626, 8656, 8661)),
    RuleStatus("C502", "checked", "Carrier TIN for modes 1, 4, 8 (GB also 10, 11)", hmrc=(8164,)),
    RuleStatus("C511", "checked", "Consignor at one level; goods-item level needs distinct consignors",
               hmrc=(8119, 8193)),
    RuleStatus("C513", "not checkable", "Transport mode vs SCI in IE303", "IE303 is a common-domain message; "
               "its trader-side twin C529 is checked", profiles=()),
    RuleStatus("C514", "checked", "IMO/ENI format of the identity for modes 1/8", hmrc=(8114,)),
    RuleStatus("C518", "checked", "Flight number as conveyance reference for air", hmrc=(8118,)),
    RuleStatus("C529", "checked", "Transport mode restricted by SCI C/D (source also A)", hmrc=(8111, 8112)),
    RuleStatus("C562", "checked", "Consignee TIN when SCI is E", hmrc=(8105, 8208)),
    RuleStatus("C567", "partly", "Produced documents when no commercial reference", "presence only: the list of "
               "transport-document types is not in the material (HMRC checks presence too)", hmrc=(8170,)),
    RuleStatus("C570", "checked", "At least 2 itinerary countries (1 with SCI A, source), at most 99",
               hmrc=(8684,)),
    RuleStatus("C574", "checked", "Loading place at header or goods-item level", hmrc=(8104, 8136)),
    RuleStatus("C576", "checked", "Transport charges at one level only", hmrc=(8135,)),
    RuleStatus("C577", "checked", "Packages required unless SCI A (GB: packages present in the declaration)",
               hmrc=(8688,)),
    RuleStatus("C579", "checked", "Unloading place at header or goods-item level", hmrc=(8171, 8687)),
    RuleStatus("C582", "checked", "Total number of packages exactly when packages are declared",
               hmrc=(8109, 8116)),
    RuleStatus("C583", "checked", "Consignee / notify party by special mention 10600 (source: declaration-wide; "
               "GB: per item, C584)", hmrc=(8204, 8619, 8620, 8621, 8622, 8623, 8624, 8625)),
    RuleStatus("C585", "checked", "Commodity code unless goods description", hmrc=(8207,)),
    RuleStatus("C592", "checked", "Goods-item gross mass unless SCI E or total gross mass", hmrc=(8103,)),
    RuleStatus("R5", "checked", "Item number present; a single item is number 1", hmrc=(8102,)),
    RuleStatus("R7", "checked", "Item numbers unique and sequential from 1", hmrc=(8102,)),
    RuleStatus("R21", "checked", "Zero packages is valid (with TR0022: same marks elsewhere with > 0)",
               hmrc=(8153,)),
    RuleStatus("R80", "not checkable", "Special mentions from AdditionalInformationIdCommon",
               "the code list is named but not enumerated in the material", profiles=()),
    RuleStatus("R105", "checked", "Total packages = packages + pieces + 1 per bulk", hmrc=(8117,)),
    RuleStatus("R115", "checked", "IE313 is a complete ENS keyed by MRN", "enforced by the CC313A XSD"),
    RuleStatus("R660", "checked", "n12 date-times are real calendar dates (source); XSD pattern on GB",
               profiles=_EU),
    RuleStatus("R670", "checked", "Loading/unloading place starts with an ISO 3166 country code",
               "GB does not check the country list (HMRC's own sample uses 'EXAMPLE')", profiles=_EU),
    RuleStatus("R805", "partly", "Header consignee TIN differs from the person lodging",
               "only comparable by TIN; GB has no such rule", profiles=_EU),
    RuleStatus("R806", "partly", "Carrier TIN differs from the person lodging", "who the carrier is comes from "
               "the ERP; the TIN comparison is local", hmrc=(8195,)),
    RuleStatus("R808", "not checkable", "Offices of subsequent entry", "a fact about the voyage", profiles=()),
    RuleStatus("R811", "checked", "Total number of items = number of goods items (TR0811)", hmrc=(8206,)),
    RuleStatus("R823", "partly", "UN dangerous goods code n4", "format only (also the XSD); the code list is "
               "not enumerated"),
    RuleStatus("R826", "not checkable", "Mode of the active means of transport", "semantic; GB code list is "
               "checked (8689)", profiles=()),
    RuleStatus("R827", "partly", "Office of lodgement differs from the office of first entry",
               "whether lodgement is elsewhere depends on routing", hmrc=(8616,)),
    RuleStatus("R828", "not checkable", "Cross-Member-State lodgement permission", "reference data", profiles=()),
    RuleStatus("R829", "checked", "No office of lodgement in IE313", "enforced by the CC313A XSD"),
    RuleStatus("R834", "not checkable", "AEO status for SCI E", "needs the AEO database (C562 checks the TINs)",
               profiles=()),
    RuleStatus("R836", "not checkable", "Office of lodgement entitled", "customs office reference data",
               profiles=()),
    RuleStatus("R837", "partly", "EORI of person lodging / representative (GB: must start with GB)",
               "syntax by XSD, validity needs the EORI register", hmrc=(8692,)),
    RuleStatus("R840", "partly", "EORI or EORI-alike only", "syntax by XSD TINType; registration is external",
               profiles=()),
    RuleStatus("R841", "not checkable", "IE313 keeps the original representative", "needs the journal "
               "(pipeline), not the payload alone", profiles=()),
    RuleStatus("R842", "not checkable", "IE313 office of first entry in the same Member State", "needs the "
               "journal (pipeline)", profiles=()),
    RuleStatus("R843", "partly", "Conveyance reference number identifies the journey", "a definition; only the "
               "air flight-number format is testable (C518)", hmrc=(8118,)),
    RuleStatus("R866", "not checkable", "Carrier's transport document when someone else lodges", "advisory, "
               "needs the transport-document list", profiles=()),
    RuleStatus("R879", "partly", "Itinerary holds departure and destination countries", "the count is checked "
               "(C570); whether they are the right countries is not visible", hmrc=(8684,)),
    RuleStatus("R881", "checked", "Commodity code 4 to 8 digits (also the XSD)"),
    RuleStatus("R886", "not checkable", "IE313 keeps person lodging and Member State", "needs the journal",
               profiles=()),
    RuleStatus("R891", "not checkable", "LRN unique per sender", "needs the journal (pipeline); GB checks it only "
               "later (IE316)", profiles=()),
    RuleStatus("TR0812", "checked", "Total gross mass >= sum of item gross masses", hmrc=(8686,)),
    RuleStatus("TR0519", "checked", "XFER conveyance reference format for sea", hmrc=(8685,), profiles=_GB),
    RuleStatus("GB-MesSenMES3", "checked", "Message sender EORI/10-digit branch", hmrc=(4065,), profiles=_GB),
    RuleStatus("GB-leading-zero", "checked", "No leading zeros in counts, item numbers, transport mode",
               hmrc=(8671, 8672, 8678, 8680, 8681, 8690), profiles=_GB),
    RuleStatus("GB-decimal", "checked", "Gross masses: digits and point only, no leading zeros, <= 11 digits, "
               "<= 3 decimals", hmrc=(8673, 8674, 8675, 8676, 8677, 8679), profiles=_GB),
    RuleStatus("GB-TMB", "checked", "Transport mode in {1, 2, 3, 4, 8, 10, 11}", hmrc=(8689,), profiles=_GB),
    RuleStatus("GB-SCI", "checked", "Specific circumstance indicator in {C, D, E}", hmrc=(8691,), profiles=_GB),
    RuleStatus("GB-cardinality", "checked", "At most 999 goods items, 999 identities per item, 9999 seals",
               hmrc=(8611, 8612, 8617), profiles=_GB),
)


def markdown() -> str:
    """The rule-status table as Markdown (``docs/validation-rules.md``)."""
    lines = [
        "# Local validation rules (ICS phase 1: IE315 / IE313)",
        "",
        "Generated from `gateway/ics2/rules.py` (`python -c 'from gateway.ics2.rules import markdown; "
        "print(markdown())'`).",
        "Profiles: `eu-ics1` = the seed data model's conditions and rules (finding code = functional error type);",
        "`uk-ssgb` = HMRC Safety & Security GB (bundled optional-fields XSD, HMRC error numbers, UK deviations).",
        "ICS2 payloads get structure and format checks only (`ICS2-*` rules, see `gateway/ics2/ics2_rules.py`).",
        "Business rules run only on schema-valid messages, as HMRC does.",
        "",
        "| Rule | Status | What | Why not (fully) / note | HMRC codes | Profiles |",
        "|---|---|---|---|---|---|",
    ]
    for r in RULES:
        codes = ", ".join(str(c) for c in r.hmrc)
        lines.append(f"| {r.id} | {r.status} | {r.what} | {r.why} | {codes} | {', '.join(r.profiles) or '-'} |")
    n = {s: sum(1 for r in RULES if r.status == s) for s in ("checked", "partly", "not checkable")}
    lines += ["", f"Summary: {n['checked']} checked, {n['partly']} partly, {n['not checkable']} not checkable "
              "locally.", ""]
    return "\n".join(lines)
