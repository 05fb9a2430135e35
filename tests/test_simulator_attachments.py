"""The simulator checks attachments as the STI does, over real 2-way TLS (fixtures of ``test_simulator``):
the payload profile at the AS4 level (EBMS:0010, no receipt) and the binaryFile link at the business level
(receipt, then IE3N99 and no registration)."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from gateway.conformance.unsafe import Part, Recipe, build_message, xml_part
from gateway.ebms.engine import Engine
from gateway.ebms.model import OutboundPart
from gateway.simulator.app import Simulator
from tests.test_simulator import (  # noqa: F401 - the fixtures, used by name
    Receiver,
    client,
    error_of,
    post,
    receiver,
    sim,
    trader_engine,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PDF = (FIXTURES / "attachments" / "commercial-invoice.pdf").read_bytes()
JPEG = (FIXTURES / "attachments" / "cargo-photo.jpg").read_bytes()
IDENT = "binaryattachment1"


def air_ens(lrn: str) -> bytes:
    data = (FIXTURES / "ics2" / "ens-IE3F20-air-attachment.xml").read_bytes()
    return re.sub(rb"<LRN>[^<]*</LRN>", f"<LRN>{lrn}</LRN>".encode(), data, count=1)


async def test_linked_attachment_registers(sim: Simulator, client: aiohttp.ClientSession,  # noqa: F811
                                           trader_engine: Engine, receiver: Receiver) -> None:  # noqa: F811
    msg = trader_engine.user_message(action="IE3F20", payload=air_ens("ATT-OK-1"), to_party=Engine.customs_party(),
                                     attachments=[OutboundPart(IDENT, "application/pdf", PDF)])
    status, rtype, rbody = await post(client, sim, msg.content_type, msg.body)
    assert status == 200 and trader_engine.open(rtype, rbody).kind == "receipt"
    [reply] = await receiver.wait_for(1)
    assert reply.messaging.user_message.action == "IE3R01"
    [row] = [r for r in sim.registry.report() if r["lrn"] == "ATT-OK-1"]
    assert row["registrations"] == 1


async def test_broken_link_is_answered_by_ie3n99(sim: Simulator, client: aiohttp.ClientSession,  # noqa: F811
                                                 trader_engine: Engine, receiver: Receiver) -> None:  # noqa: F811
    cases = [("ATT-MISSING", [], "missing-attachment"),
             ("ATT-EXTRA", [OutboundPart(IDENT, "application/pdf", PDF),
                            OutboundPart("stowaway", "application/pdf", PDF)], "undeclared-attachment"),
             ("ATT-TYPE", [OutboundPart(IDENT, "image/jpeg", JPEG)], "mime-type-mismatch")]
    for lrn, parts, _ in cases:
        msg = trader_engine.user_message(action="IE3F20", payload=air_ens(lrn), to_party=Engine.customs_party(),
                                         attachments=parts)
        status, rtype, rbody = await post(client, sim, msg.content_type, msg.body)
        assert status == 200 and trader_engine.open(rtype, rbody).kind == "receipt", lrn  # AS4 level: fine
    got = await receiver.wait_for(len(cases))
    for lrn, _, code in cases:
        [reply] = [m for m in got if lrn.encode() in m.payloads[0].data(trader_engine.limits)]
        assert reply.messaging.user_message.action == "IE3N99", lrn
        text = reply.payloads[0].data(trader_engine.limits)
        assert b"CL0010" in text and code.encode() in text, (lrn, text[:600])
    registered = {r["lrn"]: r for r in sim.registry.report()}
    assert all(registered.get(lrn, {}).get("registrations", 0) == 0 for lrn, _, _ in cases), registered


async def test_payload_profile_violation_is_ebms_0010(sim: Simulator,  # noqa: F811
                                                      client: aiohttp.ClientSession,  # noqa: F811
                                                      trader_engine: Engine) -> None:  # noqa: F811
    sea = (FIXTURES / "ics2" / "ens-IE3F10-sea.xml").read_bytes()
    for action, payload, part in (("IE3F10", sea, Part(IDENT, "application/pdf", PDF)),
                                  ("IE3F20", air_ens("ATT-XML"), Part(IDENT, "application/xml", b"<x/>"))):
        ctype, body = build_message(Recipe(action=action, parts=[xml_part(payload), part]),
                                    trader_engine.identity.key, trader_engine.identity.chain)
        _, rtype, rbody = await post(client, sim, ctype, body)
        [err] = error_of(trader_engine, rtype, rbody).errors
        assert err.error_code == "EBMS:0010", (action, err)
    assert not [r for r in sim.registry.report() if r["lrn"] == "ATT-XML"]
