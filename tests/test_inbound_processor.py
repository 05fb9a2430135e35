"""The daemon's inbound sink (``gateway.pipeline.inbound.InboundProcessor``) in-process (issue 16, mutation pass).

Every other test that drives this sink starts the daemon as a subprocess; these drive it in the test's own process,
so what they check is also what mutation testing sees. Real parts only: customs messages sealed with the customs
seal key and certificate chain (``gateway.conformance.unsafe.build_message``: any parts, compressed or not) and
opened and verified by the trader's engine, the trader's Receipt for each, a SQLite journal file with its
group-commit writer, the inbox and status folders under ``tmp_path``, the P-Modes of ``pmodes/``, the real
``Acceptor`` for our own filings and requests. The clock is fixed, so every timestamp is exact.

From the ICS2 profile and the module's contract: a customs message is correlated by eb:RefToMessageId first, then
by its payload's references (MRN, LRN and the person filing); a repeated (sender, MessageId) is answered with the
first Receipt and delivered once; a message matching nothing is kept as an orphan with the alert its action calls
for; the P-Mode deviations tolerated are recorded and alerted; inbox files are named by the exact MessageId (a
digest when it is not a safe name) with a suffix by MIME type, payloads decompressed; the status file is the
filing's journal view; a pulled message's Receipt is pending until the TI acknowledged it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.conformance.unsafe import Part, Recipe, build_message
from gateway.ebms.constants import (
    MIME_XML, PARTY_TYPE_AUTH, PARTY_TYPE_EORI, ROLE_CUSTOMS, ROLE_TRADER, SERVICE_C2T,
)
from gateway.ebms.model import Party
from gateway.journal.states import FilingState as S
from gateway.pipeline.inbound import _suffix
from tests.pipeline_harness import REPO, ens, fixture

NOW = dt.datetime(2026, 12, 2, 8, 30, 15, tzinfo=dt.timezone.utc)
TS = "2026-12-02T08:30:15Z"
CUSTOMS = "sti-taxud"
FILER = "NL123456789"
MRN = "26NLZ8P0RJ4KD5KPA1"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(64)) + b"\xff\xd9"


def ts(d: dt.datetime = NOW) -> str:
    from gateway.journal.core import iso
    return iso(d)


@functools.lru_cache(maxsize=None)
def _static(pki: Path) -> tuple[Any, ...]:
    """What every test shares and none changes (loading an RSA key costs about half a second)."""
    from cryptography.hazmat.primitives import serialization

    from gateway.config import load_gateway_config
    from gateway.ebms.engine import Engine
    from gateway.pmode import load_pmodes
    from gateway.security.keys import load_pem_certificates
    from gateway.transport.config import load_transport_config
    cfg = load_gateway_config(REPO / "conf" / "gateway.toml")
    key = serialization.load_pem_private_key((pki / "customs-seal.key").read_bytes(), None)
    return (Engine.from_config(cfg), key, load_pem_certificates(pki / "customs-chain.pem"),
            load_pmodes(cfg.pmodes_dir, party_id=cfg.identity.party_id), load_transport_config(cfg))


class World:
    def __init__(self, tmp: Path, pki: Path, **sink_kw: Any) -> None:
        from gateway.journal.committer import JournalWriter
        from gateway.journal.sqlite import SqliteJournal
        from gateway.pipeline.accept import Acceptor
        from gateway.pipeline.alerts import Alerts
        from gateway.pipeline.config import AlertsConfig
        from gateway.pipeline.inbound import InboundProcessor
        from gateway.transport.routing import Router
        self.trader, self.key, self.chain, self.pmodes, tcfg = _static(pki)
        path = tmp / "journal.sqlite3"
        self.journal = SqliteJournal.open(path)
        self.reader = SqliteJournal.open_reader(path)
        self.writer = JournalWriter(self.journal).start()
        self.inbox, self.status = tmp / "inbox", tmp / "status"
        self.inbox.mkdir()
        self.status.mkdir()
        self.alerts = Alerts(AlertsConfig((), None), "conformance")
        kw: dict[str, Any] = {"limits": self.trader.limits, "clock": lambda: NOW, "pmodes": self.pmodes}
        kw.update(sink_kw)
        self.sink = InboundProcessor(self.reader, self.writer, inbox_dir=self.inbox, status_dir=self.status,
                                     alerts=self.alerts, **kw)
        self.acceptor = Acceptor(self.trader, self.writer, self.reader, Router(tcfg))

    async def close(self) -> None:
        await self.writer.close()
        self.reader.close()
        self.journal.close()

    # -- customs' side
    def sealed(self, action: str, parts: list[Part], *, message_id: str, ref: str | None = None,
               mpc: str | None = None, service: str = SERVICE_C2T) -> tuple[str, bytes]:
        recipe = Recipe(action=action, service=service, parts=parts,
                        from_party=Party(CUSTOMS, PARTY_TYPE_AUTH, ROLE_CUSTOMS),
                        to_party=Party(FILER, PARTY_TYPE_EORI, ROLE_TRADER), message_id=message_id,
                        ref_to_message_id=ref, mpc=mpc)
        return build_message(recipe, self.key, self.chain)

    async def send(self, action: str, payload: bytes | None, *, message_id: str, ref: str | None = None,
                   channel: str = "push", extra: list[Part] = (), **kw: Any) -> tuple[Any, Any]:  # type: ignore[assignment]
        parts = ([Part("payload@sti.test", MIME_XML, payload)] if payload is not None
                 else []) + list(extra)
        ctype, body = self.sealed(action, parts, message_id=message_id, ref=ref, **kw)
        opened = self.trader.open(ctype, body)
        receipt = self.trader.receipt_for(opened)
        got = await self.sink.deliver(opened, ctype, body, receipt, channel)
        return got, receipt

    # -- read-outs
    def inbound(self, message_id: str) -> Any:
        return self.reader.get_message(message_id, direction="in")

    def events(self, message_id: str) -> list[tuple[str, int | None, dict[str, Any]]]:
        return [(e.event, e.filing_id, e.detail) for e in self.reader.events(message_id=message_id)]

    def meta(self, message_id: str) -> dict[str, Any]:
        from gateway.pipeline.delivery import inbox_name
        return json.loads((self.inbox / f"{inbox_name(message_id)}.json").read_text())

    def status_file(self, filing: Any) -> dict[str, Any]:
        from gateway.pipeline.delivery import inbox_name
        return json.loads((self.status / (inbox_name(f"{filing.filer_eori}_{filing.lrn}") + ".json")).read_text())

    def files(self) -> list[str]:
        return sorted(p.name for p in self.inbox.iterdir())


@pytest.fixture
async def world(tmp_path: Path, pki: Path) -> AsyncIterator[World]:
    w = World(tmp_path, pki)
    yield w
    await w.close()


def payload(name: str, **subs: str) -> bytes:
    import re
    data = fixture(name)
    for tag, value in subs.items():
        data = re.sub(rf"<{tag}>[^<]*</{tag}>".encode(), f"<{tag}>{value}</{tag}>".encode(), data)
    return data


def r01(lrn: str, mrn: str = MRN, filer: str = FILER) -> bytes:
    return payload("resp-IE3R01-registration.xml", LRN=lrn, MRN=mrn).replace(
        b"<identificationNumber>NL123456789</identificationNumber>",
        f"<identificationNumber>{filer}</identificationNumber>".encode())


def by_mrn(action: str, mrn: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><{action} xmlns="urn:wco:datamodel:eu:ics2:2"><MRN>{mrn}</MRN>'
            f'<declarant><identificationNumber>{FILER}</identificationNumber></declarant></{action}>').encode()


# ----------------------------------------------------------------------------------------------- suffixes
@pytest.mark.parametrize("mime,suffix", [("application/xml", ".xml"), ("text/xml", ".xml"), ("TEXT/XML", ".xml"),
                                         ("application/pdf", ".pdf"), ("Application/PDF", ".pdf"),
                                         ("image/jpeg", ".jpg"), ("application/octet-stream", ".bin"),
                                         ("", ".bin"), (None, ".bin")])
def test_inbox_suffix_by_mime_type(mime: str | None, suffix: str) -> None:
    assert _suffix(mime) == suffix


def no_staged_files(w: World) -> bool:
    return not [n for n in w.files() if n.startswith(".")]


# ----------------------------------------------------------------------------------------------- by RefToMessageId
async def test_registration_by_ref_to_message_id_delivers_journals_and_writes_the_status(world: World) -> None:
    w = world
    acc = await w.acceptor.accept(ens("INBREF1"))
    ours = acc.message_id
    data = r01("INBREF1")
    got, receipt = await w.send("IE3R01", data, message_id="r01-ref@sti.test", ref=ours)
    # the transport answers with our Receipt, journaled with the message
    assert (got.receipt_content_type, got.receipt_body, got.duplicate) == (receipt.content_type, receipt.body, False)
    stored = w.reader.get_message("r01-ref@sti.test", direction="in", with_bytes=True)
    assert stored.receipt == receipt.body and stored.receipt_content_type == receipt.content_type
    assert (stored.state, stored.filing_id, stored.sender_party, stored.action, stored.ref_to_message_id,
            stored.functional_reference, stored.business_outcome, stored.ack_state) == \
        ("processed", acc.filing.id, CUSTOMS, "IE3R01", ours, "INBREF1", "registered", None)
    # inbox: the payload decompressed, then the metadata
    assert w.files() == ["r01-ref@sti.test.json", "r01-ref@sti.test.part1.xml"]
    assert (w.inbox / "r01-ref@sti.test.part1.xml").read_bytes() == data
    assert w.meta("r01-ref@sti.test") == {
        "message_id": "r01-ref@sti.test", "ref_to_message_id": ours, "conversation_id": "1", "from": CUSTOMS,
        "to": FILER, "service": SERVICE_C2T, "action": "IE3R01", "channel": "push", "received": TS,
        "filing": {"filer_eori": FILER, "lrn": "INBREF1", "mrn": MRN, "state": "registered"},
        "lrn": "INBREF1", "mrn": MRN, "functional_reference": "INBREF1", "correlated_by": "RefToMessageId",
        "pmode_tolerated": [], "consultation": None,
        "parts": [{"file": "r01-ref@sti.test.part1.xml", "order": 1, "href": "cid:payload@sti.test",
                   "mime_type": MIME_XML, "charset": "utf-8"}]}
    # journal: the message, its correlation, our IE3F32 answered, the filing registered with its MRN
    assert w.events("r01-ref@sti.test") == [
        ("inbound-received", None, {"action": "IE3R01", "bytes": len(stored.sealed), "ref_to": ours,
                                    "reference": "INBREF1", "sender": CUSTOMS}),
        ("inbound-correlated", acc.filing.id, {"action": "IE3R01", "outcome": "registered", "ref_to": ours})]
    assert w.reader.get_message(ours).business_outcome == "registered"
    filing = w.reader.get_filing(acc.filing.id)
    assert (filing.state, filing.mrn, filing.updated_at) == (S.REGISTERED, MRN, ts())
    [ev] = [e for e in w.reader.events(filing_id=filing.id) if e.event == "registered"]
    assert ev.detail == {"action": "IE3R01", "from": "queued", "message_id": "r01-ref@sti.test", "mrn": MRN,
                         "to": "registered"}
    # the status file is the filing's journal view
    assert w.status_file(filing) == json.loads(json.dumps(filing.to_dict(), default=str))
    assert w.alerts.raised == []
    assert no_staged_files(w)


async def test_duplicate_is_answered_with_the_first_receipt_and_not_delivered_again(world: World) -> None:
    w = world
    acc = await w.acceptor.accept(ens("INBDUP1"))
    first, receipt1 = await w.send("IE3R01", r01("INBDUP1"), message_id="r01-dup@sti.test", ref=acc.message_id)
    events = w.reader.events(limit=1_000_000)
    files = {n: (w.inbox / n).read_bytes() for n in w.files()}
    (w.status / next(iter(p.name for p in w.status.iterdir()))).unlink()
    again, receipt2 = await w.send("IE3R01", r01("INBDUP1"), message_id="r01-dup@sti.test", ref=acc.message_id)
    assert receipt2.body != receipt1.body
    assert (again.receipt_content_type, again.receipt_body, again.duplicate) == (receipt1.content_type, receipt1.body, True)
    assert first.duplicate is False
    assert w.reader.events(limit=1_000_000) == events          # nothing journaled
    assert {n: (w.inbox / n).read_bytes() for n in w.files()} == files   # nothing delivered, nothing staged left
    assert list(w.status.iterdir()) == []                        # no status rewritten
    assert w.alerts.raised == []
    assert len(w.reader.list_messages(direction="in")) == 1


async def test_duplicate_found_only_inside_the_transaction_is_not_applied_twice(world: World) -> None:
    """Two deliveries of one message racing (two instances, or a re-offer while the first commits): both passed the
    duplicate look-up; the journal transaction finds the first and the second gets its Receipt, nothing more."""
    w = world
    acc = await w.acceptor.accept(ens("INBRACE1"))
    ctype, body = w.sealed("IE3Q02", [Part("payload@sti.test", MIME_XML, by_mrn("IE3Q02", MRN))],
                           message_id="q02-race@sti.test")
    await w.send("IE3R01", r01("INBRACE1"), message_id="r01-race@sti.test", ref=acc.message_id)
    opened = w.trader.open(ctype, body)
    receipt1 = w.trader.receipt_for(opened)
    first = await w.sink.deliver(opened, ctype, body, receipt1, "push")
    assert first.duplicate is False
    before = w.reader.events(limit=1_000_000)
    requests = w.reader.list_requests(filing_id=acc.filing.id, open_only=False)
    assert [(r.kind, r.request_message_id, r.state) for r in requests] == [("IE3Q02", "q02-race@sti.test", "open")]
    alerts = list(w.alerts.raised)
    for p in w.status.iterdir():
        p.unlink()
    second = w.trader.open(ctype, body)
    receipt2 = w.trader.receipt_for(second)
    um = second.messaging.user_message
    parts = w.sink._stage(second)
    try:
        got = await w.sink._deliver(second, ctype, body, receipt2, "push", um, CUSTOMS, parts)
    finally:
        for _, s in parts:
            s.discard()
    assert (got.receipt_content_type, got.receipt_body, got.duplicate) == (receipt1.content_type, receipt1.body, True)
    after = w.reader.events(limit=1_000_000)
    assert [(e.event, e.filing_id, e.message_id, e.detail) for e in after[len(before):]] == [
        ("inbound-duplicate", acc.filing.id, "q02-race@sti.test", {"sender": CUSTOMS})]
    assert w.reader.list_requests(filing_id=acc.filing.id, open_only=False) == requests   # not opened twice
    assert w.alerts.raised == alerts and list(w.status.iterdir()) == []
    assert w.reader.get_filing(acc.filing.id).state == S.INFO_REQUESTED
    assert no_staged_files(w)


async def registered(w: World, lrn: str, mrn: str = MRN) -> Any:
    acc = await w.acceptor.accept(ens(lrn))
    await w.send("IE3R01", r01(lrn, mrn), message_id=f"r01-{lrn}@sti.test", ref=acc.message_id)
    filing = w.reader.get_filing(acc.filing.id)
    assert (filing.state, filing.mrn) == (S.REGISTERED, mrn)
    return filing


# ----------------------------------------------------------------------------------------------- by payload facts
async def test_registration_without_ref_is_correlated_by_lrn_and_filer(world: World) -> None:
    w = world
    acc = await w.acceptor.accept(ens("INBLRN1"))
    await w.send("IE3R01", r01("INBLRN1"), message_id="r01-lrn@sti.test")
    meta = w.meta("r01-lrn@sti.test")
    assert (meta["correlated_by"], meta["ref_to_message_id"], meta["filing"]) == \
        ("LRN", None, {"filer_eori": FILER, "lrn": "INBLRN1", "mrn": MRN, "state": "registered"})
    filing = w.reader.get_filing(acc.filing.id)
    assert (filing.state, filing.mrn) == (S.REGISTERED, MRN)
    assert w.events("r01-lrn@sti.test")[1] == \
        ("inbound-correlated", filing.id, {"action": "IE3R01", "outcome": "registered", "ref_to": None})
    # no RefToMessageId: the IE3F32 it answers is inferred (filing.action), its business outcome left to the sender
    assert w.reader.get_message(acc.message_id).business_outcome is None
    assert w.status_file(filing)["state"] == "registered"


async def test_a_single_filing_of_that_lrn_is_taken_even_when_the_payload_names_another_filer(world: World) -> None:
    w = world
    acc = await w.acceptor.accept(ens("INBLRN2"))
    await w.send("IE3R01", r01("INBLRN2", filer="DE987654321012"), message_id="r01-other@sti.test")
    assert w.meta("r01-other@sti.test")["correlated_by"] == "LRN"
    assert w.reader.get_filing(acc.filing.id).state == S.REGISTERED
    assert w.reader.list_orphans() == []


async def test_registration_is_correlated_by_its_lrn_not_by_an_mrn_of_another_filing(world: World) -> None:
    """IE3R01's reference is the LRN (ICD table 9): a registration copy of another filer's ENS (unknown LRN) is an
    orphan even when the MRN it carries is one of ours."""
    w = world
    mine = await registered(w, "INBLRN3")
    await w.send("IE3R01", r01("ELSEWHERE7", MRN), message_id="r01-copy@sti.test")
    meta = w.meta("r01-copy@sti.test")
    assert (meta["correlated_by"], meta["filing"], meta["lrn"]) == ("none", None, "ELSEWHERE7")
    [orphan] = w.reader.list_orphans()
    assert (orphan.message.message_id, orphan.reason) == \
        ("r01-copy@sti.test", "IE3R01 matches no filing (reference 'ELSEWHERE7')")
    assert w.alerts.raised == [{
        "alert": "registration-copy", "environment": "conformance", "message_id": "r01-copy@sti.test",
        "action": "IE3R01", "category": "A", "unmatched": True,
        "why": "an ENS for goods we carry was registered by another filer: its MRN is needed for loading and arrival",
        "reference": "ELSEWHERE7", "mrn": MRN, "lrn": "ELSEWHERE7"}]
    assert w.reader.get_filing(mine.id).to_dict() == mine.to_dict()


async def test_notification_by_mrn_moves_the_filing_and_writes_the_status(world: World) -> None:
    w = world
    filing = await registered(w, "INBMRN1")
    await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id="n03@sti.test")
    meta = w.meta("n03@sti.test")
    assert (meta["correlated_by"], meta["filing"]) == \
        ("MRN", {"filer_eori": FILER, "lrn": "INBMRN1", "mrn": MRN, "state": "assessment-complete"})
    now = w.reader.get_filing(filing.id)
    assert now.state == S.ASSESSMENT_COMPLETE
    assert w.status_file(now) == json.loads(json.dumps(now.to_dict(), default=str))
    assert w.events("n03@sti.test") == [
        ("inbound-received", None, {"action": "IE3N03", "bytes": len(w.reader.get_message(
            "n03@sti.test", direction="in", with_bytes=True).sealed), "ref_to": None, "reference": MRN,
            "sender": CUSTOMS}),
        ("inbound-correlated", filing.id, {"action": "IE3N03", "outcome": "assessment-complete", "ref_to": None})]
    assert w.alerts.raised == []


async def test_request_opens_a_customs_request_and_alerts(world: World) -> None:
    w = world
    filing = await registered(w, "INBQ02A")
    await w.send("IE3Q02", by_mrn("IE3Q02", MRN), message_id="q02@sti.test")
    assert w.reader.get_filing(filing.id).state == S.INFO_REQUESTED
    [req] = w.reader.list_requests(filing_id=filing.id)
    assert (req.kind, req.request_message_id, req.state, req.opened_at) == ("IE3Q02", "q02@sti.test", "open", ts())
    assert w.alerts.raised == [{"alert": "information-requested", "environment": "conformance", "lrn": "INBQ02A",
                                "mrn": MRN, "action": "IE3Q02", "message_id": "q02@sti.test"}]


async def test_learned_mrn_without_a_state_change_is_written_to_the_filing(world: World) -> None:
    """A late IE3R01 (the filing already moved on) changes no state, but an MRN the filing lacks is kept."""
    w = world
    acc = await w.acceptor.accept(ens("INBLATE1"))
    q01 = by_mrn("IE3Q01", MRN).replace(f"<MRN>{MRN}</MRN>".encode(), b"<LRN>INBLATE1</LRN>")
    await w.send("IE3Q01", q01, message_id="q01@sti.test")       # by LRN, no MRN yet
    filing = w.reader.get_filing(acc.filing.id)
    assert (filing.state, filing.mrn) == (S.DO_NOT_LOAD, None)
    await w.send("IE3R01", r01("INBLATE1"), message_id="r01-late@sti.test", ref=acc.message_id)
    after = w.reader.get_filing(acc.filing.id)
    assert (after.mrn, after.state, after.updated_at) == (MRN, S.DO_NOT_LOAD, ts())
    assert [(e.event, e.message_id, e.detail) for e in w.reader.events(filing_id=filing.id)][-2:] == [
        ("registered", "r01-late@sti.test", {"action": "IE3R01"}), ("updated", None, {"mrn": MRN})]
    assert w.status_file(after)["mrn"] == MRN
    assert w.meta("r01-late@sti.test")["filing"] == {"filer_eori": FILER, "lrn": "INBLATE1", "mrn": MRN,
                                                     "state": "do-not-load"}


# ----------------------------------------------------------------------------------------------- orphans
@pytest.mark.parametrize("content,reason", [
    (b"not xml at all", "payload cannot be read: payload is not acceptable XML: payload is not well-formed XML: "
                        "Start tag expected, '<' not found, line 1, column 1 (<string>, line 1)"),
    (None, "no payload")])
async def test_unreadable_or_missing_payload_is_kept_as_an_orphan(world: World, content: bytes | None,
                                                                  reason: str) -> None:
    w = world
    await registered(w, "INBORPH1")
    got, receipt = await w.send("IE3N03", content, message_id="orph@sti.test")
    assert (got.receipt_body, got.duplicate) == (receipt.body, False)   # answered all the same: never dropped
    [orphan] = w.reader.list_orphans()
    assert (orphan.message.message_id, orphan.message.state, orphan.reason, orphan.created_at) == \
        ("orph@sti.test", "orphan", reason, ts())
    assert w.events("orph@sti.test")[1:] == [("inbound-orphan", None, {"reason": reason, "sender": CUSTOMS})]
    meta = w.meta("orph@sti.test")
    assert (meta["filing"], meta["correlated_by"], meta["lrn"], meta["mrn"], meta["functional_reference"]) == \
        (None, "none", None, None, None)
    assert [p["file"] for p in meta["parts"]] == (["orph@sti.test.part1.xml"] if content else [])
    if content:
        assert (w.inbox / "orph@sti.test.part1.xml").read_bytes() == content
    assert w.alerts.raised[-1] == {"alert": "orphan", "environment": "conformance", "message_id": "orph@sti.test",
                                   "action": "IE3N03", "category": "B", "unmatched": True,
                                   "why": "matches no filing", "reference": None, "mrn": None, "lrn": None}
    assert len(w.alerts.raised) == 1 and len(list(w.status.iterdir())) == 1   # only the registration's status


async def test_notification_for_an_unknown_mrn_is_an_orphan_with_its_reference(world: World) -> None:
    w = world
    await w.send("IE3Q03", by_mrn("IE3Q03", "26NLZ8P0RJ4KD5KPZ9"), message_id="q03-orph@sti.test")
    [orphan] = w.reader.list_orphans()
    assert orphan.reason == "IE3Q03 matches no filing (reference '26NLZ8P0RJ4KD5KPZ9')"
    assert w.alerts.raised == [{
        "alert": "screening-requested", "environment": "conformance", "message_id": "q03-orph@sti.test",
        "action": "IE3Q03", "category": "A", "unmatched": True,
        "why": "customs asks for HRCM screening of goods we carry", "reference": "26NLZ8P0RJ4KD5KPZ9",
        "mrn": "26NLZ8P0RJ4KD5KPZ9", "lrn": None}]
    assert w.reader.get_message("q03-orph@sti.test", direction="in").functional_reference == "26NLZ8P0RJ4KD5KPZ9"
    assert list(w.status.iterdir()) == [] and w.reader.list_requests(open_only=False) == []


# ----------------------------------------------------------------------------------------------- P-Mode tolerance
async def test_tolerated_deviation_is_delivered_journaled_and_alerted(world: World) -> None:
    w = world
    filing = await registered(w, "INBTOL1")
    why = "EBMS:0001: Service 'urn:other:service' of message tol-push@sti.test is not known to any P-Mode"
    await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id="tol-push@sti.test", service="urn:other:service")
    assert w.meta("tol-push@sti.test")["pmode_tolerated"] == [why]
    assert w.events("tol-push@sti.test")[1] == \
        ("pmode-tolerated", filing.id, {"action": "IE3N03", "channel": "push", "deviations": [why]})
    assert w.alerts.raised == [{"alert": "pmode-tolerated", "environment": "conformance",
                                "message_id": "tol-push@sti.test", "action": "IE3N03", "channel": "push",
                                "deviations": why}]
    assert w.reader.get_filing(filing.id).state == S.ASSESSMENT_COMPLETE    # delivered and applied as usual


async def test_pulled_message_gets_the_pull_p_mode_with_its_deviations(world: World) -> None:
    w = world
    why = ["Service: 'urn:other:service' instead of 'eu_ics2_c2t'"]
    await w.send("IE3N77", by_mrn("IE3N77", MRN), message_id="tol-pull@sti.test", service="urn:other:service",
                 channel="pull")
    tolerated = w.meta("tol-pull@sti.test")["pmode_tolerated"]
    # a pulled message is never refused (its ebMS error would be final at the TI): every mismatch is tolerated
    assert tolerated == [*why, "Action: 'IE3N77' is not one of its actions (catalogue:c2t)"]
    assert w.events("tol-pull@sti.test")[1] == \
        ("pmode-tolerated", None, {"action": "IE3N77", "channel": "pull", "deviations": tolerated})
    assert w.alerts.raised[0] == {"alert": "pmode-tolerated", "environment": "conformance",
                                  "message_id": "tol-pull@sti.test", "action": "IE3N77", "channel": "pull",
                                  "deviations": "; ".join(tolerated)}


async def test_conformant_messages_have_no_deviations_on_either_channel(world: World) -> None:
    w = world
    for channel in ("push", "pull"):
        await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id=f"ok-{channel}@sti.test", channel=channel)
        assert w.meta(f"ok-{channel}@sti.test")["pmode_tolerated"] == []
        assert "pmode-tolerated" not in [e[0] for e in w.events(f"ok-{channel}@sti.test")]
    assert [a["alert"] for a in w.alerts.raised] == ["orphan", "orphan"]


async def test_without_p_modes_nothing_is_reported_tolerated(tmp_path: Path, pki: Path) -> None:
    w = World(tmp_path, pki, pmodes=None)
    try:
        await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id="nopm@sti.test", service="urn:other:service")
        assert w.meta("nopm@sti.test")["pmode_tolerated"] == []
        assert [a["alert"] for a in w.alerts.raised] == ["orphan"]
    finally:
        await w.close()


# ----------------------------------------------------------------------------------------------- consultations (IE3Q05)
def q05(mrn: str) -> bytes:
    return by_mrn("IE3Q05", mrn)


async def test_answer_to_a_consultation_without_filing_is_settled_not_orphaned(world: World) -> None:
    w = world
    other = "26DEZ8P0RJ4KD5KPB2"
    acc = await w.acceptor.accept(q05(other))
    assert acc.filing is None and acc.message_id
    await w.send("IE3R08", by_mrn("IE3R08", other), message_id="r08@sti.test", ref=acc.message_id)
    meta = w.meta("r08@sti.test")
    assert (meta["filing"], meta["correlated_by"], meta["consultation"]) == \
        (None, "RefToMessageId", {"request_message_id": acc.message_id, "action": "IE3Q05"})
    got = w.inbound("r08@sti.test")
    assert (got.state, got.business_outcome, got.filing_id) == ("processed", "answered", None)
    assert w.reader.get_message(acc.message_id).business_outcome == "answered"
    assert w.events("r08@sti.test")[1:] == [
        ("inbound-answered-request", None, {"action": "IE3R08", "answers": acc.message_id, "outcome": "answered"})]
    assert w.reader.list_orphans() == [] and w.alerts.raised == [] and list(w.status.iterdir()) == []


async def test_rejected_consultation_is_settled_rejected_and_alerted(world: World) -> None:
    w = world
    other = "26DEZ8P0RJ4KD5KPB3"
    acc = await w.acceptor.accept(q05(other))
    n99 = payload("resp-IE3N99-error.xml", functionalReference=other)
    await w.send("IE3N99", n99, message_id="n99-q05@sti.test", ref=acc.message_id)
    got = w.inbound("n99-q05@sti.test")
    assert (got.state, got.business_outcome) == ("processed", "rejected")
    assert w.reader.get_message(acc.message_id).business_outcome == "rejected"
    assert w.events("n99-q05@sti.test")[1:] == [
        ("inbound-answered-request", None, {"action": "IE3N99", "answers": acc.message_id, "outcome": "rejected"})]
    assert w.alerts.raised == [{"alert": "consultation-rejected", "environment": "conformance",
                                "message_id": "n99-q05@sti.test", "action": "IE3N99",
                                "request_message_id": acc.message_id}]


async def test_pulled_consultation_answer_without_ref_finds_the_oldest_unanswered_request(world: World) -> None:
    """ICD 4.1.3.3: a pulled IE3R08 has no RefToMessageId; it answers our oldest unanswered IE3Q05 about its MRN."""
    w = world
    other = "26DEZ8P0RJ4KD5KPB4"
    first = await w.acceptor.accept(q05(other))
    unrelated = await w.acceptor.accept(q05("26DEZ8P0RJ4KD5KPB5"))
    await w.send("IE3R08", by_mrn("IE3R08", other), message_id="r08-pull1@sti.test", channel="pull")
    meta = w.meta("r08-pull1@sti.test")
    assert (meta["correlated_by"], meta["consultation"]) == \
        ("request-reference", {"request_message_id": first.message_id, "action": "IE3Q05"})
    assert w.reader.get_message(first.message_id).business_outcome == "answered"
    assert w.reader.get_message(unrelated.message_id).business_outcome is None
    # the next answer about the same MRN: no unanswered request left, an orphan (reported, not guessed)
    await w.send("IE3R08", by_mrn("IE3R08", other), message_id="r08-pull2@sti.test", channel="pull")
    assert w.meta("r08-pull2@sti.test")["correlated_by"] == "none"
    [orphan] = w.reader.list_orphans()
    assert (orphan.message.message_id, orphan.reason) == \
        ("r08-pull2@sti.test", f"IE3R08 matches no filing (reference {other!r})")


async def test_consultation_answer_of_our_own_filing_is_attached_and_answers_the_request(world: World) -> None:
    w = world
    filing = await registered(w, "INBQ05A")
    acc = await w.acceptor.accept(q05(MRN))
    await w.send("IE3R08", by_mrn("IE3R08", MRN), message_id="r08-own@sti.test", channel="pull")
    meta = w.meta("r08-own@sti.test")
    assert (meta["correlated_by"], meta["consultation"], meta["filing"]["lrn"]) == \
        ("request-reference", None, "INBQ05A")
    assert w.inbound("r08-own@sti.test").filing_id == filing.id
    assert w.reader.get_message(acc.message_id).business_outcome == "answered"
    assert w.reader.get_filing(filing.id).state == S.REGISTERED
    assert [(e.event, e.message_id, e.detail) for e in w.reader.events(filing_id=filing.id)][-2:] == [
        ("message-answered", acc.message_id, {"outcome": "answered"}),
        ("notification-IE3R08", "r08-own@sti.test", {"action": "IE3R08"})]


async def test_answer_with_an_unknown_ref_to_message_id_falls_back_to_its_references(world: World) -> None:
    w = world
    filing = await registered(w, "INBREF2")
    await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id="n03-badref@sti.test", ref="nobody@ap.trader.test")
    assert w.meta("n03-badref@sti.test")["correlated_by"] == "MRN"
    assert w.reader.get_filing(filing.id).state == S.ASSESSMENT_COMPLETE


# ----------------------------------------------------------------------------------------------- pulled Receipts
async def test_pulled_receipt_is_pending_until_acknowledged_and_abandonment_alerts(world: World) -> None:
    w = world
    filing = await registered(w, "INBACK1")
    _, r1 = await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id="ack1@sti.test", channel="pull")
    _, r2 = await w.send("IE3Q02", by_mrn("IE3Q02", MRN), message_id="ack2@sti.test", channel="pull")
    assert w.inbound("r01-INBACK1@sti.test").ack_state is None          # pushed: answered on the HTTP response
    assert [(a.sender_party, a.message_id, a.receipt, a.receipt_content_type) for a in await w.sink.pending_acks()] \
        == [(CUSTOMS, "ack1@sti.test", r1.body, r1.content_type), (CUSTOMS, "ack2@sti.test", r2.body, r2.content_type)]
    alerts = len(w.alerts.raised)
    await w.sink.ack_settled("ack1@sti.test", "acknowledged")
    assert [a.message_id for a in await w.sink.pending_acks()] == ["ack2@sti.test"]
    assert w.inbound("ack1@sti.test").ack_state == "acknowledged"
    assert w.events("ack1@sti.test")[-1] == ("ack-acknowledged", None, {"sender": None})
    assert len(w.alerts.raised) == alerts
    await w.sink.ack_settled("ack2@sti.test", "abandoned", {"attempts": 7, "error": "HTTP 503"})
    assert await w.sink.pending_acks() == []
    assert w.inbound("ack2@sti.test").ack_state == "abandoned"
    [ev] = [e for e in w.reader.events(message_id="ack2@sti.test") if e.event == "ack-abandoned"]
    assert (ev.at, ev.detail) == (ts(), {"sender": None, "attempts": 7, "error": "HTTP 503"})
    assert w.alerts.raised[alerts:] == [{"alert": "receipt-not-acknowledged", "environment": "conformance",
                                         "message_id": "ack2@sti.test", "attempts": 7, "error": "HTTP 503"}]
    await w.sink.ack_settled("ack1@sti.test", "abandoned")
    assert w.alerts.raised[-1] == {"alert": "receipt-not-acknowledged", "environment": "conformance",
                                   "message_id": "ack1@sti.test"}
    assert w.reader.get_filing(filing.id).state == S.ASSESSMENT_COMPLETE     # IE3N03, then IE3Q02: no way back


# ----------------------------------------------------------------------------------------------- inbox names
async def test_inbox_files_are_named_injectively_by_the_exact_message_id(world: World) -> None:
    w = world
    digest = hashlib.sha256(b"a/b@sti.test").hexdigest()[:16]
    await w.send("IE3N03", by_mrn("IE3N03", "26NLZ8P0RJ4KD5KPN1"), message_id="a/b@sti.test")
    await w.send("IE3N03", by_mrn("IE3N03", "26NLZ8P0RJ4KD5KPN2"), message_id="a_b@sti.test")
    assert w.files() == [f"a_b@sti.test.json", "a_b@sti.test.part1.xml",
                         f"a_b@sti.test~{digest}.json", f"a_b@sti.test~{digest}.part1.xml"]
    unsafe = json.loads((w.inbox / f"a_b@sti.test~{digest}.json").read_text())
    assert (unsafe["message_id"], unsafe["mrn"], unsafe["parts"][0]["file"]) == \
        ("a/b@sti.test", "26NLZ8P0RJ4KD5KPN1", f"a_b@sti.test~{digest}.part1.xml")
    assert json.loads((w.inbox / "a_b@sti.test.json").read_text())["mrn"] == "26NLZ8P0RJ4KD5KPN2"


# ----------------------------------------------------------------------------------------------- parts
async def test_parts_are_delivered_decompressed_in_order_with_suffixes_and_declarations(world: World) -> None:
    w = world
    filing = await registered(w, "INBPARTS")
    q02 = by_mrn("IE3Q02", MRN).replace(
        b"</IE3Q02>", b"<binaryFile><identification>doc1@sti.test</identification><filename>invoice.pdf</filename>"
                      b"<MIME>application/pdf</MIME><description>Commercial invoice</description></binaryFile>"
                      b"</IE3Q02>")
    extra = [Part("doc1@sti.test", "application/pdf", PDF, compress=False),          # uncompressed: accepted (eDel 1.4.3.1)
             Part("photo@sti.test", "image/jpeg", JPEG),                     # compressed
             Part("blob@sti.test", "application/octet-stream", b"\x00\x01raw")]
    await w.send("IE3Q02", q02, message_id="parts@sti.test", extra=extra)
    assert [n for n in w.files() if n.startswith("parts@")] == [
        "parts@sti.test.json", "parts@sti.test.part1.xml", "parts@sti.test.part2.pdf", "parts@sti.test.part3.jpg",
        "parts@sti.test.part4.bin"]
    assert (w.inbox / "parts@sti.test.part1.xml").read_bytes() == q02
    assert (w.inbox / "parts@sti.test.part2.pdf").read_bytes() == PDF
    assert (w.inbox / "parts@sti.test.part3.jpg").read_bytes() == JPEG
    assert (w.inbox / "parts@sti.test.part4.bin").read_bytes() == b"\x00\x01raw"
    assert w.meta("parts@sti.test")["parts"] == [
        {"file": "parts@sti.test.part1.xml", "order": 1, "href": "cid:payload@sti.test", "mime_type": MIME_XML,
         "charset": "utf-8"},
        {"file": "parts@sti.test.part2.pdf", "order": 2, "href": "cid:doc1@sti.test", "mime_type": "application/pdf",
         "charset": None, "identification": "doc1@sti.test", "filename": "invoice.pdf",
         "description": "Commercial invoice"},
        {"file": "parts@sti.test.part3.jpg", "order": 3, "href": "cid:photo@sti.test", "mime_type": "image/jpeg",
         "charset": None},
        {"file": "parts@sti.test.part4.bin", "order": 4, "href": "cid:blob@sti.test",
         "mime_type": "application/octet-stream", "charset": None}]
    assert w.reader.get_filing(filing.id).state == S.INFO_REQUESTED       # correlated by the first part
    assert no_staged_files(w)


async def test_a_payload_over_the_receive_cap_is_refused_and_leaves_nothing_behind(tmp_path: Path, pki: Path) -> None:
    """The decompression cap of the sink's limits (EBMS:0303): the parts staged before the failing one are removed,
    nothing is journaled, nothing delivered."""
    from gateway.ebms.errors import EbmsFault
    from gateway.config import load_gateway_config
    limits = dataclasses.replace(load_gateway_config(REPO / "conf" / "gateway.toml").limits,
                                 recv_max_payload_bytes=4096)
    w = World(tmp_path, pki, limits=limits)
    try:
        big = [Part("big@sti.test", "application/pdf", PDF + b"\x00" * 5000)]
        with pytest.raises(EbmsFault) as exc:
            await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id="big@sti.test", extra=big)
        assert exc.value.code == "EBMS:0303" and "payload big@sti.test cannot be decompressed" in exc.value.message
        assert w.files() == [] and w.inbound("big@sti.test") is None and w.alerts.raised == []
        # within the cap: delivered
        await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id="small@sti.test",
                     extra=[Part("small@sti.test", "application/pdf", PDF)])
        assert w.files() == ["small@sti.test.json", "small@sti.test.part1.xml", "small@sti.test.part2.pdf"]
    finally:
        await w.close()


# ----------------------------------------------------------------------------------------------- rejections
async def test_rejection_of_the_filing_message_rejects_the_filing_and_alerts(world: World) -> None:
    w = world
    acc = await w.acceptor.accept(ens("INBREJ1"))
    n99 = payload("resp-IE3N99-error.xml", functionalReference="INBREJ1")
    await w.send("IE3N99", n99, message_id="n99-rej@sti.test", ref=acc.message_id)
    filing = w.reader.get_filing(acc.filing.id)
    assert filing.state == S.REJECTED
    assert w.reader.get_message(acc.message_id).business_outcome == "rejected"
    assert w.meta("n99-rej@sti.test")["filing"] == {"filer_eori": FILER, "lrn": "INBREJ1", "mrn": None,
                                                    "state": "rejected"}
    assert w.alerts.raised == [{"alert": "filing-rejected", "environment": "conformance", "lrn": "INBREJ1",
                                "mrn": None, "action": "IE3N99", "message_id": "n99-rej@sti.test"}]
    assert w.status_file(filing)["state"] == "rejected"


async def test_rejection_found_by_lrn_rejects_the_filing_message(world: World) -> None:
    w = world
    acc = await w.acceptor.accept(ens("INBREJ2"))
    await w.send("IE3N99", payload("resp-IE3N99-error.xml", functionalReference="INBREJ2"), message_id="n99-l@sti.test")
    assert w.meta("n99-l@sti.test")["correlated_by"] == "LRN"
    assert w.reader.get_filing(acc.filing.id).state == S.REJECTED
    assert [a["alert"] for a in w.alerts.raised] == ["filing-rejected"]


async def receipted_follow_up(w: World, filing: Any, data: bytes) -> str:
    """Our follow-up ``data`` accepted, sent and receipted: the sender's journal steps on its Receipt (the follow-up
    transition of ``correlate.follow_up_state``). Returns its MessageId."""
    from gateway.pipeline.correlate import follow_up_state
    acc = await w.acceptor.accept(data)
    assert acc.follow_up and acc.filing.id == filing.id
    msg = w.reader.get_message(acc.message_id)

    def receipted(j: Any) -> None:
        nxt = follow_up_state(msg.action, j.get_filing(filing.id).state)
        assert nxt
        j.transition(filing.id, nxt, now=NOW, event=f"follow-up-{msg.action}", detail={"message_id": msg.message_id})
    await w.writer.submit(receipted)
    return acc.message_id


async def answered_request(w: World, lrn: str) -> tuple[Any, str, str]:
    """A registered filing, customs' IE3Q02, our IE3R02 answer receipted (the sender's journal steps: the request
    closed as answered, the follow-up transition): (filing, the IE3Q02's MessageId, the IE3R02's MessageId)."""
    filing = await registered(w, lrn)
    await w.send("IE3Q02", by_mrn("IE3Q02", MRN), message_id=f"q02-{lrn}@sti.test")
    answer = await w.acceptor.accept(by_mrn("IE3R02", MRN))
    assert answer.follow_up and answer.filing.id == filing.id
    [req] = w.reader.list_requests(filing_id=filing.id)

    def receipted(j: Any) -> None:
        j.close_request(req.id, now=NOW, answer_message_id=answer.message_id)
        j.transition(filing.id, S.REGISTERED, now=NOW, event="follow-up-IE3R02",
                     detail={"message_id": answer.message_id})
    await w.writer.submit(receipted)
    assert w.reader.get_filing(filing.id).state == S.REGISTERED
    return filing, f"q02-{lrn}@sti.test", answer.message_id


async def test_rejected_answer_reopens_the_request_and_restores_the_state(world: World) -> None:
    """IE3N99 on our IE3R02: customs did not accept the answer, the question stands (ICD Annex 1): the request is
    open again, the filing back in info-requested, the IE3R02 rejected, the operator alerted."""
    w = world
    filing, q02, r02 = await answered_request(w, "INBFUP1")
    alerts = len(w.alerts.raised)
    n99 = payload("resp-IE3N99-error.xml", functionalReference=MRN)
    await w.send("IE3N99", n99, message_id="n99-fup@sti.test", ref=r02)
    now = w.reader.get_filing(filing.id)
    assert now.state == S.INFO_REQUESTED
    [req] = w.reader.list_requests(filing_id=filing.id, open_only=False)
    assert (req.kind, req.state, req.answer_message_id, req.opened_at) == ("IE3Q02", "open", None, ts())
    [ev] = [e for e in w.reader.events(filing_id=filing.id) if e.event == "request-reopened"]
    assert ev.detail == {"kind": "IE3Q02", "request": q02, "rejected_answer": r02,
                         "reason": f"IE3N99 n99-fup@sti.test rejected the answer"}
    assert w.reader.get_message(r02).business_outcome == "rejected"
    assert [(e.event, e.detail) for e in w.reader.events(filing_id=filing.id)][-1] == \
        ("follow-up-rejected", {"action": "IE3N99", "from": "registered", "message_id": "n99-fup@sti.test",
                                "to": "info-requested"})
    assert w.alerts.raised[alerts:] == [{"alert": "follow-up-rejected", "environment": "conformance",
                                         "lrn": "INBFUP1", "mrn": MRN, "action": "IE3N99",
                                         "message_id": "n99-fup@sti.test", "reopened_request": "IE3Q02"}]
    assert w.status_file(now)["state"] == "info-requested"


async def test_rejected_follow_up_found_without_ref_is_the_pending_one(world: World) -> None:
    """An IE3N01 found by MRN (no RefToMessageId) answers our newest follow-up still waiting for an answer."""
    w = world
    filing, q02, r02 = await answered_request(w, "INBFUP2")
    n01 = payload("resp-IE3N01-lifecycle-error.xml", functionalReference=MRN)
    await w.send("IE3N01", n01, message_id="n01-fup@sti.test")
    assert w.meta("n01-fup@sti.test")["correlated_by"] == "MRN"
    assert w.reader.get_filing(filing.id).state == S.INFO_REQUESTED
    [req] = w.reader.list_requests(filing_id=filing.id, open_only=False)
    assert req.state == "open"
    assert w.alerts.raised[-1] == {"alert": "follow-up-rejected", "environment": "conformance", "lrn": "INBFUP2",
                                   "mrn": MRN, "action": "IE3N01", "message_id": "n01-fup@sti.test",
                                   "reopened_request": "IE3Q02"}


async def test_rejected_invalidation_request_leaves_the_filing_registered(world: World) -> None:
    w = world
    filing = await registered(w, "INBFUP3")
    q04 = await w.acceptor.accept(by_mrn("IE3Q04", MRN))
    n01 = payload("resp-IE3N01-lifecycle-error.xml", functionalReference=MRN)
    await w.send("IE3N01", n01, message_id="n01-q04@sti.test", ref=q04.message_id)
    assert w.reader.get_filing(filing.id).state == S.REGISTERED
    assert w.reader.get_message(q04.message_id).business_outcome == "rejected"
    assert w.reader.list_requests(filing_id=filing.id, open_only=False) == []
    assert w.alerts.raised[-1] == {"alert": "follow-up-rejected", "environment": "conformance", "lrn": "INBFUP3",
                                   "mrn": MRN, "action": "IE3N01", "message_id": "n01-q04@sti.test"}
    assert [(e.event, e.message_id, e.detail) for e in w.reader.events(filing_id=filing.id)][-1] == \
        ("follow-up-rejected", "n01-q04@sti.test", {"action": "IE3N01"})


async def test_risk_message_outrunning_the_registration_registers_on_the_way(world: World) -> None:
    w = world
    acc = await w.acceptor.accept(ens("INBVIA1"))
    q01 = by_mrn("IE3Q01", MRN).replace(b"<MRN>", b"<LRN>INBVIA1</LRN><MRN>")
    await w.send("IE3Q01", q01, message_id="q01-via@sti.test")
    filing = w.reader.get_filing(acc.filing.id)
    assert (filing.state, filing.mrn) == (S.DO_NOT_LOAD, MRN)
    moves = [(e.event, e.detail) for e in w.reader.events(filing_id=filing.id) if "from" in e.detail]
    assert moves[-2:] == [
        ("do-not-load", {"action": "IE3Q01", "from": "queued", "message_id": "q01-via@sti.test", "mrn": MRN,
                         "to": "registered"}),
        ("do-not-load", {"action": "IE3Q01", "from": "registered", "message_id": "q01-via@sti.test",
                         "to": "do-not-load"})]
    assert w.alerts.raised == [{"alert": "do-not-load", "environment": "conformance", "lrn": "INBVIA1",
                                "mrn": MRN, "action": "IE3Q01", "message_id": "q01-via@sti.test"}]


# ----------------------------------------------------------------------------------------------- operator read-outs
def answers_observed(action: str) -> float:
    from gateway.ops.metrics import REGISTRY
    return REGISTRY.get_sample_value("ics2gw_business_answer_latency_seconds_count", {"action": action}) or 0.0


async def test_each_delivery_is_logged_once_and_answers_to_filings_are_measured(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    w = world
    caplog.set_level("INFO", logger="ics2gw.inbound")
    before = answers_observed("IE3N03"), answers_observed("IE3Q03")
    filing = await registered(w, "INBLOG1")
    await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id="log/1@sti.test", channel="pull")
    await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id="log/1@sti.test", channel="pull")   # duplicate
    await w.send("IE3Q03", by_mrn("IE3Q03", "26NLZ8P0RJ4KD5KPZ8"), message_id="log-2@sti.test")   # orphan
    from gateway.pipeline.delivery import inbox_name
    assert [r.getMessage() for r in caplog.records if r.name == "ics2gw.inbound"] == [
        f"inbound message_id=r01-INBLOG1@sti.test action=IE3R01 channel=push correlated_by=RefToMessageId "
        f"file=r01-INBLOG1@sti.test",
        f"inbound message_id=log/1@sti.test action=IE3N03 channel=pull correlated_by=MRN "
        f"file={inbox_name('log/1@sti.test')}",
        "inbound message_id=log-2@sti.test action=IE3Q03 channel=push correlated_by=none file=log-2@sti.test"]
    # the answer latency histogram: one observation per business answer about a filing, none for the duplicate or
    # the orphan
    assert (answers_observed("IE3N03"), answers_observed("IE3Q03")) == (before[0] + 1, before[1])
    assert w.reader.get_filing(filing.id).state == S.ASSESSMENT_COMPLETE


async def test_a_delivery_that_fails_leaves_no_staged_payload_behind(world: World) -> None:
    """The inbox cannot take the payload (its file name is taken by a folder): the delivery fails (the transport
    then answers with an error and customs resends), the decompressed payload staged in the inbox is removed and
    nothing is journaled."""
    w = world
    blocker = w.inbox / "blocked@sti.test.part1.xml"
    blocker.mkdir()
    (blocker / "keep").write_bytes(b"x")
    with pytest.raises(OSError):
        await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id="blocked@sti.test")
    assert w.files() == ["blocked@sti.test.part1.xml"]                  # only the folder that was there
    assert w.inbound("blocked@sti.test") is None and w.alerts.raised == []


async def test_without_a_clock_the_sink_stamps_utc_now(tmp_path: Path, pki: Path) -> None:
    w = World(tmp_path, pki, clock=None)
    try:
        start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id="clock@sti.test", channel="pull")
        await w.sink.ack_settled("clock@sti.test", "acknowledged")
        end = dt.datetime.now(dt.timezone.utc)
        received = dt.datetime.strptime(w.meta("clock@sti.test")["received"], "%Y-%m-%dT%H:%M:%SZ")
        assert start <= received.replace(tzinfo=dt.timezone.utc) <= end
        got = w.reader.get_message("clock@sti.test", direction="in")
        stamped = dt.datetime.fromisoformat(got.created_at.replace("Z", "+00:00"))
        assert start <= stamped <= end and got.ack_state == "acknowledged"
    finally:
        await w.close()


async def test_the_journal_keeps_the_message_as_received(world: World) -> None:
    w = world
    ctype, body = w.sealed("IE3N03", [Part("payload@sti.test", MIME_XML, by_mrn("IE3N03", MRN))],
                           message_id="asis@sti.test")
    opened = w.trader.open(ctype, body)
    receipt = w.trader.receipt_for(opened)
    await w.sink.deliver(opened, ctype, body, receipt, "push")
    got = w.reader.get_message("asis@sti.test", direction="in", with_bytes=True)
    assert (got.content_type, got.sealed, got.receipt, got.receipt_content_type, got.sender_party) == \
        (ctype, body, receipt.body, receipt.content_type, CUSTOMS)


async def test_inbox_metadata_of_a_rejected_answer_says_where_the_filing_goes(world: World) -> None:
    """The inbox metadata tells the ERP what the message does to the filing: for an IE3N99 rejecting our answer to
    an information request that is info-requested again (as the journal and the status file say), not registered."""
    w = world
    filing, q02, r02 = await answered_request(w, "INBFUP4")
    n99 = payload("resp-IE3N99-error.xml", functionalReference=MRN)
    await w.send("IE3N99", n99, message_id="n99-meta@sti.test", ref=r02)
    now = w.reader.get_filing(filing.id)
    assert now.state == S.INFO_REQUESTED
    assert w.meta("n99-meta@sti.test")["filing"] == {"filer_eori": FILER, "lrn": "INBFUP4", "mrn": MRN,
                                                     "state": "info-requested"}
    assert w.status_file(now)["state"] == "info-requested"


# ----------------------------------------------------------------------------------------------- more correlation cases
@pytest.mark.parametrize("action,fixture_name", [("IE3N99", "resp-IE3N99-error.xml"),
                                                 ("IE3N01", "resp-IE3N01-lifecycle-error.xml")])
async def test_both_error_notifications_reject_a_consultation(world: World, action: str, fixture_name: str) -> None:
    w = world
    other = "26DEZ8P0RJ4KD5KPB6"
    acc = await w.acceptor.accept(q05(other))
    await w.send(action, payload(fixture_name, functionalReference=other), message_id=f"{action}-q05@sti.test",
                 ref=acc.message_id)
    assert w.reader.get_message(acc.message_id).business_outcome == "rejected"
    assert [a["alert"] for a in w.alerts.raised] == ["consultation-rejected"]


async def test_notification_after_our_answer_neither_reopens_the_request_nor_marks_the_answer(world: World) -> None:
    """An IE3N03 after our IE3R02 was receipted: the request stays answered, the IE3R02 has no business outcome."""
    w = world
    filing, q02, r02 = await answered_request(w, "INBAFTER")
    await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id="n03-after@sti.test")
    [req] = w.reader.list_requests(filing_id=filing.id, open_only=False)
    assert (req.state, req.answer_message_id) == ("answered", r02)
    assert w.reader.get_message(r02).business_outcome is None
    assert w.reader.get_filing(filing.id).state == S.ASSESSMENT_COMPLETE
    assert "request-reopened" not in [e.event for e in w.reader.events(filing_id=filing.id)]
    assert [a["alert"] for a in w.alerts.raised] == ["information-requested"]


async def test_message_with_ref_but_unreadable_payload_is_still_applied_to_its_filing(world: World) -> None:
    """Correlated by RefToMessageId alone: an IE3R01 whose payload cannot be read still registers the filing it
    answers (no MRN learned), and is not an orphan."""
    w = world
    acc = await w.acceptor.accept(ens("INBNOFACTS"))
    await w.send("IE3R01", b"<<not xml>>", message_id="r01-nofacts@sti.test", ref=acc.message_id)
    filing = w.reader.get_filing(acc.filing.id)
    assert (filing.state, filing.mrn) == (S.REGISTERED, None)
    meta = w.meta("r01-nofacts@sti.test")
    assert (meta["correlated_by"], meta["filing"], meta["lrn"], meta["mrn"]) == \
        ("RefToMessageId", {"filer_eori": FILER, "lrn": "INBNOFACTS", "mrn": None, "state": "registered"},
         None, None)
    assert w.reader.list_orphans() == []
    assert w.reader.get_message(acc.message_id).business_outcome == "registered"


async def test_notification_with_ref_records_its_event_on_the_message_it_references(world: World) -> None:
    """A notification has no message outcome of its own (ICD: information only): the message it references gets
    the notification's event (as the journal's correlation records it), not a cleared or an 'answered' outcome."""
    w = world
    acc = await w.acceptor.accept(ens("INBKEEP"))
    await w.send("IE3R01", r01("INBKEEP"), message_id="r01-keep@sti.test", ref=acc.message_id)
    await w.send("IE3N03", by_mrn("IE3N03", MRN), message_id="n03-keep@sti.test", ref=acc.message_id)
    assert w.reader.get_message(acc.message_id).business_outcome == "assessment-complete"
    assert w.reader.get_filing(acc.filing.id).state == S.ASSESSMENT_COMPLETE
    assert [e.detail for e in w.reader.events(message_id=acc.message_id) if e.event == "message-answered"] == \
        [{"outcome": "registered"}]


async def test_a_later_message_naming_another_mrn_does_not_replace_the_registered_one(world: World) -> None:
    w = world
    acc = await w.acceptor.accept(ens("INBMRN2"))
    await w.send("IE3R01", r01("INBMRN2"), message_id="r01-mrn2@sti.test", ref=acc.message_id)
    await w.send("IE3Q02", by_mrn("IE3Q02", "26NLZ8P0RJ4KD5KPX9"), message_id="q02-mrn2@sti.test",
                 ref=acc.message_id)
    filing = w.reader.get_filing(acc.filing.id)
    assert (filing.state, filing.mrn) == (S.INFO_REQUESTED, MRN)
    await w.send("IE3N10", by_mrn("IE3N10", "26NLZ8P0RJ4KD5KPX8"), message_id="n10-mrn2@sti.test",
                 ref=acc.message_id)
    assert w.reader.get_filing(acc.filing.id).mrn == MRN


async def test_two_part_message_carries_the_declaration_of_its_attachment(world: World) -> None:
    w = world
    await registered(w, "INB2PART")
    q03 = by_mrn("IE3Q03", MRN).replace(
        b"</IE3Q03>", b"<binaryFile><identification>scan@sti.test</identification><filename>scan.jpg</filename>"
                      b"<MIME>image/jpeg</MIME><description>X-ray image</description></binaryFile></IE3Q03>")
    await w.send("IE3Q03", q03, message_id="two@sti.test", extra=[Part("scan@sti.test", "image/jpeg", JPEG)])
    assert w.meta("two@sti.test")["parts"][1] == {
        "file": "two@sti.test.part2.jpg", "order": 2, "href": "cid:scan@sti.test", "mime_type": "image/jpeg",
        "charset": None, "identification": "scan@sti.test", "filename": "scan.jpg", "description": "X-ray image"}


async def test_invalidation_accepted_keeps_the_mrn_in_the_inbox_metadata(world: World) -> None:
    w = world
    filing = await registered(w, "INBR07")
    q04 = await receipted_follow_up(w, filing, by_mrn("IE3Q04", MRN))
    assert w.reader.get_filing(filing.id).state == S.INVALIDATION_REQUESTED
    r07 = payload("resp-IE3R07-invalidation-accepted.xml", MRN=MRN)
    await w.send("IE3R07", r07, message_id="r07@sti.test", ref=q04)
    assert w.meta("r07@sti.test")["filing"] == {"filer_eori": FILER, "lrn": "INBR07", "mrn": MRN,
                                                "state": "invalidated"}
    assert w.reader.get_filing(filing.id).state == S.INVALIDATED
    assert w.reader.get_message(q04).business_outcome == "invalidated"


async def test_rejected_invalidation_of_an_amended_filing_leaves_it_amended(world: World) -> None:
    w = world
    filing = await registered(w, "INBAMD1")
    amendment = fixture("amd-IE3A32-express.xml").replace(b"24NLZ8P0RJ4KD5KPA1", MRN.encode())
    a32 = await receipted_follow_up(w, filing, amendment)
    assert w.reader.get_filing(filing.id).state == S.PENDING_AMENDMENT
    await w.send("IE3N10", by_mrn("IE3N10", MRN), message_id="n10-amd@sti.test", ref=a32)
    assert w.reader.get_filing(filing.id).state == S.AMENDED
    q04 = await receipted_follow_up(w, filing, by_mrn("IE3Q04", MRN))
    n01 = payload("resp-IE3N01-lifecycle-error.xml", functionalReference=MRN)
    await w.send("IE3N01", n01, message_id="n01-amd@sti.test", ref=q04)
    assert w.reader.get_filing(filing.id).state == S.AMENDED
    assert w.meta("n01-amd@sti.test")["filing"]["state"] == "amended"


async def test_rejection_naming_the_lrn_answers_the_filing_message_not_a_pending_follow_up(world: World) -> None:
    """IE3N99 found by the LRN (the IE3F32's functional reference) answers the filing message, even when a
    follow-up (found by MRN) is still waiting for its answer."""
    w = world
    acc = await w.acceptor.accept(ens("INBLRNREJ"))
    await w.send("IE3R01", r01("INBLRNREJ"), message_id="r01-lrnrej@sti.test")     # no ref: IE3F32 left unanswered
    await w.acceptor.accept(by_mrn("IE3Q04", MRN))
    await w.send("IE3N99", payload("resp-IE3N99-error.xml", functionalReference="INBLRNREJ"),
                 message_id="n99-lrnrej@sti.test")
    assert w.meta("n99-lrnrej@sti.test")["correlated_by"] == "LRN"
    assert [a["alert"] for a in w.alerts.raised] == ["filing-rejected"]


async def test_unknown_action_with_a_readable_payload_is_correlated_by_the_payload(world: World) -> None:
    """A newer-catalogue action (tolerated by the P-Mode) carrying a payload we can read: correlated by its
    references all the same."""
    w = world
    filing = await registered(w, "INBNEWACT")
    await w.send("IE3N88", by_mrn("IE3N03", MRN), message_id="n88@sti.test")
    meta = w.meta("n88@sti.test")
    assert (meta["correlated_by"], meta["filing"]["lrn"], meta["action"]) == ("MRN", "INBNEWACT", "IE3N88")
    assert w.inbound("n88@sti.test").filing_id == filing.id


async def test_pulled_consultation_answer_with_unreadable_payload_is_an_orphan(world: World) -> None:
    w = world
    await w.acceptor.accept(q05("26DEZ8P0RJ4KD5KPB7"))
    await w.send("IE3R08", b"garbage", message_id="r08-garbage@sti.test", channel="pull")
    meta = w.meta("r08-garbage@sti.test")
    assert (meta["correlated_by"], meta["consultation"], meta["filing"]) == ("none", None, None)
    [orphan] = w.reader.list_orphans()
    assert orphan.reason.startswith("payload cannot be read: ")


async def test_a_message_the_operator_attached_is_not_taken_for_a_follow_up_of_ours(world: World) -> None:
    """Only our own outbound user messages wait for an answer: an orphan the operator resolved onto the filing (it
    has no outcome) is not what a later IE3N01 by MRN answers."""
    w = world
    filing = await registered(w, "INBRESOLVED")
    await w.send("IE3N03", by_mrn("IE3N03", "26NLZ8P0RJ4KD5KPZ7"), message_id="n03-stray@sti.test")
    [orphan] = w.reader.list_orphans()
    await w.writer.submit(lambda j: j.resolve_orphan(orphan.id, now=NOW, resolution="operator: ours",
                                                      filing_id=filing.id))
    assert w.inbound("n03-stray@sti.test").filing_id == filing.id
    w.alerts.raised.clear()
    await w.send("IE3N01", payload("resp-IE3N01-lifecycle-error.xml", functionalReference=MRN),
                 message_id="n01-resolved@sti.test")
    assert [a["alert"] for a in w.alerts.raised] == ["filing-rejected"]
    assert w.reader.list_requests(filing_id=filing.id, open_only=False) == []


async def test_an_answered_follow_up_is_not_waiting_for_an_answer_any_more(world: World) -> None:
    """Our IE3Q04, rejected once (IE3N01 with RefToMessageId), has its answer: a later IE3N01 found by MRN does not
    answer it again (nothing of ours is pending, so it is taken as about the filing)."""
    w = world
    filing = await registered(w, "INBANSWERED")
    q04 = await receipted_follow_up(w, filing, by_mrn("IE3Q04", MRN))
    n01 = payload("resp-IE3N01-lifecycle-error.xml", functionalReference=MRN)
    await w.send("IE3N01", n01, message_id="n01-first@sti.test", ref=q04)
    assert w.reader.get_message(q04).business_outcome == "rejected"
    assert w.reader.get_filing(filing.id).state == S.REGISTERED
    await w.send("IE3N01", n01, message_id="n01-again@sti.test")
    assert [a["alert"] for a in w.alerts.raised] == ["follow-up-rejected", "filing-rejected"]


async def test_rejected_invalidation_over_a_pending_amendment_falls_back_to_registered(world: World) -> None:
    """IE3Q04 sent while an amendment was pending, then rejected (IE3N01): the state before it (pending-amendment)
    cannot be reached from invalidation-requested, so the registered ENS stands: registered, in the journal, the
    status file and the inbox metadata alike."""
    w = world
    filing = await registered(w, "INBFALLBACK")
    amendment = fixture("amd-IE3A32-express.xml").replace(b"24NLZ8P0RJ4KD5KPA1", MRN.encode())
    await receipted_follow_up(w, filing, amendment)
    q04 = await receipted_follow_up(w, filing, by_mrn("IE3Q04", MRN))
    assert w.reader.get_filing(filing.id).state == S.INVALIDATION_REQUESTED
    n01 = payload("resp-IE3N01-lifecycle-error.xml", functionalReference=MRN)
    await w.send("IE3N01", n01, message_id="n01-fallback@sti.test", ref=q04)
    now = w.reader.get_filing(filing.id)
    assert now.state == S.REGISTERED
    assert w.meta("n01-fallback@sti.test")["filing"]["state"] == "registered"
    assert w.status_file(now)["state"] == "registered"


async def test_orphan_without_its_own_reference_is_reported_by_the_mrn_it_names(world: World) -> None:
    """An IE3R01 naming no LRN (its reference) but an MRN: unmatched, kept and reported under that MRN."""
    w = world
    data = r01("UNUSED", "26NLZ8P0RJ4KD5KPZ6").replace(b"<LRN>UNUSED</LRN>", b"")
    await w.send("IE3R01", data, message_id="r01-nolrn@sti.test")
    [orphan] = w.reader.list_orphans()
    assert orphan.reason == "IE3R01 matches no filing (reference '26NLZ8P0RJ4KD5KPZ6')"
    assert w.inbound("r01-nolrn@sti.test").functional_reference == "26NLZ8P0RJ4KD5KPZ6"
    assert (w.alerts.raised[0]["reference"], w.alerts.raised[0]["lrn"]) == ("26NLZ8P0RJ4KD5KPZ6", None)


async def test_rejected_answer_reopens_only_the_request_it_answered(world: World) -> None:
    """Two requests answered (IE3Q02 by our IE3R02, IE3Q03 by our IE3R03); customs rejects the IE3R02: the
    IE3Q02 is open again, the IE3Q03 stays answered."""
    w = world
    filing, q02, r02 = await answered_request(w, "INBTWOREQ")
    await w.send("IE3Q03", by_mrn("IE3Q03", MRN), message_id="q03-two@sti.test")
    r03 = await w.acceptor.accept(by_mrn("IE3R03", MRN))
    [q03] = w.reader.list_requests(filing_id=filing.id)
    await w.writer.submit(lambda j: j.close_request(q03.id, now=NOW, answer_message_id=r03.message_id))
    n99 = payload("resp-IE3N99-error.xml", functionalReference=MRN)
    await w.send("IE3N99", n99, message_id="n99-two@sti.test", ref=r02)
    assert sorted((r.kind, r.state, r.answer_message_id)
                  for r in w.reader.list_requests(filing_id=filing.id, open_only=False)) == \
        [("IE3Q02", "open", None), ("IE3Q03", "answered", r03.message_id)]


# ----------------------------------------------------------------------------------------------- copies at once
async def test_two_copies_at_once_are_delivered_in_turn(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TI resends a push whose answer it gave up waiting for while the first copy is still being delivered:
    the second copy waits for the first one's commit, is answered with the first Receipt, and writes nothing;
    the inbox files are written once, so they never reappear after the ERP took them."""
    import asyncio

    import gateway.pipeline.inbound as inbound_module
    w = world
    acc = await w.acceptor.accept(ens("INBCONC1"))
    ctype, body = w.sealed("IE3R01", [Part("payload@sti.test", MIME_XML, r01("INBCONC1"))],
                           message_id="r01-conc@sti.test", ref=acc.message_id)
    writes: list[str] = []
    real_write = inbound_module.write_inbox

    def counted(inbox: Any, message_id: str, *args: Any, **kw: Any) -> Any:   # the real write, counted
        writes.append(message_id)
        return real_write(inbox, message_id, *args, **kw)

    monkeypatch.setattr(inbound_module, "write_inbox", counted)
    copies = [w.trader.open(ctype, body) for _ in range(3)]
    receipts = [w.trader.receipt_for(c) for c in copies]
    results = await asyncio.gather(*(w.sink.deliver(c, ctype, body, r, "push") for c, r in zip(copies, receipts)))
    assert [r.duplicate for r in results] == [False, True, True]          # in arrival order
    assert {r.receipt_body for r in results} == {receipts[0].body}        # the first Receipt, for every copy
    assert writes == ["r01-conc@sti.test"]
    assert w.files() == ["r01-conc@sti.test.json", "r01-conc@sti.test.part1.xml"]
    assert len(w.reader.list_messages(direction="in")) == 1
    assert w.sink._in_flight == {}                                         # nothing kept per message afterwards
