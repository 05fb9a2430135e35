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


def test_rejections_of_two_messages_have_two_ids_and_a_redelivery_keeps_its_id() -> None:
    a = formats.rejection_event(reason="invalid", message="m", findings=[], amqp_message_id=None, correlation_id=None,
                                queue="q", body_sha256="aa")
    b = formats.rejection_event(reason="invalid", message="m", findings=[], amqp_message_id=None, correlation_id=None,
                                queue="q", body_sha256="bb")
    a2 = formats.rejection_event(reason="invalid", message="m", findings=[], amqp_message_id=None,
                                 correlation_id=None, queue="q", body_sha256="aa")
    assert a.message_id != b.message_id and a.message_id == a2.message_id


# ------------------------------------------------------------------------------------ the outbox over a journal
import asyncio  # noqa: E402
import datetime as dt  # noqa: E402
from pathlib import Path  # noqa: E402

from gateway.broker.outbox import EventOutbox  # noqa: E402
from gateway.journal.committer import JournalWriter  # noqa: E402
from gateway.journal.records import NewFiling  # noqa: E402
from gateway.journal.sqlite import SqliteJournal  # noqa: E402

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)


def _filing(j: SqliteJournal, lrn: str, now: dt.datetime) -> int:
    f, _ = j.insert_filing(NewFiling("NL1", lrn, "NL1", "IE3F32", "0" * 64), now=now)
    j.transition(f.id, "queued", now=now)
    j.transition(f.id, "abandoned", now=now)
    return f.id


def test_purge_never_lets_event_ids_go_back(tmp_path: Path) -> None:
    """SQLite reuses the highest rowid after it is deleted; an outbox cursor past it would skip new events."""
    j = SqliteJournal.open(tmp_path / "j.sqlite3")
    try:
        _filing(j, "L1", T0)
        top = j.last_event_id()
        j.advance_outbox_cursor("amqp", top, now=T0)
        j.purge(T0 + dt.timedelta(days=1), now=T0 + dt.timedelta(days=2))
        assert j.last_event_id() > top                      # the purge marker stays
        _filing(j, "L2", T0 + dt.timedelta(days=2))
        assert min(e.id for e in j.events_after(top)) > top  # new events are after the cursor
    finally:
        j.close()


async def test_one_event_that_cannot_be_published_does_not_hold_back_the_rest(tmp_path: Path) -> None:
    j = SqliteJournal.open(tmp_path / "j.sqlite3")
    writer = JournalWriter(j).start()
    published: list[str] = []
    bad: set[int] = set()
    connected = [True]

    async def publish(msg: formats.EventMessage) -> None:
        if int(msg.message_id.rsplit("-", 1)[1]) in bad:
            raise RuntimeError("PRECONDITION_FAILED - message size larger than configured max size")
        published.append(msg.routing_key)

    ob = EventOutbox(j, writer, publish, name="amqp", inbox_dir=tmp_path, connected=lambda: connected[0])
    ob.cursor = j.last_event_id()
    try:
        _filing(j, "L1", T0)
        bad.update(e.id for e in j.events_after(ob.cursor) if e.detail.get("to") == "queued")
        connected[0] = False                      # while the broker is down nothing is ever skipped
        for _ in range(10):
            with pytest.raises(RuntimeError):
                await ob.drain_once()
        assert ob.skipped == 0 and published == []
        connected[0] = True                       # connected, and this one event keeps failing: skipped, loudly
        for _ in range(10):
            try:
                await ob.drain_once()
                break
            except RuntimeError:
                pass
        assert ob.skipped == 1 and published == ["filing.abandoned"]
        assert j.outbox_cursor("amqp") == j.last_event_id()
    finally:
        await writer.close()
        j.close()


@pytest.mark.parametrize("lines,key", [
    (['url = "amqp://user:pw@127.0.0.1/"'], "amqp.url"),
    (['url = "http://127.0.0.1/"'], "amqp.url"),
    (['url = "amqp://127.0.0.1/"', 'ca_file = "x.pem"'], "amqp.ca_file"),
    (['queues = ["a"]', 'dead_letter_queue = "a"'], "amqp.dead_letter_queue"),
    (['password = "inline"'], "amqp.password"),
    (['prefetch = 0'], "amqp.prefetch"),
    (['typo = 1'], "amqp"),
])
def test_amqp_configuration_errors_name_the_key(tmp_path: Path, lines: list[str], key: str) -> None:
    from gateway.broker.config import read_amqp_config
    from gateway.config import ConfigError, load_gateway_config
    repo = Path(__file__).resolve().parent.parent
    base = (repo / "conf" / "gateway.toml").read_text().replace('"../', f'"{repo}/')
    conf = tmp_path / "gateway.toml"
    conf.write_text(base + "\n[amqp]\nenabled = true\n" + "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as ei:
        read_amqp_config(load_gateway_config(conf))
    assert key in str(ei.value), str(ei.value)


def test_plain_amqp_to_another_host_is_refused_in_production(tmp_path: Path) -> None:
    from gateway.broker.config import read_amqp_config
    from gateway.config import ConfigError, load_gateway_config
    repo = Path(__file__).resolve().parent.parent
    base = (repo / "conf" / "gateway.toml").read_text().replace('"../', f'"{repo}/')
    base = base.replace('environment = "conformance"', 'environment = "production"', 1)
    conf = tmp_path / "gateway.toml"
    conf.write_text(base + '\n[amqp]\nenabled = true\nurl = "amqp://mq.example.internal/"\n')
    cfg = load_gateway_config(conf)
    with pytest.raises(ConfigError, match="amqps"):
        read_amqp_config(cfg)


def test_an_event_published_again_is_the_same_bytes_whatever_the_filing_became() -> None:
    """At least once: a repeat after a crash carries the same message_id and the same body (consumers compare)."""
    ev = _ev(12, "sending", {"from": "queued", "to": "sending"})
    before = {"lrn": "L1", "filer_eori": "NL1", "mrn": None, "action": "IE3F32", "endpoint": "sti", "source": "s",
              "state": "sending"}
    after = dict(before, mrn="26NLABCDEFGHIJKLM1", state="registered", endpoint="other")
    a, b = formats.filing_event(ev, before, None), formats.filing_event(ev, after, None)
    assert a.body == b.body and a.headers == b.headers and a.message_id == b.message_id
