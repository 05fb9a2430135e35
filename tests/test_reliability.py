"""Reception awareness through real outages (issue 11), with the real simulator and the real daemon.

- EBMS:0004/A001 pauses sending for the identity and endpoint, durably (SIGKILL and restart keep the pause), the
  queue stays intact, and `ics2gw endpoint resume` lets it flow again with the same MessageIds.
- The retry time budget: a short configured budget ends a filing in `failed` with a reason that names it, after
  outage alerts; a long one keeps it through an outage until customs is back.
- HTTP 4xx from an endpoint that worked before is retried for the grace period.
- Receipts of pulled messages are durable: a gateway killed (SIGKILL) after journaling a pulled message but before
  the TI acknowledged its Receipt replays the Receipt after the restart, without delivering the message twice.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_harness import (
    PARTY, PULL_PARTY, GatewayEnv, SimEnv, ens, free_port, push_url, wait_until,
)

pytestmark = pytest.mark.slow

UNREGISTERED = "unreg9@NL123456789"    # the seal's EORI (the EORI binding holds); a system the TI does not know
_seq = itertools.count(1)


def new_lrn(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000:03d}{next(_seq):05d}"


def alerts_of(gw: GatewayEnv, kind: str, timeout: float = 15.0, **match: Any) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]]:
        return [a for a in gw.alerts() if a.get("alert") == kind and all(a.get(k) == v for k, v in match.items())]
    return wait_until(found, timeout, f"alert {kind} {match}", gw.logs)


def out_messages(gw: GatewayEnv, lrn: str) -> list[dict[str, Any]]:
    life = gw.lifecycle(lrn)
    return [m for m in life["messages"] if m["direction"] == "out"] if life else []


def endpoints(gw: GatewayEnv) -> dict[str, dict[str, Any]]:
    r = gw.cli("endpoint", "list", "--json")
    assert r.returncode == 0, r.stderr
    return {row["endpoint"]: row for row in map(json.loads, r.stdout.splitlines())}


# ----------------------------------------------------------------------------------------------- A001 pause
def test_a001_pauses_the_endpoint_durably_until_an_operator_resumes_it(tmp_path: Path, pki: Path) -> None:
    sim = SimEnv.create(tmp_path / "sim", [{"party_id": PULL_PARTY, "delivery": "pull"}]).start()
    gw = GatewayEnv.create(tmp_path / "gw", sim, party_id=UNREGISTERED, pull=True)
    try:
        gw.start()
        first, second = new_lrn("PAUSE"), new_lrn("PAUSE")
        st, body = gw.submit(ens(first))
        assert st == 202, body
        first_id = body["message_id"]
        [alert] = alerts_of(gw, "authorisation-refused", lrn=first)
        assert alert["paused"] is True and alert["endpoint"] == "sti" and alert["party_id"] == UNREGISTERED
        assert "A001" in alert["reason"] and "endpoint resume" in alert["reason"]
        life = gw.wait_state(first, "queued")
        assert "EBMS:0004/A001" in life["filing"]["last_error"]
        [msg] = out_messages(gw, first)
        assert msg["state"] == "queued" and msg["attempts"] == 1      # kept in the queue, not failed
        # everything behind it waits too: the next filing is not even tried
        st, body = gw.submit(ens(second))
        assert st == 202, body
        second_id = body["message_id"]
        assert endpoints(gw)["sti"]["paused"] is True
        time.sleep(1.0)   # several claim cycles (idle_poll 0.1 s): nothing may be sent while paused
        assert [m["attempts"] for m in out_messages(gw, second)] == [0]
        assert [m["attempts"] for m in out_messages(gw, first)] == [1]
        # the pause is durable: a SIGKILL and a restart do not lift it
        gw.kill()
        gw.start()
        time.sleep(1.0)
        assert endpoints(gw)["sti"]["paused"] is True
        assert [m["attempts"] for m in out_messages(gw, first) + out_messages(gw, second)] == [1, 0]
        # resuming an endpoint that does not exist, or is not paused, is refused with a reason
        r = gw.cli("endpoint", "resume", "nowhere")
        assert r.returncode == 1 and "no endpoint named 'nowhere'" in r.stderr
        # the registration is fixed at customs; the operator resumes
        sim.stop()
        with sim.conf.open("a") as f:
            seal = (Path(__file__).resolve().parent.parent / "certs" / "out" / "trader-seal.pem")
            f.write(f'\n[[parties]]\nparty_id = "{UNREGISTERED}"\nseal_certs = ["{seal}"]\ndelivery = "pull"\n')
        sim.start()
        r = gw.cli("endpoint", "resume", "sti")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.splitlines()[0])["resumed_by"] == "operator"
        for lrn in (first, second):
            gw.wait_state(lrn, ("registered", "assessment-complete", "info-requested", "screening-requested",
                                "do-not-load"), timeout=30)
        report = sim.report()
        # the same messages went out: same MessageIds, registered once each
        assert report[first]["message_ids"] == [first_id] and report[first]["registrations"] == 1
        assert report[second]["message_ids"] == [second_id] and report[second]["registrations"] == 1
        assert endpoints(gw)["sti"]["paused"] is False
        r = gw.cli("endpoint", "resume", "sti")
        assert r.returncode == 1 and "not paused" in r.stderr
    finally:
        if gw.proc and gw.proc.alive():
            assert gw.stop() == 0, gw.logs()
        sim.stop()


# ----------------------------------------------------------------------------------------------- durable receipts
# The gateway's own puller, sink and journal, killed (SIGKILL, by itself: deterministic) after the sink committed a
# pulled message and its Receipt, and before the acknowledgement lane could POST that Receipt.
_PULL_THEN_DIE = r"""
import asyncio, os, signal, sys
from pathlib import Path
from gateway.config import load_gateway_config
from gateway.ebms.engine import Engine
from gateway.journal.committer import JournalWriter
from gateway.journal.config import read_journal_config
from gateway.journal.sqlite import SqliteJournal
from gateway.pipeline.alerts import Alerts
from gateway.pipeline.config import read_daemon_config
from gateway.pipeline.inbound import InboundProcessor
from gateway.pmode import load_pmodes
from gateway.transport.client import As4Client
from gateway.transport.config import load_transport_config
from gateway.transport.puller import Puller

async def main() -> None:
    cfg = load_gateway_config(Path(sys.argv[1]))
    dcfg, tcfg = read_daemon_config(cfg), load_transport_config(cfg)
    jcfg = read_journal_config(cfg.root.section("journal"))
    engine = Engine.from_config(cfg)
    journal = SqliteJournal.open(jcfg.path)
    reader = SqliteJournal.open_reader(jcfg.path)
    writer = JournalWriter(journal).start()
    sink = InboundProcessor(reader, writer, inbox_dir=dcfg.intake.inbox_dir, status_dir=dcfg.intake.status_dir,
                            limits=engine.limits, alerts=Alerts(dcfg.alerts, cfg.environment))
    client = As4Client(engine, tcfg)
    puller = Puller(engine, client, tcfg.endpoint(tcfg.pull.endpoint), sink, mpc=cfg.mpc,
                    pmodes=load_pmodes(cfg.pmodes_dir, party_id=cfg.identity.party_id))
    for _ in range(50):
        result = await puller.pull_once()   # journaled (committed) before it returns; the Receipt is only queued
        if result.kind == "message":
            print("PULLED", result.message_id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        await asyncio.sleep(0.2)
    print("NOTHING", flush=True)

asyncio.run(main())
"""


def test_pulled_receipt_is_journaled_and_replayed_after_sigkill(tmp_path: Path, pki: Path) -> None:
    import subprocess
    import sys
    sim = SimEnv.create(tmp_path / "sim", [{"party_id": PULL_PARTY, "delivery": "pull"}]).start()
    gw = GatewayEnv.create(tmp_path / "gw", sim, party_id=PULL_PARTY, pull=True, validation="off")
    try:
        gw.start()
        lrn = new_lrn("ACK")
        sim.faults(hold_replies=True)          # the reply waits at customs until the gateway is down
        st, body = gw.submit(ens(lrn))
        assert st == 202, body
        gw.wait_state(lrn, "sent")
        assert gw.stop() == 0, gw.logs()
        # no re-offer within the test: only the gateway's own replay can acknowledge the message now
        sim.faults(hold_replies=False, reoffer_after_seconds=100000)
        r = subprocess.run([sys.executable, "-c", _PULL_THEN_DIE, str(gw.conf)], capture_output=True, text=True,
                           cwd=gw.dir, timeout=120)
        assert r.returncode == -9 and r.stdout.startswith("PULLED "), (r.returncode, r.stdout, r.stderr[-3000:])
        pulled = r.stdout.split()[1]
        [row] = [o for o in sim.outbound() if o["message_id"] == pulled]
        assert row["state"] != "acknowledged", row
        # the journal holds the message with its Receipt pending (durable before anything was acknowledged)
        life = gw.status(lrn)
        [inbound] = [m for m in life["messages"] if m["direction"] == "in" and m["message_id"] == pulled]
        assert inbound["ack_state"] == "pending" and inbound["receipt_bytes"] > 0, inbound
        # restart: the pending Receipt is replayed to the TI, the message is not delivered again
        gw.start()
        wait_until(lambda: any(o["message_id"] == pulled and o["state"] == "acknowledged" for o in sim.outbound()),
                   20, "the replayed receipt acknowledged at customs", gw.logs)
        life = wait_until(lambda: (lf := gw.status(lrn)) and all(
            m["ack_state"] == "acknowledged" for m in lf["messages"] if m["message_id"] == pulled) and lf,
            10, "the journal to record the acknowledgement", gw.logs)
        assert [m["message_id"] for m in life["messages"] if m["direction"] == "in"].count(pulled) == 1
        assert len([m for m in gw.inbox_metadata() if m["message_id"] == pulled]) == 1
        assert life["filing"]["state"] != "sent"                 # the reply was applied (once) before the crash
        assert "ack_replayed" in gw.proc.log.read_text()
    finally:
        if gw.proc and gw.proc.alive():
            assert gw.stop() == 0, gw.logs()
        sim.stop()


# ----------------------------------------------------------------------------------------------- retry budget
def test_retry_budget_alerts_while_waiting_then_fails_and_recovery_is_reported(tmp_path: Path, pki: Path) -> None:
    """A short configured budget (the default is 12 h: tests/test_pipeline_policies.py replays it on a virtual
    clock): outage alert while the filing waits, `failed` with a reason naming the budget when it is spent, and
    after an operator resend, the same MessageId registered and the recovery reported."""
    inbound = free_port(dual=True)
    sim = SimEnv.create(tmp_path / "sim", [{"party_id": PARTY, "push_url": push_url(inbound)}]).start()
    gw = GatewayEnv.create(tmp_path / "gw", sim, inbound_port=inbound,
                           retry={"budget_seconds": 3, "max_attempts": 0, "initial_seconds": 0.2, "max_seconds": 0.5,
                                  "outage_alert_after_seconds": 0.3, "outage_alert_every_seconds": 1000})
    try:
        gw.start()
        lrn = new_lrn("BUDGET")
        sim.faults(http_503=True)
        st, body = gw.submit(ens(lrn))
        assert st == 202, body
        life = gw.wait_state(lrn, "failed", timeout=30)
        err = life["filing"]["last_error"]
        assert "retry budget of 3.0 s spent" in err and "503" in err, err
        [out] = [m for m in life["messages"] if m["direction"] == "out"]
        assert out["attempts"] >= 3 and out["state"] == "failed"
        [outage] = alerts_of(gw, "endpoint-outage", endpoint="sti")     # once, not once per attempt
        assert outage["failing_since"] and "503" in outage["reason"]
        [failed] = alerts_of(gw, "send-failed", lrn=lrn)
        assert "budget" in failed["reason"]
        assert endpoints(gw)["sti"]["failing_since"]
        sim.faults(http_503=False)
        r = gw.cli("resend", lrn)
        assert r.returncode == 0, r.stderr
        gw.wait_state(lrn, ("registered", "assessment-complete", "info-requested", "screening-requested",
                            "do-not-load"), timeout=20)
        alerts_of(gw, "endpoint-recovered", endpoint="sti")
        assert sim.report()[lrn]["message_ids"] == [body["message_id"]]
        assert endpoints(gw)["sti"]["failing_since"] is None and endpoints(gw)["sti"]["last_ok_at"]
    finally:
        if gw.proc and gw.proc.alive():
            assert gw.stop() == 0, gw.logs()
        sim.stop()


# ----------------------------------------------------------------------------------------------- customs speaks
# One simulator and one push gateway for the tests below; customs messages the simulator cannot be made to send
# (a newer action, an old agreement, a copy for goods we did not file, a rejection of our answer) are pushed to the
# daemon's real inbound server by a customs engine with the customs seal and TLS client certificate of the PKI.
@pytest.fixture(scope="module")
def push_world(tmp_path_factory: pytest.TempPathFactory, pki: Path):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("reliab")
    inbound = free_port(dual=True)
    sim = SimEnv.create(base / "sim", [{"party_id": PARTY, "push_url": push_url(inbound)}]).start()
    gw = GatewayEnv.create(base / "gw", sim, inbound_port=inbound)
    try:
        gw.start()
    except BaseException:
        sim.stop()
        raise
    yield sim, gw
    code = gw.stop()
    sim.stop()
    assert code == 0, gw.logs()


def customs_push(gw: GatewayEnv, pki: Path, action: str, payload: bytes, **headers: Any) -> Any:
    """Pushes one c2t message as customs would (sealed by the customs key, over 2-way TLS); the typed outcome."""
    import asyncio
    import dataclasses

    from gateway.config import load_gateway_config
    from gateway.ebms.constants import SERVICE_C2T
    from gateway.ebms.engine import Engine
    from gateway.security.keys import load_identity_files
    from gateway.security.trust import TrustStore
    from gateway.transport.client import As4Client
    from gateway.transport.config import KeyMaterial, load_transport_config

    tcfg = load_transport_config(load_gateway_config(gw.conf))
    customs = Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"),
                     TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"]),
                     party_id="sti-taxud", fqdn="sti.customs.test", role="Customs")
    tls = dataclasses.replace(tcfg.tls, client=KeyMaterial(cert=pki / "customs-tls-client.pem",
                                                           key=pki / "customs-tls-client.key"),
                              ca_bundle=(pki / "trader-root.pem",))
    ccfg = dataclasses.replace(tcfg, tls=tls)
    ep = dataclasses.replace(tcfg.endpoint("sti"), url=gw.push_url)
    msg = customs.user_message(action=action, payload=payload, to_party=Engine.trader_party(gw.party_id),
                               service=SERVICE_C2T, **headers)

    async def go() -> Any:
        async with As4Client(customs, ccfg) as client:
            return await client.send(ep, msg)

    return msg.message_id, asyncio.run(go())


def _payload(action: str, **kw: Any) -> bytes:
    import datetime as dt

    from gateway.simulator import replies
    now = dt.datetime.now(dt.timezone.utc)
    ctx = replies.Context(declarant=PARTY)
    if action == "IE3R01":
        return replies.ie3r01(lrn=kw["lrn"], mrn=kw["mrn"], ctx=ctx, now=now)
    if action == "IE3Q01":
        return replies.ie3q01(mrn=kw["mrn"], ctx=ctx, now=now)
    if action == "IE3N01":
        return replies.ie3n01(functional_reference=kw["mrn"], ctx=ctx, now=now,
                              errors=[replies.ErrorItem("CL0002", "answer not accepted", "/IE3R02")])
    # a message id our catalogue does not know yet: shaped like the others
    return replies.ie3n03(mrn=kw["mrn"], ctx=ctx, now=now).replace(b"IE3N03", action.encode())


def test_tolerated_headers_are_delivered_alerted_and_visible(push_world: Any, pki: Path) -> None:
    sim, gw = push_world
    lrn = new_lrn("TOL")
    sim.faults(hold_replies=True)   # the simulator's own IE3R01 waits: ours, with old headers, registers the ENS
    try:
        st, body = gw.submit(ens(lrn))
        assert st == 202, body
        gw.wait_state(lrn, "sent")
        mrn = "26NLTOLERATED0000" + str(next(_seq) % 10)
        # ICD Annex 6 sample shape: the previous agreement version, and no @type
        mid, out = customs_push(gw, pki, "IE3R01", _payload("IE3R01", lrn=lrn, mrn=mrn),
                                agreement="EU-ICS2-TI-V1.0", agreement_type=None, ref_to_message_id=body["message_id"])
        assert type(out).__name__ == "ReceiptOk", out
        life = gw.wait_state(lrn, "registered")
        assert life["filing"]["mrn"] == mrn
        [meta] = [m for m in gw.inbox_metadata() if m["message_id"] == mid]
        assert any(t.startswith("AgreementRef:") for t in meta["pmode_tolerated"]), meta
        assert any(t.startswith("AgreementRef/@type:") for t in meta["pmode_tolerated"]), meta
        [alert] = alerts_of(gw, "pmode-tolerated", message_id=mid)
        assert "EU-ICS2-TI-V1.0" in alert["deviations"]
        # a message id of a newer catalogue: delivered (kept, listed), never refused
        mid2, out = customs_push(gw, pki, "IE3X77", _payload("IE3X77", mrn=mrn))
        assert type(out).__name__ == "ReceiptOk", out
        [meta] = [m for m in gw.inbox_metadata() if m["message_id"] == mid2]
        assert meta["action"] == "IE3X77" and any(t.startswith("Action:") for t in meta["pmode_tolerated"])
        alerts_of(gw, "pmode-tolerated", message_id=mid2)
        # kept visible: with the filing, or (a payload our inspection cannot read) as an orphan to resolve
        assert mid2 in gw.cli("status", lrn, "--json").stdout + gw.cli("journal", "orphans", "--json").stdout
        # what is not an ICS2 message at all is still refused (and not delivered)
        mid3, out = customs_push(gw, pki, "NOT-ICS2", _payload("IE3X77", mrn=mrn))
        assert type(out).__name__ == "EbmsErrorOutcome" and out.code == "EBMS:0001", out
        assert not [m for m in gw.inbox_metadata() if m["message_id"] == mid3]
    finally:
        sim.faults(hold_replies=False)


def test_unmatched_customs_messages_raise_the_alert_of_their_action(push_world: Any, pki: Path) -> None:
    _, gw = push_world
    mrn = "26NLNOTOURS00000" + str(next(_seq) % 100).zfill(2)
    mid, out = customs_push(gw, pki, "IE3Q01", _payload("IE3Q01", mrn=mrn))
    assert type(out).__name__ == "ReceiptOk", out
    [alert] = alerts_of(gw, "do-not-load", message_id=mid)
    assert alert["category"] == "A" and alert["unmatched"] is True and alert["mrn"] == mrn
    lrn = new_lrn("COPY")
    mid2, out = customs_push(gw, pki, "IE3R01", _payload("IE3R01", lrn=lrn, mrn=mrn + "X"))
    assert type(out).__name__ == "ReceiptOk", out
    [alert] = alerts_of(gw, "registration-copy", message_id=mid2)
    assert alert["category"] == "A" and alert["lrn"] == lrn
    assert not [a for a in gw.alerts() if a.get("alert") == "orphan" and a.get("message_id") in (mid, mid2)]
    # kept as orphans all the same, for the operator to resolve
    r = gw.cli("journal", "orphans", "--json")
    listed = {json.loads(line)["message"]["message_id"] for line in r.stdout.splitlines()}
    assert {mid, mid2} <= listed


def test_rejected_answer_reopens_the_request_and_restores_the_state(push_world: Any, pki: Path) -> None:
    from tests.pipeline_harness import response
    sim, gw = push_world
    lrn = new_lrn("RFI")                      # the simulator asks for information (IE3Q02) on RFI* filings
    st, body = gw.submit(ens(lrn))
    assert st == 202, body
    life = gw.wait_state(lrn, "info-requested")
    mrn = life["filing"]["mrn"]
    [req] = life["requests"]
    sim.faults(hold_replies=True)             # customs' own answer to our IE3R02 waits; ours below comes first
    try:
        st, body = gw.submit(response("IE3R02", mrn))
        assert st == 202 and body["follow_up"], body
        answer_id = body["message_id"]
        life = wait_until(lambda: (lf := gw.lifecycle(lrn)) and lf["requests"][0]["state"] == "answered" and lf,
                          20, "the IE3R02 receipted and the request answered", gw.logs)
        assert life["filing"]["state"] == "registered"
        mid, out = customs_push(gw, pki, "IE3N01", _payload("IE3N01", mrn=mrn), ref_to_message_id=answer_id)
        assert type(out).__name__ == "ReceiptOk", out
        life = gw.wait_state(lrn, "info-requested")
        [again] = life["requests"]
        assert again["id"] == req["id"] and again["state"] == "open" and again["answer_message_id"] is None
        assert again["opened_at"] > req["opened_at"]              # its timer restarted
        [alert] = alerts_of(gw, "follow-up-rejected", message_id=mid)
        assert alert["reopened_request"] == "IE3Q02"
        [ans] = [m for m in life["messages"] if m["message_id"] == answer_id]
        assert ans["business_outcome"] == "rejected"
    finally:
        sim.faults(hold_replies=False)


def test_consultation_of_an_ens_the_journal_does_not_know(push_world: Any, pki: Path) -> None:
    """IE3Q05 for an ENS filed elsewhere (ICD 3.1.9): accepted without a filing, sent, and its IE3R08 correlated by
    RefToMessageId to the request, not left as an orphan."""
    import asyncio

    from gateway.journal.sqlite import SqliteJournal
    from tests.test_pipeline_e2e import _file_behind_the_gateways_back
    _, gw = push_world
    lrn = new_lrn("ELSE")
    asyncio.run(_file_behind_the_gateways_back(gw, ens(lrn)))   # registered at customs, unknown to our journal
    copy = wait_until(lambda: [m for m in gw.inbox_metadata() if m["action"] == "IE3R01" and m["lrn"] == lrn],
                      20, "the IE3R01 of the ENS filed elsewhere", gw.logs)[0]
    mrn = copy["mrn"]
    assert copy["filing"] is None and mrn
    q05 = (f'<?xml version="1.0" encoding="UTF-8"?><IE3Q05 xmlns="urn:wco:datamodel:eu:ics2:2"><MRN>{mrn}</MRN>'
           f'<declarant><identificationNumber>{PARTY}</identificationNumber></declarant></IE3Q05>').encode()
    st, body = gw.submit(q05)
    assert st == 202 and body["consultation"] is True and body["mrn"] == mrn and body["status_url"] is None, body
    assert gw.submit(q05)[1]["created"] is False                     # idempotent, like every intake
    r08 = wait_until(lambda: [m for m in gw.inbox_metadata() if m["action"] == "IE3R08"
                              and m["ref_to_message_id"] == body["message_id"]], 20, "the IE3R08", gw.logs)[0]
    assert r08["correlated_by"] == "RefToMessageId" and r08["filing"] is None
    assert r08["consultation"] == {"request_message_id": body["message_id"], "action": "IE3Q05"}
    orphans = gw.cli("journal", "orphans", "--json").stdout
    assert r08["message_id"] not in orphans
    j = SqliteJournal.open_reader(gw.var / "journal.sqlite3")
    try:
        sent = j.get_message(body["message_id"])
        assert sent.state == "receipted" and sent.business_outcome == "answered" and sent.filing_id is None
        got = j.get_message(r08["message_id"], direction="in")
        assert got.state == "processed" and got.business_outcome == "answered"
    finally:
        j.close()


# ----------------------------------------------------------------------------------------------- 4xx grace
class MaintenanceProxy:
    """A TLS reverse proxy in front of the simulator (the customs TLS server certificate; the trader's TLS client
    certificate towards the simulator), which can be switched to answer every request with a 403 maintenance
    page, as a reverse proxy in front of a TI does during maintenance."""

    def __init__(self, pki: Path, upstream: str) -> None:
        self.pki, self.upstream = pki, upstream
        self.maintenance = False
        self.port = free_port()
        self.answered: list[int] = []

    def start(self) -> MaintenanceProxy:
        import asyncio
        import ssl
        import threading

        from aiohttp import ClientSession, TCPConnector, web

        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(self.pki / "customs-tls-server.pem", self.pki / "customs-tls-server.key")
        client_ctx = ssl.create_default_context(cafile=str(self.pki / "customs-root.pem"))
        client_ctx.load_cert_chain(self.pki / "trader-tls-client.pem", self.pki / "trader-tls-client.key")
        client_ctx.load_verify_locations(self.pki / "trader-root.pem")
        ready = threading.Event()

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            if self.maintenance:
                self.answered.append(403)
                return web.Response(status=403, text="<html><body>Scheduled maintenance</body></html>",
                                    content_type="text/html")
            async with ClientSession(connector=TCPConnector(ssl=client_ctx)) as s:
                async with s.post(self.upstream, data=body,
                                  headers={"Content-Type": request.headers.get("Content-Type", "")}) as r:
                    data = await r.read()
                    self.answered.append(r.status)
                    return web.Response(status=r.status, body=data,
                                        headers={"Content-Type": r.headers.get("Content-Type", "text/plain")})

        async def main() -> None:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/ics2/sti", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=server_ctx).start()
            self._stop = asyncio.Event()
            ready.set()
            await self._stop.wait()
            await runner.cleanup()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(main())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "the proxy did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/ics2/sti"


def test_4xx_from_an_endpoint_that_worked_is_retried_for_the_grace_period(tmp_path: Path, pki: Path) -> None:
    inbound = free_port(dual=True)
    sim = SimEnv.create(tmp_path / "sim", [{"party_id": PARTY, "push_url": push_url(inbound)}]).start()
    proxy = MaintenanceProxy(pki, sim.sti_url).start()
    gw = GatewayEnv.create(tmp_path / "gw", sim, inbound_port=inbound,
                           retry={"http_4xx_grace_seconds": 600, "max_attempts": 0, "initial_seconds": 0.2,
                                  "max_seconds": 0.5})
    gw.conf.write_text(gw.conf.read_text().replace(sim.sti_url, proxy.url))
    try:
        gw.start()
        healthy = new_lrn("GRACE")
        assert gw.submit(ens(healthy))[0] == 202
        gw.wait_state(healthy, ("registered", "assessment-complete", "info-requested", "screening-requested",
                                "do-not-load"), timeout=20)
        assert endpoints(gw)["sti"]["last_ok_at"]
        proxy.maintenance = True
        lrn = new_lrn("GRACE")
        st, body = gw.submit(ens(lrn))
        assert st == 202, body

        def retried() -> dict[str, Any] | None:
            life = gw.lifecycle(lrn)
            out = [m for m in life["messages"] if m["direction"] == "out"] if life else []
            return life if out and out[0]["attempts"] >= 3 else None

        life = wait_until(retried, 30, "three attempts against the maintenance page", gw.logs)
        assert life["filing"]["state"] in ("queued", "sending"), life["filing"]
        assert "403" in life["filing"]["last_error"] and "grace period" in life["filing"]["last_error"]
        assert not [a for a in gw.alerts() if a.get("alert") == "send-failed" and a.get("lrn") == lrn]
        proxy.maintenance = False
        gw.wait_state(lrn, ("registered", "assessment-complete", "info-requested", "screening-requested",
                            "do-not-load"), timeout=20)
        assert sim.report()[lrn]["message_ids"] == [body["message_id"]]
        assert 403 in proxy.answered
    finally:
        if gw.proc and gw.proc.alive():
            assert gw.stop() == 0, gw.logs()
        proxy.stop()
        sim.stop()


def test_consultation_answers_pulled_without_ref_to_message_id(tmp_path: Path, pki: Path) -> None:
    """STI-like pull: no RefToMessageId on pulled messages (ICD 4.1.3.3). The IE3R08 still finds the IE3Q05 it
    answers, by the MRN it concerns: for an ENS of ours (kept with the filing) and for one filed elsewhere."""
    import asyncio

    from gateway.journal.sqlite import SqliteJournal
    from tests.test_pipeline_e2e import _file_behind_the_gateways_back
    sim = SimEnv.create(tmp_path / "sim", [{"party_id": PULL_PARTY, "delivery": "pull"}], omit_ref=["*"]).start()
    gw = GatewayEnv.create(tmp_path / "gw", sim, party_id=PULL_PARTY, pull=True, validation="off")
    try:
        gw.start()
        ours, elsewhere = new_lrn("OK"), new_lrn("ELSE")
        assert gw.submit(ens(ours))[0] == 202
        mine = gw.wait_state(ours, ("registered", "assessment-complete"), timeout=30)["filing"]["mrn"]
        asyncio.run(_file_behind_the_gateways_back(gw, ens(elsewhere)))
        other = wait_until(lambda: [m for m in gw.inbox_metadata() if m["action"] == "IE3R01" and
                                    m["lrn"] == elsewhere], 30, "the IE3R01 of the ENS filed elsewhere",
                           gw.logs)[0]["mrn"]
        sent = {}
        for mrn in (mine, other):
            q05 = (f'<?xml version="1.0" encoding="UTF-8"?><IE3Q05 xmlns="urn:wco:datamodel:eu:ics2:2">'
                   f'<MRN>{mrn}</MRN><declarant><identificationNumber>{PARTY}</identificationNumber></declarant>'
                   f'</IE3Q05>').encode()
            st, body = gw.submit(q05)
            assert st == 202, body
            sent[mrn] = body["message_id"]
        r08 = wait_until(lambda: {m["mrn"]: m for m in gw.inbox_metadata() if m["action"] == "IE3R08"}
                         if len([m for m in gw.inbox_metadata() if m["action"] == "IE3R08"]) >= 2 else None,
                         30, "both IE3R08", gw.logs)
        for mrn in (mine, other):
            assert r08[mrn]["ref_to_message_id"] is None and r08[mrn]["correlated_by"] == "request-reference"
        assert r08[mine]["filing"]["lrn"] == ours
        assert r08[other]["filing"] is None
        assert r08[other]["consultation"] == {"request_message_id": sent[other], "action": "IE3Q05"}
        orphans = gw.cli("journal", "orphans", "--json").stdout
        assert r08[mine]["message_id"] not in orphans and r08[other]["message_id"] not in orphans
        j = SqliteJournal.open_reader(gw.var / "journal.sqlite3")
        try:
            assert [j.get_message(sent[m]).business_outcome for m in (mine, other)] == ["answered", "answered"]
        finally:
            j.close()
    finally:
        if gw.proc and gw.proc.alive():
            assert gw.stop() == 0, gw.logs()
        sim.stop()
