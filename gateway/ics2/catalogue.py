"""Which messages exist, and what is each one? The message catalogue of ICS2 and of ICS phase 1.

One table, used by the engine, the pipeline and the simulator alike. Every ICS2 message id of ICD v3.30 Annex 1
(Table 12) is listed individually, exactly as the Annex lists it (no ranges: IE3F10-17, F20-29, F30-34, F40-45,
F50, F51; the same for IE3Axx, which has no IE3A25; there is no IE3R05/IE3R06). The ICS phase-1 family (IE315 ...)
follows, with the facts of ``shared/specs/ICS1-DATA-MODEL.md`` §1.

Field vocabulary of :class:`MessageSpec`:

``family``
    ``"ics2"`` (ICS2 release 2/3 messages, AS4 action = message id) or ``"ics1"`` (phase-1 IE3xx; XML root
    ``CC315A`` etc., kept in ``xml_root``).
``direction``
    ``"t2c"`` trader to customs, ``"c2t"`` customs to trader (ICS2 services ``eu_ics2_t2c`` / ``eu_ics2_c2t``).
``category``
    Priority category of ICD Table 7: ``"A"`` high, ``"B"`` normal, ``"C"`` low. ``category_inferred`` is True
    where Table 7 gives nothing (IE3N11, every phase-1 message); the value is then our reading by analogy.
``reference``
    What the message correlates by on a business level:

    * ``"LRN"``: the trader's local reference number (IE3Fxx, IE3N06 per ICD Table 9; IE315, IE316, IE328);
    * ``"MRN"``: the customs movement reference number (IE3Axx, IE3Q04, IE3Q05, IE3R02, IE3R03 per Table 9, and
      every customs message about a registered filing);
    * ``"FunctionalReference"``: an explicit ``functionalReference`` element that echoes the LRN or MRN of the
      message in error (IE3N99, IE3N01; ICD 4.5.3);
    * ``"DiversionLRN"``: the diversion reference of IE323/IE324/IE325;
    * ``"MessageId"``: only the AS4 ``RefToMessageId`` (none of the messages here needs it alone).

    ``reference_inferred`` is True where Table 9 (which only lists what the *error* messages echo) does not
    state it and the value is our reading of Annex 1.
``kind``
    ``"filing"`` (IE3Fxx, IE315), ``"amendment"`` (IE3Axx, IE313), ``"invalidation"`` (IE3Q04),
    ``"arrival"`` (IE3N06), ``"response"`` (a positive answer or a trader's answer to a request: IE3R01,
    IE3R02, IE3R03, IE3R04, IE3R07, IE328, IE304, IE325), ``"request"`` (customs asks the trader: IE3Q01,
    IE3Q02, IE3Q03; phase 1: the trader's diversion request IE323), ``"notification"`` (IE3N02-N11 except the
    errors, IE351), ``"consultation"`` (IE3Q05, IE3R08), ``"error"`` (IE3N99, IE3N01, IE316, IE305, IE324).
``attachments_allowed``
    ICD 3.1.11 / 4.2.5: binary attachments only for IE3F/IE3A 20, 23, 24, 26, 28, 32 and IE3R02, IE3R03.
``answers``
    Message ids that may come back in answer to this one (empty for customs messages nobody answers).
``answer_to``
    Message ids this one answers (the reverse relation).
``final``
    True when receiving this message closes the exchange it answers (registration, rejection, acceptance).
"""

from __future__ import annotations

from dataclasses import dataclass, field

FAMILIES = ("ics2", "ics1")
DIRECTIONS = ("t2c", "c2t")
KINDS = ("filing", "amendment", "invalidation", "arrival", "response", "request", "notification",
         "consultation", "error")
REFERENCES = ("LRN", "MRN", "FunctionalReference", "DiversionLRN", "MessageId")
SERVICES = {"t2c": "eu_ics2_t2c", "c2t": "eu_ics2_c2t"}


@dataclass(frozen=True)
class MessageSpec:
    """The facts the gateway knows about one message id."""

    id: str
    family: str
    direction: str
    meaning: str
    category: str
    category_inferred: bool
    reference: str
    attachments_allowed: bool
    kind: str
    reference_inferred: bool = False
    answers: tuple[str, ...] = ()
    answer_to: tuple[str, ...] = ()
    final: bool = False
    xml_root: str = ""
    mode_of_transport: str | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def service(self) -> str | None:
        """The AS4 eb:Service of an ICS2 message (None for phase 1)."""
        return SERVICES[self.direction] if self.family == "ics2" else None


# --- ICS2 filings (Annex 1, "Mode of transport" headings) ------------------------------------------------------
_FILINGS: tuple[tuple[str, str, str], ...] = (
    ("IE3F10", "sea", "Complete dataset - straight bill of lading containing the necessary information from consignee"),
    ("IE3F11", "sea", "Complete dataset - master bill of lading with underlying house bill(s) of lading containing "
                      "the necessary information from consignee at the level of the lowest house bill of lading"),
    ("IE3F12", "sea", "Partial dataset - master bill of lading only"),
    ("IE3F13", "sea", "Partial dataset - straight bill of lading only"),
    ("IE3F14", "sea", "Partial dataset - house bill of lading only"),
    ("IE3F15", "sea", "Partial dataset - house bill of lading with the necessary information from consignee"),
    ("IE3F16", "sea", "Partial dataset - necessary information required to be provided by consignee at the lowest "
                      "level of transport contract (the lowest house bill of lading)"),
    ("IE3F17", "sea", "Partial dataset - necessary information required to be provided by consignee at the lowest "
                      "level of transport contract (straight bill)"),
    ("IE3F20", "air", "Complete dataset lodged pre-loading"),
    ("IE3F21", "air", "Partial dataset - master air waybill lodged pre-arrival"),
    ("IE3F22", "air", "Partial dataset - house air waybill lodged pre-arrival"),
    ("IE3F23", "air", "Partial dataset - minimum dataset lodged pre-loading (Art. 106(1) second subparagraph DA) "
                      "without master air waybill reference number"),
    ("IE3F24", "air", "Partial dataset - minimum dataset lodged pre-loading (Art. 106(1) second subparagraph DA) "
                      "with master air waybill reference number"),
    ("IE3F25", "air", "Partial dataset - master air waybill reference number lodged pre-loading (Art. 106(1) "
                      "second subparagraph DA)"),
    ("IE3F26", "air", "Partial dataset - minimum dataset lodged pre-loading (Art. 106(1) second subparagraph DA) "
                      "containing additional house air waybill information"),
    ("IE3F27", "air", "Complete dataset lodged pre-arrival"),
    ("IE3F28", "air", "Complete dataset lodged pre-loading - direct air waybill"),
    ("IE3F29", "air", "Complete dataset lodged pre-arrival - direct air waybill"),
    ("IE3F30", "express", "Express consignments - complete dataset lodged pre-arrival"),
    ("IE3F31", "express", "Express consignments on air cargo general - complete dataset lodged pre-arrival by the "
                          "express operator"),
    ("IE3F32", "express", "Express consignments - partial dataset, minimum dataset lodged pre-loading (Art. 106(1) "
                          "second subparagraph DA)"),
    ("IE3F33", "express", "Express consignments on air cargo general - partial dataset, house air waybill lodged "
                          "pre-arrival by a person pursuant to Art. 127(6) UCC and Art. 113(1) DA"),
    ("IE3F34", "express", "Express consignments on road - complete dataset lodged pre-arrival"),
    ("IE3F40", "postal", "Postal consignments - partial dataset - road master bill of lading"),
    ("IE3F41", "postal", "Postal consignments - partial dataset - rail master transport document information"),
    ("IE3F42", "postal", "Postal consignments - partial dataset - master air waybill containing necessary postal "
                         "air waybill information"),
    ("IE3F43", "postal", "Postal consignments - partial dataset, minimum dataset lodged pre-loading (Art. 106(1) "
                         "second subparagraph DA)"),
    ("IE3F44", "postal", "Postal consignments - partial dataset, receptacle identification number lodged pre-loading "
                         "(Art. 106(1) second subparagraph DA)"),
    ("IE3F45", "postal", "Postal consignments - partial dataset - sea and inland waterways"),
    ("IE3F50", "road", "Road mode of transport"),
    ("IE3F51", "rail", "Rail mode of transport"),
)

# ICD 3.1.11: the filings and amendments that may carry binary attachments.
_ATTACHMENT_SUFFIXES = frozenset({"20", "23", "24", "26", "28", "32"})

# Annex 1 lists no IE3A25 (the IE3F25 master air waybill reference is not amended by message).
_NO_AMENDMENT = frozenset({"25"})

_FILING_ANSWERS = ("IE3R01", "IE3N99", "IE3N01")
_AMENDMENT_ANSWERS = ("IE3N10", "IE3N99", "IE3N01")


def _ics2() -> list[MessageSpec]:
    specs: list[MessageSpec] = []
    filing_ids = tuple(f[0] for f in _FILINGS)
    amendment_ids = tuple("IE3A" + f[0][4:] for f in _FILINGS if f[0][4:] not in _NO_AMENDMENT)
    for mid, mode, meaning in _FILINGS:
        suffix = mid[4:]
        specs.append(MessageSpec(
            id=mid, family="ics2", direction="t2c", meaning=f"ENS filing ({mode}): {meaning}", category="B",
            category_inferred=False, reference="LRN", attachments_allowed=suffix in _ATTACHMENT_SUFFIXES,
            kind="filing", answers=_FILING_ANSWERS, xml_root=mid, mode_of_transport=mode))
        if suffix in _NO_AMENDMENT:
            continue
        aid = "IE3A" + suffix
        specs.append(MessageSpec(
            id=aid, family="ics2", direction="t2c", meaning=f"Amend ENS filed with {mid} ({mode})", category="B",
            category_inferred=False, reference="MRN", attachments_allowed=suffix in _ATTACHMENT_SUFFIXES,
            kind="amendment", answers=_AMENDMENT_ANSWERS, xml_root=aid, mode_of_transport=mode))

    def add(mid: str, direction: str, meaning: str, category: str, reference: str, kind: str, *,
            category_inferred: bool = False, reference_inferred: bool = False, attachments: bool = False,
            answers: tuple[str, ...] = (), answer_to: tuple[str, ...] = (), final: bool = False) -> None:
        specs.append(MessageSpec(
            id=mid, family="ics2", direction=direction, meaning=meaning, category=category,
            category_inferred=category_inferred, reference=reference, attachments_allowed=attachments, kind=kind,
            reference_inferred=reference_inferred, answers=answers, answer_to=answer_to, final=final, xml_root=mid))

    lodged = filing_ids + amendment_ids
    # trader -> customs (eu_ics2_t2c)
    add("IE3Q04", "t2c", "Invalidation request of a registered ENS filing", "C", "MRN", "invalidation",
        answers=("IE3R07", "IE3N99", "IE3N01"))
    add("IE3Q05", "t2c", "Consult ENS (request for information about an ENS filing)", "C", "MRN", "consultation",
        answers=("IE3R08", "IE3N99"))
    add("IE3N06", "t2c", "Arrival notification (Member State of actual first entry)", "A", "LRN", "arrival",
        answers=("IE3R04", "IE3N07", "IE3N08", "IE3N99", "IE3N01"))
    add("IE3R02", "t2c", "Additional information response", "B", "MRN", "response", attachments=True,
        answers=("IE3N99",), answer_to=("IE3Q02",))
    add("IE3R03", "t2c", "High risk cargo & mail screening response", "A", "MRN", "response", attachments=True,
        answers=("IE3N99",), answer_to=("IE3Q03",))
    # customs -> trader (eu_ics2_c2t)
    add("IE3R01", "c2t", "ENS registration response (MRN allocated)", "B", "LRN", "response",
        reference_inferred=True, answer_to=filing_ids, final=True)
    add("IE3N10", "c2t", "Amendment notification (amendment accepted)", "C", "MRN", "notification",
        reference_inferred=True, answer_to=amendment_ids, final=True)
    add("IE3R07", "c2t", "Invalidation acceptance response", "C", "MRN", "response", reference_inferred=True,
        answer_to=("IE3Q04",), final=True)
    add("IE3R08", "c2t", "ENS consultation results", "B", "MRN", "consultation", reference_inferred=True,
        answer_to=("IE3Q05",), final=True)
    add("IE3R04", "c2t", "Arrival registration response", "B", "LRN", "response", reference_inferred=True,
        answer_to=("IE3N06",), final=True)
    add("IE3Q02", "c2t", "Additional information request", "B", "MRN", "request", reference_inferred=True,
        answers=("IE3R02",) + amendment_ids)
    add("IE3Q03", "c2t", "High risk cargo & mail screening request", "A", "MRN", "request",
        reference_inferred=True, answers=("IE3R03",))
    add("IE3Q01", "c2t", "Do not load request", "A", "MRN", "request", reference_inferred=True)
    add("IE3N04", "c2t", "Additional information request notification (to the carrier)", "C", "MRN",
        "notification", reference_inferred=True)
    add("IE3N05", "c2t", "High risk cargo & mail screening request notification (to the carrier)", "C", "MRN",
        "notification", reference_inferred=True)
    add("IE3N03", "c2t", "Assessment complete notification", "A", "MRN", "notification", reference_inferred=True)
    add("IE3N08", "c2t", "Control notification (control at the first port or airport of arrival)", "A", "MRN",
        "notification", reference_inferred=True, answer_to=("IE3N06",))
    add("IE3N09", "c2t", "AEO control notification", "C", "MRN", "notification", reference_inferred=True)
    add("IE3N02", "c2t", "ENS not complete notification", "C", "MRN", "notification", reference_inferred=True)
    add("IE3N07", "c2t", "ENS in incorrect state notification (upon arrival)", "C", "MRN", "notification",
        reference_inferred=True, answer_to=("IE3N06",))
    add("IE3N01", "c2t", "ENS lifecycle validation error notification", "B", "FunctionalReference", "error",
        answer_to=lodged + ("IE3Q04", "IE3N06"), final=True)
    add("IE3N99", "c2t", "Notify error (syntactical or semantic validation error)", "B", "FunctionalReference",
        "error", answer_to=lodged + ("IE3Q04", "IE3Q05", "IE3N06", "IE3R02", "IE3R03"), final=True)
    # Table 7 has no row for IE3N11: a notification for information, so category C by our reading.
    add("IE3N11", "c2t", "ENS pending notification (to a person who has not yet filed)", "C", "MRN",
        "notification", category_inferred=True, reference_inferred=True)
    return specs


def _ics1() -> list[MessageSpec]:
    """ICS phase 1 (HMRC S&S GB route). Table 7 does not cover phase 1: every category is inferred by analogy."""

    def spec(num: str, direction: str, meaning: str, category: str, reference: str, kind: str, *,
             answers: tuple[str, ...] = (), answer_to: tuple[str, ...] = (), final: bool = False) -> MessageSpec:
        return MessageSpec(
            id="IE" + num, family="ics1", direction=direction, meaning=meaning, category=category,
            category_inferred=True, reference=reference, attachments_allowed=False, kind=kind,
            reference_inferred=False, answers=answers, answer_to=answer_to, final=final, xml_root=f"CC{num}A")

    return [
        spec("315", "t2c", "Entry summary declaration (E_ENS_DAT)", "B", "LRN", "filing",
             answers=("IE328", "IE316")),
        spec("313", "t2c", "Entry summary declaration amendment (E_ENS_AMD), complete new version", "B", "MRN",
             "amendment", answers=("IE304", "IE305")),
        spec("316", "c2t", "ENS rejected (E_ENS_REJ), with functional errors", "B", "LRN", "error",
             answer_to=("IE315",), final=True),
        spec("328", "c2t", "ENS accepted and registered (E_ENS_ACK), MRN allocated", "B", "LRN", "response",
             answer_to=("IE315",), final=True),
        spec("304", "c2t", "Amendment accepted (E_ENS_AAC)", "C", "MRN", "response", answer_to=("IE313",),
             final=True),
        spec("305", "c2t", "Amendment rejected (E_ENS_ARJ), with functional errors", "B", "MRN", "error",
             answer_to=("IE313",), final=True),
        spec("351", "c2t", "Advanced intervention notification (E_AIV_NOT)", "A", "MRN", "notification"),
        spec("323", "t2c", "Diversion request (E_DIV_REQ)", "A", "DiversionLRN", "request",
             answers=("IE325", "IE324")),
        spec("324", "c2t", "Diversion request rejected (E_DIV_REJ)", "B", "DiversionLRN", "error",
             answer_to=("IE323",), final=True),
        spec("325", "c2t", "Diversion request registered (E_DIV_ACK)", "C", "DiversionLRN", "response",
             answer_to=("IE323",), final=True),
    ]


CATALOGUE: dict[str, MessageSpec] = {s.id: s for s in _ics2() + _ics1()}
_BY_ROOT: dict[str, MessageSpec] = {s.xml_root: s for s in CATALOGUE.values()}


def lookup(message_id: str) -> MessageSpec | None:
    """The spec of ``message_id`` ("IE3F32", "IE315"), also found by phase-1 XML root ("CC315A"); None if unknown."""
    if not message_id:
        return None
    key = message_id.strip()
    return CATALOGUE.get(key.upper()) or _BY_ROOT.get(key.upper())


def actions(direction: str, *, family: str = "ics2") -> tuple[str, ...]:
    """Message ids (= AS4 actions for ICS2) flowing in ``direction`` ("t2c" or "c2t"), in catalogue order."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    return tuple(s.id for s in CATALOGUE.values() if s.direction == direction and s.family == family)
