"""Broker message formats, sans I/O: what an intake message may be, and what an event looks like."""

from __future__ import annotations

import email.parser
import email.policy
import json
from types import SimpleNamespace

import pytest

from gateway.broker import formats


def test_plain_xml_and_headers() -> None:
    r = formats.parse_intake(b"<IE3F32/>", "application/xml; charset=utf-8", {"action": b"IE3F32",
                                                                               "endpoint": "sti"})
    assert (r.data, r.action, r.endpoint, r.attachments) == (b"<IE3F32/>", "IE3F32", "sti", ())


@pytest.mark.parametrize("headers", [{"action": "IE3F32; rm -rf"}, {"endpoint": "x" * 101}, {"action": " "}])
def test_headers_must_be_plain_tokens(headers: dict[str, str]) -> None:
    with pytest.raises(formats.IntakeFormatError) as ei:
        formats.parse_intake(b"<x/>", "application/xml", headers)
    assert ei.value.reason == "bad-header"


def test_multipart_related_ens_first_then_attachments() -> None:
    body = (b"--b\r\nContent-Type: application/xml\r\n\r\n<IE3F20/>\r\n"
            b"--b\r\nContent-Type: application/pdf\r\nContent-ID: <doc-1@erp>\r\n\r\n%PDF-1.4 ...\r\n--b--\r\n")
    r = formats.parse_intake(body, 'multipart/related; boundary="b"; type="application/xml"')
    assert r.data == b"<IE3F20/>"
    assert [(a.name, a.content_type, a.data) for a in r.attachments] == [("doc-1@erp", "application/pdf",
                                                                          b"%PDF-1.4 ...")]


@pytest.mark.parametrize("body,ctype,reason", [
    (b"{}", "application/json", "content-type"),
    (b"--b\r\nContent-Type: application/pdf\r\n\r\nx\r\n--b--\r\n", "multipart/related; boundary=b", "multipart"),
    (b"--b\r\nContent-Type: application/xml\r\n\r\n<x/>\r\n--b\r\nContent-Type: image/png\r\n\r\nx\r\n--b--\r\n",
     "multipart/related; boundary=b", "multipart"),
    (b"", "multipart/related; boundary=b", "multipart"),
])
def test_bad_intake_messages_name_the_reason(body: bytes, ctype: str, reason: str) -> None:
    """The same refusals as the HTTP API (one convention, one parser), each with its reason."""
    from gateway.pipeline.accept import IntakeRefused
    with pytest.raises((formats.IntakeFormatError, IntakeRefused)) as ei:
        formats.parse_intake(body, ctype)
    assert ei.value.reason == reason


def _ev(i: int, event: str, detail: dict, filing_id: int | None = 7, message_id: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(id=i, at="2026-12-02T01:00:00Z", event=event, detail=detail, filing_id=filing_id,
                           message_id=message_id)


def test_routing_keys() -> None:
    assert formats.routing_key(_ev(1, "queued", {"from": "received", "to": "queued"})) == "filing.queued"
    assert formats.routing_key(_ev(2, "inbound-received", {"action": "IE3R01"}, None, "m@x")) == "inbound.IE3R01"
    assert formats.routing_key(_ev(3, "follow-up-queued", {"action": "IE3A32"})) is None
    assert formats.routing_key(_ev(4, "x", {"to": "a.b#*"})) == "filing.a-b-"      # no wildcard injection


def test_filing_event_carries_the_state_it_moved_to_and_the_intake_ids() -> None:
    filing = {"lrn": "L1", "filer_eori": "NL1", "mrn": None, "action": "IE3F32", "endpoint": "sti", "state": "registered",
              "source": "amqp:q:m1"}
    intake = {"channel": "amqp:q", "message_id": "m1", "correlation_id": "c1"}
    m = formats.filing_event(_ev(41, "queued", {"from": "received", "to": "queued", "message_id": "x@y"}), filing,
                             intake)
    doc = json.loads(m.body)
    assert (m.routing_key, m.message_id, m.correlation_id) == ("filing.queued", "ics2gw-event-41", "c1")
    assert doc["filing"]["state"] == "queued" and doc["from"] == "received" and doc["intake"] == intake
    assert m.headers["state"] == "queued" and m.headers["lrn"] == "L1"


def test_inbound_event_is_multipart_related_metadata_first() -> None:
    meta = {"message_id": "m@c", "action": "IE3R01", "filing": {"lrn": "L1", "mrn": "26NL..."}}
    m = formats.inbound_event(_ev(9, "inbound-received", {"action": "IE3R01"}, None, "m@c"), meta,
                              [("payload@c", "application/xml", b"<IE3R01/>")], None)
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + m.content_type.encode() + b"\r\n\r\n" + m.body)
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["application/json", "application/xml"]
    assert json.loads(parts[0].get_payload(decode=True))["event_id"] == 9
    assert parts[1]["Content-ID"] == "<payload@c>" and parts[1].get_payload(decode=True) == b"<IE3R01/>"
