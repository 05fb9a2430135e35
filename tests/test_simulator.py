"""The customs TI simulator in-process, over real 2-way TLS on 127.0.0.1 ephemeral ports.

A small trader-side test receiver (Engine in the Trader role, trader TLS server certificate, customs client
certificates required) stands in for the gateway's inbound server, so pushed replies are verified end to end.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from lxml import etree

from gateway import cli
from gateway.conformance.unsafe import Recipe, build_message, xml_part
from gateway.ebms.constants import MPC_PREFIX, NS_EB, PARTY_TYPE_EORI, ROLE_TRADER
from gateway.ebms.engine import Engine, InboundMessage
from gateway.ebms.errors import EbmsFault, find_sub_code
from gateway.ebms.model import ErrorSignal, Party
from gateway.ics2 import formats
from gateway.ics2.inspect import inspect_payload
from gateway.ics2.validate import validate_payload
from gateway.security.keys import load_identity_files
from gateway.security.trust import TrustStore
from gateway.simulator.app import Simulator
from gateway.simulator.business import mrn_check_digit
from gateway.simulator.config import load_simulator_config
from gateway.transport.config import KeyMaterial
from gateway.transport.tls import build_client_context, build_server_context

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ics2"
PULL_PARTY = "system1@NL123456789"


def ens(lrn: str, action: str = "IE3F32") -> bytes:
    data = (FIXTURES / "ens-IE3F32-express.xml").read_bytes()
    return data.replace(b"NLEXP2405140003", lrn.encode())


# ------------------------------------------------------------------------------------------------ fixtures
class Receiver:
    """The trader's inbound server: verifies customs messages with the Trader-role engine, answers receipts."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.got: list[InboundMessage] = []
        self.event = asyncio.Event()
        self.fail_next = 0      # answer HTTP 503 to the next n pushes
        self.calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503)
        try:
            msg = self.engine.open(request.headers["Content-Type"], body)
        except EbmsFault as exc:
            out = self.engine.error_signal(exc)
            return web.Response(body=out.body, content_type=None, headers={"Content-Type": out.content_type})
        self.got.append(msg)
        self.event.set()
        r = self.engine.receipt_for(msg)
        return web.Response(body=r.body, headers={"Content-Type": r.content_type})

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[InboundMessage]:
        async def _wait() -> None:
            while len(self.got) < n:
                self.event.clear()
                await self.event.wait()
        await asyncio.wait_for(_wait(), timeout)
        return self.got


@pytest.fixture(scope="module")
def trader_engine(pki: Path) -> Engine:
    return Engine(load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem"),
                  TrustStore.from_files([pki / "customs-root.pem"], [pki / "customs-root.crl.pem"],
                                        [pki / "customs-seal.pem"]),
                  party_id="NL123456789", fqdn="ap.trader.test")


@pytest.fixture
def pull_engine(pki: Path, trader_engine: Engine) -> Engine:
    return Engine(trader_engine.identity, trader_engine.trust, party_id=PULL_PARTY, fqdn="ap.trader.test")


@pytest.fixture
async def receiver(pki: Path, trader_engine: Engine):  # type: ignore[no-untyped-def]
    rec = Receiver(trader_engine)
    app = web.Application()
    app.router.add_post("/ics2/inbound", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = build_server_context(server=KeyMaterial(cert=pki / "trader-tls-server.pem", key=pki / "trader-tls-server.key"),
                               client_ca=[pki / "customs-root.pem"])
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    rec.url = f"https://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/ics2/inbound"  # type: ignore[attr-defined,union-attr]
    yield rec
    await runner.cleanup()


def write_conf(tmp_path: Path, pki: Path, push_url: str, extra: str = "") -> Path:
    p = lambda name: json.dumps(str(pki / name))  # noqa: E731
    text = f"""
[seal]
key = {p("customs-seal.key")}
chain = {p("customs-chain.pem")}
[trust]
anchors = [{p("trader-root.pem")}]
crls = [{p("trader-int.crl.pem")}, {p("trader-root.crl.pem")}]
[server]
listen = ["127.0.0.1"]
port = 0
cert = {p("customs-tls-server.pem")}
key = {p("customs-tls-server.key")}
client_ca = {p("trader-ca-bundle.pem")}
[admin]
port = 0
[registry]
path = {json.dumps(str(tmp_path / "sim.sqlite"))}
[push]
client_cert = {p("customs-tls-client.pem")}
client_key = {p("customs-tls-client.key")}
server_ca = {p("trader-ca-bundle.pem")}
timeout_seconds = 5
max_attempts = 5
[[parties]]
party_id = "NL123456789"
seal_certs = [{p("trader-seal.pem")}]
delivery = "push"
push_url = "{push_url}"
[[parties]]
party_id = "{PULL_PARTY}"
seal_certs = [{p("trader-seal.pem")}]
delivery = "pull"
[[rules]]
lrn = "^DNL"
risk = ["IE3Q01"]
[[rules]]
lrn = "^RFI"
risk = ["IE3Q02"]
[faults]
reply_delay_seconds = 0.02
push_retry_seconds = 0.1
{extra}
"""
    path = tmp_path / "simulator.toml"
    path.write_text(text)
    return path


@pytest.fixture
async def sim(tmp_path: Path, pki: Path, receiver: Receiver):  # type: ignore[no-untyped-def]
    conf = write_conf(tmp_path, pki, receiver.url)
    s = Simulator(load_simulator_config(conf))
    s.conf_path = conf  # type: ignore[attr-defined]
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def client(pki: Path):  # type: ignore[no-untyped-def]
    ctx = build_client_context(ca_files=[pki / "customs-root.pem"],
                               client=KeyMaterial(cert=pki / "trader-tls-client.pem", key=pki / "trader-tls-client.key"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, force_close=True)) as session:
        yield session


async def post(client: aiohttp.ClientSession, sim: Simulator, content_type: str, body: bytes) -> tuple[int, str, bytes]:
    async with client.post(sim.sti_url, data=body, headers={"Content-Type": content_type}) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def admin(sim: Simulator, **knobs: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{sim.admin_url}/faults", json=knobs) as r:
            assert r.status == 200, await r.text()
            return await r.json()


def error_of(engine: Engine, ctype: str, body: bytes) -> ErrorSignal:
    """The error signal of an answer, in either form (STI: unsigned SOAP Fault; lenient: signed)."""
    msg = engine.open(ctype, body, accept_unsigned_errors=True)
    assert msg.kind == "error", msg.kind
    return msg.messaging.signals[0]  # type: ignore[return-value]


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------------------ unit
def test_mrn_shape_and_check_digit() -> None:
    from gateway.simulator.business import new_mrn
    import datetime as dt
    mrn = new_mrn("NL", dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc))
    assert len(mrn) == 18 and mrn.startswith("26NL") and formats.MRN.match(mrn)
    assert mrn[-1] == mrn_check_digit(mrn[:17])
    # ISO 6346 reference: CSQU305438 has check digit 3
    assert mrn_check_digit("CSQU305438") == "3"


def test_reply_payloads_validate() -> None:
    import datetime as dt
    from gateway.simulator import replies
    ctx = replies.Context(declarant="NL123456789", office_of_first_entry="NL000854")
    now = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
    mrn = "26NLABCDEFGHIJKLM5"
    payloads = {
        "IE3R01": replies.ie3r01(lrn="LRN-1", mrn=mrn, ctx=ctx, now=now),
        "IE3N99": replies.ie3n99(functional_reference="LRN-1", errors=[replies.ErrorItem("12", "bad", "/IE3F32/LRN")],
                                 ctx=ctx, now=now),
        "IE3N01": replies.ie3n01(functional_reference=mrn, errors=[replies.ErrorItem("L1", "x", "/")], ctx=ctx, now=now),
        "IE3N10": replies.ie3n10(mrn=mrn, lrn="LRN-1", ctx=ctx, now=now),
        "IE3R07": replies.ie3r07(mrn=mrn, ctx=ctx, now=now),
        "IE3R04": replies.ie3r04(lrn="ARR-1", mrns=[mrn], ctx=ctx, now=now),
        "IE3N08": replies.ie3n08(mrn=mrn, ctx=ctx, now=now),
        "IE3Q01": replies.ie3q01(mrn=mrn, ctx=ctx, now=now),
        "IE3Q02": replies.ie3q02(mrn=mrn, ctx=ctx, now=now, reference="RFI-1", response_type="1"),
        "IE3Q03": replies.ie3q03(mrn=mrn, ctx=ctx, now=now, reference="HRCM-1"),
        "IE3N03": replies.ie3n03(mrn=mrn, ctx=ctx, now=now),
    }
    for action, data in payloads.items():
        report = validate_payload(data, action=action)
        assert report.valid, (action, [e.as_dict() for e in report.errors])
        facts = inspect_payload(data)
        assert facts.message_id == action and facts.declarant_eori == "NL123456789"
    assert inspect_payload(payloads["IE3N99"]).functional_reference == "LRN-1"
    assert inspect_payload(payloads["IE3R01"]).lrn == "LRN-1"


# ------------------------------------------------------------------------------------------------ push
async def test_filing_receipt_then_ie3r01_pushed(sim: Simulator, client: aiohttp.ClientSession,
                                                 trader_engine: Engine, receiver: Receiver) -> None:
    sent = trader_engine.user_message(action="IE3F32", payload=ens("LRN-PUSH-1"), to_party=Engine.customs_party())
    status, ctype, body = await post(client, sim, sent.content_type, sent.body)
    assert status == 200
    trader_engine.check_receipt(trader_engine.open(ctype, body), sent)
    got = await receiver.wait_for(1)
    um = got[0].messaging.user_message
    assert um is not None and um.action == "IE3R01" and um.service == "eu_ics2_c2t"
    assert um.ref_to_message_id == sent.message_id and um.from_party.party_id == "sti-taxud"
    assert um.to_party.party_id == "NL123456789" and um.mpc is None
    facts = inspect_payload(got[0].payloads[0].data(trader_engine.limits))
    assert facts.lrn == "LRN-PUSH-1" and facts.mrn and formats.MRN.match(facts.mrn)
    await until(lambda: sim.registry.outbound_list()[0]["state"] == "delivered")
    [row] = sim.registry.report()
    assert row["lrn"] == "LRN-PUSH-1" and row["mrn"] == facts.mrn and row["action"] == "IE3F32"
    assert row["message_ids"] == [sent.message_id] and row["copies"] == 1 and row["registrations"] == 1


async def test_duplicate_message_id_is_a_copy_not_a_registration(sim: Simulator, client: aiohttp.ClientSession,
                                                                 trader_engine: Engine, receiver: Receiver) -> None:
    sent = trader_engine.user_message(action="IE3F32", payload=ens("LRN-DUP-1"), to_party=Engine.customs_party())
    for _ in range(3):
        status, ctype, body = await post(client, sim, sent.content_type, sent.body)
        assert status == 200
        trader_engine.check_receipt(trader_engine.open(ctype, body), sent)
    await receiver.wait_for(1)
    await asyncio.sleep(0.2)
    assert len(receiver.got) == 1
    [row] = sim.registry.report()
    assert row["message_ids"] == [sent.message_id] and row["copies"] == 3 and row["registrations"] == 1
    # a NEW MessageId for the same LRN: the STI answers IE3N01 (key data not unique) and registers nothing
    again = trader_engine.user_message(action="IE3F32", payload=ens("LRN-DUP-1"), to_party=Engine.customs_party())
    assert (await post(client, sim, again.content_type, again.body))[0] == 200
    got = await receiver.wait_for(2)
    um = got[1].messaging.user_message
    assert um is not None and um.action == "IE3N01" and um.ref_to_message_id == again.message_id
    facts = inspect_payload(got[1].payloads[0].data(trader_engine.limits))
    assert facts.functional_reference == "LRN-DUP-1"
    [row] = sim.registry.report()
    assert row["registrations"] == 1 and row["message_ids"] == [sent.message_id] and len(row["mrns"]) == 1
    assert [(r["message_id"], r["outcome"]) for r in row["related"]] == [
        (again.message_id, "rejected (IE3N01): LRN already registered")]
    assert [r["action"] for r in row["replies"]] == ["IE3R01", "IE3N01"]


async def test_duplicate_lrn_registered_again_when_lenient(tmp_path: Path, pki: Path, client: aiohttp.ClientSession,
                                                           trader_engine: Engine, receiver: Receiver) -> None:
    """``[business] duplicate_lrn = "register"``: the defective TI the report is there to expose."""
    conf = write_conf(tmp_path, pki, receiver.url, '[business]\nduplicate_lrn = "register"')
    async with Simulator(load_simulator_config(conf)) as sim:
        for _ in range(2):
            m = trader_engine.user_message(action="IE3F32", payload=ens("LRN-DUP-2"), to_party=Engine.customs_party())
            assert (await post(client, sim, m.content_type, m.body))[0] == 200
        [row] = sim.registry.report()
        assert row["registrations"] == 2 and len(row["message_ids"]) == 2 and len(row["mrns"]) == 2


async def test_risk_rule_and_invalid_payload(sim: Simulator, client: aiohttp.ClientSession, trader_engine: Engine,
                                             receiver: Receiver) -> None:
    dnl = trader_engine.user_message(action="IE3F32", payload=ens("DNL-1"), to_party=Engine.customs_party())
    await post(client, sim, dnl.content_type, dnl.body)
    got = await receiver.wait_for(2)
    assert [m.messaging.user_message.action for m in got] == ["IE3R01", "IE3Q01"]  # type: ignore[union-attr]
    mrn = inspect_payload(got[0].payloads[0].data(trader_engine.limits)).mrn
    assert inspect_payload(got[1].payloads[0].data(trader_engine.limits)).mrn == mrn
    bad = (FIXTURES / "ens-IE3F32-invalid-lrn-eori.xml").read_bytes()
    sent = trader_engine.user_message(action="IE3F32", payload=bad, to_party=Engine.customs_party())
    await post(client, sim, sent.content_type, sent.body)
    got = await receiver.wait_for(3)
    um = got[2].messaging.user_message
    assert um is not None and um.action == "IE3N99" and um.ref_to_message_id == sent.message_id
    root = etree.fromstring(got[2].payloads[0].data(trader_engine.limits))
    ns = {"n": "urn:wco:datamodel:eu:ics2:2"}
    assert root.find("n:functionalReference", ns) is not None
    errs = root.findall("n:error", ns)
    assert errs and all(e.find("n:pointer", ns) is not None and e.find("n:validationCode", ns) is not None
                        and e.find("n:description", ns) is not None for e in errs)


async def test_info_request_answered_by_ie3r02(sim: Simulator, client: aiohttp.ClientSession,
                                               trader_engine: Engine, receiver: Receiver) -> None:
    f = trader_engine.user_message(action="IE3F32", payload=ens("RFI-1"), to_party=Engine.customs_party())
    await post(client, sim, f.content_type, f.body)
    got = await receiver.wait_for(2)
    assert got[1].messaging.user_message.action == "IE3Q02"  # type: ignore[union-attr]
    mrn = inspect_payload(got[0].payloads[0].data(trader_engine.limits)).mrn
    r02 = (f'<?xml version="1.0" encoding="UTF-8"?><IE3R02 xmlns="urn:wco:datamodel:eu:ics2:2"><MRN>{mrn}</MRN>'
           '<declarant><identificationNumber>NL123456789</identificationNumber></declarant></IE3R02>').encode()
    a = trader_engine.user_message(action="IE3R02", payload=r02, to_party=Engine.customs_party())
    await post(client, sim, a.content_type, a.body)
    got = await receiver.wait_for(3)
    assert got[2].messaging.user_message.action == "IE3N03"  # type: ignore[union-attr]
    [row] = sim.registry.report()
    assert row["open_request"] is None and row["related"][0]["action"] == "IE3R02"


async def test_push_retried_until_signed_receipt(sim: Simulator, client: aiohttp.ClientSession,
                                                 trader_engine: Engine, receiver: Receiver) -> None:
    receiver.fail_next = 2
    sent = trader_engine.user_message(action="IE3F32", payload=ens("LRN-RETRY"), to_party=Engine.customs_party())
    await post(client, sim, sent.content_type, sent.body)
    await receiver.wait_for(1)
    await until(lambda: sim.registry.outbound_list()[0]["state"] == "delivered")
    [out] = sim.registry.outbound_list()
    assert receiver.calls == 3 and out["attempts"] == 3 and out["deliveries"] == 1
    # duplicate pushes knob: the same MessageId delivered twice
    await admin(sim, duplicate_pushes=1)
    again = trader_engine.user_message(action="IE3F32", payload=ens("LRN-RETRY-2"), to_party=Engine.customs_party())
    await post(client, sim, again.content_type, again.body)
    got = await receiver.wait_for(3)
    assert got[1].message_id == got[2].message_id


# ------------------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("places", [["ErrorDetail"], ["Description"], ["shortDescription"],
                                    ["ErrorDetail", "Description", "shortDescription"]])
async def test_unregistered_eori_gets_a001(sim: Simulator, client: aiohttp.ClientSession, trader_engine: Engine,
                                           pki: Path, places: list[str]) -> None:
    await admin(sim, sub_code_in=places)
    recipe = Recipe(from_party=Party("NL999999999", PARTY_TYPE_EORI, ROLE_TRADER), parts=[xml_part(ens("LRN-A001"))])
    ctype, body = build_message(recipe, trader_engine.identity.key, trader_engine.identity.chain)
    status, rtype, rbody = await post(client, sim, ctype, body)
    assert status == 500                                   # the STI form: unsigned SOAP Fault
    sig = error_of(trader_engine, rtype, rbody)
    [err] = sig.errors
    assert err.error_code == "EBMS:0004"
    fields = {"ErrorDetail": err.error_detail, "Description": err.description,
              "shortDescription": err.short_description}
    for place, text in fields.items():
        assert (find_sub_code(text) == "A001") == (place in places), (place, text)
    assert sim.registry.report() == []


def _fault_parts(rbody: bytes) -> tuple[etree._Element, etree._Element]:
    env = etree.fromstring(rbody)
    fault = env.find(".//{http://www.w3.org/2003/05/soap-envelope}Fault")
    err = env.find(f".//{{{NS_EB}}}Error")
    assert fault is not None and err is not None
    assert env.find(".//{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd}"
                    "Security") is None
    return fault, err


async def test_errors_as_the_sti_sends_them_by_default(sim: Simulator, client: aiohttp.ClientSession,
                                                       trader_engine: Engine) -> None:
    """Domibus: eb:Error in the header, an unsigned env:Receiver Fault in the Body, HTTP 500."""
    recipe = Recipe(from_party=Party("NL999999999", PARTY_TYPE_EORI, ROLE_TRADER), parts=[xml_part(ens("LRN-F"))],
                    message_id="unregistered-1@ap.trader.test")
    ctype, body = build_message(recipe, trader_engine.identity.key, trader_engine.identity.chain)
    status, rtype, rbody = await post(client, sim, ctype, body)
    assert status == 500 and rtype.startswith("application/soap+xml")
    fault, err = _fault_parts(rbody)
    assert err.get("errorCode") == "EBMS:0004" and err.get("refToMessageInError") == recipe.message_id
    ns = {"s": "http://www.w3.org/2003/05/soap-envelope"}
    assert fault.findtext("s:Code/s:Value", namespaces=ns) == "env:Receiver"
    with pytest.raises(EbmsFault):                         # unsigned: only readable when told to accept it
        trader_engine.open(rtype, rbody)


async def test_signed_errors_with_http_200_as_an_option(sim: Simulator, client: aiohttp.ClientSession,
                                                        trader_engine: Engine) -> None:
    await admin(sim, errors_unsigned=False)
    recipe = Recipe(from_party=Party("NL999999999", PARTY_TYPE_EORI, ROLE_TRADER), parts=[xml_part(ens("LRN-S"))])
    ctype, body = build_message(recipe, trader_engine.identity.key, trader_engine.identity.chain)
    status, rtype, rbody = await post(client, sim, ctype, body)
    assert status == 200
    msg = trader_engine.open(rtype, rbody)                 # signed by customs, verified
    assert msg.signed and msg.messaging.signals[0].errors[0].error_code == "EBMS:0004"  # type: ignore[union-attr]


async def test_other_seal_with_our_eori_gets_a001_or_untrusted(sim: Simulator, client: aiohttp.ClientSession,
                                                               trader_engine: Engine, pki: Path) -> None:
    # the trader's own PartyId, sealed with a valid trader-PKI certificate that is not registered: A001
    revoked_ok = load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem")
    recipe = Recipe(from_party=Party("NL123456789@FR", PARTY_TYPE_EORI, ROLE_TRADER), parts=[xml_part(ens("X"))])
    ctype, body = build_message(recipe, revoked_ok.key, revoked_ok.chain)
    sig = error_of(trader_engine, *(await post(client, sim, ctype, body))[1:])
    assert sig.errors[0].error_code == "EBMS:0004"


@pytest.mark.parametrize("case", ["revoked", "leaf-only", "expired"])
async def test_bad_seals_refused(sim: Simulator, client: aiohttp.ClientSession, trader_engine: Engine, pki: Path,
                                 case: str) -> None:
    if case == "revoked":
        ident = load_identity_files(pki / "revoked-seal.key", pki / "revoked-chain.pem")
        recipe = Recipe(parts=[xml_part(ens("LRN-BAD"))])
    elif case == "expired":
        ident = load_identity_files(pki / "expired-seal.key", pki / "expired-chain.pem")
        recipe = Recipe(parts=[xml_part(ens("LRN-BAD"))])
    else:
        ident = trader_engine.identity
        recipe = Recipe(parts=[xml_part(ens("LRN-BAD"))], leaf_only=True)
    ctype, body = build_message(recipe, ident.key, ident.chain)
    status, rtype, rbody = await post(client, sim, ctype, body)
    sig = error_of(trader_engine, rtype, rbody)
    assert sig.errors[0].error_code == "EBMS:0101", sig.errors[0]
    if case == "revoked":
        assert "revoked" in (sig.errors[0].description or "")
    assert sim.registry.report() == []


# ------------------------------------------------------------------------------------------------ faults
async def test_fault_knobs_503_drop_and_receipts(sim: Simulator, client: aiohttp.ClientSession,
                                                 trader_engine: Engine) -> None:
    sent = trader_engine.user_message(action="IE3F32", payload=ens("LRN-FAULT"), to_party=Engine.customs_party())
    await admin(sim, http_503=1)
    assert (await post(client, sim, sent.content_type, sent.body))[0] == 503
    await admin(sim, drop_connection=1)
    with pytest.raises(aiohttp.ClientError):
        await post(client, sim, sent.content_type, sent.body)
    assert sim.registry.report() == []           # nothing processed
    await admin(sim, drop_response=1)
    with pytest.raises(aiohttp.ClientError):
        await post(client, sim, sent.content_type, sent.body)
    [row] = sim.registry.report()                # processed, answer lost
    assert row["registrations"] == 1 and row["copies"] == 1
    await admin(sim, receipt="unsigned")
    _, ctype, body = await post(client, sim, sent.content_type, sent.body)
    with pytest.raises(EbmsFault):
        trader_engine.check_receipt(trader_engine.open(ctype, body), sent)
    for mode, code in (("wrong-digests", "EBMS:0302"), ("wrong-ref", "EBMS:0302"), ("bad-signature", "EBMS:0101")):
        await admin(sim, receipt=mode)
        _, ctype, body = await post(client, sim, sent.content_type, sent.body)
        with pytest.raises(EbmsFault) as exc:
            trader_engine.check_receipt(trader_engine.open(ctype, body), sent)
        assert exc.value.code == code, mode
    await admin(sim, receipt="signed")
    _, ctype, body = await post(client, sim, sent.content_type, sent.body)
    trader_engine.check_receipt(trader_engine.open(ctype, body), sent)
    [row] = sim.registry.report()
    assert row["registrations"] == 1 and row["copies"] == 6 and row["message_ids"] == [sent.message_id]
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{sim.admin_url}/faults", json={"nope": 1}) as r:
            assert r.status == 400
        async with s.delete(f"{sim.admin_url}/faults") as r:
            assert (await r.json())["receipt"] == "signed"


# ------------------------------------------------------------------------------------------------ pull
async def _pull(client: aiohttp.ClientSession, sim: Simulator, engine: Engine) -> tuple[int, str, bytes]:
    pr = engine.pull_request(MPC_PREFIX + PULL_PARTY)
    return await post(client, sim, pr.content_type, pr.body)


def assert_empty_sti_form(status: int, ctype: str, body: bytes) -> None:
    """EBMS:0006 as Domibus sends it: warning, unsigned SOAP Fault, HTTP 500, no reference to the PullRequest."""
    assert status == 500 and ctype.startswith("application/soap+xml")
    _, err = _fault_parts(body)
    assert err.get("errorCode") == "EBMS:0006" and err.get("severity") == "warning"
    assert err.get("shortDescription") == "EmptyMessagePartitionChannel" and err.get("refToMessageInError") is None
    assert etree.fromstring(body).find(f".//{{{NS_EB}}}RefToMessageId") is None


async def test_pull_empty_then_reply_receipt_and_reoffer(sim: Simulator, client: aiohttp.ClientSession,
                                                         pull_engine: Engine) -> None:
    mpc = MPC_PREFIX + PULL_PARTY
    assert_empty_sti_form(*(await _pull(client, sim, pull_engine)))

    sent = pull_engine.user_message(action="IE3F32", payload=ens("LRN-PULL"), to_party=Engine.customs_party())
    _, ctype, body = await post(client, sim, sent.content_type, sent.body)
    pull_engine.check_receipt(pull_engine.open(ctype, body), sent)
    await asyncio.sleep(0.05)

    status, ctype, body = await _pull(client, sim, pull_engine)
    msg = pull_engine.open(ctype, body)
    um = msg.messaging.user_message
    assert status == 200 and um is not None and um.action == "IE3R01" and um.mpc == mpc
    assert um.ref_to_message_id is None                    # ICD 4.1.3.3: correlation by the LRN in the payload
    assert inspect_payload(msg.payloads[0].data(pull_engine.limits)).lrn == "LRN-PULL"
    # not acknowledged: nothing else to pull before the re-offer time
    assert_empty_sti_form(*(await _pull(client, sim, pull_engine)))
    await admin(sim, reoffer_after_seconds=0.1)
    await asyncio.sleep(0.15)
    again = pull_engine.open(*(await _pull(client, sim, pull_engine))[1:])
    assert again.message_id == msg.message_id
    # the receipt is POSTed to the pull URL
    receipt = pull_engine.receipt_for(again)
    status, _, rbody = await post(client, sim, receipt.content_type, receipt.body)
    assert status == 200 and rbody == b""
    [out] = sim.registry.outbound_list()
    assert out["state"] == "acknowledged" and out["offers"] == 2
    await asyncio.sleep(0.15)
    assert_empty_sti_form(*(await _pull(client, sim, pull_engine)))


async def test_pull_lenient_switches(tmp_path: Path, pki: Path, client: aiohttp.ClientSession, receiver: Receiver,
                                     pull_engine: Engine) -> None:
    """The lenient forms stay available: RefToMessageId on pulled replies, a signed EBMS:0006 with HTTP 200."""
    conf = write_conf(tmp_path, pki, receiver.url, "errors_unsigned = false\n[pull]\nomit_ref_to_message_id = []")
    async with Simulator(load_simulator_config(conf)) as sim:
        status, ctype, body = await _pull(client, sim, pull_engine)
        assert status == 200 and pull_engine.open(ctype, body).signed
        assert error_of(pull_engine, ctype, body).errors[0].error_code == "EBMS:0006"
        sent = pull_engine.user_message(action="IE3F32", payload=ens("LRN-PULL-L"), to_party=Engine.customs_party())
        await post(client, sim, sent.content_type, sent.body)
        await asyncio.sleep(0.05)
        um = pull_engine.open(*(await _pull(client, sim, pull_engine))[1:]).messaging.user_message
        assert um is not None and um.action == "IE3R01" and um.ref_to_message_id == sent.message_id


async def test_unacknowledged_pulled_message_fails_with_missing_receipt(
        sim: Simulator, client: aiohttp.ClientSession, pull_engine: Engine,
        capsys: pytest.CaptureFixture[str]) -> None:
    """After its re-offer budget the message ends as at the STI: failed, EBMS:0301, visible in the report; a late
    receipt does not revive it, and it is never offered again."""
    await admin(sim, reoffer_after_seconds=0.05, pull_max_offers=2)
    sent = pull_engine.user_message(action="IE3F32", payload=ens("LRN-NOACK"), to_party=Engine.customs_party())
    await post(client, sim, sent.content_type, sent.body)
    await asyncio.sleep(0.05)
    first = pull_engine.open(*(await _pull(client, sim, pull_engine))[1:])
    await asyncio.sleep(0.08)
    assert pull_engine.open(*(await _pull(client, sim, pull_engine))[1:]).message_id == first.message_id
    await until(lambda: sim.registry.outbound_list()[0]["state"] == "failed")
    assert_empty_sti_form(*(await _pull(client, sim, pull_engine)))
    [row] = sim.registry.report()
    [reply] = row["replies"]
    assert reply["state"] == "failed" and reply["offers"] == 2 and reply["deliveries"] == 0
    assert reply["last_error"].startswith("EBMS:0301 MissingReceipt")
    late = pull_engine.receipt_for(first)
    assert (await post(client, sim, late.content_type, late.body))[0] == 200
    assert sim.registry.outbound_list()[0]["state"] == "failed"
    assert cli.main(["simulate", "report", "--conf", str(sim.conf_path)]) == 0  # type: ignore[attr-defined]
    assert "IE3R01 failed: EBMS:0301 MissingReceipt" in capsys.readouterr().out


async def test_customs_ping_and_notifications(sim: Simulator, client: aiohttp.ClientSession, trader_engine: Engine,
                                              pull_engine: Engine, receiver: Receiver) -> None:
    """The TI tests the trader's access point (push and pull) and sends the notifications of ICD Annex 1."""
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{sim.admin_url}/ping", json={"party_id": "NL123456789"}) as r:
            assert r.status == 200 and (await r.json())["mode"] == "push"
        async with s.post(f"{sim.admin_url}/ping", json={"party_id": PULL_PARTY}) as r:
            assert r.status == 200 and (await r.json())["mode"] == "pull"
        async with s.post(f"{sim.admin_url}/ping", json={"party_id": "NL000000001"}) as r:
            assert r.status == 400
    [pushed] = await receiver.wait_for(1)
    assert pushed.messaging.user_message is not None and pushed.messaging.user_message.is_ping
    pulled = pull_engine.open(*(await _pull(client, sim, pull_engine))[1:])
    um = pulled.messaging.user_message
    assert um is not None and um.is_ping and um.mpc == MPC_PREFIX + PULL_PARTY
    sent = trader_engine.user_message(action="IE3F32", payload=ens("LRN-N09"), to_party=Engine.customs_party())
    await post(client, sim, sent.content_type, sent.body)
    got = await receiver.wait_for(2)
    mrn = inspect_payload(got[1].payloads[0].data(trader_engine.limits)).mrn
    for action in ("IE3N09", "IE3N07", "IE3N04"):
        sim.send_scripted(action, mrn)
    got = await receiver.wait_for(5)          # pushed in parallel: any order
    actions = sorted(m.messaging.user_message.action for m in got[2:])  # type: ignore[union-attr]
    assert actions == ["IE3N04", "IE3N07", "IE3N09"]
    assert {inspect_payload(m.payloads[0].data(trader_engine.limits)).mrn for m in got[2:]} == {mrn}


async def test_pull_request_of_another_party_refused(sim: Simulator, client: aiohttp.ClientSession,
                                                     pki: Path, trader_engine: Engine) -> None:
    other = Engine(load_identity_files(pki / "other-seal.key", pki / "other-chain.pem"), trader_engine.trust,
                   party_id=PULL_PARTY, fqdn="impostor.test")
    pr = other.pull_request(MPC_PREFIX + PULL_PARTY)
    sig = error_of(trader_engine, *(await post(client, sim, pr.content_type, pr.body))[1:])
    assert sig.errors[0].error_code == "EBMS:0101"     # untrusted chain
    pr = trader_engine.pull_request(MPC_PREFIX + "NL000000001")
    sig = error_of(trader_engine, *(await post(client, sim, pr.content_type, pr.body))[1:])
    assert sig.errors[0].error_code == "EBMS:0004"     # MPC of an unregistered party


# ------------------------------------------------------------------------------------------------ report
async def test_report_cli_json(sim: Simulator, client: aiohttp.ClientSession, trader_engine: Engine,
                               capsys: pytest.CaptureFixture[str]) -> None:
    sent = trader_engine.user_message(action="IE3F32", payload=ens("LRN-REPORT"), to_party=Engine.customs_party())
    await post(client, sim, sent.content_type, sent.body)
    await post(client, sim, sent.content_type, sent.body)
    assert cli.main(["simulate", "report", "--conf", str(sim.conf_path), "--json"]) == 0  # type: ignore[attr-defined]
    lines = capsys.readouterr().out.strip().splitlines()
    [row] = [json.loads(line) for line in lines]
    assert {"lrn", "mrn", "action", "message_ids", "copies", "registrations"} <= set(row)
    assert row["lrn"] == "LRN-REPORT" and row["copies"] == 2 and row["registrations"] == 1
    assert re.match(r"^[0-9]{2}[A-Z]{2}[A-Z0-9]{13}[0-9]$", row["mrn"])
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{sim.admin_url}/report") as r:
            assert (await r.json())[0]["lrn"] == "LRN-REPORT"


async def test_ping_and_out_of_order_replies(sim: Simulator, client: aiohttp.ClientSession, trader_engine: Engine,
                                             receiver: Receiver) -> None:
    ping = trader_engine.ping(Engine.customs_party())
    _, ctype, body = await post(client, sim, ping.content_type, ping.body)
    trader_engine.check_receipt(trader_engine.open(ctype, body), ping)
    assert sim.registry.report() == []
    await admin(sim, out_of_order=True, hold_replies=True)
    sent = trader_engine.user_message(action="IE3F32", payload=ens("DNL-OOO"), to_party=Engine.customs_party())
    await post(client, sim, sent.content_type, sent.body)
    await asyncio.sleep(0.1)
    assert receiver.got == []                      # held
    await admin(sim, hold_replies=False)
    got = await receiver.wait_for(2)
    assert [m.messaging.user_message.action for m in got] == ["IE3Q01", "IE3R01"]  # type: ignore[union-attr]


async def test_admin_send_scripted_request(sim: Simulator, client: aiohttp.ClientSession, trader_engine: Engine,
                                           receiver: Receiver) -> None:
    sent = trader_engine.user_message(action="IE3F32", payload=ens("LRN-SCRIPT"), to_party=Engine.customs_party())
    await post(client, sim, sent.content_type, sent.body)
    got = await receiver.wait_for(1)
    mrn = inspect_payload(got[0].payloads[0].data(trader_engine.limits)).mrn
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{sim.admin_url}/send", json={"action": "IE3Q03", "mrn": mrn}) as r:
            assert r.status == 200, await r.text()
        async with s.post(f"{sim.admin_url}/send", json={"action": "IE3Q03", "mrn": "nope"}) as r:
            assert r.status == 400
    got = await receiver.wait_for(2)
    um = got[1].messaging.user_message
    assert um is not None and um.action == "IE3Q03" and um.ref_to_message_id is None
    assert sim.registry.report()[0]["open_request"] == "IE3Q03"
