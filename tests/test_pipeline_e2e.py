"""The pipeline end to end: the customs simulator and the gateway daemon as real processes on loopback ports.

One simulator and one push-mode gateway serve the module (each test uses its own LRNs); the pull-mode gateway and
the gateway with an unregistered PartyId are started by their tests against the same simulator. Every gateway is
stopped with SIGTERM and must exit 0 (a clean drain).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_harness import (
    INVALID_FIXTURES, PARTY, PULL_PARTY, VALID_FIXTURES, GatewayEnv, SimEnv, amendment, ens, fixture,
    fixture_lrn, free_port, push_url, response, wait_until,
)

pytestmark = pytest.mark.slow

UNREGISTERED = "NL999999999"
INBOX_KEYS = {"message_id", "ref_to_message_id", "conversation_id", "from", "to", "service", "action", "channel",
              "received", "filing", "lrn", "mrn", "functional_reference", "parts"}
NOREF_RULE = """
[[rules]]
name = "replies without RefToMessageId"
lrn = "^NOREF"
ref_to_message_id = false
"""
_seq = itertools.count(1)


def new_lrn(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000:03d}{next(_seq):05d}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pki: Path):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("e2e")
    inbound = free_port(dual=True)
    sim = SimEnv.create(base / "sim", [{"party_id": PARTY, "push_url": push_url(inbound)},
                                       {"party_id": PULL_PARTY, "delivery": "pull"}],
                        extra=NOREF_RULE, omit_ref=["IE3N99"])
    sim.start()
    gw = GatewayEnv.create(base / "gw", sim, inbound_port=inbound)
    try:
        gw.start()
    except BaseException:
        sim.stop()
        raise
    yield sim, gw
    code = gw.stop()
    sim_code = sim.stop()
    assert code == 0, f"gateway exit code {code} after SIGTERM\n{gw.logs()}"
    assert sim_code == 0, sim.proc.tail() if sim.proc else ""


def trail(life: dict[str, Any]) -> list[str]:
    """The states a filing went through, in order."""
    return [e["detail"]["to"] for e in life["events"] if isinstance(e.get("detail"), dict) and "to" in e["detail"]]


def alerts_of(gw: GatewayEnv, kind: str, timeout: float = 10.0, **match: Any) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]]:
        return [a for a in gw.alerts() if a.get("alert") == kind and all(a.get(k) == v for k, v in match.items())]
    return wait_until(found, timeout, f"alert {kind} {match}", gw.logs)


def registered(gw: GatewayEnv, lrn: str, data: bytes | None = None) -> dict[str, Any]:
    status, body = gw.submit(data or ens(lrn))
    assert status == 202, body
    return gw.wait_state(lrn, "registered")


# ----------------------------------------------------------------------------------------------- round trip
def test_push_round_trip_of_the_fixtures(world: Any) -> None:
    sim, gw = world
    for name in VALID_FIXTURES + INVALID_FIXTURES:
        gw.drop_fixture(name)   # with the attachments it declares (NAME.d/ folder)
    valid = {fixture_lrn(n) for n in VALID_FIXTURES}
    for lrn in valid:
        gw.wait_state(lrn, "registered", timeout=30)
    rows = gw.journal()
    for lrn in valid:
        assert rows[lrn]["state"] == "registered" and re.fullmatch(r"\d\d[A-Z]{2}[A-Z0-9]{13}\d", rows[lrn]["mrn"])
    # invalid fixtures: rejected locally, each with a reason file, and never sent
    for name in INVALID_FIXTURES:
        lrn = fixture_lrn(name)
        assert rows[lrn]["state"] == "rejected-locally" and rows[lrn]["last_error"]
        [reason] = list((gw.var / "spool" / "rejected").glob(f"*__{name}.reason.json"))
        doc = json.loads(reason.read_text())
        assert doc["reason"] == "invalid" and doc["file"] == name and doc["findings"], doc
    report = sim.report()
    assert valid <= set(report) and not {fixture_lrn(n) for n in INVALID_FIXTURES} & set(report)
    for lrn in valid:
        assert report[lrn]["registrations"] == 1 and len(report[lrn]["message_ids"]) == 1
        assert report[lrn]["mrn"] == rows[lrn]["mrn"]
    # archive: every valid file journaled and moved out of the spool
    assert not list(gw.spool.glob("*.xml")) and not list(gw.spool.glob("*.d"))
    archived = [*(gw.var / "spool" / "archive").glob("*.xml"), *(gw.var / "spool" / "archive").glob("*.d")]
    assert len(archived) >= len(VALID_FIXTURES)
    # inbox: one metadata file per IE3R01 with the documented keys, payload next to it
    meta = {m["filing"]["lrn"]: m for m in gw.inbox_metadata() if m["action"] == "IE3R01" and m["filing"]}
    for lrn in valid:
        m = meta[lrn]
        assert INBOX_KEYS <= set(m), INBOX_KEYS - set(m)
        assert m["channel"] == "push" and m["from"] == "sti-taxud" and m["to"] == PARTY
        assert m["correlated_by"] == "RefToMessageId" and m["mrn"] == rows[lrn]["mrn"]
        assert m["filing"]["filer_eori"] == PARTY and m["filing"]["mrn"] == rows[lrn]["mrn"]
        assert m["filing"]["state"] == "registered"
        assert m["ref_to_message_id"] in report[lrn]["message_ids"]
        [part] = m["parts"]
        assert part["mime_type"] == "application/xml" and (gw.inbox / part["file"]).read_bytes().startswith(b"<")
    # status files: one per filing, current
    for lrn in valid | {fixture_lrn(n) for n in INVALID_FIXTURES}:
        doc = json.loads((gw.var / "status" / f"{PARTY}_{lrn}.json").read_text())
        assert doc["lrn"] == lrn and doc["state"] == rows[lrn]["state"]


def test_idempotent_spool_intake(world: Any) -> None:
    sim, gw = world
    lrn = new_lrn("IDEM")
    data = ens(lrn)
    gw.drop("idem-1.xml", data)
    gw.wait_state(lrn, "registered")
    gw.drop("idem-2.xml", data)   # the same file again, under another name
    wait_until(lambda: not list(gw.spool.glob("idem-*.xml")) and
               len(list((gw.var / "spool" / "archive").glob("*idem-*.xml"))) == 2, 10, "both files archived")
    life = gw.wait_state(lrn, "registered")
    assert len([m for m in life["messages"] if m["direction"] == "out"]) == 1
    assert [f for f in gw.journal() if f == lrn] == [lrn]
    time.sleep(0.3)
    row = sim.report()[lrn]
    assert row["registrations"] == 1 and len(row["message_ids"]) == 1 and row["copies"] == 1


def test_same_lrn_different_payload_is_a_conflict(world: Any) -> None:
    sim, gw = world
    lrn = new_lrn("CONF")
    gw.drop("conf-1.xml", ens(lrn))
    gw.wait_state(lrn, "registered")
    gw.drop("conf-2.xml", ens(lrn, tweak="KLM0815"))
    rejected = gw.var / "spool" / "rejected"
    reason = wait_until(lambda: list(rejected.glob("*__conf-2.xml.reason.json")), 10, "the reason file")[0]
    doc = json.loads(reason.read_text())
    assert doc["reason"] == "conflict" and lrn in doc["error"] and "new LRN" in doc["error"], doc
    assert list(rejected.glob("*__conf-2.xml"))
    assert sim.report()[lrn]["registrations"] == 1
    assert gw.state(lrn) == "registered"


def test_submit_api(world: Any) -> None:
    sim, gw = world
    lrn = new_lrn("API")
    status, body = gw.submit(ens(lrn))
    assert status == 202, body
    assert body["lrn"] == lrn and body["created"] is True and body["message_id"]
    assert body["status_url"] == f"/filings/{PARTY}/{lrn}"
    life = gw.wait_state(lrn, "registered")
    assert life["filing"]["mrn"]
    st, got = gw.submit(ens(lrn))                         # idempotent: the same filing
    assert st == 202 and got["created"] is False and got["message_id"] == body["message_id"]
    st, got = gw.submit(ens(lrn, tweak="KLM0815"))        # same key, another payload
    assert st == 409 and got["error"] == "conflict" and lrn in got["message"], got
    bad = fixture("ens-IE3F32-invalid-lrn-eori.xml").replace(b"NLEXP-2405140099-TOO-LONG-REF",
                                                             new_lrn("BADEORI-TOO-LONG-LRN-").encode())
    st, got = gw.submit(bad)
    assert st == 422 and got["error"] == "invalid" and got["findings"], got
    assert all({"rule", "text"} <= set(f) or "text" in f for f in got["findings"])
    st, got = gw.submit(b"<not-xml")
    assert st == 400, got
    from tests.pipeline_harness import http
    st, got = http("GET", f"{gw.api_url}/filings/{PARTY}/NOSUCHLRN")
    assert st == 404
    st, got = http("GET", f"{gw.api_url}/filings?lrn={lrn}")
    assert st == 200 and [f["lrn"] for f in got] == [lrn]
    st, got = http("GET", f"{gw.api_url}/health")
    assert st == 200 and got["status"] == "ok"
    assert sim.report()[lrn]["registrations"] == 1


# ----------------------------------------------------------------------------------------------- retries
def test_retries_with_backoff_keep_the_message_id(world: Any) -> None:
    sim, gw = world
    lrn = new_lrn("RETRY")
    sim.faults(http_503=True)
    try:
        status, body = gw.submit(ens(lrn))
        assert status == 202, body
        message_id = body["message_id"]

        def attempts() -> int:
            life = gw.status(lrn)
            return life["filing"]["attempts"] if life else 0

        wait_until(lambda: attempts() >= 3, 20, "three failed attempts", gw.logs)
        life = gw.status(lrn)
        retries = [e for e in life["events"] if e["event"] == "retry-scheduled"]
        assert len(retries) >= 3 and "503" in (life["filing"]["last_error"] or ""), life["filing"]
        [out] = [m for m in life["messages"] if m["direction"] == "out"]
        assert out["message_id"] == message_id and out["attempts"] >= 3
        assert life["filing"]["state"] in ("queued", "sending")
        # the response is lost once after customs registered it: the resend must be a copy, not a new filing
        sim.faults(http_503=False, drop_response=1)
        gw.wait_state(lrn, "registered", timeout=20)
        # the IE3R01 may arrive while the resend waits: registered first, then the resend gets its receipt
        wait_until(lambda: [m["state"] for m in gw.lifecycle(lrn)["messages"] if m["direction"] == "out"]
                   == ["receipted"], 20, "the resend receipted", gw.logs)
    finally:
        sim.faults(http_503=False, drop_response=0)
    row = sim.report()[lrn]
    assert row["message_ids"] == [message_id], row
    assert row["copies"] >= 2 and row["registrations"] == 1
    life = gw.status(lrn)
    assert [m["message_id"] for m in life["messages"] if m["direction"] == "out"] == [message_id]


def test_a_503_with_retry_after_is_not_retried_before_that(world: Any) -> None:
    """RFC 9110 10.2.3: a 503 that says Retry-After: 4 is a floor for the back-off (which starts well under a
    second here); the wait is journaled with the retry, the next attempt comes after it, and the message goes once
    the TI is back."""
    sim, gw = world
    lrn = new_lrn("RETRYAFTER")
    sim.faults(http_503=True, retry_after=4)
    try:
        status, body = gw.submit(ens(lrn))
        assert status == 202, body

        def events(name: str) -> list[dict[str, Any]]:
            life = gw.status(lrn)
            return [e for e in life["events"] if e["event"] == name] if life else []

        wait_until(lambda: len(events("sending")) >= 2, 30, "a second attempt", gw.logs)
        first_retry = events("retry-scheduled")[0]
        second_send = events("sending")[1]
    finally:
        sim.faults(http_503=False, retry_after=0)
    at = dt.datetime.fromisoformat
    assert first_retry["detail"]["retry_after_seconds"] == 4.0, first_retry
    due = at(first_retry["detail"]["next_attempt"])
    assert due - at(first_retry["at"]) >= dt.timedelta(seconds=3.9), first_retry   # journaled to the millisecond
    assert at(second_send["at"]) >= due - dt.timedelta(milliseconds=1), (first_retry, second_send)
    gw.wait_state(lrn, "registered", timeout=30)
    assert sim.report()[lrn]["registrations"] == 1


def test_permanent_error_fails_fast_with_an_alert(world: Any, tmp_path: Path) -> None:
    """A001 refuses the sender, not the message: no retry, an alert at once, and the endpoint paused with the
    message kept in the queue (tests/test_reliability.py follows the pause through a restart and the resume)."""
    sim, _ = world
    gw = GatewayEnv.create(tmp_path / "gw-unregistered", sim, party_id=UNREGISTERED)
    gw.start()
    try:
        lrn = new_lrn("A001")
        t0 = time.monotonic()
        status, body = gw.submit(ens(lrn))
        assert status == 202, body
        [alert] = alerts_of(gw, "authorisation-refused", lrn=lrn)
        assert time.monotonic() - t0 < 10
        assert "A001" in alert["reason"] and alert["paused"] is True
        life = gw.wait_state(lrn, "queued", timeout=15)
        assert "EBMS:0004/A001" in life["filing"]["last_error"], life["filing"]
        [out] = [m for m in life["messages"] if m["direction"] == "out"]
        assert out["attempts"] == 1 and out["state"] == "queued"
        assert "alert=authorisation-refused" in gw.proc.log.read_text()
        time.sleep(1.0)   # no retry follows
        assert gw.status(lrn)["messages"][0]["attempts"] == 1
        assert lrn not in sim.report()
    finally:
        assert gw.stop() == 0, gw.logs()


# ----------------------------------------------------------------------------------------------- pull mode
def test_pull_mode_with_and_without_ref_to_message_id(world: Any, tmp_path: Path) -> None:
    sim, _ = world
    gw = GatewayEnv.create(tmp_path / "gw-pull", sim, party_id=PULL_PARTY, pull=True, validation="off")
    gw.start()
    try:
        plain, noref = new_lrn("PULL"), new_lrn("NOREF")
        invalid_name = "ens-IE3F10-invalid-office-sci.xml"
        invalid = fixture_lrn(invalid_name) + "P"
        for lrn in (plain, noref):
            assert gw.submit(ens(lrn))[0] == 202
        st, body = gw.submit(fixture(invalid_name).replace(fixture_lrn(invalid_name).encode(), invalid.encode()))
        assert st == 202, body
        for lrn in (plain, noref):
            gw.wait_state(lrn, "registered", timeout=20)
        life = gw.wait_state(invalid, "rejected", timeout=20)   # IE3N99 by the simulator's business validation
        assert "rejected" in trail(life)
        meta = {(m["action"], m["lrn"]): m for m in gw.inbox_metadata()}
        with_ref, without_ref = meta[("IE3R01", plain)], meta[("IE3R01", noref)]
        assert with_ref["channel"] == "pull" and with_ref["ref_to_message_id"] and \
            with_ref["correlated_by"] == "RefToMessageId"
        assert without_ref["channel"] == "pull" and without_ref["ref_to_message_id"] is None and \
            without_ref["correlated_by"] == "LRN" and without_ref["filing"]["lrn"] == noref
        n99 = [m for m in gw.inbox_metadata() if m["action"] == "IE3N99" and m["filing"]
               and m["filing"]["lrn"] == invalid]
        assert n99 and n99[0]["ref_to_message_id"] is None      # [pull] omit_ref_to_message_id = ["IE3N99"]
        report = sim.report()
        for lrn in (plain, noref):
            assert report[lrn]["registrations"] == 1 and report[lrn]["party_id"] == PULL_PARTY
        assert invalid not in report
        wait_until(lambda: all(r["state"] == "acknowledged" for r in sim.outbound()
                               if r["party_id"] == PULL_PARTY), 10, "every pulled message acknowledged")
        assert not gw.cli("journal", "orphans", "--json").stdout.strip()
    finally:
        assert gw.stop() == 0, gw.logs()


# ----------------------------------------------------------------------------------------------- orphans
async def _file_behind_the_gateways_back(gw: GatewayEnv, data: bytes) -> str:
    """Sends a filing as the gateway's party straight to the simulator, without the gateway's journal."""
    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.transport.client import As4Client
    from gateway.transport.config import load_transport_config
    cfg = load_gateway_config(gw.conf)
    engine, tcfg = Engine.from_config(cfg), load_transport_config(cfg)
    ep = tcfg.endpoint("sti")
    msg = engine.user_message(action="IE3F32", payload=data, to_party=Engine.customs_party(ep.party_id))
    from gateway.ebms.engine import OutboundMessage
    client = As4Client(engine, tcfg)
    try:
        outcome = await client.send(ep, OutboundMessage.from_wire(msg.message_id, msg.content_type, msg.body))
    finally:
        await client.close()
    assert type(outcome).__name__ == "ReceiptOk", outcome
    return msg.message_id


def test_orphan_is_kept_and_listed(world: Any) -> None:
    sim, gw = world
    lrn = new_lrn("ORPH")
    asyncio.run(_file_behind_the_gateways_back(gw, ens(lrn)))

    def orphans() -> list[dict[str, Any]]:
        r = gw.cli("journal", "orphans", "--json")
        assert r.returncode == 0, r.stderr
        return [o for o in map(json.loads, r.stdout.splitlines()) if o["message"]["functional_reference"]
                and lrn in (o["reason"] or "") + (o["message"]["functional_reference"] or "")]

    [orphan] = wait_until(orphans, 15, "the orphan to be listed", gw.logs)
    assert orphan["message"]["action"] == "IE3R01" and orphan["message"]["state"] == "orphan"
    assert orphan["resolved"] is None
    [meta] = [m for m in gw.inbox_metadata() if m["message_id"] == orphan["message"]["message_id"]]
    assert meta["filing"] is None and meta["lrn"] == lrn and meta["correlated_by"] == "none"
    alerts_of(gw, "registration-copy", message_id=orphan["message"]["message_id"], category="A")
    # the push was receipted (delivered once), not retried forever
    wait_until(lambda: any(r["action"] == "IE3R01" and r["lrn"] == lrn and r["state"] == "delivered"
                           for r in sim.outbound()), 10, "the push delivered")
    assert lrn not in gw.journal()


# ----------------------------------------------------------------------------------------------- risk outcomes
def test_do_not_load(world: Any) -> None:
    _, gw = world
    lrn = new_lrn("DNL")
    assert gw.submit(ens(lrn))[0] == 202
    life = gw.wait_state(lrn, "do-not-load")
    assert trail(life)[-2:] == ["registered", "do-not-load"]
    assert [r["kind"] for r in life["requests"]] == ["IE3Q01"]
    alerts_of(gw, "do-not-load", lrn=lrn)


def test_information_request_answered_by_ie3r02(world: Any) -> None:
    sim, gw = world
    lrn = new_lrn("RFI")
    assert gw.submit(ens(lrn))[0] == 202
    life = gw.wait_state(lrn, "info-requested")
    mrn = life["filing"]["mrn"]
    [req] = life["requests"]
    assert req["kind"] == "IE3Q02" and req["state"] == "open"
    alerts_of(gw, "information-requested", lrn=lrn)
    st, body = gw.submit(response("IE3R02", mrn))
    assert st == 202 and body["follow_up"] is True, body
    # receipted -> request answered, back to registered; the simulator then completes the assessment (IE3N03)
    life = gw.wait_state(lrn, ("registered", "assessment-complete"))
    life = wait_until(lambda: (lf := gw.lifecycle(lrn)) and lf["requests"][0]["state"] != "open" and lf, 10,
                      "the request closed")
    assert life["requests"][0]["answer_message_id"] == body["message_id"]
    assert "registered" in trail(life)[trail(life).index("info-requested"):]
    assert sim.report()[lrn]["related"][0]["action"] == "IE3R02"


def test_screening_request_answered_by_ie3r03(world: Any) -> None:
    sim, gw = world
    lrn = new_lrn("HRCM")
    assert gw.submit(ens(lrn))[0] == 202
    life = gw.wait_state(lrn, "screening-requested")
    [req] = life["requests"]
    assert req["kind"] == "IE3Q03"
    alerts_of(gw, "screening-requested", lrn=lrn)
    st, body = gw.submit(response("IE3R03", life["filing"]["mrn"]))
    assert st == 202, body
    life = gw.wait_state(lrn, ("registered", "assessment-complete"))
    life = wait_until(lambda: (lf := gw.lifecycle(lrn)) and lf["requests"][0]["state"] != "open" and lf, 10,
                      "the request closed")
    assert "registered" in trail(life)[trail(life).index("screening-requested"):]
    assert sim.report()[lrn]["open_request"] is None


def test_assessment_complete(world: Any) -> None:
    _, gw = world
    lrn = new_lrn("OK")
    assert gw.submit(ens(lrn))[0] == 202
    life = gw.wait_state(lrn, "assessment-complete")
    assert trail(life)[-2:] == ["registered", "assessment-complete"]


def test_amendment_then_ie3n10(world: Any) -> None:
    sim, gw = world
    lrn = new_lrn("AMND")
    life = registered(gw, lrn)
    mrn = life["filing"]["mrn"]
    st, body = gw.submit(amendment(mrn))
    assert st == 202 and body["follow_up"] is True and body["lrn"] == lrn, body
    life = gw.wait_state(lrn, "amended")
    assert trail(life)[-2:] == ["pending-amendment", "amended"]
    [amd] = [m for m in life["messages"] if m["direction"] == "out" and m["action"] == "IE3A32"]
    assert amd["business_outcome"] == "amendment-accepted"
    assert sim.report()[lrn]["related"][0]["action"] == "IE3A32"


def test_scripted_rejection_ie3n99(world: Any) -> None:
    sim, gw = world
    lrn = new_lrn("REJ")
    assert gw.submit(ens(lrn))[0] == 202
    life = gw.wait_state(lrn, "rejected")
    [out] = [m for m in life["messages"] if m["direction"] == "out"]
    assert out["business_outcome"] == "rejected"
    alerts_of(gw, "filing-rejected", lrn=lrn)
    assert lrn not in sim.report()


def test_out_of_order_request_before_registration(world: Any) -> None:
    """The simulator delivers newest first: IE3Q02 before its IE3R01. The filing ends info-requested, and the
    late IE3R01 does not drag it back to registered."""
    sim, gw = world
    lrn = new_lrn("RFI")
    sim.faults(out_of_order=True)
    try:
        assert gw.submit(ens(lrn))[0] == 202
        wait_until(lambda: len([m for m in gw.inbox_metadata() if m["lrn"] == lrn or
                                (m["filing"] or {}).get("lrn") == lrn]) >= 2, 15, "both replies", gw.logs)
    finally:
        sim.faults(out_of_order=False)
    life = gw.wait_state(lrn, "info-requested")
    assert life["filing"]["mrn"] == sim.report()[lrn]["mrn"]
    assert [r["state"] for r in life["requests"]] == ["open"]
