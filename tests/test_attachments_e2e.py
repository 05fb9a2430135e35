"""Attachments end to end: the customs simulator and the gateway daemon as real processes (TLS, HTTP, SQLite, gzip,
seals), through the spool folder convention and the HTTP API (multipart/form-data and multipart/related); the
refusals at intake (nothing journaled, nothing sent); and a SIGKILL + restart that resends a filing with its
attachment byte for byte."""

from __future__ import annotations

import itertools
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_harness import (
    FIXTURES,
    PARTY,
    GatewayEnv,
    SimEnv,
    ens,
    free_port,
    push_url,
    response,
    wait_until,
)

pytestmark = pytest.mark.slow

ATT = FIXTURES.parent / "attachments"
PDF = (ATT / "commercial-invoice.pdf").read_bytes()
JPEG = (ATT / "cargo-photo.jpg").read_bytes()
AIR = "ens-IE3F20-air-attachment.xml"
IDENT = "binaryattachment1"
_seq = itertools.count(1)


def new_lrn(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000:03d}{next(_seq):04d}"


def air(lrn: str, *files: tuple[str, str]) -> bytes:
    """The air ENS with ``lrn``; with ``files`` (identification, MIME), those binaryFiles instead of its own."""
    data = ens(lrn, AIR).decode()
    if files:
        groups = "".join(f"<binaryFile><identification>{i}</identification><filename>{i}</filename>"
                         f"<MIME>{m}</MIME></binaryFile>" for i, m in files)
        data = re.sub(r"<binaryFile>.*</binaryFile>", groups, data, flags=re.DOTALL)
    return data.encode()


def post(gw: GatewayEnv, content_type: str, body: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(f"{gw.api_url}/filings", data=body, headers={"Content-Type": content_type},
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def form_data(payload: bytes, files: list[tuple[str, str, bytes]]) -> tuple[str, bytes]:
    b = "----ics2gw-test-boundary"
    out = [f'--{b}\r\nContent-Disposition: form-data; name="ens"; filename="ens.xml"\r\n'
           f"Content-Type: application/xml\r\n\r\n".encode() + payload + b"\r\n"]
    for name, ctype, data in files:
        out.append(f'--{b}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.bin"\r\n'
                   f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    return f"multipart/form-data; boundary={b}", b"".join(out) + f"--{b}--\r\n".encode()


def related(payload: bytes, files: list[tuple[str, str, bytes]]) -> tuple[str, bytes]:
    b = "related-boundary-0815"
    out = [f"--{b}\r\nContent-ID: <ens>\r\nContent-Type: application/xml\r\n\r\n".encode() + payload + b"\r\n"]
    for cid, ctype, data in files:
        out.append(f"--{b}\r\nContent-ID: <{cid}>\r\nContent-Type: {ctype}\r\n"
                   f"Content-Transfer-Encoding: binary\r\n\r\n".encode() + data + b"\r\n")
    return f'multipart/related; boundary="{b}"; start="<ens>"', b"".join(out) + f"--{b}--\r\n".encode()


def sim_attachment_lines(sim: SimEnv) -> list[str]:
    log = (sim.dir / "simulator.log").read_text(errors="replace")
    return [line for line in log.splitlines() if "event=attachments" in line]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pki: Path):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("attach")
    inbound = free_port(dual=True)
    sim = SimEnv.create(base / "sim", [{"party_id": PARTY, "push_url": push_url(inbound)}])
    sim.start()
    gw = GatewayEnv.create(base / "gw", sim, inbound_port=inbound, retry={"initial_seconds": 0.2,
                                                                          "max_seconds": 0.5})
    try:
        gw.start()
    except BaseException:
        sim.stop()
        raise
    yield sim, gw
    code = gw.stop()
    sim_code = sim.stop()
    assert code == 0, f"gateway exit code {code} after SIGTERM\n{gw.logs()}"
    assert sim_code == 0


# ----------------------------------------------------------------------------------------------- accepted
def test_spool_folder_and_api_carry_attachments_to_customs(world: Any) -> None:
    sim, gw = world
    spool_lrn, form_lrn, rel_lrn = new_lrn("ATSP"), new_lrn("ATFD"), new_lrn("ATRL")
    gw.drop_folder(f"{spool_lrn}.d", {"ens.xml": air(spool_lrn), f"{IDENT}.pdf": PDF})
    status, body = post(gw, *form_data(air(form_lrn, (IDENT, "application/pdf"), ("photo", "image/jpeg")),
                                       [(IDENT, "application/pdf", PDF), ("photo", "image/jpeg", JPEG)]))
    assert status == 202, body
    status, body = post(gw, *related(air(rel_lrn), [(IDENT, "application/octet-stream", PDF)]))
    assert status == 202, body
    [att] = body["attachments"]     # the 202 names what was sealed, with the declared type
    assert (att["identification"], att["mime_type"], att["bytes"]) == (IDENT, "application/pdf", len(PDF))
    for lrn in (spool_lrn, form_lrn, rel_lrn):
        gw.wait_state(lrn, "registered", timeout=30)
    report = sim.report()
    assert all(report[lrn]["registrations"] == 1 for lrn in (spool_lrn, form_lrn, rel_lrn))
    # the simulator checked the link of every one (its STI-like check: a broken one is answered IE3N99)
    lines = sim_attachment_lines(sim)
    assert sum(f"parts={IDENT}:application/pdf:{len(PDF)} problems=none" in line for line in lines) >= 2, lines
    assert any(f"parts={IDENT}:application/pdf:{len(PDF)},photo:image/jpeg:{len(JPEG)} problems=none" in line
               for line in lines), lines
    # the spool folder was archived whole once journaled
    [archived] = list((gw.var / "spool" / "archive").glob(f"*__{spool_lrn}.d"))
    assert (archived / f"{IDENT}.pdf").read_bytes() == PDF and not list(gw.spool.iterdir())


# ----------------------------------------------------------------------------------------------- refused
def test_refusals_at_intake_send_nothing(world: Any) -> None:
    sim, gw = world
    missing, extra, utf16 = new_lrn("ATMI"), new_lrn("ATEX"), new_lrn("ATU16")
    gw.drop_folder(f"{missing}.d", {"ens.xml": air(missing)})
    gw.drop_folder(f"{extra}.d", {"ens.xml": air(extra), f"{IDENT}.pdf": PDF, "notes.pdf": PDF})
    gw.drop(f"{utf16}.xml", ens(utf16).decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"))
    rejected = gw.var / "spool" / "rejected"

    def reasons() -> dict[str, dict[str, Any]]:
        return {p.name: json.loads(p.read_text()) for p in rejected.glob("*.reason.json")} if rejected.exists() \
            else {}

    wait_until(lambda: len([n for n in reasons() if any(x in n for x in (missing, extra, utf16))]) == 3, 20,
               "three rejections", gw.logs)
    by = {lrn: next(v for k, v in reasons().items() if lrn in k) for lrn in (missing, extra, utf16)}
    assert by[missing]["reason"] == "attachments" and by[missing]["findings"][0]["code"] == "missing-attachment"
    assert by[extra]["reason"] == "attachments" and [f["code"] for f in by[extra]["findings"]] == [
        "undeclared-attachment"] and "notes.pdf" in by[extra]["error"]
    assert by[utf16]["reason"] == "not-utf-8" and "UTF-16" in by[utf16]["error"]
    assert list(rejected.glob(f"*__{extra}.d"))   # the folder is kept whole, next to its reason
    # the API: each refusal with its status and reason
    latin1 = new_lrn("ATL1")
    cases = [
        (form_data(air(new_lrn("ATTY")), [(IDENT, "text/plain", b"hello")]), 422, "attachments"),
        (form_data(air(new_lrn("ATJP")), [(IDENT, "image/jpeg", JPEG)]), 422, "attachments"),
        (("application/xml", ens(latin1).decode().replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
          .replace("DHL4711", "DHL\u00e94711").encode("latin-1")), 415, "not-utf-8"),
        (form_data(ens(new_lrn("ATNA")), [(IDENT, "application/pdf", PDF)]), 422, "attachments"),  # IE3F32 none
        (("multipart/form-data; boundary=x", b"--x\r\n\r\n<a/>\r\n--x\r\nContent-Type: application/pdf\r\n\r\n"
          + PDF + b"\r\n--x--\r\n"), 400, "multipart"),
    ]
    for (ctype, body), status, reason in cases:
        got, answer = post(gw, ctype, body)
        assert (got, answer["error"]) == (status, reason), answer
        assert answer["message"]
    # nothing journaled, nothing sent
    rows = gw.journal()
    assert not [lrn for lrn in rows if lrn.startswith(("ATMI", "ATEX", "ATU16", "ATL1", "ATTY", "ATJP", "ATNA"))]
    assert not [lrn for lrn in sim.report() if lrn.startswith(("ATMI", "ATEX", "ATU16", "ATL1", "ATTY", "ATJP"))]


def test_decompression_bomb_is_refused_at_intake(world: Any) -> None:
    sim, gw = world
    lrn = new_lrn("ATBO")
    bomb = b"%PDF-1.4\n" + b"\0" * (8 * 1024 * 1024)     # gzip: about 1026:1, over the 1000:1 receive cap
    status, answer = post(gw, *form_data(air(lrn), [(IDENT, "application/pdf", bomb)]))
    assert (status, answer["error"]) == (413, "decompression-bomb"), answer
    assert IDENT in answer["message"] and lrn not in gw.journal() and lrn not in sim.report()


# ----------------------------------------------------------------------------------------------- answers
def test_ie3r02_answer_carries_its_document_via_submit_attach(world: Any, tmp_path: Path) -> None:
    """IE3Q02 (scripted by the RFI prefix) answered by an IE3R02 with a PDF, handed in by
    ``ics2gw submit --attach``; customs checks the link and closes the request."""
    sim, gw = world
    lrn = new_lrn("RFI")
    assert post(gw, "application/xml", ens(lrn))[0] == 202
    mrn = gw.wait_state(lrn, "info-requested")["filing"]["mrn"]
    answer = response("IE3R02", mrn).replace(
        b"</IE3R02>", f"<binaryFile><identification>{IDENT}</identification><filename>answer.pdf</filename>"
                      f"<MIME>application/pdf</MIME></binaryFile></IE3R02>".encode())
    (tmp_path / "answer.xml").write_bytes(answer)
    (tmp_path / "answer.pdf").write_bytes(PDF)
    r = gw.cli("submit", str(tmp_path / "answer.xml"), "--attach", f"{IDENT}={tmp_path / 'answer.pdf'}")
    assert r.returncode == 0, r.stdout + r.stderr
    body = json.loads(r.stdout)
    assert body["follow_up"] is True and body["state"]
    life = wait_until(lambda: (lf := gw.lifecycle(lrn)) and lf["requests"][0]["state"] != "open" and lf, 20,
                      "the request closed", gw.logs)
    assert life["requests"][0]["answer_message_id"] == body["message_id"]
    assert any("action=IE3R02" in line and f"parts={IDENT}:application/pdf:{len(PDF)} problems=none" in line
               for line in sim_attachment_lines(sim))
    # the same answer without its document, or with a stowaway, is refused at intake (exit 1, reason named)
    (tmp_path / "bare.xml").write_bytes(answer.replace(IDENT.encode(), b"other-id"))
    r = gw.cli("submit", str(tmp_path / "bare.xml"), "--attach", f"{IDENT}={tmp_path / 'answer.pdf'}")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["http_status"] == 422 and out["error"] == "attachments", out
    assert {f["code"] for f in out["findings"]} == {"missing-attachment", "undeclared-attachment"}


# ----------------------------------------------------------------------------------------------- crash
def test_crash_restart_resends_the_attachment_byte_identical(world: Any) -> None:
    sim, gw = world
    from gateway.journal.sqlite import SqliteJournal
    lrn = new_lrn("ATCR")
    sim.faults(http_503=True)           # customs down: the filing waits in the journal, retried
    try:
        status, body = post(gw, *form_data(air(lrn), [(IDENT, "application/pdf", PDF)]))
        assert status == 202, body      # acknowledged: durable with its attachment from here on
        message_id = body["message_id"]

        def sealed() -> tuple[str, bytes]:
            j = SqliteJournal.open_reader(gw.var / "journal.sqlite3")
            try:
                m = j.get_message(message_id, with_bytes=True)
                assert m is not None
                return m.content_type, bytes(m.sealed), m.attempts
            finally:
                j.close()
        wait_until(lambda: sealed()[2] >= 1, 20, "a first failed attempt", gw.logs)
        before = sealed()[:2]
        gw.kill()                       # SIGKILL: no drain
        gw.start()
    finally:
        sim.reset_faults()
    gw.wait_state(lrn, "registered", timeout=30)
    assert sealed()[:2] == before       # the journaled wire bytes are unchanged ...
    assert f"Content-ID: <{IDENT}>".encode() in before[1]
    report = sim.report()[lrn]
    # ... and customs received exactly those: one MessageId, one registration, and the signed receipt's
    # non-repudiation digests (checked by the sender against the journaled bytes) cover the attachment part
    assert report["message_ids"] == [message_id] and report["registrations"] == 1
    assert any(f"parts={IDENT}:application/pdf:{len(PDF)} problems=none" in line and message_id in line
               for line in sim_attachment_lines(sim))


def test_folder_claimed_before_a_crash_is_filed_at_restart(world: Any) -> None:
    """A NAME.d/ folder already claimed into the work folder when the gateway died is filed at the next start."""
    sim, gw = world
    lrn = new_lrn("ATWK")
    gw.kill()
    work = gw.var / "spool" / "work" / f"0123456789ab__{lrn}.d"
    work.mkdir(parents=True)
    (work / "ens.xml").write_bytes(air(lrn))
    (work / IDENT).write_bytes(PDF)
    gw.start()
    gw.wait_state(lrn, "registered", timeout=30)
    assert not work.exists() and list((gw.var / "spool" / "archive").glob(f"*__{lrn}.d"))
    assert sim.report()[lrn]["registrations"] == 1


# ----------------------------------------------------------------------------------------------- inbound
def test_inbound_attachment_is_named_in_the_inbox(world: Any, pki: Path) -> None:
    """A customs message with a binary part, pushed over 2-way TLS with the customs identity: the inbox gets
    the file with its type, and the metadata names it by identification and declared file name."""
    import ssl

    from gateway.conformance.unsafe import Part, Recipe, build_message, xml_part
    from gateway.ebms.constants import SERVICE_C2T
    from gateway.ebms.engine import Engine
    from gateway.security.keys import load_identity_files
    _, gw = world
    mrn = "26NLATTACH00000017"
    payload = (f'<?xml version="1.0" encoding="UTF-8"?><IE3Q02 xmlns="urn:wco:datamodel:eu:ics2:2"><MRN>{mrn}</MRN>'
               f"<binaryFile><identification>{IDENT}</identification><filename>customs-request.pdf</filename>"
               f"<MIME>application/pdf</MIME><description>Request details</description></binaryFile>"
               f"</IE3Q02>").encode()
    customs = load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem")
    message_id = f"{new_lrn('in')}@sti.customs.test"
    recipe = Recipe(action="IE3Q02", service=SERVICE_C2T, from_party=Engine.customs_party(),
                    to_party=Engine.trader_party(PARTY), message_id=message_id,
                    parts=[xml_part(payload), Part(IDENT, "application/pdf", PDF)])
    ctype, body = build_message(recipe, customs.key, customs.chain)
    ctx = ssl.create_default_context(cafile=str(pki / "trader-ca-bundle.pem"))
    ctx.load_cert_chain(str(pki / "customs-tls-client.pem"), str(pki / "customs-tls-client.key"))
    req = urllib.request.Request(gw.push_url, data=body, headers={"Content-Type": ctype}, method="POST")
    with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
        assert r.status == 200 and b"Receipt" in r.read()
    [meta] = wait_until(lambda: [m for m in gw.inbox_metadata() if m["message_id"] == message_id], 20,
                        "the inbox delivery", gw.logs)
    xml, pdf = meta["parts"]
    assert xml["mime_type"] == "application/xml" and "identification" not in xml
    assert {k: pdf[k] for k in ("href", "mime_type", "identification", "filename", "description")} == {
        "href": f"cid:{IDENT}", "mime_type": "application/pdf", "identification": IDENT,
        "filename": "customs-request.pdf", "description": "Request details"}
    assert pdf["file"].endswith(".pdf") and (gw.inbox / pdf["file"]).read_bytes() == PDF


def test_ie3r08_with_many_related_payloads_is_delivered(world: Any, pki: Path) -> None:
    """ICD 3.1.9 / 4.2.6: a consultation answer carries the ENS and its notifications as extra payloads; the MIME
    part cap (default 1024) lets 150 of them through, and every one reaches the inbox in PartInfo order."""
    import ssl

    from gateway.conformance.unsafe import Recipe, build_message, xml_part
    from gateway.ebms.constants import SERVICE_C2T
    from gateway.ebms.engine import Engine
    from gateway.security.keys import load_identity_files
    _, gw = world
    mrn = "26NLCONSULT0000018"
    answer = (f'<?xml version="1.0" encoding="UTF-8"?><IE3R08 xmlns="urn:wco:datamodel:eu:ics2:2"><MRN>{mrn}'
              f"</MRN></IE3R08>").encode()
    notes = [ens(f"NOTE{i:04d}") for i in range(149)]
    customs = load_identity_files(pki / "customs-seal.key", pki / "customs-chain.pem")
    message_id = f"{new_lrn('r08')}@sti.customs.test"
    related = [xml_part(n, content_id=f"related-{i}@sti") for i, n in enumerate(notes)]
    recipe = Recipe(action="IE3R08", service=SERVICE_C2T, from_party=Engine.customs_party(),
                    to_party=Engine.trader_party(PARTY), message_id=message_id, parts=[xml_part(answer), *related])
    ctype, body = build_message(recipe, customs.key, customs.chain)
    ctx = ssl.create_default_context(cafile=str(pki / "trader-ca-bundle.pem"))
    ctx.load_cert_chain(str(pki / "customs-tls-client.pem"), str(pki / "customs-tls-client.key"))
    req = urllib.request.Request(gw.push_url, data=body, headers={"Content-Type": ctype}, method="POST")
    with urllib.request.urlopen(req, timeout=60, context=ctx) as r:
        assert r.status == 200 and b"Receipt" in r.read()
    [meta] = wait_until(lambda: [m for m in gw.inbox_metadata() if m["message_id"] == message_id], 20,
                        "the inbox delivery", gw.logs)
    assert len(meta["parts"]) == 150 and meta["parts"][-1]["href"] == "cid:related-148@sti"
    assert (gw.inbox / meta["parts"][-1]["file"]).read_bytes() == notes[-1]
