"""The simulator's HTTPS endpoint (as the STI MSH) and its loopback admin endpoint.

``StiEndpoint.handle`` answers every POST on the configured path: user messages (receipt or ebMS error,
synchronously; business replies queued for later), PullRequests (the oldest message of the MPC, or the
EBMS:0006 warning), and receipts / errors POSTed back for pulled messages (eDelivery 1.5.5.3). All AS4 work
goes through ``gateway.ebms.engine.Engine`` with the strict customs-role policy.

Errors, by default as the STI (a Domibus MSH) sends them: unsigned, the eb:Error in the eb:Messaging header and a
SOAP 1.2 ``env:Receiver`` Fault in the Body, HTTP 500. EBMS:0006 (empty MPC) comes the same way, with neither
RefToMessageId nor refToMessageInError (Domibus builds it without them). ``errors_unsigned = false`` gives the
lenient form: signed Error signals with HTTP 200. EBMS:0004 errors carry the UUM&DS sub-code A001 in the places
the ``sub_code_in`` knob lists (ErrorDetail, Description, shortDescription).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from gateway.ebms import build
from gateway.ebms.constants import (
    AGREEMENT_TYPE, MPC_PREFIX, NS_EB, NS_SOAP12, PARTY_TYPE_EORI, ROLE_CUSTOMS, ROLE_TRADER, SERVICE_C2T,
    SERVICE_T2C, SERVICE_TYPE,
)
from gateway.ebms.engine import Engine, InboundMessage
from gateway.ebms.errors import ERRORS, EbmsFault
from gateway.ebms.model import EbmsError, ErrorSignal, PullRequest, Receipt, new_message_id, utc_timestamp
from gateway.ics2 import catalogue
from gateway.security.seal import seal
from gateway.simulator import attachments as sim_attachments
from gateway.simulator import business
from gateway.simulator.faults import FaultError
from gateway.simulator.host import SimulatorHost
from gateway.simulator.registry import monotonic_now

log = logging.getLogger("ics2gw.simulator")
SOAP_CT = 'application/soap+xml; charset="UTF-8"'
KNOWN_AGREEMENTS = ("EU-ICS2-TI-V2.0", "EU-ICS2-TI-V1.0")
A001_TEXT = "UUM&DS rejected the authorization and the incoming message is rejected."
# Domibus' words (MessageBuilder.buildSOAPFaultMessage, PullRequestHandler.notifyNoMessage)
FAULT_REASON = "An error occurred while processing your request. Please check the message header for more details."
EMPTY_MPC_TEXT = "There is no message available for\npulling from this MPC at this moment."


@dataclass
class Answer:
    status: int
    content_type: str | None
    body: bytes
    summary: str
    wake: bool = False


class StiEndpoint:
    def __init__(self, sim: SimulatorHost) -> None:
        self.sim = sim
        self.cfg = sim.cfg
        self.engine: Engine = sim.engine

    # ------------------------------------------------------------------------------------------- HTTP
    async def handle(self, request: web.Request) -> web.StreamResponse:
        faults = self.sim.faults
        if faults.take("http_503"):
            log.info("event=inbound fault=http_503")
            wait = faults.retry_after
            return web.Response(status=503, text="Service Unavailable (simulated)",
                                headers={"Retry-After": str(wait)} if wait else None)
        if faults.take("drop_connection"):
            log.info("event=inbound fault=drop_connection")
            return self._drop(request)
        body = await request.read()
        delay = faults.delay_seconds
        if delay:
            await asyncio.sleep(delay)
        answer = self.process(request.headers.get("Content-Type", ""), body)
        log.info("event=inbound status=%s %s", answer.status, answer.summary)
        if answer.wake:
            self.sim.wake()
        if faults.take("drop_response"):
            log.info("event=inbound fault=drop_response (processed, answer not sent)")
            return self._drop(request)
        headers = {"Content-Type": answer.content_type} if answer.content_type else {}
        return web.Response(status=answer.status, body=answer.body, headers=headers)

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError()

    # ------------------------------------------------------------------------------------------- dispatch
    def process(self, content_type: str, body: bytes) -> Answer:
        try:
            msg = self.engine.open(content_type, body, accept_unsigned_errors=True)
        except EbmsFault as fault:
            return self.error(fault, summary=f"refused code={fault.code} reason={fault.message!r}")
        kind = msg.kind
        try:
            if kind in ("user-message", "ping"):
                return self.user_message(msg)
            if kind == "pull-request":
                return self.pull(msg)
            if kind == "receipt":
                return self.receipt(msg)
            if kind == "error":
                return self.error_for_pulled(msg)
        except EbmsFault as fault:
            return self.error(fault, summary=f"refused code={fault.code} reason={fault.message!r}")
        return self.error(EbmsFault("EBMS:0009", f"nothing to process in a {kind} message",
                                    ref_to_message_id=msg.message_id), summary="refused empty")

    # ------------------------------------------------------------------------------------------- helpers
    def _registered(self, party_id: str, msg: InboundMessage) -> bool:
        party = self.cfg.party(party_id)
        if party is None or msg.signature is None:
            return False
        der = msg.signature.signer.public_bytes(Encoding.DER)
        return der in self.sim.registered_certs.get(party_id, set())

    def a001(self, ref: str | None, why: str) -> EbmsFault:
        return EbmsFault("EBMS:0004", why, detail="A001", ref_to_message_id=ref)

    def error(self, fault: EbmsFault, *, summary: str, severity: str | None = None) -> Answer:
        ref = fault.ref_to_message_id
        err = fault.to_error(ref_to_message_in_error=ref)
        if fault.code == "EBMS:0004" and fault.detail == "A001":
            places = self.sim.faults.sub_code_in
            err = EbmsError(
                error_code="EBMS:0004", severity="failure", category=err.category,
                short_description="A001" if "shortDescription" in places else ERRORS["EBMS:0004"].short_description,
                description=(f"A001: {A001_TEXT} {fault.message}" if "Description" in places
                             else f"{A001_TEXT} {fault.message}"),
                error_detail="A001" if "ErrorDetail" in places else None,
                origin=err.origin, ref_to_message_in_error=ref)
        if self.sim.faults.errors_unsigned:
            return Answer(500, SOAP_CT, self._soap_fault(err, ref), summary + " (unsigned SOAP Fault)")
        out = self.engine.error_signal([err], ref_to_message_id=ref)
        return Answer(200, out.content_type, out.body, summary)

    def _soap_fault(self, err: EbmsError, ref: str | None) -> bytes:
        env = build.error_envelope(new_message_id(self.cfg.fqdn), utc_timestamp(), [err], ref)
        body = env.find("{%s}Body" % NS_SOAP12)
        s = "{%s}" % NS_SOAP12
        fault = etree.SubElement(body, s + "Fault")
        code = etree.SubElement(fault, s + "Code")
        etree.SubElement(code, s + "Value").text = "env:Receiver"     # Domibus: SOAP_RECEIVER_FAULT for every error
        reason = etree.SubElement(fault, s + "Reason")
        text = etree.SubElement(reason, s + "Text")
        text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        text.text = FAULT_REASON
        return build.serialize(env)

    # ------------------------------------------------------------------------------------------- user messages
    def _check_headers(self, msg: InboundMessage) -> None:
        um = msg.messaging.user_message
        assert um is not None
        ref = um.message_id
        if um.to_party.party_id != self.cfg.party_id or um.to_party.role != ROLE_CUSTOMS:
            raise EbmsFault("EBMS:0010", f"eb:To is {um.to_party.party_id}/{um.to_party.role}, not "
                                         f"{self.cfg.party_id}/{ROLE_CUSTOMS}", ref_to_message_id=ref)
        if um.from_party.role != ROLE_TRADER or um.from_party.party_type != PARTY_TYPE_EORI:
            raise EbmsFault("EBMS:0010", f"eb:From must be a {ROLE_TRADER} with PartyId type {PARTY_TYPE_EORI}",
                            ref_to_message_id=ref)
        if um.agreement not in KNOWN_AGREEMENTS:
            raise EbmsFault("EBMS:0001" if um.agreement else "EBMS:0010",
                            f"eb:AgreementRef {um.agreement!r} is not {KNOWN_AGREEMENTS[0]}", ref_to_message_id=ref)
        if um.agreement_type != AGREEMENT_TYPE:
            raise EbmsFault("EBMS:0010", f"eb:AgreementRef/@type must be {AGREEMENT_TYPE}", ref_to_message_id=ref)
        if um.mpc is not None and um.mpc != "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/defaultMPC":
            raise EbmsFault("EBMS:0010", "a pushed t2c message carries no MPC", ref_to_message_id=ref)
        if um.is_ping:
            return
        if um.service == SERVICE_C2T:
            raise EbmsFault("EBMS:0010", f"service {SERVICE_C2T} is customs-to-trader; traders send on "
                                         f"{SERVICE_T2C}", ref_to_message_id=ref)
        if um.service != SERVICE_T2C:
            raise EbmsFault("EBMS:0001", f"service {um.service!r} is not known", ref_to_message_id=ref)
        if um.service_type != SERVICE_TYPE:
            raise EbmsFault("EBMS:0010", f"eb:Service/@type must be {SERVICE_TYPE}", ref_to_message_id=ref)
        if um.action not in catalogue.actions("t2c"):
            spec = catalogue.lookup(um.action)
            raise EbmsFault("EBMS:0010" if spec else "EBMS:0001",
                            f"action {um.action} is not a trader-to-customs ICS2 message", ref_to_message_id=ref)

    def user_message(self, msg: InboundMessage) -> Answer:
        um = msg.messaging.user_message
        assert um is not None
        mid = um.message_id
        self._check_headers(msg)
        if not self._registered(um.from_party.party_id, msg):
            signer = msg.signature.signer_subject if msg.signature else "nobody"
            raise self.a001(mid, f"PartyId {um.from_party.party_id} is not registered with the sealing "
                                 f"certificate {signer}")
        party = self.cfg.party(um.from_party.party_id)
        assert party is not None
        fault = sim_attachments.envelope_fault(msg)  # the payload profile: attachment types and actions
        if fault is not None:
            raise fault
        reg = self.sim.registry
        copies = reg.record_received(mid, msg.kind, None if um.is_ping else um.action, party.party_id)
        wake = False
        if copies == 1 and not um.is_ping:
            try:
                payload = msg.payloads[0].data(self.engine.limits) if msg.payloads else None
                linked = sim_attachments.link_decision(msg, payload, self.engine.limits, self.sim.clock())
                self.sim.handle_business(business.Incoming(mid, um.action, party.party_id, party.eori, payload),
                                         decision=linked)
                wake = True
            except BaseException:
                reg.forget_received(mid)
                raise
        receipt = self.make_receipt(msg)
        what = "duplicate" if copies > 1 else ("ping" if um.is_ping else "new")
        return Answer(200, receipt.content_type, receipt.body,
                      f"message_id={mid} action={um.action if not um.is_ping else 'ping'} from={party.party_id} "
                      f"{what} copies={copies} receipt={self.sim.faults.receipt}", wake=wake)

    # ------------------------------------------------------------------------------------------- receipts
    @dataclass
    class _Wire:
        content_type: str
        body: bytes

    def make_receipt(self, msg: InboundMessage) -> StiEndpoint._Wire:
        mode = self.sim.faults.receipt
        if mode == "signed":
            r = self.engine.receipt_for(msg)
            return self._Wire(r.content_type, r.body)
        assert msg.signature is not None
        refs = list(msg.signature.references)
        ref_to = msg.message_id
        if mode == "wrong-ref":
            ref_to = new_message_id("elsewhere.test")
        if mode == "wrong-digests":
            from copy import deepcopy
            refs = [deepcopy(r) for r in refs]
            dv = refs[0].find("{http://www.w3.org/2000/09/xmldsig#}DigestValue")
            dv.text = "AAAA" + (dv.text or "")[4:]
        env = build.receipt_envelope(new_message_id(self.cfg.fqdn), utc_timestamp(), ref_to, refs)
        if mode == "unsigned":
            return self._Wire(SOAP_CT, build.serialize(env))
        env, _ = seal(env, [], self.sim.identity)
        if mode == "bad-signature":
            ts = next(env.iter("{%s}Timestamp" % NS_EB))
            ts.text = "2000-01-01T00:00:00.000Z"  # changed after sealing: the eb:Messaging digest breaks
        return self._Wire(SOAP_CT, build.serialize(env))

    # ------------------------------------------------------------------------------------------- pull
    def pull(self, msg: InboundMessage) -> Answer:
        pr = next(s for s in msg.messaging.signals if isinstance(s, PullRequest))
        party = self.cfg.party_by_mpc(pr.mpc)
        if party is None:
            if pr.mpc.startswith(MPC_PREFIX):
                raise self.a001(pr.message_id, f"MPC {pr.mpc} belongs to no registered PartyId")
            raise EbmsFault("EBMS:0010", f"MPC {pr.mpc} is not an ICS2 c2t MPC ({MPC_PREFIX}<PartyId>)",
                            ref_to_message_id=pr.message_id)
        if not self._registered(party.party_id, msg):
            signer = msg.signature.signer_subject if msg.signature else "nobody"
            raise self.a001(pr.message_id, f"the PullRequest for {party.party_id} is sealed by {signer}, not by a "
                                            "certificate registered for that PartyId (eDelivery 1.5.5.5)")
        row = None
        faults = self.sim.faults
        if not faults.hold_replies:
            row = self.sim.registry.offer(pr.mpc, monotonic_now(), faults.reoffer_after_seconds,
                                          newest_first=faults.out_of_order, max_offers=faults.pull_max_offers)
        if row is None:
            return self.empty_mpc(pr)
        return Answer(200, row["content_type"], row["body"],
                      f"pull mpc={pr.mpc} offered message_id={row['message_id']} action={row['action']} "
                      f"offer={row['offers'] + 1}")

    def empty_mpc(self, pr: PullRequest) -> Answer:
        """EBMS:0006, a warning. STI form: unsigned SOAP Fault, HTTP 500, no references (Domibus answers an empty
        MPC through its fault builder); lenient form: a signed Error signal referring to the PullRequest."""
        if self.sim.faults.errors_unsigned:
            spec = ERRORS["EBMS:0006"]
            err = EbmsError(error_code="EBMS:0006", severity="warning", category=spec.category,
                            short_description=spec.short_description, description=EMPTY_MPC_TEXT, origin="ebMS")
            return Answer(500, SOAP_CT, self._soap_fault(err, None),
                          f"pull mpc={pr.mpc} empty (EBMS:0006, unsigned SOAP Fault)")
        out = self.engine.error_signal(
            EbmsFault("EBMS:0006", f"no message on {pr.mpc}", severity="warning",
                      ref_to_message_id=pr.message_id), ref_to_message_id=pr.message_id)
        return Answer(200, out.content_type, out.body, f"pull mpc={pr.mpc} empty (EBMS:0006)")

    def receipt(self, msg: InboundMessage) -> Answer:
        r = next(s for s in msg.messaging.signals if isinstance(s, Receipt))
        if msg.signature is None:
            raise EbmsFault("EBMS:0302", "the receipt is not signed", ref_to_message_id=r.ref_to_message_id)
        row = self.sim.registry.outbound(r.ref_to_message_id)
        if row is None or row["mode"] != "pull":
            raise EbmsFault("EBMS:0003", f"the receipt refers to {r.ref_to_message_id}, which is no message "
                                         "offered for pulling", ref_to_message_id=r.message_id)
        if not self._registered(row["party_id"], msg):
            raise self.a001(r.message_id, f"the receipt for {row['message_id']} is not sealed by a certificate "
                                          f"registered for {row['party_id']}")
        echoed = {n.uri: n.digest_value for n in r.nrr_references}
        if echoed != json.loads(row["digests"]):
            raise EbmsFault("EBMS:0302", "the receipt's non-repudiation information does not match the message "
                                         f"{row['message_id']}", ref_to_message_id=r.message_id)
        if row["state"] == "failed":
            # reception awareness already gave up (EBMS:0301): a late receipt does not revive it, as at the STI
            return Answer(200, None, b"", f"late receipt for failed pulled message_id={row['message_id']} "
                                          f"({row['last_error']})")
        if row["state"] != "acknowledged":
            self.sim.registry.settle_pulled(row["message_id"], "acknowledged")
        return Answer(200, None, b"", f"receipt for pulled message_id={row['message_id']} action={row['action']}")

    def error_for_pulled(self, msg: InboundMessage) -> Answer:
        sig = next(s for s in msg.messaging.signals if isinstance(s, ErrorSignal))
        ref = sig.ref_to_message_id or next((e.ref_to_message_in_error for e in sig.errors
                                             if e.ref_to_message_in_error), None)
        row = self.sim.registry.outbound(ref) if ref else None
        codes = ",".join(e.error_code for e in sig.errors)
        if row is not None and row["mode"] == "pull":
            self.sim.registry.settle_pulled(row["message_id"], "rejected", f"{codes} (signed={msg.signed})")
        return Answer(200, None, b"", f"error signal for {ref} codes={codes} signed={msg.signed}")


# ------------------------------------------------------------------------------------------------ admin
def admin_app(sim: SimulatorHost) -> web.Application:
    """Plain HTTP on loopback: fault knobs, report, outbound queue, scripted sends."""
    routes = web.RouteTableDef()

    @routes.get("/admin/faults")
    async def get_faults(_: web.Request) -> web.Response:
        return web.json_response(sim.faults.snapshot())

    @routes.post("/admin/faults")
    async def set_faults(request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise FaultError("the body must be a JSON object of knob: value")
            values = sim.faults.update(changes)
        except (FaultError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        log.info("event=faults_changed %s", json.dumps(changes, sort_keys=True))
        sim.wake()
        return web.json_response(values)

    @routes.delete("/admin/faults")
    async def reset_faults(_: web.Request) -> web.Response:
        sim.wake()
        return web.json_response(sim.faults.reset())

    @routes.get("/admin/report")
    async def report(_: web.Request) -> web.Response:
        return web.json_response(sim.registry.report())

    @routes.get("/admin/outbound")
    async def outbound(_: web.Request) -> web.Response:
        return web.json_response(sim.registry.outbound_list())

    @routes.get("/admin/health")
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "sti_url": sim.sti_url, "outbound": sim.registry.counts()})

    @routes.post("/admin/ping")
    async def ping(request: web.Request) -> web.Response:
        try:
            spec: Any = await request.json()
            result = sim.send_ping(str(spec.get("party_id", "")))
        except (ValueError, AttributeError, KeyError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)

    @routes.post("/admin/send")
    async def send(request: web.Request) -> web.Response:
        try:
            spec: Any = await request.json()
            result = sim.send_scripted(str(spec.get("action", "")), str(spec.get("mrn", "")),
                                       ref_to=spec.get("ref_to_message_id"), party_id=spec.get("party_id"))
        except (ValueError, AttributeError, KeyError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)

    app = web.Application()
    app.add_routes(routes)
    return app
