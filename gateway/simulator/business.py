"""What would customs answer? The simulator's decision logic: pure functions from a verified inbound message,
its payload facts, the state of the filing it concerns and the scripted rules, to reply payloads and state
changes. No I/O: the caller looks the state up, applies the ``Decision`` in one transaction and delivers.

MRNs (``new_mrn``) are an18 like real ones: 2-digit year, 2-letter country, 13 upper-case letters or digits,
and a check digit computed like the EU MRN / ISO 6346 check digit (``mrn_check_digit``).
"""

from __future__ import annotations

import datetime as dt
import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lxml import etree

from gateway.ics2 import catalogue
from gateway.ics2.inspect import PayloadError, PayloadFacts, inspect_payload
from gateway.ics2.validate import validate_payload
from gateway.simulator import replies
from gateway.simulator.config import Rule
from gateway.simulator.replies import Context, ErrorItem

_ALNUM = string.ascii_uppercase + string.digits


# ------------------------------------------------------------------------------------------------ MRN
def _char_value(c: str) -> int:
    """ISO 6346 values: digits as such, letters from A=10 skipping multiples of 11 (11, 22, 33)."""
    if c.isdigit():
        return int(c)
    v, n = 10, ord(c) - ord("A")
    for _ in range(n):
        v += 1
        if v % 11 == 0:
            v += 1
    return v


def mrn_check_digit(first17: str) -> str:
    total = sum(_char_value(c) * (2 ** i) for i, c in enumerate(first17))
    return str(total % 11 % 10)


def new_mrn(country: str, now: dt.datetime, rand: Callable[[int], str] | None = None) -> str:
    """``26NL`` + 13 random letters/digits + check digit (an18)."""
    body = rand(13) if rand else "".join(secrets.choice(_ALNUM) for _ in range(13))
    first = f"{now.year % 100:02d}{country}{body}"
    return first + mrn_check_digit(first)


# ------------------------------------------------------------------------------------------------ payload facts
_DOC_LEVELS = {"transportDocumentMasterLevel": "master", "transportDocumentHouseLevel": "house",
               "transportDocument": "any"}
# partial datasets of a multiple filing (ICD Annex 1): the ENS is complete only with its counterpart level
PARTIAL_MASTER = ("IE3F12", "IE3F21", "IE3F25", "IE3F40", "IE3F41", "IE3F42")
PARTIAL_HOUSE = ("IE3F14", "IE3F15", "IE3F16", "IE3F17", "IE3F22", "IE3F33", "IE3F43", "IE3F44", "IE3F45")


def transport_documents(payload: bytes) -> dict[str, list[str]]:
    """Transport document numbers by level (``master``, ``house``, ``any``) of a payload; {} if unreadable.
    Why: consultation (IE3Q05, ICD 3.1.9) may name the ENS by its master or house transport document, and a
    multiple filing links its master and house levels by the master document number."""
    from gateway.xmlsafe import XmlRejected, parse_xml
    try:
        root = parse_xml(payload, what="payload")
    except XmlRejected:
        return {}
    out: dict[str, list[str]] = {}
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        level = _DOC_LEVELS.get(etree.QName(el).localname)
        if level is None:
            continue
        for num in el:
            if isinstance(num.tag, str) and etree.QName(num).localname == "documentNumber" and num.text:
                out.setdefault(level, []).append(num.text.strip())
    return out


# ------------------------------------------------------------------------------------------------ model
@dataclass(frozen=True)
class Incoming:
    message_id: str
    action: str
    party_id: str
    eori: str
    payload: bytes | None


@dataclass(frozen=True)
class FilingState:
    id: int
    kind: str                 # "ens" | "arrival"
    lrn: str
    mrn: str | None
    action: str
    status: str               # registered | invalidated
    open_request: str | None  # IE3Q02 / IE3Q03 awaiting an answer
    request_mode: str | None  # IE3R02 | amendment (for IE3Q02)
    registrations: int
    eori: str
    party_id: str
    context: Context
    documents: tuple[str, ...] = ()   # transport document numbers ("master:X", "house:Y")


class StateView(Protocol):
    def by_lrn(self, eori: str, kind: str, lrn: str) -> FilingState | None: ...
    def by_mrn(self, mrn: str) -> FilingState | None: ...
    def by_document(self, number: str) -> list[FilingState]: ...


@dataclass(frozen=True)
class Reply:
    action: str
    payload: bytes
    lrn: str | None
    mrn: str | None
    ref_to: bool = True       # carry eb:RefToMessageId = the answered MessageId
    to_eori: str | None = None  # to another person (a registered party of this EORI), not to the sender


@dataclass(frozen=True)
class Registration:
    kind: str
    lrn: str
    mrn: str | None
    action: str
    context: Context
    open_request: str | None = None
    request_mode: str | None = None
    documents: tuple[str, ...] = ()


@dataclass
class Decision:
    outcome: str                                   # short text for the registry and the logs
    lrn: str | None = None
    mrn: str | None = None
    register: Registration | None = None
    filing_id: int | None = None                   # the existing filing concerned
    update: dict[str, object] = field(default_factory=dict)   # column -> value on that filing
    replies: list[Reply] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    mrn_country: str = "NL"
    duplicate_lrn: str = "ie3n01"
    arrival_control: bool = False
    complete_after_answer: bool = True


# ------------------------------------------------------------------------------------------------ decide
def _rule_for(rules: Sequence[Rule], lrn: str | None, action: str) -> Rule | None:
    return next((r for r in rules if r.matches(lrn, action)), None)


def _errors_reply(action: str, fref: str, items: Sequence[ErrorItem], ctx: Context, now: dt.datetime,
                  lrn: str | None, mrn: str | None) -> Reply:
    build = replies.ie3n99 if action == "IE3N99" else replies.ie3n01
    return Reply(action, build(functional_reference=fref, errors=items, ctx=ctx, now=now), lrn, mrn, True)


def decide(inc: Incoming, state: StateView, rules: Sequence[Rule], opts: Options, now: dt.datetime,
           mrn_factory: Callable[[str], str] | None = None) -> Decision:
    """The replies and state changes for one new (not duplicate) business message."""
    make_mrn = mrn_factory or (lambda country: new_mrn(country, now))
    spec = catalogue.lookup(inc.action)
    ctx0 = Context(declarant=inc.eori)
    if inc.payload is None:
        item = ErrorItem("CL0001", "The message carries no business payload", "/")
        return Decision("rejected: no payload", replies=[_errors_reply("IE3N99", "", [item], ctx0, now, None, None)])
    report = validate_payload(inc.payload, action=inc.action)
    errors = list(report.errors)
    documents = transport_documents(inc.payload)
    if inc.action == "IE3Q05" and documents:
        # ICD 3.1.9: a consultation names the ENS by MRN *or* by its master / house transport document
        errors = [e for e in errors if e.rule != "ICS2-MRN"]
    facts: PayloadFacts | None
    try:
        facts = inspect_payload(inc.payload)
    except PayloadError:
        facts = None
    ctx = Context(declarant=(facts.declarant_eori if facts else None) or inc.eori,
                  representative=facts.representative_eori if facts else None,
                  office_of_first_entry=facts.office_of_first_entry if facts else None)
    lrn = facts.lrn if facts else None
    mrn = facts.mrn if facts else None
    fref = (facts.functional_reference if facts else None) or lrn or mrn or ""
    if errors or spec is None or facts is None:
        items = [ErrorItem(f.code, f.text, f.pointer, f.value, f.rule) for f in errors] or [
            ErrorItem("CL0002", f"{inc.action} is not a message the Trader Interface accepts", "/")]
        return Decision(f"rejected: {len(items)} validation error(s)", lrn=lrn, mrn=mrn,
                        replies=[_errors_reply("IE3N99", fref, items, ctx, now, lrn, mrn)])

    kind = spec.kind
    if kind == "filing":
        return _filing(inc, facts, ctx, state, rules, opts, now, make_mrn, documents)
    if kind == "arrival":
        return _arrival(inc, facts, ctx, state, rules, opts, now)
    if kind == "consultation" and not mrn:
        return _consult_by_document(inc, documents, ctx, state, now)
    # everything else refers to a registered filing by MRN
    filing = state.by_mrn(mrn) if mrn else None
    if filing is None or filing.kind != "ens":
        item = ErrorItem("L0001", f"MRN {mrn} is not known", f"/{inc.action}/MRN", mrn)
        return Decision("lifecycle error: unknown MRN", mrn=mrn,
                        replies=[_errors_reply("IE3N01", fref, [item], ctx, now, None, mrn)])
    fctx = filing.context
    rule = _rule_for(rules, filing.lrn, inc.action)
    ref_to = rule.ref_to_message_id if rule else True
    complete = (rule.complete_after_answer if rule and rule.complete_after_answer is not None
                else opts.complete_after_answer)
    d = Decision("", lrn=filing.lrn, mrn=filing.mrn, filing_id=filing.id)

    def lifecycle(text: str) -> Decision:
        item = ErrorItem("L0101", text, f"/{inc.action}/MRN", mrn)
        d.outcome = "lifecycle error: " + text
        d.replies.append(_errors_reply("IE3N01", fref, [item], fctx, now, filing.lrn, filing.mrn))
        return d

    if filing.status == "invalidated":
        return lifecycle("ENS filing is invalidated")
    assert filing.mrn is not None
    if kind == "amendment":
        if inc.action[4:] != filing.action[4:]:
            return lifecycle(f"{inc.action} cannot amend an ENS filed with {filing.action}")
        d.outcome = "amendment accepted"
        d.replies.append(Reply("IE3N10", replies.ie3n10(mrn=filing.mrn, lrn=filing.lrn, ctx=fctx, now=now),
                               filing.lrn, filing.mrn, ref_to))
        if filing.open_request == "IE3Q02":
            d.update.update(open_request=None, request_mode=None)
            d.outcome += "; additional information request answered by amendment"
            if complete:
                d.replies.append(Reply("IE3N03", replies.ie3n03(mrn=filing.mrn, ctx=fctx, now=now), filing.lrn,
                                       filing.mrn, ref_to))
        return d
    if kind == "invalidation":
        d.outcome = "invalidated"
        d.update.update(status="invalidated", open_request=None, request_mode=None)
        d.replies.append(Reply("IE3R07", replies.ie3r07(mrn=filing.mrn, ctx=fctx, now=now), filing.lrn,
                               filing.mrn, ref_to))
        return d
    if inc.action in ("IE3R02", "IE3R03"):
        wanted = "IE3Q02" if inc.action == "IE3R02" else "IE3Q03"
        if filing.open_request != wanted:
            return lifecycle(f"no open {wanted} request for this ENS filing")
        d.outcome = f"{wanted} answered"
        d.update.update(open_request=None, request_mode=None)
        if complete:
            d.replies.append(Reply("IE3N03", replies.ie3n03(mrn=filing.mrn, ctx=fctx, now=now), filing.lrn,
                                   filing.mrn, ref_to))
        return d
    if kind == "consultation":
        d.outcome = "consulted"
        d.replies.append(Reply("IE3R08", replies.ie3r08(mrn=filing.mrn, lrn=filing.lrn, status=filing.status,
                                                        ctx=fctx, now=now), filing.lrn, filing.mrn, ref_to))
        return d
    item = ErrorItem("CL0002", f"{inc.action} is not accepted from a trader", f"/{inc.action}")
    d.outcome = "rejected: unexpected message"
    d.replies.append(_errors_reply("IE3N99", fref, [item], fctx, now, filing.lrn, filing.mrn))
    return d


def _consult_by_document(inc: Incoming, documents: dict[str, list[str]], ctx: Context, state: StateView,
                         now: dt.datetime) -> Decision:
    """IE3Q05 naming a transport document: IE3R08 for each ENS of this person filing that carries it."""
    numbers = [n for level in ("any", "master", "house") for n in documents.get(level, [])]
    found: dict[int, FilingState] = {}
    for n in numbers:
        for f in state.by_document(n):
            if f.eori == inc.eori and f.kind == "ens" and f.mrn:
                found.setdefault(f.id, f)
    if not found:
        item = ErrorItem("L0001", f"no ENS filing carries the transport document {', '.join(numbers)}",
                         f"/{inc.action}/transportDocument", numbers[0] if numbers else None)
        return Decision("lifecycle error: unknown transport document",
                        replies=[_errors_reply("IE3N01", numbers[0] if numbers else "", [item], ctx, now, None, None)])
    first = next(iter(found.values()))
    d = Decision(f"consulted by transport document ({len(found)} ENS)", lrn=first.lrn, mrn=first.mrn,
                 filing_id=first.id)
    for f in found.values():
        assert f.mrn is not None
        d.replies.append(Reply("IE3R08", replies.ie3r08(mrn=f.mrn, lrn=f.lrn, status=f.status, ctx=f.context, now=now),
                               f.lrn, f.mrn, True))
    return d


def _filing(inc: Incoming, facts: PayloadFacts, ctx: Context, state: StateView, rules: Sequence[Rule],
            opts: Options, now: dt.datetime, make_mrn: Callable[[str], str],
            documents: dict[str, list[str]] | None = None) -> Decision:
    lrn = facts.lrn or ""
    documents = documents or {}
    rule = _rule_for(rules, lrn, inc.action)
    if rule and rule.reject:
        item = ErrorItem(rule.error_code, rule.error_text, f"/{inc.action}/LRN", lrn)
        fref = lrn if rule.functional_reference is None else rule.functional_reference
        return Decision(f"rejected by rule {rule.name!r}", lrn=lrn,
                        replies=[_errors_reply(rule.reject, fref, [item], ctx, now, lrn, None)])
    existing = state.by_lrn(inc.eori, "ens", lrn)
    if existing is not None and opts.duplicate_lrn in ("ie3n01", "ie3n99"):
        # not registered again; the answer refers to the new message only (the registered ENS is untouched)
        answer = opts.duplicate_lrn.upper()
        code = "L0201" if answer == "IE3N01" else "CL2001"
        item = ErrorItem(code, f"LRN {lrn} is not unique for the person filing {inc.eori}: it is registered "
                               f"as MRN {existing.mrn}", f"/{inc.action}/LRN", lrn)
        return Decision(f"rejected ({answer}): LRN already registered", lrn=lrn, mrn=existing.mrn,
                        filing_id=existing.id,
                        replies=[_errors_reply(answer, lrn, [item], ctx, now, lrn, existing.mrn)])
    country = (facts.office_of_first_entry or "")[:2] or opts.mrn_country
    mrn = make_mrn(country if country.isalpha() and country.isupper() else opts.mrn_country)
    ref_to = rule.ref_to_message_id if rule else True
    out = [Reply("IE3R01", replies.ie3r01(lrn=lrn, mrn=mrn, ctx=ctx, now=now), lrn, mrn, ref_to)]
    open_request = request_mode = None
    for n, risk in enumerate(rule.risk if rule else ()):
        ref = f"{'RFI' if risk == 'IE3Q02' else 'HRCM'}-{mrn[-8:]}-{n + 1}"
        if risk == "IE3Q01":
            payload = replies.ie3q01(mrn=mrn, ctx=ctx, now=now)
        elif risk == "IE3Q02":
            assert rule is not None
            by = replies.RESPONSE_BY_IE3R02 if rule.info_answer == "IE3R02" else replies.RESPONSE_BY_AMENDMENT
            payload = replies.ie3q02(mrn=mrn, ctx=ctx, now=now, reference=ref, response_type=by)
            open_request, request_mode = "IE3Q02", rule.info_answer
        elif risk == "IE3Q03":
            payload = replies.ie3q03(mrn=mrn, ctx=ctx, now=now, reference=ref)
            open_request, request_mode = "IE3Q03", "IE3R03"
        else:
            payload = replies.ie3n03(mrn=mrn, ctx=ctx, now=now)
        out.append(Reply(risk, payload, lrn, mrn, ref_to))
    docs = tuple(f"{level}:{n}" for level, nums in documents.items() for n in nums)
    what = "registered" if existing is None else "registered AGAIN (same LRN, new MessageId)"
    partial = "master" if inc.action in PARTIAL_MASTER else "house" if inc.action in PARTIAL_HOUSE else None
    if partial:
        # multiple filing: the master and the house level complete each other through the master document number
        other = "house" if partial == "master" else "master"
        masters = documents.get("master", [])
        linked = [f for n in masters for f in state.by_document(f"master:{n}")
                  if f.kind == "ens" and f.action in (PARTIAL_HOUSE if other == "house" else PARTIAL_MASTER)
                  and f.lrn != lrn and f.status == "registered"]
        if linked:
            what += f"; linked with the {other} level filing(s) {', '.join(sorted({f.mrn or '' for f in linked}))}"
        else:
            text = (f"ENS not complete: no {other} level filing for the master transport document "
                    f"{', '.join(masters) or '(none given)'} yet")
            out.append(Reply("IE3N02", replies.notification("IE3N02", mrn=mrn, ctx=ctx, now=now, description=text),
                             lrn, mrn, ref_to))
            what += "; incomplete (IE3N02)"
            if partial == "house" and facts.carrier_eori and facts.carrier_eori != inc.eori:
                # ICD Annex 1 IE3N11: the person expected to file the master level (the carrier) has not yet
                pending = (f"ENS pending: the house level {lrn} refers to master transport document "
                           f"{', '.join(masters)}, which you have not filed yet")
                out.append(Reply("IE3N11", replies.notification("IE3N11", mrn=mrn, ctx=ctx, now=now,
                                                                description=pending),
                                 lrn, mrn, False, to_eori=facts.carrier_eori))
                what += f"; carrier {facts.carrier_eori} notified (IE3N11)"
    reg = Registration("ens", lrn, mrn, inc.action, ctx, open_request, request_mode, docs)
    return Decision(what + (f" with rule {rule.name!r}" if rule else ""), lrn=lrn, mrn=mrn, register=reg,
                    filing_id=existing.id if existing else None, replies=out)


def _arrival(inc: Incoming, facts: PayloadFacts, ctx: Context, state: StateView, rules: Sequence[Rule],
             opts: Options, now: dt.datetime) -> Decision:
    lrn = facts.lrn or ""
    mrns = [facts.mrn] if facts.mrn else []
    filing = state.by_mrn(facts.mrn) if facts.mrn else None
    rule = _rule_for(rules, lrn, inc.action) or (_rule_for(rules, filing.lrn, inc.action) if filing else None)
    ref_to = rule.ref_to_message_id if rule else True
    out = [Reply("IE3R04", replies.ie3r04(lrn=lrn, mrns=mrns, ctx=ctx, now=now), lrn, facts.mrn, ref_to)]
    for m in mrns:
        f = state.by_mrn(m)
        if f is None or f.status != "registered":
            # ICD Annex 1: the ENS named at arrival is in an incorrect state (unknown, invalidated)
            why = "is not registered" if f is None else f"is {f.status}"
            out.append(Reply("IE3N07", replies.notification("IE3N07", mrn=m, ctx=ctx, now=now,
                                                            description=f"ENS {m} {why}"), lrn, m, ref_to))
    if (rule.arrival_control if rule else False) or opts.arrival_control:
        for m in mrns:
            out.append(Reply("IE3N08", replies.ie3n08(mrn=m, ctx=ctx, now=now), lrn, m, ref_to))
    existing = state.by_lrn(inc.eori, "arrival", lrn)
    return Decision("arrival registered", lrn=lrn, mrn=facts.mrn, filing_id=existing.id if existing else None,
                    register=Registration("arrival", lrn, facts.mrn, inc.action, ctx), replies=out)
