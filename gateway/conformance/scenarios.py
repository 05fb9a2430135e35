"""The scenario catalogue, modelled on the ICS2 economic operator conformance campaign (CTS test cases) and on the
negative cases that customs' own AS4 test suites use. Each scenario is one async function of a ``Context`` that
returns its evidence (message ids, references, timings) or raises ``ScenarioFailed``.

Business scenarios go through the in-process gateway (submit API -> journal -> sender -> TI -> inbound ->
correlation) and are judged by the journal state the filing reaches. Their LRN prefixes (RFI, HRCM, DNL) select
the matching scripted outcome of the bundled simulator; at a real TI the conformance test officer triggers the
same customs messages, and the runner waits for them (``--timeout``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from gateway.conformance import campaign as cp
from gateway.conformance.context import (
    Context, RunnerRefused, Scenario, ScenarioFailed, _ms, expect_error, in_messages, out_messages,
)
from gateway.conformance.steps import REGISTERED_OR_LATER, _file, _registered, _registered_once
from gateway.conformance.unsafe import Recipe, build_message, xml_part
from gateway.ebms.engine import OutboundMessage
from gateway.ebms.model import new_message_id
from gateway.transport.client import EmptyChannel, ReceiptOk, summarize



# ------------------------------------------------------------------------------------------------ connectivity
async def _ping(ctx: Context, party_id: str | None = None) -> tuple[ReceiptOk, Any, dict[str, Any]]:
    engine = ctx.engine if party_id is None else ctx.engine_for(party_id)
    msg = await asyncio.to_thread(engine.ping, ctx.customs)
    outcome = await ctx.client.send(ctx.endpoint, msg)
    ev = {"message_id": msg.message_id, **({"party_id": party_id} if party_id else {})}
    if not isinstance(outcome, ReceiptOk):
        raise ScenarioFailed(f"no signed receipt for the ping: {summarize(outcome)}", {**ev, **summarize(outcome)})
    ev.update(receipt=outcome.receipt.message_id, ms=_ms(outcome.elapsed))
    return outcome, msg, ev


async def ping(ctx: Context) -> dict[str, Any]:
    _, _, ev = await _ping(ctx)
    return ev


async def test_service(ctx: Context) -> dict[str, Any]:
    """The ebMS test service (ICD 4.5.1): a receipt and no business processing at all."""
    _, msg, ev = await _ping(ctx)
    if ctx.sim_admin:
        await asyncio.sleep(0.5)
        replies = [o for o in await ctx.sim("GET", "/outbound") if o.get("ref_to") == msg.message_id]
        if replies:
            raise ScenarioFailed("the test message caused a business reply", {**ev, "replies": replies})
        ev["business_replies"] = 0
    return ev


async def sub_domain(ctx: Context, index: int) -> dict[str, Any]:
    if index >= len(ctx.sub_parties):
        raise ScenarioFailed("no sub-domain party id configured (--sub-party)")
    party = ctx.sub_parties[index]
    _, _, ev = await _ping(ctx, party)
    return ev


# ------------------------------------------------------------------------------------------------ filings
def filing(fixture: str) -> Any:
    async def run(ctx: Context) -> dict[str, Any]:
        lrn = ctx.lrn("CT")
        life, ev = await _file(ctx, ctx.ens(fixture, lrn), lrn, ("registered",))
        if "IE3R01" not in ev["answers"] or not ev["mrn"]:
            raise ScenarioFailed("registered without an IE3R01 carrying the MRN", ev)
        await _registered_once(ctx, lrn, ev)
        return ev
    return run


async def filing_with_attachment(ctx: Context) -> dict[str, Any]:
    """ICD 3.1.11 / 4.2.5: the ENS and its PDF through the submit API; the sealed message carries the PDF as a part
    whose Content-ID and eb:PartInfo href are the payload's binaryFile/identification, with its declared MimeType,
    gzip, covered by the seal; registered by IE3R01. Against the simulator (whose STI-like check answers a broken
    link with IE3N99), the same ENS sent without its part must come back as IE3N99."""
    from gateway.ebms import mime
    fixture = "ens-IE3F20-air-attachment.xml"
    lrn = ctx.lrn("AT")
    data = ctx.ens(fixture, lrn)
    files = _sample_attachments(ctx, data)
    if not files:
        raise ScenarioFailed(f"the sample {fixture} declares no binaryFile")
    _, ev = await _file(ctx, data, lrn, ("registered",))
    if "IE3R01" not in ev["answers"] or not ev["mrn"]:
        raise ScenarioFailed("registered without an IE3R01 carrying the MRN", ev)
    sent = ctx.gateway.components["reader"].get_message(ev["message_id"], with_bytes=True)
    unpacked = mime.unpack(sent.content_type, bytes(sent.sealed), max_parts=len(files) + 2,
                           max_part_bytes=len(sent.sealed) + 1)
    soap = bytes(unpacked.soap.content)
    for ident, mime_type, content in files:
        part = next((p for p in unpacked.attachments if p.content_id == ident), None)
        if part is None or f'href="cid:{ident}"'.encode() not in soap or f">{mime_type}<".encode() not in soap:
            raise ScenarioFailed(f"the sealed message does not carry attachment {ident} as its binaryFile names it",
                                 ev)
        ev.setdefault("attachments", []).append({"id": ident, "mime_type": mime_type, "bytes": len(content),
                                                 "wire_bytes": len(part.content)})
    await _registered_once(ctx, lrn, ev)
    if ctx.sim_admin:   # the TI side of the link: a declared attachment that does not travel is refused
        bad_lrn = ctx.lrn("AX")
        msg = await asyncio.to_thread(ctx.engine.user_message, action="IE3F20", payload=ctx.ens(fixture, bad_lrn),
                                      to_party=ctx.customs)
        outcome = await ctx.client.send(ctx.endpoint, msg)
        if not isinstance(outcome, ReceiptOk):
            raise ScenarioFailed(f"no receipt for the message without its attachment: {summarize(outcome)}", ev)
        reader = ctx.gateway.components["reader"]
        deadline = time.monotonic() + ctx.timeout
        while not [m for m in reader.list_messages(direction="in", limit=1000)
                   if m.ref_to_message_id == msg.message_id and m.action == "IE3N99"]:
            if time.monotonic() > deadline:
                raise ScenarioFailed("the TI did not answer a missing attachment with IE3N99",
                                     {**ev, "unlinked_message_id": msg.message_id})
            await asyncio.sleep(0.1)
        ev["missing_attachment_answer"] = "IE3N99"
    return ev


async def invalid_filing(ctx: Context) -> dict[str, Any]:
    """An ENS customs must refuse (office of first entry not a valid reference): IE3N99, filing rejected."""
    lrn = ctx.lrn("IV")
    life, ev = await _file(ctx, ctx.ens("ens-IE3F10-invalid-office-sci.xml", lrn), lrn, ("rejected",),
                           )
    if not any(a in ("IE3N99", "IE3N01") for a in ev["answers"]):
        raise ScenarioFailed("rejected, but not by IE3N99", ev)
    ev["error"] = life["filing"].get("last_error")
    return ev


async def amendment(ctx: Context) -> dict[str, Any]:
    lrn, filer, ev0 = await _registered(ctx)
    t0 = time.monotonic()
    acc = await ctx.submit(ctx.with_mrn(ctx.sample("amd-IE3A32-express.xml"), ev0["mrn"]))
    life = await ctx.wait_state(filer, lrn, ("amended",))
    return {"lrn": lrn, "mrn": ev0["mrn"], "filing_id": ev0["message_id"], "amendment_id": acc.get("message_id"),
            "answers": [m["action"] for m in in_messages(life)], "state": life["filing"]["state"],
            "ms": _ms(time.monotonic() - t0)}


async def invalidation(ctx: Context) -> dict[str, Any]:
    lrn, filer, ev0 = await _registered(ctx)
    t0 = time.monotonic()
    acc = await ctx.submit(ctx.mrn_message("IE3Q04", ev0["mrn"], filer))
    life = await ctx.wait_state(filer, lrn, ("invalidated",))
    return {"lrn": lrn, "mrn": ev0["mrn"], "invalidation_id": acc.get("message_id"),
            "answers": [m["action"] for m in in_messages(life)], "state": life["filing"]["state"],
            "ms": _ms(time.monotonic() - t0)}


async def _request_answered(ctx: Context, prefix: str, request: str, open_state: str, answer: str
                            ) -> dict[str, Any]:
    lrn = ctx.lrn(prefix)
    t0 = time.monotonic()
    acc = await ctx.submit(ctx.ens("ens-IE3F32-express.xml", lrn))
    filer = acc["filer_eori"]
    life = await ctx.wait_state(filer, lrn, (open_state,))
    mrn = life["filing"]["mrn"]
    t_req = time.monotonic()
    ans = await ctx.submit(ctx.mrn_message(answer, mrn, filer))
    life = await ctx.wait_state(filer, lrn, ("assessment-complete",) if ctx.sim_admin else REGISTERED_OR_LATER)
    answers = [m["action"] for m in in_messages(life)]
    if request not in answers:
        raise ScenarioFailed(f"no {request} recorded", {"lrn": lrn, "answers": answers})
    open_requests = [r for r in life.get("requests", []) if r.get("state") == "open"]
    if open_requests:
        raise ScenarioFailed(f"the {request} is still open after the {answer}", {"lrn": lrn, "open": open_requests})
    return {"lrn": lrn, "mrn": mrn, "answer_id": ans.get("message_id"), "answers": answers,
            "state": life["filing"]["state"], "request_ms": _ms(t_req - t0), "ms": _ms(time.monotonic() - t0)}


async def additional_information(ctx: Context) -> dict[str, Any]:
    return await _request_answered(ctx, "RFI", "IE3Q02", "info-requested", "IE3R02")


async def hrcm_screening(ctx: Context) -> dict[str, Any]:
    return await _request_answered(ctx, "HRCM", "IE3Q03", "screening-requested", "IE3R03")


async def do_not_load(ctx: Context) -> dict[str, Any]:
    lrn = ctx.lrn("DNL")
    life, ev = await _file(ctx, ctx.ens("ens-IE3F32-express.xml", lrn), lrn, ("do-not-load",))
    if "IE3Q01" not in ev["answers"]:
        raise ScenarioFailed("do-not-load without an IE3Q01", ev)
    return ev


async def arrival(ctx: Context) -> dict[str, Any]:
    lrn0, _, ev0 = await _registered(ctx, "CT", "ens-IE3F20-air-attachment.xml")
    lrn = ctx.lrn("AR")
    life, ev = await _file(ctx, ctx.ens("arr-IE3N06-arrival.xml", lrn), lrn, ("arrived",))
    if "IE3R04" not in ev["answers"]:
        raise ScenarioFailed("arrived without an IE3R04", ev)
    ev.update(ens_lrn=lrn0, ens_mrn=ev0["mrn"])
    return ev


async def resend_duplicate(ctx: Context) -> dict[str, Any]:
    """A message whose receipt was lost is sent again with the same MessageId and bytes; customs' duplicate
    elimination must register it once. Against the simulator the response is really dropped (drop_response);
    elsewhere the journaled bytes are sent a second time after registration."""
    lrn = ctx.lrn("DU")
    t0 = time.monotonic()
    if ctx.sim_admin:
        await ctx.sim("POST", "/faults", {"drop_response": 1})
    try:
        life, ev = await _file(ctx, ctx.ens("ens-IE3F32-express.xml", lrn), lrn, ("registered",))
    finally:
        if ctx.sim_admin:
            await ctx.sim("POST", "/faults", {"drop_response": 0})
    mid = ev["message_id"]
    sent = [m for m in out_messages(life) if m["message_id"] == mid]
    ev["attempts"] = sent[0].get("attempts") if sent else None
    if ctx.sim_admin:
        # the IE3R01 may overtake the resend (the first copy was registered): wait for the second copy
        deadline = time.monotonic() + ctx.timeout
        row = await ctx.sim_report(lrn)
        while (row is None or row.get("copies", 0) < 2) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            row = await ctx.sim_report(lrn)
        ev["ms"] = _ms(time.monotonic() - t0)
        if row is None or row.get("copies", 0) < 2 or row.get("registrations") != 1 or \
                row.get("message_ids") != [mid]:
            raise ScenarioFailed("the resend was not absorbed as a duplicate", {**ev, "report": row})
        ev.update(sim_copies=row["copies"], sim_registrations=row["registrations"])
        return ev
    reader = ctx.gateway.components["reader"]
    msg = reader.get_message(mid, with_bytes=True)
    again = OutboundMessage.from_wire(mid, msg.content_type, msg.sealed)
    outcome = await ctx.client.send(ctx.endpoint, again)
    if not isinstance(outcome, ReceiptOk):
        raise ScenarioFailed(f"the resend got no receipt: {summarize(outcome)}", {**ev, **summarize(outcome)})
    await asyncio.sleep(min(10.0, ctx.timeout / 10))
    life = ctx.lifecycle(life["filing"]["filer_eori"], lrn) or life
    r01 = [m for m in in_messages(life) if m["action"] == "IE3R01"]
    if len({m.get("message_id") for m in r01}) > 1 or life["filing"]["mrn"] != ev["mrn"]:
        raise ScenarioFailed("the duplicate was processed again (a second IE3R01)", {**ev, "ie3r01": len(r01)})
    ev.update(resend_receipt=outcome.receipt.message_id, resend_ms=_ms(outcome.elapsed))
    return ev


# ------------------------------------------------------------------------------------------------ pull
async def pull_mode(ctx: Context) -> dict[str, Any]:
    """A filing from a PartyId in pull mode; the IE3R01 is pulled from its MPC, journaled by the in-process gateway
    and acknowledged by a receipt. Anything else pulled meanwhile is journaled and acknowledged too (never dropped);
    the IE3R01 is recognised by RefToMessageId or, as the STI sends it without one, by its LRN."""
    from gateway.ics2.inspect import inspect_payload
    party = ctx.pull_party
    engine = ctx.engine_for(party)
    lrn = ctx.lrn("PL")
    t0 = time.monotonic()
    msg = await asyncio.to_thread(engine.user_message, action="IE3F32",
                                  payload=ctx.ens("ens-IE3F32-express.xml", lrn), to_party=ctx.customs)
    outcome = await ctx.client.send(ctx.endpoint, msg)
    ev: dict[str, Any] = {"party_id": party, "lrn": lrn, "message_id": msg.message_id}
    if not isinstance(outcome, ReceiptOk):
        raise ScenarioFailed(f"no receipt for the filing: {summarize(outcome)}", {**ev, **summarize(outcome)})

    def facts(m: Any) -> Any:
        data = m.payloads[0].data(engine.limits) if m.payloads else b""
        return inspect_payload(data) if data else None

    def ours(m: Any) -> bool:
        um = m.messaging.user_message
        f = facts(m)
        return um is not None and (um.ref_to_message_id == msg.message_id or bool(f and f.lrn == lrn))

    pulled, seen = await ctx.pull_until(ours, party)
    um = pulled.messaging.user_message
    f = facts(pulled)
    if um.action != "IE3R01" or not (f and f.mrn):
        raise ScenarioFailed(f"pulled {um.action}, expected IE3R01 with an MRN", ev)
    if ctx.journaled_inbound(pulled.message_id) is None:
        raise ScenarioFailed("the pulled IE3R01 was acknowledged but is not in the journal", ev)
    ev.update(pulled_id=pulled.message_id, action=um.action, mrn=f.mrn, ref_to=um.ref_to_message_id,
              pulls=len(seen), empty=sum(1 for p in seen if isinstance(p.outcome, EmptyChannel)),
              ms=_ms(time.monotonic() - t0))
    return ev


async def empty_pull(ctx: Context) -> dict[str, Any]:
    """A PullRequest on an MPC with nothing waiting: the EBMS:0006 warning (not an error)."""
    mpc = ctx.cfg.mpc
    request = await asyncio.to_thread(ctx.engine.pull_request, mpc)
    outcome = await ctx.client.pull(ctx.endpoint, request, mpc)
    ev = {"mpc": mpc, "message_id": request.message_id}
    if not isinstance(outcome, EmptyChannel):
        raise ScenarioFailed(f"expected EBMS:0006 (empty), got {summarize(outcome)['outcome']}",
                             {**ev, **summarize(outcome)})
    if (outcome.error.severity or "").lower() != "warning":
        raise ScenarioFailed(f"EBMS:0006 with severity {outcome.error.severity}, expected warning", ev)
    ev.update(code=outcome.error.error_code, severity=outcome.error.severity, ms=_ms(outcome.elapsed))
    return ev


# ------------------------------------------------------------------------------------------------ negative
def _identity(ctx: Context, stem: str) -> Any:
    from gateway.security.keys import load_identity_files
    key, chain = ctx.certs / f"{stem}-seal.key", ctx.certs / f"{stem}-chain.pem"
    if not key.exists() or not chain.exists():
        raise ScenarioFailed(f"{key} / {chain} missing (test PKI: make pki; or --certs DIR)")
    return load_identity_files(key, chain, allow_leaf_only=True)


async def _send_unsafe(ctx: Context, recipe: Recipe, key: Any = None, chain: Any = None) -> tuple[Any, str]:
    recipe.message_id = recipe.message_id or new_message_id(ctx.engine.fqdn)
    recipe.to_party = ctx.customs
    if not recipe.parts:
        lrn = ctx.lrn("NG")
        recipe.parts = [xml_part(ctx.ens("ens-IE3F32-express.xml", lrn), content_id=f"payload-{recipe.message_id}")]
    key = key or ctx.engine.identity.key
    chain = chain or ctx.engine.identity.chain
    ctype, body = await asyncio.to_thread(build_message, recipe, key, chain)
    msg = OutboundMessage(message_id=recipe.message_id, kind="user-message", content_type=ctype, body=body,
                          references=(), digests={})
    return await ctx.client.send(ctx.endpoint, msg), recipe.message_id


def negative(codes: Sequence[str], *, sub_code: str | None = None, stem: str | None = None,
             **recipe_kw: Any) -> Any:
    async def run(ctx: Context) -> dict[str, Any]:
        kw = dict(recipe_kw)
        if kw.pop("unregistered", False):
            kw["from_party"] = ctx.trader(ctx.unregistered_party)
        else:
            kw.setdefault("from_party", ctx.trader())
        parts = None
        if kw.pop("damaged_gzip", False):
            lrn = ctx.lrn("GZ")
            parts = [xml_part(ctx.ens("ens-IE3F32-express.xml", lrn), corrupt_gzip=True)]
        recipe = Recipe(**kw, parts=parts or [])
        ident = _identity(ctx, stem) if stem else None
        outcome, mid = await _send_unsafe(ctx, recipe, ident.key if ident else None, ident.chain if ident else None)
        ev = {"message_id": mid, **expect_error(outcome, codes, sub_code=sub_code)}
        if recipe.from_party.party_id != ctx.cfg.identity.party_id:
            ev["party_id"] = recipe.from_party.party_id
        return ev
    return run


# ------------------------------------------------------------------------------------------------ catalogue
CATALOGUE: tuple[Scenario, ...] = (
    Scenario("ping", "Connectivity: AS4 ping (test service) answered by a signed receipt", "connectivity", ping,
             reference="ICD 4.5.1"),
    Scenario("filing-sea", "ENS filing, maritime (IE3F10) answered by IE3R01", "filing",
             filing("ens-IE3F10-sea.xml"), daemon=True),
    Scenario("filing-air", "ENS filing, air complete (IE3F26) answered by IE3R01", "filing",
             filing("ens-IE3F26-air.xml"), daemon=True),
    Scenario("filing-air-attachment", "ENS filing, air with attachment (IE3F20) answered by IE3R01", "filing",
             filing_with_attachment, daemon=True, reference="ICD 3.1.11, 4.2.5"),
    Scenario("filing-express", "ENS filing, express consignment (IE3F32) answered by IE3R01", "filing",
             filing("ens-IE3F32-express.xml"), daemon=True),
    Scenario("filing-postal", "ENS filing, postal (IE3F42) answered by IE3R01", "filing",
             filing("ens-IE3F42-postal.xml"), daemon=True),
    Scenario("filing-road", "ENS filing, road (IE3F50) answered by IE3R01", "filing",
             filing("ens-IE3F50-road.xml"), daemon=True),
    Scenario("invalid-filing", "Invalid ENS answered by IE3N99; the filing is rejected", "filing", invalid_filing,
             daemon=True),
    Scenario("amendment", "Amendment (IE3A32) of a registered ENS answered by IE3N10", "lifecycle", amendment,
             daemon=True),
    Scenario("invalidation", "Invalidation request (IE3Q04) answered by IE3R07", "lifecycle", invalidation,
             daemon=True),
    Scenario("additional-information", "Additional information request IE3Q02 answered by IE3R02", "lifecycle",
             additional_information, daemon=True),
    Scenario("hrcm-screening", "HRCM screening request IE3Q03 answered by IE3R03", "lifecycle", hrcm_screening,
             daemon=True),
    Scenario("do-not-load", "Do-not-load request IE3Q01 stops the filing", "lifecycle", do_not_load, daemon=True),
    Scenario("arrival", "Arrival notification (IE3N06) answered by IE3R04", "lifecycle", arrival, daemon=True),
    Scenario("resend-duplicate", "Resend of an unacknowledged message: same MessageId, registered once",
             "lifecycle", resend_duplicate, daemon=True, reference="OASIS AS4 3.2 duplicate elimination"),
    Scenario("pull-mode", "Pull mode: IE3R01 pulled from the party's MPC, journaled, acknowledged", "pull",
             pull_mode, daemon=True, reference="ICD 4.1.3.3"),
    Scenario("empty-pull", "PullRequest on an empty channel answered by the EBMS:0006 warning", "pull", empty_pull),
    Scenario("test-service", "ebMS test service: receipt and no business delivery", "connectivity", test_service),
    # ---- the campaign beyond one filing per mode (campaign.py)
    Scenario("ti-ping-push", "The TI pings the trader by push: our signed receipt", "connectivity", cp.ti_ping_push,
             daemon=True, reference="ICD 4.5.1"),
    Scenario("ti-ping-pull", "The TI pings the trader by pull: pulled, journaled, receipted", "connectivity",
             cp.ti_ping_pull, daemon=True, reference="ICD 4.5.1"),
    Scenario("filing-rail", "ENS filing, rail (IE3F51) answered by IE3R01", "filing",
             cp.campaign_filing("ens-IE3F51-rail.xml"), daemon=True),
    Scenario("filing-sea-master-house", "ENS filing, sea master with house level (IE3F11) answered by IE3R01",
             "filing", cp.campaign_filing("ens-IE3F11-sea-master-house.xml"), daemon=True),
    Scenario("filing-attachment-carried", "Air ENS (IE3F20) carrying its PDF as a MIME part named by "
             "binaryFile/identification: registered", "filing", cp.filing_with_attachment, daemon=True,
             reference="ICD 3.1.11, 4.2.5"),
    Scenario("multiple-filing", "Multiple filing: master level (IE3F12) incomplete (IE3N02) until the house level "
             "(IE3F14) links to it", "filing", cp.multiple_filing, daemon=True, reference="ICD 3.1.4"),
    Scenario("ens-pending", "House level before its master level: IE3N02 to the filer, IE3N11 (ENS pending) "
             "to the carrier", "filing", cp.ens_pending, daemon=True, reference="ICD 3.1.4, Annex 1 IE3N11"),
    Scenario("consultation", "Consultation IE3Q05 by MRN answered by IE3R08", "lifecycle", cp.consultation,
             daemon=True, reference="ICD 3.1.9"),
    Scenario("consultation-by-document", "Consultation IE3Q05 by house transport document answered by IE3R08",
             "lifecycle", cp.consultation_by_document, daemon=True, reference="ICD 3.1.9"),
    Scenario("information-by-amendment", "IE3Q02 asking for an amendment answered by IE3A32: IE3N10, closed",
             "lifecycle", cp.information_by_amendment, daemon=True),
    Scenario("information-with-document", "IE3Q02 answered by an IE3R02 carrying a PDF", "lifecycle",
             cp.request_answered_with_document("RFI", "IE3Q02", "info-requested", "IE3R02"), daemon=True,
             reference="ICD 3.1.11"),
    Scenario("screening-with-document", "IE3Q03 answered by an IE3R03 carrying a PDF", "lifecycle",
             cp.request_answered_with_document("HRCM", "IE3Q03", "screening-requested", "IE3R03"), daemon=True,
             reference="ICD 3.1.11"),
    Scenario("lifecycle-errors", "Amending and invalidating an invalidated ENS: IE3N01 each, still invalidated",
             "lifecycle", cp.lifecycle_errors, daemon=True, reference="ICD Annex 1 IE3N01"),
    Scenario("duplicate-lrn", "A second filing with a registered LRN: refused locally (409); at customs IE3N01, "
             "not registered again", "lifecycle", cp.duplicate_lrn, daemon=True, reference="ICD Annex 1 IE3N01"),
    Scenario("ie3n99-by-ref", "IE3N99 whose functional reference matches nothing, correlated by RefToMessageId",
             "lifecycle", cp.rejected_by_ref_only, daemon=True, reference="ICD 4.5.3"),
    Scenario("arrival-control", "Arrival of an ENS selected for control: IE3R04 and IE3N08", "lifecycle",
             cp.arrival_control, daemon=True),
    Scenario("arrival-incorrect-state", "Arrival naming an invalidated ENS: IE3R04 and IE3N07", "lifecycle",
             cp.arrival_incorrect_state, daemon=True),
    Scenario("notification-ie3n09", "AEO control notification IE3N09 reaches its filing", "lifecycle",
             cp.notification_ie3n09, daemon=True),
    Scenario("carrier-notifications", "IE3N04, IE3N05, IE3Q01 and the IE3R01 copy to a carrier that did not file: "
             "received, journaled, receipted", "lifecycle", cp.carrier_notifications, daemon=True,
             reference="ICD 3.1.8, Annex 3"),
    Scenario("pull-no-ref-reoffer", "Pulled IE3R01 without RefToMessageId, correlated by LRN; re-offered copy "
             "journaled once", "pull", cp.pull_without_ref_and_reoffer, daemon=True, reference="ICD 4.1.3.3"),
    Scenario("pull-daemon", "The daemon's own puller (pull-mode party): filing registered by the pulled IE3R01",
             "pull", cp.pull_by_daemon, daemon=True, reference="ICD 4.1.3.3"),
    Scenario("unregistered-pull-party", "PullRequest on the MPC of an unregistered PartyId: EBMS:0004 / A001",
             "negative", cp.unregistered_pull_party, negative=True, reference="eDelivery 1.5.5.5"),
    Scenario("subdomain-system", "Sub-domain party id system@EORI is accepted", "connectivity",
             lambda ctx: sub_domain(ctx, 0), reference="ICD table 8"),
    Scenario("subdomain-ms", "Sub-domain party id EORI@MS is accepted", "connectivity",
             lambda ctx: sub_domain(ctx, 1), reference="ICD table 8"),
    Scenario("undefined-action", "Undefined action refused with EBMS:0001 / EBMS:0010", "negative",
             negative(("EBMS:0001", "EBMS:0010"), action="IE3F99")),
    Scenario("leaf-only", "Seal with a leaf-only certificate chain refused (EBMS:0101 / EBMS:0103)", "negative",
             negative(("EBMS:0101", "EBMS:0103"), leaf_only=True), negative=True),
    Scenario("expired-seal", "Seal with an expired certificate refused (EBMS:0101)", "negative",
             negative(("EBMS:0101",), stem="expired"), negative=True),
    Scenario("revoked-seal", "Seal with a revoked certificate refused (EBMS:0101)", "negative",
             negative(("EBMS:0101",), stem="revoked"), negative=True),
    Scenario("unauthorised-sender", "Sender not registered in UUM&DS refused with EBMS:0004 / A001", "negative",
             negative(("EBMS:0004",), sub_code="A001", unregistered=True), negative=True),
    Scenario("impostor-seal", "Sealed with our EORI by a certificate that is neither trusted nor registered "
             "(other-seal): EBMS:0101, or EBMS:0004 / A001", "negative",
             negative(("EBMS:0101", "EBMS:0004"), sub_code="A001", stem="other"), negative=True),
    Scenario("damaged-gzip", "Payload that is not a valid gzip stream refused (EBMS:0303)", "negative",
             negative(("EBMS:0303",), damaged_gzip=True), negative=True),
)


def select(ids: Sequence[str] | None) -> list[Scenario]:
    """The scenarios named (ids or groups, in catalogue order), all of them when ``ids`` is empty."""
    if not ids:
        return list(CATALOGUE)
    wanted = {i.strip() for spec in ids for i in spec.split(",") if i.strip()}
    known = {s.id for s in CATALOGUE} | {s.group for s in CATALOGUE} | {"negative"}
    unknown = wanted - known
    if unknown:
        raise RunnerRefused(f"unknown scenario(s) {', '.join(sorted(unknown))}; known: "
                            f"{', '.join(s.id for s in CATALOGUE)} (or a group: "
                            f"{', '.join(sorted({s.group for s in CATALOGUE}))})")
    return [s for s in CATALOGUE if s.id in wanted or s.group in wanted or ("negative" in wanted and s.negative)]
