"""Binary attachments and payload character set at intake, in process (real journal, real engine, real gzip,
real seals); the daemon and simulator round trips are in ``test_attachments_e2e.py``.

- ``binaryfiles.match``: every refusal of ICD 3.1.11 / 4.2.5, seen from an ERP that gets it wrong and from an
  attacker who sends files the payload does not name;
- ``submission``: the carriers (multipart/related, multipart/form-data, spool folder) and their refusals;
- ``Acceptor``: attachments sealed as parts named by the identification, refusals before anything is journaled,
  non-UTF-8 payloads, DOCTYPE on the parsed tree, decompression bombs;
- the simulator's STI-like check, inbox metadata, and the MIME part cap for an IE3R08 with many payloads.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from gateway.ebms.engine import Engine, digests_of_wire
from gateway.ebms.errors import EbmsFault
from gateway.ics2 import binaryfiles
from gateway.ics2.binaryfiles import Supplied
from gateway.ics2.charset import PayloadEncodingError, check_no_doctype, check_utf8
from gateway.pipeline.accept import IntakeRefused
from gateway.pipeline.submission import from_body, read_spool_unit
from tests.pipeline_harness import FIXTURES, ens, fixture, response

ATT = FIXTURES.parent / "attachments"
PDF = (ATT / "commercial-invoice.pdf").read_bytes()
JPEG = (ATT / "cargo-photo.jpg").read_bytes()
BASE = "ens-IE3F20-air-attachment.xml"
IDENT = "binaryattachment1"


def with_files(lrn: str, *files: tuple[str, str | None], base: str = BASE) -> bytes:
    """The air ENS with ``lrn`` and one binaryFile per (identification, MIME or None) instead of its own."""
    data = ens(lrn, base).decode()
    groups = "".join(f"<binaryFile><identification>{i}</identification><filename>{i}.doc</filename>"
                     + (f"<MIME>{m}</MIME>" if m else "") + "<description>test</description></binaryFile>"
                     for i, m in files)
    data = re.sub(r"<binaryFile>.*</binaryFile>", groups, data, flags=re.DOTALL)
    return data.encode()


def sup(name: str, data: bytes = PDF, ctype: str | None = None, stem: bool = False) -> Supplied:
    return Supplied(name, ctype, data, f"part {name}", stem_match=stem)


def decls(payload: bytes) -> list[binaryfiles.BinaryFile]:
    return binaryfiles.declared(etree.fromstring(payload))


# ----------------------------------------------------------------------------------------------- matching
def test_match_pairs_each_declaration_with_its_file() -> None:
    payload = with_files("M1", ("inv", "application/pdf"), ("photo", "image/jpeg"))
    matched, problems = binaryfiles.match("IE3F20", decls(payload), [sup("photo", JPEG, "image/jpeg"), sup("inv")])
    assert problems == []
    assert [(m.identification, m.mime_type, m.data) for m in matched] == [("inv", "application/pdf", PDF),
                                                                          ("photo", "image/jpeg", JPEG)]


@pytest.mark.parametrize("files,supplied,code", [
    ([(IDENT, "application/pdf")], [], "missing-attachment"),
    ([(IDENT, "application/pdf")], [sup(IDENT), sup("other")], "undeclared-attachment"),
    ([], [sup("stowaway")], "undeclared-attachment"),
    ([(IDENT, "application/xml")], [sup(IDENT)], "mime-type-not-allowed"),
    ([(IDENT, "text/plain")], [sup(IDENT)], "mime-type-not-allowed"),
    ([(IDENT, None)], [sup(IDENT, b"<x/>", "application/xml")], "mime-type-not-allowed"),
    ([(IDENT, "application/pdf")], [sup(IDENT, PDF, "image/jpeg")], "mime-type-mismatch"),
    ([(IDENT, "application/pdf")], [sup(IDENT, JPEG)], "content-mismatch"),
    ([(IDENT, "image/jpeg")], [sup(IDENT, b"MZ\x90\x00 not an image")], "content-mismatch"),
    ([(IDENT, None)], [sup(IDENT, b"plain text")], "mime-type-unknown"),
    ([(IDENT, "application/pdf")], [sup(IDENT, b"")], "empty-attachment"),
    ([(IDENT, "application/pdf"), (IDENT, "application/pdf")], [sup(IDENT)], "duplicate-identification"),
    ([("bad id", "application/pdf")], [sup("bad id")], "bad-identification"),
    ([("a%41", "application/pdf")], [sup("a%41")], "bad-identification"),
    ([("x>y", "application/pdf")], [sup("x>y")], "bad-identification"),
    ([(IDENT, "application/pdf")], [sup(IDENT), sup(IDENT)], "duplicate-attachment"),
    ([(IDENT, "application/pdf")], [sup(IDENT + ".pdf")], "undeclared-attachment"),   # API names are exact
])
def test_match_refusals(files: list[tuple[str, str | None]], supplied: list[Supplied], code: str) -> None:
    payload = with_files("M2", *files)
    _, problems = binaryfiles.match("IE3F20", decls(payload), supplied)
    assert code in [p.code for p in problems], problems
    assert all(p.text for p in problems)


def test_match_refuses_attachments_on_an_action_that_carries_none() -> None:
    for action, files, supplied in (("IE3F10", [], [sup(IDENT)]), ("IE3F42", [(IDENT, "application/pdf")], [])):
        payload = with_files("M3", *files)
        _, problems = binaryfiles.match(action, decls(payload), supplied)
        assert problems and problems[0].code == "attachments-not-allowed", (action, problems)


def test_spool_file_name_may_carry_an_extension() -> None:
    payload = with_files("M4", (IDENT, "application/pdf"))
    matched, problems = binaryfiles.match("IE3F20", decls(payload), [sup(IDENT + ".pdf", stem=True)])
    assert not problems and matched[0].identification == IDENT
    # both IDENT and IDENT.pdf: two files for one attachment, refused rather than one silently dropped
    _, problems = binaryfiles.match("IE3F20", decls(payload), [sup(IDENT, stem=True), sup(IDENT + ".pdf", stem=True)])
    assert [p.code for p in problems] == ["duplicate-attachment"]


def test_declared_type_is_used_when_the_carrier_states_none() -> None:
    payload = with_files("M5", (IDENT, "image/jpeg"))
    [m], problems = binaryfiles.match("IE3F20", decls(payload), [sup(IDENT, JPEG, "application/octet-stream")])
    assert not problems and m.mime_type == "image/jpeg"


# ----------------------------------------------------------------------------------------------- carriers
def multipart(kind: str, parts: list[tuple[dict[str, str], bytes]], start: str | None = None) -> tuple[str, bytes]:
    b = "sep-4711"
    body = b"".join(b"--" + b.encode() + b"\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()).encode()
                    + b"\r\n" + data + b"\r\n" for h, data in parts) + b"--" + b.encode() + b"--\r\n"
    return f'multipart/{kind}; boundary="{b}"' + (f'; start="<{start}>"' if start else ""), body


def test_form_data_names_attachments_by_field_name() -> None:
    payload = with_files("F1", (IDENT, "application/pdf"))
    binary = bytes(range(256)) * 4 + b"\r\n--sep-471\r\n\r"   # every byte value, CRLF and a near-boundary
    ctype, body = multipart("form-data", [
        ({"Content-Disposition": 'form-data; name="ens"; filename="ens.xml"', "Content-Type": "application/xml"},
         payload),
        ({"Content-Disposition": f'form-data; name="{IDENT}"; filename="invoice.pdf"',
          "Content-Type": "application/pdf"}, binary)])
    sub = from_body(ctype, body)
    assert sub.payload == payload
    [a] = sub.attachments
    assert (a.name, a.content_type, a.data) == (IDENT, "application/pdf", binary)


def test_related_uses_content_id_and_start() -> None:
    payload = with_files("F2", (IDENT, "application/pdf"))
    ctype, body = multipart("related", [({"Content-ID": f"<{IDENT}>", "Content-Type": "application/pdf"}, PDF),
                                        ({"Content-ID": "<ens>", "Content-Type": "application/xml"}, payload)],
                            start="ens")
    sub = from_body(ctype, body)
    assert sub.payload == payload and [(a.name, a.data) for a in sub.attachments] == [(IDENT, PDF)]
    assert from_body("application/xml", payload).attachments == ()


@pytest.mark.parametrize("ctype,parts,reason,status", [
    ("form-data", [({}, b"<IE3F20/>"), ({"Content-Type": "application/pdf"}, PDF)], "multipart", 400),  # unnamed
    ("form-data", [({"Content-Disposition": 'form-data; name="a"'}, PDF), ({}, b"<x/>")], "multipart", 400),
    ("mixed", [({}, b"<IE3F20/>")], "multipart", 415),
])
def test_malformed_carriers_are_refused(ctype: str, parts: list[tuple[dict[str, str], bytes]], reason: str,
                                        status: int) -> None:
    ct, body = multipart(ctype, parts)
    with pytest.raises(IntakeRefused) as exc:
        from_body(ct, body)
    assert (exc.value.reason, exc.value.status) == (reason, status) and str(exc.value)
    with pytest.raises(IntakeRefused):   # truncated: no closing delimiter
        from_body(ct, body[:-12])


def test_too_many_parts_are_refused_before_matching() -> None:
    parts = [({"Content-ID": "<ens>"}, b"<IE3F20/>")] + [({"Content-ID": f"<p{i}>"}, PDF) for i in range(300)]
    with pytest.raises(IntakeRefused) as exc:
        from_body(*multipart("related", parts))
    assert exc.value.status == 400 and "more than 256" in str(exc.value)


def test_spool_folder(tmp_path: Path) -> None:
    folder = tmp_path / "x__ENS-1.d"
    folder.mkdir()
    (folder / "ens.xml").write_bytes(b"<ens/>")
    (folder / (IDENT + ".pdf")).write_bytes(PDF)
    sub = read_spool_unit(folder)
    assert sub.payload == b"<ens/>" and [(a.name, a.data, a.stem_match) for a in sub.attachments] == [
        (IDENT + ".pdf", PDF, True)]
    (folder / "more.xml").write_bytes(b"<ens/>")
    with pytest.raises(IntakeRefused, match="2 \\*.xml files"):
        read_spool_unit(folder)
    os.remove(folder / "more.xml")
    os.symlink("/etc/passwd", folder / "link")
    with pytest.raises(IntakeRefused, match="link is not a regular file"):
        read_spool_unit(folder)
    os.remove(folder / "link")
    (folder / "sub").mkdir()
    with pytest.raises(IntakeRefused, match="sub is not a regular file"):
        read_spool_unit(folder)
    os.rmdir(folder / "sub")
    many = tmp_path / "y__ENS-2.d"
    many.mkdir()
    for i in range(300):
        (many / f"f{i}").write_bytes(b"x")
    with pytest.raises(IntakeRefused, match="more than the 256"):
        read_spool_unit(many)
    with pytest.raises(IntakeRefused, match="exceed"):
        read_spool_unit(folder, max_attachment_bytes=len(PDF) - 1)


# ----------------------------------------------------------------------------------------------- character set
UTF8_ENS = ens("CS1")


def latin1_ens(lrn: str) -> bytes:
    """The ENS declared ISO-8859-1, with a character whose Latin-1 byte is not UTF-8 (0xDF)."""
    text = ens(lrn).decode().replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
    return re.sub(r"(</IE3F\d\d>)\s*$", "<!-- Straße -->\\1", text).encode("latin-1")


@pytest.mark.parametrize("name,data", [
    ("utf-16 with BOM", UTF8_ENS.decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")),
    ("utf-16-le no BOM", UTF8_ENS.decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16-le")),
    ("utf-16-be no BOM", UTF8_ENS.decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16-be")),
    ("utf-32 with BOM", UTF8_ENS.decode().replace('encoding="UTF-8"', 'encoding="UTF-32"').encode("utf-32")),
    ("ISO-8859-1 declared, Latin-1 bytes", latin1_ens("CS2")),
    ("ISO-8859-1 declared, ASCII bytes", UTF8_ENS.replace(b'encoding="UTF-8"', b"encoding='iso-8859-1'")),
    ("windows-1252 declared", UTF8_ENS.replace(b'encoding="UTF-8"', b'encoding="windows-1252"')),
    ("US-ASCII declared", UTF8_ENS.replace(b'encoding="UTF-8"', b'encoding="US-ASCII"')),
    ("undeclared Latin-1 bytes", UTF8_ENS.replace(b'encoding="UTF-8"', b"").replace(b"DHL4711", b"DHL\xe94711")),
])
def test_non_utf8_payloads_are_refused(name: str, data: bytes) -> None:
    with pytest.raises(PayloadEncodingError) as exc:
        check_utf8(data)
    assert exc.value.reason == "not-utf-8" and "UTF-8" in str(exc.value), name


@pytest.mark.parametrize("data", [
    UTF8_ENS, b"\xef\xbb\xbf" + UTF8_ENS, UTF8_ENS.replace(b'encoding="UTF-8"', b"encoding='utf-8'"),
    UTF8_ENS.replace(b'<?xml version="1.0" encoding="UTF-8"?>', b""),
    UTF8_ENS.replace(b"DHL4711", "DHL–4711 Straße 東京".encode()),
])
def test_utf8_payloads_pass(data: bytes) -> None:
    check_utf8(data)


def test_declaration_is_read_as_the_parser_reads_it() -> None:
    from gateway.ics2.charset import check_declared_encoding
    from gateway.ics2.xmlutil import parse_payload
    padded = UTF8_ENS.replace(b' encoding="UTF-8"', b" " * 600 + b'encoding="ISO-8859-1"')  # past a 512-byte window
    from gateway.xmlsafe import XmlRejected
    with pytest.raises((PayloadEncodingError, XmlRejected)):   # the hardened parser itself refuses it now
        check_declared_encoding(parse_payload(padded))
    check_declared_encoding(parse_payload(UTF8_ENS))
    check_declared_encoding(parse_payload(b"<IE3F32/>"))


def test_doctype_is_found_on_the_tree() -> None:
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)
    root = etree.fromstring('<!DOCTYPE IE3F32 [<!ELEMENT IE3F32 ANY>]><IE3F32/>'.encode("utf-16"), parser)
    with pytest.raises(PayloadEncodingError) as exc:
        check_no_doctype(root)
    assert exc.value.reason == "dtd"
    check_no_doctype(etree.fromstring(b"<IE3F32/>"))


# ----------------------------------------------------------------------------------------------- acceptor
@pytest.fixture
async def acceptor(tmp_path: Path, pki: Path):  # type: ignore[no-untyped-def]
    from gateway.config import load_gateway_config
    from gateway.journal.committer import JournalWriter
    from gateway.journal.sqlite import SqliteJournal
    from gateway.pipeline.accept import Acceptor
    from gateway.transport.config import load_transport_config
    from gateway.transport.routing import Router
    cfg = load_gateway_config(Path(__file__).resolve().parent.parent / "conf" / "gateway.toml")
    path = tmp_path / "journal.sqlite3"
    journal = SqliteJournal.open(path)
    reader = SqliteJournal.open_reader(path)
    writer = JournalWriter(journal).start()
    acc = Acceptor(Engine.from_config(cfg), writer, reader, Router(load_transport_config(cfg)))
    yield acc
    await writer.close()
    reader.close()
    journal.close()


def customs_engine(pki: Path) -> Engine:
    from gateway.security.keys import load_identity_files
    from gateway.security.trust import TrustStore
    from gateway.security.verify import STRICT
    return Engine(load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem"),
                  TrustStore.from_files([pki / "trader-root.pem", pki / "customs-root.pem"],
                                        [pki / "trader-int.crl.pem"]),
                  party_id="sti-taxud", fqdn="sti.customs.test", role="Customs", policy=STRICT)


async def test_attachment_is_sealed_as_the_part_the_payload_names(acceptor: Any, pki: Path) -> None:
    payload = with_files("ACC1", (IDENT, "application/pdf"), ("photo-1", "image/jpeg"))
    got = await acceptor.accept(payload, attachments=[sup(IDENT + ".pdf", stem=True), sup("photo-1", JPEG)])
    msg = acceptor.journal.get_message(got.message_id, with_bytes=True)
    opened = customs_engine(pki).open(msg.content_type, bytes(msg.sealed))   # strict policy: as the TI verifies
    assert opened.signature is not None and len(opened.signature.references) == 5  # Messaging, Body, 3 parts
    infos = [(p.part_info.href, p.part_info.mime_type, p.part_info.compression) for p in opened.payloads]
    assert infos[1:] == [(f"cid:{IDENT}", "application/pdf", "application/gzip"),
                         ("cid:photo-1", "image/jpeg", "application/gzip")]
    assert [p.content_id for p in opened.payloads[1:]] == [IDENT, "photo-1"]
    assert [p.data(acceptor.engine.limits) for p in opened.payloads] == [payload, PDF, JPEG]
    assert any(f"cid:{IDENT}" in uri for uri in digests_of_wire(msg.content_type, bytes(msg.sealed)))
    # the API answer and the journal's "queued" event say what was sealed with the payload
    assert [(a["identification"], a["bytes"]) for a in got.to_dict()["attachments"]] == [(IDENT, len(PDF)),
                                                                                        ("photo-1", len(JPEG))]
    [queued] = [e for e in acceptor.journal.lifecycle(got.filing.id)["events"] if e["event"] == "queued"]
    assert [a["identification"] for a in queued["detail"]["attachments"]] == [IDENT, "photo-1"]
    # the same submission again is the same filing; the same LRN with another file is a conflict
    again = await acceptor.accept(payload, attachments=[sup(IDENT), sup("photo-1", JPEG)])
    assert not again.created and again.message_id == got.message_id
    with pytest.raises(IntakeRefused) as exc:
        await acceptor.accept(payload, attachments=[sup(IDENT, PDF + b"%changed"), sup("photo-1", JPEG)])
    assert exc.value.reason == "conflict"


async def test_attachment_refusals_journal_nothing(acceptor: Any) -> None:
    payload = with_files("ACC2", (IDENT, "application/pdf"))
    for supplied in ([], [sup(IDENT), sup("extra")], [sup(IDENT, JPEG)]):
        with pytest.raises(IntakeRefused) as exc:
            await acceptor.accept(payload, attachments=supplied)
        assert exc.value.reason == "attachments" and exc.value.status == 422 and exc.value.findings
        assert exc.value.filing is None
    assert acceptor.journal.find_filings_by_lrn("ACC2") == []


async def test_answers_carry_documents_too(acceptor: Any) -> None:
    mrn = "26NLABCDEFGHJKLM01"
    first = await acceptor.accept(ens("ACC3"))
    now = dt.datetime.now(dt.UTC)
    await acceptor.writer.submit(lambda j: j.update_filing(first.filing.id, now=now, mrn=mrn))
    answer = response("IE3R02", mrn).replace(
        b"</IE3R02>", f"<binaryFile><identification>{IDENT}</identification><MIME>application/pdf</MIME>"
                      "</binaryFile></IE3R02>".encode())
    with pytest.raises(IntakeRefused) as exc:
        await acceptor.accept(answer)
    assert exc.value.reason == "attachments" and "missing-attachment" in str(exc.value.findings)
    got = await acceptor.accept(answer, attachments=[sup(IDENT)])
    assert got.follow_up
    msg = acceptor.journal.get_message(got.message_id, with_bytes=True)
    assert f"<{IDENT}>".encode() in bytes(msg.sealed)
    with pytest.raises(IntakeRefused) as exc:   # IE3Q04 (invalidation) may carry no document
        await acceptor.accept(response("IE3Q04", mrn), attachments=[sup(IDENT)])
    assert exc.value.reason == "attachments"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])
async def test_utf16_payload_with_doctype_is_refused_at_intake(acceptor: Any, encoding: str) -> None:
    data = ens("ACC4").decode().replace('<?xml version="1.0" encoding="UTF-8"?>',
                                        '<?xml version="1.0" encoding="UTF-16"?>'
                                        '<!DOCTYPE IE3F32 [<!ENTITY x "y">]>').encode(encoding)
    with pytest.raises(IntakeRefused) as exc:
        await acceptor.accept(data)
    assert exc.value.reason == "not-utf-8" and exc.value.status == 415
    assert acceptor.journal.find_filings_by_lrn("ACC4") == []


async def test_utf8_payload_with_doctype_is_refused_as_dtd(acceptor: Any) -> None:
    data = ens("ACC4B").replace(b"?>", b'?><!DOCTYPE IE3F32 SYSTEM "http://127.0.0.1:9/x.dtd">', 1)
    with pytest.raises(IntakeRefused) as exc:
        await acceptor.accept(data)
    assert exc.value.reason == "dtd" and exc.value.status == 400 and "DTD" in str(exc.value)


async def test_latin1_payload_is_refused_at_intake(acceptor: Any) -> None:
    with pytest.raises(IntakeRefused) as exc:
        await acceptor.accept(latin1_ens("ACC5"))
    assert exc.value.reason == "not-utf-8" and "ISO-8859-1" in str(exc.value)


async def test_decompression_bomb_is_refused_at_intake(acceptor: Any) -> None:
    """Refused by the configured receive caps (``[limits] recv_max_compression_ratio``, the TI's), at intake."""
    # gzip's own ceiling is about 1030:1, so at the default 1000:1 only near-pure repetition trips the cap; a
    # cap of 100:1 shows the rule on a 1 MB run of one character (about 900:1 with the ENS around it)
    acceptor.engine.limits = replace(acceptor.engine.limits, recv_max_compression_ratio=100)
    bomb = ens("ACC6").replace(b"</IE3F32>", b"<!--" + b"a" * (1024 * 1024) + b"--></IE3F32>")
    with pytest.raises(IntakeRefused) as exc:
        await acceptor.accept(bomb)
    assert exc.value.reason == "decompression-bomb" and exc.value.status == 413 and "100:1" in str(exc.value)
    assert "business payload" in str(exc.value)
    assert acceptor.journal.find_filings_by_lrn("ACC6") == []
    assert (await acceptor.accept(ens("ACC7"))).created          # an ordinary ENS (about 5:1) passes
    acceptor.engine.limits = replace(acceptor.engine.limits, recv_max_compression_ratio=2)
    with pytest.raises(IntakeRefused) as exc:
        await acceptor.accept(ens("ACC8"))
    assert exc.value.reason == "decompression-bomb"


async def test_attachment_bomb_is_refused(acceptor: Any) -> None:
    pdf_bomb = b"%PDF-1.4\n" + b"\0" * (8 * 1024 * 1024)   # about 1026:1, over the default 1000:1
    payload = with_files("ACC9", (IDENT, "application/pdf"))
    with pytest.raises(IntakeRefused) as exc:
        await acceptor.accept(payload, attachments=[sup(IDENT, pdf_bomb)])
    assert exc.value.reason == "decompression-bomb" and IDENT in str(exc.value)


# ----------------------------------------------------------------------------------------------- simulator
def test_simulator_checks_the_link(pki: Path) -> None:
    from gateway.ebms.model import OutboundPart
    from gateway.security.keys import load_identity_files
    from gateway.security.trust import TrustStore
    from gateway.simulator.attachments import envelope_fault, link_decision
    trader = Engine(load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem"),
                    TrustStore.from_files([pki / "customs-root.pem"], [], []), party_id="NL123456789",
                    fqdn="ap.trader.test")
    sti = customs_engine(pki)
    now = dt.datetime.now(dt.UTC)
    payload = with_files("SIM1", (IDENT, "application/pdf"))

    def opened(parts: list[OutboundPart], action: str = "IE3F20", data: bytes = payload) -> Any:
        sent = trader.user_message(action=action, payload=data, to_party=Engine.customs_party(),
                                   attachments=parts)
        return sti.open(sent.content_type, sent.body)

    good = opened([OutboundPart(IDENT, "application/pdf", PDF)])
    assert envelope_fault(good) is None and link_decision(good, payload, sti.limits, now) is None
    for parts, code in (([], "missing-attachment"),
                        ([OutboundPart("other", "application/pdf", PDF)], "undeclared-attachment"),
                        ([OutboundPart(IDENT, "image/jpeg", JPEG)], "mime-type-mismatch")):
        d = link_decision(opened(parts), payload, sti.limits, now)
        assert d is not None and [r.action for r in d.replies] == ["IE3N99"] and code in d.outcome, parts
        assert b"CL0010" in d.replies[0].payload and b"binaryFile[1]" in d.replies[0].payload
        assert d.register is None
    plain = ens("SIM2")
    assert link_decision(opened([], "IE3F32", plain), plain, sti.limits, now) is None


def test_simulator_payload_profile_fault(pki: Path) -> None:
    from gateway.conformance.unsafe import Part, Recipe, build_message, xml_part
    from gateway.security.keys import load_identity_files
    from gateway.simulator.attachments import envelope_fault
    ident = load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem")
    sti = customs_engine(pki)
    for action, part in (("IE3F20", Part(IDENT, "text/plain", b"hello")),
                         ("IE3F10", Part(IDENT, "application/pdf", PDF))):
        payload = ens("SIM3", "ens-IE3F10-sea.xml") if action == "IE3F10" else with_files("SIM3", (IDENT, "text/plain"))
        ctype, body = build_message(Recipe(action=action, parts=[xml_part(payload), part]), ident.key, ident.chain)
        fault = envelope_fault(sti.open(ctype, body))
        assert isinstance(fault, EbmsFault) and fault.code == "EBMS:0010", action


# ----------------------------------------------------------------------------------------------- inbound
def test_ie3r08_with_many_related_payloads_is_accepted(pki: Path) -> None:
    """ICD 3.1.9 / 4.2.6: a consultation answer carries the ENS and its notifications as extra payloads."""
    from gateway.conformance.unsafe import Recipe, build_message, xml_part
    from gateway.ebms.constants import SERVICE_C2T
    from gateway.security.keys import load_identity_files
    from gateway.security.trust import TrustStore
    customs = load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem")
    trader = Engine(load_identity_files(pki / "trader-seal.key", pki / "trader-chain.pem"),
                    TrustStore.from_files([pki / "customs-root.pem"], [], [pki / "customs-seal.pem"]),
                    party_id="NL123456789", fqdn="ap.trader.test")
    note = fixture("ens-IE3F32-express.xml")
    parts = [xml_part(note, content_id=f"notification-{i}@sti") for i in range(120)]
    recipe = Recipe(action="IE3R08", service=SERVICE_C2T, from_party=Engine.customs_party(),
                    to_party=Engine.trader_party("NL123456789"), parts=parts)
    ctype, body = build_message(recipe, customs.key, customs.chain)
    got = trader.open(ctype, body)
    assert len(got.payloads) == 120 and got.payloads[-1].data(trader.limits) == note


def test_inbox_metadata_names_attachments() -> None:
    from gateway.pipeline.attachments import declarations, inbox_info
    payload = with_files("IN1", (IDENT, "application/pdf"))
    d = declarations(payload)
    assert inbox_info(f"cid:{IDENT}", "application/pdf", None, d) == {
        "href": f"cid:{IDENT}", "mime_type": "application/pdf", "charset": None, "identification": IDENT,
        "filename": f"{IDENT}.doc", "description": "test"}
    assert inbox_info("cid:binary%61ttachment1", "application/pdf", None, d)["identification"] == IDENT  # RFC 2392
    assert inbox_info("cid:payload-1", "application/xml", "utf-8", d) == {
        "href": "cid:payload-1", "mime_type": "application/xml", "charset": "utf-8"}
    assert declarations(b"\xff not xml") == []


async def test_operator_reseal_keeps_the_attachments(acceptor: Any, tmp_path: Path, pki: Path) -> None:
    """``ics2gw resend --reseal`` seals the payload again under a new MessageId: its documents go with it."""
    from gateway.commands.resend import _reseal
    from gateway.journal.sqlite import SqliteJournal
    payload = with_files("RES1", (IDENT, "application/pdf"))
    got = await acceptor.accept(payload, attachments=[sup(IDENT)])
    now = dt.datetime.now(dt.UTC)

    def fail(j: Any) -> Any:
        j.claim_due_messages(now=now, worker="t")
        return j.fail_message(got.message_id, worker="t", now=now, error="EBMS:0101 test")
    failed = await acceptor.writer.submit(fail)
    j = SqliteJournal.open(tmp_path / "journal.sqlite3", daemon=False)   # as the CLI opens it
    conf = Path(__file__).resolve().parent.parent / "conf" / "gateway.toml"
    assert _reseal(j, failed, conf, now) == 0
    new = [m for m in acceptor.journal.list_messages(limit=10) if m.message_id != got.message_id]
    [msg] = new
    full = acceptor.journal.get_message(msg.message_id, with_bytes=True)
    opened = customs_engine(pki).open(full.content_type, bytes(full.sealed))
    assert [(p.part_info.href, p.part_info.mime_type) for p in opened.payloads[1:]] == [
        (f"cid:{IDENT}", "application/pdf")]
    assert opened.payloads[1].data(acceptor.engine.limits) == PDF


def test_pack_applies_the_intake_check(tmp_path: Path, pki: Path) -> None:
    """``ics2gw pack --attach`` labels each file with the type its binaryFile declares and refuses what the
    daemon's intake refuses (the same ``binaryfiles.match``)."""
    import json
    import subprocess
    import sys
    repo = Path(__file__).resolve().parent.parent

    def pack(*attach: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", "gateway", "pack", str(FIXTURES / BASE), "--out", str(tmp_path / "m.mime"),
                "--conf", str(repo / "conf" / "gateway.toml")]
        for a in attach:
            args += ["--attach", a]
        return subprocess.run(args, capture_output=True, text=True, cwd=repo, timeout=60,
                              check=False)

    ok = pack(f"{IDENT}={ATT / 'commercial-invoice.pdf'}")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["parts"] == 2
    (tmp_path / "fake.pdf").write_bytes(b"just text")
    for attach, words in ((f"{IDENT}={ATT / 'cargo-photo.jpg'}", "declares 'application/pdf'"),
                          (f"{IDENT}={tmp_path / 'fake.pdf'}", "neither a PDF nor a JPEG")):
        r = pack(attach)
        assert r.returncode == 1 and words in r.stderr, r.stderr
